// ISOMESH_HOST_MODE=inline (isolates in the daemon, lowest latency) serves the same chain semantics
// as the default cordon mode: the plugin acts, a looping plugin fails closed for its own tenant only.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startDaemon } from '../support/daemon.ts';
import { echoed, request, startEcho } from '../support/http.ts';

test('inline host mode: chain, containment of a looping tenant, status placement', async (t) => {
  const echo = await startEcho();
  t.after(() => echo.close());
  const d = await startDaemon({ env: { ISOMESH_HOST_MODE: 'inline' } });
  t.after(() => d.stop());
  const ports: Record<string, number> = {};
  for (const [tenant, source] of [
    ['calm', `export default { onRequest(req, ctx) { req.headers.set('x-mode', ctx.tenant); } };`],
    ['loopy', `export default { onRequest() { for (;;) {} } };`],
  ] as const) {
    const created = await d.api('PUT', `/v1/tenants/${tenant}`, {});
    assert.equal(created.status, 201);
    ports[tenant] = created.body.listenerPort;
    await d.api('PUT', `/v1/tenants/${tenant}/quota`, { cpuMsPerRequest: 20, cpuMsPerSecond: 1_000_000 });
    await d.api('PUT', `/v1/tenants/${tenant}/services/echo`, { endpoints: [{ address: '127.0.0.1', port: echo.port }] });
    await d.api('PUT', `/v1/tenants/${tenant}/routes/all`, { match: { pathPrefix: '/' }, to: { service: 'echo' } });
    const pub = await d.api('POST', `/v1/tenants/${tenant}/plugins/p/versions`, { source, language: 'javascript' });
    assert.equal(pub.status, 201, JSON.stringify(pub.body));
    await d.api('PUT', `/v1/tenants/${tenant}/plugins/p/active`, { version: pub.body.version });
    assert.equal((await d.api('PUT', `/v1/tenants/${tenant}/chain`, [{ plugin: 'p', failurePolicy: 'closed' }])).status, 200);
  }
  let calmOk = 0;
  const loopCodes: string[] = [];
  await Promise.all([
    (async () => {
      for (let i = 0; i < 30; i++) {
        const r = await request(ports.calm!, `/c/${i}`);
        if (r.status === 200 && echoed(r).headers['x-mode'] === 'calm') calmOk++;
      }
    })(),
    (async () => {
      for (let i = 0; i < 4; i++) loopCodes.push(String((await request(ports.loopy!, `/l/${i}`)).headers['x-isomesh-error']));
    })(),
  ]);
  assert.equal(calmOk, 30);
  assert.deepEqual(loopCodes, Array(4).fill('ISOMESH_ERR_PLUGIN_TIMEOUT'));
  const status = await d.api('GET', '/v1/tenants/calm/status');
  assert.equal(status.body.usage.placement.mode, 'inline');
});
