import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Registry } from 'prom-client';
import { hashRequestId, PluginHost } from './index.ts';
import { newHost, oneRequest, request, tenantConfig } from './fixtures.ts';

const { host, registry } = newHost();
test.after(() => host.close());

const SET_HEADER = `import { definePlugin } from '@isomesh/sdk';
export default definePlugin<{ header: string; value?: string }>({
  onRequest(req, ctx) { req.headers.set(ctx.config.header, ctx.config.value ?? ctx.tenant); },
  onResponse(res) { res.headers.set('x-served-by', 'isomesh'); },
});`;

test('headers set by one entry reach the next entry and the upstream; config is per entry', async () => {
  const echo = `export default { onRequest(req, ctx) { req.headers.set('x-seen', req.headers.get('x-first') ?? 'none'); } };`;
  host.configure(await tenantConfig(host, 'hdr', [
    { name: 'first', source: SET_HEADER, config: { header: 'x-first', value: 'one' } },
    { name: 'second', source: echo },
  ]));
  const out = await oneRequest(host, 'hdr', request({ headers: [['accept', '*/*']] }));
  assert.equal(out.action, 'continue');
  assert.deepEqual(out.action === 'continue' && out.headers, [['accept', '*/*'], ['x-first', 'one'], ['x-seen', 'one']]);
});

test('ctx.respond stops the chain whether returned or only called', async () => {
  const returned = `export default { onRequest(req, ctx) { if (!req.headers.get('authorization')) return ctx.respond(401, { body: 'no token', headers: { 'www-authenticate': 'Bearer' } }); } };`;
  const called = `export default { onRequest(req, ctx) { ctx.respond(418, { body: 'teapot' }); } };`;
  const never = `export default { onRequest() { throw new Error('must not run'); } };`;
  host.configure(await tenantConfig(host, 'resp', [{ name: 'auth', source: returned }, { name: 'tea', source: called }, { name: 'never', source: never }]));
  assert.deepEqual(await oneRequest(host, 'resp'), { action: 'respond', status: 401, headers: [['www-authenticate', 'Bearer']], body: 'no token' });
  assert.deepEqual(await oneRequest(host, 'resp', request({ headers: [['authorization', 'x']] })), { action: 'respond', status: 418, headers: [], body: 'teapot' });
});

test('ctx.route picks a known service; an unknown one is a bad result', async () => {
  const route = `export default { onRequest(req, ctx) { ctx.route(req.headers.get('x-to') ?? 'reviews-v1'); } };`;
  host.configure(await tenantConfig(host, 'rt', [{ name: 'canary', source: route }], { services: ['reviews-v1', 'reviews-v2'] }));
  const out = await oneRequest(host, 'rt', request({ headers: [['x-to', 'reviews-v2']] }));
  assert.equal(out.action === 'continue' && out.service, 'reviews-v2');
  const bad = await oneRequest(host, 'rt', request({ headers: [['x-to', 'elsewhere']] }));
  assert.equal(bad.action === 'fail' && bad.code, 'ISOMESH_ERR_PLUGIN_BAD_RESULT');
});

test('entries with routes apply only to those routes', async () => {
  host.configure(await tenantConfig(host, 'routes', [{ name: 'only-api', source: SET_HEADER, config: { header: 'x-api' }, routes: ['api'] }]));
  const onApi = await oneRequest(host, 'routes', request({ route: 'api' }));
  const elsewhere = await oneRequest(host, 'routes', request({ route: 'web' }));
  assert.deepEqual(onApi.action === 'continue' && onApi.headers, [['x-api', 'routes']]);
  assert.deepEqual(elsewhere.action === 'continue' && elsewhere.headers, []);
});

test('onResponse edits status and headers; async hooks are awaited', async () => {
  const asyncHook = `export default {
    async onRequest(req, ctx) { await Promise.resolve(); const v = await new Promise((r) => r('later')); req.headers.set('x-async', v); },
    async onResponse(res) { await null; res.status = 299; res.headers.append('x-async', 'yes'); },
  };`;
  host.configure(await tenantConfig(host, 'async', [{ name: 'a', source: asyncHook }]));
  const adm = host.begin('async', 'req-1');
  assert.ok(adm.ok);
  const out = await host.onRequest(adm.run, request());
  assert.deepEqual(out.action === 'continue' && out.headers, [['x-async', 'later']]);
  assert.equal(host.hasResponseHooks(adm.run), true);
  const res = await host.onResponse(adm.run, { status: 200, headers: [['content-type', 'text/plain']] });
  assert.deepEqual(res, { action: 'continue', status: 299, headers: [['content-type', 'text/plain'], ['x-async', 'yes']] });
  host.end(adm.run);
});

test('hasResponseHooks is false when no applicable version has onResponse', async () => {
  host.configure(await tenantConfig(host, 'noresp', [{ name: 'req-only', source: 'export default { onRequest() {} }' }]));
  const adm = host.begin('noresp', 'x');
  assert.ok(adm.ok);
  assert.equal(host.hasResponseHooks(adm.run), false);
  host.end(adm.run);
});

