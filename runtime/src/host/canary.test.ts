// Canary: per-version metrics, and a rollback that takes effect for new requests at once while
// requests already in flight finish on the version they started with (mode from ISOMESH_HOST_MODE).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hashRequestId } from './chain.ts';
import { newHost, request, tenantConfig } from './fixtures.ts';

const { host, registry } = newHost();
test.after(() => host.close());

// v2 is slow (in flight long enough to roll back under it) and tags its version on both hooks.
const version = (n: number, burnMs: number) => `export default {
  onRequest(req) { const end = Date.now() + ${burnMs}; while (Date.now() < end) {} req.headers.set('x-version', '${n}'); },
  onResponse(res) { res.headers.set('x-version', '${n}'); },
};`;

const idsOn = (canary: boolean, n: number, prefix: string) => {
  const ids: string[] = [];
  for (let i = 0; ids.length < n && i < 10_000; i++) if ((hashRequestId(`${prefix}${i}`) % 100 < 30) === canary) ids.push(`${prefix}${i}`);
  return ids;
};
const tag = (headers: Array<[string, string]>) => headers.find(([k]) => k === 'x-version')?.[1];

test('per-version invocation metrics; rollback within 100 ms; in-flight requests finish on their version', async () => {
  const v1 = { name: 'p', source: version(1, 0), version: 1 };
  host.configure(await tenantConfig(host, 'shop', [{ ...v1, canary: { source: version(2, 40), version: 2, percent: 30 } }], { quota: { cpuMsPerRequest: 500, cpuMsPerSecond: 0 } }));
  // Warm both versions so the metrics count only what follows.
  const canaryIds = idsOn(true, 6, 'c');
  const stableIds = idsOn(false, 10, 's');
  for (const id of [...canaryIds, ...stableIds]) {
    const a = host.begin('shop', id);
    assert.ok(a.ok);
    const out = await host.onRequest(a.run, request());
    assert.equal(out.action === 'continue' && tag(out.headers), canaryIds.includes(id) ? '2' : '1');
    host.end(a.run);
  }
  const metrics = await registry.metrics();
  assert.match(metrics, /isomesh_plugin_invocations_total\{tenant="shop",plugin="p",version="2",outcome="ok"\} 6\n/);
  assert.match(metrics, /isomesh_plugin_invocations_total\{tenant="shop",plugin="p",version="1",outcome="ok"\} 10\n/);

  // Requests on the canary in flight when the rollback lands: three are at the upstream (onRequest
  // ran on v2, onResponse to come), one is inside v2's onRequest (40 ms of CPU).
  const [runningId, ...upstreamIds] = idsOn(true, 4, 'f');
  const atUpstream = [];
  for (const id of upstreamIds) {
    const a = host.begin('shop', id);
    assert.ok(a.ok);
    const out = await host.onRequest(a.run, request());
    assert.equal(out.action === 'continue' && tag(out.headers), '2');
    atUpstream.push(a.run);
  }
  const running = host.begin('shop', runningId as string);
  assert.ok(running.ok);
  const rollback = await tenantConfig(host, 'shop', [v1], { generation: 2, quota: { cpuMsPerRequest: 500, cpuMsPerSecond: 0 } });
  const runningReq = host.onRequest(running.run, request());
  const t0 = performance.now();
  host.configure(rollback);
  // The very next request that would have hit the canary is served by v1 (it waits at most for the
  // tenant's one running call: an isolate runs one call at a time).
  const probe = host.begin('shop', canaryIds[0] as string);
  assert.ok(probe.ok);
  const probed = await host.onRequest(probe.run, request());
  const tookMs = performance.now() - t0;
  host.end(probe.run);
  assert.equal(probed.action === 'continue' && tag(probed.headers), '1');
  assert.ok(tookMs < 100, `rollback took ${tookMs.toFixed(1)} ms to reach a new request`);

  const ran = await runningReq;
  assert.equal(ran.action === 'continue' && tag(ran.headers), '2', JSON.stringify(ran));
  for (const run of [running.run, ...atUpstream]) {
    const res = await host.onResponse(run, { status: 200, headers: [] });
    assert.equal(res.action === 'continue' && tag(res.headers), '2');
    host.end(run);
  }
  const after = await registry.metrics();
  assert.match(after, /isomesh_plugin_invocations_total\{tenant="shop",plugin="p",version="2",outcome="ok"\} 14\n/);
  assert.equal(host.status('shop').plugins['p@2'], undefined, 'v2 is gone from status after the rollback');
});
