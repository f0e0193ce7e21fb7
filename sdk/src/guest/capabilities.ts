// Host capabilities seen from inside the isolate (ctx.jwt.verify, ctx.sleep, ctx.fetch). The guest never holds a
// host reference: a capability call only records a request {id, name, args} (plain JSON) on the hook
// call that made it and returns a promise. The host collects the requests between turns of the
// isolate (poll), performs them, and hands the results back as JSON (deliver) — resolve/reject by id.
// Runs inside the isolate and in createTestHost(): no Node APIs.

import type { FetchErrorCode, FetchInit, FetchResponse, JwtErrorCode, JwtVerifyOptions, JwtVerifyResult, PluginHeaders } from '../types.ts';
import { base64Decode, base64Encode, bodyBytes, utf8Decode } from './bytes.ts';
import { GuestHeaders, headersFrom } from './headers.ts';

export const CAPABILITY_NAMES = ['jwt.verify', 'timer.sleep', 'http.fetch'] as const;
export type CapabilityName = (typeof CAPABILITY_NAMES)[number];

export interface CapabilityRequest {
  id: number;
  name: CapabilityName;
  args: unknown;
}

export interface CapabilityFailure {
  code: JwtErrorCode | FetchErrorCode | 'ERR_CAPABILITY_LIMIT' | 'ERR_CAPABILITY_FAILED' | 'ERR_SLEEP_OPTIONS';
  message: string;
  claim?: string;
}

export type CapabilityResult = { id: number; ok: true; value?: unknown } | { id: number; ok: false; error: CapabilityFailure };

/** Bounds the guest applies to itself; hosts enforce their own again (the guest is not trusted). */
export const CAPABILITY_LIMITS = Object.freeze({
  /** Capability calls one hook invocation may make (every round together). */
  callsPerHook: 32,
  tokenChars: 16 * 1024,
  argsChars: 64 * 1024,
  sleepMaxMs: 60_000,
});

/** Bounds of ctx.fetch (the host enforces them again). */
export const FETCH_LIMITS = Object.freeze({
  requestBodyBytes: 1024 * 1024,
  responseBodyBytes: 1024 * 1024,
  defaultTimeoutMs: 1000,
  maxTimeoutMs: 60_000,
  headers: 100,
  urlChars: 8192,
});

/** The error a capability promise rejects with; plugins branch on `code`. */
export class CapabilityError extends Error {
  readonly code: string;
  readonly claim?: string;

  constructor(name: string, failure: CapabilityFailure) {
    super(String(failure.message).slice(0, 1024));
    this.name = name;
    this.code = String(failure.code);
    if (typeof failure.claim === 'string') this.claim = failure.claim;
  }
}

function errorName(name: CapabilityName): string {
  return name === 'jwt.verify' ? 'JwtVerifyError' : name === 'http.fetch' ? 'FetchError' : 'CapabilityError';
}

interface Waiter {
  name: CapabilityName;
  resolve(value: unknown): void;
  reject(e: unknown): void;
  call: CallCapabilities;
}

/** The capability requests of one hook invocation. */
export class CallCapabilities {
  readonly outgoing: CapabilityRequest[] = [];
  readonly open = new Set<number>();
  issued = 0;
  closed = false;
}

/**
 * Successful ctx.jwt.verify answers of one plugin context, by the JSON of their arguments (token and
 * options): a client sends the same token with request after request, and verifying it again would
 * cost a host round per request for the same answer (Envoy's jwt_authn keeps a cache of verified
 * tokens for the same reason). Everything the host checks is a function of the arguments and the
 * tenant's secrets, except time: a hit is used only while the token's exp and nbf still hold by the
 * host's rule (jose's, with the call's clockTolerance), else the host is asked again and answers with
 * its own error. Failures are never kept; a change of the tenant's secrets forgets everything.
 */
export class VerifiedTokens {
  static readonly MAX = 256;
  readonly #byArgs = new Map<string, { value: JwtVerifyResult; tolerance: number }>();

