import { test } from 'node:test';
import assert from 'node:assert/strict';
import { definePlugin, isDefinedPlugin } from './index.ts';
import { GuestHeaders } from './guest/headers.ts';
import { TokenBuckets } from './guest/rate-limit.ts';

test('definePlugin returns the same object, marked; rejects shapes that are not plugins', () => {
  const p = { onRequest() {} };
  assert.equal(definePlugin(p), p);
  assert.equal(isDefinedPlugin(p), true);
  assert.equal(isDefinedPlugin({ onRequest() {} }), false);
  assert.deepEqual(Object.keys(p), ['onRequest']); // the mark is not enumerable
  assert.throws(() => definePlugin({} as never), /at least one/);
  assert.throws(() => definePlugin({ onRequest: 'x' } as never), /onRequest must be a function/);
  assert.throws(() => definePlugin(null as never), TypeError);
});

test('GuestHeaders follows the Fetch Headers shape', () => {
  const h = new GuestHeaders([['accept', 'a'], ['x-multi', '1']]);
  assert.equal(h.get('Accept'), 'a');
  assert.equal(h.get('missing'), null);
  h.append('X-Multi', '2');
  assert.equal(h.get('x-multi'), '1, 2');
  h.set('x-multi', '3');
  assert.deepEqual([...h], [['accept', 'a'], ['x-multi', '3']]);
  assert.equal(h.has('X-MULTI'), true);
  h.delete('accept');
  assert.deepEqual([...h.keys()], ['x-multi']);
  assert.deepEqual([...h.values()], ['3']);
  h.append('set-cookie', 'a=1');
  h.append('set-cookie', 'b=2');
  assert.deepEqual(h.getSetCookie(), ['a=1', 'b=2']);
  const seen: string[] = [];
  h.forEach((v, k) => seen.push(`${k}=${v}`));
  assert.deepEqual(seen, ['x-multi=3', 'set-cookie=a=1', 'set-cookie=b=2']);
  assert.equal(h.dirty, true);
  assert.throws(() => h.set('bad name', 'x'), TypeError);
  assert.throws(() => h.set('x-inject', 'a\r\nb: c'), TypeError);
  assert.equal(new GuestHeaders([['a', 'b']]).dirty, false);
});

test('TokenBuckets: limit per window, refill over time, retryAfterMs', () => {
  const b = new TokenBuckets();
  const opts = { limit: 2, windowMs: 1000 };
  assert.deepEqual(b.take('k', opts, 0), { allowed: true, remaining: 1, retryAfterMs: 0 });
  assert.equal(b.take('k', opts, 0).allowed, true);
  const denied = b.take('k', opts, 0);
  assert.deepEqual(denied, { allowed: false, remaining: 0, retryAfterMs: 500 });
  assert.equal(b.take('other', opts, 0).allowed, true);
  assert.equal(b.take('k', opts, 500).allowed, true);
  assert.throws(() => b.take('', opts, 0), TypeError);
  assert.throws(() => b.take('k', { limit: 0, windowMs: 1000 }, 0), TypeError);
});
