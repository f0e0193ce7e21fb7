// The guest runtime's core: builds req/res/ctx for one hook call, runs the plugin's hook and turns
// what it did into a CallResult. Production runs this inside each plugin context of the tenant's
// isolate; createTestHost() runs the very same class in-process.

import type {
  EarlyResponse,
  LogFields,
  MetricLabels,
  PluginContext,
  PluginMetrics,
  PluginRequest,
  PluginResponse,
  RateLimitOptions,
  RateLimitResult,
  RespondInit,
  ResponseHeaderEdits,
  ResponseHeaderOp,
} from '../types.ts';
import { CallCapabilities, CapabilityBroker, fetchFor, jwtFor, sleepFor } from './capabilities.ts';
import { pluginDeclarations, type Declarations, type HookName } from './define.ts';
import { GuestHeaders, checkName, checkValue, headersFrom } from './headers.ts';
import { BodyState, GuestRequest, GuestResponse, MetricRecorder } from './messages.ts';
import { TokenBuckets } from './rate-limit.ts';
import {
  GUEST_LIMITS,
  RESULT_SEP,
  type CallInput,
  type CallResult,
  type LoadMeta,
  type LogLevel,
  type LogLine,
  type MetricOp,
  type WireRequest,
  type WireResponse,
} from './protocol.ts';

type Hook = (arg: unknown, ctx: unknown) => unknown;

interface CallState {
  headers: GuestHeaders;
  res?: { status: number };
  body?: BodyState;
  metrics?: MetricRecorder;
  responded?: { status: number; headers: GuestHeaders; body: string };
  service?: string;
  logs: LogLine[];
  logsDropped: number;
  caps: CallCapabilities;
  /** The runner's calls: "" for a call that changed and reported nothing; status only when changed. */
  compact: boolean;
  /** onResponse: the status the hook got. */
  status?: number;
  /** onRequest: ctx.responseHeaders edits and ctx.skipOnResponse(). */
  responseOps?: ResponseHeaderOp[];
  skipResponse?: true;
  /** The hook being called (ctx.responseHeaders and skipOnResponse are onRequest's). */
  hook: HookName;
}

interface Pending {
  state: CallState;
  result?: string;
  waiters: Array<(result: string) => void>;
}

const SERVICE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as object)) deepFreeze(v);
  }
  return value;
}

function describeThrown(e: unknown): string {
  if (e instanceof Error) return `${e.name}: ${e.message}`.slice(0, 2048);
  let text: string;
  try {
    text = typeof e === 'string' ? e : (JSON.stringify(e) ?? String(e));
  } catch {
    text = Object.prototype.toString.call(e);
  }
  return `plugin threw a non-Error value: ${text.slice(0, 512)}`;
}

function checkStatus(status: unknown, what: string): number {
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 200 || status > 599) {
    throw new TypeError(`${what}: status must be an integer 200..599 (a final status)`);
  }
  return status;
}

/**
 * ctx.metrics of one call: one small object; the recorder behind it is made on first use, so a call
 * that records nothing pays for nothing else (an accessor in the ctx literal measured 10× dearer).
 */
class CallMetrics implements PluginMetrics {
  readonly #state: CallState;

  constructor(state: CallState) {
    this.#state = state;
  }

