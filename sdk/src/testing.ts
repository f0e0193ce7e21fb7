// createTestHost(): run a plugin locally through the same guest runtime production loads into each
// tenant isolate (./guest/invoke.ts): the same Headers, ctx, hook invocation and result shaping, with
// every call crossing a JSON boundary exactly as it does into an isolate. Host capabilities
// (ctx.jwt.verify, ctx.sleep, ctx.fetch) go through the same poll → perform → deliver loop as in the
// sandbox, performed in-process (jose; fetch answered by the stubs the test gives per service). What it does not reproduce is isolation itself (CPU/memory limits):
// those belong to the host.

import type { Plugin, ResponseHeaderOp } from './types.ts';
import { GuestPlugin } from './guest/invoke.ts';
import { applyResponseOps } from './guest/verdict.ts';
import type { CallInput, CallResult, LogLevel, MetricOp, WireHeaders } from './guest/protocol.ts';
import { CapabilityFetchError, HostCapabilities, type CapabilityFetchRequest, type CapabilityFetchResponse } from './host-capabilities.ts';

/** The production sandbox's defaults (runtime/src/host/sandbox.ts). */
const CAPABILITY_ROUNDS = 8;
const CAPABILITY_WALL_MS = 5_000;
const MAX_TURNS = 10_000;

export interface TestHostOptions {
  tenant?: string;
  /** The chain entry's config (ctx.config). */
  config?: Record<string, unknown>;
  secrets?: Record<string, string>;
  /** When given, ctx.route() to a service not listed here fails like it does in the host. */
  services?: string[];
  /** Clock for ctx.rateLimit (ms). Defaults to Date.now. */
  now?: () => number;
  pluginName?: string;
  /** Wall time an async hook may sit idle (not waiting on a capability) before it fails. Default 1000. */
  idleTimeoutMs?: number;
  /** Rounds of capability calls one hook call may need (default 8, as in the host). */
  capabilityRounds?: number;
  /** Wall time capabilities may take in one hook call (default 5000, as in the host). */
  capabilityWallMs?: number;
  /**
   * ctx.fetch answers per service name: `{ users: (req) => ({ status: 200, body: '{"id":1}' }) }`.
   * A fetch to a service without a stub rejects with ERR_FETCH_UNKNOWN_SERVICE, as a service the
   * tenant does not have does in the host; a stub that throws rejects with ERR_FETCH_FAILED.
   */
  fetch?: Record<string, TestFetchHandler>;
}

export interface TestFetchRequest {
  service: string;
  method: string;
  /** Path with the query string. */
  path: string;
  headers: WireHeaders;
  /** The request body as UTF-8 text ("" when none). */
  body: string;
  bodyBytes?: Uint8Array;
  timeoutMs: number;
}

export interface TestFetchResponse {
  status?: number;
  headers?: TestHeaders;
  body?: string | Uint8Array;
}

export type TestFetchHandler = (req: TestFetchRequest) => TestFetchResponse | Promise<TestFetchResponse>;

/** One metric update the plugin made: counter increments are summed per call, like the host does. */
export interface TestMetric {
  type: 'counter' | 'histogram';
  name: string;
  labels: Record<string, string>;
  /** Counter: the sum added in the call; histogram: the observed values. */
  value: number | number[];
}

export type TestHeaders = Record<string, string> | WireHeaders;

export interface TestRequest {
  method?: string;
  path?: string;
  query?: string;
  host?: string;
  headers?: TestHeaders;
  /** The buffered body the plugin sees (with body.request declared). */
  body?: string | Uint8Array;
  remoteAddress?: string;
  originalDestination?: string;
  route?: string;
  service?: string;
  requestId?: string;
}

export interface TestResponse {
  status?: number;
  headers?: TestHeaders;
  /** The buffered body the plugin sees (with body.response declared). */
  body?: string | Uint8Array;
  requestId?: string;
}

export type TestOutcome =
  /** `body`: the body the plugin set with setBody() (UTF-8 text; `bodyBytes` has the bytes). */
  /**
   * onRequest: `responseHeaders`, the ctx.responseHeaders edits, and `skipResponse` when the plugin
   * called ctx.skipOnResponse(). An onResponse() with the same requestId gets them as the host does:
   * the edits applied to the response's headers first, the hook not called when skipped.
   */
  | { action: 'continue'; status?: number; headers: WireHeaders; service?: string; body?: string; bodyBytes?: Uint8Array; responseHeaders?: ResponseHeaderOp[]; skipResponse?: true }
  | { action: 'respond'; status: number; headers: WireHeaders; body: string }
  | { action: 'error'; message: string };

