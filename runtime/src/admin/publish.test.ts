// Publishing through the real plugin host: TypeScript compiles, errors come back as 4xx with
// diagnostics, and the stored code is what the host produced.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { Registry } from 'prom-client';
import { PluginHost } from '../host/index.ts';
import { startAdmin } from './testing.ts';

test('publish with the real PluginHost', async (t) => {
  const host = new PluginHost({ logger: pino({ level: 'silent' }), registry: new Registry() });
  const f = await startAdmin({ host });
  t.after(async () => {
    await f.close();
    await host.close();
  });
  assert.equal((await f.call('PUT', '/v1/tenants/acme', {})).status, 201);
  const source = [
    "import { definePlugin } from '@isomesh/sdk';",
    'interface Cfg { header: string }',
    'export default definePlugin<Cfg>({',
    '  onRequest(req, ctx) { req.headers.set(ctx.config.header, ctx.tenant); },',
    '});',
  ].join('\n');
  let r = await f.call('POST', '/v1/tenants/acme/plugins/tag/versions', { source, language: 'typescript' });
  assert.equal(r.status, 201, r.text);
  const stored = f.store.getPluginVersion('acme', 'tag', r.json.version)!;
  assert.equal(stored.digest, r.json.digest);
  assert.equal(stored.source, source);
  assert.ok(!stored.code.includes('interface Cfg'), 'types were stripped');

  r = await f.call('POST', '/v1/tenants/acme/plugins/tag/versions', { source: 'export default {{{', language: 'javascript' });
  assert.equal(r.status, 400, r.text);
  assert.match(r.json.error.code, /^ISOMESH_ERR_PLUGIN_(COMPILE|LOAD)$/);

  r = await f.call('POST', '/v1/tenants/acme/plugins/tag/versions', { source: "import fs from 'node:fs';\nexport default { onRequest() { fs.readFileSync('/etc/passwd'); } };" });
  assert.equal(r.status, 400, r.text);
  assert.equal(r.json.error.code, 'ISOMESH_ERR_PLUGIN_BAD_IMPORT');

  r = await f.call('POST', '/v1/tenants/acme/plugins/tag/versions', { source: 'export default { nothing: 1 };' });
  assert.deepEqual([r.status, r.json.error.code], [400, 'ISOMESH_ERR_PLUGIN_NO_HOOKS']);
  assert.deepEqual(f.store.listPluginVersions('acme', 'tag')!.map((v) => v.version), [1], 'failed publishes store nothing');
});
