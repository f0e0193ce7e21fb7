// ctx.responseHeaders and ctx.skipOnResponse(): response header edits made in onRequest, applied by
// the host when the upstream's response arrives, and onResponse hooks a request does not need. In
// both host modes: the edits in chain order, before the onResponse hooks that are left; no pass for
// the response phase when only edits are left; edits of an entry that failed, was taken back or
// answered early are not applied; the host re-checks what the isolate hands back.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { newHost, request, tenantConfig } from './fixtures.ts';
import type { PluginHost } from './index.ts';
import { decodePass, type ChainPass } from './chain-pass.ts';

const EDITS = (tag: string) => `export default { onRequest(req, ctx) {
  ctx.responseHeaders.delete('server');
  ctx.responseHeaders.set('x-${tag}', ctx.requestId);
  ctx.responseHeaders.append('x-all', '${tag}');
} };`;
/** Reads in onResponse what the edits left; skips itself when asked to by the request. */
const READER = `export default {
  onRequest(req, ctx) { if (req.headers.get('x-skip') !== null) ctx.skipOnResponse(); },
  onResponse(res) { res.headers.set('x-reader', (res.headers.get('x-all') ?? 'none') + '|' + (res.headers.get('server') ?? 'no-server')); },
};`;
const RESPONSE_ONLY = `export default { onResponse(res) { res.headers.set('x-response-only', '1'); } };`;

function passesOf(host: PluginHost, tenant: string): number {
  const c = host.cordons().find((x) => x.id === host.status(tenant).usage.placement?.cordon);
  return c?.passes ?? 0;
}

async function run(host: PluginHost, tenant: string, id: string, reqHeaders: Array<[string, string]> = []) {
  const adm = host.begin(tenant, id);
  assert.ok(adm.ok);
  try {
    const req = await host.onRequest(adm.run, request({ headers: reqHeaders }));
    const hooks = host.hasResponseHooks(adm.run);
    const res = await host.onResponse(adm.run, { status: 200, headers: [['server', 'nginx'], ['x-all', 'up'], ['content-type', 'text/plain']] });
    return { req, hooks, res };
  } finally {
    host.end(adm.run);
  }
}

