// Host capabilities through the real daemon: the fault-injection plugin (plugins/fault-injection)
// delays requests with ctx.sleep — a host timer, no CPU held. In cordon mode (the default) the
// delayed requests must not hold up the tenant's other requests, and the chain entries after the
// delay (run in the same pass in the cordon) see its edits.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { ROOT, startDaemon, type TestDaemon } from '../support/daemon.ts';
import { echoed, request, startEcho, type EchoUpstream, type SimpleResponse } from '../support/http.ts';

const MODE = process.env.ISOMESH_HOST_MODE === 'inline' ? 'inline' : 'cordon';
const DELAY_MS = 300;
let d: TestDaemon;
let echo: EchoUpstream;
let port: number;

const AFTER = `
import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  onRequest(req) { req.headers.set('x-after-delay', req.headers.get('x-fault-delay-ms') ?? 'none'); },
});`;

async function publish(plugin: string, source: string): Promise<void> {
  const r = await d.api('POST', `/v1/tenants/faulty/plugins/${plugin}/versions`, { source, language: 'typescript' });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal((await d.api('PUT', `/v1/tenants/faulty/plugins/${plugin}/active`, { version: r.body.version })).status, 200);
}

before(async () => {
  echo = await startEcho();
  d = await startDaemon();
  const t = await d.api('PUT', '/v1/tenants/faulty', {});
  assert.equal(t.status, 201, JSON.stringify(t.body));
  port = t.body.listenerPort;
  assert.equal((await d.api('PUT', '/v1/tenants/faulty/services/echo', { endpoints: [{ address: '127.0.0.1', port: echo.port }] })).status, 201);
  assert.equal((await d.api('PUT', '/v1/tenants/faulty/routes/all', { match: { pathPrefix: '/' }, to: { service: 'echo' } })).status, 201);
  await publish('fault', fs.readFileSync(path.join(ROOT, 'plugins/fault-injection/src/index.ts'), 'utf8'));
  await publish('after', AFTER);
  const chain = [
    { plugin: 'fault', config: { delay: { percent: 100, ms: DELAY_MS }, onlyWithHeader: 'x-fault-test' }, failurePolicy: 'closed' },
    { plugin: 'after', failurePolicy: 'closed' },
  ];
  assert.equal((await d.api('PUT', '/v1/tenants/faulty/chain', chain)).status, 200);
  for (let i = 0; i < 100; i++) {
    const res = await request(port, '/ready');
    if (res.status === 200 && echoed(res).headers['x-after-delay'] === 'none') return;
    await sleep(20);
  }
  throw new Error('chain did not become active');
});

after(async () => {
  await d?.stop();
  await echo?.close();
});

test(`fault-injection delay works through the daemon (${MODE} mode) without holding up the tenant's other requests`, async () => {
  const status = await d.api('GET', '/v1/tenants/faulty/status');
  assert.equal(status.body.usage.placement.mode, MODE);
  const order: string[] = [];
  const timed = async (kind: 'delayed' | 'fast', i: number): Promise<{ res: SimpleResponse; ms: number }> => {
    const t0 = performance.now();
    const res = await request(port, `/${kind}/${i}`, { headers: kind === 'delayed' ? { 'x-fault-test': '1' } : {}, timeoutMs: 10_000 });
    order.push(kind);
    return { res, ms: performance.now() - t0 };
  };
  const t0 = performance.now();
  // Delayed requests first: if the tenant were held during each sleep they would run one by one
  // (6 × 300 ms) and the fast ones would wait behind them.
  const delayed = Array.from({ length: 6 }, (_, i) => timed('delayed', i));
  await sleep(20);
  const fast = Array.from({ length: 6 }, (_, i) => timed('fast', i));
  const [slowOut, fastOut] = [await Promise.all(delayed), await Promise.all(fast)];
  const elapsed = performance.now() - t0;

  for (const { res, ms } of slowOut) {
    assert.equal(res.status, 200, res.body);
    const seen = echoed(res).headers;
    assert.equal(seen['x-fault-delay-ms'], String(DELAY_MS));
    assert.equal(seen['x-after-delay'], String(DELAY_MS), 'the next chain entry saw the delayed entry\'s edit');
    assert.ok(ms >= DELAY_MS - 20, `delayed request took only ${ms.toFixed(0)} ms`);
  }
  for (const { res } of fastOut) {
    assert.equal(res.status, 200, res.body);
    assert.equal(echoed(res).headers['x-fault-delay-ms'], undefined);
    assert.equal(echoed(res).headers['x-after-delay'], 'none');
  }
  assert.deepEqual(order.slice(0, 6), Array(6).fill('fast'), `completion order ${order.join(',')}`);
  // The six sleeps overlapped (one after another would take at least 1800 ms).
  assert.ok(elapsed < 1500, `12 requests took ${elapsed.toFixed(0)} ms`);

  const plugins = (await d.api('GET', '/v1/tenants/faulty/status')).body.plugins as Array<{ name: string; active: { health: string; failures: number; invocations: number } }>;
  const fault = plugins.find((p) => p.name === 'fault')?.active;
  assert.equal(fault?.health, 'ok');
  assert.equal(fault?.failures, 0);
  assert.ok((fault?.invocations ?? 0) >= 12);
});
