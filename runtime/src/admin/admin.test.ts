import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import pino from 'pino';
import { ADMIN_TOKEN, startAdmin } from './testing.ts';

const TS_PLUGIN = "import { definePlugin } from '@isomesh/sdk';\nexport default definePlugin({ onRequest(req, ctx) {} });";

test('health, readiness, OpenAPI and metrics', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  assert.deepEqual((await f.call('GET', '/healthz', undefined, null)).json, { status: 'ok' });
  assert.equal((await f.call('GET', '/readyz', undefined, null)).status, 200);
  const doc = (await f.call('GET', '/openapi.json', undefined, null)).json;
  assert.equal(doc.openapi, '3.0.3');
  for (const path of ['/v1/tenants/{tenant}', '/v1/tenants/{tenant}/services/{name}', '/v1/tenants/{tenant}/plugins/{name}/versions', '/v1/tenants/{tenant}/chain']) {
    assert.ok(doc.paths[path], `OpenAPI documents ${path}`);
  }
  assert.equal(doc.paths['/v1/tenants/{tenant}/services/{name}'].put.requestBody.content['application/json'].schema.properties.endpoints.items.properties.port.maximum, 65535);
  assert.ok(doc.paths['/v1/tenants/{tenant}/plugins/{name}/versions'].post.requestBody.content['application/javascript']);
  await f.call('GET', '/v1/tenants');
  assert.equal((await f.call('GET', '/metrics', undefined, null)).status, 401, '/metrics needs the admin token');
  const metrics = await f.call('GET', '/metrics');
  assert.match(metrics.text, /isomesh_admin_requests_total\{route="\/v1\/tenants",status="200"\} 1/);
  assert.match(metrics.text, /isomesh_admin_requests_total\{route="\/metrics",status="401"\} 1/);
});

