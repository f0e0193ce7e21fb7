import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { FakeManagementServer, runCli } from './fake-management-server.ts';
import { main } from './main.ts';

async function withServer(t: { after(fn: () => Promise<void>): void }) {
  const fake = new FakeManagementServer();
  const url = await fake.start();
  t.after(() => fake.close());
  return { fake, env: { ISOMESH_SERVER: url, ISOMESH_TOKEN: 'admin-t', ISOMESH_TENANT: 'acme' } };
}

test('no command, unknown command, unknown verb and unknown flag are usage errors (64)', async () => {
  const none = await runCli([]);
  assert.equal(none.code, 64);
  assert.match(none.stderr, /usage: isomesh <noun> <verb>/);
  assert.equal(none.stdout, '');

  const unknown = await runCli(['frobnicate']);
  assert.equal(unknown.code, 64);
  assert.match(unknown.stderr, /unknown command "frobnicate"/);

  const verb = await runCli(['plugin', 'explode']);
  assert.equal(verb.code, 64);
  assert.match(verb.stderr, /unknown command "plugin explode"/);
  assert.match(verb.stderr, /isomesh plugin publish/);

  const flag = await runCli(['tenant', 'list', '--bogus']);
  assert.equal(flag.code, 64);
  assert.match(flag.stderr, /Unknown option '--bogus'/);
  assert.match(flag.stderr, /usage: isomesh tenant list/);
});

test('wrong number of positionals and missing required flags are usage errors', async () => {
  const missing = await runCli(['plugin', 'versions']);
  assert.equal(missing.code, 64);
  assert.match(missing.stderr, /missing argument/);

  const extra = await runCli(['tenant', 'delete', 'a', 'b']);
  assert.equal(extra.code, 64);
  assert.match(extra.stderr, /unexpected argument "b"/);

  const noName = await runCli(['plugin', 'publish', '--tenant', 'acme']);
  assert.equal(noName.code, 64);
  assert.match(noName.stderr, /--name is required/);

  const noTenant = await runCli(['plugin', 'versions', 'auth']);
  assert.equal(noTenant.code, 64);
  assert.match(noTenant.stderr, /no tenant given/);

  const badVersion = await runCli(['plugin', 'activate', 'auth', 'latest', '--tenant', 'acme']);
  assert.equal(badVersion.code, 64);
  assert.match(badVersion.stderr, /version must be a whole number/);

  const halfCanary = await runCli(['plugin', 'activate', 'auth', '2', '--canary-version', '3', '--tenant', 'acme']);
  assert.equal(halfCanary.code, 64);
  assert.match(halfCanary.stderr, /--canary-version and --percent go together/);

  const badPort = await runCli(['tenant', 'create', 'acme', '--port', '70000']);
  assert.equal(badPort.code, 64);
  assert.match(badPort.stderr, /--port must be a whole number from 1 to 65535/);
});

test('--help prints usage on stdout and exits 0 at every level', async () => {
  const top = await runCli(['--help']);
  assert.equal(top.code, 0);
  assert.match(top.stdout, /Exit codes: 0 ok, 1 failure, 2 cannot reach the server, 64 usage error/);
  const noun = await runCli(['quota', '--help']);
  assert.equal(noun.code, 0);
  assert.match(noun.stdout, /isomesh quota set/);
  const cmd = await runCli(['plugin', 'publish', '-h']);
  assert.equal(cmd.code, 0);
  assert.match(cmd.stdout, /--canary PERCENT/);
  assert.equal(cmd.stderr, '');
});

test('global flags work before the command words and override the environment', async (t) => {
  const { fake, env } = await withServer(t);
  fake.addTenant('other', 17042);
  const r = await runCli(['--server', env.ISOMESH_SERVER, '--token', 'flag-token', '--json', 'tenant', 'list'],
    { ISOMESH_SERVER: 'http://127.0.0.1:1', ISOMESH_TOKEN: 'env-token' });
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout), [{ name: 'other', listenerPort: 17042 }]);
  assert.equal(fake.requests[0]!.headers.authorization, 'Bearer flag-token');
  assert.equal(fake.requests[0]!.path, '/v1/tenants');
});

test('the token falls back to the daemon admin-token file in the state dir', async (t) => {
  const { fake, env } = await withServer(t);
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-cli-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, '.isomesh'));
  fs.writeFileSync(path.join(dir, '.isomesh', 'admin-token'), 'ism_admin_from_file\n');
  const r = await runCli(['tenant', 'list'], { ISOMESH_SERVER: env.ISOMESH_SERVER }, dir);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(fake.requests[0]!.headers.authorization, 'Bearer ism_admin_from_file');
});

