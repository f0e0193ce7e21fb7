// jwt-auth: verifies a bearer JWT on the host (ctx.jwt.verify — the isolate does no crypto and never
// holds the shared secret), forwards selected claims to the upstream as headers, and answers 401 with
// an RFC 6750 `www-authenticate` challenge when the token is missing or invalid.

import { configParser, definePlugin, type JsonWebKeySet, type JwtAlgorithm, type JwtVerifyOptions, type PluginHeaders } from '@isomesh/sdk';

export interface JwtAuthConfig {
  /** Name of a tenant secret holding the HMAC key (HS256/384/512). Exactly one of secret / jwks. */
  secret?: string;
  /** Inline public keys (RS/PS/ES/EdDSA). */
  jwks?: JsonWebKeySet;
  issuer?: string | string[];
  audience?: string | string[];
  algorithms?: JwtAlgorithm[];
  /** Seconds of leeway for exp/nbf. */
  clockTolerance?: number;
  requiredClaims?: string[];
  /** Also accept the token from this cookie when there is no Authorization header. */
  cookie?: string;
  /** claim → request header for the upstream, e.g. { "sub": "x-user-id" }. */
  forwardClaims?: Record<string, string>;
  /** Remove the Authorization header (and the cookie is left alone) before going upstream. Default false. */
  stripToken?: boolean;
  /** Path prefixes that need no token (e.g. "/healthz"). */
  skipPaths?: string[];
  /** realm in the challenge. Default: the tenant name. */
  realm?: string;
}

export interface JwtAuthSettings {
  verify: JwtVerifyOptions;
  cookie?: string;
  forward: Array<[claim: string, header: string]>;
  stripToken: boolean;
  skipPaths: string[];
  realm?: string;
}

const KEYS = new Set(['secret', 'jwks', 'issuer', 'audience', 'algorithms', 'clockTolerance', 'requiredClaims', 'cookie', 'forwardClaims', 'stripToken', 'skipPaths', 'realm']);
const ALGS = new Set(['HS256', 'HS384', 'HS512', 'RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA']);
const HEADER_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const COOKIE_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const MAX_CLAIM_VALUE = 4096;
// Operator mistakes (bad options, unknown secret) are not the client's fault: fail the call so the
// chain entry's failure policy applies, instead of answering 401 for every request.
const OPERATOR_ERRORS = new Set(['ERR_JWT_OPTIONS', 'ERR_CAPABILITY_LIMIT', 'ERR_CAPABILITY_FAILED']);

class ConfigError extends Error {
  constructor(message: string) {
    super(`jwt-auth config: ${message}`);
    this.name = 'ConfigError';
  }
}

function strings(v: unknown, what: string): string[] | undefined {
  if (v === undefined) return undefined;
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.length === 0 || !list.every((s) => typeof s === 'string' && s.length > 0)) {
    throw new ConfigError(`${what} must be a non-empty string or array of non-empty strings`);
  }
  return list as string[];
}