for (const mode of ['inline', 'cordon'] as const) {
  test(`[${mode}] edits of every entry apply in chain order, before the onResponse hooks left`, async (t) => {
    const { host } = newHost({ mode, cordons: 1 });
    t.after(() => host.close());
    host.configure(await tenantConfig(host, 'ed', [{ name: 'a', source: EDITS('a') }, { name: 'b', source: EDITS('b') }, { name: 'reader', source: READER }]));
    const { req, hooks, res } = await run(host, 'ed', 'r-1');
    assert.equal(req.action, 'continue');
    assert.ok(req.action === 'continue' && req.responseHeaders !== undefined);
    assert.equal(hooks, true);
    // server removed, x-all appended to (not replaced): the reader's onResponse sees up, a, b.
    assert.deepEqual(res, {
      action: 'continue',
      status: 200,
      headers: [['x-all', 'up'], ['content-type', 'text/plain'], ['x-a', 'r-1'], ['x-all', 'a'], ['x-b', 'r-1'], ['x-all', 'b'], ['x-reader', 'up, a, b|no-server']],
    });
  });

  test(`[${mode}] only edits left: no response pass; a skipped onResponse is not called, the others are`, async (t) => {
    const { host } = newHost({ mode, cordons: 1 });
    t.after(() => host.close());
    host.configure(await tenantConfig(host, 'sk', [{ name: 'a', source: EDITS('a') }, { name: 'reader', source: READER }]));
    host.configure(await tenantConfig(host, 'sk2', [{ name: 'reader', source: READER }, { name: 'tail', source: RESPONSE_ONLY }]));
    await run(host, 'sk', 'warm');
    const before = passesOf(host, 'sk');
    const skipped = await run(host, 'sk', 'r-2', [['x-skip', '1']]);
    assert.equal(skipped.hooks, true, 'the edits are still to be applied');
    assert.deepEqual(skipped.res, { action: 'continue', status: 200, headers: [['x-all', 'up'], ['content-type', 'text/plain'], ['x-a', 'r-2'], ['x-all', 'a']] });
    if (mode === 'cordon') assert.equal(passesOf(host, 'sk') - before, 1, 'the onRequest pass only');
    // Another entry's onResponse still runs when one entry skips its own.
    const other = await run(host, 'sk2', 'r-3', [['x-skip', '1']]);
    assert.equal(other.hooks, true);
    assert.deepEqual(other.res, { action: 'continue', status: 200, headers: [['server', 'nginx'], ['x-all', 'up'], ['content-type', 'text/plain'], ['x-response-only', '1']] });
    // Nothing left at all: hasResponseHooks is false and onResponse changes nothing.
    host.configure(await tenantConfig(host, 'sk3', [{ name: 'reader', source: READER }]));
    const none = await run(host, 'sk3', 'r-4', [['x-skip', '1']]);
    assert.equal(none.hooks, false);
    assert.deepEqual(none.res, { action: 'continue', status: 200, headers: [['server', 'nginx'], ['x-all', 'up'], ['content-type', 'text/plain']] });
  });

  test(`[${mode}] edits of an entry that failed (open), of an early answer, or of a call in onResponse do not apply`, async (t) => {
    const { host } = newHost({ mode, cordons: 1 });
    t.after(() => host.close());
    const throwsAfter = `export default { onRequest(req, ctx) { ctx.responseHeaders.set('x-lost', '1'); ctx.skipOnResponse(); throw new Error('after the edit'); }, onResponse(res) { res.headers.set('x-ran', '1'); } };`;
    host.configure(await tenantConfig(host, 'fo', [{ name: 'bad', source: throwsAfter, failurePolicy: 'open' }, { name: 'a', source: EDITS('a') }]));
    const failed = await run(host, 'fo', 'r-5');
    // The failed entry's edit and skip are gone (its onResponse runs); the next entry's edits apply.
    assert.deepEqual(failed.res, { action: 'continue', status: 200, headers: [['x-all', 'up'], ['content-type', 'text/plain'], ['x-a', 'r-5'], ['x-all', 'a'], ['x-ran', '1']] });
    const early = `export default { onRequest(req, ctx) { return ctx.respond(401, { body: 'no' }); } };`;
    host.configure(await tenantConfig(host, 'er', [{ name: 'a', source: EDITS('a') }, { name: 'deny', source: early }]));
    const adm = host.begin('er', 'r-6');
    assert.ok(adm.ok);
    const out = await host.onRequest(adm.run, request());
    assert.deepEqual(out, { action: 'respond', status: 401, headers: [], body: 'no' });
    host.end(adm.run);
    const inResponse = `export default { onResponse(res, ctx) { ctx.responseHeaders.set('x-a', '1'); } };`;
    const skipInResponse = `export default { onResponse(res, ctx) { ctx.skipOnResponse(); } };`;
    host.configure(await tenantConfig(host, 'ir', [{ name: 'a', source: inResponse }, { name: 'b', source: skipInResponse, failurePolicy: 'closed' }]));
    const r = await run(host, 'ir', 'r-7');
    assert.equal(r.res.action, 'fail');
    assert.equal(r.res.action === 'fail' && r.res.code, 'ISOMESH_ERR_PLUGIN_THREW');
    assert.match(r.res.action === 'fail' ? r.res.message : '', /ctx\.responseHeaders is for onRequest/);
  });

  test(`[${mode}] bad edits throw in the plugin: names, values, more than 64 in a call`, async (t) => {
    const { host } = newHost({ mode, cordons: 1 });
    t.after(() => host.close());
    const cases: Array<[string, RegExp]> = [
      [`ctx.responseHeaders.set('bad name', 'v')`, /invalid header name/],
      [`ctx.responseHeaders.set('x-a', 'a\\r\\nb')`, /invalid header value/],
      [`for (let i = 0; i < 65; i++) ctx.responseHeaders.append('x-n', String(i))`, /at most 64 edits per call/],
    ];
    let i = 0;
    for (const [code, message] of cases) {
      const name = `bad${i++}`;
      host.configure(await tenantConfig(host, name, [{ name: 'p', source: `export default { onRequest(req, ctx) { ${code}; } };` }]));
      const adm = host.begin(name, 'x');
      assert.ok(adm.ok);
      const out = await host.onRequest(adm.run, request());
      host.end(adm.run);
      assert.equal(out.action === 'fail' && out.code, 'ISOMESH_ERR_PLUGIN_THREW', code);
      assert.match(out.action === 'fail' ? out.message : '', message);
    }
    // 64 in each of five entries is over the chain's 256: the fifth entry fails as a bad result.
    const many = `export default { onRequest(req, ctx) { for (let i = 0; i < 64; i++) ctx.responseHeaders.append('x-n', String(i)); } };`;
    host.configure(await tenantConfig(host, 'many', ['a', 'b', 'c', 'd', 'e'].map((n) => ({ name: n, source: many }))));
    const adm = host.begin('many', 'y');
    assert.ok(adm.ok);
    const out = await host.onRequest(adm.run, request());
    host.end(adm.run);
    assert.equal(out.action === 'fail' && out.code, 'ISOMESH_ERR_PLUGIN_BAD_RESULT');
    assert.match(out.action === 'fail' ? out.message : '', /more than 256 response header edits/);
  });
}

