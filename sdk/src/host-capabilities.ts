// Host capabilities: work a plugin asks the host to do (ctx.jwt.verify, ctx.sleep, ctx.fetch) because
// it needs crypto keys, secrets, timers or sockets the isolate must not hold. The guest records requests as plain JSON;
// the production sandbox (runtime/src/host/sandbox.ts) and the local test host (testing.ts) collect
// them between turns of the guest, call perform() here, and deliver the results as JSON. One
// implementation for both, so a plugin's unit tests see exactly what production does.
//
// Everything in a request is guest-controlled and re-validated here. A shared secret is looked up by
// name among the calling tenant's own secrets, so a plugin can name only its own tenant's secrets.

import { createRequire } from 'node:module';
import type { JSONWebKeySet, JWTVerifyGetKey, JWTVerifyOptions } from 'jose';
import { claimsValid, HmacKeys, SignedTokens, signedToken, type HmacVerifyOptions } from './jwt-hmac.ts';

// jose is loaded when a token first needs it (an asymmetric key, a JWKS, a token the HMAC fast path
// leaves to it): imported up front it costs every process that holds this module — each cordon, the
// daemon — about 10 MiB of RSS, for tenants that may never verify a token.
const requireLazy = createRequire(import.meta.url);
let joseModule: typeof import('jose') | undefined;
function jose(): typeof import('jose') {
  return (joseModule ??= requireLazy('jose') as typeof import('jose'));
}

export type CapabilityFailureCode =
  | 'ERR_JWT_EXPIRED'
  | 'ERR_JWT_CLAIM_INVALID'
  | 'ERR_JWT_SIGNATURE_INVALID'
  | 'ERR_JWT_NO_MATCHING_KEY'
  | 'ERR_JWT_MALFORMED'
  | 'ERR_JWT_ALG_NOT_ALLOWED'
  | 'ERR_JWT_OPTIONS'
  | 'ERR_SLEEP_OPTIONS'
  | 'ERR_FETCH_OPTIONS'
  | 'ERR_FETCH_UNKNOWN_SERVICE'
  | 'ERR_FETCH_UNAVAILABLE'
  | 'ERR_FETCH_TIMEOUT'
  | 'ERR_FETCH_TOO_LARGE'
  | 'ERR_FETCH_FAILED'
  | 'ERR_CAPABILITY_LIMIT'
  | 'ERR_CAPABILITY_FAILED';

/** A ctx.fetch request as the host performs it: validated, one of the tenant's services by name. */
export interface CapabilityFetchRequest {
  service: string;
  method: string;
  /** Path with the query string, starting with "/". */
  path: string;
  headers: Array<[string, string]>;
  body?: Uint8Array;
  timeoutMs: number;
}

export interface CapabilityFetchResponse {
  status: number;
  headers: Array<[string, string]>;
  body: Uint8Array;
}

/**
 * Performs a fetch for the sandbox's tenant (the data plane's backend, a cordon's relay to the
 * daemon, or a test stub). Throw a CapabilityFetchError to reject with a specific code.
 */
export type CapabilityFetch = (req: CapabilityFetchRequest) => Promise<CapabilityFetchResponse>;

/** A fetch failure with the code the plugin sees. */
export class CapabilityFetchError extends Error {
  readonly code: CapabilityFailureCode;

  constructor(code: CapabilityFailureCode, message: string) {
    super(message);
    this.name = 'CapabilityFetchError';
    this.code = code;
  }
}

export type CapabilityResult =
  | { id: number; ok: true; value?: unknown }
  | { id: number; ok: false; error: { code: CapabilityFailureCode; message: string; claim?: string } };

export interface CapabilityEnv {
  /** The sandbox's own tenant's secrets (never another tenant's). */
  secrets: Readonly<Record<string, string>>;
  /** Clock for exp/nbf/iat checks (ms since epoch). */
  now: number;
  /** Wall time left for capability work in this invocation (ms). */
  wallLeftMs: number;
}