  counter(name: string, labels?: MetricLabels): { inc(n?: number): void } {
    return (this.#state.metrics ??= new MetricRecorder()).counter(name, labels);
  }

  histogram(name: string, labels?: MetricLabels): { observe(value: number): void } {
    return (this.#state.metrics ??= new MetricRecorder()).histogram(name, labels);
  }
}

/** ctx.responseHeaders of one call: checked edits, kept in order; onRequest only. */
class ResponseEdits implements ResponseHeaderEdits {
  readonly #state: CallState;

  constructor(state: CallState) {
    this.#state = state;
  }

  set(name: string, value: string): void {
    this.#push(['set', checkName(name), checkValue(value)]);
  }

  append(name: string, value: string): void {
    this.#push(['append', checkName(name), checkValue(value)]);
  }

  delete(name: string): void {
    this.#push(['delete', checkName(name)]);
  }

  #push(op: ResponseHeaderOp): void {
    const s = this.#state;
    if (s.hook !== 'onRequest') throw new TypeError('ctx.responseHeaders is for onRequest; in onResponse edit res.headers');
    const ops = (s.responseOps ??= []);
    if (ops.length >= GUEST_LIMITS.responseHeaderOps) throw new RangeError(`ctx.responseHeaders: at most ${GUEST_LIMITS.responseHeaderOps} edits per call`);
    ops.push(op);
  }
}

/** Shared by every call of a plugin that did not declare the direction: all its methods throw. */
const UNDECLARED_REQUEST = new BodyState(0, undefined, 'request');
const UNDECLARED_RESPONSE = new BodyState(0, undefined, 'response');
const checkResStatus = (v: unknown): number => checkStatus(v, 'res.status');
const EMPTY_HEADERS = new GuestHeaders();
const EMPTY_CONFIG = Object.freeze({});

export class GuestPlugin {
  readonly hooks: HookName[];
  readonly declarations: Declarations;
  readonly #plugin: Record<HookName, Hook | undefined>;
  readonly #meta: LoadMeta;
  #secrets: PluginContext['secrets'] = GuestPlugin.#secretsOf(Object.create(null));
  readonly #configs = new Map<number, unknown>();
  readonly #buckets = new TokenBuckets();
  readonly #pending = new Map<number, Pending>();
  readonly #broker = new CapabilityBroker();
  #nextPending = 1;

  constructor(plugin: unknown, meta: LoadMeta) {
    this.declarations = pluginDeclarations(plugin);
    this.hooks = this.declarations.hooks;
    this.#plugin = plugin as Record<HookName, Hook | undefined>;
    this.#meta = { tenant: meta.tenant, plugin: meta.plugin };
  }

  setSecrets(json: string): void {
    const parsed: unknown = JSON.parse(json);
    const out: Record<string, string> = Object.create(null);
    if (parsed !== null && typeof parsed === 'object') {
      for (const [k, v] of Object.entries(parsed)) if (typeof v === 'string') out[k] = v;
    }
    this.#secrets = GuestPlugin.#secretsOf(out);
    // A verified token may not verify with the new secret values.
    this.#broker.verified.clear();
  }

  static #secretsOf(values: Record<string, string>): PluginContext['secrets'] {
    return {
      get(name: string): string | undefined {
        return typeof name === 'string' && Object.prototype.hasOwnProperty.call(values, name) ? values[name] : undefined;
      },
    };
  }

