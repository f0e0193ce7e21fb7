// Raw-socket HTTP/1.1 for tests that must send what no well-behaved client sends (smuggling vectors,
// slow clients, malformed heads) and read exactly what came back, byte for byte.
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export type RawStep = string | Buffer | { delayMs: number };

export interface RawResult {
  data: Buffer;
  /** The server closed (FIN or reset) before we gave up waiting. */
  closed: boolean;
  reset: boolean;
}

/**
 * Connects, sends the steps in order (strings/buffers written, `{delayMs}` waits), then reads until the
 * server closes, `idleMs` pass without data after some arrived, or `timeoutMs` is up. `end: true`
 * half-closes after the steps.
 */
export async function raw(port: number, steps: RawStep[], opts: { idleMs?: number; timeoutMs?: number; end?: boolean; host?: string } = {}): Promise<RawResult> {
  const socket = net.connect(port, opts.host ?? '127.0.0.1');
  const chunks: Buffer[] = [];
  let closed = false;
  let reset = false;
  let lastData = Date.now();
  socket.on('data', (d) => {
    chunks.push(d);
    lastData = Date.now();
  });
  socket.on('error', () => {
    reset = true;
  });
  const done = new Promise<void>((resolve) => socket.once('close', () => {
    closed = true;
    resolve();
  }));
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  for (const step of steps) {
    if (closed) break;
    if (typeof step === 'object' && !Buffer.isBuffer(step)) await sleep(step.delayMs);
    else socket.write(step);
  }
  if (opts.end) socket.end();
  const deadline = Date.now() + (opts.timeoutMs ?? 5000);
  const idleMs = opts.idleMs ?? 500;
  // Idle counts only once something arrived: a slow first answer (a loaded machine) is waited for.
  while (!closed && Date.now() < deadline && (chunks.length === 0 || Date.now() - lastData < idleMs)) {
    await Promise.race([done, sleep(20)]);
  }
  socket.destroy();
  return { data: Buffer.concat(chunks), closed, reset };
}

export interface ParsedResponse {
  status: number;
  headers: Array<[string, string]>;
  body: Buffer;
  trailers: Array<[string, string]>;
}

/** Header value (first, lower-case name) of a parsed response. */
export function header(r: ParsedResponse, name: string): string | undefined {
  return r.headers.find(([n]) => n === name)?.[1];
}

/**
 * Splits a byte stream into HTTP/1.1 responses (Content-Length, chunked, or until the end). Interim 1xx
 * responses are returned as entries of their own. Lenient: it reads what tests send back, nothing more.
 */
export function parseResponses(data: Buffer, opts: { headRequests?: number[] } = {}): ParsedResponse[] {
  const out: ParsedResponse[] = [];
  let at = 0;
  while (at < data.length) {
    const end = data.indexOf('\r\n\r\n', at);
    if (end === -1) break;
    const lines = data.toString('latin1', at, end).split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0] ?? '');
    if (!m) break;
    const status = Number(m[1]);
    const headers: Array<[string, string]> = lines.slice(1).map((l) => {
      const i = l.indexOf(':');
      return [l.slice(0, i).trim().toLowerCase(), l.slice(i + 1).trim()];
    });
    at = end + 4;
    const r: ParsedResponse = { status, headers, body: Buffer.alloc(0), trailers: [] };
    out.push(r);
    const bodyless = status < 200 || status === 204 || status === 304 || opts.headRequests?.includes(out.length - 1);
    if (bodyless) continue;
    const te = header(r, 'transfer-encoding');
    const cl = header(r, 'content-length');
    if (te !== undefined && /chunked\s*$/i.test(te)) {
      const parts: Buffer[] = [];
      for (;;) {
        const lf = data.indexOf('\r\n', at);
        if (lf === -1) return out;
        const size = parseInt(data.toString('latin1', at, lf), 16);
        at = lf + 2;
        if (size === 0) break;
        parts.push(data.subarray(at, at + size));
        at += size + 2;
      }
      for (;;) {
        const lf = data.indexOf('\r\n', at);
        if (lf === -1) return out;
        const line = data.toString('latin1', at, lf);
        at = lf + 2;
        if (line === '') break;
        const i = line.indexOf(':');
        r.trailers.push([line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim()]);
      }
      r.body = Buffer.concat(parts);
    } else if (cl !== undefined) {
      r.body = data.subarray(at, at + Number(cl));
      at += Number(cl);
    } else {
      r.body = data.subarray(at);
      at = data.length;
    }
  }
  return out;
}
