// The CLI's rate-limit commands against the real management API (not the CLI's fake): what the CLI
// sends is what the server stores, with a tenant token.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { startAdmin } from '../runtime/src/admin/testing.ts';
import { runCli } from '../sdk/src/cli/fake-management-server.ts';

test('isomesh ratelimit set/get/list/delete round-trip through the real admin server', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  const url = await f.app.listen({ host: '127.0.0.1', port: 0 });
  await f.call('PUT', '/v1/tenants/shop', {});
  await f.call('PUT', '/v1/tenants/shop/services/web', { endpoints: [{ address: '127.0.0.1', port: 8080 }] });
  await f.call('PUT', '/v1/tenants/shop/routes/login', { match: { path: '/login' }, to: { service: 'web' } });
  const token = (await f.call('POST', '/v1/tenants/shop/tokens')).json.token as string;
  const env = { ISOMESH_SERVER: url, ISOMESH_TOKEN: token, ISOMESH_TENANT: 'shop' };

  let r = await runCli(['ratelimit', 'set', 'login', '--key', 'route=login', '--key', 'header:X-User', '--limit', '5/minute'], env);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'rate limit login of shop created: 5/minute by route=login, header:x-user\n', 'the stored (lower-cased) form is shown');
  assert.deepEqual(f.store.getRateLimit('shop', 'login'), {
    name: 'login', descriptors: [{ key: 'route', value: 'login' }, { key: 'header:x-user' }], limit: { requestsPerUnit: 5, unit: 'minute' }, shadow: false,
  });
  r = await runCli(['ratelimit', 'list'], env);
  assert.match(r.stdout, /login\s+5\/minute\s+no\s+route=login, header:x-user/);
  r = await runCli(['ratelimit', 'set', 'bad', '--key', 'route=ghost', '--limit', '1/second'], env);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /route "ghost", which does not exist \(ISOMESH_ERR_RATELIMIT_INVALID\)/);
  r = await runCli(['ratelimit', 'get', 'login', '--tenant', 'other'], { ...env, ISOMESH_TENANT: '' });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /ISOMESH_ERR_AUTH_FORBIDDEN/);
  r = await runCli(['ratelimit', 'delete', 'login'], env);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(f.store.listRateLimits('shop'), []);
});