test('happy path through every endpoint', async (t) => {
  const f = await startAdmin({ listenerPorts: { min: 17100, max: 17199 } });
  t.after(() => f.close());
  const changes: string[] = [];
  f.store.onChange((tenant) => changes.push(tenant));

  // tenants
  let r = await f.call('PUT', '/v1/tenants/acme', {});
  assert.equal(r.status, 201);
  assert.equal(r.json.listenerPort, 17100, 'lowest free port in the range');
  assert.equal(f.proxy.bound.get('acme'), 17100, 'bound before answering');
  f.proxy.busy.add(17101); // taken by another process: allocation skips it
  r = await f.call('PUT', '/v1/tenants/beta', {});
  assert.deepEqual([r.status, r.json.listenerPort], [201, 17102]);
  r = await f.call('PUT', '/v1/tenants/acme', {});
  assert.deepEqual([r.status, r.json.listenerPort], [200, 17100]);
  r = await f.call('PUT', '/v1/tenants/acme', { listenerPort: 17150 });
  assert.deepEqual([r.status, r.json.listenerPort, f.proxy.bound.get('acme')], [200, 17150, 17150]);
  r = await f.call('GET', '/v1/tenants');
  assert.deepEqual(r.json.tenants.map((x: { name: string }) => x.name), ['acme', 'beta']);
  r = await f.call('GET', '/v1/tenants/acme');
  assert.deepEqual([r.status, r.json.name, r.json.quota.maxPlugins], [200, 'acme', 16]);

  // tokens and quota
  r = await f.call('POST', '/v1/tenants/acme/tokens');
  assert.equal(r.status, 201);
  const token = r.json.token as string;
  assert.ok(token.length >= 40);
  r = await f.call('PUT', '/v1/tenants/acme/quota', { memoryMb: 128, weight: 2 });
  assert.deepEqual([r.status, r.json.memoryMb, r.json.weight, r.json.cpuMsPerRequest], [200, 128, 2, 50]);
  r = await f.call('GET', '/v1/tenants/acme/quota', undefined, token);
  assert.deepEqual([r.status, r.json.memoryMb], [200, 128]);

  // services and routes (with the tenant's own token)
  const svc = { vip: '10.10.0.1:80', endpoints: [{ address: '127.0.0.1', port: 8080, weight: 2 }], lb: 'least_request', retries: { attempts: 2, on: ['5xx', 'reset'] }, circuitBreaker: { maxConnections: 10, maxPending: 5, consecutive5xx: 3, ejectionMs: 1000 } };
  r = await f.call('PUT', '/v1/tenants/acme/services/web', svc, token);
  assert.deepEqual([r.status, r.json.lb, r.json.timeoutMs], [201, 'least_request', 15000]);
  r = await f.call('PUT', '/v1/tenants/acme/services/web', { ...svc, timeoutMs: 2000 }, token);
  assert.deepEqual([r.status, r.json.timeoutMs], [200, 2000]);
  await f.call('PUT', '/v1/tenants/acme/services/web-v2', { endpoints: [{ address: 'localhost', port: 8081 }] }, token);
  r = await f.call('GET', '/v1/tenants/acme/services', undefined, token);
  assert.deepEqual(r.json.services.map((s: { name: string }) => s.name), ['web', 'web-v2']);
  assert.equal((await f.call('GET', '/v1/tenants/acme/services/web', undefined, token)).json.vip, '10.10.0.1:80');
  const route = { match: { pathPrefix: '/api', method: 'GET', headers: [{ name: 'X-User', present: true }] }, to: { weighted: [{ service: 'web', weight: 90 }, { service: 'web-v2', weight: 10 }] }, timeoutMs: 500 };
  r = await f.call('PUT', '/v1/tenants/acme/routes/api', route, token);
  assert.deepEqual([r.status, r.json.match.headers[0].name], [201, 'x-user']);
  assert.equal((await f.call('GET', '/v1/tenants/acme/routes', undefined, token)).json.routes.length, 1);
  assert.equal((await f.call('GET', '/v1/tenants/acme/routes/api', undefined, token)).json.timeoutMs, 500);

  // plugins: JSON source, a JS bundle, idempotent re-publish, activation with canary
  r = await f.call('POST', '/v1/tenants/acme/plugins/auth/versions', { source: TS_PLUGIN, language: 'typescript' }, token);
  assert.deepEqual([r.status, r.json.version, r.json.size], [201, 1, Buffer.byteLength(TS_PLUGIN)]);
  assert.match(r.json.digest, /^sha256:[0-9a-f]{64}$/);
  assert.equal(f.host.compiled.at(-1)!.maxBundleBytes, 1024 * 1024);
  const bundle = 'export default { onResponse() {} };';
  const res = await f.app.inject({ method: 'POST', url: '/v1/tenants/acme/plugins/auth/versions', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/javascript' }, payload: bundle });
  assert.equal(res.statusCode, 201, res.body);
  assert.equal(JSON.parse(res.body).version, 2);
  assert.equal(f.host.compiled.at(-1)!.language, 'bundle');
  r = await f.call('POST', '/v1/tenants/acme/plugins/auth/versions', { source: TS_PLUGIN, language: 'typescript' }, token);
  assert.deepEqual([r.status, r.json.version, r.json.created], [200, 1, false], 'same digest → the existing version');
  r = await f.call('PUT', '/v1/tenants/acme/plugins/auth/active', { version: 1, canary: { version: 2, percent: 25 } }, token);
  assert.deepEqual(r.json, { active: 1, canary: { version: 2, percent: 25 } });
  r = await f.call('GET', '/v1/tenants/acme/plugins/auth', undefined, token);
  assert.deepEqual([r.json.active, r.json.canary.version, r.json.versions.length], [1, 2, 2]);
  r = await f.call('GET', '/v1/tenants/acme/plugins/auth/versions', undefined, token);
  assert.deepEqual(r.json.versions.map((v: { language: string }) => v.language), ['typescript', 'bundle']);
  r = await f.call('GET', '/v1/tenants/acme/plugins/auth/versions/2', undefined, token);
  assert.equal(r.json.code, bundle);
  r = await f.call('GET', '/v1/tenants/acme/plugins', undefined, token);
  assert.deepEqual(r.json.plugins.map((p: { name: string; active: number }) => [p.name, p.active]), [['auth', 1]]);

  // chain
  const chain = [{ plugin: 'auth', config: { header: 'x-tenant' }, failurePolicy: 'open', routes: ['api'] }];
  r = await f.call('PUT', '/v1/tenants/acme/chain', chain, token);
  assert.deepEqual([r.status, r.json], [200, chain]);
  assert.deepEqual((await f.call('GET', '/v1/tenants/acme/chain', undefined, token)).json, chain);
  const cfg = f.store.tenantConfig('acme')!;
  assert.equal(cfg.plugins.auth!.active!.code, TS_PLUGIN);
  assert.equal(cfg.plugins.auth!.canary!.percent, 25);

  // secrets: write-only
  r = await f.call('PUT', '/v1/tenants/acme/secrets/db-password', { value: 'hunter2' }, token);
  assert.equal(r.status, 201);
  r = await f.call('GET', '/v1/tenants/acme/secrets', undefined, token);
  assert.deepEqual(r.json.secrets.map((s: { name: string }) => s.name), ['db-password']);
  assert.ok(!r.text.includes('hunter2'));
  assert.equal((await f.call('GET', '/v1/tenants/acme/secrets/db-password', undefined, token)).status, 404);
  assert.equal(f.store.tenantConfig('acme')!.secrets['db-password'], 'hunter2');

  // status
  f.host.statusOf = () => ({
    plugins: { 'auth@2': { health: 'degraded', lastError: { code: 'ISOMESH_ERR_PLUGIN_THREW', message: 'boom', at: 'now' }, invocations: 5, failures: 5, restarts: 1 } },
    usage: { cpuMsPerSecond: 12, memoryBytes: 2 * 1024 * 1024, inFlight: 1, rejections: { rps: 3, concurrency: 0, cpu: 0 } },
  });
  r = await f.call('GET', '/v1/tenants/acme/status', undefined, token);
  assert.equal(r.status, 200);
  assert.deepEqual(r.json.listener, { address: '127.0.0.1', port: 17150 });
  assert.equal(r.json.plugins[0].active.health, 'ok');
  assert.equal(r.json.plugins[0].canary.health, 'degraded');
  assert.equal(r.json.plugins[0].canary.lastError.message, 'boom');
  assert.deepEqual([r.json.usage.cpuMsPerSecond, r.json.usage.memoryMb, r.json.usage.inFlight, r.json.usage.rejections.rps], [12, 2, 2, 3]);
  assert.equal(r.json.quota.memoryMb, 128);

  // deletes, in dependency order
  assert.equal((await f.call('DELETE', '/v1/tenants/acme/plugins/auth', undefined, token)).status, 409);
  assert.equal((await f.call('PUT', '/v1/tenants/acme/chain', [], token)).status, 200);
  assert.equal((await f.call('DELETE', '/v1/tenants/acme/plugins/auth', undefined, token)).status, 204);
  assert.equal((await f.call('DELETE', '/v1/tenants/acme/services/web', undefined, token)).status, 409);
  assert.equal((await f.call('DELETE', '/v1/tenants/acme/routes/api', undefined, token)).status, 204);
  assert.equal((await f.call('DELETE', '/v1/tenants/acme/services/web', undefined, token)).status, 204);
  assert.equal((await f.call('DELETE', '/v1/tenants/acme/secrets/db-password', undefined, token)).status, 204);
  assert.equal((await f.call('DELETE', '/v1/tenants/acme')).status, 204);
  assert.equal(f.proxy.bound.has('acme'), false);
  assert.equal((await f.call('GET', '/v1/tenants/acme/quota', undefined, token)).status, 401, 'its tokens died with it');
  assert.equal((await f.call('GET', '/v1/tenants/acme')).status, 404);
  assert.ok(changes.includes('acme') && changes.includes('beta'));
});

test('a failed bind commits nothing; a port taken by a tenant is 409', async (t) => {
  const f = await startAdmin({ listenerPorts: { min: 17200, max: 17201 } });
  t.after(() => f.close());
  f.proxy.busy.add(17200);
  let r = await f.call('PUT', '/v1/tenants/one', { listenerPort: 17200 });
  assert.deepEqual([r.status, r.json.error.code], [409, 'ISOMESH_ERR_TENANT_PORT_IN_USE']);
  assert.equal(f.store.getTenant('one'), undefined);
  r = await f.call('PUT', '/v1/tenants/one', {});
  assert.deepEqual([r.status, r.json.listenerPort], [201, 17201]);
  r = await f.call('PUT', '/v1/tenants/two', {});
  assert.deepEqual([r.status, r.json.error.code], [409, 'ISOMESH_ERR_TENANT_NO_FREE_PORT']);
  r = await f.call('PUT', '/v1/tenants/two', { listenerPort: 17201 });
  assert.deepEqual([r.status, r.json.error.code], [409, 'ISOMESH_ERR_TENANT_PORT_IN_USE']);
  assert.deepEqual(f.store.tenantNames(), ['one']);
});

test('tenant isolation: a token reaches only its own tenant, and 403 reveals nothing', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  await f.call('PUT', '/v1/tenants/a', {});
  await f.call('PUT', '/v1/tenants/b', {});
  await f.call('PUT', '/v1/tenants/b/secrets/k', { value: 'v' });
  const tokenA = (await f.call('POST', '/v1/tenants/a/tokens')).json.token as string;
  for (const path of ['/v1/tenants/b', '/v1/tenants/b/services', '/v1/tenants/b/secrets', '/v1/tenants/b/status', '/v1/tenants/b/quota']) {
    const onB = await f.call('GET', path, undefined, tokenA);
    const onGhost = await f.call('GET', path.replace('/b', '/ghost'), undefined, tokenA);
    assert.deepEqual([onB.status, onB.json.error.code], [403, 'ISOMESH_ERR_AUTH_FORBIDDEN'], path);
    assert.deepEqual(onGhost.json, onB.json, `${path}: same answer whether or not the tenant exists`);
    assert.equal((await f.call('GET', path.replace('/b', '/a'), undefined, tokenA)).status, 200, `${path} on its own tenant`);
  }
  const put = await f.call('PUT', '/v1/tenants/b/secrets/k', { value: 'stolen' }, tokenA);
  assert.equal(put.status, 403);
  assert.equal(f.store.tenantConfig('b')!.secrets.k, 'v');
  // admin-only even on its own tenant
  for (const [method, path, body] of [['PUT', '/v1/tenants/a/quota', { weight: 9 }], ['POST', '/v1/tenants/a/tokens'], ['DELETE', '/v1/tenants/a'], ['GET', '/v1/tenants'], ['PUT', '/v1/tenants/a', {}]] as const) {
    const r = await f.call(method, path, body, tokenA);
    assert.deepEqual([r.status, r.json.error.code], [403, 'ISOMESH_ERR_AUTH_FORBIDDEN'], `${method} ${path}`);
  }
  assert.equal(f.store.getQuota('a')!.weight, 1);
});

test('restart: a new admin server on the same state dir serves the same state and tokens', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'isomesh-admin-restart-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  let f = await startAdmin({ dir });
  await f.call('PUT', '/v1/tenants/acme', { listenerPort: 17042 });
  const token = (await f.call('POST', '/v1/tenants/acme/tokens')).json.token as string;
  await f.call('PUT', '/v1/tenants/acme/services/web', { endpoints: [{ address: '127.0.0.1', port: 80 }] }, token);
  await f.call('POST', '/v1/tenants/acme/plugins/p/versions', { source: TS_PLUGIN }, token);
  await f.call('PUT', '/v1/tenants/acme/plugins/p/active', { version: 1 }, token);
  await f.call('PUT', '/v1/tenants/acme/chain', [{ plugin: 'p' }], token);
  await f.call('PUT', '/v1/tenants/acme/secrets/s', { value: 'v' }, token);
  const before = f.store.dump();
  await f.close();
  f = await startAdmin({ dir });
  t.after(() => f.close());
  assert.deepEqual(f.store.dump(), before);
  const r = await f.call('GET', '/v1/tenants/acme/plugins/p', undefined, token);
  assert.deepEqual([r.status, r.json.active], [200, 1]);
  assert.deepEqual((await f.call('GET', '/v1/tenants/acme/chain', undefined, token)).json, [{ plugin: 'p', config: {}, failurePolicy: 'closed' }]);
  assert.equal(f.store.tenantConfig('acme')!.plugins.p!.active!.code, TS_PLUGIN);
  assert.equal((await f.call('GET', '/v1/tenants/acme', undefined, token)).json.listenerPort, 17042);
});

