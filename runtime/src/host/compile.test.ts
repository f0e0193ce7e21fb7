import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import { IsomeshError } from '../errors.ts';
import { newHost } from './fixtures.ts';
import { compilePlugin } from './compiler.ts';
import { esbuildServiceKept, withEsbuildSync } from './esbuild.ts';

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

/** PIDs of this process's children that are esbuild service processes. */
function esbuildChildren(): number[] {
  const children = fs.readFileSync(`/proc/${process.pid}/task/${process.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
  return children.filter((pid) => {
    try {
      return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('--service=');
    } catch {
      return false; // exited meanwhile
    }
  });
}

test('esbuild\'s service process is stopped once no build ran for the idle time, and the next build starts it again', async () => {
  const source = `export default { onRequest() {} };`;
  const input = { source, language: 'typescript' as const, maxBundleBytes: 1 << 20 };
  const first = await compilePlugin(input, () => ({ hooks: ['onRequest'] }), 300);
  assert.equal(first.hooks.join(), 'onRequest');
  assert.equal(esbuildChildren().length, 1, 'one esbuild service after a build');
  assert.equal(esbuildServiceKept(), true);
  const gone = Date.now() + 5000;
  while (esbuildChildren().length > 0 && Date.now() < gone) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(esbuildChildren(), [], 'the service exited after the idle time');
  assert.equal(esbuildServiceKept(), false);
  const again = await compilePlugin(input, () => ({ hooks: ['onRequest'] }), 300);
  assert.equal(again.digest, first.digest, 'the restarted service builds the same bundle');
  assert.equal(esbuildChildren().length, 1);
});

test('esbuild\'s synchronous service (buildSync, used for the guest runtime) is stopped when idle too', async () => {
  const out = withEsbuildSync((e) => e.buildSync({ stdin: { contents: 'export const x: number = 1;', loader: 'ts' }, write: false, format: 'cjs', logLevel: 'silent' }), 300);
  assert.match(out.outputFiles[0]!.text, /x = 1/);
  assert.ok(esbuildChildren().length >= 1, 'buildSync runs a service process');
  const gone = Date.now() + 5000;
  while (esbuildChildren().length > 0 && Date.now() < gone) await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(esbuildChildren(), [], 'the service exited after the idle time');
  assert.equal(esbuildServiceKept(), false);
});