  /** Runs one hook. Returns the result, or `{pending}` when the hook returned an unsettled promise. */
  call(inputJson: string): string {
    const input = JSON.parse(inputJson) as CallInput;
    if (input.config !== undefined) this.#setConfig(input.configId, input.config);
    const state = this.#state(false, input.hook);
    if (typeof this.#plugin[input.hook] !== 'function') return JSON.stringify({ action: 'continue' });
    const arg = input.hook === 'onRequest' ? this.#request(input.req as WireRequest, state) : this.#response(input.res as WireResponse, state);
    return this.#invoke(input.hook, arg, this.#context(input.requestId, input.configId, input.now, state), state);
  }

  /**
   * The chain runner's entry for onRequest (runner.ts): primitives only, since the runner lives in
   * another context of the isolate and must hand this context no object of its own. `configJson`
   * comes the first time this context sees `configId`; `headers` (flat, protocol.ts) is split when
   * the hook first reads a header. Returns "" when the hook changed nothing and reported nothing,
   * else the result's JSON followed by RESULT_SEP and the headers when it has any to give back.
   */
  request(
    requestId: string,
    now: number,
    configId: number,
    configJson: string | undefined,
    method: string,
    path: string,
    query: string,
    host: string,
    remoteAddress: string,
    originalDestination: string | undefined,
    route: string | undefined,
    service: string | undefined,
    headers: string,
    body: string | undefined,
  ): string {
    if (configJson !== undefined) this.#setConfig(configId, JSON.parse(configJson));
    const state = this.#state(true, 'onRequest');
    if (typeof this.#plugin.onRequest !== 'function') return '';
    state.headers = new GuestHeaders(undefined, headers);
    const limit = this.declarations.body?.request;
    if (limit !== undefined) state.body = new BodyState(limit, body, 'request');
    const wire: WireRequest = { method, path, query, host, headers: [], remoteAddress };
    if (originalDestination !== undefined) wire.originalDestination = originalDestination;
    if (route !== undefined) wire.route = route;
    if (service !== undefined) wire.service = service;
    const arg = new GuestRequest(wire, state.headers, state.body ?? UNDECLARED_REQUEST);
    return this.#invoke('onRequest', arg, this.#context(requestId, configId, now, state), state);
  }

  /** The chain runner's entry for onResponse (see request()). */
  response(requestId: string, now: number, configId: number, configJson: string | undefined, status: number, headers: string, body: string | undefined): string {
    if (configJson !== undefined) this.#setConfig(configId, JSON.parse(configJson));
    const state = this.#state(true, 'onResponse');
    if (typeof this.#plugin.onResponse !== 'function') return '';
    state.headers = new GuestHeaders(undefined, headers);
    const box = { status };
    state.res = box;
    state.status = status;
    const limit = this.declarations.body?.response;
    if (limit !== undefined) state.body = new BodyState(limit, body, 'response');
    const arg = new GuestResponse({ status, headers: [] }, state.headers, box, state.body ?? UNDECLARED_RESPONSE, checkResStatus);
    return this.#invoke('onResponse', arg, this.#context(requestId, configId, now, state), state);
  }

  #setConfig(configId: number, config: unknown): void {
    if (this.#configs.size >= GUEST_LIMITS.configsKept) this.#configs.clear();
    this.#configs.set(configId, deepFreeze(config));
  }

  #state(compact: boolean, hook: HookName): CallState {
    return { headers: EMPTY_HEADERS, logs: [], logsDropped: 0, caps: new CallCapabilities(), compact, hook };
  }

  #invoke(name: HookName, arg: PluginRequest | PluginResponse, ctx: PluginContext<unknown>, state: CallState): string {
    let returned: unknown;
    try {
      returned = (this.#plugin[name] as Hook).call(this.#plugin, arg, ctx);
    } catch (e) {
      return this.#error(e, state);
    }
    if (returned === null || typeof returned !== 'object' || typeof (returned as { then?: unknown }).then !== 'function') {
      return this.#finish(state);
    }
    if (this.#pending.size >= GUEST_LIMITS.pendingCalls) {
      return this.#error(new Error('too many unsettled hook calls'), state);
    }
    const id = this.#nextPending++;
    const pending: Pending = { state, waiters: [] };
    this.#pending.set(id, pending);
    const done = (result: string): void => {
      // "" means "not settled" to poll(): a settled call that changed nothing answers in full.
      pending.result = result === '' ? '{"action":"continue"}' : result;
      for (const w of pending.waiters.splice(0)) w(result);
    };
    Promise.resolve(returned as PromiseLike<unknown>).then(
      () => done(this.#finish(state)),
      (e: unknown) => done(this.#error(e, state)),
    );
    return `{"pending":${id}}`;
  }

  /** The result of a pending call if it has settled (and forgets it), else "". */
  settle(id: number): string {
    const p = this.#pending.get(id);
    if (p === undefined) return JSON.stringify({ action: 'error', message: 'unknown pending call' });
    if (p.result === undefined) return '';
    this.#pending.delete(id);
    return p.result;
  }

  /**
   * One turn of the capability loop: the call's result when it has settled (and forgets it); else the
   * capability requests it made since the last poll as a JSON array ("[...]"); else "" (waiting on
   * something another call may settle).
   */
  poll(id: number): string {
    const p = this.#pending.get(id);
    if (p === undefined) return JSON.stringify({ action: 'error', message: 'unknown pending call' });
    if (p.result !== undefined) return this.settle(id);
    const requests = this.#broker.take(p.state.caps);
    return requests.length > 0 ? JSON.stringify(requests) : '';
  }

  /** Capability results from the host (JSON array of {id, ok, value | error}); microtasks run after. */
  deliver(resultsJson: string): void {
    this.#broker.deliver(resultsJson);
  }

  /** Resolves when the pending call settles (or is cancelled). */
  wait(id: number): Promise<string> {
    const p = this.#pending.get(id);
    if (p === undefined) return Promise.resolve(JSON.stringify({ action: 'error', message: 'unknown pending call' }));
    if (p.result !== undefined) return Promise.resolve(this.settle(id));
    return new Promise((resolve) => {
      p.waiters.push(() => resolve(this.settle(id)));
    });
  }

  /** The host gave up on a call (timeout): release its waiters so nothing is left hanging. */
  cancel(id: number): void {
    const p = this.#pending.get(id);
    if (p === undefined) return;
    this.#pending.delete(id);
    this.#broker.close(p.state.caps);
    const cancelled = JSON.stringify({ action: 'error', message: 'cancelled' });
    for (const w of p.waiters.splice(0)) w(cancelled);
  }

  #request(wire: WireRequest, state: CallState): PluginRequest {
    state.headers = new GuestHeaders(wire.headers);
    const limit = this.declarations.body?.request;
    if (limit !== undefined) state.body = new BodyState(limit, wire.body, 'request');
    return new GuestRequest(wire, state.headers, state.body ?? UNDECLARED_REQUEST);
  }

  #response(wire: WireResponse, state: CallState): PluginResponse {
    state.headers = new GuestHeaders(wire.headers);
    const box = { status: wire.status };
    state.res = box;
    const limit = this.declarations.body?.response;
    if (limit !== undefined) state.body = new BodyState(limit, wire.body, 'response');
    // Not frozen: per-call objects belong to the plugin; freezing them costs on every call.
    return new GuestResponse(wire, state.headers, box, state.body ?? UNDECLARED_RESPONSE, checkResStatus);
  }

  #context(requestId: string, configId: number, now: number, state: CallState): PluginContext<unknown> {
    const meta = this.#meta;
    const buckets = this.#buckets;
    const log = (level: LogLevel) => (msg: string, fields?: LogFields): void => {
      if (state.logs.length >= GUEST_LIMITS.logLinesPerCall) {
        state.logsDropped++;
        return;
      }
      const line: LogLine = [level, String(msg).slice(0, GUEST_LIMITS.logMessageChars)];
      if (fields !== undefined) {
        let json: string | undefined;
        try {
          json = JSON.stringify(fields);
        } catch {
          json = JSON.stringify({ fields: 'unserializable' });
        }
        if (json !== undefined) line.push(json.slice(0, GUEST_LIMITS.logFieldsChars));
      }
      state.logs.push(line);
    };
    const broker = this.#broker;
    // The host's clock for this call: its time when the call started, plus what has passed since.
    const startedAt = Date.now();
    const clock = (): number => now + (Date.now() - startedAt);
    return {
      config: this.#configs.get(configId) ?? EMPTY_CONFIG,
      tenant: meta.tenant,
      requestId,
      respond(status: number, init?: RespondInit): EarlyResponse {
        const s = checkStatus(status, 'ctx.respond');
        const body = init?.body === undefined ? '' : init.body;
        if (typeof body !== 'string') throw new TypeError('ctx.respond: body must be a string');
        if (body.length > GUEST_LIMITS.bodyBytes) throw new TypeError('ctx.respond: body is too large');
        state.responded = { status: s, headers: headersFrom(init?.headers), body };
        return Object.freeze({ status: s });
      },
      route(service: string): void {
        if (typeof service !== 'string' || !SERVICE_RE.test(service)) {
          throw new TypeError(`ctx.route: invalid service name ${JSON.stringify(String(service).slice(0, 64))}`);
        }
        state.service = service;
      },
      responseHeaders: new ResponseEdits(state),
      skipOnResponse(): void {
        if (state.hook !== 'onRequest') throw new TypeError('ctx.skipOnResponse() is for onRequest');
        state.skipResponse = true;
      },
      rateLimit(key: string, options: RateLimitOptions): RateLimitResult {
        return buckets.take(key, options, now);
      },
      log: { debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') },
      secrets: this.#secrets,
      jwt: jwtFor(this.#broker, state.caps, clock),
      sleep: sleepFor(this.#broker, state.caps),
      fetch(url, init) {
        return fetchFor(broker, state.caps)(url, init);
      },
      metrics: new CallMetrics(state),
    };
  }

  /** Adds the call's logs and metric updates to a result (fields only when there are any). */
  #extras<R extends CallResult>(state: CallState, result: R & { logs?: LogLine[]; metrics?: MetricOp[]; metricsDropped?: number }): R {
    const logs = this.#logs(state);
    if (logs !== undefined) result.logs = logs;
    const m = state.metrics;
    if (m !== undefined) {
      const ops = m.ops();
      if (ops !== undefined) result.metrics = ops;
      if (m.dropped > 0) result.metricsDropped = m.dropped;
    }
    return result;
  }

  #logs(state: CallState): LogLine[] | undefined {
    if (state.logsDropped > 0) state.logs.push(['warn', `${state.logsDropped} log lines dropped (per-call limit)`]);
    return state.logs.length > 0 ? state.logs : undefined;
  }

  #finish(state: CallState): string {
    this.#broker.close(state.caps);
    if (
      state.compact &&
      state.responded === undefined &&
      !state.headers.dirty &&
      state.service === undefined &&
      (state.res === undefined || state.res.status === state.status) &&
      state.body?.replaced === undefined &&
      state.logs.length === 0 &&
      state.logsDropped === 0 &&
      state.metrics === undefined &&
      state.responseOps === undefined &&
      state.skipResponse === undefined
    ) {
      return '';
    }
    let result: CallResult;
    if (state.compact) {
      // The runner's form: the result's JSON, then its headers flat (only when it has any to give).
      const r = state.responded;
      if (r !== undefined) return JSON.stringify(this.#extras(state, { action: 'respond', status: r.status, body: r.body } as unknown as CallResult)) + RESULT_SEP + r.headers.toFlat();
      const json = JSON.stringify(
        this.#extras<CallResult>(state, {
          action: 'continue',
          service: state.service,
          status: state.res !== undefined && state.res.status !== state.status ? state.res.status : undefined,
          body: state.body?.replaced,
          responseHeaders: state.responseOps,
          skipResponse: state.skipResponse,
        }),
      );
      return state.headers.dirty ? json + RESULT_SEP + state.headers.toFlat() : json;
    }
    if (state.responded !== undefined) {
      const r = state.responded;
      result = this.#extras<CallResult>(state, { action: 'respond', status: r.status, headers: r.headers.toList(), body: r.body });
    } else {
      result = this.#extras<CallResult>(state, {
        action: 'continue',
        headers: state.headers.dirty ? state.headers.toList() : undefined,
        service: state.service,
        status: state.res !== undefined ? state.res.status : undefined,
        body: state.body?.replaced,
        responseHeaders: state.responseOps,
        skipResponse: state.skipResponse,
      });
    }
    return JSON.stringify(result);
  }

  #error(e: unknown, state: CallState): string {
    this.#broker.close(state.caps);
    return JSON.stringify(this.#extras<CallResult>(state, { action: 'error', message: describeThrown(e) }));
  }
}