  /** The kept answer for these arguments if it still holds at `nowMs`. */
  get(argsJson: string, nowMs: number): JwtVerifyResult | undefined {
    const hit = this.#byArgs.get(argsJson);
    if (hit === undefined) return undefined;
    const now = Math.floor(nowMs / 1000);
    const { exp, nbf } = hit.value.payload as { exp?: unknown; nbf?: unknown };
    if (typeof exp === 'number' && exp <= now - hit.tolerance) return undefined;
    if (typeof nbf === 'number' && nbf > now + hit.tolerance) return undefined;
    return hit.value;
  }

  put(argsJson: string, value: JwtVerifyResult, tolerance: number): void {
    if (value === null || typeof value !== 'object' || value.payload === null || typeof value.payload !== 'object') return;
    this.#byArgs.delete(argsJson);
    if (this.#byArgs.size >= VerifiedTokens.MAX) this.#byArgs.delete(this.#byArgs.keys().next().value as string);
    this.#byArgs.set(argsJson, { value, tolerance });
  }

  clear(): void {
    this.#byArgs.clear();
  }

  get size(): number {
    return this.#byArgs.size;
  }
}

/** Per plugin context: the ids awaiting a host answer. */
export class CapabilityBroker {
  #waiters = new Map<number, Waiter>();
  #nextId = 1;

  /** Successful jwt.verify answers this plugin context got, by their arguments (VerifiedTokens). */
  readonly verified = new VerifiedTokens();

  request(call: CallCapabilities, name: CapabilityName, args: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (!this.#admit(call, name, reject)) return;
      const id = this.#nextId++;
      this.#waiters.set(id, { name, resolve, reject, call });
      call.open.add(id);
      call.outgoing.push({ id, name, args });
    });
  }

  /** A call the guest answers itself (a cached result): the same checks and count as request(), no host round. */
  answered(call: CallCapabilities, name: CapabilityName, value: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (this.#admit(call, name, reject)) resolve(value);
    });
  }

  /** The hook call may make one more capability call (counted); else `reject` got why not. */
  #admit(call: CallCapabilities, name: CapabilityName, reject: (e: unknown) => void): boolean {
    const fail = (code: CapabilityFailure['code'], message: string): false => {
      reject(new CapabilityError(errorName(name), { code, message }));
      return false;
    };
    if (call.closed) return fail('ERR_CAPABILITY_FAILED', `${name}: the hook call that owns this ctx has finished`);
    if (call.issued >= CAPABILITY_LIMITS.callsPerHook) {
      return fail('ERR_CAPABILITY_LIMIT', `${name}: more than ${CAPABILITY_LIMITS.callsPerHook} capability calls in one hook call`);
    }
    call.issued++;
    return true;
  }

  /** Requests recorded since the last take, as JSON (the host copies a string, never an object). */
  take(call: CallCapabilities): CapabilityRequest[] {
    return call.outgoing.splice(0);
  }

  deliver(resultsJson: string): void {
    const results: unknown = JSON.parse(resultsJson);
    if (!Array.isArray(results)) return;
    for (const r of results as CapabilityResult[]) {
      const w = r !== null && typeof r === 'object' ? this.#waiters.get(r.id) : undefined;
      if (w === undefined) continue;
      this.#waiters.delete(r.id);
      w.call.open.delete(r.id);
      if (r.ok) w.resolve(deepFreeze(r.value));
      else w.reject(new CapabilityError(errorName(w.name), r.error ?? { code: 'ERR_CAPABILITY_FAILED', message: `${w.name} failed` }));
    }
  }

  /** The call finished or was cancelled: forget its requests so nothing stays reachable. */
  close(call: CallCapabilities): void {
    call.closed = true;
    call.outgoing.length = 0;
    for (const id of call.open) this.#waiters.delete(id);
    call.open.clear();
  }

  get waiting(): number {
    return this.#waiters.size;
  }
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as object)) deepFreeze(v);
  }
  return value;
}

