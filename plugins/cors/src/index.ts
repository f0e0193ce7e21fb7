// cors: answers CORS preflights and adds CORS headers to responses for allowed origins. Origins are
// matched exactly ("https://app.example.com"), by subdomain wildcard ("https://*.example.com") or
// all ("*"). Every answer that depends on Origin says so with `Vary: Origin`.

import { configParser, definePlugin, type PluginHeaders } from '@isomesh/sdk';

export interface CorsConfig {
  allowOrigins: string[];
  /** Default GET, HEAD, POST, PUT, PATCH, DELETE. */
  allowMethods?: string[];
  /** Request headers a cross-origin request may send. Default content-type, authorization. */
  allowHeaders?: string[];
  exposeHeaders?: string[];
  allowCredentials?: boolean;
  /** Preflight cache lifetime, seconds. Default 600. */
  maxAgeSec?: number;
}

interface OriginRule {
  scheme: string;
  /** Exact host, or the suffix after "*." for a wildcard rule. */
  host: string;
  wildcard: boolean;
  port: string;
}

export interface CorsSettings {
  any: boolean;
  rules: OriginRule[];
  methods: Set<string>;
  methodsHeader: string;
  headers: Set<string>;
  headersHeader: string;
  exposeHeader?: string;
  credentials: boolean;
  maxAge: string;
}

const KEYS = new Set(['allowOrigins', 'allowMethods', 'allowHeaders', 'exposeHeaders', 'allowCredentials', 'maxAgeSec']);
const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const ORIGIN_RE = /^(https?):\/\/(\*\.)?([a-z0-9.-]+|\[[0-9a-f:.]+\])(?::(\d{1,5}))?$/;
/** Requests whose Origin was allowed, until their response passes (bounded, oldest dropped). */
const MAX_REMEMBERED = 10_000;

class ConfigError extends Error {
  constructor(message: string) {
    super(`cors config: ${message}`);
    this.name = 'ConfigError';
  }
}

function tokens(v: unknown, what: string, fallback: string[], lower: boolean): string[] {
  if (v === undefined) return fallback;
  if (!Array.isArray(v) || !v.every((t) => typeof t === 'string' && TOKEN_RE.test(t))) throw new ConfigError(`${what} must be an array of header/method tokens`);
  return v.map((t: string) => (lower ? t.toLowerCase() : t));
}

function originRule(text: unknown): OriginRule {
  const m = typeof text === 'string' ? ORIGIN_RE.exec(text) : null;
  if (m === null) throw new ConfigError(`allowOrigins: ${JSON.stringify(text)} is not an origin like "https://app.example.com" or "https://*.example.com" (lower-case, no path)`);
  const host = m[3] as string;
  if (m[2] !== undefined && !host.includes('.')) throw new ConfigError(`allowOrigins: "${text}" would match every subdomain of a top-level domain`);
  return { scheme: m[1] as string, host, wildcard: m[2] !== undefined, port: m[4] ?? '' };
}

export function parseConfig(raw: unknown): CorsSettings {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('config must be an object');
  const c = raw as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!KEYS.has(k)) throw new ConfigError(`unknown field "${k}"`);
  if (!Array.isArray(c.allowOrigins) || c.allowOrigins.length === 0) throw new ConfigError('allowOrigins must be a non-empty array');
  const any = c.allowOrigins.includes('*');
  if (any && c.allowOrigins.length > 1) throw new ConfigError('allowOrigins: "*" cannot be combined with other origins');
  const credentials = c.allowCredentials ?? false;
  if (typeof credentials !== 'boolean') throw new ConfigError('allowCredentials must be a boolean');
  // Browsers refuse credentials with "*"; reflecting every origin instead would hand any site the
  // user's cookies.
  if (any && credentials) throw new ConfigError('allowCredentials cannot be used with allowOrigins ["*"]: list the origins');
  const methods = tokens(c.allowMethods, 'allowMethods', ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], false).map((m) => m.toUpperCase());
  const headers = tokens(c.allowHeaders, 'allowHeaders', ['content-type', 'authorization'], true);
  const expose = tokens(c.exposeHeaders, 'exposeHeaders', [], true);
  const maxAge = c.maxAgeSec ?? 600;
  if (typeof maxAge !== 'number' || !Number.isInteger(maxAge) || maxAge < 0 || maxAge > 86_400) throw new ConfigError('maxAgeSec must be an integer in 0..86400');
  const s: CorsSettings = {
    any,
    rules: any ? [] : c.allowOrigins.map(originRule),
    methods: new Set(methods),
    methodsHeader: methods.join(', '),
    headers: new Set(headers),
    headersHeader: headers.join(', '),
    credentials,
    maxAge: String(maxAge),
  };
  if (expose.length > 0) s.exposeHeader = expose.join(', ');
  return s;
}