export function parseConfig(raw: unknown): JwtAuthSettings {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('config must be an object');
  const c = raw as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!KEYS.has(k)) throw new ConfigError(`unknown field "${k}"`);
  if ((c.secret === undefined) === (c.jwks === undefined)) throw new ConfigError('give exactly one of "secret" (a tenant secret name) or "jwks"');
  const verify: JwtVerifyOptions = {};
  if (c.secret !== undefined) {
    if (typeof c.secret !== 'string' || c.secret.length === 0) throw new ConfigError('secret must be the name of a tenant secret');
    verify.secret = c.secret;
  } else {
    const keys = (c.jwks as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(keys) || keys.length === 0 || !keys.every((k) => k !== null && typeof k === 'object' && typeof (k as { kty?: unknown }).kty === 'string')) {
      throw new ConfigError('jwks must be { "keys": [ { "kty": ..., ... } ] } with at least one key');
    }
    verify.jwks = c.jwks as JsonWebKeySet;
  }
  const issuer = strings(c.issuer, 'issuer');
  if (issuer !== undefined) verify.issuer = issuer;
  const audience = strings(c.audience, 'audience');
  if (audience !== undefined) verify.audience = audience;
  const algorithms = strings(c.algorithms, 'algorithms');
  if (algorithms !== undefined) {
    const bad = algorithms.find((a) => !ALGS.has(a));
    if (bad !== undefined) throw new ConfigError(`unknown algorithm "${bad}"`);
    verify.algorithms = algorithms as JwtAlgorithm[];
  }
  if (c.clockTolerance !== undefined) {
    if (typeof c.clockTolerance !== 'number' || !(c.clockTolerance >= 0 && c.clockTolerance <= 3600)) throw new ConfigError('clockTolerance must be seconds in 0..3600');
    verify.clockTolerance = c.clockTolerance;
  }
  const required = strings(c.requiredClaims, 'requiredClaims');
  if (required !== undefined) verify.requiredClaims = required;

  const s: JwtAuthSettings = { verify, forward: [], stripToken: false, skipPaths: [] };
  if (c.cookie !== undefined) {
    if (typeof c.cookie !== 'string' || !COOKIE_RE.test(c.cookie)) throw new ConfigError('cookie must be a cookie name');
    s.cookie = c.cookie;
  }
  if (c.forwardClaims !== undefined) {
    if (c.forwardClaims === null || typeof c.forwardClaims !== 'object' || Array.isArray(c.forwardClaims)) throw new ConfigError('forwardClaims must map claim names to header names');
    for (const [claim, header] of Object.entries(c.forwardClaims as Record<string, unknown>)) {
      if (typeof header !== 'string' || !HEADER_RE.test(header)) throw new ConfigError(`forwardClaims.${claim} must be a lower-case header name`);
      if (header === 'authorization' || header === 'cookie' || header === 'host') throw new ConfigError(`forwardClaims.${claim} may not write "${header}"`);
      s.forward.push([claim, header]);
    }
  }
  if (c.stripToken !== undefined) {
    if (typeof c.stripToken !== 'boolean') throw new ConfigError('stripToken must be a boolean');
    s.stripToken = c.stripToken;
  }
  const skip = strings(c.skipPaths, 'skipPaths');
  if (skip !== undefined) {
    const bad = skip.find((p) => !p.startsWith('/'));
    if (bad !== undefined) throw new ConfigError(`skipPaths entries must start with "/": "${bad}"`);
    s.skipPaths = skip;
  }
  if (c.realm !== undefined) {
    if (typeof c.realm !== 'string' || !/^[\x20-\x7e]{1,128}$/.test(c.realm) || /["\\]/.test(c.realm)) throw new ConfigError('realm must be printable ASCII without quotes or backslashes');
    s.realm = c.realm;
  }
  return s;
}

// Parsed once per config object: the host hands the same frozen object to every call of a chain entry.
/** Parsed once per config object; a bad config fails the chain entry on every request. */
const settings = configParser<JwtAuthSettings>(parseConfig);

export function cookieValue(header: string | null, name: string): string | undefined {
  if (header === null) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== name) continue;
    return part.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
  }
  return undefined;
}

function tokenOf(headers: PluginHeaders, s: JwtAuthSettings): string | undefined {
  const auth = headers.get('authorization');
  if (auth !== null) {
    const m = /^Bearer[ ]+([A-Za-z0-9\-_.~+/]+=*)$/i.exec(auth.trim());
    return m?.[1];
  }
  return s.cookie === undefined ? undefined : cookieValue(headers.get('cookie'), s.cookie) || undefined;
}

function claimHeader(value: unknown): string | undefined {
  let text: string;
  if (typeof value === 'string') text = value;
  else if (typeof value === 'number' || typeof value === 'boolean') text = String(value);
  else if (Array.isArray(value) && value.every((v) => typeof v === 'string')) text = value.join(',');
  else if (value === undefined || value === null) return undefined;
  else text = JSON.stringify(value);
  // Header values cannot carry CR/LF/NUL; a claim that would need them is not forwarded.
  return text.length <= MAX_CLAIM_VALUE && !/[\r\n\0]/.test(text) ? text : undefined;
}

function challenge(realm: string, error?: string, description?: string): string {
  let v = `Bearer realm="${realm}"`;
  if (error !== undefined) v += `, error="${error}"`;
  if (description !== undefined) v += `, error_description="${description}"`;
  return v;
}

export default definePlugin<JwtAuthConfig>({
  async onRequest(req, ctx) {
    const s = settings(ctx.config);
    // A client must never be able to send the identity headers this plugin vouches for.
    for (const [, header] of s.forward) req.headers.delete(header);
    if (s.skipPaths.some((p) => req.path === p || req.path.startsWith(p.endsWith('/') ? p : `${p}/`))) return;
    const realm = s.realm ?? ctx.tenant;
    const token = tokenOf(req.headers, s);
    if (token === undefined) {
      return ctx.respond(401, { headers: { 'www-authenticate': challenge(realm), 'content-type': 'text/plain' }, body: 'missing bearer token\n' });
    }
    let payload: Record<string, unknown>;
    try {
      payload = (await ctx.jwt.verify(token, s.verify)).payload;
    } catch (e) {
      const code = (e as { code?: string }).code ?? '';
      if (OPERATOR_ERRORS.has(code)) throw e;
      const description = code === 'ERR_JWT_EXPIRED' ? 'token expired' : 'invalid token';
      ctx.log.info('jwt rejected', { code, requestId: ctx.requestId });
      return ctx.respond(401, {
        headers: { 'www-authenticate': challenge(realm, 'invalid_token', description), 'content-type': 'text/plain' },
        body: `${description}\n`,
      });
    }
    for (const [claim, header] of s.forward) {
      const value = claimHeader(payload[claim]);
      if (value !== undefined) req.headers.set(header, value);
    }
    if (s.stripToken) req.headers.delete('authorization');
  },
});
