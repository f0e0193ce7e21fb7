// canary-router: sends a request to the canary service when it opts in by header or cookie, or when
// its sticky key falls in the canary percentage. The split is a hash of the sticky key (a user id
// header, a session cookie, the client IP, or the request id), so one user stays on one side.

import { configParser, definePlugin, type PluginRequest } from '@isomesh/sdk';

export interface CanaryRouterConfig {
  /** The service canary traffic goes to (one of the tenant's services). */
  service: string;
  /** Opt in by header: { name, value? } — any value when `value` is absent. */
  header?: { name: string; value?: string };
  /** Opt in by cookie: { name, value? }. */
  cookie?: { name: string; value?: string };
  /** Share of the remaining traffic for the canary, 0..100 (fractions allowed, to 0.01). */
  percent?: number;
  /** "request-id" (default), "client-ip", "header:<name>" or "cookie:<name>". */
  stickyBy?: string;
  /** Seed of the split; change it to reshuffle who is in the canary. Default: the service name. */
  salt?: string;
  /** Request header telling the upstream the request was routed to the canary. */
  markHeader?: string;
}

type Sticky = { by: 'request-id' } | { by: 'client-ip' } | { by: 'header'; name: string } | { by: 'cookie'; name: string };
interface Match {
  name: string;
  value?: string;
}

export interface CanaryRouterSettings {
  service: string;
  header?: Match;
  cookie?: Match;
  /** Canary buckets out of 10 000. */
  buckets: number;
  sticky: Sticky;
  salt: string;
  markHeader?: string;
}

const KEYS = new Set(['service', 'header', 'cookie', 'percent', 'stickyBy', 'salt', 'markHeader']);
const SERVICE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const HEADER_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const COOKIE_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

class ConfigError extends Error {
  constructor(message: string) {
    super(`canary-router config: ${message}`);
    this.name = 'ConfigError';
  }
}

function match(v: unknown, what: 'header' | 'cookie'): Match | undefined {
  if (v === undefined) return undefined;
  const m = v as { name?: unknown; value?: unknown } | null;
  const re = what === 'header' ? HEADER_RE : COOKIE_RE;
  if (m === null || typeof m !== 'object' || typeof m.name !== 'string' || !re.test(m.name)) {
    throw new ConfigError(`${what} must be { "name": "<${what} name${what === 'header' ? ', lower-case' : ''}>", "value"?: "..." }`);
  }
  const extra = Object.keys(m).find((k) => k !== 'name' && k !== 'value');
  if (extra !== undefined) throw new ConfigError(`${what}: unknown field "${extra}"`);
  if (m.value !== undefined && typeof m.value !== 'string') throw new ConfigError(`${what}.value must be a string`);
  return m.value === undefined ? { name: m.name } : { name: m.name, value: m.value };
}

export function parseConfig(raw: unknown): CanaryRouterSettings {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('config must be an object');
  const c = raw as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!KEYS.has(k)) throw new ConfigError(`unknown field "${k}"`);
  if (typeof c.service !== 'string' || !SERVICE_RE.test(c.service)) throw new ConfigError('service must be a service name');
  const percent = c.percent ?? 0;
  if (typeof percent !== 'number' || !(percent >= 0 && percent <= 100)) throw new ConfigError('percent must be a number in 0..100');
  const s: CanaryRouterSettings = { service: c.service, buckets: Math.round(percent * 100), sticky: { by: 'request-id' }, salt: c.service };
  const header = match(c.header, 'header');
  if (header !== undefined) s.header = header;
  const cookie = match(c.cookie, 'cookie');
  if (cookie !== undefined) s.cookie = cookie;
  if (s.header === undefined && s.cookie === undefined && s.buckets === 0) throw new ConfigError('nothing routes to the canary: set header, cookie or a percent > 0');
  const sticky = c.stickyBy ?? 'request-id';
  if (sticky === 'request-id' || sticky === 'client-ip') s.sticky = { by: sticky };
  else if (typeof sticky === 'string' && sticky.startsWith('header:') && HEADER_RE.test(sticky.slice(7))) s.sticky = { by: 'header', name: sticky.slice(7) };
  else if (typeof sticky === 'string' && sticky.startsWith('cookie:') && COOKIE_RE.test(sticky.slice(7))) s.sticky = { by: 'cookie', name: sticky.slice(7) };
  else throw new ConfigError(`stickyBy must be "request-id", "client-ip", "header:<name>" or "cookie:<name>", got ${JSON.stringify(sticky)}`);
  if (c.salt !== undefined) {
    if (typeof c.salt !== 'string' || c.salt.length > 64) throw new ConfigError('salt must be a string of at most 64 characters');
    s.salt = c.salt;
  }
  if (c.markHeader !== undefined) {
    if (typeof c.markHeader !== 'string' || !HEADER_RE.test(c.markHeader)) throw new ConfigError('markHeader must be a lower-case header name');
    s.markHeader = c.markHeader;
  }
  return s;
}

/** Parsed once per config object; a bad config fails the chain entry on every request. */
const settings = configParser<CanaryRouterSettings>(parseConfig);

/** FNV-1a, 32 bit: stable across isolates, nodes and restarts (unlike Math.random). */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

function cookieValue(header: string | null, name: string): string | undefined {
  if (header === null) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq >= 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function matches(m: Match | undefined, value: string | null | undefined): boolean {
  return m !== undefined && value != null && (m.value === undefined || m.value === value);
}

function stickyKey(s: CanaryRouterSettings, req: PluginRequest, requestId: string): string {
  let v: string | null | undefined;
  if (s.sticky.by === 'client-ip') v = req.remoteAddress;
  else if (s.sticky.by === 'header') v = req.headers.get(s.sticky.name);
  else if (s.sticky.by === 'cookie') v = cookieValue(req.headers.get('cookie'), s.sticky.name);
  // Without the sticky value the split is still fair, just not sticky.
  return v == null || v === '' ? `rid:${requestId}` : `${s.sticky.by}:${v}`;
}

/** Whether this request goes to the canary, and why. */
export function decide(s: CanaryRouterSettings, req: PluginRequest, requestId: string): 'header' | 'cookie' | 'percent' | undefined {
  if (matches(s.header, s.header && req.headers.get(s.header.name))) return 'header';
  if (matches(s.cookie, s.cookie && cookieValue(req.headers.get('cookie'), s.cookie.name))) return 'cookie';
  if (s.buckets > 0 && fnv1a(`${s.salt}|${stickyKey(s, req, requestId)}`) % 10_000 < s.buckets) return 'percent';
  return undefined;
}

export default definePlugin<CanaryRouterConfig>({
  onRequest(req, ctx) {
    const s = settings(ctx.config);
    // The mark is the router's word only; a client must not be able to fake it.
    if (s.markHeader !== undefined) req.headers.delete(s.markHeader);
    const why = decide(s, req, ctx.requestId);
    if (why === undefined) return;
    ctx.route(s.service);
    if (s.markHeader !== undefined) req.headers.set(s.markHeader, why);
  },
});
