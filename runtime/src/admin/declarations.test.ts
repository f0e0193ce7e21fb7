// What plugin versions declare, through the API with the real plugin host: recorded at publish,
// shown by the version GET and carried in TenantConfig; configSchema enforced at PUT …/chain and at
// PUT …/active (a request never sees a config its version rejects); activation without a canary ends
// a running canary.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { PluginHost } from '../host/index.ts';
import { startAdmin } from './testing.ts';

const strict = (type: string) => `import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  body: { request: 2048 },
  configSchema: { type: 'object', properties: { header: { type: '${type}' }, items: { type: 'array', items: { type: 'object', required: ['name'] } } }, additionalProperties: false },
  onRequest() {},
});`;

test('declarations are recorded at publish; configSchema guards the chain and activation', async (t) => {
  const host = new PluginHost({ logger: pino({ level: 'silent' }), registry: new Registry(), mode: 'inline' });
  const f = await startAdmin({ host });
  t.after(async () => {
    await f.close();
    await host.close();
  });
  assert.equal((await f.call('PUT', '/v1/tenants/acme', {})).status, 201);
  const publish = (source: string) => f.call('POST', '/v1/tenants/acme/plugins/tag/versions', { source });

  let r = await publish(strict('string'));
  assert.equal(r.status, 201, r.text);
  const schema = { type: 'object', properties: { header: { type: 'string' }, items: { type: 'array', items: { type: 'object', required: ['name'] } } }, additionalProperties: false };
  const v1meta = { hooks: ['onRequest'], body: { request: 2048 }, configSchema: schema };
  assert.deepEqual(r.json.meta, v1meta);
  r = await f.call('GET', '/v1/tenants/acme/plugins/tag/versions/1');
  assert.deepEqual(r.json.meta, v1meta, 'the version GET shows the declarations');
  r = await f.call('GET', '/v1/tenants/acme/plugins/tag/versions');
  assert.deepEqual(r.json.versions[0].meta, v1meta);

  assert.equal((await f.call('PUT', '/v1/tenants/acme/plugins/tag/active', { version: 1 })).status, 200);
  // Bad configs: 400 with the failing path; nothing stored.
  const bad: Array<[unknown, RegExp]> = [
    [{ header: 7 }, /^chain\[0\]\.config\.header must be string \(configSchema of plugin "tag" version 1\)$/],
    [{ items: [{ name: 'a' }, {}] }, /^chain\[0\]\.config\.items\[1\]\.name is required/],
    [{ hedaer: 'x' }, /^chain\[0\]\.config\.hedaer is not allowed/],
  ];
  for (const [config, message] of bad) {
    r = await f.call('PUT', '/v1/tenants/acme/chain', [{ plugin: 'tag', config }]);
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.code, 'ISOMESH_ERR_CHAIN_BAD_CONFIG');
    assert.match(r.json.error.message, message);
  }
  assert.deepEqual(f.store.getChain('acme'), [], 'refused chains change nothing');
  r = await f.call('PUT', '/v1/tenants/acme/chain', [{ plugin: 'tag', config: { header: 'x-tag' } }]);
  assert.equal(r.status, 200, r.text);

  // TenantConfig carries the declarations to the data plane.
  assert.deepEqual(f.store.tenantConfig('acme')?.plugins.tag?.active?.meta, v1meta);

  // v2 wants header as an integer: activating it (or canarying it) would hand the chain's config to
  // a version that rejects it.
  r = await publish(strict('integer'));
  assert.equal(r.json.version, 2);
  for (const body of [{ version: 2 }, { version: 1, canary: { version: 2, percent: 10 } }]) {
    r = await f.call('PUT', '/v1/tenants/acme/plugins/tag/active', body);
    assert.equal(r.status, 400, r.text);
    assert.equal(r.json.error.code, 'ISOMESH_ERR_CHAIN_BAD_CONFIG');
    assert.match(r.json.error.message, /^chain\[0\]\.config\.header must be integer \(configSchema of plugin "tag" version 2\)$/);
  }
  assert.deepEqual(f.store.getPlugin('acme', 'tag')?.active, { version: 1 }, 'refused activations change nothing');

  // A version without a schema accepts any object (the behaviour before schemas).
  r = await publish("export default { onRequest() {} };");
  assert.equal(r.json.version, 3);
  assert.deepEqual(r.json.meta, { hooks: ['onRequest'] });
  r = await f.call('PUT', '/v1/tenants/acme/plugins/tag/active', { version: 1, canary: { version: 3, percent: 50 } });
  assert.equal(r.status, 200, r.text);
  assert.deepEqual(r.json, { active: 1, canary: { version: 3, percent: 50 } });
  assert.deepEqual(f.store.tenantConfig('acme')?.plugins.tag?.canary?.meta, { hooks: ['onRequest'] });
  // While the canary runs, the chain's config must fit both versions: v1's schema still applies.
  r = await f.call('PUT', '/v1/tenants/acme/chain', [{ plugin: 'tag', config: { anything: true } }]);
  assert.equal(r.json.error?.code, 'ISOMESH_ERR_CHAIN_BAD_CONFIG', r.text);

  // Activation with no canary ends the running canary.
  r = await f.call('PUT', '/v1/tenants/acme/plugins/tag/active', { version: 3 });
  assert.deepEqual([r.status, r.json], [200, { active: 3, canary: null }]);
  assert.deepEqual(f.store.getPlugin('acme', 'tag')?.active, { version: 3 }, 'the store has no canary left');
  assert.equal(f.store.tenantConfig('acme')?.plugins.tag?.canary, undefined);
  r = await f.call('GET', '/v1/tenants/acme/plugins/tag');
  assert.deepEqual([r.json.active, r.json.canary], [3, null]);
  r = await f.call('PUT', '/v1/tenants/acme/chain', [{ plugin: 'tag', config: { anything: true } }]);
  assert.equal(r.status, 200, 'v3 has no schema: any object');
});
