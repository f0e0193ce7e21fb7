// Passes of concurrent requests travel to a cordon together (one write per tick) and their answers
// come back together: batching must not widen a crash. A cordon killed while one tenant's pass runs
// loses only what was lost with the process — the answers of another tenant's passes that finished
// before it are delivered, never failed — and tenants of other cordons see nothing at all.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RequestOutcome } from './contract.ts';
import { cordonNeighbours, newHost, oneRequest, request, tenantConfig } from './fixtures.ts';

// Burns x-burn ms (the fair scheduler charges it), or loops for x-loop; then tags the request.
const PLUGIN = `export default { onRequest(req, ctx) {
  if (req.headers.has('x-loop')) for (;;) {}
  const end = Date.now() + Number(req.headers.get('x-burn') ?? 0); while (Date.now() < end) {}
  req.headers.set('x-ok', ctx.tenant + ':' + ctx.requestId); } };`;
const burn = (ms: number) => request({ headers: [['x-burn', String(ms)]] });

const answered = (o: RequestOutcome, tenant: string, id: string) => o.action === 'continue' && o.headers.some(([k, v]) => k === 'x-ok' && v === `${tenant}:${id}`);

test('a cordon killed mid-batch fails only the calls lost with it: earlier answers of its other tenants arrive, other cordons see nothing', async (t) => {
  const { host } = newHost({ mode: 'cordon', cordons: 2 });
  t.after(() => host.close());
  const { same: neighbour, other: bystander } = cordonNeighbours(host, 'evil', 'batch');
  const quota = { cpuMsPerRequest: 5000, cpuMsPerSecond: 0 };
  host.configure(await tenantConfig(host, 'evil', [{ name: 'spin', source: PLUGIN }], { quota }));
  // The neighbour's weight puts its passes ahead of evil's in the fair scheduler.
  host.configure(await tenantConfig(host, neighbour, [{ name: 'ok', source: PLUGIN }], { quota: { ...quota, weight: 1000 } }));
  host.configure(await tenantConfig(host, bystander, [{ name: 'ok', source: PLUGIN }], { quota }));
  // Both cordons up with every isolate loaded (messages are handled in order), and warm: quick
  // passes (the cordon holds quick passes' answers to write them together).
  for (let i = 0; i < 20; i++) {
    for (const name of [neighbour, bystander, 'evil']) assert.ok(answered(await oneRequest(host, name, burn(0), `warm-${i}`), name, `warm-${i}`));
  }
  const pid = host.status('evil').usage.placement?.pid;
  assert.ok(typeof pid === 'number' && pid > 0);

  // One tick, so one message each way: the neighbour's quick passes (the cordon holds their answers
  // to write them together), evil's looping pass, the bystander's in the other cordon. The
  // scheduler runs the neighbour's first, then evil's loop; the process is killed during the loop.
  const calls = [
    ...['n0', 'n1', 'n2'].map((id) => ({ tenant: neighbour, id, out: oneRequest(host, neighbour, burn(0), id) })),
    { tenant: 'evil', id: 'e0', out: oneRequest(host, 'evil', request({ headers: [['x-loop', '1']] }), 'e0') },
    ...['b0', 'b1', 'b2'].map((id) => ({ tenant: bystander, id, out: oneRequest(host, bystander, burn(0), id) })),
  ];
  await sleep(400); // evil's pass is looping by now
  process.kill(pid, 'SIGKILL');
  const outs = await Promise.all(calls.map(async (c) => ({ ...c, out: await c.out })));

  const evil = outs.find((c) => c.tenant === 'evil')?.out;
  assert.equal(evil?.action === 'fail' && evil.code, 'ISOMESH_ERR_PLUGIN_CRASHED');
  for (const c of outs.filter((x) => x.tenant === bystander)) assert.ok(answered(c.out, bystander, c.id), `${c.id}: ${JSON.stringify(c.out)}`);
  // Every pass of the neighbour finished before evil's started: all answered, none lost with the
  // process (the cordon writes held answers before it runs another tenant's pass).
  for (const c of outs.filter((x) => x.tenant === neighbour)) assert.ok(answered(c.out, neighbour, c.id), `${c.id}: ${JSON.stringify(c.out)}`);
  // Blame stays with the tenant whose pass was running.
  assert.equal(host.status('evil').plugins['spin@1']?.lastError?.code, 'ISOMESH_ERR_PLUGIN_CRASHED');
  assert.ok((host.status('evil').plugins['spin@1']?.restarts ?? 0) >= 1);
});