export interface TestLogLine {
  level: LogLevel;
  msg: string;
  fields?: Record<string, unknown>;
}

export interface TestHost {
  onRequest(req?: TestRequest): Promise<TestOutcome>;
  onResponse(res?: TestResponse): Promise<TestOutcome>;
  /** Everything the plugin logged, oldest first. */
  readonly logs: TestLogLine[];
  /** Every ctx.fetch that reached a stub, oldest first. */
  readonly fetches: TestFetchRequest[];
  /** Every metric update, oldest first. */
  readonly metrics: TestMetric[];
}

function toBytes(body: string | Uint8Array | undefined): Uint8Array {
  if (body === undefined) return new Uint8Array(0);
  return typeof body === 'string' ? new TextEncoder().encode(body) : body;
}

function wireHeaders(h: TestHeaders | undefined): WireHeaders {
  if (h === undefined) return [];
  const pairs = Array.isArray(h) ? h : Object.entries(h);
  return pairs.map(([k, v]) => [String(k).toLowerCase(), String(v)]);
}

export function createTestHost<C = Record<string, unknown>>(plugin: Plugin<C>, options: TestHostOptions = {}): TestHost {
  const tenant = options.tenant ?? 'test';
  const guest = new GuestPlugin(plugin, { tenant, plugin: options.pluginName ?? 'plugin' });
  guest.setSecrets(JSON.stringify(options.secrets ?? {}));
  const now = options.now ?? Date.now;
  const logs: TestLogLine[] = [];
  const fetches: TestFetchRequest[] = [];
  const metrics: TestMetric[] = [];
  const stubs = options.fetch ?? {};
  const fetch = async (req: CapabilityFetchRequest): Promise<CapabilityFetchResponse> => {
    const stub = Object.hasOwn(stubs, req.service) ? stubs[req.service] : undefined;
    if (stub === undefined) throw new CapabilityFetchError('ERR_FETCH_UNKNOWN_SERVICE', `ctx.fetch: "${req.service}" is not a service of tenant ${tenant}`);
    const seen: TestFetchRequest = {
      service: req.service,
      method: req.method,
      path: req.path,
      headers: req.headers,
      body: req.body === undefined ? '' : new TextDecoder().decode(req.body),
      timeoutMs: req.timeoutMs,
    };
    if (req.body !== undefined) seen.bodyBytes = req.body;
    fetches.push(seen);
    const out = await stub(seen);
    return { status: out.status ?? 200, headers: wireHeaders(out.headers), body: toBytes(out.body) };
  };
  const capabilities = new HostCapabilities({ fetch });
  const secrets: Record<string, string> = Object.assign(Object.create(null) as Record<string, string>, options.secrets ?? {});
  let seq = 0;
  let configSent = false;
  /** onRequest's response header edits and skips, by request id, for the onResponse of that request. */
  const deferred = new Map<string, { ops: ResponseHeaderOp[]; skip: boolean }>();

  /** The sandbox's #drive, in-process: perform capability requests and re-poll until the hook settles. */
  async function drive(id: number): Promise<string> {
    const started = performance.now();
    let capabilityMs = 0;
    let rounds = 0;
    const wallMs = options.capabilityWallMs ?? CAPABILITY_WALL_MS;
    const fail = (message: string): string => {
      guest.cancel(id);
      return JSON.stringify({ action: 'error', message });
    };
    for (let turn = 0; turn < MAX_TURNS; turn++) {
      const out = guest.poll(id);
      if (out !== '' && !out.startsWith('[')) return out;
      if (out.startsWith('[')) {
        if (++rounds > (options.capabilityRounds ?? CAPABILITY_ROUNDS)) {
          return fail(`plugin needed more than ${options.capabilityRounds ?? CAPABILITY_ROUNDS} rounds of capability calls in one hook call`);
        }
        const t0 = performance.now();
        const results = await capabilities.perform(JSON.parse(out), { secrets, now: now(), wallLeftMs: wallMs - capabilityMs });
        capabilityMs += performance.now() - t0;
        if (capabilityMs > wallMs) return fail(`capability calls took longer than ${wallMs} ms in one hook call`);
        guest.deliver(JSON.stringify(results));
      } else if (performance.now() - started - capabilityMs > (options.idleTimeoutMs ?? 1000)) {
        return fail('async hook did not settle');
      }
      // A macrotask turn: every microtask the delivery (or another call) queued has run by then.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
    return fail('async hook did not settle');
  }

  async function run(input: CallInput, headers: WireHeaders): Promise<TestOutcome> {
    if (!configSent) {
      input.config = options.config ?? {};
      configSent = true;
    }
    const first = JSON.parse(guest.call(JSON.stringify(input))) as CallResult;
    if ('pending' in first) await new Promise<void>((resolve) => setImmediate(resolve));
    const result = ('pending' in first ? JSON.parse(await drive(first.pending)) : first) as Exclude<CallResult, { pending: number }>;
    for (const [level, msg, fields] of result.logs ?? []) {
      logs.push({ level, msg, ...(fields !== undefined ? { fields: JSON.parse(fields) as Record<string, unknown> } : {}) });
    }
    for (const op of (result.metrics ?? []) as MetricOp[]) {
      metrics.push({ type: op[0] === 'c' ? 'counter' : 'histogram', name: op[1], labels: Object.fromEntries(op[2]), value: op[3] });
    }
    if (result.action === 'error') return { action: 'error', message: result.message };
    if (result.action === 'respond') {
      return { action: 'respond', status: result.status, headers: result.headers, body: result.body };
    }
    if (result.service !== undefined && options.services !== undefined && !options.services.includes(result.service)) {
      return { action: 'error', message: `ctx.route: unknown service ${result.service}` };
    }
    const out: TestOutcome = {
      action: 'continue',
      headers: result.headers ?? headers,
      ...(result.status !== undefined ? { status: result.status } : {}),
      ...(result.service !== undefined ? { service: result.service } : {}),
      ...(result.responseHeaders !== undefined ? { responseHeaders: result.responseHeaders } : {}),
      ...(result.skipResponse === true ? { skipResponse: true as const } : {}),
    };
    if (input.hook === 'onRequest' && (result.responseHeaders !== undefined || result.skipResponse === true)) {
      deferred.set(input.requestId, { ops: result.responseHeaders ?? [], skip: result.skipResponse === true });
    }
    if (result.body !== undefined) {
      out.bodyBytes = new Uint8Array(Buffer.from(result.body, 'base64'));
      out.body = new TextDecoder().decode(out.bodyBytes);
    }
    return out;
  }

  const declared = guest.declarations.body ?? {};
  const wireBody = (body: string | Uint8Array | undefined, limit: number | undefined): string | undefined => {
    if (limit === undefined) return undefined;
    const bytes = toBytes(body);
    // The host answers 413/502 before the plugin runs when a body is over the declared limit.
    if (bytes.byteLength > limit) throw new RangeError(`test body is ${bytes.byteLength} bytes, over the plugin's declared limit of ${limit}`);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
  };

  return {
    logs,
    fetches,
    metrics,
    onRequest(req: TestRequest = {}): Promise<TestOutcome> {
      const headers = wireHeaders(req.headers);
      const wire = {
        method: req.method ?? 'GET',
        path: req.path ?? '/',
        query: req.query ?? '',
        host: req.host ?? 'localhost',
        headers,
        remoteAddress: req.remoteAddress ?? '127.0.0.1',
        originalDestination: req.originalDestination,
        route: req.route,
        service: req.service,
        body: wireBody(req.body, declared.request),
      };
      const requestId = req.requestId ?? `test-${++seq}`;
      return run({ hook: 'onRequest', requestId, now: now(), configId: 1, req: wire }, headers);
    },
    onResponse(res: TestResponse = {}): Promise<TestOutcome> {
      const requestId = res.requestId ?? `test-${++seq}`;
      const d = deferred.get(requestId);
      deferred.delete(requestId);
      const headers = d === undefined ? wireHeaders(res.headers) : applyResponseOps(wireHeaders(res.headers), d.ops);
      // As the host: a skipped hook (or none) is not called; the response goes on with the edits.
      if (d !== undefined && (d.skip || !guest.hooks.includes('onResponse'))) return Promise.resolve({ action: 'continue', headers });
      return run(
        { hook: 'onResponse', requestId, now: now(), configId: 1, res: { status: res.status ?? 200, headers, body: wireBody(res.body, declared.response) } },
        headers,
      );
    },
  };
}
