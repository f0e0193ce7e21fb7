// Small HTTP helpers for end-to-end tests: an echo upstream and a plain request function.
import http from 'node:http';
import type net from 'node:net';

export interface EchoUpstream {
  port: number;
  hits: () => number;
  close: () => Promise<void>;
}

/** An upstream that answers 200 with a JSON echo of what it received. */
export async function startEcho(name = 'echo'): Promise<EchoUpstream> {
  let hits = 0;
  const server = http.createServer((req, res) => {
    hits++;
    const body = JSON.stringify({ service: name, method: req.method, url: req.url, headers: req.headers });
    res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name }).end(body);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    hits: () => hits,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

export interface SimpleResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export function request(
  port: number,
  path: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string; timeoutMs?: number } = {},
): Promise<SimpleResponse> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers: opts.headers, agent: false, timeout: opts.timeoutMs ?? 10_000 },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
        res.on('error', reject);
      },
    );
    req.on('timeout', () => req.destroy(new Error(`request ${path} timed out`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

export function echoed(res: SimpleResponse): { headers: Record<string, string>; url: string; service: string } {
  return JSON.parse(res.body);
}