test('a server error prints "error: <message> (<code>)" and exits 1', async (t) => {
  const { fake, env } = await withServer(t);
  const r = await runCli(['quota', 'get', 'ghost'], env);
  assert.equal(r.code, 1);
  assert.equal(r.stderr, 'error: no such tenant: ghost (ISOMESH_ERR_TENANT_NOT_FOUND)\n');
  assert.equal(r.stdout, '');

  fake.override = () => ({ status: 403, body: { error: { code: 'ISOMESH_ERR_AUTH_FORBIDDEN', message: 'this token may not do that' } } });
  const forbidden = await runCli(['--json', 'tenant', 'list'], env);
  assert.equal(forbidden.code, 1);
  assert.match(forbidden.stderr, /this token may not do that \(ISOMESH_ERR_AUTH_FORBIDDEN\)/);
  assert.equal(forbidden.stdout, '');

  fake.override = () => ({ status: 502, body: 'bad gateway' });
  const bare = await runCli(['tenant', 'list'], env);
  assert.equal(bare.code, 1);
  assert.match(bare.stderr, /\(HTTP_502\)/);
});

test('compile diagnostics from the server are shown with line and column', async (t) => {
  const { fake, env } = await withServer(t);
  fake.addPluginVersions('acme', 'auth', 1, { version: 1 });
  fake.override = (req) => req.method === 'PUT' ? {
    status: 400,
    body: { error: { code: 'ISOMESH_ERR_PLUGIN_LOAD', message: 'plugin failed to load', details: [{ line: 3, column: 7, message: 'x is not defined' }] } },
  } : undefined;
  fake.addTenant('acme');
  const r = await runCli(['plugin', 'activate', 'auth', '1'], env);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /plugin failed to load \(ISOMESH_ERR_PLUGIN_LOAD\)\n {2}plugin:3:7: x is not defined/);
});

test('an unreachable server exits 2 and names the URL', async () => {
  // A port that was just bound and released: nothing listens there.
  const probe = net.createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  const url = `http://127.0.0.1:${port}`;
  const r = await runCli(['tenant', 'list', '--server', url]);
  assert.equal(r.code, 2);
  assert.match(r.stderr, new RegExp(`cannot reach the isomesh server at ${url.replace(/[.]/g, '\\.')} \\(ECONNREFUSED\\)`));
});

test('--json prints exactly one JSON document for each operator command', async (t) => {
  const { fake, env } = await withServer(t);
  fake.addTenant('acme', 17005);
  fake.addPluginVersions('acme', 'auth', 2, { version: 2, canary: { version: 1, percent: 5 } });
  const cases: Array<[string[], (doc: any) => void]> = [
    [['tenant', 'list'], (d) => assert.equal(d[0].name, 'acme')],
    [['tenant', 'create', 'beta', '--port', '17100'], (d) => assert.deepEqual([d.name, d.listenerPort, d.created], ['beta', 17100, true])],
    [['tenant', 'token', 'acme'], (d) => assert.equal(d.token, 'ism_t_acme_secret')],
    [['quota', 'get'], (d) => assert.equal(d.memoryMb, 64)],
    [['status'], (d) => assert.equal(d.listenerPort, 17005)],
    [['plugin', 'versions', 'auth'], (d) => assert.deepEqual([d.active.version, d.versions.length], [2, 2])],
  ];
  for (const [argv, check] of cases) {
    const r = await runCli([...argv, '--json'], env);
    assert.equal(r.code, 0, `${argv.join(' ')}: ${r.stderr}`);
    check(JSON.parse(r.stdout));
  }
});

test('extra commands injected by the embedding program are dispatched with their own argv', async () => {
  const seen: string[][] = [];
  const out: string[] = [];
  const code = await main(['run', '--admin-addr', '127.0.0.1:0'], {
    env: {}, stdout: (s) => void out.push(s), stderr: () => {},
    extraCommands: { run: { summary: 'start the daemon', run: (argv) => { seen.push(argv); return 7; } } },
  });
  assert.equal(code, 7);
  assert.deepEqual(seen, [['--admin-addr', '127.0.0.1:0']]);
  const help = await main(['--help'], { env: {}, stdout: (s) => void out.push(s), extraCommands: { run: () => 0 } });
  assert.equal(help, 0);
  assert.match(out.join(''), /\n {2}run\b/);
});
