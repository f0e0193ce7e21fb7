import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { test } from 'node:test';
import { IsomeshError } from '../errors.ts';
import { DEFAULT_TENANT_SETTINGS } from './model.ts';
import { MIGRATIONS } from './schema.ts';
import { Store, sha256Digest } from './index.ts';

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'isomesh-store-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** A tenant with one of everything. Returns its token. */
function populate(store: Store, tenant = 'acme', port = 17001): string {
  store.putTenant(tenant, port);
  store.updateQuota(tenant, { maxPlugins: 4, weight: 3 });
  const token = store.mintToken(tenant);
  store.putService(tenant, 'web', { vip: '10.1.0.1:80', endpoints: [{ address: '127.0.0.1', port: 8080 }] });
  store.putRoute(tenant, 'api', { match: { pathPrefix: '/api' }, to: { service: 'web' } });
  store.publishPluginVersion(tenant, 'auth', { code: 'export default {onRequest(){}}', language: 'typescript', source: 'export default {onRequest(){}} // ts' });
  store.publishPluginVersion(tenant, 'auth', { code: 'export default {onRequest(){ return 2 }}', language: 'javascript' });
  store.setActivation(tenant, 'auth', { version: 1, canary: { version: 2, percent: 10 } });
  store.putChain(tenant, [{ plugin: 'auth', config: { header: 'x-t' }, failurePolicy: 'open', routes: ['api'] }]);
  store.putSecret(tenant, 'api-key', 's3cret');
  store.putTenant(tenant, port, { pathNormalization: 'merge_slashes', accessLog: { enabled: true, sample: 0.25 } });
  store.putRateLimit(tenant, 'per-user', { descriptors: [{ key: 'header:X-User' }, { key: 'route', value: 'api' }], limit: { requestsPerUnit: 100, unit: 'minute' } });
  return token;
}

function expectCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => err instanceof IsomeshError && err.code === code);
}