export const CAPABILITY_BOUNDS = Object.freeze({
  requestsPerRound: 32,
  tokenChars: 16 * 1024,
  jwksChars: 64 * 1024,
  jwksKeys: 64,
  /** Distinct inline key sets whose imported keys are kept (per sandbox). */
  jwksCached: 32,
  /** RFC 7518 §3.2: an HMAC key at least as long as the hash; 256 bits is the floor we accept. */
  minSecretBytes: 32,
  sleepMaxMs: 60_000,
  fetchBodyBytes: 1024 * 1024,
  fetchHeaders: 100,
  fetchMaxTimeoutMs: 60_000,
});

const SERVICE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const METHOD_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}$/;
const TARGET_RE = /^\/[\x21-\x7e]*$/;
const HEADER_NAME_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]{1,256}$/;
const HEADER_VALUE_BAD_RE = /[^\t\x20-\x7e\x80-\xff]/;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function fetchHeaders(v: unknown, what: string): Array<[string, string]> {
  if (!Array.isArray(v) || v.length > CAPABILITY_BOUNDS.fetchHeaders) throw new OptionsError(`${what} must be at most ${CAPABILITY_BOUNDS.fetchHeaders} [name, value] pairs`);
  const out: Array<[string, string]> = [];
  for (const pair of v) {
    const [name, value] = Array.isArray(pair) ? (pair as unknown[]) : [];
    if (typeof name !== 'string' || !HEADER_NAME_RE.test(name) || typeof value !== 'string' || value.length > 16 * 1024 || HEADER_VALUE_BAD_RE.test(value)) {
      throw new OptionsError(`${what}: invalid header`);
    }
    out.push([name, value]);
  }
  return out;
}

const HMAC_ALGS = ['HS256', 'HS384', 'HS512'];
const ASYMMETRIC_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
const PRIVATE_JWK_PARAMS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];

class OptionsError extends Error {}

/** A jwt.verify's checked inputs; `secret`: the shared secret's text (HMAC). */
interface JwtInputs {
  key: Uint8Array | JWTVerifyGetKey;
  options: JWTVerifyOptions;
  token: string;
  secret?: string;
}

function fail(id: number, code: CapabilityFailureCode, message: string, claim?: string): CapabilityResult {
  const error: { code: CapabilityFailureCode; message: string; claim?: string } = { code, message: message.slice(0, 1024) };
  if (claim !== undefined) error.claim = claim;
  return { id, ok: false, error };
}

function stringList(v: unknown, what: string): string[] | undefined {
  if (v === undefined) return undefined;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length === 0 || list.length > 32 || !list.every((s) => typeof s === 'string' && s.length > 0 && s.length <= 1024)) {
    throw new OptionsError(`${what} must be a non-empty string or array of strings`);
  }
  return list as string[];
}

/** jose error codes → the stable codes plugins see. */
function mapJoseError(id: number, e: unknown): CapabilityResult {
  const err = e as { code?: unknown; message?: unknown; claim?: unknown };
  const message = typeof err?.message === 'string' ? err.message : String(e);
  const claim = typeof err?.claim === 'string' ? err.claim : undefined;
  switch (err?.code) {
    case 'ERR_JWT_EXPIRED':
      return fail(id, 'ERR_JWT_EXPIRED', `jwt.verify: token expired (${message})`, claim ?? 'exp');
    case 'ERR_JWT_CLAIM_VALIDATION_FAILED':
      return fail(id, 'ERR_JWT_CLAIM_INVALID', `jwt.verify: ${message}`, claim);
    case 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED':
      return fail(id, 'ERR_JWT_SIGNATURE_INVALID', 'jwt.verify: signature verification failed');
    case 'ERR_JWKS_NO_MATCHING_KEY':
    case 'ERR_JWKS_MULTIPLE_MATCHING_KEYS':
      return fail(id, 'ERR_JWT_NO_MATCHING_KEY', `jwt.verify: ${message}`);
    case 'ERR_JOSE_ALG_NOT_ALLOWED':
    case 'ERR_JOSE_NOT_SUPPORTED':
      return fail(id, 'ERR_JWT_ALG_NOT_ALLOWED', `jwt.verify: ${message}`);
    case 'ERR_JWS_INVALID':
    case 'ERR_JWT_INVALID':
      return fail(id, 'ERR_JWT_MALFORMED', `jwt.verify: malformed token (${message})`);
    case 'ERR_JWKS_INVALID':
    case 'ERR_JWK_INVALID':
      return fail(id, 'ERR_JWT_OPTIONS', `jwt.verify: bad jwks (${message})`);
    default:
      return fail(id, 'ERR_CAPABILITY_FAILED', `jwt.verify failed: ${message}`);
  }
}

