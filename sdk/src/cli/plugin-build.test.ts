import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import vm from 'node:vm';
import { runCli } from './fake-management-server.ts';

const SDK_DIR = path.resolve(import.meta.dirname, '..', '..');

function tmpDir(t: TestContext): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-build-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Evaluate a CommonJS bundle the way a host would: module/exports plus a require that only knows the sdk. */
function evaluateBundle(code: string) {
  const marked: unknown[] = [];
  const sdk = { definePlugin: (p: unknown) => (marked.push(p), p) };
  const requested: string[] = [];
  const module = { exports: {} as Record<string, unknown> };
  const require = (id: string) => {
    requested.push(id);
    if (id === '@isomesh/sdk') return sdk;
    throw new Error(`bundle required ${id}`);
  };
  vm.runInNewContext(`(function (module, exports, require) {${code}\n})`, {}, { timeout: 1000 })(module, module.exports, require);
  return { exports: module.exports, requested, marked };
}

function fakeHeaders() {
  const map = new Map<string, string>();
  return { map, get: (k: string) => map.get(k) ?? null, set: (k: string, v: string) => void map.set(k, v) };
}

test('plugin init scaffolds a project whose build evaluates to a plugin with onRequest', async (t) => {
  const root = tmpDir(t);
  const init = await runCli(['plugin', 'init', 'my-plugin'], {}, root);
  assert.equal(init.code, 0, init.stderr);
  const dir = path.join(root, 'my-plugin');
  for (const f of ['src/index.ts', 'config.schema.json', 'test/plugin.test.ts', 'README.md', 'package.json', 'tsconfig.json']) {
    assert.ok(fs.existsSync(path.join(dir, f)), f);
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  assert.equal(pkg.name, 'my-plugin');
  assert.equal(pkg.type, 'module');
  assert.equal(pkg.dependencies, undefined, 'nothing to install: the CLI provides @isomesh/sdk');
  assert.equal(JSON.parse(fs.readFileSync(path.join(dir, 'config.schema.json'), 'utf8')).type, 'object');
  assert.match(fs.readFileSync(path.join(dir, 'test/plugin.test.ts'), 'utf8'), /createTestHost/);

  const build = await runCli(['plugin', 'build', '--json'], {}, dir);
  assert.equal(build.code, 0, build.stderr);
  const report = JSON.parse(build.stdout);
  const code = fs.readFileSync(path.join(dir, 'dist', 'plugin.js'));
  assert.equal(report.out, path.join(dir, 'dist', 'plugin.js'));
  assert.equal(report.size, code.length);
  assert.equal(report.sha256, createHash('sha256').update(code).digest('hex'));

  const { exports, requested, marked } = evaluateBundle(code.toString('utf8'));
  assert.deepEqual(requested, ['@isomesh/sdk'], 'the sdk stays external; nothing else is required');
  const plugin = exports.default as { onRequest: Function; onResponse: Function };
  assert.equal(typeof plugin.onRequest, 'function');
  assert.equal(typeof plugin.onResponse, 'function');
  assert.equal(marked[0], plugin, 'made by definePlugin');

  // The scaffolded hook really runs: it tags the request with the tenant.
  const headers = fakeHeaders();
  plugin.onRequest({ path: '/api', headers }, { config: {}, tenant: 'acme', respond: () => assert.fail('no early response') });
  assert.equal(headers.map.get('x-tenant'), 'acme');
  let responded = 0;
  plugin.onRequest({ path: '/admin/x', headers: fakeHeaders() }, { config: {}, tenant: 'acme', respond: (s: number) => (responded = s) });
  assert.equal(responded, 401);
});

test('plugin build prints size and sha256 in human mode and honours --out and isomesh.entry', async (t) => {
  const dir = tmpDir(t);
  fs.mkdirSync(path.join(dir, 'lib'));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'x', isomesh: { entry: 'lib/main.js' } }));
  fs.writeFileSync(path.join(dir, 'lib', 'main.js'), 'export default { onResponse(res) { res.status = 299; } };\n');
  const r = await runCli(['plugin', 'build', dir, '--out', 'out/b.js'], {}, os.tmpdir());
  assert.equal(r.code, 0, r.stderr);
  const code = fs.readFileSync(path.join(dir, 'out', 'b.js'));
  assert.match(r.stdout, new RegExp(`\\(${code.length} bytes, sha256:${createHash('sha256').update(code).digest('hex')}\\)`));
  const res = { status: 200 };
  (evaluateBundle(code.toString()).exports.default as { onResponse: Function }).onResponse(res);
  assert.equal(res.status, 299);
});