/** Parsed once per config object; a bad config fails the chain entry on every request. */
const settings = configParser<CorsSettings>(parseConfig);

/** The allowed origin to echo, or undefined. "null" (sandboxed frames, file:) is never allowed. */
export function allowedOrigin(s: CorsSettings, origin: string | null): string | undefined {
  if (origin === null || origin === 'null') return undefined;
  if (s.any) return '*';
  const m = ORIGIN_RE.exec(origin);
  if (m === null || m[2] !== undefined) return undefined;
  const host = m[3] as string;
  const port = m[4] ?? '';
  for (const r of s.rules) {
    if (r.scheme !== m[1] || r.port !== port) continue;
    // "*.example.com" matches a.example.com and a.b.example.com, never example.com or evil-example.com.
    if (r.wildcard ? host.endsWith(`.${r.host}`) : host === r.host) return origin;
  }
  return undefined;
}

function vary(headers: PluginHeaders, ...names: string[]): void {
  const have = (headers.get('vary') ?? '').split(',').map((v) => v.trim().toLowerCase()).filter((v) => v !== '');
  if (have.includes('*')) return;
  const add = names.filter((n) => !have.includes(n.toLowerCase()));
  if (add.length > 0) headers.set('vary', [...have.length > 0 ? [headers.get('vary') as string] : [], ...add].join(', '));
}

const remembered = new Map<string, string>();

export default definePlugin<CorsConfig>({
  onRequest(req, ctx) {
    const s = settings(ctx.config);
    const origin = req.headers.get('origin');
    const requestedMethod = req.headers.get('access-control-request-method');
    if (req.method === 'OPTIONS' && origin !== null && requestedMethod !== null) {
      const allowed = allowedOrigin(s, origin);
      const requestedHeaders = (req.headers.get('access-control-request-headers') ?? '')
        .split(',').map((h) => h.trim().toLowerCase()).filter((h) => h !== '');
      const headers: Array<[string, string]> = [];
      const ok = allowed !== undefined && s.methods.has(requestedMethod) && requestedHeaders.every((h) => s.headers.has(h));
      if (ok) {
        headers.push(['access-control-allow-origin', allowed], ['access-control-allow-methods', s.methodsHeader], ['access-control-max-age', s.maxAge]);
        if (s.headersHeader !== '') headers.push(['access-control-allow-headers', s.headersHeader]);
        if (s.credentials) headers.push(['access-control-allow-credentials', 'true']);
      }
      if (!s.any) headers.push(['vary', 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers']);
      // A refused preflight gets no CORS headers: the browser blocks the real request.
      return ctx.respond(ok ? 204 : 403, { headers });
    }
    const allowed = allowedOrigin(s, origin);
    if (allowed === undefined) return;
    if (remembered.size >= MAX_REMEMBERED) remembered.delete(remembered.keys().next().value as string);
    remembered.set(ctx.requestId, allowed);
  },

  onResponse(res, ctx) {
    const s = settings(ctx.config);
    // The policy is this entry's: CORS headers the upstream sent are replaced, not merged.
    for (const h of ['access-control-allow-origin', 'access-control-allow-credentials', 'access-control-expose-headers']) res.headers.delete(h);
    if (!s.any) vary(res.headers, 'Origin');
    const allowed = remembered.get(ctx.requestId);
    if (allowed === undefined) return;
    remembered.delete(ctx.requestId);
    res.headers.set('access-control-allow-origin', allowed);
    if (s.credentials) res.headers.set('access-control-allow-credentials', 'true');
    if (s.exposeHeader !== undefined) res.headers.set('access-control-expose-headers', s.exposeHeader);
  },
});
