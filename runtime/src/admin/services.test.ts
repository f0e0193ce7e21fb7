// Service protocol and hashOn, route upgrades, and the live endpointStatus on GET one service.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startAdmin } from './testing.ts';

const ep = [{ address: '127.0.0.1', port: 8080 }, { address: '::1', port: 8081 }];

test('protocol is always stored (default http1); hashOn only with ring_hash (default sourceIp); GET returns both', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  await f.call('PUT', '/v1/tenants/acme', {});
  let r = await f.call('PUT', '/v1/tenants/acme/services/plain', { endpoints: ep });
  assert.deepEqual([r.status, r.json.protocol, 'hashOn' in r.json], [201, 'http1', false]);
  for (const protocol of ['http1', 'http2', 'grpc']) {
    r = await f.call('PUT', `/v1/tenants/acme/services/${protocol}`, { endpoints: ep, protocol });
    assert.deepEqual([r.status, r.json.protocol], [201, protocol]);
    assert.equal((await f.call('GET', `/v1/tenants/acme/services/${protocol}`)).json.protocol, protocol);
  }
  r = await f.call('PUT', '/v1/tenants/acme/services/ring', { endpoints: ep, lb: 'ring_hash' });
  assert.deepEqual(r.json.hashOn, 'sourceIp', 'the default is stored, so GET shows what the balancer hashes');
  r = await f.call('PUT', '/v1/tenants/acme/services/ring', { endpoints: ep, lb: 'ring_hash', hashOn: { header: 'X-Session-Id' } });
  assert.deepEqual([r.status, r.json.hashOn], [200, { header: 'x-session-id' }], 'header names are stored lower case');
  r = await f.call('PUT', '/v1/tenants/acme/services/ring', { endpoints: ep, lb: 'ring_hash', hashOn: { cookie: 'Session_ID' }, protocol: 'grpc' });
  assert.deepEqual([r.json.hashOn, r.json.protocol], [{ cookie: 'Session_ID' }, 'grpc'], 'cookie names are case-sensitive and kept as given');
  const got = (await f.call('GET', '/v1/tenants/acme/services/ring')).json;
  assert.deepEqual(got, {
    name: 'ring',
    endpoints: [{ address: '127.0.0.1', port: 8080, weight: 1 }, { address: '::1', port: 8081, weight: 1 }],
    lb: 'ring_hash',
    protocol: 'grpc',
    hashOn: { cookie: 'Session_ID' },
    connectTimeoutMs: 1000,
    timeoutMs: 15000,
  }, 'no endpointStatus when the proxy holds no state for the service');
  r = await f.call('PUT', '/v1/tenants/acme/services/ring', { endpoints: ep, lb: 'round_robin', hashOn: { cookie: 'Session_ID' } });
  assert.deepEqual([r.status, r.json.error.code], [400, 'ISOMESH_ERR_SERVICE_INVALID']);
  assert.match(r.json.error.message, /hashOn applies only to lb "ring_hash"/);
  assert.deepEqual(f.store.getService('acme', 'ring')!.hashOn, { cookie: 'Session_ID' }, 'the refused PUT changed nothing');
  const listed = (await f.call('GET', '/v1/tenants/acme/services')).json.services as Array<{ name: string; protocol: string }>;
  assert.ok(listed.every((s) => typeof s.protocol === 'string'), 'the list shows protocols too');
});

test('route upgrades: default ["websocket"], [] allowed, lower-cased, always stored', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  await f.call('PUT', '/v1/tenants/acme', {});
  await f.call('PUT', '/v1/tenants/acme/services/web', { endpoints: ep });
  let r = await f.call('PUT', '/v1/tenants/acme/routes/ws', { to: { service: 'web' } });
  assert.deepEqual([r.status, r.json.upgrades], [201, ['websocket']]);
  r = await f.call('PUT', '/v1/tenants/acme/routes/none', { to: { service: 'web' }, upgrades: [] });
  assert.deepEqual([r.status, r.json.upgrades], [201, []]);
  r = await f.call('PUT', '/v1/tenants/acme/routes/many', { to: { service: 'web' }, upgrades: ['WebSocket', 'h2c', 'CONNECT-UDP', 'a', 'b', 'c', 'd', 'e'] });
  assert.deepEqual([r.status, r.json.upgrades], [201, ['websocket', 'h2c', 'connect-udp', 'a', 'b', 'c', 'd', 'e']]);
  assert.deepEqual((await f.call('GET', '/v1/tenants/acme/routes/none')).json.upgrades, []);
  assert.deepEqual(f.store.tenantConfig('acme')!.routes.map((x) => [x.name, x.upgrades]), [
    ['many', ['websocket', 'h2c', 'connect-udp', 'a', 'b', 'c', 'd', 'e']],
    ['none', []],
    ['ws', ['websocket']],
  ]);
});

test('GET one service adds endpointStatus from the proxy; a tenant token sees its own', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  await f.call('PUT', '/v1/tenants/acme', {});
  await f.call('PUT', '/v1/tenants/acme/services/web', { endpoints: ep, circuitBreaker: { maxConnections: 10, maxPending: 10, consecutive5xx: 3, ejectionMs: 30000 } });
  const token = (await f.call('POST', '/v1/tenants/acme/tokens')).json.token as string;
  const until = new Date(Date.now() + 30_000).toISOString();
  const status = [
    { address: '127.0.0.1', port: 8080, ejected: true, ejectedUntil: until, active: 0, consecutive5xx: 0 },
    { address: '::1', port: 8081, ejected: false, active: 4, consecutive5xx: 2 },
  ];
  f.proxy.endpoints.set('acme/web', status);
  const r = await f.call('GET', '/v1/tenants/acme/services/web', undefined, token);
  assert.equal(r.status, 200);
  assert.deepEqual(r.json.endpointStatus, status);
  assert.equal(r.json.circuitBreaker.consecutive5xx, 3, 'the stored service is there as before');
  assert.equal(r.json.name, 'web');
  // the list stays configuration only
  assert.equal((await f.call('GET', '/v1/tenants/acme/services', undefined, token)).json.services[0].endpointStatus, undefined);
});
