// All state survives a restart of the daemon: tenants (and their settings), tokens, services, routes,
// rate limits, plugin versions, activations, the chain and secrets — and traffic flows again on the
// same listener port.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startDaemon } from '../support/daemon.ts';
import { echoed, request, startEcho } from '../support/http.ts';

test('restart keeps all state and serves the same behaviour', async (t) => {
  const echo = await startEcho();
  t.after(() => echo.close());
  const first = await startDaemon();
  t.after(() => first.stop());
  const created = await first.api('PUT', '/v1/tenants/keep', {});
  assert.equal(created.status, 201);
  const port = created.body.listenerPort;
  const tok = await first.api('POST', '/v1/tenants/keep/tokens');
  assert.equal(tok.status, 201, JSON.stringify(tok.body));
  await first.api('PUT', '/v1/tenants/keep/quota', { requestsPerSecond: 500 });
  await first.api('PUT', '/v1/tenants/keep/services/echo', { endpoints: [{ address: '127.0.0.1', port: echo.port }] });
  await first.api('PUT', '/v1/tenants/keep/routes/all', { match: { pathPrefix: '/' }, to: { service: 'echo' } });
  await first.api('PUT', '/v1/tenants/keep/secrets/apikey', { value: 's3cr3t' });
  assert.equal((await first.api('PUT', '/v1/tenants/keep', { accessLog: { enabled: true, sample: 0.5 } })).status, 200);
  const limit = { descriptors: [{ key: 'route', value: 'all' }], limit: { requestsPerUnit: 1000, unit: 'second' } };
  assert.equal((await first.api('PUT', '/v1/tenants/keep/ratelimits/all', limit)).status, 201);
  const pub = await first.api('POST', '/v1/tenants/keep/plugins/sec/versions', {
    language: 'typescript',
    source: `import { definePlugin } from '@isomesh/sdk';
export default definePlugin({ onRequest(req, ctx) { req.headers.set('x-secret-len', String(ctx.secrets.get('apikey')?.length ?? -1)); } });`,
  });
  assert.equal(pub.status, 201, JSON.stringify(pub.body));
  await first.api('PUT', '/v1/tenants/keep/plugins/sec/active', { version: pub.body.version });
  assert.equal((await first.api('PUT', '/v1/tenants/keep/chain', [{ plugin: 'sec' }])).status, 200);
  const before = await request(port, '/');
  assert.equal(echoed(before).headers['x-secret-len'], '6');

  assert.equal(await first.stop(), 0, 'SIGTERM drains and exits 0');

  const second = await startDaemon({ stateDir: first.stateDir, token: first.token });
  t.after(() => second.stop());
  const tenant = await second.api('GET', '/v1/tenants/keep');
  assert.equal(tenant.status, 200);
  assert.equal(tenant.body.listenerPort, port);
  assert.deepEqual([tenant.body.pathNormalization, tenant.body.accessLog], ['base', { enabled: true, sample: 0.5 }]);
  assert.deepEqual((await second.api('GET', '/v1/tenants/keep/ratelimits/all')).body, { name: 'all', ...limit, shadow: false });
  const node = (await second.api('GET', '/v1/node')).body;
  assert.equal(node.workers, 2, 'the test daemons run ISOMESH_WORKERS=2');
  assert.deepEqual(node.workerStatus.map((w: { state: string }) => w.state), ['running', 'running']);
  assert.deepEqual(node.dataplane, { mode: 'builtin' }, 'the daemon reports the built-in data plane');
  const quota = await second.api('GET', '/v1/tenants/keep/quota');
  assert.equal(quota.body.requestsPerSecond, 500);
  const own = await second.api('GET', '/v1/tenants/keep', undefined, tok.body.token);
  assert.equal(own.status, 200, 'tenant token still valid');
  const plugin = await second.api('GET', '/v1/tenants/keep/plugins/sec');
  assert.equal(plugin.status, 200);
  assert.equal((await second.api('GET', '/v1/tenants/keep/chain')).body[0].plugin, 'sec');
  const after = await request(port, '/');
  assert.equal(after.status, 200);
  assert.equal(echoed(after).headers['x-secret-len'], '6', 'plugin, activation, chain and secret survived');
});