const JWT_OPTION_KEYS = new Set(['secret', 'jwks', 'issuer', 'audience', 'clockTolerance', 'algorithms', 'requiredClaims', 'subject']);

function stringOrList(v: unknown, what: string): string | string[] | undefined {
  if (v === undefined) return undefined;
  if (typeof v === 'string' && v.length > 0) return v;
  if (Array.isArray(v) && v.length > 0 && v.every((s) => typeof s === 'string' && s.length > 0)) return v.slice();
  throw new TypeError(`${what} must be a non-empty string or array of strings`);
}

/**
 * Checks ctx.jwt.verify's arguments and returns the JSON the host receives. Throws TypeError with a
 * message naming the bad option; the caller turns it into a rejected promise (ERR_JWT_OPTIONS).
 */
export function jwtVerifyArgs(token: unknown, options: JwtVerifyOptions | undefined): { token: string; options: Record<string, unknown> } {
  if (typeof token !== 'string' || token.length === 0) throw new TypeError('token must be a non-empty string');
  if (token.length > CAPABILITY_LIMITS.tokenChars) throw new TypeError(`token is longer than ${CAPABILITY_LIMITS.tokenChars} characters`);
  if (options === null || typeof options !== 'object') throw new TypeError('options must be an object with `secret` or `jwks`');
  for (const k of Object.keys(options)) if (!JWT_OPTION_KEYS.has(k)) throw new TypeError(`unknown option "${k}"`);
  const o: Record<string, unknown> = {};
  const hasSecret = options.secret !== undefined;
  const hasJwks = options.jwks !== undefined;
  if (hasSecret === hasJwks) throw new TypeError('give exactly one of `secret` (a tenant secret name) or `jwks`');
  if (hasSecret) {
    if (typeof options.secret !== 'string' || options.secret.length === 0) throw new TypeError('secret must be the name of a tenant secret');
    o.secret = options.secret;
  } else {
    const jwks = options.jwks as unknown;
    if (jwks === null || typeof jwks !== 'object' || !Array.isArray((jwks as { keys?: unknown }).keys)) {
      throw new TypeError('jwks must be a JSON Web Key Set: { "keys": [...] }');
    }
    o.jwks = jwks;
  }
  const issuer = stringOrList(options.issuer, 'issuer');
  if (issuer !== undefined) o.issuer = issuer;
  const audience = stringOrList(options.audience, 'audience');
  if (audience !== undefined) o.audience = audience;
  if (options.subject !== undefined) {
    if (typeof options.subject !== 'string') throw new TypeError('subject must be a string');
    o.subject = options.subject;
  }
  if (options.clockTolerance !== undefined) {
    const c = options.clockTolerance;
    if (typeof c !== 'number' || !Number.isFinite(c) || c < 0 || c > 86_400) throw new TypeError('clockTolerance must be seconds in 0..86400');
    o.clockTolerance = c;
  }
  const algorithms = stringOrList(options.algorithms, 'algorithms');
  if (algorithms !== undefined) o.algorithms = Array.isArray(algorithms) ? algorithms : [algorithms];
  const required = stringOrList(options.requiredClaims, 'requiredClaims');
  if (required !== undefined) o.requiredClaims = Array.isArray(required) ? required : [required];
  return { token, options: o };
}

