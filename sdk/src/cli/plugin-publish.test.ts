import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FakeManagementServer, runCli } from './fake-management-server.ts';

async function setup(t: TestContext) {
  const fake = new FakeManagementServer();
  const url = await fake.start();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-publish-'));
  t.after(async () => {
    await fake.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  fake.addTenant('acme');
  // A plugin project with a local helper module, so the bundle must inline it.
  fs.mkdirSync(path.join(dir, 'src'));
  fs.writeFileSync(path.join(dir, 'src', 'greeting.ts'), "export const GREETING: string = 'hello from the bundle';\n");
  fs.writeFileSync(path.join(dir, 'src', 'index.ts'), [
    "import { definePlugin } from '@isomesh/sdk';",
    "import { GREETING } from './greeting.ts';",
    'export default definePlugin({ onRequest(req) { req.headers.set("x-greeting", GREETING); } });',
    '',
  ].join('\n'));
  const env = { ISOMESH_SERVER: url, ISOMESH_TOKEN: 'tenant-token', ISOMESH_TENANT: 'acme' };
  return { fake, dir, env };
}

test('publish builds, then POSTs the bundle as application/javascript', async (t) => {
  const { fake, dir, env } = await setup(t);
  const r = await runCli(['plugin', 'publish', dir, '--name', 'greeter', '--json'], env);
  assert.equal(r.code, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.equal(doc.version, 1);

  const posts = fake.mutations();
  assert.equal(posts.length, 1, 'no activation without --activate/--canary');
  const post = posts[0]!;
  assert.equal(post.method, 'POST');
  assert.equal(post.path, '/v1/tenants/acme/plugins/greeter/versions');
  assert.equal(post.headers['content-type'], 'application/javascript');
  assert.equal(post.headers.authorization, 'Bearer tenant-token');
  const written = fs.readFileSync(path.join(dir, 'dist', 'plugin.js'));
  assert.deepEqual(post.body, written, 'the uploaded body is the built bundle');
  const text = post.body.toString('utf8');
  assert.match(text, /hello from the bundle/);
  assert.match(text, /require\("@isomesh\/sdk"\)/);
  assert.equal(doc.digest, 'sha256:' + createHash('sha256').update(written).digest('hex'));
});

test('publish --activate makes the new version active', async (t) => {
  const { fake, dir, env } = await setup(t);
  fake.addPluginVersions('acme', 'greeter', 2, { version: 2 });
  const r = await runCli(['plugin', 'publish', dir, '--name', 'greeter', '--activate'], env);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /published greeter version 3/);
  const [post, put] = fake.mutations();
  assert.equal(post!.method, 'POST');
  assert.equal(put!.method, 'PUT');
  assert.equal(put!.path, '/v1/tenants/acme/plugins/greeter/active');
  assert.equal(put!.headers['content-type'], 'application/json');
  assert.deepEqual(JSON.parse(put!.body.toString()), { version: 3 });
  assert.deepEqual(fake.plugins.get('acme/greeter')!.active, { version: 3 });
});

test('publish --canary keeps the current version active and canaries the new one', async (t) => {
  const { fake, dir, env } = await setup(t);
  fake.addPluginVersions('acme', 'greeter', 4, { version: 2 });
  const r = await runCli(['plugin', 'publish', dir, '--name', 'greeter', '--canary', '12.5'], env);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /canary: 12.5% of requests to version 5, the rest to version 2/);
  const put = fake.mutations().find((m) => m.method === 'PUT')!;
  assert.deepEqual(JSON.parse(put.body.toString()), { version: 2, canary: { version: 5, percent: 12.5 } });
});

test('publish --canary without an active version fails before uploading anything', async (t) => {
  const { fake, dir, env } = await setup(t);
  fake.addPluginVersions('acme', 'greeter', 1);
  const r = await runCli(['plugin', 'publish', dir, '--name', 'greeter', '--canary', '10'], env);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no active version to canary against/);
  assert.equal(fake.mutations().length, 0);
});

