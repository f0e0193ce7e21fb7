import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { FakeManagementServer, runCli } from './fake-management-server.ts';
import { parseKeyFlag, parseLimitFlag } from './commands/ratelimit.ts';

async function setup(t: TestContext) {
  const fake = new FakeManagementServer();
  const url = await fake.start();
  t.after(() => fake.close());
  fake.addTenant('acme', 17003);
  return { fake, env: { ISOMESH_SERVER: url, ISOMESH_TOKEN: 'tenant-token', ISOMESH_TENANT: 'acme' } };
}

test('ratelimit set sends the whole rate limit: descriptors from --key, the limit from --limit, shadow', async (t) => {
  const { fake, env } = await setup(t);
  const r = await runCli(['ratelimit', 'set', 'per-user', '--key', 'header:X-User', '--key', 'route=login', '--key', 'header:x-q=a=b', '--limit', '100/minute'], env);
  assert.equal(r.code, 0, r.stderr);
  const [put] = fake.mutations();
  assert.deepEqual([put!.method, put!.path], ['PUT', '/v1/tenants/acme/ratelimits/per-user']);
  assert.deepEqual(JSON.parse(put!.body.toString()), {
    descriptors: [{ key: 'header:X-User' }, { key: 'route', value: 'login' }, { key: 'header:x-q', value: 'a=b' }],
    limit: { requestsPerUnit: 100, unit: 'minute' },
    shadow: false,
  });
  assert.equal(r.stdout, 'rate limit per-user of acme created: 100/minute by header:X-User, route=login, header:x-q=a=b\n');
  const again = await runCli(['ratelimit', 'set', 'per-user', '--tenant', 'acme', '--key', 'remote_address', '--limit', '5/second', '--shadow', '--json'], { ...env, ISOMESH_TENANT: '' });
  assert.equal(again.code, 0, again.stderr);
  assert.equal(JSON.parse(fake.mutations()[1]!.body.toString()).shadow, true);
  assert.deepEqual(JSON.parse(again.stdout), {
    tenant: 'acme', name: 'per-user', shadow: true, descriptors: [{ key: 'remote_address' }], limit: { requestsPerUnit: 5, unit: 'second' }, created: false,
  });
});

test('ratelimit set checks its flags locally and sends nothing when they are wrong', async (t) => {
  const { fake, env } = await setup(t);
  const cases: Array<[string[], RegExp]> = [
    [['x', '--limit', '10/second'], /give at least one --key/],
    [['x', '--key', 'path'], /--limit N\/UNIT is required/],
    [['x', '--key', 'path', '--limit', '10/week'], /--limit must be N\/UNIT with UNIT one of second, minute, hour, day \(got "10\/week"\)/],
    [['x', '--key', 'path', '--limit', 'ten/second'], /--limit must be N\/UNIT/],
    [['x', '--key', 'path', '--limit', '10'], /--limit must be N\/UNIT/],
    [['--key', 'path', '--limit', '10/second'], /missing argument/],
    [['x', '--key', 'path', '--limit', '1/day', '--burst', '3'], /Unknown option '--burst'/],
  ];
  for (const [args, message] of cases) {
    const r = await runCli(['ratelimit', 'set', ...args], env);
    assert.equal(r.code, 64, args.join(' '));
    assert.match(r.stderr, message);
  }
  const both = await runCli(['ratelimit', 'set', 'x'], env);
  assert.match(both.stderr, /--key[\s\S]*--limit/, 'every problem at once');
  const noTenant = await runCli(['ratelimit', 'list'], { ...env, ISOMESH_TENANT: '' });
  assert.deepEqual([noTenant.code, /no tenant given/.test(noTenant.stderr)], [64, true]);
  assert.equal(fake.requests.length, 0);
});

test('ratelimit get, list and delete; a server error is exit 1 with its code', async (t) => {
  const { fake, env } = await setup(t);
  assert.equal((await runCli(['ratelimit', 'list'], env)).stdout, 'no rate limits in acme\n');
  await runCli(['ratelimit', 'set', 'b-limit', '--key', 'path=/login', '--key', 'method=POST', '--limit', '3/hour', '--shadow'], env);
  await runCli(['ratelimit', 'set', 'a-limit', '--key', 'remote_address', '--limit', '10/second'], env);
  const list = await runCli(['ratelimit', 'list'], env);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^NAME\s+LIMIT\s+SHADOW\s+DESCRIPTORS\n/);
  assert.match(list.stdout, /b-limit\s+3\/hour\s+yes\s+path=\/login, method=POST/);
  assert.match(list.stdout, /a-limit\s+10\/second\s+no\s+remote_address/);
  const get = await runCli(['ratelimit', 'get', 'b-limit'], env);
  assert.match(get.stdout, /^rate limit b-limit of acme\n\s+limit:\s+3\/hour\n\s+descriptors: path=\/login, method=POST\n\s+shadow:\s+true\n$/);
  assert.deepEqual(JSON.parse((await runCli(['ratelimit', 'get', 'a-limit', '--json'], env)).stdout).limit, { requestsPerUnit: 10, unit: 'second' });
  const del = await runCli(['ratelimit', 'delete', 'b-limit'], env);
  assert.deepEqual([del.code, del.stdout], [0, 'rate limit b-limit of acme deleted\n']);
  const gone = await runCli(['ratelimit', 'get', 'b-limit'], env);
  assert.equal(gone.code, 1);
  assert.match(gone.stderr, /error: rate limit "b-limit" does not exist \(ISOMESH_ERR_RATELIMIT_NOT_FOUND\)/);
  assert.deepEqual(fake.requests.filter((r) => r.method === 'DELETE').map((r) => r.path), ['/v1/tenants/acme/ratelimits/b-limit']);
});

test('flag parsers', () => {
  assert.deepEqual(parseKeyFlag('path'), { key: 'path' });
  assert.deepEqual(parseKeyFlag('path='), { key: 'path', value: '' }, 'an empty value is sent, for the server to refuse');
  assert.deepEqual(parseLimitFlag(' 7 / day '), { requestsPerUnit: 7, unit: 'day' });
  assert.equal(parseLimitFlag('7/days'), undefined);
  assert.equal(parseLimitFlag('99999999999999999999/second'), undefined);
});
