// End to end over real sockets: a daemon child process, an upstream, TypeScript plugins published
// through the API; requests through the tenant listener show the chain acting.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';
import { echoed, request, startEcho, type EchoUpstream } from '../support/http.ts';

let d: TestDaemon;
let echo: EchoUpstream;
let port: number;

const TAGGER = (tag: string): string => `
import { definePlugin } from '@isomesh/sdk';
export default definePlugin<{ prefix: string }>({
  onRequest(req, ctx) {
    req.headers.set('x-tag', ctx.config.prefix + '${tag}');
  },
  onResponse(res) {
    res.headers.set('x-tag-version', '${tag}');
  },
});`;

before(async () => {
  echo = await startEcho();
  d = await startDaemon();
  const t = await d.api('PUT', '/v1/tenants/shop', {});
  assert.equal(t.status, 201, JSON.stringify(t.body));
  port = t.body.listenerPort;
  assert.equal((await d.api('PUT', '/v1/tenants/shop/services/echo', { endpoints: [{ address: '127.0.0.1', port: echo.port }] })).status, 201);
  assert.equal((await d.api('PUT', '/v1/tenants/shop/routes/all', { match: { pathPrefix: '/' }, to: { service: 'echo' } })).status, 201);
});

after(async () => {
  await d?.stop();
  await echo?.close();
});

async function publish(plugin: string, source: string): Promise<number> {
  const r = await d.api('POST', `/v1/tenants/shop/plugins/${plugin}/versions`, { source, language: 'typescript' });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  assert.match(r.body.digest, /^sha256:[0-9a-f]{64}$/);
  return r.body.version;
}

async function activate(plugin: string, version: number): Promise<void> {
  const r = await d.api('PUT', `/v1/tenants/shop/plugins/${plugin}/active`, { version });
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

async function chain(entries: unknown[]): Promise<void> {
  const r = await d.api('PUT', '/v1/tenants/shop/chain', entries);
  assert.equal(r.status, 200, JSON.stringify(r.body));
}

/** Polls (bounded) until a request shows the expected value; returns how long it took. */
async function until(check: () => Promise<boolean>, limitMs = 2000): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < limitMs) {
    if (await check()) return Date.now() - start;
    await sleep(10);
  }
  throw new Error(`condition not met within ${limitMs} ms`);
}

test('a published TypeScript plugin modifies the request and the response', async () => {
  const v1 = await publish('tagger', TAGGER('v1'));
  await activate('tagger', v1);
  await chain([{ plugin: 'tagger', config: { prefix: 'p-' } }]);
  await until(async () => (await request(port, '/x')).headers['x-tag-version'] === 'v1');
  const res = await request(port, '/hello?q=1');
  assert.equal(res.status, 200);
  assert.equal(res.headers['x-tag-version'], 'v1');
  const seen = echoed(res);
  assert.equal(seen.headers['x-tag'], 'p-v1');
  assert.equal(seen.url, '/hello?q=1');
  assert.ok(res.headers['x-request-id'], 'x-request-id set');
  assert.ok(seen.headers['x-forwarded-for']?.includes('127.0.0.1'));
});

test('activation and rollback switch behaviour for new requests', async () => {
  const v2 = await publish('tagger', TAGGER('v2'));
  assert.ok(v2 > 1);
  await activate('tagger', v2);
  const tookMs = await until(async () => echoed(await request(port, '/')).headers['x-tag'] === 'p-v2');
  assert.ok(tookMs < 2000);
  await activate('tagger', 1); // rollback
  await until(async () => echoed(await request(port, '/')).headers['x-tag'] === 'p-v1');
  // Every request after the switch stays on v1.
  for (let i = 0; i < 20; i++) assert.equal(echoed(await request(port, '/')).headers['x-tag'], 'p-v1');
});

test('a plugin can answer early with ctx.respond', async () => {
  const v = await publish('gate', `
import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  onRequest(req, ctx) {
    if (!req.headers.get('authorization')) return ctx.respond(401, { body: 'no token', headers: { 'www-authenticate': 'Bearer' } });
  },
});`);
  await activate('gate', v);
  await chain([{ plugin: 'gate' }, { plugin: 'tagger', config: { prefix: 'p-' } }]);
  await until(async () => (await request(port, '/')).status === 401);
  const denied = await request(port, '/');
  assert.equal(denied.status, 401);
  assert.equal(denied.body, 'no token');
  assert.equal(denied.headers['www-authenticate'], 'Bearer');
  const hitsBefore = echo.hits();
  await request(port, '/');
  assert.equal(echo.hits(), hitsBefore, 'a responded request never reaches the upstream');
  const allowed = await request(port, '/', { headers: { authorization: 'Bearer x' } });
  assert.equal(allowed.status, 200);
  assert.equal(echoed(allowed).headers['x-tag'], 'p-v1');
});

