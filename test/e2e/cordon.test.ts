// Cordons through the real daemon: a tenant whose plugin takes its cordon process down (SIGKILL by
// PID stands in for an isolated-vm abort / OOM kill) fails only requests of that cordon's tenants;
// a tenant in the other cordon keeps succeeding (asserted by count); the cordon restarts and serves;
// the repeat offender is quarantined, after which its crashes no longer touch its old neighbour.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { hashRequestId } from '../../runtime/src/host/index.ts';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';
import { echoed, request, startEcho, type EchoUpstream } from '../support/http.ts';

let d: TestDaemon;
let echo: EchoUpstream;
const ports: Record<string, number> = {};
const CORDONS = 2;
const cordonOf = (name: string) => hashRequestId(name) % CORDONS;
const EVIL = 'evil';
const names = Array.from({ length: 64 }, (_, i) => `t${i}`);
const NEIGHBOUR = names.find((n) => cordonOf(n) === cordonOf(EVIL)) as string;
const BYSTANDER = names.find((n) => cordonOf(n) !== cordonOf(EVIL)) as string;

async function setupTenant(name: string, cpuMsPerRequest: number): Promise<void> {
  const t = await d.api('PUT', `/v1/tenants/${name}`, {});
  assert.equal(t.status, 201, JSON.stringify(t.body));
  ports[name] = t.body.listenerPort;
  assert.equal((await d.api('PUT', `/v1/tenants/${name}/quota`, { cpuMsPerRequest, cpuMsPerSecond: 100_000 })).status, 200);
  await d.api('PUT', `/v1/tenants/${name}/services/echo`, { endpoints: [{ address: '127.0.0.1', port: echo.port }] });
  await d.api('PUT', `/v1/tenants/${name}/routes/all`, { match: { pathPrefix: '/' }, to: { service: 'echo' } });
}

async function publish(tenant: string, plugin: string, source: string): Promise<void> {
  const r = await d.api('POST', `/v1/tenants/${tenant}/plugins/${plugin}/versions`, { source, language: 'javascript' });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal((await d.api('PUT', `/v1/tenants/${tenant}/plugins/${plugin}/active`, { version: r.body.version })).status, 200);
  assert.equal((await d.api('PUT', `/v1/tenants/${tenant}/chain`, [{ plugin, failurePolicy: 'closed' }])).status, 200);
}

async function placement(tenant: string): Promise<{ cordon: string; pid: number } | undefined> {
  const text = (await d.api('GET', '/metrics')).body as string;
  const m = new RegExp(`isomesh_tenant_cordon_info\\{tenant="${tenant}",cordon="([^"]+)",pid="(\\d+)"\\} 1`).exec(text);
  return m === null ? undefined : { cordon: m[1] as string, pid: Number(m[2]) };
}

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

const served = async (tenant: string) => {
  const res = await request(ports[tenant]!, '/probe', { timeoutMs: 15_000 });
  return res.status === 200 && echoed(res).headers['x-ok'] === tenant ? true : undefined;
};

/** Sequential requests to `tenant` until stopped; counts successes and failures. */
function traffic(tenant: string) {
  const c = { ok: 0, failed: [] as string[] };
  let on = true;
  const done = (async () => {
    for (let i = 0; on && i < 10_000; i++) {
      const res = await request(ports[tenant]!, `/t/${i}`, { timeoutMs: 15_000 });
      if (res.status === 200 && echoed(res).headers['x-ok'] === tenant) c.ok++;
      else c.failed.push(`${res.status} ${String(res.headers['x-isomesh-error'])}`);
      await sleep(5);
    }
  })();
  return { c, stop: async () => { on = false; await done; } };
}

/** An evil request that is running its loop when the evil tenant's cordon is SIGKILLed. */
async function crashEvil(): Promise<{ status: number; code: unknown }> {
  const where = await until('evil placed', () => placement(EVIL));
  const res = request(ports[EVIL]!, '/boom', { timeoutMs: 15_000 });
  await sleep(300);
  process.kill(where.pid, 'SIGKILL');
  const r = await res;
  return { status: r.status, code: r.headers['x-isomesh-error'] };
}

before(async () => {
  echo = await startEcho();
  d = await startDaemon({ env: { ISOMESH_HOST_MODE: 'cordon', ISOMESH_CORDONS: String(CORDONS) } });
  const ok = `export default { onRequest(req, ctx) { req.headers.set('x-ok', ctx.tenant); } };`;
  await setupTenant(EVIL, 5000);
  await publish(EVIL, 'spin', `export default { onRequest() { for (;;) {} } };`);
  for (const name of [NEIGHBOUR, BYSTANDER]) {
    await setupTenant(name, 50);
    await publish(name, 'ok', ok);
  }
  await until('neighbour serving', () => served(NEIGHBOUR));
  await until('bystander serving', () => served(BYSTANDER));
});

after(async () => {
  await d?.stop();
  await echo?.close();
});

test('a cordon crash fails only its tenants; the cordon restarts; the repeat offender is quarantined', async () => {
  const evilHome = await until('evil placed', () => placement(EVIL));
  assert.equal((await placement(NEIGHBOUR))?.cordon, evilHome.cordon);
  assert.notEqual((await placement(BYSTANDER))?.cordon, evilHome.cordon);
  const bystander = traffic(BYSTANDER);

  const first = await crashEvil();
  assert.equal(first.status, 503);
  assert.equal(first.code, 'ISOMESH_ERR_PLUGIN_CRASHED');
  await until('neighbour served by the restarted cordon', () => served(NEIGHBOUR));
  const restarted = await until('new pid', async () => {
    const p = await placement(NEIGHBOUR);
    return p !== undefined && p.pid !== evilHome.pid ? p : undefined;
  });
  assert.equal(restarted.cordon, evilHome.cordon);

  const second = await crashEvil();
  assert.equal(second.code, 'ISOMESH_ERR_PLUGIN_CRASHED');
  const q = await until('quarantine', async () => {
    const p = await placement(EVIL);
    return p?.cordon.startsWith('quarantine-') ? p : undefined;
  });
  assert.match(q.cordon, /^quarantine-evil$/);
  await until('neighbour back', () => served(NEIGHBOUR));

  // From now on evil's crashes hit only evil.
  const neighbour = traffic(NEIGHBOUR);
  const third = await crashEvil();
  await sleep(200);
  await neighbour.stop();
  await bystander.stop();
  assert.equal(third.code, 'ISOMESH_ERR_PLUGIN_CRASHED');
  assert.deepEqual(neighbour.c.failed, [], 'neighbour requests failed after the offender was quarantined');
  assert.ok(neighbour.c.ok >= 10, `neighbour served ${neighbour.c.ok}`);
  assert.deepEqual(bystander.c.failed, [], 'bystander (other cordon) saw failures');
  assert.ok(bystander.c.ok >= 30, `bystander served ${bystander.c.ok}`);

  const metrics = (await d.api('GET', '/metrics')).body as string;
  assert.match(metrics, /isomesh_cordon_crashes_blamed_total\{tenant="evil"\} 3/);
  assert.match(metrics, /isomesh_tenant_quarantined\{tenant="evil"\} 1/);
  const status = await d.api('GET', `/v1/tenants/${EVIL}/status`);
  const spin = status.body.plugins.find((p: { name: string }) => p.name === 'spin');
  assert.equal(spin.active.health, 'degraded');
  assert.equal(spin.active.lastError.code, 'ISOMESH_ERR_PLUGIN_CRASHED');
  assert.equal((await fetch(`${d.url}/healthz`)).status, 200);
});
