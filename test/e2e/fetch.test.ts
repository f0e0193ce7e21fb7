// ctx.fetch through the real data plane: a plugin calls another service of its own tenant through the
// built-in proxy (load balancing, timeouts; not the chain), and cannot reach anything else.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';
import { echoed, request, startEcho, type EchoUpstream } from '../support/http.ts';

let d: TestDaemon;
let app: EchoUpstream;
let users: EchoUpstream;
let port: number;

const ENRICH = `
import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  async onRequest(req, ctx) {
    const r = await ctx.fetch('http://users/profile?id=7', { headers: { 'x-asked-by': 'enrich' } });
    const profile = await r.json();
    req.headers.set('x-profile-url', profile.url);
    req.headers.set('x-profile-status', String(r.status));
    try {
      await ctx.fetch('http://127.0.0.1:' + req.headers.get('x-port') + '/');
      req.headers.set('x-escape', 'reached');
    } catch (e) {
      req.headers.set('x-escape', String(e.code));
    }
    try {
      await ctx.fetch('http://billing/');
      req.headers.set('x-other', 'reached');
    } catch (e) {
      req.headers.set('x-other', String(e.code));
    }
  },
});`;

before(async () => {
  app = await startEcho('app');
  users = await startEcho('users');
  d = await startDaemon();
  port = (await d.api('PUT', '/v1/tenants/shop', {})).body.listenerPort;
  await d.api('PUT', '/v1/tenants/other', {});
  for (const [t, name, up] of [['shop', 'app', app], ['shop', 'users', users], ['other', 'billing', users]] as const) {
    assert.equal((await d.api('PUT', `/v1/tenants/${t}/services/${name}`, { endpoints: [{ address: '127.0.0.1', port: up.port }] })).status, 201);
  }
  assert.equal((await d.api('PUT', '/v1/tenants/shop/routes/all', { match: { pathPrefix: '/' }, to: { service: 'app' } })).status, 201);
  const p = await d.api('POST', '/v1/tenants/shop/plugins/enrich/versions', { source: ENRICH, language: 'typescript' });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  assert.equal((await d.api('PUT', '/v1/tenants/shop/plugins/enrich/active', { version: p.body.version })).status, 200);
  assert.equal((await d.api('PUT', '/v1/tenants/shop/chain', [{ plugin: 'enrich' }])).status, 200);
  // The chain reaches the data plane a moment after the PUT: until then answers are the proxy's own.
  // Bounded in time; if it never gets ready the failure says what the last answer was.
  const deadline = Date.now() + 60_000;
  let last = '';
  for (;;) {
    const warm = await request(port, '/warm', { headers: { 'x-port': String(users.port) } }).catch((e: Error) => ({ status: 0, body: e.message, headers: {} }));
    if (warm.status === 200 && echoed(warm as Parameters<typeof echoed>[0]).headers['x-profile-url'] !== undefined) break;
    last = `${warm.status} ${warm.body.slice(0, 300)}`;
    assert.ok(Date.now() < deadline, `the chain with ctx.fetch never answered through the proxy; last answer: ${last}`);
    await sleep(50);
  }
});

after(async () => {
  await d?.stop();
  await app?.close();
  await users?.close();
});

test('a plugin fetches its own tenant’s service through the proxy, and nothing else', async () => {
  const before = users.hits();
  const res = await request(port, '/order', { headers: { 'x-port': String(users.port) } });
  assert.equal(res.status, 200, res.body);
  const seen = echoed(res);
  assert.equal(seen.headers['x-profile-url'], '/profile?id=7', 'the users service answered the plugin');
  assert.equal(seen.headers['x-profile-status'], '200');
  assert.equal(seen.headers['x-escape'], 'ERR_FETCH_OPTIONS', 'a URL with an IP and a port is refused in the isolate: no request made');
  assert.equal(seen.headers['x-other'], 'ERR_FETCH_UNKNOWN_SERVICE', "another tenant's service is unknown to this tenant");
  assert.equal(users.hits() - before, 1, 'exactly one request reached the users service (the plugin’s own)');
});
