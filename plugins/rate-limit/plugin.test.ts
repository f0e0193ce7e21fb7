import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTestHost, type TestOutcome } from '@isomesh/sdk/testing';
import plugin, { parseConfig } from './src/index.ts';

const get = (out: TestOutcome, name: string) => (out.action === 'error' ? undefined : out.headers.find(([k]) => k === name)?.[1]);

test('per header key: the burst passes, the next request gets 429 with retry-after and x-ratelimit-*', async () => {
  let now = 1_000_000;
  const host = createTestHost(plugin, { config: { limit: 3, windowMs: 3000, key: 'header:x-api-key' }, now: () => now });
  for (let i = 0; i < 3; i++) assert.equal((await host.onRequest({ headers: { 'x-api-key': 'a' } })).action, 'continue');
  const limited = await host.onRequest({ headers: { 'x-api-key': 'a' } });
  assert.equal(limited.action === 'respond' && limited.status, 429);
  assert.equal(get(limited, 'retry-after'), '1');
  assert.equal(get(limited, 'x-ratelimit-limit'), '3');
  assert.equal(get(limited, 'x-ratelimit-remaining'), '0');
  assert.equal(get(limited, 'x-ratelimit-reset'), '1');
  // Another key has its own bucket; time refills the first one.
  assert.equal((await host.onRequest({ headers: { 'x-api-key': 'b' } })).action, 'continue');
  now += 1000;
  assert.equal((await host.onRequest({ headers: { 'x-api-key': 'a' } })).action, 'continue');
});

test('allowed requests get x-ratelimit-* on their response (matched by request id)', async () => {
  const host = createTestHost(plugin, { config: { limit: 10, windowMs: 10_000, key: 'fixed' }, now: () => 5000 });
  await host.onRequest({ requestId: 'r1' });
  await host.onRequest({ requestId: 'r2' });
  const res = await host.onResponse({ requestId: 'r2', status: 200 });
  assert.equal(get(res, 'x-ratelimit-limit'), '10');
  assert.equal(get(res, 'x-ratelimit-remaining'), '8');
  assert.equal(get(res, 'x-ratelimit-reset'), '2');
  const unknown = await host.onResponse({ requestId: 'never-seen' });
  assert.equal(get(unknown, 'x-ratelimit-limit'), undefined);
});

test('client IP keys: remote address by default, right-most X-Forwarded-For only when trusted', async () => {
  const cfg = { limit: 1, windowMs: 60_000, responseHeaders: false };
  const host = createTestHost(plugin, { config: cfg, now: () => 0 });
  assert.equal((await host.onRequest({ remoteAddress: '10.0.0.1', headers: { 'x-forwarded-for': '1.1.1.1' } })).action, 'continue');
  // Spoofing X-Forwarded-For does not get a fresh bucket when it is not trusted.
  assert.equal((await host.onRequest({ remoteAddress: '10.0.0.1', headers: { 'x-forwarded-for': '2.2.2.2' } })).action, 'respond');
  const trusted = createTestHost(plugin, { config: { ...cfg, trustForwardedFor: true }, now: () => 0 });
  assert.equal((await trusted.onRequest({ remoteAddress: '10.0.0.1', headers: { 'x-forwarded-for': '9.9.9.9, 1.1.1.1' } })).action, 'continue');
  assert.equal((await trusted.onRequest({ remoteAddress: '10.0.0.1', headers: { 'x-forwarded-for': '1.1.1.1' } })).action, 'respond');
  assert.equal((await trusted.onRequest({ remoteAddress: '10.0.0.1', headers: { 'x-forwarded-for': '3.3.3.3' } })).action, 'continue');
});

test('a missing key header falls back, denies or allows as configured; huge keys are hashed', async () => {
  const deny = createTestHost(plugin, { config: { limit: 1, windowMs: 1000, key: 'header:x-user', missingKey: 'deny' } });
  const out = await deny.onRequest();
  assert.equal(out.action === 'respond' && out.status, 400);
  const allow = createTestHost(plugin, { config: { limit: 1, windowMs: 1000, key: 'header:x-user', missingKey: 'allow' }, now: () => 0 });
  for (let i = 0; i < 3; i++) assert.equal((await allow.onRequest()).action, 'continue');
  const big = createTestHost(plugin, { config: { limit: 1, windowMs: 1000, key: 'header:x-user' }, now: () => 0 });
  assert.equal((await big.onRequest({ headers: { 'x-user': 'u'.repeat(5000) } })).action, 'continue');
  assert.equal((await big.onRequest({ headers: { 'x-user': 'u'.repeat(5000) } })).action, 'respond');
});

test('config is validated with clear errors', () => {
  assert.throws(() => parseConfig({ windowMs: 1000 }), /limit must be an integer >= 1/);
  assert.throws(() => parseConfig({ limit: 1, windowMs: 0 }), /windowMs must be/);
  assert.throws(() => parseConfig({ limit: 1, windowMs: 10, key: 'cookie:x' }), /key must be "client-ip", "fixed" or "header:/);
  assert.throws(() => parseConfig({ limit: 1, windowMs: 10, burst: 3 }), /unknown field "burst"/);
  assert.deepEqual(parseConfig({ limit: 2, windowMs: 10, key: 'header:x-k' }).key, { by: 'header', header: 'x-k' });
});

test('a broken config fails every call with the same clear error', async () => {
  const host = createTestHost(plugin, { config: { limit: -1, windowMs: 1000 } as never });
  const a = await host.onRequest();
  const b = await host.onRequest();
  assert.deepEqual(a, b);
  assert.match(a.action === 'error' ? a.message : '', /rate-limit config: limit must be an integer >= 1/);
});