test('publish rejects a bad canary percent and --activate with --canary locally (64)', async (t) => {
  const { fake, dir, env } = await setup(t);
  for (const argv of [['--canary', '150'], ['--canary', 'ten'], ['--canary', '5', '--activate']]) {
    const r = await runCli(['plugin', 'publish', dir, '--name', 'greeter', ...argv], env);
    assert.equal(r.code, 64, argv.join(' '));
  }
  assert.equal(fake.requests.length, 0);
});

test('publish reports a server rejection (over maxBundleBytes) with its code', async (t) => {
  const { fake, dir, env } = await setup(t);
  fake.override = (req) => req.method === 'POST'
    ? { status: 413, body: { error: { code: 'ISOMESH_ERR_PLUGIN_TOO_LARGE', message: 'plugin bundle exceeds maxBundleBytes' } } }
    : undefined;
  const r = await runCli(['plugin', 'publish', dir, '--name', 'greeter', '--activate'], env);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /error: plugin bundle exceeds maxBundleBytes \(ISOMESH_ERR_PLUGIN_TOO_LARGE\)/);
  assert.equal(fake.mutations().filter((m) => m.method === 'PUT').length, 0, 'no activation after a failed upload');
});

test('rollback ends a running canary and keeps the active version', async (t) => {
  const { fake, env } = await setup(t);
  fake.addPluginVersions('acme', 'auth', 5, { version: 4, canary: { version: 5, percent: 10 } });
  const r = await runCli(['plugin', 'rollback', 'auth'], env);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /ended the canary of version 5; version 4 serves all requests/);
  const puts = fake.mutations();
  assert.equal(puts.length, 1);
  assert.deepEqual(JSON.parse(puts[0]!.body.toString()), { version: 4 }, 'activation without a canary ends it');
  assert.deepEqual(fake.plugins.get('acme/auth')!.active, { version: 4 });
});

test('rollback without a canary activates the highest version below the active one', async (t) => {
  const { fake, env } = await setup(t);
  fake.addPluginVersions('acme', 'auth', 5, { version: 4 });
  const r = await runCli(['plugin', 'rollback', 'auth'], env);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /version 4 -> 3/);
  const puts = fake.mutations();
  assert.equal(puts.length, 1);
  assert.deepEqual(JSON.parse(puts[0]!.body.toString()), { version: 3 });

  // From 3, with version 2 missing from the list, the previous one is 1.
  fake.plugins.get('acme/auth')!.versions.splice(1, 1);
  const again = await runCli(['plugin', 'rollback', 'auth', '--json'], env);
  assert.equal(again.code, 0, again.stderr);
  assert.deepEqual(JSON.parse(again.stdout).active, { version: 1 });

  const none = await runCli(['plugin', 'rollback', 'auth'], env);
  assert.equal(none.code, 1);
  assert.match(none.stderr, /no version older than 1/);
});

test('activate sends the version and an optional canary', async (t) => {
  const { fake, env } = await setup(t);
  fake.addPluginVersions('acme', 'auth', 3, { version: 1 });
  const r = await runCli(['plugin', 'activate', 'auth', '2', '--canary-version', '3', '--percent', '25'], env);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /version 2 is active, canary version 3 on 25% of requests/);
  assert.deepEqual(fake.plugins.get('acme/auth')!.active, { version: 2, canary: { version: 3, percent: 25 } });

  const missing = await runCli(['plugin', 'activate', 'auth', '9'], env);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /\(ISOMESH_ERR_PLUGIN_VERSION_NOT_FOUND\)/);
});

test('versions lists every version and marks active and canary', async (t) => {
  const { fake, env } = await setup(t);
  fake.addPluginVersions('acme', 'auth', 3, { version: 2, canary: { version: 3, percent: 10 } });
  const r = await runCli(['plugin', 'versions', 'auth'], env);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trimEnd().split('\n');
  assert.match(lines[0]!, /^VERSION\s+STATE\s+SIZE\s+DIGEST\s+CREATED$/);
  assert.equal(lines.length, 4);
  assert.match(lines[2]!, /^2\s+active\s+2\s+sha256:/);
  assert.match(lines[3]!, /^3\s+canary 10%\s+2\s+sha256:/);
});
