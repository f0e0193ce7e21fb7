// createTestHost(): run a plugin locally through the same guest runtime production loads into each
// tenant isolate (./guest/invoke.ts): the same Headers, ctx, hook invocation and result shaping, with
// every call crossing a JSON boundary exactly as it does into an isolate. Host capabilities
// (ctx.jwt.verify, ctx.sleep) go through the same poll → perform → deliver loop as in the sandbox,
// performed in-process with jose. What it does not reproduce is isolation itself (CPU/memory limits):
// those belong to the host.

import type { Plugin } from './types.ts';
import { GuestPlugin } from './guest/invoke.ts';
import type { CallInput, CallResult, LogLevel, WireHeaders } from './guest/protocol.ts';
import { HostCapabilities } from './host-capabilities.ts';

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
}

export type TestHeaders = Record<string, string> | WireHeaders;

export interface TestRequest {
  method?: string;
  path?: string;
  query?: string;
  host?: string;
  headers?: TestHeaders;
  remoteAddress?: string;
  originalDestination?: string;
  route?: string;
  service?: string;
  requestId?: string;
}

export interface TestResponse {
  status?: number;
  headers?: TestHeaders;
  requestId?: string;
}

export type TestOutcome =
  | { action: 'continue'; status?: number; headers: WireHeaders; service?: string }
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
  const capabilities = new HostCapabilities();
  const secrets: Record<string, string> = Object.assign(Object.create(null) as Record<string, string>, options.secrets ?? {});
  let seq = 0;
  let configSent = false;

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
    if (result.action === 'error') return { action: 'error', message: result.message };
    if (result.action === 'respond') {
      return { action: 'respond', status: result.status, headers: result.headers, body: result.body };
    }
    if (result.service !== undefined && options.services !== undefined && !options.services.includes(result.service)) {
      return { action: 'error', message: `ctx.route: unknown service ${result.service}` };
    }
    return {
      action: 'continue',
      headers: result.headers ?? headers,
      ...(result.status !== undefined ? { status: result.status } : {}),
      ...(result.service !== undefined ? { service: result.service } : {}),
    };
  }

  return {
    logs,
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
      };
      const requestId = req.requestId ?? `test-${++seq}`;
      return run({ hook: 'onRequest', requestId, now: now(), configId: 1, req: wire }, headers);
    },
    onResponse(res: TestResponse = {}): Promise<TestOutcome> {
      const headers = wireHeaders(res.headers);
      const requestId = res.requestId ?? `test-${++seq}`;
      return run(
        { hook: 'onResponse', requestId, now: now(), configId: 1, res: { status: res.status ?? 200, headers } },
        headers,
      );
    },
  };
}
