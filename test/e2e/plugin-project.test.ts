// A plugin author outside this repository: `isomesh plugin init` in a fresh directory under the OS
// temp dir (no node_modules anywhere above it, no install, no network), then the CLI's `plugin test`
// and `plugin build` there, then the bundle published through a real host compile and run.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { PluginHost } from '../../runtime/src/host/index.ts';
import { DEFAULT_QUOTA, DEFAULT_TENANT_SETTINGS } from '../../runtime/src/store/model.ts';
import { ROOT } from '../support/daemon.ts';

const CLI = path.join(ROOT, 'sdk', 'bin', 'isomesh.ts');

function cli(args: string[], cwd: string): Promise<{ code: number; out: string }> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env };
    delete env.NODE_TEST_CONTEXT;
    delete env.NODE_OPTIONS;
    const child = spawn(process.execPath, [CLI, ...args], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c));
    child.stderr.on('data', (c: Buffer) => (out += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.once('error', reject);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? 1, out });
    });
  });
}

test('init → test → build in a directory outside the repository, then publish the bundle', async (t) => {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-author-'));
  t.after(() => fs.rmSync(base, { recursive: true, force: true }));
  assert.ok(!base.startsWith(ROOT + path.sep), 'outside the repository');
  for (let dir = base; dir !== path.dirname(dir); dir = path.dirname(dir)) {
    assert.ok(!fs.existsSync(path.join(dir, 'node_modules', '@isomesh', 'sdk')), `no @isomesh/sdk installed above ${base}`);
  }

  const init = await cli(['plugin', 'init', 'greeter'], base);
  assert.equal(init.code, 0, init.out);
  const dir = path.join(base, 'greeter');
  const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'));
  assert.equal(pkg.dependencies, undefined, 'nothing to install');

  const tested = await cli(['plugin', 'test'], dir);
  assert.equal(tested.code, 0, tested.out);
  assert.match(tested.out, /pass 4\n/);
  assert.match(tested.out, /fail 0\n/);

  // A failing test fails the command (the runner really ran the project's tests).
  fs.writeFileSync(path.join(dir, 'test', 'broken.test.ts'), "import { test } from 'node:test';\nimport assert from 'node:assert';\ntest('x', () => assert.equal(1, 2));\n");
  const failed = await cli(['plugin', 'test'], dir);
  assert.equal(failed.code, 1, failed.out);
  fs.rmSync(path.join(dir, 'test', 'broken.test.ts'));

  const built = await cli(['plugin', 'build', '--json'], dir);
  assert.equal(built.code, 0, built.out);
  const bundle = fs.readFileSync(path.join(dir, 'dist', 'plugin.js'), 'utf8');

  const host = new PluginHost({ logger: pino({ level: 'silent' }), registry: new Registry(), mode: 'inline' });
  t.after(() => host.close());
  const compiled = await host.compile({ source: bundle, language: 'bundle', maxBundleBytes: DEFAULT_QUOTA.maxBundleBytes });
  assert.deepEqual(compiled.declarations.hooks, ['onRequest', 'onResponse']);
  assert.equal((compiled.declarations.configSchema as { type?: string } | undefined)?.type, 'object', 'config.schema.json went into the bundle as configSchema');
  host.configure({
    name: 'acme', listenerPort: 17000, quota: { ...DEFAULT_QUOTA }, services: [], routes: [],
    chain: [{ plugin: 'greeter', config: { header: 'x-who' }, failurePolicy: 'closed' }],
    plugins: { greeter: { name: 'greeter', active: { version: 1, digest: compiled.digest, code: compiled.code, meta: compiled.declarations } } },
    secrets: {}, settings: { ...DEFAULT_TENANT_SETTINGS }, rateLimits: [], generation: 1,
  });
  const adm = host.begin('acme', 'r1');
  assert.ok(adm.ok);
  const out = await host.onRequest(adm.run, { method: 'GET', path: '/api', query: '', host: 'x', headers: [], remoteAddress: '127.0.0.1' });
  host.end(adm.run);
  assert.deepEqual(out, { action: 'continue', headers: [['x-who', 'acme']] });
});