test('plugin build inlines npm dependencies (package "main" with platform neutral)', async (t) => {
  const dir = tmpDir(t);
  const dep = path.join(dir, 'node_modules', 'tiny-dep');
  fs.mkdirSync(dep, { recursive: true });
  fs.writeFileSync(path.join(dep, 'package.json'), JSON.stringify({ name: 'tiny-dep', main: 'lib.js' }));
  fs.writeFileSync(path.join(dep, 'lib.js'), 'exports.shout = (s) => s.toUpperCase() + "!";\n');
  fs.mkdirSync(path.join(dir, 'src'));
  fs.writeFileSync(path.join(dir, 'src', 'index.ts'),
    "import { shout } from 'tiny-dep';\nexport default { onRequest(req: { path: string }) { return shout(req.path); } };\n");
  const r = await runCli(['plugin', 'build'], {}, dir);
  assert.equal(r.code, 0, r.stderr);
  const { exports, requested } = evaluateBundle(fs.readFileSync(path.join(dir, 'dist', 'plugin.js'), 'utf8'));
  assert.deepEqual(requested, []);
  assert.equal((exports.default as { onRequest: Function }).onRequest({ path: 'hi' }), 'HI!');
});

test('plugin build reports errors as file:line:col and exits 1', async (t) => {
  const dir = tmpDir(t);
  fs.mkdirSync(path.join(dir, 'src'));
  fs.writeFileSync(path.join(dir, 'src', 'index.ts'), [
    "import { definePlugin } from '@isomesh/sdk';",
    'export default definePlugin({',
    '  onRequest(req) { const x = ; },',
    '});',
    '',
  ].join('\n'));
  const r = await runCli(['plugin', 'build'], {}, dir);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /build failed with 1 error/);
  // Column is 1-based: "const x = ;" has the stray ';' at column 30.
  assert.match(r.stderr, /src\/index\.ts:3:30: Unexpected ";"/);
  assert.equal(fs.existsSync(path.join(dir, 'dist', 'plugin.js')), false);

  fs.writeFileSync(path.join(dir, 'src', 'index.ts'), "export default { onRequest() {} };\nimport fs from 'node:fs';\nfs;\n");
  const builtin = await runCli(['plugin', 'build'], {}, dir);
  assert.equal(builtin.code, 1);
  assert.match(builtin.stderr, /src\/index\.ts:2:16: Could not resolve "node:fs"/);
});

test('plugin build without an entry point fails clearly', async (t) => {
  const dir = tmpDir(t);
  const r = await runCli(['plugin', 'build', dir], {});
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no plugin entry point .*src\/index\.ts/);
});

test('plugin init refuses a non-empty directory and a bad name', async (t) => {
  const dir = tmpDir(t);
  fs.writeFileSync(path.join(dir, 'keep.txt'), 'mine');
  const r = await runCli(['plugin', 'init', dir, '--name', 'ok-name'], {});
  assert.equal(r.code, 1);
  assert.match(r.stderr, /refusing to overwrite .*not empty/);
  assert.deepEqual(fs.readdirSync(dir), ['keep.txt']);

  const bad = await runCli(['plugin', 'init', path.join(dir, 'sub'), '--name', 'Bad_Name'], {});
  assert.equal(bad.code, 64);
  assert.match(bad.stderr, /invalid plugin name "Bad_Name"/);
  assert.equal(fs.existsSync(path.join(dir, 'sub')), false);
});

test('plugin test passes the test runner exit code through', async (t) => {
  const dir = tmpDir(t);
  fs.mkdirSync(path.join(dir, 'test', 'nested'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
  fs.writeFileSync(path.join(dir, 'test', 'nested', 'a.test.ts'),
    "import { test } from 'node:test';\ntest('typed ok', () => { const n: number = 1; if (n !== 1) throw new Error('x'); });\n");
  const ok = await runCli(['plugin', 'test', dir], {});
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  assert.match(ok.stdout, /typed ok/);

  fs.writeFileSync(path.join(dir, 'test', 'b.test.ts'), "import { test } from 'node:test';\ntest('fails on purpose', () => { throw new Error('nope'); });\n");
  const fail = await runCli(['plugin', 'test', dir, '--json'], {});
  assert.equal(fail.code, 1);
  assert.deepEqual(JSON.parse(fail.stdout), { ok: false, exitCode: 1 });
  assert.match(fail.stderr, /fails on purpose/);
});

test('a scaffolded project passes its own tests against the sdk test host', async (t) => {
  const root = tmpDir(t);
  assert.equal((await runCli(['plugin', 'init', 'p'], {}, root)).code, 0);
  const dir = path.join(root, 'p');
  // Stand in for `npm install`: link this sdk (node resolves the link, so type stripping still applies).
  fs.mkdirSync(path.join(dir, 'node_modules', '@isomesh'), { recursive: true });
  fs.symlinkSync(SDK_DIR, path.join(dir, 'node_modules', '@isomesh', 'sdk'));
  const r = await runCli(['plugin', 'test'], {}, dir);
  assert.equal(r.code, 0, r.stdout + r.stderr);
  assert.match(r.stdout, /pass 4/);
});