test('the host checks the edits and skips the runner hands back (the isolate is untrusted)', () => {
  const pass: ChainPass = {
    phase: 'onRequest', requestId: 'r', generation: 1, cpuBudgetMs: 10,
    entries: [{ key: 'p@1', plugin: 'p', configId: 1, failurePolicy: 'open' }, { key: 'q@1', plugin: 'q', configId: 2, failurePolicy: 'open' }],
    req: { method: 'GET', path: '/', query: '', host: 'h', remoteAddress: '127.0.0.1', headers: [] },
  };
  const wire = (json: object) => ({ json: JSON.stringify(json), cpuNs: [0, 0], wallMs: [0, 0] });
  const ok = decodePass(pass, wire({ a: 'c', r: [], rh: [['set', 'x-a', '1'], ['delete', 'server'], ['append', 'x-b', '2']], sk: [0, 1] }));
  assert.deepEqual(ok.outcome, { action: 'continue', headers: [], responseHeaders: [['set', 'x-a', '1'], ['delete', 'server'], ['append', 'x-b', '2']] });
  assert.deepEqual(ok.skipResponse, [0, 1]);
  for (const bad of [
    { rh: [['set', 'X A', '1']] },
    { rh: [['set', 'x-a', 'a\nb']] },
    { rh: [['replace', 'x-a', '1']] },
    { rh: [['delete', 'x-a', 'extra']] },
    { rh: 'x' },
    { rh: Array.from({ length: 257 }, () => ['delete', 'x']) },
    { sk: [2] },
    { sk: [1, 0] },
    { sk: [0, 0] },
    { sk: ['0'] },
  ]) {
    const out = decodePass(pass, wire({ a: 'c', r: [], ...bad }));
    assert.equal(out.outcome.action === 'fail' && out.outcome.code, 'ISOMESH_ERR_PLUGIN_BAD_RESULT', JSON.stringify(bad).slice(0, 80));
  }
  const res = decodePass({ ...pass, phase: 'onResponse', res: { status: 200, headers: [] } }, wire({ a: 'c', r: [], rh: [['delete', 'x']] }));
  assert.equal(res.outcome.action === 'fail' && res.outcome.code, 'ISOMESH_ERR_PLUGIN_BAD_RESULT');
});
