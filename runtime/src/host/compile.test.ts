import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { IsomeshError } from '../errors.ts';
import { newHost } from './fixtures.ts';

const { host } = newHost();
test.after(() => host.close());

async function compileError(source: string, language: 'typescript' | 'javascript' | 'bundle' = 'typescript', maxBundleBytes = 1 << 20) {
  try {
    await host.compile({ source, language, maxBundleBytes });
  } catch (e) {
    assert.ok(e instanceof IsomeshError, `expected IsomeshError, got ${String(e)}`);
    return e;
  }
  assert.fail('compile did not fail');
}

test('compiles TypeScript importing the SDK: digest, size and hooks', async () => {
  const source = `import { definePlugin } from '@isomesh/sdk';
    interface Cfg { header: string }
    export default definePlugin<Cfg>({ onRequest(req, ctx) { req.headers.set(ctx.config.header, '1'); } });`;
  const c = await host.compile({ source, language: 'typescript', maxBundleBytes: 1 << 20 });
  assert.deepEqual(c.hooks, ['onRequest']);
  assert.equal(c.size, Buffer.byteLength(c.code));
  assert.equal(c.digest, `sha256:${createHash('sha256').update(c.code).digest('hex')}`);
  assert.match(c.code, /require\("@isomesh\/sdk"\)/);
});

test('a plain object default export with both hooks is a plugin', async () => {
  const c = await host.compile({ source: 'export default { onRequest() {}, onResponse() {} }', language: 'javascript', maxBundleBytes: 1 << 20 });
  assert.deepEqual(c.hooks, ['onRequest', 'onResponse']);
});

test('syntax error → ISOMESH_ERR_PLUGIN_COMPILE with line and column', async () => {
  const e = await compileError('export default {\n  onRequest() {\n    const x = ;\n  },\n};\n');
  assert.equal(e.code, 'ISOMESH_ERR_PLUGIN_COMPILE');
  assert.equal(e.status, 400);
  const [d] = e.details as Array<{ line: number; column: number; message: string }>;
  assert.equal(d?.line, 3);
  assert.equal(d?.column, 14);
  assert.match(d?.message ?? '', /Unexpected/);
});

test('importing anything but @isomesh/sdk → ISOMESH_ERR_PLUGIN_BAD_IMPORT naming the import and where', async () => {
  const e = await compileError(`import { definePlugin } from '@isomesh/sdk';\nimport { readFileSync } from 'node:fs';\nexport default definePlugin({ onRequest() { readFileSync('/etc/passwd'); } });`);
  assert.equal(e.code, 'ISOMESH_ERR_PLUGIN_BAD_IMPORT');
  const [d] = e.details as Array<{ line: number; column: number; import: string }>;
  assert.equal(d?.import, 'node:fs');
  assert.equal(d?.line, 2);
  assert.equal(d?.column, 29);
  const rel = await compileError(`import x from './helper';\nexport default { onRequest() { x(); } };`);
  assert.equal(rel.code, 'ISOMESH_ERR_PLUGIN_BAD_IMPORT');
});

test('no plugin exported → ISOMESH_ERR_PLUGIN_NO_HOOKS', async () => {
  assert.equal((await compileError('export default {}')).code, 'ISOMESH_ERR_PLUGIN_NO_HOOKS');
  assert.equal((await compileError('export const x = 1;')).code, 'ISOMESH_ERR_PLUGIN_NO_HOOKS');
  assert.equal((await compileError('export default { onRequest: 5 }')).code, 'ISOMESH_ERR_PLUGIN_NO_HOOKS');
});

test('over maxBundleBytes → ISOMESH_ERR_PLUGIN_TOO_LARGE (413)', async () => {
  const source = `const big = ${JSON.stringify('x'.repeat(5000))};\nexport default { onRequest(req) { req.headers.set('x', big.slice(0, 1)); } };`;
  const e = await compileError(source, 'typescript', 4096);
  assert.equal(e.code, 'ISOMESH_ERR_PLUGIN_TOO_LARGE');
  assert.equal(e.status, 413);
  // The same source fits a larger limit.
  await host.compile({ source, language: 'typescript', maxBundleBytes: 8192 });
});

test('throwing at load → ISOMESH_ERR_PLUGIN_LOAD with a location', async () => {
  const e = await compileError("const a = 1;\nthrow new Error('boom at load');\nexport default { onRequest() {} };");
  assert.equal(e.code, 'ISOMESH_ERR_PLUGIN_LOAD');
  assert.match(e.message, /boom at load/);
  const [d] = e.details as Array<{ line: number; column: number }>;
  assert.ok((d?.line ?? 0) > 0);
});

test('a plugin that loops at load is stopped (PROBE_TIMEOUT_MS) → ISOMESH_ERR_PLUGIN_LOAD', async () => {
  const e = await compileError('for (;;) {}\nexport default { onRequest() {} };');
  assert.equal(e.code, 'ISOMESH_ERR_PLUGIN_LOAD');
  assert.match(e.message, /did not finish loading within \d+ ms/, 'stopped by the trial load timeout, not by anything else');
});

test('language bundle is loaded as is; its require() of anything but the SDK is refused', async () => {
  const bundle = `"use strict";\nconst sdk = require("@isomesh/sdk");\nmodule.exports = { default: sdk.definePlugin({ onResponse(res) { res.status = 299; } }) };\n`;
  const c = await host.compile({ source: bundle, language: 'bundle', maxBundleBytes: 1 << 20 });
  assert.equal(c.code, bundle);
  assert.deepEqual(c.hooks, ['onResponse']);
  const bad = await compileError('module.exports = { onRequest() {} };\nrequire("child_process");', 'bundle');
  assert.equal(bad.code, 'ISOMESH_ERR_PLUGIN_BAD_IMPORT');
  assert.equal((bad.details as Array<{ import: string }>)[0]?.import, 'child_process');
  const syntax = await compileError('module.exports = {\n  onRequest() { let = ; }\n};', 'bundle');
  assert.equal(syntax.code, 'ISOMESH_ERR_PLUGIN_COMPILE');
  assert.equal((syntax.details as Array<{ line: number }>)[0]?.line, 2);
});
