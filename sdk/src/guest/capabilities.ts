// Host capabilities seen from inside the isolate (ctx.jwt.verify, ctx.sleep). The guest never holds a
// host reference: a capability call only records a request {id, name, args} (plain JSON) on the hook
// call that made it and returns a promise. The host collects the requests between turns of the
// isolate (poll), performs them, and hands the results back as JSON (deliver) — resolve/reject by id.
// Runs inside the isolate and in createTestHost(): no Node APIs.

import type { JwtErrorCode, JwtVerifyOptions, JwtVerifyResult } from '../types.ts';

export const CAPABILITY_NAMES = ['jwt.verify', 'timer.sleep'] as const;
export type CapabilityName = (typeof CAPABILITY_NAMES)[number];

export interface CapabilityRequest {
  id: number;
  name: CapabilityName;
  args: unknown;
}

export interface CapabilityFailure {
  code: JwtErrorCode | 'ERR_CAPABILITY_LIMIT' | 'ERR_CAPABILITY_FAILED' | 'ERR_SLEEP_OPTIONS';
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
  return name === 'jwt.verify' ? 'JwtVerifyError' : 'CapabilityError';
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

/** Per plugin context: the ids awaiting a host answer. */
export class CapabilityBroker {
  #waiters = new Map<number, Waiter>();
  #nextId = 1;

  request(call: CallCapabilities, name: CapabilityName, args: unknown): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const fail = (code: CapabilityFailure['code'], message: string): void =>
        reject(new CapabilityError(errorName(name), { code, message }));
      if (call.closed) return fail('ERR_CAPABILITY_FAILED', `${name}: the hook call that owns this ctx has finished`);
      if (call.issued >= CAPABILITY_LIMITS.callsPerHook) {
        return fail('ERR_CAPABILITY_LIMIT', `${name}: more than ${CAPABILITY_LIMITS.callsPerHook} capability calls in one hook call`);
      }
      call.issued++;
      const id = this.#nextId++;
      this.#waiters.set(id, { name, resolve, reject, call });
      call.open.add(id);
      call.outgoing.push({ id, name, args });
    });
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

/** ctx.jwt for one hook call. */
export function jwtFor(broker: CapabilityBroker, call: CallCapabilities): { verify(token: string, options: JwtVerifyOptions): Promise<JwtVerifyResult> } {
  return Object.freeze({
    verify(token: string, options: JwtVerifyOptions): Promise<JwtVerifyResult> {
      let args: { token: string; options: Record<string, unknown> };
      try {
        args = jwtVerifyArgs(token, options);
        const size = JSON.stringify(args).length;
        if (size > CAPABILITY_LIMITS.argsChars) throw new TypeError(`arguments are ${size} characters of JSON (max ${CAPABILITY_LIMITS.argsChars})`);
      } catch (e) {
        const message = `jwt.verify: ${e instanceof Error ? e.message : String(e)}`;
        return Promise.reject(new CapabilityError('JwtVerifyError', { code: 'ERR_JWT_OPTIONS', message }));
      }
      return broker.request(call, 'jwt.verify', args) as Promise<JwtVerifyResult>;
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
