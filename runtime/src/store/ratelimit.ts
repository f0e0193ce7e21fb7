// Validation of self-service rate limits (PUT /v1/tenants/{t}/ratelimits/{name}). The store checks
// what needs the database (a "route" descriptor's value names an existing route).

import { isIP } from 'node:net';
import { OBJECT_NAME_RE } from './model.ts';
import type { RateLimit, RateLimitDescriptor, RateLimitKey, RateLimitUnit } from './model.ts';
import { HTTP_TOKEN_RE, fail, intField, isObject, rejectUnknown, stringField, tokenField } from './fields.ts';
import { checkName } from './validate.ts';

export const RATELIMIT_LIMITS = Object.freeze({
  descriptors: 8,
  valueChars: 1024,
  headerNameChars: 256,
  requestsPerUnit: { min: 1, max: 1_000_000_000 },
});

export const RATELIMIT_UNITS: readonly RateLimitUnit[] = ['second', 'minute', 'hour', 'day'];
export const RATELIMIT_PLAIN_KEYS = ['remote_address', 'path', 'method', 'route'] as const;
/** The descriptor key grammar, as a JSON-schema pattern. */
export const RATELIMIT_KEY_PATTERN = `^(${RATELIMIT_PLAIN_KEYS.join('|')}|header:${HTTP_TOKEN_RE.source.slice(1, -1)})$`;

const CODE = 'ISOMESH_ERR_RATELIMIT_INVALID';

function validateKey(field: string, v: unknown): RateLimitKey {
  const key = stringField(CODE, field, v, RATELIMIT_LIMITS.headerNameChars + 7);
  if ((RATELIMIT_PLAIN_KEYS as readonly string[]).includes(key)) return key as RateLimitKey;
  if (key.startsWith('header:')) {
    // Header names are case-insensitive: stored lower case so "header:X-User" and "header:x-user" are one key.
    return `header:${tokenField(CODE, `${field} header name`, key.slice(7), 'a header name', RATELIMIT_LIMITS.headerNameChars).toLowerCase()}`;
  }
  fail(CODE, `${field} must be one of ${RATELIMIT_PLAIN_KEYS.join(', ')} or header:<name>, got ${JSON.stringify(key)}`);
}

/** A value that could never equal what the data plane reads for the key would silently never match. */
function validateValue(field: string, key: RateLimitKey, v: unknown): string {
  const value = stringField(CODE, field, v, RATELIMIT_LIMITS.valueChars);
  switch (key) {
    case 'remote_address':
      if (isIP(value) === 0) fail(CODE, `${field} must be an IP address for key remote_address, got ${JSON.stringify(value)}`);
      // Compared as a string with the peer's address: IPv6 in canonical form ("0:0::1" is "::1").
      if (isIP(value) === 6) return canonicalIpv6(value);
      break;
    case 'path':
      if (!value.startsWith('/')) fail(CODE, `${field} must start with "/" for key path`);
      break;
    case 'method':
      if (!/^[A-Z]+$/.test(value)) fail(CODE, `${field} must be an upper-case HTTP method for key method, got ${JSON.stringify(value)}`);
      break;
    case 'route':
      if (!OBJECT_NAME_RE.test(value)) fail(CODE, `${field} must be a route name for key route, got ${JSON.stringify(value)}`);
      break;
    default:
      // RFC 9110 field values: visible characters, space and tab.
      if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) fail(CODE, `${field} must not contain control characters (no header value can)`);
  }
  return value;
}

function canonicalIpv6(ip: string): string {
  // Node shows IPv4-mapped peers as "::ffff:127.0.0.1"; URL would rewrite that to "::ffff:7f00:1".
  if (ip.includes('.')) return ip.toLowerCase();
  try {
    return new URL(`http://[${ip}]/`).hostname.slice(1, -1);
  } catch {
    return ip.toLowerCase(); // e.g. a zone id ("fe80::1%eth0"), which URL does not take
  }
}

function validateDescriptor(v: unknown, i: number): RateLimitDescriptor {
  const f = `descriptors[${i}]`;
  if (!isObject(v)) fail(CODE, `${f} must be an object`);
  rejectUnknown(CODE, f, v, ['key', 'value']);
  const key = validateKey(`${f}.key`, v.key);
  const d: RateLimitDescriptor = { key };
  if (v.value !== undefined) d.value = validateValue(`${f}.value`, key, v.value);
  return d;
}

/** Validates and normalises a rate limit; the store checks that "route" values name existing routes. */
export function validateRateLimit(name: string, body: unknown): RateLimit {
  checkName('ratelimit', name);
  if (!isObject(body)) fail(CODE, 'rate limit body must be an object');
  rejectUnknown(CODE, '', body, ['descriptors', 'limit', 'shadow']);
  const list = body.descriptors;
  if (!Array.isArray(list) || list.length === 0) fail(CODE, 'descriptors must be a non-empty array');
  if (list.length > RATELIMIT_LIMITS.descriptors) fail(CODE, `descriptors must have at most ${RATELIMIT_LIMITS.descriptors} entries`);
  const descriptors = list.map(validateDescriptor);
  for (const [i, d] of descriptors.entries()) {
    const first = descriptors.findIndex((o) => o.key === d.key);
    if (first !== i) fail(CODE, `descriptors[${i}].key "${d.key}" repeats descriptors[${first}].key`);
  }
  const limit = body.limit;
  if (!isObject(limit)) fail(CODE, 'limit must be an object {"requestsPerUnit": n, "unit": "second"|"minute"|"hour"|"day"}');
  rejectUnknown(CODE, 'limit', limit, ['requestsPerUnit', 'unit']);
  const { min, max } = RATELIMIT_LIMITS.requestsPerUnit;
  const requestsPerUnit = intField(CODE, 'limit.requestsPerUnit', limit.requestsPerUnit, min, max);
  if (!RATELIMIT_UNITS.includes(limit.unit as never)) fail(CODE, `limit.unit must be one of ${RATELIMIT_UNITS.join(', ')}, got ${JSON.stringify(limit.unit)}`);
  if (body.shadow !== undefined && typeof body.shadow !== 'boolean') fail(CODE, `shadow must be a boolean, got ${JSON.stringify(body.shadow)}`);
  return { name, descriptors, limit: { requestsPerUnit, unit: limit.unit as RateLimitUnit }, shadow: body.shadow === true };
}

/** Route names a rate limit's descriptors refer to. */
export function rateLimitRoutes(rl: RateLimit): string[] {
  return rl.descriptors.filter((d) => d.key === 'route' && d.value !== undefined).map((d) => d.value!);
}
