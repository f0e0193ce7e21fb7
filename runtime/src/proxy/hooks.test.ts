// The proxy ↔ plugin host contract, driven by a PluginHostApi double.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import type { TestContext } from 'node:test';
import { HostDouble, seenHeader, send, service, sleep, startProxy, startUpstream, tenantConfig, type Upstream } from './test-fixtures.ts';

async function setup(t: TestContext, host = new HostDouble()): Promise<{ host: HostDouble; port: number; a: Upstream; b: Upstream }> {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const { proxy } = await startProxy(t, host);
  await proxy.configure(tenantConfig('acme', [service('a', [a.port]), service('b', [b.port])], [{ name: 'to-a', match: { pathPrefix: '/' }, to: { service: 'a' } }]));
  return { host, port: proxy.status('acme')!.listener!.port, a, b };
}

test('the hook sees method, path, query, host, headers, route and service', async (t) => {
  const { host, port } = await setup(t);
  await send(port, { method: 'PUT', path: '/p/q?x=1&y=2', headers: { host: 'svc.local:81', 'x-user': 'bob' }, body: 'b' });
  assert.equal(host.requests.length, 1);
  const req = host.requests[0];
  assert.equal(req.method, 'PUT');
  assert.equal(req.path, '/p/q');
  assert.equal(req.query, 'x=1&y=2');
  assert.equal(req.host, 'svc.local:81');
  assert.equal(req.route, 'to-a');
  assert.equal(req.service, 'a');
  assert.equal(req.remoteAddress, '127.0.0.1');
  assert.ok(req.headers.some(([k, v]) => k === 'x-user' && v === 'bob'));
  assert.ok(req.headers.some(([k]) => k === 'x-request-id'));
  assert.deepEqual(host.imbalance(), { open: 0, repeated: 0 });
});

test('respond: the plugin answer goes to the client and the upstream is not called', async (t) => {
  const { host, port, a } = await setup(t);
  host.requestHook = () => ({ action: 'respond', status: 401, headers: [['www-authenticate', 'Bearer'], ['content-length', '999']], body: 'no token' });
  const r = await send(port);
  assert.equal(r.status, 401);
  assert.equal(r.body, 'no token');
  assert.equal(r.headers['www-authenticate'], 'Bearer');
  assert.equal(r.headers['content-length'], '8', 'length computed by the proxy');
  assert.ok(r.headers['x-request-id']);
  assert.equal(a.requests, 0);
  assert.deepEqual(host.imbalance(), { open: 0, repeated: 0 });
});

test('fail: status with x-isomesh-error and a JSON error body', async (t) => {
  const { host, port, a } = await setup(t);
  host.requestHook = () => ({ action: 'fail', status: 503, code: 'ISOMESH_ERR_PLUGIN_THREW', message: 'plugin auth threw' });
  const r = await send(port);
  assert.equal(r.status, 503);
  assert.equal(r.headers['x-isomesh-error'], 'ISOMESH_ERR_PLUGIN_THREW');
  assert.deepEqual(JSON.parse(r.body), { error: { code: 'ISOMESH_ERR_PLUGIN_THREW', message: 'plugin auth threw' } });
  assert.equal(a.requests, 0);
  assert.deepEqual(host.imbalance(), { open: 0, repeated: 0 });
});

test('continue with modified headers: the upstream sees the plugin’s headers', async (t) => {
  const { host, port } = await setup(t);
  host.requestHook = (req) => ({
    action: 'continue',
    headers: [...req.headers.filter(([k]) => k !== 'x-remove'), ['x-added', 'by-plugin'], ['connection', 'x-sneaky']],
  });
  const r = await send(port, { headers: { 'x-remove': 'gone', 'x-stay': 'here' } });
  const echo = JSON.parse(r.body);
  assert.equal(echo.service, 'a');
  assert.deepEqual(seenHeader(echo, 'x-added'), ['by-plugin']);
  assert.deepEqual(seenHeader(echo, 'x-remove'), []);
  assert.deepEqual(seenHeader(echo, 'x-stay'), ['here']);
  assert.notEqual(seenHeader(echo, 'connection')[0], 'x-sneaky', 'hop-by-hop headers from plugins are dropped');
});

test('service override from ctx.route(); an unknown service is 503 ISOMESH_ERR_PROXY_UNKNOWN_SERVICE', async (t) => {
  const { host, port, a, b } = await setup(t);
  host.requestHook = (req) => ({ action: 'continue', headers: req.headers, service: req.path === '/canary' ? 'b' : 'nope' });
  const r = await send(port, { path: '/canary' });
  assert.equal(JSON.parse(r.body).service, 'b');
  assert.equal(b.requests, 1);
  const bad = await send(port, { path: '/x' });
  assert.equal(bad.status, 503);
  assert.equal(bad.headers['x-isomesh-error'], 'ISOMESH_ERR_PROXY_UNKNOWN_SERVICE');
  assert.equal(a.requests, 0);
});

test('onResponse may rewrite status and headers, or fail the response', async (t) => {
  const { host, port } = await setup(t);
  host.responseHook = (res) => ({ action: 'continue', status: 299, headers: [...res.headers, ['x-served-by', 'isomesh']] });
  const r = await send(port);
  assert.equal(r.status, 299);
  assert.equal(r.headers['x-served-by'], 'isomesh');
  assert.equal(r.headers['x-upstream'], 'a');
  assert.equal(JSON.parse(r.body).service, 'a', 'body still streamed from the upstream');

  host.responseHook = () => ({ action: 'fail', status: 503, code: 'ISOMESH_ERR_PLUGIN_TIMEOUT', message: 'too slow' });
  const failed = await send(port);
  assert.equal(failed.status, 503);
  assert.equal(failed.headers['x-isomesh-error'], 'ISOMESH_ERR_PLUGIN_TIMEOUT');
  assert.equal(JSON.parse(failed.body).error.code, 'ISOMESH_ERR_PLUGIN_TIMEOUT');
  assert.deepEqual(host.imbalance(), { open: 0, repeated: 0 });
});

