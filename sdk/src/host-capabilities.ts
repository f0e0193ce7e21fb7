// Host capabilities: work a plugin asks the host to do (ctx.jwt.verify, ctx.sleep) because it needs
// crypto keys, secrets or timers the isolate must not hold. The guest records requests as plain JSON;
// the production sandbox (runtime/src/host/sandbox.ts) and the local test host (testing.ts) collect
// them between turns of the guest, call perform() here, and deliver the results as JSON. One
// implementation for both, so a plugin's unit tests see exactly what production does.
//
// Everything in a request is guest-controlled and re-validated here. A shared secret is looked up by
// name among the calling tenant's own secrets, so a plugin can name only its own tenant's secrets.

import { createLocalJWKSet, jwtVerify, type JSONWebKeySet, type JWTVerifyGetKey, type JWTVerifyOptions } from 'jose';

export type CapabilityFailureCode =
  | 'ERR_JWT_EXPIRED'
  | 'ERR_JWT_CLAIM_INVALID'
  | 'ERR_JWT_SIGNATURE_INVALID'
  | 'ERR_JWT_NO_MATCHING_KEY'
  | 'ERR_JWT_MALFORMED'
  | 'ERR_JWT_ALG_NOT_ALLOWED'
  | 'ERR_JWT_OPTIONS'
  | 'ERR_SLEEP_OPTIONS'
  | 'ERR_CAPABILITY_LIMIT'
  | 'ERR_CAPABILITY_FAILED';

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
});

const HMAC_ALGS = ['HS256', 'HS384', 'HS512'];
const ASYMMETRIC_ALGS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519'];
const PRIVATE_JWK_PARAMS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k'];

class OptionsError extends Error {}

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
  #disposed = false;

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
      else out.push(Promise.resolve(fail(id, 'ERR_CAPABILITY_FAILED', `unknown capability ${JSON.stringify(String(r.name).slice(0, 64))}`)));
    }
    return Promise.all(out);
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
  }

  async #jwtVerify(id: number, args: unknown, env: CapabilityEnv): Promise<CapabilityResult> {
    let key: Uint8Array | JWTVerifyGetKey;
    let options: JWTVerifyOptions;
    let token: string;
    try {
      ({ key, options, token } = this.#jwtInputs(args, env));
    } catch (e) {
      if (e instanceof OptionsError) return fail(id, 'ERR_JWT_OPTIONS', `jwt.verify: ${e.message}`);
      return mapJoseError(id, e);
    }
    try {
      const verified = typeof key === 'function' ? await jwtVerify(token, key, options) : await jwtVerify(token, key, options);
      return { id, ok: true, value: { payload: verified.payload, header: verified.protectedHeader } };
    } catch (e) {
      return mapJoseError(id, e);
    }
  }

  #jwtInputs(args: unknown, env: CapabilityEnv): { key: Uint8Array | JWTVerifyGetKey; options: JWTVerifyOptions; token: string } {
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
    return { key, options, token };
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
    const set = createLocalJWKSet(JSON.parse(text) as JSONWebKeySet);
    if (this.#jwks.size >= CAPABILITY_BOUNDS.jwksCached) {
      const oldest = this.#jwks.keys().next().value;
      if (oldest !== undefined) this.#jwks.delete(oldest);
    }
    this.#jwks.set(text, set);
    return set;
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
