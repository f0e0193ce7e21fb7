// Shared by the proxy's tests: a PluginHostApi double, config builders, loopback upstreams and a
// small HTTP client. Not part of the proxy's public face.

import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { TestContext } from 'node:test';
import pino from 'pino';
import prom from 'prom-client';
import type {
  Admission,
  ChainRun,
  HookRequest,
  HookResponse,
  PluginHostApi,
  RequestOutcome,
  ResponseOutcome,
} from '../host/contract.ts';
import { DEFAULT_QUOTA, DEFAULT_TENANT_SETTINGS, type Route, type Service, type TenantConfig } from '../store/model.ts';
import { ProxyServer } from './index.ts';

export class HostDouble implements PluginHostApi {
  admit: ((tenant: string, requestId: string) => Admission | undefined) | undefined;
  requestHook: ((req: HookRequest, run: ChainRun) => RequestOutcome | Promise<RequestOutcome>) | undefined;
  responseHook: ((res: HookResponse, run: ChainRun) => ResponseOutcome | Promise<ResponseOutcome>) | undefined;
  readonly requests: HookRequest[] = [];
  readonly begun: ChainRun[] = [];
  readonly endCount = new Map<ChainRun, number>();

  configure(): void {}
  removeTenant(): void {}
  async close(): Promise<void> {}

  begin(tenant: string, requestId: string): Admission {
    const verdict = this.admit?.(tenant, requestId);
    if (verdict !== undefined) return verdict;
    const run: ChainRun = { tenant, requestId };
    this.begun.push(run);
    return { ok: true, run };
  }

  async onRequest(run: ChainRun, req: HookRequest): Promise<RequestOutcome> {
    this.requests.push(req);
    if (this.requestHook) return this.requestHook(req, run);
    return { action: 'continue', headers: req.headers };
  }

  async onResponse(run: ChainRun, res: HookResponse): Promise<ResponseOutcome> {
    if (this.responseHook) return this.responseHook(res, run);
    return { action: 'continue', status: res.status, headers: res.headers };
  }

  hasResponseHooks(): boolean {
    return this.responseHook !== undefined;
  }

  /** Body buffering a test asks for, per phase (0 = stream). */
  bodyLimits = { request: 0, response: 0 };

  bodyLimit(_run: ChainRun, phase: 'request' | 'response'): number {
    return this.bodyLimits[phase];
  }

  end(run: ChainRun): void {
    this.endCount.set(run, (this.endCount.get(run) ?? 0) + 1);
  }

  /** Runs begun but not ended, and runs ended more than once (both must be empty). */
  imbalance(): { open: number; repeated: number } {
    let open = 0;
    let repeated = 0;
    for (const run of this.begun) {
      const n = this.endCount.get(run) ?? 0;
      if (n === 0) open++;
      if (n > 1) repeated++;
    }
    return { open, repeated };
  }
}

export function service(name: string, ports: number[], extra: Partial<Service> = {}): Service {
  return {
    name,
    endpoints: ports.map((port) => ({ address: '127.0.0.1', port, weight: 1 })),
    lb: 'round_robin',
    connectTimeoutMs: 1000,
    timeoutMs: 5000,
    ...extra,
  };
}

export function tenantConfig(name: string, services: Service[], routes: Route[], generation = 1, listenerPort = 0): TenantConfig {
  return {
    name,
    listenerPort,
    quota: { ...DEFAULT_QUOTA },
    services,
    routes,
    chain: [],
    plugins: {},
    secrets: {},
    settings: { ...DEFAULT_TENANT_SETTINGS },
    rateLimits: [],
    generation,
  };
}

export interface Upstream {
  port: number;
  server: http.Server;
  /** TCP connections accepted so far. */
  connections: number;
  /** Requests served so far. */
  requests: number;
}

/** A loopback upstream; the default handler echoes what it received as JSON. */
export async function startUpstream(
  t: TestContext,
  name: string,
  handler?: (req: http.IncomingMessage, res: http.ServerResponse, up: Upstream) => void,
): Promise<Upstream> {
  const server = http.createServer();
  const up: Upstream = { port: 0, server, connections: 0, requests: 0 };
  server.on('connection', () => up.connections++);
  server.on('request', (req, res) => {
    up.requests++;
    if (handler) return handler(req, res, up);
    req.resume();
    req.on('end', () => {
      const body = JSON.stringify({ service: name, method: req.method, url: req.url, rawHeaders: req.rawHeaders });
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': name });
      res.end(body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  up.port = (server.address() as AddressInfo).port;
  t.after(() => {
    server.closeAllConnections();
    server.close();
  });
  return up;
}

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

export function send(
  port: number,
  opts: { method?: string; path?: string; headers?: http.OutgoingHttpHeaders | string[]; body?: string | Buffer; agent?: http.Agent; address?: string } = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host: opts.address ?? '127.0.0.1',
        port,
        method: opts.method ?? 'GET',
        path: opts.path ?? '/',
        headers: opts.headers,
        agent: opts.agent ?? false,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** Header value as the upstream saw it (from the echo body's rawHeaders), lower-cased name. */
export function seenHeader(echo: { rawHeaders: string[] }, name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < echo.rawHeaders.length; i += 2) if (echo.rawHeaders[i].toLowerCase() === name) out.push(echo.rawHeaders[i + 1]);
  return out;
}

export async function startProxy(t: TestContext, host: PluginHostApi = new HostDouble()): Promise<{ proxy: ProxyServer; registry: prom.Registry }> {
  const registry = new prom.Registry();
  const proxy = new ProxyServer({ host, logger: pino({ level: 'silent' }), registry, drainTimeoutMs: 2000 });
  t.after(() => proxy.close());
  return { proxy, registry };
}

/** A port that was free a moment ago (bind 0, read, close). */
export async function freePort(): Promise<number> {
  const server = http.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