test('failure policy closed answers 503 with x-isomesh-error; open skips the entry', async () => {
  const v = await publish('thrower', `
export default { onRequest() { throw new Error('boom'); } };`);
  await activate('thrower', v);
  await chain([{ plugin: 'thrower', failurePolicy: 'closed' }, { plugin: 'tagger', config: { prefix: 'p-' } }]);
  await until(async () => (await request(port, '/')).status === 503);
  const closed = await request(port, '/');
  assert.equal(closed.status, 503);
  assert.equal(closed.headers['x-isomesh-error'], 'ISOMESH_ERR_PLUGIN_THREW');

  await chain([{ plugin: 'thrower', failurePolicy: 'open' }, { plugin: 'tagger', config: { prefix: 'p-' } }]);
  await until(async () => (await request(port, '/')).status === 200);
  const open = await request(port, '/');
  assert.equal(open.status, 200);
  assert.equal(echoed(open).headers['x-tag'], 'p-v1', 'the rest of the chain still ran');

  const status = await d.api('GET', '/v1/tenants/shop/status');
  assert.equal(status.status, 200);
  assert.match(JSON.stringify(status.body), /degraded|boom|THREW/);
});

test('upstream refused is 502 and a slow upstream is 504, each with x-isomesh-error', async () => {
  const closedPort = await (async () => {
    const tmp = await startEcho('tmp');
    const p = tmp.port;
    await tmp.close();
    return p;
  })();
  await chain([]);
  await d.api('PUT', '/v1/tenants/shop/services/dead', { endpoints: [{ address: '127.0.0.1', port: closedPort }] });
  await d.api('PUT', '/v1/tenants/shop/routes/dead', { match: { pathPrefix: '/dead' }, to: { service: 'dead' } });
  // Routes are matched in order of creation: make sure /dead is tried before the catch-all.
  await until(async () => (await request(port, '/dead')).status === 502);
  const refused = await request(port, '/dead');
  assert.equal(refused.headers['x-isomesh-error'], 'ISOMESH_ERR_PROXY_UPSTREAM_REFUSED');

  const http = await import('node:http');
  const slow = http.createServer(() => {
    /* never answers */
  });
  await new Promise<void>((r) => slow.listen(0, '127.0.0.1', () => r()));
  try {
    const slowPort = (slow.address() as import('node:net').AddressInfo).port;
    await d.api('PUT', '/v1/tenants/shop/services/slow', { endpoints: [{ address: '127.0.0.1', port: slowPort }], timeoutMs: 200 });
    await d.api('PUT', '/v1/tenants/shop/routes/slow', { match: { pathPrefix: '/slow' }, to: { service: 'slow' } });
    await until(async () => (await request(port, '/slow')).status === 504, 5000);
    const timedOut = await request(port, '/slow');
    assert.equal(timedOut.headers['x-isomesh-error'], 'ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT');
  } finally {
    slow.closeAllConnections();
    slow.close();
  }
});

test('metrics count requests and plugin invocations per tenant', async () => {
  const res = await fetch(`${d.url}/metrics`, { headers: { authorization: `Bearer ${d.token}` } });
  assert.equal(res.status, 200);
  const text = await res.text();
  assert.match(text, /isomesh_requests_total\{[^}]*tenant="shop"/);
  assert.match(text, /isomesh_plugin_invocations_total\{[^}]*tenant="shop"[^}]*plugin="tagger"/);
});

test('/status shows usage against every quota and where the tenant\'s plugins run', async () => {
  const status = await d.api('GET', '/v1/tenants/shop/status');
  assert.equal(status.status, 200);
  const { usage, quota } = status.body;
  assert.equal(usage.limits.cpuMsPerRequest, quota.cpuMsPerRequest);
  assert.equal(usage.limits.maxConcurrentRequests, quota.maxConcurrentRequests);
  assert.equal(usage.limits.memoryBytes, quota.memoryMb * 1024 * 1024);
  assert.equal(usage.placement.mode, process.env.ISOMESH_HOST_MODE === 'inline' ? 'inline' : 'cordon', 'plugins run in a supervised worker process by default');
  if (usage.placement.mode === 'cordon') assert.ok(Number.isInteger(usage.placement.pid) && usage.placement.pid !== d.proc.pid);
  for (const k of ['rps', 'concurrency', 'cpu', 'queue']) assert.equal(typeof usage.rejections[k], 'number', k);
  assert.ok(usage.memoryBytes > 0, 'isolate heap is reported');
});
