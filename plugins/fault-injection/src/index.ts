// fault-injection: delays a share of requests by N ms and aborts a share with a status, to test how
// clients cope with a slow or failing service. The draw hashes the request id, so a given request id
// always gets the same fault (reproducible in logs and tests).
//
// Where the delay lives: not in the isolate. `ctx.sleep` records a request for a host timer and the
// isolate goes idle — no CPU is charged and no thread is held; the request only keeps its tenant
// concurrency slot, which is exactly what a slow upstream would do. The host bounds the sleep by its
// capability wall budget (5 s per hook call), so `delay.ms` is capped below that.

import { configParser, definePlugin } from '@isomesh/sdk';

export interface FaultInjectionConfig {
  delay?: { percent: number; ms: number };
  abort?: { percent: number; status: number; body?: string };
  /** Only requests carrying this header are eligible (e.g. "x-fault-test"); default: every request. */
  onlyWithHeader?: string;
}

export interface FaultInjectionSettings {
  delay?: { buckets: number; ms: number };
  abort?: { buckets: number; status: number; body: string };
  onlyWithHeader?: string;
}

/** Below the host's capability wall budget (5000 ms) with room for the rest of the call. */
export const MAX_DELAY_MS = 4500;
const HEADER_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;

class ConfigError extends Error {
  constructor(message: string) {
    super(`fault-injection config: ${message}`);
    this.name = 'ConfigError';
  }
}

function percentBuckets(v: unknown, where: string): number {
  if (typeof v !== 'number' || !(v >= 0 && v <= 100)) throw new ConfigError(`${where}.percent must be a number in 0..100`);
  return Math.round(v * 100);
}

function only(o: object, keys: string[], where: string): void {
  const extra = Object.keys(o).find((k) => !keys.includes(k));
  if (extra !== undefined) throw new ConfigError(`${where}: unknown field "${extra}"`);
}

export function parseConfig(raw: unknown): FaultInjectionSettings {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('config must be an object');
  only(raw, ['delay', 'abort', 'onlyWithHeader'], 'config');
  const c = raw as Record<string, unknown>;
  const s: FaultInjectionSettings = {};
  if (c.delay !== undefined) {
    const d = c.delay as { percent?: unknown; ms?: unknown } | null;
    if (d === null || typeof d !== 'object') throw new ConfigError('delay must be { "percent": n, "ms": n }');
    only(d, ['percent', 'ms'], 'delay');
    if (typeof d.ms !== 'number' || !Number.isInteger(d.ms) || d.ms < 1 || d.ms > MAX_DELAY_MS) {
      throw new ConfigError(`delay.ms must be an integer in 1..${MAX_DELAY_MS} (the host bounds capability time per call)`);
    }
    s.delay = { buckets: percentBuckets(d.percent, 'delay'), ms: d.ms };
  }
  if (c.abort !== undefined) {
    const a = c.abort as { percent?: unknown; status?: unknown; body?: unknown } | null;
    if (a === null || typeof a !== 'object') throw new ConfigError('abort must be { "percent": n, "status": n }');
    only(a, ['percent', 'status', 'body'], 'abort');
    if (typeof a.status !== 'number' || !Number.isInteger(a.status) || a.status < 200 || a.status > 599) throw new ConfigError('abort.status must be an integer in 200..599');
    if (a.body !== undefined && (typeof a.body !== 'string' || a.body.length > 4096)) throw new ConfigError('abort.body must be a string of at most 4096 characters');
    s.abort = { buckets: percentBuckets(a.percent, 'abort'), status: a.status, body: a.body ?? 'fault injected\n' };
  }
  if (s.delay === undefined && s.abort === undefined) throw new ConfigError('set delay and/or abort');
  if (c.onlyWithHeader !== undefined) {
    if (typeof c.onlyWithHeader !== 'string' || !HEADER_RE.test(c.onlyWithHeader)) throw new ConfigError('onlyWithHeader must be a lower-case header name');
    s.onlyWithHeader = c.onlyWithHeader;
  }
  return s;
}

/** Parsed once per config object; a bad config fails the chain entry on every request. */
const settings = configParser<FaultInjectionSettings>(parseConfig);

/** Bucket 0..9999 of a request for one kind of fault (independent draws for delay and abort). */
export function bucket(requestId: string, kind: string): number {
  let h = 0x811c9dc5;
  const text = `${kind}|${requestId}`;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % 10_000;
}

export default definePlugin<FaultInjectionConfig>({
  async onRequest(req, ctx) {
    const s = settings(ctx.config);
    if (s.onlyWithHeader !== undefined && !req.headers.has(s.onlyWithHeader)) return;
    if (s.delay !== undefined && bucket(ctx.requestId, 'delay') < s.delay.buckets) {
      await ctx.sleep(s.delay.ms);
      req.headers.set('x-fault-delay-ms', String(s.delay.ms));
    }
    if (s.abort !== undefined && bucket(ctx.requestId, 'abort') < s.abort.buckets) {
      return ctx.respond(s.abort.status, { headers: { 'x-fault-injected': 'abort', 'content-type': 'text/plain' }, body: s.abort.body });
    }
  },
});
