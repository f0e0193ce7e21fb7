import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { test } from 'node:test';
import { IsomeshError } from '../errors.ts';
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
  assert.ok(seen.length >= 9 && seen.every((s) => s === 'acme'));
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
