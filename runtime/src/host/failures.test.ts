import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { RequestOutcome } from './contract.ts';
import { newHost, oneRequest, request, tenantConfig, type PluginSpec } from './fixtures.ts';

const { host, registry } = newHost();
test.after(() => host.close());

const GOOD = `export default { onRequest(req, ctx) { req.headers.set('x-ok', ctx.tenant); } };`;
const BAD: Record<string, { source: string; code: string }> = {
  throw: { source: `export default { onRequest() { throw new TypeError('kaboom'); } };`, code: 'ISOMESH_ERR_PLUGIN_THREW' },
  throwValue: { source: `export default { onRequest() { throw 42; } };`, code: 'ISOMESH_ERR_PLUGIN_THREW' },
  loop: { source: `export default { onRequest() { for (;;) {} } };`, code: 'ISOMESH_ERR_PLUGIN_TIMEOUT' },
  asyncLoop: { source: `export default { async onRequest() { await null; for (;;) {} } };`, code: 'ISOMESH_ERR_PLUGIN_TIMEOUT' },
  neverSettles: { source: `export default { onRequest() { return new Promise(() => {}); } };`, code: 'ISOMESH_ERR_PLUGIN_TIMEOUT' },
  memory: {
    source: `export default { onRequest() { const keep = []; for (;;) keep.push(new Array(1e5).fill(Math.random())); } };`,
    code: 'ISOMESH_ERR_PLUGIN_MEMORY',
  },
  garbage: {
    // The header edit makes the guest serialise a result (with the JSON.stringify the plugin replaced);
    // a call that changes nothing answers without serialising anything.
    source: `const stringify = JSON.stringify;
      export default { onRequest(req) { JSON.stringify = (v) => (v && v.action ? stringify({ action: 'respond', status: 99999, headers: 'x', body: 1 }) : stringify(v)); req.headers.set('x-garbage', '1'); } };`,
    code: 'ISOMESH_ERR_PLUGIN_BAD_RESULT',
  },
  badHeader: { source: `export default { onRequest(req, ctx) { return ctx.respond(200, { headers: [['bad name', 'v']] }); } };`, code: 'ISOMESH_ERR_PLUGIN_THREW' },
};

const QUOTA = { memoryMb: 16, cpuMsPerRequest: 30, cpuMsPerSecond: 0 };

// isolated-vm's timeout is wall time: only the looping cases get the short limit, so a busy machine
// (tests run in parallel) cannot turn another failure into a timeout. Memory bombs get a long one so
// the memory limit, not the clock, stops them.
const RELAXED_MS = 1000;
async function configure(tenant: string, spec: PluginSpec[], generation = 1, cpuMsPerRequest = RELAXED_MS) {
  host.configure(await tenantConfig(host, tenant, spec, { quota: { ...QUOTA, cpuMsPerRequest }, generation }));
}

function assertOk(out: RequestOutcome, tenant: string) {
  assert.deepEqual(out, { action: 'continue', headers: [['x-ok', tenant]] });
}

await configure('bystander', [{ name: 'good', source: GOOD }]);

for (const [name, bad] of Object.entries(BAD)) {
  test(`${name}: closed → 503 ${bad.code}; open → skipped; other tenants unaffected; fixed by reconfigure`, async () => {
    const closed = `closed-${name.toLowerCase()}`;
    const open = `open-${name.toLowerCase()}`;
    const limit = name === 'memory' ? 2000 : /loop|never/i.test(name) ? QUOTA.cpuMsPerRequest : RELAXED_MS;
    await configure(closed, [{ name: 'bad', source: bad.source, failurePolicy: 'closed' }], 1, limit);
    await configure(open, [{ name: 'bad', source: bad.source, failurePolicy: 'open' }, { name: 'good', source: GOOD }], 1, limit);

    const c = await oneRequest(host, closed);
    assert.equal(c.action, 'fail');
    assert.equal(c.action === 'fail' && c.status, 503);
    assert.equal(c.action === 'fail' && c.code, bad.code, c.action === 'fail' ? c.message : '');
    assertOk(await oneRequest(host, open), open);
    assertOk(await oneRequest(host, 'bystander'), 'bystander');

    const st = host.status(closed).plugins['bad@1'];
    assert.equal(st?.health, 'degraded');
    assert.equal(st?.lastError?.code, bad.code);
    assert.ok((st?.failures ?? 0) >= 1);

    // The fix: a new version. The isolate (rebuilt if it was lost) serves again.
    await configure(closed, [{ name: 'bad', source: GOOD, version: 2 }], 2);
    assertOk(await oneRequest(host, closed), closed);
    assert.equal(host.status(closed).plugins['bad@2']?.health, 'ok');
    host.removeTenant(closed);
    host.removeTenant(open);
  });
}

test('a memory bomb disposes only its tenant isolate, which is rebuilt (with back-off) and counted', async () => {
  await configure('bomber', [{ name: 'bad', source: BAD.memory?.source ?? '', failurePolicy: 'closed' }], 1, 2000);
  const before = host.status('bystander').usage.memoryBytes;
  const codes: string[] = [];
  for (let i = 0; i < 4; i++) {
    const out = await oneRequest(host, 'bomber');
    codes.push(out.action === 'fail' ? out.code : out.action);
    assertOk(await oneRequest(host, 'bystander'), 'bystander');
  }
  // First call crashes, the next rebuilds and crashes again; then back-off answers "unavailable".
  assert.equal(codes[0], 'ISOMESH_ERR_PLUGIN_MEMORY');
  assert.equal(codes[1], 'ISOMESH_ERR_PLUGIN_MEMORY');
  assert.ok(codes.slice(2).every((c) => c === 'ISOMESH_ERR_PLUGIN_UNAVAILABLE' || c === 'ISOMESH_ERR_PLUGIN_MEMORY'), codes.join());
  assert.ok((host.status('bomber').plugins['bad@1']?.restarts ?? 0) >= 2);
  assert.ok(host.status('bystander').usage.memoryBytes > 0 && before > 0);
  assert.match(await registry.metrics(), /isomesh_isolate_restarts_total\{tenant="bomber"\} [1-9]/);
  assert.match(await registry.metrics(), /isomesh_plugin_invocations_total\{tenant="bomber",plugin="bad",version="1",outcome="memory"\} [1-9]/);
  await configure('bomber', [{ name: 'bad', source: GOOD, version: 2 }], 2);
  assertOk(await oneRequest(host, 'bomber'), 'bomber');
  host.removeTenant('bomber');
});

test('the CPU limit applies per call: a looping open entry does not starve the next entry', async () => {
  const burn = (ms: number) => `export default { onRequest(req) { const end = Date.now() + ${ms}; while (Date.now() < end) {} req.headers.set('x-burnt', '${ms}'); } };`;
  await configure('budget', [{ name: 'a', source: BAD.loop?.source ?? '', failurePolicy: 'open' }, { name: 'b', source: burn(10) }], 1, QUOTA.cpuMsPerRequest);
  const t0 = performance.now();
  const out = await oneRequest(host, 'budget', request());
  assert.deepEqual(out, { action: 'continue', headers: [['x-burnt', '10']] });
  assert.ok(performance.now() - t0 < 500);
  // Over the limit (30 ms) is a timeout.
  await configure('budget', [{ name: 'b', source: burn(60), version: 2 }], 2, QUOTA.cpuMsPerRequest);
  const slow = await oneRequest(host, 'budget', request());
  assert.equal(slow.action === 'fail' && slow.code, 'ISOMESH_ERR_PLUGIN_TIMEOUT');
  host.removeTenant('budget');
});
