import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { RateLimit } from '../store/model.ts';
import { applyRateLimits, descriptorValues, limitKey, MAX_KEYS_PER_LIMIT, RateLimitCounters, type RequestFacts } from './ratelimit.ts';

function facts(extra: Partial<RequestFacts> & { headers?: Record<string, string> } = {}): RequestFacts {
  const headers = extra.headers ?? {};
  return { remoteAddress: '127.0.0.1', path: '/a', method: 'GET', route: 'r', header: (n) => headers[n], ...extra };
}

const perUser: RateLimit = { name: 'per-user', descriptors: [{ key: 'header:x-user' }], limit: { requestsPerUnit: 2, unit: 'second' }, shadow: false };

test('fixed window per distinct value; the window resets at the unit boundary', () => {
  const c = new RateLimitCounters();
  const t0 = 1_000_000; // a second boundary
  const hit = (user: string, at: number) => applyRateLimits('t', [perUser], facts({ headers: { 'x-user': user } }), c, at);
  assert.equal(hit('a', t0).over, undefined);
  assert.equal(hit('a', t0 + 10).over, undefined);
  const third = hit('a', t0 + 20);
  assert.equal(third.over?.rateLimit.name, 'per-user');
  assert.equal(third.over?.verdict.resetSec, 1);
  assert.equal(hit('b', t0 + 30).over, undefined, 'another value has its own counter');
  assert.equal(hit('a', t0 + 1000).over, undefined, 'next window');
});

test('missing header or a different fixed value: the limit does not apply', () => {
  assert.equal(descriptorValues(perUser, facts()), undefined);
  const onlyPost: RateLimit = { ...perUser, descriptors: [{ key: 'method', value: 'POST' }] };
  assert.equal(descriptorValues(onlyPost, facts()), undefined);
  assert.equal(descriptorValues(onlyPost, facts({ method: 'POST' })), 'POST\u0000');
});

test('shadow limits count but never enforce', () => {
  const c = new RateLimitCounters();
  const shadow: RateLimit = { ...perUser, name: 's', shadow: true, limit: { requestsPerUnit: 1, unit: 'minute' } };
  const f = facts({ headers: { 'x-user': 'a' } });
  applyRateLimits('t', [shadow], f, c, 0);
  const d = applyRateLimits('t', [shadow], f, c, 1);
  assert.equal(d.over, undefined);
  assert.deepEqual(d.results.map((r) => r.result), ['shadow_over']);
});

test('distinct values per window are bounded: extra values share one overflow counter', () => {
  const c = new RateLimitCounters();
  const key = limitKey('t', 'p');
  for (let i = 0; i < MAX_KEYS_PER_LIMIT; i++) c.hit(key, `v${i}`, 1, 'hour', 1, 0);
  assert.equal(c.hit(key, 'fresh-1', 1, 'hour', 1, 0).over, false);
  assert.equal(c.hit(key, 'fresh-2', 1, 'hour', 1, 0).over, true, 'a new value lands in the shared overflow counter');
  c.forget('t');
  assert.equal(c.size, 0);
});