/** ctx.jwt for one hook call; `clock`: the host's time now (ms), for the verified-token cache. */
export function jwtFor(broker: CapabilityBroker, call: CallCapabilities, clock: () => number): { verify(token: string, options: JwtVerifyOptions): Promise<JwtVerifyResult> } {
  return Object.freeze({
    verify(token: string, options: JwtVerifyOptions): Promise<JwtVerifyResult> {
      let args: { token: string; options: Record<string, unknown> };
      let json: string;
      try {
        args = jwtVerifyArgs(token, options);
        json = JSON.stringify(args);
        if (json.length > CAPABILITY_LIMITS.argsChars) throw new TypeError(`arguments are ${json.length} characters of JSON (max ${CAPABILITY_LIMITS.argsChars})`);
      } catch (e) {
        const message = `jwt.verify: ${e instanceof Error ? e.message : String(e)}`;
        return Promise.reject(new CapabilityError('JwtVerifyError', { code: 'ERR_JWT_OPTIONS', message }));
      }
      const kept = broker.verified.get(json, clock());
      if (kept !== undefined) return broker.answered(call, 'jwt.verify', kept) as Promise<JwtVerifyResult>;
      const tolerance = (args.options.clockTolerance as number | undefined) ?? 0;
      return (broker.request(call, 'jwt.verify', args) as Promise<JwtVerifyResult>).then((value) => {
        broker.verified.put(json, value, tolerance);
        return value;
      });
    },
  });
}

/** ctx.sleep for one hook call: the isolate is idle while the host's timer runs. */
export function sleepFor(broker: CapabilityBroker, call: CallCapabilities): (ms: number) => Promise<void> {
  return (ms: number): Promise<void> => {
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0 || ms > CAPABILITY_LIMITS.sleepMaxMs) {
      return Promise.reject(
        new CapabilityError('CapabilityError', { code: 'ERR_SLEEP_OPTIONS', message: `ctx.sleep: ms must be a number in 0..${CAPABILITY_LIMITS.sleepMaxMs}` }),
      );
    }
    return broker.request(call, 'timer.sleep', { ms: Math.ceil(ms) }).then(() => undefined);
  };
}

const SERVICE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const METHOD_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}$/;
// Request-target characters: visible ASCII only (percent-encode the rest), no fragment.
const TARGET_RE = /^[\x21-\x7e]*$/;
/** Headers the host sets itself on a fetch (framing, routing, hop-by-hop). */
const FETCH_FORBIDDEN_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'proxy-connection', 'expect']);

/**
 * `http://<service>/path?query` → {service, path} (path with the query). Throws TypeError naming
 * what is wrong: only this tenant's services by name, plain http, no userinfo, port or IP.
 */
