import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DEFAULT_QUOTA } from '../store/model.ts';
import { TenantQuota } from './quota.ts';
import { newHost, oneRequest, tenantConfig } from './fixtures.ts';

const { host, registry } = newHost();
test.after(() => host.close());
const NOOP = 'export default { onRequest() {} }';

test('requestsPerSecond: a burst beyond the bucket is refused with 429 and retry-after; others unaffected', async () => {
  host.configure(await tenantConfig(host, 'rps', [{ name: 'p', source: NOOP }], { quota: { requestsPerSecond: 5 } }));
  host.configure(await tenantConfig(host, 'free', [{ name: 'p', source: NOOP }]));
  const results = [];
  for (let i = 0; i < 8; i++) {
    const a = host.begin('rps', `r${i}`);
    results.push(a);
    if (a.ok) host.end(a.run);
  }
  assert.equal(results.filter((a) => a.ok).length, 5);
  const refused = results.find((a) => !a.ok);
  assert.ok(refused !== undefined && !refused.ok);
  assert.equal(refused.status, 429);
  assert.equal(refused.code, 'ISOMESH_ERR_QUOTA_RPS');
  assert.equal(refused.retryAfterSec, 1);
  for (let i = 0; i < 20; i++) await oneRequest(host, 'free');
  assert.equal(host.status('rps').usage.rejections.rps, 3);
  assert.match(await registry.metrics(), /isomesh_quota_rejections_total\{tenant="rps",reason="rps"\} 3/);
});

test('maxConcurrentRequests: the request over the cap is refused until one ends', async () => {
  host.configure(await tenantConfig(host, 'conc', [{ name: 'p', source: NOOP }], { quota: { maxConcurrentRequests: 2 } }));
  const a = host.begin('conc', 'a');
  const b = host.begin('conc', 'b');
  const c = host.begin('conc', 'c');
  assert.ok(a.ok && b.ok);
  assert.ok(!c.ok);
  assert.equal(c.status, 429);
  assert.equal(c.code, 'ISOMESH_ERR_QUOTA_CONCURRENCY');
  assert.equal(host.status('conc').usage.inFlight, 2);
  host.end(a.run);
  const d = host.begin('conc', 'd');
  assert.ok(d.ok);
  host.end(b.run);
  host.end(d.run);
  assert.equal(host.status('conc').usage.rejections.concurrency, 1);
});

test('cpuMsPerSecond: measured plugin CPU over the window sheds requests with 429', async () => {
  const burn = `export default { onRequest() { const end = Date.now() + 15; while (Date.now() < end) {} } };`;
  host.configure(await tenantConfig(host, 'cpu', [{ name: 'p', source: burn }], { quota: { cpuMsPerSecond: 40, cpuMsPerRequest: 100 } }));
  let refused;
  for (let i = 0; i < 10 && refused === undefined; i++) {
    const a = host.begin('cpu', `r${i}`);
    if (!a.ok) refused = a;
    else {
      await host.onRequest(a.run, { method: 'GET', path: '/', query: '', host: 'h', headers: [], remoteAddress: '127.0.0.1' });
      host.end(a.run);
    }
  }
  assert.ok(refused !== undefined, 'never refused');
  assert.equal(refused.code, 'ISOMESH_ERR_QUOTA_CPU');
  assert.equal(refused.retryAfterSec, 1);
  assert.ok(host.status('cpu').usage.cpuMsPerSecond >= 40);
});

test('TenantQuota refills the rps bucket with time and forgets CPU older than a second', () => {
  let now = 1_000_000;
  const q = new TenantQuota({ ...DEFAULT_QUOTA, requestsPerSecond: 2, cpuMsPerSecond: 10 }, () => now);
  assert.ok(q.admit().ok && q.admit().ok);
  assert.equal(q.admit().ok, false);
  now += 500; // one token back
  assert.equal(q.admit().ok, true);
  assert.equal(q.admit().ok, false);
  q.addCpu(12e6);
  now += 600;
  const cpu = q.admit();
  assert.ok(!cpu.ok && cpu.reason === 'cpu');
  now += 1000;
  assert.equal(q.cpuMsLastSecond(), 0);
  assert.equal(q.admit().ok, true);
});

test('an unknown tenant is not admitted', () => {
  const a = host.begin('nobody', 'x');
  assert.ok(!a.ok);
  assert.equal(a.status, 503);
});
