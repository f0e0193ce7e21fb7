// Rate limits through the API: CRUD, normalisation, who may manage them, and how they hold on to routes.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startAdmin } from './testing.ts';

const LIMIT = { requestsPerUnit: 100, unit: 'minute' };

async function fixture(t: { after: (fn: () => Promise<void>) => void }) {
  const f = await startAdmin();
  t.after(() => f.close());
  for (const name of ['a', 'b']) {
    assert.equal((await f.call('PUT', `/v1/tenants/${name}`, {})).status, 201);
    await f.call('PUT', `/v1/tenants/${name}/services/web`, { endpoints: [{ address: '127.0.0.1', port: 8080 }] });
    await f.call('PUT', `/v1/tenants/${name}/routes/login`, { match: { path: '/login' }, to: { service: 'web' } });
  }
  const tokenA = (await f.call('POST', '/v1/tenants/a/tokens')).json.token as string;
  return { f, tokenA };
}

test('PUT creates (201) then replaces (200) and answers with the stored, normalised object; GET, list, DELETE', async (t) => {
  const { f, tokenA } = await fixture(t);
  const changes: string[] = [];
  f.store.onChange((tenant) => changes.push(tenant));
  const g0 = f.store.tenantConfig('a')!.generation;

  let r = await f.call('PUT', '/v1/tenants/a/ratelimits/per-user', {
    descriptors: [{ key: 'header:X-User' }, { key: 'route', value: 'login' }],
    limit: LIMIT,
  }, tokenA);
  const stored = { name: 'per-user', descriptors: [{ key: 'header:x-user' }, { key: 'route', value: 'login' }], limit: LIMIT, shadow: false };
  assert.deepEqual([r.status, r.json], [201, stored], 'header name lower-cased, shadow defaults to false');
  assert.deepEqual((await f.call('GET', '/v1/tenants/a/ratelimits/per-user', undefined, tokenA)).json, stored);

  r = await f.call('PUT', '/v1/tenants/a/ratelimits/per-user', { descriptors: [{ key: 'header:x-user' }], limit: { requestsPerUnit: 5, unit: 'second' }, shadow: true }, tokenA);
  assert.deepEqual([r.status, r.json.shadow, r.json.limit], [200, true, { requestsPerUnit: 5, unit: 'second' }]);
  await f.call('PUT', '/v1/tenants/a/ratelimits/by-ip', { descriptors: [{ key: 'remote_address' }, { key: 'method', value: 'POST' }, { key: 'path', value: '/login' }], limit: { requestsPerUnit: 1e9, unit: 'day' } }, tokenA);

  r = await f.call('GET', '/v1/tenants/a/ratelimits', undefined, tokenA);
  assert.deepEqual(r.json.rateLimits.map((x: { name: string }) => x.name), ['by-ip', 'per-user']);
  assert.deepEqual((await f.call('GET', '/v1/tenants/b/ratelimits')).json, { rateLimits: [] }, "b's list is its own");

  // the data plane's snapshot carries them, and every change is a new generation
  const cfg = f.store.tenantConfig('a')!;
  assert.deepEqual(cfg.rateLimits.map((x) => [x.name, x.shadow]), [['by-ip', false], ['per-user', true]]);
  assert.ok(cfg.generation > g0);
  assert.deepEqual(changes, ['a', 'a', 'a']);

  assert.equal((await f.call('DELETE', '/v1/tenants/a/ratelimits/per-user', undefined, tokenA)).status, 204);
  r = await f.call('GET', '/v1/tenants/a/ratelimits/per-user', undefined, tokenA);
  assert.deepEqual([r.status, r.json.error.code], [404, 'ISOMESH_ERR_RATELIMIT_NOT_FOUND']);
  assert.deepEqual(f.store.tenantConfig('a')!.rateLimits.map((x) => x.name), ['by-ip']);
  assert.ok(f.store.tenantConfig('a')!.generation > cfg.generation);
});

test("a tenant token manages its own rate limits only; another tenant's answer is the same whether or not they exist", async (t) => {
  const { f, tokenA } = await fixture(t);
  const body = { descriptors: [{ key: 'path' }], limit: LIMIT };
  assert.equal((await f.call('PUT', '/v1/tenants/b/ratelimits/exists', body)).status, 201, 'the admin token reaches any tenant');
  assert.equal((await f.call('PUT', '/v1/tenants/a/ratelimits/mine', body, tokenA)).status, 201);
  const before = f.store.dump();
  for (const [method, path, payload] of [
    ['GET', '/v1/tenants/b/ratelimits/exists'],
    ['PUT', '/v1/tenants/b/ratelimits/exists', body],
    ['DELETE', '/v1/tenants/b/ratelimits/exists'],
    ['GET', '/v1/tenants/b/ratelimits'],
  ] as const) {
    const onExisting = await f.call(method, path, payload, tokenA);
    const onMissingObject = await f.call(method, path.replace('exists', 'nothing'), payload, tokenA);
    const onMissingTenant = await f.call(method, path.replace('/b/', '/ghost/'), payload, tokenA);
    assert.deepEqual([onExisting.status, onExisting.json.error.code], [403, 'ISOMESH_ERR_AUTH_FORBIDDEN'], `${method} ${path}`);
    assert.deepEqual(onMissingObject.json, onExisting.json, `${method} ${path}: a missing rate limit looks the same`);
    assert.deepEqual(onMissingTenant.json, onExisting.json, `${method} ${path}: a missing tenant looks the same`);
  }
  assert.deepEqual(f.store.dump(), before, 'nothing changed');
  assert.equal((await f.call('GET', '/v1/tenants/a/ratelimits/mine', undefined, tokenA)).status, 200);
  assert.equal((await f.call('DELETE', '/v1/tenants/a/ratelimits/mine', undefined, tokenA)).status, 204);
});

test('a route named by a rate limit cannot be deleted until the rate limit lets go; the tenant takes its rate limits along', async (t) => {
  const { f } = await fixture(t);
  await f.call('PUT', '/v1/tenants/a/ratelimits/login-limit', { descriptors: [{ key: 'route', value: 'login' }], limit: LIMIT });
  let r = await f.call('DELETE', '/v1/tenants/a/routes/login');
  assert.deepEqual([r.status, r.json.error.code], [409, 'ISOMESH_ERR_ROUTE_IN_USE']);
  assert.match(r.json.error.message, /rate limit\(s\) login-limit/);
  // "route" without a value counts per route and names none: it holds nothing
  await f.call('PUT', '/v1/tenants/a/ratelimits/login-limit', { descriptors: [{ key: 'route' }], limit: LIMIT });
  assert.equal((await f.call('DELETE', '/v1/tenants/a/routes/login')).status, 204);
  // b's identically named route is b's own
  assert.equal((await f.call('PUT', '/v1/tenants/b/ratelimits/x', { descriptors: [{ key: 'route', value: 'login' }], limit: LIMIT })).status, 201);
  assert.equal((await f.call('DELETE', '/v1/tenants/b')).status, 204);
  assert.deepEqual((f.store.dump().ratelimits as Array<{ tenant: string }>).map((row) => row.tenant), ['a']);
});