export class HostCapabilities {
  /** Imported key sets by their JSON text: importing RSA/EC keys costs more than verifying. */
  #jwks = new Map<string, JWTVerifyGetKey>();
  #sleeps = new Set<{ timer: NodeJS.Timeout; done: () => void }>();
  readonly #hmac = new HmacKeys();
  readonly #signed = new SignedTokens();
  /** The value JSON of the last HMAC verification (performSyncJson reuses it instead of re-encoding). */
  #lastValueJson: string | undefined;
  #disposed = false;
  readonly #fetch: CapabilityFetch | undefined;

  /** `fetch`: the backend of ctx.fetch; absent → ctx.fetch rejects with ERR_FETCH_UNAVAILABLE. */
  constructor(opts: { fetch?: CapabilityFetch } = {}) {
    this.#fetch = opts.fetch;
  }

  /** Performs one round of guest requests; never rejects. Malformed entries without an id are dropped. */
  async perform(requests: unknown, env: CapabilityEnv): Promise<CapabilityResult[]> {
    if (!Array.isArray(requests)) return [];
    const out: Array<Promise<CapabilityResult>> = [];
    for (const r of requests as Array<{ id?: unknown; name?: unknown; args?: unknown }>) {
      const id = r?.id;
      if (typeof id !== 'number' || !Number.isSafeInteger(id) || id <= 0) continue;
      if (out.length >= CAPABILITY_BOUNDS.requestsPerRound) {
        out.push(Promise.resolve(fail(id, 'ERR_CAPABILITY_LIMIT', `more than ${CAPABILITY_BOUNDS.requestsPerRound} capability calls at once`)));
        continue;
      }
      if (this.#disposed) out.push(Promise.resolve(fail(id, 'ERR_CAPABILITY_FAILED', 'the tenant sandbox is shutting down')));
      else if (r.name === 'jwt.verify') out.push(this.#jwtVerify(id, r.args, env));
      else if (r.name === 'timer.sleep') out.push(this.#sleep(id, r.args, env));
      else if (r.name === 'http.fetch') out.push(this.#fetchCall(id, r.args, env));
      else out.push(Promise.resolve(fail(id, 'ERR_CAPABILITY_FAILED', `unknown capability ${JSON.stringify(String(r.name).slice(0, 64))}`)));
    }
    return Promise.all(out);
  }

  /**
   * The same round answered at once, when every request can be without waiting: jwt.verify with a
   * shared secret whose token the synchronous HMAC path accepts, or whose options are refused.
   * undefined: something needs perform() (a sleep, a fetch, a JWKS, a token jose must judge).
   */
  performSync(requests: unknown, env: CapabilityEnv): CapabilityResult[] | undefined {
    return this.#answerSync(requests, env)?.map((a) => a.result);
  }

  /** performSync, answered as the JSON the guest's deliver() takes (verified tokens' JSON is kept, not re-encoded). */
  performSyncJson(requests: unknown, env: CapabilityEnv): string | undefined {
    const answers = this.#answerSync(requests, env);
    if (answers === undefined) return undefined;
    const out = answers.map(({ result, valueJson }) =>
      result.ok && valueJson !== undefined ? `{"id":${result.id},"ok":true,"value":${valueJson}}` : JSON.stringify(result));
    return `[${out.join(',')}]`;
  }

  /** The round's answers (with a verified token's kept JSON), or undefined when one needs perform(). */
  #answerSync(requests: unknown, env: CapabilityEnv): Array<{ result: CapabilityResult; valueJson: string | undefined }> | undefined {
    if (!Array.isArray(requests) || requests.length === 0 || requests.length > CAPABILITY_BOUNDS.requestsPerRound || this.#disposed) return undefined;
    const out: Array<{ result: CapabilityResult; valueJson: string | undefined }> = [];
    for (const r of requests as Array<{ id?: unknown; name?: unknown; args?: unknown }>) {
      const id = r?.id;
      if (typeof id !== 'number' || !Number.isSafeInteger(id) || id <= 0) continue;
      if (r.name !== 'jwt.verify') return undefined;
      this.#lastValueJson = undefined;
      const result = this.#jwtVerifySync(id, r.args, env);
      if (result === undefined) return undefined;
      out.push({ result, valueJson: this.#lastValueJson });
    }
    return out;
  }

  /** Ends pending sleeps (their calls fail) and drops cached keys. */
  dispose(): void {
    this.#disposed = true;
    for (const s of this.#sleeps) {
      clearTimeout(s.timer);
      s.done();
    }
    this.#sleeps.clear();
    this.#jwks.clear();
    this.#hmac.clear();
    this.#signed.clear();
  }

  /** A verdict without waiting, or undefined when jose has to decide. */
  #jwtVerifySync(id: number, args: unknown, env: CapabilityEnv): CapabilityResult | undefined {
    let inputs: JwtInputs;
    try {
      inputs = this.#jwtInputs(args, env);
    } catch (e) {
      if (e instanceof OptionsError) return fail(id, 'ERR_JWT_OPTIONS', `jwt.verify: ${e.message}`);
      return mapJoseError(id, e);
    }
    return this.#hmacVerified(id, inputs);
  }

  #hmacVerified(id: number, inputs: JwtInputs): CapabilityResult | undefined {
    if (inputs.secret === undefined) return undefined;
    const o = inputs.options;
    const hmac: HmacVerifyOptions = { algorithms: o.algorithms as string[], currentDate: o.currentDate as Date };
    if (o.issuer !== undefined) hmac.issuer = o.issuer as string[];
    if (o.audience !== undefined) hmac.audience = o.audience as string[];
    if (o.subject !== undefined) hmac.subject = o.subject;
    if (o.clockTolerance !== undefined) hmac.clockTolerance = o.clockTolerance as number;
    if (o.requiredClaims !== undefined) hmac.requiredClaims = o.requiredClaims;
    const key = this.#hmac.get(inputs.secret);
    let t = this.#signed.get(inputs.token, key);
    if (t === undefined) {
      t = signedToken(inputs.token, key, hmac.algorithms);
      if (t === undefined) return undefined;
      this.#signed.add(inputs.token, t);
    }
    // A signature checked before counts only for an algorithm this call allows.
    if (!hmac.algorithms.includes(t.header.alg as string) || !claimsValid(t.claims, hmac)) return undefined;
    this.#lastValueJson = t.valueJson;
    return { id, ok: true, value: { payload: t.claims, header: t.header } };
  }

  async #jwtVerify(id: number, args: unknown, env: CapabilityEnv): Promise<CapabilityResult> {
    let inputs: JwtInputs;
    try {
      inputs = this.#jwtInputs(args, env);
    } catch (e) {
      if (e instanceof OptionsError) return fail(id, 'ERR_JWT_OPTIONS', `jwt.verify: ${e.message}`);
      return mapJoseError(id, e);
    }
    const fast = this.#hmacVerified(id, inputs);
    if (fast !== undefined) return fast;
    const { key, options, token } = inputs;
    try {
      const verified = typeof key === 'function' ? await jose().jwtVerify(token, key, options) : await jose().jwtVerify(token, key, options);
      return { id, ok: true, value: { payload: verified.payload, header: verified.protectedHeader } };
    } catch (e) {
      return mapJoseError(id, e);
    }
  }

  /** The checked inputs of a jwt.verify (throws OptionsError). */
  #jwtInputs(args: unknown, env: CapabilityEnv): JwtInputs {
    const a = args as { token?: unknown; options?: Record<string, unknown> } | null;
    const token = a?.token;
    if (typeof token !== 'string' || token.length === 0 || token.length > CAPABILITY_BOUNDS.tokenChars) {
      throw new OptionsError(`token must be a string of 1..${CAPABILITY_BOUNDS.tokenChars} characters`);
    }
    const o = a?.options;
    if (o === null || typeof o !== 'object' || Array.isArray(o)) throw new OptionsError('options must be an object');
    if ((o.secret === undefined) === (o.jwks === undefined)) throw new OptionsError('give exactly one of `secret` (a tenant secret name) or `jwks`');

    let key: Uint8Array | JWTVerifyGetKey;
    let family: string[];
    let secret: string | undefined;
    if (o.secret !== undefined) {
      const name = o.secret;
      if (typeof name !== 'string' || !Object.prototype.hasOwnProperty.call(env.secrets, name)) {
        throw new OptionsError(`secret ${JSON.stringify(String(name).slice(0, 128))} is not a secret of this tenant`);
      }
      const bytes = new TextEncoder().encode(env.secrets[name] as string);
      if (bytes.byteLength < CAPABILITY_BOUNDS.minSecretBytes) {
        throw new OptionsError(`secret ${JSON.stringify(name)} is shorter than ${CAPABILITY_BOUNDS.minSecretBytes} bytes; HMAC keys need at least 256 bits`);
      }
      key = bytes;
      secret = env.secrets[name] as string;
      family = HMAC_ALGS;
    } else {
      key = this.#keySet(o.jwks);
      family = ASYMMETRIC_ALGS;
    }

    const algorithms = stringList(o.algorithms, 'algorithms') ?? family;
    const foreign = algorithms.filter((alg) => !family.includes(alg));
    if (foreign.length > 0) {
      throw new OptionsError(`algorithms ${foreign.join(', ')} cannot be used with ${o.secret !== undefined ? 'a shared secret' : 'a jwks'} (allowed: ${family.join(', ')})`);
    }
    const options: JWTVerifyOptions = { algorithms, currentDate: new Date(env.now) };
    const issuer = stringList(o.issuer, 'issuer');
    if (issuer !== undefined) options.issuer = issuer;
    const audience = stringList(o.audience, 'audience');
    if (audience !== undefined) options.audience = audience;
    if (o.subject !== undefined) {
      if (typeof o.subject !== 'string') throw new OptionsError('subject must be a string');
      options.subject = o.subject;
    }
    if (o.clockTolerance !== undefined) {
      const c = o.clockTolerance;
      if (typeof c !== 'number' || !Number.isFinite(c) || c < 0 || c > 86_400) throw new OptionsError('clockTolerance must be seconds in 0..86400');
      options.clockTolerance = c;
    }
    const required = stringList(o.requiredClaims, 'requiredClaims');
    if (required !== undefined) options.requiredClaims = required;
    return secret === undefined ? { key, options, token } : { key, options, token, secret };
  }

  #keySet(jwks: unknown): JWTVerifyGetKey {
    let text: string;
    try {
      text = JSON.stringify(jwks);
    } catch {
      throw new OptionsError('jwks must be JSON');
    }
    if (text === undefined || text.length > CAPABILITY_BOUNDS.jwksChars) throw new OptionsError(`jwks must be JSON of at most ${CAPABILITY_BOUNDS.jwksChars} characters`);
    const cached = this.#jwks.get(text);
    if (cached !== undefined) {
      this.#jwks.delete(text);
      this.#jwks.set(text, cached);
      return cached;
    }
    const keys = (jwks as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys) || keys.length === 0 || keys.length > CAPABILITY_BOUNDS.jwksKeys) {
      throw new OptionsError(`jwks must be { "keys": [...] } with 1..${CAPABILITY_BOUNDS.jwksKeys} keys`);
    }
    for (const k of keys as Array<Record<string, unknown>>) {
      if (k === null || typeof k !== 'object') throw new OptionsError('every jwks key must be an object');
      if (k.kty === 'oct') throw new OptionsError('jwks keys must be public keys; use `secret` for HMAC');
      // A private key in a plugin's config would leak through every place config is shown.
      const priv = PRIVATE_JWK_PARAMS.find((p) => k[p] !== undefined);
      if (priv !== undefined) throw new OptionsError(`jwks key ${JSON.stringify(String(k.kid ?? '?'))} holds private key material ("${priv}"); publish only public keys`);
    }
    const set = jose().createLocalJWKSet(JSON.parse(text) as JSONWebKeySet);
    if (this.#jwks.size >= CAPABILITY_BOUNDS.jwksCached) {
      const oldest = this.#jwks.keys().next().value;
      if (oldest !== undefined) this.#jwks.delete(oldest);
    }
    this.#jwks.set(text, set);
    return set;
  }

