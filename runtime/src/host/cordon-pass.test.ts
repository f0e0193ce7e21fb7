// Cordon mode sends each phase of a request's chain to the cordon in one message (a ChainPass):
// round trips are counted per cordon; a crash is blamed on the entry that was running; a hook waiting
// on a host capability (ctx.sleep) releases its tenant so the tenant's other requests go on.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { newHost, oneRequest, request, tenantConfig } from './fixtures.ts';
import type { PluginHost } from './index.ts';

const TAG = (name: string) => `export default { onRequest(req) { req.headers.set('x-${name}', req.headers.get('x-last') ?? 'first'); req.headers.set('x-last', '${name}'); } };`;
const RESPONSE_TAG = `export default { onRequest(req) { req.headers.set('x-r', '1'); }, onResponse(res) { res.headers.set('x-served', res.headers.get('x-up') ?? 'none'); } };`;
const LOOP = `export default { onRequest() { for (;;) {} } };`;

function passesOf(host: PluginHost, tenant: string): number {
  const c = host.cordons().find((x) => x.id === host.status(tenant).usage.placement?.cordon);
  assert.ok(c !== undefined, `no cordon for ${tenant}`);
  return c.passes;
}

test('a chain of 3 costs one round trip per phase, with per-entry metrics and the same result as entry by entry', async (t) => {
  const { host, registry } = newHost({ mode: 'cordon', cordons: 1 });
  t.after(() => host.close());
  host.configure(await tenantConfig(host, 'c3', [{ name: 'a', source: TAG('a') }, { name: 'b', source: TAG('b') }, { name: 'r', source: RESPONSE_TAG }]));
  host.configure(await tenantConfig(host, 'req-only', [{ name: 'a', source: TAG('a') }, { name: 'b', source: TAG('b') }]));
  assert.equal((await oneRequest(host, 'req-only')).action, 'continue'); // cordon up, hooks reported
  const before = passesOf(host, 'c3');
  const N = 40;
  for (let i = 0; i < N; i++) {
    const adm = host.begin('c3', `c3-${i}`);
    assert.ok(adm.ok);
    const req = await host.onRequest(adm.run, request());
    assert.deepEqual(req, { action: 'continue', headers: [['x-a', 'first'], ['x-last', 'b'], ['x-b', 'a'], ['x-r', '1']] });
    assert.ok(host.hasResponseHooks(adm.run));
    const res = await host.onResponse(adm.run, { status: 200, headers: [['x-up', String(i)]] });
    assert.deepEqual(res, { action: 'continue', status: 200, headers: [['x-up', String(i)], ['x-served', String(i)]] });
    host.end(adm.run);
  }
  assert.equal(passesOf(host, 'c3') - before, 2 * N, 'one pass for onRequest (3 entries), one for onResponse');
  // A chain without onResponse hooks sends nothing for the response phase.
  const mid = passesOf(host, 'req-only');
  for (let i = 0; i < 10; i++) {
    const adm = host.begin('req-only', `ro-${i}`);
    assert.ok(adm.ok);
    await host.onRequest(adm.run, request());
    assert.equal(host.hasResponseHooks(adm.run), false);
    assert.deepEqual(await host.onResponse(adm.run, { status: 204, headers: [] }), { action: 'continue', status: 204, headers: [] });
    host.end(adm.run);
  }
  assert.equal(passesOf(host, 'req-only') - mid, 10);
  const text = await registry.metrics();
  for (const plugin of ['a', 'b']) {
    assert.match(text, new RegExp(`isomesh_plugin_invocations_total\\{tenant="c3",plugin="${plugin}",version="1",outcome="ok"\\} ${N}\\b`));
  }
  // r ran once per phase.
  assert.match(text, new RegExp(`isomesh_plugin_invocations_total\\{tenant="c3",plugin="r",version="1",outcome="ok"\\} ${2 * N}\\b`));
  assert.equal(host.status('c3').plugins['b@1']?.invocations, N);
});

test('a cordon crash in the middle of a chain is blamed on the entry that was running', async (t) => {
  const { host, registry } = newHost({ mode: 'cordon', cordons: 1 });
  t.after(() => host.close());
  host.configure(await tenantConfig(host, 'mid', [{ name: 'tag', source: TAG('a') }, { name: 'spin', source: LOOP }], { quota: { cpuMsPerRequest: 3000, cpuMsPerSecond: 0 } }));
  host.configure(await tenantConfig(host, 'warm', [{ name: 'tag', source: TAG('a') }]));
  // The cordon has started and loaded both tenants (messages are handled in order) before the crash.
  assert.equal((await oneRequest(host, 'warm')).action, 'continue');
  const pid = host.status('mid').usage.placement?.pid;
  assert.ok(typeof pid === 'number' && pid > 0);
  const pending = oneRequest(host, 'mid');
  await sleep(300);
  process.kill(pid, 'SIGKILL');
  const out = await pending;
  assert.equal(out.action === 'fail' && out.code, 'ISOMESH_ERR_PLUGIN_CRASHED', JSON.stringify(out));
  const st = host.status('mid').plugins;
  assert.equal(st['spin@1']?.health, 'degraded');
  assert.equal(st['spin@1']?.lastError?.code, 'ISOMESH_ERR_PLUGIN_CRASHED');
  assert.ok((st['spin@1']?.restarts ?? 0) >= 1, 'the running plugin is the one restarted');
  assert.equal(st['tag@1']?.health, 'ok');
  assert.equal(st['tag@1']?.failures, 0);
  const text = await registry.metrics();
  assert.match(text, /isomesh_plugin_invocations_total\{tenant="mid",plugin="spin",version="1",outcome="crashed"\} 1/);
  assert.doesNotMatch(text, /plugin="tag",version="1",outcome="crashed"/);
  assert.match(text, /isomesh_cordon_crashes_blamed_total\{tenant="mid"\} 1/);
});

