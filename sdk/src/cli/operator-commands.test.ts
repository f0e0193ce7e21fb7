import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { FakeManagementServer, runCli } from './fake-management-server.ts';

async function setup(t: TestContext) {
  const fake = new FakeManagementServer();
  const url = await fake.start();
  t.after(() => fake.close());
  fake.addTenant('acme', 17003);
  return { fake, env: { ISOMESH_SERVER: url, ISOMESH_TOKEN: 'admin' } };
}

test('quota set sends only the given fields, under their API names', async (t) => {
  const { fake, env } = await setup(t);
  const r = await runCli(['quota', 'set', 'acme', '--memory-mb', '128', '--rps', '0', '--max-concurrent', '50', '--weight', '3'], env);
  assert.equal(r.code, 0, r.stderr);
  const [put] = fake.mutations();
  assert.equal(put!.method, 'PUT');
  assert.equal(put!.path, '/v1/tenants/acme/quota');
  assert.deepEqual(JSON.parse(put!.body.toString()), { memoryMb: 128, requestsPerSecond: 0, maxConcurrentRequests: 50, weight: 3 });
  assert.match(r.stdout, /memoryMb:\s+128/);
  assert.match(r.stdout, /cpuMsPerSecond:\s+500/, 'fields not sent keep their value');
});

test('quota set maps every flag', async (t) => {
  const { fake, env } = await setup(t);
  const r = await runCli(['quota', 'set', '--tenant', 'acme', '--memory-mb', '1', '--cpu-ms-per-request', '2',
    '--cpu-ms-per-second', '3', '--max-concurrent', '4', '--rps', '5', '--max-plugins', '6', '--max-bundle-bytes', '7', '--weight', '8', '--json'], env);
  assert.equal(r.code, 0, r.stderr);
  const sent = JSON.parse(fake.mutations()[0]!.body.toString());
  assert.deepEqual(sent, {
    memoryMb: 1, cpuMsPerRequest: 2, cpuMsPerSecond: 3, maxConcurrentRequests: 4,
    requestsPerSecond: 5, maxPlugins: 6, maxBundleBytes: 7, weight: 8,
  });
  assert.deepEqual(JSON.parse(r.stdout), sent);
});

test('quota set validates numbers locally and sends nothing when one is bad', async (t) => {
  const { fake, env } = await setup(t);
  const cases: Array<[string[], RegExp]> = [
    [['--memory-mb', 'lots'], /--memory-mb must be a whole number \(got "lots"\)/],
    [['--memory-mb', '0'], /--memory-mb must be at least 1 \(got 0\)/],
    [['--weight', '1.5'], /--weight must be a whole number \(got "1.5"\)/],
    [['--rps', '-1'], /--rps/],
    [['--max-bundle-bytes', '99999999999999999999'], /--max-bundle-bytes must be a whole number/],
    [['--cpu-ms-per-second', ''], /--cpu-ms-per-second must be a whole number/],
    [[], /nothing to set/],
  ];
  for (const [flags, message] of cases) {
    const r = await runCli(['quota', 'set', 'acme', ...flags], env);
    assert.equal(r.code, 64, flags.join(' '));
    assert.match(r.stderr, message);
  }
  // Every problem is reported in one go.
  const many = await runCli(['quota', 'set', 'acme', '--memory-mb', 'x', '--weight', '0'], env);
  assert.match(many.stderr, /--memory-mb[\s\S]*--weight/);
  assert.equal(fake.requests.length, 0);
});

test('quota get uses the positional tenant, else --tenant / ISOMESH_TENANT', async (t) => {
  const { fake, env } = await setup(t);
  fake.addTenant('beta');
  fake.tenants.get('beta')!.quota.memoryMb = 256;
  const byArg = await runCli(['quota', 'get', 'beta'], { ...env, ISOMESH_TENANT: 'acme' });
  assert.equal(byArg.code, 0, byArg.stderr);
  assert.match(byArg.stdout, /quota of beta\n[\s\S]*memoryMb:\s+256/);
  const byEnv = await runCli(['quota', 'get', '--json'], { ...env, ISOMESH_TENANT: 'acme' });
  assert.equal(JSON.parse(byEnv.stdout).memoryMb, 64);
  assert.deepEqual(fake.requests.map((r) => r.path), ['/v1/tenants/beta/quota', '/v1/tenants/acme/quota']);
});

test('tenant create/token/delete talk to the documented endpoints', async (t) => {
  const { fake, env } = await setup(t);
  const created = await runCli(['tenant', 'create', 'beta', '--port', '17200'], env);
  assert.equal(created.code, 0, created.stderr);
  assert.equal(created.stdout, 'tenant beta created (listener port 17200)\n');
  const updated = await runCli(['tenant', 'create', 'beta'], env);
  assert.match(updated.stdout, /tenant beta updated/);
  const token = await runCli(['tenant', 'token', 'beta'], env);
  assert.equal(token.stdout, 'ism_t_beta_secret\n', 'only the token, so it can be captured by a shell');
  const deleted = await runCli(['tenant', 'delete', 'beta'], env);
  assert.equal(deleted.code, 0, deleted.stderr);
  assert.equal(fake.tenants.has('beta'), false);
  assert.deepEqual(fake.mutations().map((r) => `${r.method} ${r.path} ${r.body.toString()}`), [
    'PUT /v1/tenants/beta {"listenerPort":17200}',
    'PUT /v1/tenants/beta {}',
    'POST /v1/tenants/beta/tokens ',
    'DELETE /v1/tenants/beta ',
  ]);
  const list = await runCli(['tenant', 'list'], env);
  assert.match(list.stdout, /^NAME\s+LISTENER PORT\nacme\s+17003\n$/);
});

test('status shows listener, plugins with active/canary/health and quota usage', async (t) => {
  const { fake, env } = await setup(t);
  fake.addPluginVersions('acme', 'auth', 3, { version: 2, canary: { version: 1, percent: 20 } });
  fake.addPluginVersions('acme', 'audit', 1, { version: 1 });
  fake.addPluginVersions('acme', 'draft', 1);
  const r = await runCli(['status', 'acme'], env);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.split('\n');
  assert.match(r.stdout, /listener: 17003/);
  assert.match(r.stdout, /NAME\s+ACTIVE\s+CANARY\s+HEALTH\s+LAST ERROR/);
  assert.match(lines.find((l) => l.includes('auth'))!, /auth\s+2\s+1 \(20%\)\s+ok, canary degraded\s+ISOMESH_ERR_PLUGIN_THREW: boom \(2025-01-01/);
  assert.match(lines.find((l) => l.includes('audit'))!, /audit\s+1\s+-\s+degraded\s+ISOMESH_ERR_PLUGIN_THREW: boom/);
  assert.match(lines.find((l) => l.includes('draft'))!, /draft\s+-\s+-\s+-$/);
  assert.match(r.stdout, /quota usage:\n\s+cpuMsPerSecond: 12\.50\n\s+memoryMb:\s+3\.25\n\s+inFlight:\s+3\n\s+rejections:\s+rps=7 concurrency=0 cpu=1/);
});
