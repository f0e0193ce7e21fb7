// A hostile tenant (infinite loop, memory bomb, throwing plugin) fails only its own requests while
// another tenant's requests keep succeeding on the same node. Success is asserted by count, not timing.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';
import { echoed, request, startEcho, type EchoUpstream } from '../support/http.ts';

let d: TestDaemon;
let echo: EchoUpstream;
const ports: Record<string, number> = {};

const HOSTILE: Record<string, string> = {
  loop: `export default { onRequest() { for (;;) {} } };`,
  bomb: `export default { onRequest() { const a = []; for (;;) a.push(new Array(1e6).fill(Math.random())); } };`,
  throws: `export default { onRequest() { throw new TypeError('hostile'); } };`,
};

async function setupTenant(name: string, memoryMb: number): Promise<void> {
  const t = await d.api('PUT', `/v1/tenants/${name}`, {});
  assert.equal(t.status, 201, JSON.stringify(t.body));
  ports[name] = t.body.listenerPort;
  assert.equal((await d.api('PUT', `/v1/tenants/${name}/quota`, { memoryMb, cpuMsPerRequest: 50, cpuMsPerSecond: 1_000_000 })).status, 200);
  await d.api('PUT', `/v1/tenants/${name}/services/echo`, { endpoints: [{ address: '127.0.0.1', port: echo.port }] });
  await d.api('PUT', `/v1/tenants/${name}/routes/all`, { match: { pathPrefix: '/' }, to: { service: 'echo' } });
}

async function publishActive(tenant: string, plugin: string, source: string): Promise<void> {
  const r = await d.api('POST', `/v1/tenants/${tenant}/plugins/${plugin}/versions`, { source, language: 'javascript' });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.equal((await d.api('PUT', `/v1/tenants/${tenant}/plugins/${plugin}/active`, { version: r.body.version })).status, 200);
}

before(async () => {
  echo = await startEcho();
  d = await startDaemon();
  await setupTenant('good', 64);
  await setupTenant('evil', 16);
  await publishActive('good', 'light', `export default { onRequest(req) { req.headers.set('x-light', 'yes'); } };`);
  assert.equal((await d.api('PUT', '/v1/tenants/good/chain', [{ plugin: 'light' }])).status, 200);
  for (const [name, src] of Object.entries(HOSTILE)) await publishActive('evil', name, src);
});

after(async () => {
  await d?.stop();
  await echo?.close();
});

for (const kind of Object.keys(HOSTILE)) {
  test(`tenant "evil" running a ${kind} plugin fails closed; tenant "good" keeps succeeding`, async () => {
    assert.equal((await d.api('PUT', '/v1/tenants/evil/chain', [{ plugin: kind, failurePolicy: 'closed' }])).status, 200);
    await sleep(150); // > the 100 ms activation promise

    const goodN = 60;
    const evilN = 6;
    let goodOk = 0;
    const evilResults: Array<{ status: number; code: string | undefined }> = [];
    const good = (async () => {
      for (let i = 0; i < goodN; i++) {
        const res = await request(ports.good!, `/g/${i}`);
        if (res.status === 200 && echoed(res).headers['x-light'] === 'yes') goodOk++;
      }
    })();
    const evil = (async () => {
      for (let i = 0; i < evilN; i++) {
        const res = await request(ports.evil!, `/e/${i}`, { timeoutMs: 15_000 });
        evilResults.push({ status: res.status, code: res.headers['x-isomesh-error'] as string | undefined });
      }
    })();
    await Promise.all([good, evil]);

    assert.equal(goodOk, goodN, 'every request of the well-behaved tenant succeeded');
    assert.equal(evilResults.length, evilN);
    for (const r of evilResults) {
      assert.equal(r.status, 503, `hostile ${kind} got its failure policy: ${JSON.stringify(r)}`);
      assert.match(r.code ?? '', /^ISOMESH_ERR_PLUGIN_/);
    }
    // The runtime stayed up and its status tells the story.
    const health = await fetch(`${d.url}/healthz`);
    assert.equal(health.status, 200);
  });
}

test('with failurePolicy open, the hostile entry is skipped and traffic flows', async () => {
  assert.equal((await d.api('PUT', '/v1/tenants/evil/chain', [{ plugin: 'loop', failurePolicy: 'open' }])).status, 200);
  await sleep(150);
  for (let i = 0; i < 3; i++) {
    const res = await request(ports.evil!, `/open/${i}`, { timeoutMs: 15_000 });
    assert.equal(res.status, 200);
  }
});

test('a fixed plugin serves again after its isolate was rebuilt', async () => {
  await publishActive('evil', 'bomb', `export default { onRequest(req) { req.headers.set('x-fixed', '1'); } };`);
  assert.equal((await d.api('PUT', '/v1/tenants/evil/chain', [{ plugin: 'bomb', failurePolicy: 'closed' }])).status, 200);
  const deadline = Date.now() + 5000;
  let res = await request(ports.evil!, '/fixed');
  while (res.status !== 200 && Date.now() < deadline) {
    await sleep(50);
    res = await request(ports.evil!, '/fixed');
  }
  assert.equal(res.status, 200);
  assert.equal(echoed(res).headers['x-fixed'], '1');
});