  #fetchCall(id: number, args: unknown, env: CapabilityEnv): Promise<CapabilityResult> {
    let req: CapabilityFetchRequest;
    try {
      req = this.#fetchInputs(args);
    } catch (e) {
      return Promise.resolve(fail(id, 'ERR_FETCH_OPTIONS', `ctx.fetch: ${(e as Error).message}`));
    }
    if (req.timeoutMs > env.wallLeftMs) {
      return Promise.resolve(
        fail(id, 'ERR_CAPABILITY_LIMIT', `ctx.fetch timeoutMs ${req.timeoutMs} exceeds the ${Math.max(0, Math.floor(env.wallLeftMs))} ms of capability wall time left for this call`),
      );
    }
    const backend = this.#fetch;
    if (backend === undefined) return Promise.resolve(fail(id, 'ERR_FETCH_UNAVAILABLE', 'ctx.fetch: fetch is not available'));
    return new Promise<CapabilityResult>((resolve) => {
      // The host's own deadline: a slow backend (or relay) cannot hold the call past timeoutMs.
      const entry = {
        timer: setTimeout(() => {
          this.#sleeps.delete(entry);
          resolve(fail(id, 'ERR_FETCH_TIMEOUT', `ctx.fetch: http://${req.service}${req.path.slice(0, 256)} did not answer within ${req.timeoutMs} ms`));
        }, req.timeoutMs),
        done: () => resolve(fail(id, 'ERR_CAPABILITY_FAILED', 'ctx.fetch: the tenant sandbox is shutting down')),
      };
      this.#sleeps.add(entry);
      const settle = (r: CapabilityResult): void => {
        if (!this.#sleeps.delete(entry)) return; // timed out or disposed first
        clearTimeout(entry.timer);
        resolve(r);
      };
      let started: Promise<CapabilityFetchResponse>;
      try {
        started = backend(req);
      } catch (e) {
        started = Promise.reject(e);
      }
      started.then(
        (res) => settle(this.#fetchAnswer(id, res)),
        (e: unknown) => {
          const code = e instanceof CapabilityFetchError ? e.code : 'ERR_FETCH_FAILED';
          const message = e instanceof Error ? e.message : String(e);
          settle(fail(id, code, message.startsWith('ctx.fetch') ? message : `ctx.fetch: ${message}`));
        },
      );
    });
  }

  #fetchInputs(args: unknown): CapabilityFetchRequest {
    const a = (args ?? {}) as Record<string, unknown>;
    if (typeof a.service !== 'string' || !SERVICE_RE.test(a.service)) throw new OptionsError('service must be a service name');
    if (typeof a.method !== 'string' || !METHOD_RE.test(a.method)) throw new OptionsError('method must be an HTTP method token');
    if (typeof a.path !== 'string' || a.path.length > 8192 || !TARGET_RE.test(a.path)) throw new OptionsError('path must start with "/" and be visible ASCII');
    const t = a.timeoutMs;
    if (typeof t !== 'number' || !Number.isInteger(t) || t < 1 || t > CAPABILITY_BOUNDS.fetchMaxTimeoutMs) {
      throw new OptionsError(`timeoutMs must be an integer in 1..${CAPABILITY_BOUNDS.fetchMaxTimeoutMs}`);
    }
    const req: CapabilityFetchRequest = { service: a.service, method: a.method, path: a.path, headers: fetchHeaders(a.headers, 'headers'), timeoutMs: t };
    if (a.body !== undefined) {
      if (typeof a.body !== 'string' || !BASE64_RE.test(a.body) || a.body.length > Math.ceil(CAPABILITY_BOUNDS.fetchBodyBytes / 3) * 4) {
        throw new OptionsError(`body must be at most ${CAPABILITY_BOUNDS.fetchBodyBytes} bytes`);
      }
      req.body = Buffer.from(a.body, 'base64');
    }
    return req;
  }

