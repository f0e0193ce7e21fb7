// GET /v1/node (admin) and the OpenAPI document of the v1 additions.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { buildAdminServer } from './index.ts';
import type { NodeInfo } from './index.ts';
import { startAdmin } from './testing.ts';

test('GET /v1/node answers what the daemon reports, to the admin only; fields the provider adds pass through', async (t) => {
  let info: NodeInfo = { workers: 1, dataplane: { mode: 'builtin' } };
  const f = await startAdmin({ node: () => info });
  t.after(() => f.close());
  await f.call('PUT', '/v1/tenants/a', {});
  const token = (await f.call('POST', '/v1/tenants/a/tokens')).json.token as string;
  assert.deepEqual((await f.call('GET', '/v1/node')).json, { workers: 1, dataplane: { mode: 'builtin' } });
  info = {
    workers: 4,
    dataplane: { mode: 'envoy', envoy: { state: 'restarting', restarts: 2, lastExit: { code: null, signal: 'SIGSEGV', at: '2026-12-01T10:00:00.000Z' } } },
  };
  assert.deepEqual((await f.call('GET', '/v1/node')).json, info, 'read at request time');
  const grown = { workers: 2, cpus: 8, dataplane: { mode: 'envoy', envoy: { state: 'running', pid: 4242, restarts: 0, adminPort: 7702 } } };
  info = grown as NodeInfo;
  assert.deepEqual((await f.call('GET', '/v1/node')).json, grown);
  const r = await f.call('GET', '/v1/node', undefined, token);
  assert.deepEqual([r.status, r.json.error.code], [403, 'ISOMESH_ERR_AUTH_FORBIDDEN']);
});

test('an admin server built without a node provider has no /v1/node', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  const app = await buildAdminServer({
    store: f.store, host: f.host, proxy: f.proxy, registry: new Registry(), logger: pino({ level: 'silent' }),
    adminToken: 'another-admin-token-0123456789', listenerPorts: { min: 17000, max: 17999 }, ready: () => true,
  });
  t.after(() => app.close());
  const r = await app.inject({ method: 'GET', url: '/v1/node', headers: { authorization: 'Bearer another-admin-token-0123456789' } });
  assert.deepEqual([r.statusCode, JSON.parse(r.body).error.code], [404, 'ISOMESH_ERR_API_NOT_FOUND']);
});

test('/openapi.json documents the new routes and fields', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  const doc = (await f.call('GET', '/openapi.json', undefined, null)).json;
  const body = (path: string, method: string) => doc.paths[path][method].requestBody.content['application/json'].schema;
  const ok = (path: string, method: string, status = '200') => doc.paths[path][method].responses[status].content['application/json'].schema;

  assert.ok(doc.paths['/v1/tenants/{tenant}/ratelimits'].get, 'list rate limits');
  for (const m of ['get', 'put', 'delete']) assert.ok(doc.paths['/v1/tenants/{tenant}/ratelimits/{name}'][m], `${m} a rate limit`);
  assert.ok(doc.paths['/v1/node'].get);

  const tenant = body('/v1/tenants/{tenant}', 'put');
  assert.deepEqual(tenant.properties.pathNormalization.enum, ['base', 'merge_slashes', 'none']);
  assert.deepEqual(Object.keys(tenant.properties.accessLog.properties), ['enabled', 'sample']);
  assert.equal(tenant.properties.accessLog.properties.sample.maximum, 1);
  assert.ok(ok('/v1/tenants/{tenant}', 'get', '2XX').properties.accessLog, 'tenant responses show the settings');
  assert.ok(ok('/v1/tenants', 'get').properties.tenants.items.properties.pathNormalization);

  const svc = body('/v1/tenants/{tenant}/services/{name}', 'put');
  assert.deepEqual(svc.properties.protocol.enum, ['http1', 'http2', 'grpc']);
  assert.equal(svc.properties.hashOn.oneOf.length, 3);
  assert.match(svc.properties.hashOn.description, /ring_hash/);
  const status = ok('/v1/tenants/{tenant}/services/{name}', 'get').properties.endpointStatus.items.properties;
  assert.deepEqual(Object.keys(status), ['address', 'port', 'ejected', 'ejectedUntil', 'active', 'consecutive5xx']);

  const route = body('/v1/tenants/{tenant}/routes/{name}', 'put');
  assert.deepEqual([route.properties.upgrades.maxItems, route.properties.upgrades.uniqueItems], [8, true]);

  const rl = body('/v1/tenants/{tenant}/ratelimits/{name}', 'put');
  assert.deepEqual(rl.required, ['descriptors', 'limit']);
  assert.equal(rl.properties.descriptors.maxItems, 8);
  assert.deepEqual(rl.properties.limit.properties.unit.enum, ['second', 'minute', 'hour', 'day']);
  assert.equal(rl.properties.limit.properties.requestsPerUnit.maximum, 1e9);
  assert.equal(rl.properties.shadow.type, 'boolean');
  assert.ok(ok('/v1/tenants/{tenant}/ratelimits', 'get').properties.rateLimits);

  const node = ok('/v1/node', 'get');
  assert.deepEqual(node.properties.dataplane.properties.mode.enum, ['builtin', 'envoy']);
  assert.deepEqual(node.properties.dataplane.properties.envoy.properties.state.enum, ['running', 'restarting', 'absent', 'stopped']);
});
