// Drives test/hostile/corpus.ts against a real daemon. For every row (and its 'open' variant):
//   1. the evil tenant's requests get the row's expected outcome (closed → 503 + ISOMESH_ERR_PLUGIN_*),
//   2. the good tenant's concurrent requests all succeed, with a clean probe (counted, not timed),
//   3. the runtime stays up: the daemon process lives, /healthz is 200, a final good request succeeds.
// HOSTILE_ONLY=<substring> runs the matching rows only.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startEcho } from '../support/http.ts';
import { HostileBench, type EvilOutcome } from './bench.ts';
import { CORPUS, type HostileCase } from './corpus.ts';

const GOOD_REQUESTS = 12;
const bench = new HostileBench();

before(async () => {
  await bench.start();
});

after(async () => {
  await bench.stop();
});

function chainJson(c: HostileCase, policy: 'closed' | 'open'): string {
  const config = c.configJson === undefined ? '' : `,"config":${c.configJson}`;
  const hostile = `{"plugin":${JSON.stringify(HostileBench.pluginName(c))},"failurePolicy":"${policy}"${config}}`;
  // In the open variant the hostile entry may take the tenant's isolate down with it (memory), and
  // the probe lives in that isolate: only "the request continues" is asserted there.
  return policy === 'open' ? `[${hostile}]` : `[${hostile},{"plugin":"probe","failurePolicy":"closed"}]`;
}

function judge(c: HostileCase, policy: 'closed' | 'open', o: EvilOutcome, i: number): void {
  const where = `${c.name} [${policy}] request ${i}: ${o.res.status} ${String(o.res.headers['x-isomesh-error'])} ${o.res.body.slice(0, 300)}`;
  if (policy === 'open') {
    assert.equal(o.res.status, 200, `open policy: the entry is skipped, the request continues — ${where}`);
    assert.ok(o.echo !== undefined, `reached the upstream — ${where}`);
    return;
  }
  const e = c.expect;
  switch (e.kind) {
    case 'fail':
      assert.equal(o.res.status, 503, `closed policy → 503 — ${where}`);
      assert.match(String(o.res.headers['x-isomesh-error']), e.code, where);
      return;
    case 'pass':
      assert.equal(o.res.status, 200, where);
      assert.ok(o.echo !== undefined, `reached the upstream — ${where}`);
      assert.equal(o.echo.headers['x-probe'], 'clean', `no pollution seen by the tenant's other plugin — ${where}`);
      assert.equal(o.echo.headers['x-probe-tenant'], 'evil');
      assert.equal(o.echo.headers['x-probe-secret'], 'undefined', 'the evil probe cannot read the good secret');
      e.check?.(o, i);
      return;
    case 'custom':
    case 'config':
      e.check(o, i);
      return;
  }
}

async function runCase(c: HostileCase, policy: 'closed' | 'open'): Promise<void> {
  if (c.ownUpstream !== true) return exercise(c, policy);
  const own = await startEcho('echo');
  await bench.evilUpstream(own.port);
  try {
    await exercise(c, policy);
  } finally {
    await bench.evilUpstream();
    await own.close();
  }
}

async function exercise(c: HostileCase, policy: 'closed' | 'open'): Promise<void> {
  await bench.ensurePublished('evil', HostileBench.pluginName(c), c.source);
  const chain = await bench.evilChain(chainJson(c, policy));
  let exercised = true;
  if (c.expect.kind === 'config') {
    assert.ok(chain.status < 500, `a hostile config is bad input, never a 5xx: ${chain.status} ${chain.body.slice(0, 300)}`);
    exercised = chain.status >= 200 && chain.status < 300;
  } else {
    assert.equal(chain.status, 200, chain.body);
  }

  const n = c.requests ?? 3;
  let goodOk = 0;
  const evil: EvilOutcome[] = [];
  const logMark = bench.d.logs().length;
  await Promise.all([
    (async () => {
      for (let i = 0; i < GOOD_REQUESTS; i++) if (await bench.goodRequest(`/good/${c.name}/${i}`)) goodOk++;
    })(),
    (async () => {
      if (!exercised) return;
      for (let i = 0; i < n; i++) evil.push(await bench.evilRequest(`/evil/${c.name}/${i}`, c.evilTimeoutMs));
    })(),
  ]);

  // (3) before (1) so a crashed daemon is reported as such rather than as a wrong status.
  assert.ok(bench.daemonAlive(), `daemon process still running:\n${bench.d.logs().slice(-2000)}`);
  assert.ok(await bench.healthy(), '/healthz answers 200');
  assert.equal(goodOk, GOOD_REQUESTS, 'every request of the good tenant succeeded with a clean probe');
  evil.forEach((o, i) => judge(c, policy, o, i));
  if (policy === 'closed' && c.afterLogs !== undefined) c.afterLogs(bench.d.logs().slice(logMark));
  assert.ok(await bench.goodRequest(`/good/${c.name}/final`), 'a final good request succeeds');
}

const only = process.env.HOSTILE_ONLY;
for (const c of CORPUS) {
  const skip = only !== undefined && !c.name.includes(only);
  test(`hostile: ${c.name}`, { skip }, () => runCase(c, 'closed'));
  if (c.open === true) test(`hostile: ${c.name} [open]`, { skip }, () => runCase(c, 'open'));
}