export function parseServiceUrl(url: unknown): { service: string; path: string } {
  if (typeof url !== 'string') throw new TypeError('url must be a string like "http://<service>/path"');
  if (url.length > FETCH_LIMITS.urlChars) throw new TypeError(`url is longer than ${FETCH_LIMITS.urlChars} characters`);
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*):\/\/([^/?#]*)([^#]*)(#.*)?$/.exec(url);
  if (m === null) throw new TypeError(`${JSON.stringify(url.slice(0, 128))} is not an absolute URL; use "http://<service>/path"`);
  const scheme = (m[1] as string).toLowerCase();
  const authority = m[2] as string;
  if (scheme !== 'http') throw new TypeError(`only http:// URLs of this tenant's services are allowed (got ${scheme}:)`);
  if (authority.includes('@')) throw new TypeError('the URL must not contain userinfo');
  if (authority.startsWith('[') || /^\d{1,3}(\.\d{1,3}){3}(:\d*)?$/.test(authority)) throw new TypeError(`${authority} is an IP address; use a service name of this tenant`);
  if (authority.includes(':')) throw new TypeError('the URL must not contain a port; services are reached by name');
  if (!SERVICE_RE.test(authority)) throw new TypeError(`${JSON.stringify(authority.slice(0, 128))} is not a service name (lower-case letters, digits and "-")`);
  let target = m[3] as string;
  if (target === '' || target.startsWith('?')) target = `/${target}`;
  if (!TARGET_RE.test(target)) throw new TypeError('path and query must be visible ASCII (percent-encode anything else)');
  return { service: authority, path: target };
}

export interface FetchArgs {
  service: string;
  method: string;
  path: string;
  headers: Array<[string, string]>;
  /** Base64. */
  body?: string;
  timeoutMs: number;
}

/** Checks ctx.fetch's arguments; throws TypeError. */
export function fetchArgs(url: unknown, init: FetchInit | undefined): FetchArgs {
  const { service, path } = parseServiceUrl(url);
  if (init !== undefined && (init === null || typeof init !== 'object')) throw new TypeError('init must be an object');
  const i = init ?? {};
  for (const k of Object.keys(i)) if (k !== 'method' && k !== 'headers' && k !== 'body' && k !== 'timeoutMs') throw new TypeError(`unknown init option "${k.slice(0, 64)}"`);
  let method = 'GET';
  if (i.method !== undefined) {
    if (typeof i.method !== 'string' || !METHOD_RE.test(i.method)) throw new TypeError('init.method must be an HTTP method token');
    const upper = i.method.toUpperCase();
    // Fetch normalizes these (and only these) to upper case.
    method = ['DELETE', 'GET', 'HEAD', 'OPTIONS', 'POST', 'PUT', 'PATCH'].includes(upper) ? upper : i.method;
    if (upper === 'CONNECT' || upper === 'TRACE' || upper === 'TRACK') throw new TypeError(`init.method ${upper} is not allowed`);
  }
  const headers = headersFrom(i.headers).toList();
  if (headers.length > FETCH_LIMITS.headers) throw new TypeError(`at most ${FETCH_LIMITS.headers} headers`);
  for (const [name] of headers) {
    if (FETCH_FORBIDDEN_HEADERS.has(name) || name.startsWith('proxy-')) throw new TypeError(`header "${name}" is set by the host; do not pass it`);
  }
  const out: FetchArgs = { service, method, path, headers, timeoutMs: FETCH_LIMITS.defaultTimeoutMs };
  if (i.body !== undefined) {
    if (method === 'GET' || method === 'HEAD') throw new TypeError(`a ${method} request cannot have a body`);
    const bytes = bodyBytes(i.body, 'init.body');
    if (bytes.length > FETCH_LIMITS.requestBodyBytes) throw new TypeError(`init.body is ${bytes.length} bytes (max ${FETCH_LIMITS.requestBodyBytes})`);
    out.body = base64Encode(bytes);
  }
  if (i.timeoutMs !== undefined) {
    const t = i.timeoutMs;
    if (typeof t !== 'number' || !Number.isFinite(t) || t < 1 || t > FETCH_LIMITS.maxTimeoutMs) throw new TypeError(`init.timeoutMs must be a number in 1..${FETCH_LIMITS.maxTimeoutMs}`);
    out.timeoutMs = Math.ceil(t);
  }
  return out;
}

/** The host's answer to a fetch, as delivered (body in base64). */
interface FetchValue {
  status: number;
  headers: Array<[string, string]>;
  body: string;
}

class GuestFetchResponse implements FetchResponse {
  readonly status: number;
  readonly ok: boolean;
  readonly headers: PluginHeaders;
  readonly #body: string;

  constructor(v: FetchValue) {
    this.status = v.status;
    this.ok = v.status >= 200 && v.status <= 299;
    this.headers = new GuestHeaders(v.headers.map(([k, val]) => [k, val]));
    this.#body = v.body;
  }

  async arrayBuffer(): Promise<ArrayBuffer> {
    return base64Decode(this.#body).buffer as ArrayBuffer;
  }

  async text(): Promise<string> {
    return utf8Decode(base64Decode(this.#body));
  }

  async json(): Promise<unknown> {
    return JSON.parse(await this.text());
  }
}

/** ctx.fetch for one hook call. */
export function fetchFor(broker: CapabilityBroker, call: CallCapabilities): (url: string, init?: FetchInit) => Promise<FetchResponse> {
  return (url: string, init?: FetchInit): Promise<FetchResponse> => {
    let args: FetchArgs;
    try {
      args = fetchArgs(url, init);
    } catch (e) {
      const message = `ctx.fetch: ${e instanceof Error ? e.message : String(e)}`;
      return Promise.reject(new CapabilityError('FetchError', { code: 'ERR_FETCH_OPTIONS', message }));
    }
    return broker.request(call, 'http.fetch', args).then((v) => new GuestFetchResponse(v as FetchValue));
  };
}
