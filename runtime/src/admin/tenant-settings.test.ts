// Tenant settings (pathNormalization, accessLog) through PUT /v1/tenants/{t}: defaults, partial
// updates, and that every tenant response shows them.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startAdmin } from './testing.ts';

const DEFAULTS = { pathNormalization: 'base', accessLog: { enabled: false, sample: 1 } };
const settingsOf = (v: { pathNormalization: unknown; accessLog: unknown }) => ({ pathNormalization: v.pathNormalization, accessLog: v.accessLog });

test('a new tenant gets the defaults, or the settings it was created with', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  let r = await f.call('PUT', '/v1/tenants/plain', {});
  assert.deepEqual([r.status, settingsOf(r.json)], [201, DEFAULTS]);
  r = await f.call('PUT', '/v1/tenants/empty', null);
  assert.deepEqual([r.status, settingsOf(r.json)], [201, DEFAULTS], 'a null body is an empty one');
  r = await f.call('PUT', '/v1/tenants/tuned', { listenerPort: 17010, pathNormalization: 'merge_slashes', accessLog: { enabled: true, sample: 0.1 } });
  assert.deepEqual([r.status, r.json.listenerPort, settingsOf(r.json)], [201, 17010, { pathNormalization: 'merge_slashes', accessLog: { enabled: true, sample: 0.1 } }]);
  r = await f.call('PUT', '/v1/tenants/half', { accessLog: { enabled: true } });
  assert.deepEqual(settingsOf(r.json), { pathNormalization: 'base', accessLog: { enabled: true, sample: 1 } }, 'a partial accessLog on create fills in the default sample');
  assert.deepEqual(f.store.tenantConfig('tuned')!.settings, { pathNormalization: 'merge_slashes', accessLog: { enabled: true, sample: 0.1 } });
});

test('fields left out keep their value: a PUT with only listenerPort, or a partial accessLog', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  await f.call('PUT', '/v1/tenants/acme', { pathNormalization: 'none', accessLog: { enabled: true, sample: 0.5 } });
  const changes: string[] = [];
  f.store.onChange((tenant) => changes.push(tenant));
  const g0 = f.store.getTenant('acme')!.generation;

  let r = await f.call('PUT', '/v1/tenants/acme', { listenerPort: 17020 });
  assert.deepEqual([r.status, r.json.listenerPort, f.proxy.bound.get('acme')], [200, 17020, 17020]);
  assert.deepEqual(settingsOf(r.json), { pathNormalization: 'none', accessLog: { enabled: true, sample: 0.5 } }, 'a port move does not reset settings');
  r = await f.call('PUT', '/v1/tenants/acme', { accessLog: { enabled: false } });
  assert.deepEqual([r.status, r.json.listenerPort, settingsOf(r.json)], [200, 17020, { pathNormalization: 'none', accessLog: { enabled: false, sample: 0.5 } }], 'sample kept');
  r = await f.call('PUT', '/v1/tenants/acme', { accessLog: { sample: 0 } });
  assert.deepEqual(r.json.accessLog, { enabled: false, sample: 0 }, 'enabled kept; 0 is a valid sample');
  r = await f.call('PUT', '/v1/tenants/acme', { pathNormalization: 'base', accessLog: {} });
  assert.deepEqual(settingsOf(r.json), { pathNormalization: 'base', accessLog: { enabled: false, sample: 0 } });
  assert.equal(changes.length, 4, 'each change is committed and announced for a new snapshot');
  const g1 = r.json.generation as number;
  assert.ok(g1 > g0);

  r = await f.call('PUT', '/v1/tenants/acme', { pathNormalization: 'base' });
  assert.deepEqual([r.status, r.json.generation, changes.length], [200, g1, 4], 'a PUT that changes nothing makes no new snapshot');
  r = await f.call('PUT', '/v1/tenants/acme', {});
  assert.deepEqual(settingsOf(r.json), { pathNormalization: 'base', accessLog: { enabled: false, sample: 0 } });
  assert.deepEqual(f.store.tenantConfig('acme')!.settings, { pathNormalization: 'base', accessLog: { enabled: false, sample: 0 } });
});

test('GET one (admin and own tenant token) and GET list show the settings', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  await f.call('PUT', '/v1/tenants/a', { accessLog: { enabled: true, sample: 0.25 } });
  await f.call('PUT', '/v1/tenants/b', { pathNormalization: 'merge_slashes' });
  const token = (await f.call('POST', '/v1/tenants/a/tokens')).json.token as string;
  const own = await f.call('GET', '/v1/tenants/a', undefined, token);
  assert.deepEqual([own.status, settingsOf(own.json)], [200, { pathNormalization: 'base', accessLog: { enabled: true, sample: 0.25 } }]);
  assert.deepEqual(settingsOf((await f.call('GET', '/v1/tenants/a')).json), settingsOf(own.json));
  const list = (await f.call('GET', '/v1/tenants')).json.tenants as Array<{ name: string; pathNormalization: unknown; accessLog: unknown }>;
  assert.deepEqual(list.map((x) => [x.name, settingsOf(x)]), [
    ['a', { pathNormalization: 'base', accessLog: { enabled: true, sample: 0.25 } }],
    ['b', { pathNormalization: 'merge_slashes', accessLog: { enabled: false, sample: 1 } }],
  ]);
  // the rest of the tenant view is still there
  assert.deepEqual(Object.keys(own.json).sort(), ['accessLog', 'createdAt', 'generation', 'listenerPort', 'name', 'pathNormalization', 'quota', 'updatedAt']);
  assert.equal(own.json.quota.maxPlugins, 16);
});

test('a bad setting on a new tenant binds no listener; on a port move it keeps the old port', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  let r = await f.call('PUT', '/v1/tenants/new', { accessLog: { sample: 7 } });
  assert.deepEqual([r.status, r.json.error.code], [400, 'ISOMESH_ERR_TENANT_INVALID']);
  assert.match(r.json.error.message, /accessLog\/sample/);
  assert.deepEqual([f.store.getTenant('new'), f.proxy.bound.has('new')], [undefined, false]);
  await f.call('PUT', '/v1/tenants/acme', { listenerPort: 17001 });
  r = await f.call('PUT', '/v1/tenants/acme', { listenerPort: 17002, pathNormalization: 'loose' });
  assert.deepEqual([r.status, r.json.error.code], [400, 'ISOMESH_ERR_TENANT_INVALID']);
  assert.match(r.json.error.message, /pathNormalization/);
  assert.deepEqual([f.store.getTenant('acme')!.listenerPort, f.proxy.bound.get('acme')], [17001, 17001]);
});