test('a real listen on 127.0.0.1:0 serves the API over HTTP', async (t) => {
  const f = await startAdmin();
  t.after(() => f.close());
  const addr = await f.app.listen({ host: '127.0.0.1', port: 0 });
  const res = await fetch(`${addr}/v1/tenants/http-t`, { method: 'PUT', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: '{}' });
  assert.equal(res.status, 201);
  const bad = await fetch(`${addr}/v1/tenants/http-t`, { method: 'PUT', headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' }, body: '{"listenerPort":' });
  assert.deepEqual([bad.status, ((await bad.json()) as { error: { code: string } }).error.code], [400, 'ISOMESH_ERR_API_BAD_JSON']);
});

test('request logs carry neither tokens nor secret values', async (t) => {
  const lines: string[] = [];
  const sink = new Writable({ write(chunk, _enc, cb) { lines.push(String(chunk)); cb(); } });
  const f = await startAdmin({ logger: pino({ level: 'trace' }, sink) });
  t.after(() => f.close());
  await f.call('PUT', '/v1/tenants/acme', {});
  await f.call('PUT', '/v1/tenants/acme/secrets/pw', { value: 'super-secret-value' });
  await f.call('PUT', '/v1/tenants/acme/secrets/pw', { value: 42 });
  await f.call('GET', '/v1/tenants/acme', undefined, 'wrong-token-abcdef');
  const log = lines.join('');
  assert.ok(lines.length >= 8, 'requests were logged');
  assert.ok(!log.includes(ADMIN_TOKEN) && !log.includes('wrong-token-abcdef'), 'no token in logs');
  assert.ok(!log.includes('super-secret-value'), 'no secret value in logs');
});
