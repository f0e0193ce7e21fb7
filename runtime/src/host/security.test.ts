import { test } from 'node:test';
import assert from 'node:assert/strict';
import ivm from 'isolated-vm';
import { newHost, oneRequest, request, tenantConfig } from './fixtures.ts';

const { host } = newHost();
test.after(() => host.close());

// Walks guest-reachable objects and records host handles (isolated-vm classes) and the secret's value.
const WALK = `(seen) => {
  const visit = new Set();
  const walk = (obj, path, depth) => {
    if (obj === null || (typeof obj !== 'object' && typeof obj !== 'function') || visit.has(obj) || depth > 3) return;
    visit.add(obj);
    for (const k of Reflect.ownKeys(obj)) {
      let v; try { v = obj[k]; } catch { continue; }
      const name = path + '.' + String(k);
      if ((v && typeof v === 'object') || typeof v === 'function') {
        const ctor = v && v.constructor && v.constructor.name;
        if (/^(Reference|ExternalCopy|Callback|NativeModule|Isolate|Context)$/.test(String(ctor))) seen.push('ivm:' + name + ':' + ctor);
      }
      if (typeof v === 'string' && v.includes('alpha-secret')) seen.push('secret:' + name);
      walk(v, name, depth + 1);
    }
  };
  return walk;
}`;

// Runs inside the isolate and reports what guest code can reach, as a header.
const PROBE = `export default { async onRequest(req, ctx) {
  const seen = [];
  const walk = (${WALK})(seen);
  walk(globalThis, 'globalThis', 0);
  walk(ctx, 'ctx', 0);
  let dyn = 'none';
  const spec = ['node', 'fs'].join(':'); try { await import(spec); dyn = 'imported'; } catch (e) { dyn = 'refused'; }
  let fn = 'none';
  try { fn = Function('return typeof process')(); } catch { fn = 'threw'; }
  req.headers.set('x-globals', Object.getOwnPropertyNames(globalThis).filter((k) => /^(process|require|module|exports|__isomesh|global|Buffer|setTimeout|fetch|ivm)$/.test(k)).join(',') || 'none');
  req.headers.set('x-process', typeof process + '/' + typeof require + '/' + fn);
  req.headers.set('x-import', dyn);
  req.headers.set('x-found', seen.join(',') || 'none');
  req.headers.set('x-secret', String(ctx.secrets.get('api-key')));
} };`;

test('guest code cannot reach process, require, import() or any host reference', async () => {
  host.configure(await tenantConfig(host, 'probe', [{ name: 'probe', source: PROBE }], { quota: { cpuMsPerRequest: 500 } }));
  const out = await oneRequest(host, 'probe', request());
  assert.equal(out.action, 'continue', JSON.stringify(out));
  const h = Object.fromEntries(out.action === 'continue' ? out.headers : []);
  assert.equal(h['x-globals'], 'none');
  assert.equal(h['x-process'], 'undefined/undefined/undefined');
  assert.equal(h['x-import'], 'refused');
  assert.equal(h['x-found'], 'none');
});

test("tenant B's plugin cannot find tenant A's secret anywhere in its isolate", async () => {
  host.configure(await tenantConfig(host, 'owner', [{ name: 'p', source: 'export default { onRequest() {} }' }], { secrets: { 'api-key': 'alpha-secret' } }));
  host.configure(await tenantConfig(host, 'snoop', [{ name: 'probe', source: PROBE }], { quota: { cpuMsPerRequest: 500 } }));
  const out = await oneRequest(host, 'snoop', request());
  const h = Object.fromEntries(out.action === 'continue' ? out.headers : []);
  assert.equal(h['x-found'], 'none');
  assert.equal(h['x-secret'], 'undefined');
  // The same probe in the owner's tenant does see it through ctx.secrets (so the probe can find it).
  host.configure(await tenantConfig(host, 'owner', [{ name: 'probe', source: PROBE }], { secrets: { 'api-key': 'alpha-secret' }, quota: { cpuMsPerRequest: 500 }, generation: 2 }));
  const own = await oneRequest(host, 'owner', request());
  const oh = Object.fromEntries(own.action === 'continue' ? own.headers : []);
  assert.equal(oh['x-secret'], 'alpha-secret');
});

test('plugins of one tenant run in separate contexts: globals do not leak between plugins', async () => {
  const writer = `export default { onRequest() { globalThis.shared = 'from-writer'; } };`;
  const reader = `export default { onRequest(req) { req.headers.set('x-shared', String(globalThis.shared)); } };`;
  host.configure(await tenantConfig(host, 'ctx', [{ name: 'w', source: writer }, { name: 'r', source: reader }]));
  const out = await oneRequest(host, 'ctx');
  assert.deepEqual(out.action === 'continue' && out.headers, [['x-shared', 'undefined']]);
});

test('positive control: the walk does detect a host Reference and a secret when they are reachable', () => {
  const isolate = new ivm.Isolate({ memoryLimit: 16 });
  try {
    const context = isolate.createContextSync();
    context.global.setSync('leak', new ivm.Reference({}));
    context.global.setSync('note', 'alpha-secret');
    const found = context.evalSync(`const seen = []; (${WALK})(seen)(globalThis, 'globalThis', 0); seen.join(',')`);
    assert.match(String(found), /ivm:globalThis\.leak:Reference/);
    assert.match(String(found), /secret:globalThis\.note/);
  } finally {
    isolate.dispose();
  }
});