test('pragmas: WAL, synchronous=FULL, foreign keys, schema version', (t) => {
  const dir = tempDir(t);
  const store = new Store({ dir });
  t.after(() => store.close());
  // synchronous=2 is FULL: a commit is on disk before the API answers
  assert.deepEqual(store.pragmas(), { journalMode: 'wal', synchronous: 2, foreignKeys: 1, busyTimeout: 5000 });
  const db = new DatabaseSync(store.path, { readOnly: true });
  t.after(() => db.close());
  assert.ok((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version >= 1);
});

test('tenantConfig resolves the chain with active and canary code; generation grows on every change', (t) => {
  const store = new Store({ dir: tempDir(t) });
  t.after(() => store.close());
  const seen: string[] = [];
  store.onChange((tenant) => seen.push(tenant));
  populate(store);
  const cfg = store.tenantConfig('acme')!;
  assert.equal(cfg.listenerPort, 17001);
  assert.equal(cfg.quota.weight, 3);
  assert.equal(cfg.quota.memoryMb, 64);
  assert.deepEqual(cfg.services.map((s) => s.name), ['web']);
  assert.deepEqual(cfg.routes.map((r) => r.name), ['api']);
  assert.deepEqual(cfg.chain, [{ plugin: 'auth', config: { header: 'x-t' }, failurePolicy: 'open', routes: ['api'] }]);
  assert.equal(cfg.plugins.auth!.active!.version, 1);
  assert.equal(cfg.plugins.auth!.active!.code, 'export default {onRequest(){}}');
  assert.equal(cfg.plugins.auth!.active!.digest, sha256Digest('export default {onRequest(){}}'));
  assert.deepEqual({ v: cfg.plugins.auth!.canary!.version, p: cfg.plugins.auth!.canary!.percent }, { v: 2, p: 10 });
  assert.equal(cfg.plugins.auth!.canary!.code, 'export default {onRequest(){ return 2 }}');
  assert.deepEqual(cfg.secrets, { 'api-key': 's3cret' });
  assert.deepEqual(cfg.settings, { pathNormalization: 'merge_slashes', accessLog: { enabled: true, sample: 0.25 } });
  assert.deepEqual(cfg.rateLimits, [
    { name: 'per-user', descriptors: [{ key: 'header:x-user' }, { key: 'route', value: 'api' }], limit: { requestsPerUnit: 100, unit: 'minute' }, shadow: false },
  ]);
  assert.equal(cfg.services[0]!.protocol, 'http1', 'the default protocol is stored');
  assert.deepEqual(cfg.routes[0]!.upgrades, ['websocket'], 'the default upgrades are stored');
  assert.ok(seen.length >= 11 && seen.every((s) => s === 'acme'));
  const g = cfg.generation;
  store.putSecret('acme', 'other', 'x');
  assert.ok(store.tenantConfig('acme')!.generation > g);
  // re-created tenants never reuse a generation
  store.deleteTenant('acme');
  assert.equal(store.tenantConfig('acme'), undefined);
  store.putTenant('acme', 17001);
  assert.ok(store.tenantConfig('acme')!.generation > g);
});

test('publish is content-addressed and idempotent; versions are immutable', (t) => {
  const store = new Store({ dir: tempDir(t) });
  t.after(() => store.close());
  store.putTenant('a', 17000);
  store.putTenant('b', 17002);
  const v1 = store.publishPluginVersion('a', 'p', { code: 'X', language: 'bundle' });
  const again = store.publishPluginVersion('a', 'p', { code: 'X', language: 'bundle' });
  assert.deepEqual([v1.version, v1.created, again.version, again.created], [1, true, 1, false]);
  assert.equal(store.publishPluginVersion('a', 'p', { code: 'Y', language: 'bundle' }).version, 2);
  store.publishPluginVersion('b', 'q', { code: 'X', language: 'bundle' });
  const blobs = store.dump().blobs as Array<{ digest: string }>;
  assert.equal(blobs.length, 2, 'identical code across tenants is stored once');
  const db = new DatabaseSync(store.path);
  t.after(() => db.close());
  assert.throws(() => db.prepare("UPDATE plugin_versions SET size = 1 WHERE plugin = 'p'").run(), /immutable/);
  // deleting a plugin keeps blobs still referenced elsewhere
  store.deletePlugin('a', 'p');
  assert.deepEqual((store.dump().blobs as Array<{ digest: string }>).map((b) => b.digest), [sha256Digest('X')]);
});

test('maxPlugins, references and deletes are enforced by the store', (t) => {
  const store = new Store({ dir: tempDir(t) });
  t.after(() => store.close());
  populate(store);
  store.updateQuota('acme', { maxPlugins: 1 });
  expectCode(() => store.publishPluginVersion('acme', 'second', { code: 'Z', language: 'bundle' }), 'ISOMESH_ERR_QUOTA_MAX_PLUGINS');
  store.publishPluginVersion('acme', 'auth', { code: 'Z', language: 'bundle' }); // existing name: allowed
  expectCode(() => store.deleteService('acme', 'web'), 'ISOMESH_ERR_SERVICE_IN_USE');
  expectCode(() => store.deleteRoute('acme', 'api'), 'ISOMESH_ERR_ROUTE_IN_USE');
  expectCode(() => store.deletePlugin('acme', 'auth'), 'ISOMESH_ERR_PLUGIN_IN_CHAIN');
  expectCode(() => store.putRoute('acme', 'r2', { to: { service: 'missing' } }), 'ISOMESH_ERR_ROUTE_UNKNOWN_SERVICE');
  expectCode(() => store.setActivation('acme', 'auth', { version: 99 }), 'ISOMESH_ERR_PLUGIN_VERSION_NOT_FOUND');
  expectCode(() => store.putTenant('other', 17001), 'ISOMESH_ERR_TENANT_PORT_IN_USE');
  expectCode(() => store.putService('acme', 'web2', { vip: '10.1.0.1:80', endpoints: [{ address: '::1', port: 1 }] }), 'ISOMESH_ERR_SERVICE_VIP_CONFLICT');
  store.putChain('acme', []);
  expectCode(() => store.deleteRoute('acme', 'api'), 'ISOMESH_ERR_ROUTE_IN_USE'); // still used by rate limit per-user
  store.deleteRateLimit('acme', 'per-user');
  store.deleteRoute('acme', 'api');
  store.deleteService('acme', 'web');
  store.deletePlugin('acme', 'auth');
  assert.equal(store.listPlugins('acme').length, 0);
  assert.equal(store.freeListenerPort(new Set(), { min: 17000, max: 17002 }), 17000);
  assert.equal(store.freeListenerPort(new Set([17000]), { min: 17000, max: 17002 }), 17002);
});

test('restart: every piece of state survives close and re-open', (t) => {
  const dir = tempDir(t);
  let store = new Store({ dir });
  const token = populate(store);
  const before = store.dump();
  const cfgBefore = store.tenantConfig('acme');
  store.close();
  store = new Store({ dir });
  t.after(() => store.close());
  assert.deepEqual(store.dump(), before);
  assert.deepEqual(store.tenantConfig('acme'), cfgBefore);
  assert.deepEqual(store.resolveToken(token), { tenant: 'acme' });
  assert.equal(store.resolveToken(token + 'x'), undefined);
  assert.equal(store.getPluginVersion('acme', 'auth', 1)!.source, 'export default {onRequest(){}} // ts');
  assert.deepEqual(store.getChain('acme')[0]!.routes, ['api']);
  assert.deepEqual(store.listSecretNames('acme').map((s) => s.name), ['api-key']);
  assert.deepEqual(store.getTenant('acme')!.settings, { pathNormalization: 'merge_slashes', accessLog: { enabled: true, sample: 0.25 } });
  assert.deepEqual(store.listRateLimits('acme').map((r) => r.name), ['per-user']);
  // the token hash, never the token, is on disk
  assert.ok(!JSON.stringify(store.dump().tokens).includes(token));
});

test('crash consistency: a fault between statements rolls the whole write back', (t) => {
  const dir = tempDir(t);
  let armed = '';
  const store = new Store({
    dir,
    faultInjector: (point) => {
      if (point === armed) throw new Error(`injected fault at ${point}`);
    },
  });
  t.after(() => store.close());
  populate(store);
  const before = store.dump();
  assert.equal(before.ratelimits!.length, 1, 'the fault cases cover the ratelimits table');
  const events: string[] = [];
  store.onChange((tenant) => events.push(tenant));

  armed = 'publish:after-blob';
  expectCode(() => store.publishPluginVersion('acme', 'newp', { code: 'NEW CODE', language: 'bundle' }), 'ISOMESH_ERR_STORE_FAULT');
  assert.deepEqual(store.dump(), before, 'no plugin row, blob or version left behind');

  armed = 'deleteTenant:after-routes';
  expectCode(() => store.deleteTenant('acme'), 'ISOMESH_ERR_STORE_FAULT');
  assert.deepEqual(store.dump(), before, 'chain and routes are back');
  assert.deepEqual(events, [], 'no change is announced for a rolled-back write');

  // a trigger failing in the last statement of a write (another connection installs it)
  armed = '';
  const db = new DatabaseSync(store.path);
  t.after(() => db.close());
  db.exec("CREATE TRIGGER fail_versions BEFORE INSERT ON plugin_versions BEGIN SELECT RAISE(ABORT, 'disk on fire'); END;");
  const withTrigger = store.dump();
  expectCode(() => store.publishPluginVersion('acme', 'newp', { code: 'NEW CODE', language: 'bundle' }), 'ISOMESH_ERR_STORE_FAULT');
  assert.deepEqual(store.dump(), withTrigger);
  db.exec('DROP TRIGGER fail_versions');
  assert.equal(store.publishPluginVersion('acme', 'newp', { code: 'NEW CODE', language: 'bundle' }).version, 1);
});

test('crash consistency: a process killed mid-transaction leaves the previous state', (t) => {
  const dir = tempDir(t);
  const store = new Store({ dir });
  populate(store);
  const before = store.dump();
  store.close();
  // The child dies by SIGKILL between the blob insert and the version insert of a publish.
  const child = `
    import { Store } from ${JSON.stringify(new URL('./index.ts', import.meta.url).pathname)};
    const s = new Store({ dir: ${JSON.stringify(dir)}, faultInjector: (p) => { if (p === 'publish:after-blob') process.kill(process.pid, 'SIGKILL'); } });
    s.publishPluginVersion('acme', 'crashme', { code: 'CRASH', language: 'bundle' });
    console.log('not reached');
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  assert.ok(!r.stdout.includes('not reached'));
  const reopened = new Store({ dir });
  t.after(() => reopened.close());
  assert.deepEqual(reopened.dump(), before);
  assert.equal(reopened.getPlugin('acme', 'crashme'), undefined);
});

test('validation errors name the field', () => {
  const dir = mkdtempSync(join(tmpdir(), 'isomesh-store-'));
  const store = new Store({ dir });
  try {
    store.putTenant('acme', 17000);
    assert.throws(() => store.updateQuota('acme', { weight: 0 }), /weight must be an integer between 1 and/);
    assert.throws(() => store.putService('acme', 's', { vip: '10.0.0.1', endpoints: [{ address: 'a', port: 1 }] }), /vip must be "ip:port"/);
    assert.throws(() => store.putService('acme', 's', { endpoints: [{ address: 'a', port: 0 }] }), /endpoints\[0\]\.port/);
    assert.throws(() => store.putRoute('acme', 'r', { match: { pathRegex: '(' }, to: { service: 's' } }), /match\.pathRegex is not a valid regular expression/);
    assert.throws(() => store.putChain('acme', [{ plugin: 'nope' }]), /chain\[0\]\.plugin "nope" is not published/);
    assert.throws(() => store.putTenant('Bad', 17001), (e: unknown) => e instanceof IsomeshError && e.code === 'ISOMESH_ERR_TENANT_BAD_NAME');
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test('regression (hostile corpus defect-config-deeply-nested-gives-500): chain config depth and size are bounded with a 4xx', (t) => {
  const store = new Store({ dir: tempDir(t) });
  t.after(() => store.close());
  populate(store);
  const before = JSON.stringify(store.dump());
  let deep: Record<string, unknown> = {};
  for (let i = 0; i < 50_000; i++) deep = { d: deep };
  assert.throws(
    () => store.putChain('acme', [{ plugin: 'auth', config: deep }]),
    (err: unknown) => err instanceof IsomeshError && err.code === 'ISOMESH_ERR_CHAIN_INVALID' && err.status === 400 && /nested at most 32/.test(err.message),
  );
  const wide = { list: Array.from({ length: 20_000 }, (_, i) => i) };
  expectCode(() => store.putChain('acme', [{ plugin: 'auth', config: wide }]), 'ISOMESH_ERR_CHAIN_INVALID');
  assert.equal(JSON.stringify(store.dump()), before, 'nothing changed');
  store.putChain('acme', [{ plugin: 'auth', config: { a: { b: { c: [1, 2, { d: 'ok' }] } } } }]);
  assert.deepEqual(store.getChain('acme')[0]!.config, { a: { b: { c: [1, 2, { d: 'ok' }] } } });
});

test('migration from a v1 database: services get protocol http1, routes upgrades ["websocket"], tenants the default settings', (t) => {
  const dir = tempDir(t);
  // A state file as the previous isomesh left it: only migration 1, rows in the v1 shapes.
  const v1 = new DatabaseSync(join(dir, 'isomesh.db'));
  v1.exec(MIGRATIONS[0]!);
  v1.exec('PRAGMA user_version = 1');
  const at = '2026-01-01T00:00:00.000Z';
  v1.prepare('INSERT INTO tenants(name, listener_port, quota, generation, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)')
    .run('old', 17005, JSON.stringify({ memoryMb: 64, cpuMsPerRequest: 50, cpuMsPerSecond: 500, maxConcurrentRequests: 1024, requestsPerSecond: 0, maxPlugins: 16, maxBundleBytes: 1048576, weight: 1 }), 7, at, at);
  const svc = { name: 'web', endpoints: [{ address: '127.0.0.1', port: 8080, weight: 1 }], lb: 'ring_hash', connectTimeoutMs: 1000, timeoutMs: 15000 };
  v1.prepare('INSERT INTO services(tenant, name, vip, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)').run('old', 'web', null, JSON.stringify(svc), at, at);
  const route = { name: 'api', match: { pathPrefix: '/api' }, to: { service: 'web' }, timeoutMs: 500 };
  v1.prepare('INSERT INTO routes(tenant, name, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)').run('old', 'api', JSON.stringify(route), at, at);
  v1.close();

  const store = new Store({ dir });
  t.after(() => store.close());
  const db = new DatabaseSync(store.path, { readOnly: true });
  t.after(() => db.close());
  assert.equal((db.prepare('PRAGMA user_version').get() as { user_version: number }).user_version, MIGRATIONS.length);
  assert.deepEqual(store.getService('old', 'web'), { ...svc, protocol: 'http1', hashOn: 'sourceIp' }, 'nothing else of the service changed (a ring_hash service gets the default hashOn stored, as new ones do)');
  assert.deepEqual(store.getRoute('old', 'api'), { ...route, upgrades: ['websocket'] });
  assert.deepEqual(store.getTenant('old')!.settings, DEFAULT_TENANT_SETTINGS);
  const cfg = store.tenantConfig('old')!;
  assert.deepEqual([cfg.generation, cfg.settings, cfg.rateLimits], [7, DEFAULT_TENANT_SETTINGS, []]);
  assert.equal(cfg.services[0]!.protocol, 'http1');
  // the migrated state is fully writable: a rate limit on the old route, then the route is protected
  store.putRateLimit('old', 'rl', { descriptors: [{ key: 'route', value: 'api' }], limit: { requestsPerUnit: 5, unit: 'second' } });
  expectCode(() => store.deleteRoute('old', 'api'), 'ISOMESH_ERR_ROUTE_IN_USE');
});

test('tenant settings: defaults for a new tenant, partial updates keep the rest, generation moves only on a change', (t) => {
  const store = new Store({ dir: tempDir(t) });
  t.after(() => store.close());
  let rec = store.putTenant('acme', 17000).tenant;
  assert.deepEqual(rec.settings, DEFAULT_TENANT_SETTINGS);
  rec = store.putTenant('acme', 17000, { accessLog: { enabled: true } }).tenant;
  assert.deepEqual(rec.settings, { pathNormalization: 'base', accessLog: { enabled: true, sample: 1 } });
  rec = store.putTenant('acme', 17000, { accessLog: { sample: 0.5 }, pathNormalization: 'none' }).tenant;
  assert.deepEqual(rec.settings, { pathNormalization: 'none', accessLog: { enabled: true, sample: 0.5 } });
  const g = rec.generation;
  rec = store.putTenant('acme', 17001).tenant;
  assert.deepEqual([rec.listenerPort, rec.settings], [17001, { pathNormalization: 'none', accessLog: { enabled: true, sample: 0.5 } }], 'a port move keeps the settings');
  assert.ok(rec.generation > g);
  const same = store.putTenant('acme', 17001, { pathNormalization: 'none' }).tenant;
  assert.equal(same.generation, rec.generation, 'an update that changes nothing is not a new snapshot');
  const created = store.putTenant('beta', 17002, { pathNormalization: 'merge_slashes' });
  assert.deepEqual([created.created, created.tenant.settings], [true, { pathNormalization: 'merge_slashes', accessLog: { enabled: false, sample: 1 } }]);
  assert.deepEqual(store.tenantConfig('beta')!.settings, created.tenant.settings);
});

test("the store's own guard: new fields are validated without the API in front", (t) => {
  const store = new Store({ dir: tempDir(t) });
  t.after(() => store.close());
  populate(store);
  const before = store.dump();
  const ep = [{ address: '127.0.0.1', port: 1 }];
  const limit = { requestsPerUnit: 1, unit: 'second' };
  const cases: Array<[() => unknown, string, RegExp]> = [
    [() => store.putTenant('acme', 17001, { pathNormalization: 'strict' }), 'ISOMESH_ERR_TENANT_INVALID', /pathNormalization must be one of base, merge_slashes, none/],
    [() => store.putTenant('acme', 17001, { accessLog: { sample: 1.01 } }), 'ISOMESH_ERR_TENANT_INVALID', /accessLog\.sample must be a number between 0 and 1/],
    [() => store.putTenant('acme', 17001, { accessLog: { sample: Number.NaN } }), 'ISOMESH_ERR_TENANT_INVALID', /accessLog\.sample/],
    [() => store.putTenant('acme', 17001, { accessLog: { enabled: 1 } }), 'ISOMESH_ERR_TENANT_INVALID', /accessLog\.enabled must be a boolean/],
    [() => store.putTenant('acme', 17001, { accessLog: { on: true } }), 'ISOMESH_ERR_TENANT_INVALID', /accessLog\.on is not a known field/],
    [() => store.putTenant('acme', 17001, { quota: {} }), 'ISOMESH_ERR_TENANT_INVALID', /quota is not a known field/],
    [() => store.putService('acme', 's', { endpoints: ep, protocol: 'h3' }), 'ISOMESH_ERR_SERVICE_INVALID', /protocol must be one of http1, http2, grpc/],
    [() => store.putService('acme', 's', { endpoints: ep, hashOn: 'sourceIp' }), 'ISOMESH_ERR_SERVICE_INVALID', /hashOn applies only to lb "ring_hash" \(lb is "round_robin"\)/],
    [() => store.putService('acme', 's', { endpoints: ep, lb: 'ring_hash', hashOn: { header: 'x y' } }), 'ISOMESH_ERR_SERVICE_INVALID', /hashOn\.header must be a header name/],
    [() => store.putService('acme', 's', { endpoints: ep, lb: 'ring_hash', hashOn: { cookie: 'a=b' } }), 'ISOMESH_ERR_SERVICE_INVALID', /hashOn\.cookie must be a cookie name/],
    [() => store.putService('acme', 's', { endpoints: ep, lb: 'ring_hash', hashOn: { header: 'a', cookie: 'b' } }), 'ISOMESH_ERR_SERVICE_INVALID', /hashOn must be/],
    [() => store.putService('acme', 's', { endpoints: ep, lb: 'ring_hash', hashOn: 'destIp' }), 'ISOMESH_ERR_SERVICE_INVALID', /hashOn must be/],
    [() => store.putRoute('acme', 'r', { to: { service: 'web' }, upgrades: 'websocket' }), 'ISOMESH_ERR_ROUTE_INVALID', /upgrades must be an array/],
    [() => store.putRoute('acme', 'r', { to: { service: 'web' }, upgrades: ['a', 'A'] }), 'ISOMESH_ERR_ROUTE_INVALID', /upgrades\[1\] repeats "a"/],
    [() => store.putRoute('acme', 'r', { to: { service: 'web' }, upgrades: ['a/b'] }), 'ISOMESH_ERR_ROUTE_INVALID', /upgrades\[0\] must be a protocol name/],
    [() => store.putRoute('acme', 'r', { to: { service: 'web' }, upgrades: Array.from({ length: 9 }, (_, i) => `p${i}`) }), 'ISOMESH_ERR_ROUTE_INVALID', /at most 8/],
    [() => store.putRateLimit('acme', 'Bad', { descriptors: [{ key: 'path' }], limit }), 'ISOMESH_ERR_RATELIMIT_BAD_NAME', /rate limit name "Bad" is invalid/],
    [() => store.putRateLimit('acme', 'rl', { descriptors: [], limit }), 'ISOMESH_ERR_RATELIMIT_INVALID', /descriptors must be a non-empty array/],
    [() => store.putRateLimit('acme', 'rl', { descriptors: [{ key: 'header:' }], limit }), 'ISOMESH_ERR_RATELIMIT_INVALID', /descriptors\[0\]\.key header name must be a non-empty string/],
    [() => store.putRateLimit('acme', 'rl', { descriptors: [{ key: 'path' }, { key: 'path', value: '/x' }], limit }), 'ISOMESH_ERR_RATELIMIT_INVALID', /descriptors\[1\]\.key "path" repeats descriptors\[0\]\.key/],
    [() => store.putRateLimit('acme', 'rl', { descriptors: [{ key: 'route', value: 'ghost' }], limit }), 'ISOMESH_ERR_RATELIMIT_INVALID', /route "ghost", which does not exist/],
    [() => store.putRateLimit('acme', 'rl', { descriptors: [{ key: 'remote_address', value: '10.0.0' }], limit }), 'ISOMESH_ERR_RATELIMIT_INVALID', /must be an IP address/],
    [() => store.putRateLimit('acme', 'rl', { descriptors: [{ key: 'header:x', value: 'a\nb' }], limit }), 'ISOMESH_ERR_RATELIMIT_INVALID', /control characters/],
    [() => store.putRateLimit('acme', 'rl', { descriptors: [{ key: 'path' }], limit: { requestsPerUnit: 1e9 + 1, unit: 'second' } }), 'ISOMESH_ERR_RATELIMIT_INVALID', /limit\.requestsPerUnit must be an integer between 1 and 1000000000/],
    [() => store.putRateLimit('acme', 'rl', { descriptors: [{ key: 'path' }], limit: { requestsPerUnit: 1, unit: 'week' } }), 'ISOMESH_ERR_RATELIMIT_INVALID', /limit\.unit must be one of second, minute, hour, day/],
    [() => store.putRateLimit('acme', 'rl', { descriptors: [{ key: 'path' }], limit, shadow: 'yes' }), 'ISOMESH_ERR_RATELIMIT_INVALID', /shadow must be a boolean/],
    [() => store.putRateLimit('ghost', 'rl', { descriptors: [{ key: 'path' }], limit }), 'ISOMESH_ERR_TENANT_NOT_FOUND', /tenant "ghost"/],
    [() => store.deleteRateLimit('acme', 'ghost'), 'ISOMESH_ERR_RATELIMIT_NOT_FOUND', /rate limit "ghost" does not exist/],
  ];
  for (const [fn, code, message] of cases) {
    assert.throws(fn, (err: unknown) => err instanceof IsomeshError && err.code === code && message.test(err.message), `${code} ${message}`);
  }
  assert.deepEqual(store.dump(), before, 'nothing was stored');
});

test('rate limits: stored normalised, replace in place, protect their routes, die with the tenant', (t) => {
  const store = new Store({ dir: tempDir(t) });
  t.after(() => store.close());
  populate(store);
  const g = store.tenantConfig('acme')!.generation;
  const r = store.putRateLimit('acme', 'by-ip', { descriptors: [{ key: 'remote_address', value: '::1' }, { key: 'method', value: 'POST' }], limit: { requestsPerUnit: 3, unit: 'hour' }, shadow: true });
  assert.deepEqual(r, { created: true, rateLimit: { name: 'by-ip', descriptors: [{ key: 'remote_address', value: '::1' }, { key: 'method', value: 'POST' }], limit: { requestsPerUnit: 3, unit: 'hour' }, shadow: true } });
  assert.ok(store.tenantConfig('acme')!.generation > g, 'a new snapshot for the data plane');
  const v6 = store.putRateLimit('acme', 'by-ip', { descriptors: [{ key: 'remote_address', value: 'FD00:0:0::0:1' }], limit: { requestsPerUnit: 3, unit: 'hour' } });
  assert.deepEqual(v6.rateLimit.descriptors, [{ key: 'remote_address', value: 'fd00::1' }], 'IPv6 values in the form the peer address has');
  const mapped = store.putRateLimit('acme', 'by-ip', { descriptors: [{ key: 'remote_address', value: '::FFFF:127.0.0.1' }], limit: { requestsPerUnit: 3, unit: 'hour' } });
  assert.deepEqual(mapped.rateLimit.descriptors, [{ key: 'remote_address', value: '::ffff:127.0.0.1' }], 'an IPv4-mapped address keeps its dotted form, as Node reports it');
  const again = store.putRateLimit('acme', 'by-ip', { descriptors: [{ key: 'path', value: '/login' }], limit: { requestsPerUnit: 3, unit: 'day' } });
  assert.equal(again.created, false);
  assert.deepEqual(store.getRateLimit('acme', 'by-ip')!.descriptors, [{ key: 'path', value: '/login' }]);
  assert.deepEqual(store.listRateLimits('acme').map((x) => x.name), ['by-ip', 'per-user']);
  // per-user refers to route "api": the route cannot go while it does (the chain lets go of it first)
  store.putChain('acme', [{ plugin: 'auth' }]);
  assert.throws(() => store.deleteRoute('acme', 'api'), (e: unknown) => e instanceof IsomeshError && e.code === 'ISOMESH_ERR_ROUTE_IN_USE' && /rate limit\(s\) per-user/.test(e.message));
  store.deleteRateLimit('acme', 'per-user');
  store.deleteRoute('acme', 'api');
  store.deleteTenant('acme');
  assert.deepEqual(store.dump().ratelimits, [], "the tenant's rate limits went with it");
});