test("a hook waiting on ctx.sleep releases its tenant: the tenant's other requests run meanwhile", async (t) => {
  const { host } = newHost({ mode: 'cordon', cordons: 1 });
  t.after(() => host.close());
  const source = `export default { async onRequest(req, ctx) { if (req.path === '/slow') await ctx.sleep(300); req.headers.set('x-path', req.path); } };`;
  host.configure(await tenantConfig(host, 'sleepy', [{ name: 'nap', source }]));
  assert.equal((await oneRequest(host, 'sleepy', request({ path: '/warm' }))).action, 'continue');
  const order: string[] = [];
  const t0 = performance.now();
  const one = async (path: string, i: number) => {
    const out = await oneRequest(host, 'sleepy', request({ path }), `${path}-${i}`);
    assert.deepEqual(out, { action: 'continue', headers: [['x-path', path]] });
    order.push(path);
  };
  // The slow requests are sent first: a tenant held by its sleeping call would serve them one by one
  // (10 × 300 ms) and the fast ones only after them.
  await Promise.all([...Array.from({ length: 10 }, (_, i) => one('/slow', i)), ...Array.from({ length: 10 }, (_, i) => one('/fast', i))]);
  const elapsed = performance.now() - t0;
  t.diagnostic(`20 requests in ${elapsed.toFixed(0)} ms; order ${order.map((p) => p[1]).join('')}`);
  assert.deepEqual(order.slice(0, 10), Array(10).fill('/fast'), 'every fast request finished before the first slow one');
  assert.equal(order.filter((p) => p === '/slow').length, 10);
  // The ten sleeps overlapped rather than ran one after another (which takes at least 3000 ms).
  assert.ok(elapsed < 2500, `took ${elapsed.toFixed(0)} ms`);
  assert.equal(host.status('sleepy').plugins['nap@1']?.failures, 0);
});

test('a released call is still bounded: a sleep past the capability wall budget fails under its policy', async (t) => {
  const { host } = newHost({ mode: 'cordon', cordons: 1 });
  t.after(() => host.close());
  const source = `export default { async onRequest(req, ctx) { try { await ctx.sleep(6000); } catch (e) { req.headers.set('x-err', e.code); } } };`;
  host.configure(await tenantConfig(host, 'over', [{ name: 'long', source }]));
  const out = await oneRequest(host, 'over');
  assert.deepEqual(out, { action: 'continue', headers: [['x-err', 'ERR_CAPABILITY_LIMIT']] });
});

test('work after a capability wait is scheduled: a burst of resumed calls does not hold up a neighbour', async (t) => {
  const { host } = newHost({ mode: 'cordon', cordons: 1 });
  t.after(() => host.close());
  // 16 requests sleep until the same instant, then each burns 20 ms. Run back to back outside the
  // scheduler they would hold the cordon for 16 × 20 ms with nothing in between; scheduled, the
  // neighbour's requests are served between them.
  const wake = `export default { async onRequest(req, ctx) {
    await ctx.sleep(Math.max(0, Number(req.headers.get('x-wake-at')) - Date.now()));
    const end = Date.now() + 20; while (Date.now() < end) {} req.headers.set('x-woke', '1'); } };`;
  const quota = { cpuMsPerSecond: 0, cpuMsPerRequest: 200 };
  host.configure(await tenantConfig(host, 'burst', [{ name: 'wake', source: wake }], { quota }));
  host.configure(await tenantConfig(host, 'calm', [{ name: 'tag', source: TAG('a') }], { quota }));
  assert.equal((await oneRequest(host, 'burst', request({ headers: [['x-wake-at', '0']] }))).action, 'continue');
  assert.equal((await oneRequest(host, 'calm')).action, 'continue');
  const events: string[] = [];
  let burstDone = false;
  const wakeAt = String(Date.now() + 50);
  const burst = Promise.all(
    Array.from({ length: 16 }, async (_, i) => {
      const out = await oneRequest(host, 'burst', request({ headers: [['x-wake-at', wakeAt]] }), `b${i}`);
      events.push('b');
      return out;
    }),
  ).then((outs) => {
    burstDone = true;
    return outs;
  });
  for (let i = 0; i < 500 && !burstDone; i++) {
    assert.equal((await oneRequest(host, 'calm', request(), `c${i}`)).action, 'continue');
    events.push('c');
  }
  const outs = await burst;
  assert.ok(outs.every((o) => o.action === 'continue' && o.headers.some(([k]) => k === 'x-woke')));
  const during = events.slice(events.indexOf('b'), events.lastIndexOf('b')).filter((e) => e === 'c').length;
  t.diagnostic(`calm requests served between the first and the last burst call: ${during} (${events.join('')})`);
  assert.ok(during >= 4, `only ${during} calm requests were served while the burst ran: ${events.join('')}`);
});