  #fetchAnswer(id: number, res: CapabilityFetchResponse): CapabilityResult {
    const status = res?.status;
    if (typeof status !== 'number' || !Number.isInteger(status) || status < 200 || status > 599) {
      return fail(id, 'ERR_FETCH_FAILED', `ctx.fetch: the service answered an invalid status ${String(status).slice(0, 32)}`);
    }
    const body = res.body instanceof Uint8Array ? res.body : new Uint8Array(0);
    if (body.byteLength > CAPABILITY_BOUNDS.fetchBodyBytes) {
      return fail(id, 'ERR_FETCH_TOO_LARGE', `ctx.fetch: response body is ${body.byteLength} bytes (max ${CAPABILITY_BOUNDS.fetchBodyBytes})`);
    }
    let headers: Array<[string, string]>;
    try {
      headers = fetchHeaders((res.headers ?? []).slice(0, CAPABILITY_BOUNDS.fetchHeaders).map(([k, v]) => [String(k).toLowerCase(), String(v)]), 'response headers');
    } catch (e) {
      return fail(id, 'ERR_FETCH_FAILED', `ctx.fetch: ${(e as Error).message}`);
    }
    return { id, ok: true, value: { status, headers, body: Buffer.from(body.buffer, body.byteOffset, body.byteLength).toString('base64') } };
  }

  #sleep(id: number, args: unknown, env: CapabilityEnv): Promise<CapabilityResult> {
    const ms = (args as { ms?: unknown } | null)?.ms;
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0 || ms > CAPABILITY_BOUNDS.sleepMaxMs) {
      return Promise.resolve(fail(id, 'ERR_SLEEP_OPTIONS', `ctx.sleep: ms must be a number in 0..${CAPABILITY_BOUNDS.sleepMaxMs}`));
    }
    // Refuse up front rather than sleep into a timeout: the plugin gets a clear error to act on.
    if (ms > env.wallLeftMs) {
      return Promise.resolve(
        fail(id, 'ERR_CAPABILITY_LIMIT', `ctx.sleep(${ms}) exceeds the ${Math.max(0, Math.floor(env.wallLeftMs))} ms of capability wall time left for this call`),
      );
    }
    return new Promise((resolve) => {
      const entry = {
        timer: setTimeout(() => {
          this.#sleeps.delete(entry);
          resolve({ id, ok: true });
        }, ms),
        done: () => resolve(fail(id, 'ERR_CAPABILITY_FAILED', 'ctx.sleep: the tenant sandbox is shutting down')),
      };
      this.#sleeps.add(entry);
    });
  }
}