test('admission rejection: 429 with retry-after, no hook, no end', async (t) => {
  const host = new HostDouble();
  host.admit = () => ({ ok: false, status: 429, code: 'ISOMESH_ERR_QUOTA_RPS', message: 'tenant request rate exceeded', retryAfterSec: 2 });
  const { port, a } = await setup(t, host);
  const r = await send(port);
  assert.equal(r.status, 429);
  assert.equal(r.headers['retry-after'], '2');
  assert.equal(r.headers['x-isomesh-error'], 'ISOMESH_ERR_QUOTA_RPS');
  assert.equal(JSON.parse(r.body).error.message, 'tenant request rate exceeded');
  assert.equal(host.requests.length, 0);
  assert.equal(host.endCount.size, 0);
  assert.equal(a.requests, 0);
});

function abortAfter(port: number, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/', agent: false });
    req.on('error', () => resolve());
    req.on('close', () => resolve());
    req.end();
    setTimeout(() => req.destroy(), ms);
  });
}

async function waitFor(cond: () => boolean, ms = 2000): Promise<void> {
  for (let waited = 0; !cond() && waited < ms; waited += 10) await sleep(10);
  assert.ok(cond(), 'condition not reached in time');
}

test('end() once per begin when the client aborts while a hook is running', async (t) => {
  const { host, port, a } = await setup(t);
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  host.requestHook = async (req) => {
    await gate;
    return { action: 'continue', headers: req.headers };
  };
  await abortAfter(port, 50);
  await sleep(50);
  assert.equal(host.begun.length, 1);
  assert.equal(host.endCount.size, 0, 'end waits for the pending hook to settle');
  release();
  await waitFor(() => host.endCount.size === 1);
  await sleep(50);
  assert.deepEqual(host.imbalance(), { open: 0, repeated: 0 });
  assert.equal(a.requests, 0, 'an aborted request is not sent upstream');
});

test('end() once per begin when the client aborts while waiting for the upstream', async (t) => {
  const host = new HostDouble();
  const { proxy } = await startProxy(t, host);
  let upstreamClosed = false;
  const up = await startUpstream(t, 'hang', (req) => req.socket.on('close', () => (upstreamClosed = true)));
  await proxy.configure(tenantConfig('acme', [service('hang', [up.port])], [{ name: 'all', match: {}, to: { service: 'hang' } }]));
  await abortAfter(proxy.status('acme')!.listener!.port, 80);
  await waitFor(() => host.endCount.size === 1 && upstreamClosed);
  await sleep(30);
  assert.deepEqual(host.imbalance(), { open: 0, repeated: 0 });
  assert.equal(proxy.status('acme')!.inFlight, 0);
});

test('end() exactly once across many mixed outcomes', async (t) => {
  const { host, port } = await setup(t);
  let n = 0;
  host.requestHook = (req) => {
    n++;
    if (n % 3 === 0) return { action: 'respond', status: 200, headers: [], body: 'early' };
    if (n % 3 === 1) return { action: 'fail', status: 503, code: 'ISOMESH_ERR_PLUGIN_CRASHED', message: 'x' };
    return { action: 'continue', headers: req.headers };
  };
  await Promise.all(Array.from({ length: 30 }, (_, i) => send(port, { path: i % 5 === 0 ? '/' : `/r${i}` })));
  assert.equal(host.begun.length, 30);
  assert.deepEqual(host.imbalance(), { open: 0, repeated: 0 });
});

test('a rejected hook promise becomes 500 ISOMESH_ERR_INTERNAL and still ends the run', async (t) => {
  const { host, port } = await setup(t);
  host.requestHook = () => Promise.reject(new Error('host bug'));
  const r = await send(port);
  assert.equal(r.status, 500);
  assert.equal(r.headers['x-isomesh-error'], 'ISOMESH_ERR_INTERNAL');
  await waitFor(() => host.endCount.size === 1);
  assert.deepEqual(host.imbalance(), { open: 0, repeated: 0 });
});

test('regression (hostile corpus defect-plugin-content-length-reaches-upstream): framing comes from the downstream only', async (t) => {
  const { host, port, a } = await setup(t);
  host.requestHook = (req) => ({ action: 'continue', headers: [...req.headers, ['content-length', '64'], ['transfer-encoding', 'chunked']] });
  for (let i = 0; i < 3; i++) {
    const r = await send(port, { path: `/n/${i}` });
    assert.equal(r.status, 200, `request ${i} kept the pooled connection in sync`);
    const echo = JSON.parse(r.body);
    assert.equal(echo.url, `/n/${i}`);
    assert.deepEqual(seenHeader(echo, 'content-length'), []);
    assert.deepEqual(seenHeader(echo, 'transfer-encoding'), []);
  }
  const post = await send(port, { method: 'POST', path: '/p', body: 'hello' });
  assert.deepEqual(seenHeader(JSON.parse(post.body), 'content-length'), ['5'], 'the downstream length is kept');
  assert.equal(a.requests, 4);
});
