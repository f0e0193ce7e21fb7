// createTestHost(): run a plugin locally through the same guest runtime production loads into each
// tenant isolate (./guest/invoke.ts): the same Headers, ctx, hook invocation and result shaping, with
// every call crossing a JSON boundary exactly as it does into an isolate. What it does not reproduce
// is isolation itself (CPU/memory limits): those belong to the host.

import type { Plugin } from './types.ts';
import { GuestPlugin } from './guest/invoke.ts';
import type { CallInput, CallResult, LogLevel, WireHeaders } from './guest/protocol.ts';

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
  let seq = 0;
  let configSent = false;

  async function run(input: CallInput, headers: WireHeaders): Promise<TestOutcome> {
    if (!configSent) {
      input.config = options.config ?? {};
      configSent = true;
    }
    const first = JSON.parse(guest.call(JSON.stringify(input))) as CallResult;
    const result = ('pending' in first ? JSON.parse(await guest.wait(first.pending)) : first) as Exclude<CallResult, { pending: number }>;
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
