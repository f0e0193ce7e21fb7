// rate-limit: a token bucket per key (a header's value, the client IP, or one fixed key) kept in the
// tenant's isolate through ctx.rateLimit. Over the limit: 429 with retry-after and x-ratelimit-*;
// under it, the same x-ratelimit-* headers go on the upstream's response (ctx.responseHeaders: the
// host sets them when the response arrives, so the plugin has no onResponse hook).

import { configParser, definePlugin, type RateLimitResult } from '@isomesh/sdk';

export interface RateLimitConfig {
  /** Requests allowed per window (the bucket size; it refills evenly over the window). */
  limit: number;
  windowMs: number;
  /** "client-ip" (default), "fixed", or "header:<name>". */
  key?: string;
  /** With key "header:…": what to do when the header is absent. Default "client-ip". */
  missingKey?: 'client-ip' | 'deny' | 'allow';
  /** Take the client IP from the right-most X-Forwarded-For entry (only behind a trusted proxy). */
  trustForwardedFor?: boolean;
  /** Add x-ratelimit-* to allowed responses too. Default true. */
  responseHeaders?: boolean;
  /** Distinguishes buckets of several rate-limit entries in one chain. Default "rl". */
  name?: string;
}

type KeySource = { by: 'client-ip' } | { by: 'fixed' } | { by: 'header'; header: string };

export interface RateLimitSettings {
  limit: number;
  windowMs: number;
  key: KeySource;
  missingKey: 'client-ip' | 'deny' | 'allow';
  trustForwardedFor: boolean;
  responseHeaders: boolean;
  name: string;
}

const KEYS = new Set(['limit', 'windowMs', 'key', 'missingKey', 'trustForwardedFor', 'responseHeaders', 'name']);
const HEADER_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
/** Bucket keys longer than this are hashed (ctx.rateLimit takes keys up to 512 characters). */
const MAX_KEY = 200;

class ConfigError extends Error {
  constructor(message: string) {
    super(`rate-limit config: ${message}`);
    this.name = 'ConfigError';
  }
}

export function parseConfig(raw: unknown): RateLimitSettings {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('config must be an object');
  const c = raw as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!KEYS.has(k)) throw new ConfigError(`unknown field "${k}"`);
  if (typeof c.limit !== 'number' || !Number.isInteger(c.limit) || c.limit < 1 || c.limit > 1e9) throw new ConfigError('limit must be an integer >= 1');
  if (typeof c.windowMs !== 'number' || !Number.isInteger(c.windowMs) || c.windowMs < 1 || c.windowMs > 86_400_000) {
    throw new ConfigError('windowMs must be an integer in 1..86400000');
  }
  const keyText = c.key ?? 'client-ip';
  let key: KeySource;
  if (keyText === 'client-ip') key = { by: 'client-ip' };
  else if (keyText === 'fixed') key = { by: 'fixed' };
  else if (typeof keyText === 'string' && keyText.startsWith('header:') && HEADER_RE.test(keyText.slice(7))) key = { by: 'header', header: keyText.slice(7) };
  else throw new ConfigError(`key must be "client-ip", "fixed" or "header:<lower-case name>", got ${JSON.stringify(keyText)}`);
  const missingKey = c.missingKey ?? 'client-ip';
  if (missingKey !== 'client-ip' && missingKey !== 'deny' && missingKey !== 'allow') throw new ConfigError('missingKey must be "client-ip", "deny" or "allow"');
  for (const f of ['trustForwardedFor', 'responseHeaders'] as const) {
    if (c[f] !== undefined && typeof c[f] !== 'boolean') throw new ConfigError(`${f} must be a boolean`);
  }
  const name = c.name ?? 'rl';
  if (typeof name !== 'string' || !/^[a-z0-9-]{1,32}$/.test(name)) throw new ConfigError('name must be 1..32 of [a-z0-9-]');
  return {
    limit: c.limit,
    windowMs: c.windowMs,
    key,
    missingKey,
    trustForwardedFor: c.trustForwardedFor === true,
    responseHeaders: c.responseHeaders !== false,
    name,
  };
}

/** Parsed once per config object; a bad config fails the chain entry on every request. */
const settings = configParser<RateLimitSettings>(parseConfig);

function fnv1a(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h.toString(16).padStart(8, '0');
}

function clientIp(remoteAddress: string, xff: string | null, trust: boolean): string {
  if (trust && xff !== null) {
    const last = xff.split(',').map((s) => s.trim()).filter((s) => s.length > 0).pop();
    if (last !== undefined && last.length <= 64) return last;
  }
  return remoteAddress;
}

export function rateLimitHeaders(s: RateLimitSettings, r: RateLimitResult): Record<string, string> {
  // Seconds until the bucket is full again (allowed) or a token is back (limited).
  const resetMs = r.allowed ? ((s.limit - r.remaining) * s.windowMs) / s.limit : r.retryAfterMs;
  return {
    'x-ratelimit-limit': String(s.limit),
    'x-ratelimit-remaining': String(r.remaining),
    'x-ratelimit-reset': String(Math.ceil(resetMs / 1000)),
  };
}

export default definePlugin<RateLimitConfig>({
  onRequest(req, ctx) {
    const s = settings(ctx.config);
    let value: string;
    if (s.key.by === 'fixed') value = 'fixed';
    else if (s.key.by === 'header' && req.headers.has(s.key.header)) value = `h:${req.headers.get(s.key.header)}`;
    else if (s.key.by === 'header' && s.missingKey === 'allow') return;
    else if (s.key.by === 'header' && s.missingKey === 'deny') {
      return ctx.respond(400, { headers: { 'content-type': 'text/plain' }, body: `missing ${s.key.header} header\n` });
    } else value = `ip:${clientIp(req.remoteAddress, req.headers.get('x-forwarded-for'), s.trustForwardedFor)}`;
    const key = `${s.name}:${value.length > MAX_KEY ? `#${fnv1a(value)}:${value.length}` : value}`;
    const r = ctx.rateLimit(key, { limit: s.limit, windowMs: s.windowMs });
    const headers = rateLimitHeaders(s, r);
    if (!r.allowed) {
      headers['retry-after'] = String(Math.max(1, Math.ceil(r.retryAfterMs / 1000)));
      headers['content-type'] = 'text/plain';
      return ctx.respond(429, { headers, body: 'rate limit exceeded\n' });
    }
    // Set by the host on the upstream's response when it arrives (no onResponse call).
    if (s.responseHeaders) for (const [k, v] of Object.entries(headers)) ctx.responseHeaders.set(k, v);
  },
});
