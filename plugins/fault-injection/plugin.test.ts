import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTestHost, type TestOutcome } from '@isomesh/sdk/testing';
import plugin, { bucket, MAX_DELAY_MS, parseConfig } from './src/index.ts';

const get = (out: TestOutcome, name: string) => (out.action === 'error' ? undefined : out.headers.find(([k]) => k === name)?.[1]);

test('abort: about the configured share answers the status; the same request id always gets the same fault', async () => {
  const host = createTestHost(plugin, { config: { abort: { percent: 30, status: 503, body: 'injected' } } });
  let aborted = 0;
  const first = new Map<string, string>();
  for (let i = 0; i < 1000; i++) {
    const out = await host.onRequest({ requestId: `req-${i}` });
    first.set(`req-${i}`, out.action);
    if (out.action === 'respond') {
      aborted++;
      assert.equal(out.status, 503);
      assert.equal(out.body, 'injected');
      assert.equal(get(out, 'x-fault-injected'), 'abort');
    }
  }
  assert.ok(aborted > 250 && aborted < 350, `aborted ${aborted}`);
  for (let i = 0; i < 100; i++) assert.equal((await host.onRequest({ requestId: `req-${i}` })).action, first.get(`req-${i}`));
});

test('delay: the selected requests wait on a host timer (ctx.sleep), the others do not', async () => {
  const host = createTestHost(plugin, { config: { delay: { percent: 50, ms: 60 } } });
  const delayedId = Array.from({ length: 100 }, (_, i) => `d-${i}`).find((id) => bucket(id, 'delay') < 5000) as string;
  const freeId = Array.from({ length: 100 }, (_, i) => `d-${i}`).find((id) => bucket(id, 'delay') >= 5000) as string;
  let t0 = performance.now();
  const delayed = await host.onRequest({ requestId: delayedId });
  assert.ok(performance.now() - t0 >= 55, 'delayed request waited');
  assert.equal(get(delayed, 'x-fault-delay-ms'), '60');
  t0 = performance.now();
  const free = await host.onRequest({ requestId: freeId });
  assert.ok(performance.now() - t0 < 50, 'other request did not wait');
  assert.equal(get(free, 'x-fault-delay-ms'), undefined);
});

test('onlyWithHeader limits faults to requests that ask for them', async () => {
  const host = createTestHost(plugin, { config: { abort: { percent: 100, status: 500 }, onlyWithHeader: 'x-fault-test' } });
  assert.equal((await host.onRequest()).action, 'continue');
  const out = await host.onRequest({ headers: { 'x-fault-test': '1' } });
  assert.equal(out.action === 'respond' && out.status, 500);
});

test('config is validated with clear errors; delays are bounded below the host capability budget', () => {
  assert.throws(() => parseConfig({}), /set delay and\/or abort/);
  assert.throws(() => parseConfig({ delay: { percent: 10, ms: MAX_DELAY_MS + 1 } }), /delay\.ms must be an integer in 1\.\.4500/);
  assert.throws(() => parseConfig({ abort: { percent: 10, status: 99 } }), /abort\.status must be an integer in 200\.\.599/);
  assert.throws(() => parseConfig({ abort: { percent: 200, status: 500 } }), /abort\.percent must be a number in 0\.\.100/);
  assert.throws(() => parseConfig({ abort: { percent: 1, status: 500, code: 1 } }), /abort: unknown field "code"/);
  assert.deepEqual(parseConfig({ delay: { percent: 12.34, ms: 5 } }), { delay: { buckets: 1234, ms: 5 } });
});
