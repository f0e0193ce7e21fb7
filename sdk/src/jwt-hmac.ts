// HS256/384/512 JWT verification on the host, synchronously, with node:crypto and a KeyObject made
// once per secret — the hot path of ctx.jwt.verify({ secret }). jose (WebCrypto) imports the key and
// verifies through a promise on every call; this takes a few microseconds and no event-loop turn.
//
// It only ever says "valid": for a token it accepts, jose's jwtVerify with the same options accepts
// it too and returns the same payload and header (the checks below are jose's, for the options the
// host passes). Anything else — a bad signature, a claim that fails, a header this path does not
// handle (crit), odd encodings — returns undefined, and the caller asks jose, whose error (code,
// message, claim) the plugin sees. So errors are exactly jose's, and success costs no promise.

import { createHmac, createSecretKey, timingSafeEqual, type KeyObject } from 'node:crypto';

export interface HmacVerifyOptions {
  algorithms: readonly string[];
  currentDate: Date;
  issuer?: readonly string[];
  audience?: readonly string[];
  subject?: string;
  clockTolerance?: number;
  requiredClaims?: readonly string[];
}

const HASH: Record<string, string> = { HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' };
const B64URL_RE = /^[A-Za-z0-9_-]*$/;
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function b64url(s: string): Buffer | undefined {
  // Only the plain alphabet (no padding) and a possible length: anything else is jose's to judge.
  if (!B64URL_RE.test(s) || s.length % 4 === 1) return undefined;
  return Buffer.from(s, 'base64url');
}

/** jose's isObject: a plain object (from JSON.parse: Object.prototype or null prototype). */
function plainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Object.prototype.toString.call(v) !== '[object Object]') return false;
  const proto = Object.getPrototypeOf(v) as object | null;
  return proto === null || Object.getPrototypeOf(proto) === null;
}

function json(bytes: Buffer): unknown {
  try {
    return JSON.parse(strictUtf8.decode(bytes));
  } catch {
    return undefined;
  }
}

/** HMAC keys by secret text, made once (bounded; a sandbox holds only its own tenant's). */
export class HmacKeys {
  readonly #keys = new Map<string, KeyObject>();

  get(secret: string): KeyObject {
    let key = this.#keys.get(secret);
    if (key === undefined) {
      if (this.#keys.size >= 64) this.#keys.clear();
      key = createSecretKey(Buffer.from(secret, 'utf8'));
      this.#keys.set(secret, key);
    }
    return key;
  }

  clear(): void {
    this.#keys.clear();
  }
}

/** A token whose signature checked out under `key`: its decoded parts (frozen) and their JSON. */
export interface SignedToken {
  key: KeyObject;
  header: Readonly<Record<string, unknown>>;
  claims: Readonly<Record<string, unknown>>;
  /** JSON of { payload: claims, header } — what the guest receives. */
  valueJson: string;
}

/**
 * Tokens whose signature was verified, by token text (a client sends the same token on every
 * request until it expires): a hit skips the HMAC and the decoding, never the claim checks, and
 * counts only for the same key. Bounded in entries and characters.
 */
export class SignedTokens {
  readonly #tokens = new Map<string, SignedToken>();
  #chars = 0;

  get(token: string, key: KeyObject): SignedToken | undefined {
    const hit = this.#tokens.get(token);
    return hit !== undefined && hit.key === key ? hit : undefined;
  }

  add(token: string, entry: SignedToken): void {
    if (this.#tokens.size >= 1024 || this.#chars + token.length > 1 << 20) this.clear();
    this.#tokens.set(token, entry);
    this.#chars += token.length;
  }

  clear(): void {
    this.#tokens.clear();
    this.#chars = 0;
  }
}

function deepFreeze<T>(v: T): T {
  if (v !== null && typeof v === 'object' && !Object.isFrozen(v)) {
    Object.freeze(v);
    for (const x of Object.values(v as object)) deepFreeze(x);
  }
  return v;
}

/** Structure and signature (not the claims): the token's decoded parts, or undefined (ask jose). */
export function signedToken(token: string, key: KeyObject, algorithms: readonly string[]): SignedToken | undefined {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  const [h, p, sig] = parts as [string, string, string];
  const hb = b64url(h);
  const pb = b64url(p);
  const sb = b64url(sig);
  if (hb === undefined || pb === undefined || sb === undefined) return undefined;
  const header = json(hb);
  // crit (and with it b64) changes how the token is read: jose's path.
  if (!plainObject(header) || Object.hasOwn(header, 'crit')) return undefined;
  const alg = header.alg;
  if (typeof alg !== 'string' || HASH[alg] === undefined || !algorithms.includes(alg)) return undefined;
  const expected = createHmac(HASH[alg] as string, key).update(`${h}.${p}`).digest();
  if (sb.length !== expected.length || !timingSafeEqual(sb, expected)) return undefined;
  const claims = json(pb);
  if (!plainObject(claims)) return undefined;
  return { key, header: deepFreeze(header), claims: deepFreeze(claims), valueJson: JSON.stringify({ payload: claims, header }) };
}

/** jose's validateClaimsSet for these options (no typ, no maxTokenAge): true when every check passes. */
export function claimsValid(claims: Readonly<Record<string, unknown>>, o: HmacVerifyOptions): boolean {
  const presence = [...(o.requiredClaims ?? [])];
  if (o.audience !== undefined) presence.push('aud');
  if (o.subject !== undefined) presence.push('sub');
  if (o.issuer !== undefined) presence.push('iss');
  for (const c of presence) if (!Object.hasOwn(claims, c)) return false;
  if (o.issuer !== undefined && !o.issuer.includes(claims.iss as string)) return false;
  if (o.subject !== undefined && claims.sub !== o.subject) return false;
  if (o.audience !== undefined) {
    const aud = claims.aud;
    const present = typeof aud === 'string' ? o.audience.includes(aud) : Array.isArray(aud) ? o.audience.some((a) => aud.includes(a)) : false;
    if (!present) return false;
  }
  const tolerance = o.clockTolerance ?? 0;
  if (typeof tolerance !== 'number' || !Number.isFinite(tolerance) || tolerance < 0) return false;
  const now = Math.floor(o.currentDate.getTime() / 1000);
  if (!Number.isFinite(now)) return false;
  for (const c of ['iat', 'nbf', 'exp']) if (claims[c] !== undefined && typeof claims[c] !== 'number') return false;
  if (claims.nbf !== undefined && (claims.nbf as number) > now + tolerance) return false;
  if (claims.exp !== undefined && (claims.exp as number) <= now - tolerance) return false;
  return true;
}

/** The token's claims and protected header when it is valid for `o`; undefined: ask jose. */
export function verifyHmacJwt(token: string, key: KeyObject, o: HmacVerifyOptions): { payload: Readonly<Record<string, unknown>>; protectedHeader: Readonly<Record<string, unknown>> } | undefined {
  const t = signedToken(token, key, o.algorithms);
  return t !== undefined && claimsValid(t.claims, o) ? { payload: t.claims, protectedHeader: t.header } : undefined;
}