test('secrets are visible only to their own tenant', async () => {
  const reader = `export default { onRequest(req, ctx) { req.headers.set('x-secret', String(ctx.secrets.get('api-key'))); } };`;
  host.configure(await tenantConfig(host, 'sec-a', [{ name: 'r', source: reader }], { secrets: { 'api-key': 'alpha-secret' } }));
  host.configure(await tenantConfig(host, 'sec-b', [{ name: 'r', source: reader }], { secrets: {} }));
  const a = await oneRequest(host, 'sec-a');
  const b = await oneRequest(host, 'sec-b');
  assert.deepEqual(a.action === 'continue' && a.headers, [['x-secret', 'alpha-secret']]);
  assert.deepEqual(b.action === 'continue' && b.headers, [['x-secret', 'undefined']]);
  // A secret changed by reconfiguration is seen by the next request.
  host.configure(await tenantConfig(host, 'sec-a', [{ name: 'r', source: reader }], { secrets: { 'api-key': 'rotated' }, generation: 2 }));
  const a2 = await oneRequest(host, 'sec-a');
  assert.deepEqual(a2.action === 'continue' && a2.headers, [['x-secret', 'rotated']]);
});

test('canary split is deterministic per request id and close to the percent', async () => {
  const v = (n: number) => `export default { onRequest(req) { req.headers.set('x-version', '${n}'); } };`;
  host.configure(await tenantConfig(host, 'canary', [{ name: 'p', source: v(1), version: 1, canary: { source: v(2), version: 2, percent: 20 } }]));
  let canary = 0;
  for (let i = 0; i < 1000; i++) {
    const id = `req-${i}`;
    const out = await oneRequest(host, 'canary', request(), id);
    const version = out.action === 'continue' ? out.headers[0]?.[1] : undefined;
    assert.equal(version, hashRequestId(id) % 100 < 20 ? '2' : '1');
    if (version === '2') canary++;
  }
  assert.ok(canary > 150 && canary < 250, `canary share ${canary}/1000`);
  const again = await oneRequest(host, 'canary', request(), 'req-7');
  assert.equal(again.action === 'continue' && again.headers[0]?.[1], hashRequestId('req-7') % 100 < 20 ? '2' : '1');
  const status = host.status('canary');
  assert.ok((status.plugins['p@1']?.invocations ?? 0) > 700);
  assert.ok((status.plugins['p@2']?.invocations ?? 0) > 150);
});

test('reconfiguration applies to new requests at once; in-flight requests keep their versions', async () => {
  const v = (n: number) => `export default { onRequest(req) { req.headers.set('x-version', '${n}'); }, onResponse(res) { res.headers.set('x-version', '${n}'); } };`;
  host.configure(await tenantConfig(host, 'pin', [{ name: 'p', source: v(1), version: 1 }]));
  const inflight = host.begin('pin', 'old');
  assert.ok(inflight.ok);
  const first = await host.onRequest(inflight.run, request());
  assert.deepEqual(first.action === 'continue' && first.headers, [['x-version', '1']]);
  const next = await tenantConfig(host, 'pin', [{ name: 'p', source: v(2), version: 2 }], { generation: 2 });
  const t0 = performance.now();
  host.configure(next);
  assert.ok(performance.now() - t0 < 100, 'configure took over 100 ms');
  const fresh = await oneRequest(host, 'pin');
  assert.deepEqual(fresh.action === 'continue' && fresh.headers, [['x-version', '2']]);
  const res = await host.onResponse(inflight.run, { status: 200, headers: [] });
  assert.deepEqual(res.action === 'continue' && res.headers, [['x-version', '1']]);
  host.end(inflight.run);
  host.end(inflight.run); // idempotent
  assert.equal(host.status('pin').usage.inFlight, 0);
});

test('metrics are exported with tenant and plugin labels', async () => {
  host.configure(await tenantConfig(host, 'metrics', [{ name: 'm', source: SET_HEADER, config: { header: 'x-m' } }]));
  await oneRequest(host, 'metrics');
  const text = await registry.metrics();
  assert.match(text, /isomesh_plugin_invocations_total\{tenant="metrics",plugin="m",version="1",outcome="ok"\} 1/);
  assert.match(text, /isomesh_plugin_cpu_seconds_total\{tenant="metrics",plugin="m"\} [0-9.e-]+/);
  assert.match(text, /isomesh_plugin_duration_seconds_count\{tenant="metrics",plugin="m"\} 1/);
});

test('ctx.log reaches the host logger with tenant and plugin labels, bounded', async () => {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({ write(chunk, _enc, cb) { lines.push(JSON.parse(String(chunk))); cb(); } });
  const logged = new PluginHost({ logger: pino({ level: 'debug' }, sink), registry: new Registry() });
  try {
    const src = `export default { onRequest(req, ctx) { ctx.log.warn('hello', { n: 1 }); for (let i = 0; i < 100; i++) ctx.log.debug('spam ' + i); } };`;
    logged.configure(await tenantConfig(logged, 'logs', [{ name: 'chatty', source: src }]));
    await oneRequest(logged, 'logs');
    await new Promise((r) => setImmediate(r));
    const fromPlugin = lines.filter((l) => l.source === 'plugin');
    assert.deepEqual(
      { tenant: fromPlugin[0]?.tenant, plugin: fromPlugin[0]?.plugin, msg: fromPlugin[0]?.msg, fields: fromPlugin[0]?.fields },
      { tenant: 'logs', plugin: 'chatty', msg: 'hello', fields: { n: 1 } },
    );
    assert.ok(fromPlugin.length <= 34, `${fromPlugin.length} lines forwarded for one call`);
    assert.match(String(fromPlugin.at(-1)?.msg), /dropped/);
  } finally {
    await logged.close();
  }
});
