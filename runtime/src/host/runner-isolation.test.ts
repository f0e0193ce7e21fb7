// One crossing runs a tenant's whole chain: the chain runner (a context of its own in the tenant's
// isolate) calls each plugin's context directly. What must still hold: a plugin cannot tamper with
// what another plugin of the same tenant sees (each keeps its own globals and intrinsics), and no
// plugin can reach the runner's context or another plugin's — not through arguments, `this`,
// `caller`, stack-trace call sites, prototypes or anything reachable from its own globals.
import { test } from 'node:test';
import vm from 'node:vm';
import assert from 'node:assert/strict';
import type { RequestOutcome } from './contract.ts';
import { newHost, request, tenantConfig } from './fixtures.ts';

// Of another realm: its prototype chain ends in some other context's Object.prototype.
const FOREIGN = `const ownRoot = Object.prototype;
    const isForeign = (v) => {
      let p = v;
      for (let i = 0; i < 64 && p !== null; i++) {
        if (p === ownRoot) return false;
        p = Object.getPrototypeOf(p);
      }
      // Ended without meeting our Object.prototype: another realm's (a bare null-prototype object
      // carries no realm; functions always have one).
      return typeof v === 'function' || Object.getPrototypeOf(v) !== null;
    };`;

// Runs first. Tampers with everything it can reach in its own context, then hunts for any object
// or function of another realm (the runner's or a sibling plugin's) reachable from where it stands.
const ATTACKER = `
Object.prototype.polluted = 'evil';
Array.prototype.includes = function () { return 'hijacked'; };
String.prototype.padStart = function () { return 'hijacked'; };
const realStringify = JSON.stringify;
JSON.stringify = function (v, ...rest) { return v && v.action ? '{"action":"respond","status":299,"headers":[],"body":"hijacked"}' : realStringify.call(this, v, ...rest); };
globalThis.sharedMarker = 'from-attacker';
export default {
  onRequest(req, ctx) {
    const foreign = [];
    const ownFunction = (function () {}).constructor;
    ${FOREIGN}
    // 1. Stack-trace call sites of every frame below this hook (the runner's frames among them).
    const prepare = Error.prepareStackTrace;
    Error.prepareStackTrace = (e, sites) => sites;
    const sites = new Error('x').stack;
    Error.prepareStackTrace = prepare;
    if (Array.isArray(sites)) for (const s of sites) {
      for (const v of [s.getThis?.(), s.getFunction?.()]) if (v !== undefined && isForeign(v)) foreign.push('callsite:' + String(s.getFunctionName?.()));
    }
    // 2. A sloppy function's caller chain.
    const sloppy = ownFunction('return function probe() { const out = []; let f = probe.caller; for (let i = 0; f && i < 20; i++) { out.push(f); try { f = f.caller; } catch (e) { break; } } return out; }')();
    for (const f of sloppy()) if (isForeign(f)) foreign.push('caller');
    // 3. Everything reachable from its globals, ctx and req (depth-bounded walk).
    const seen = new Set();
    const walk = (v, path, depth) => {
      if (v === null || (typeof v !== 'object' && typeof v !== 'function') || seen.has(v) || depth > 4) return;
      seen.add(v);
      if (isForeign(v)) { foreign.push('reachable:' + path); return; }
      for (const k of Reflect.ownKeys(v)) { let x; try { x = v[k]; } catch { continue; } walk(x, path + '.' + String(k), depth + 1); }
      walk(Object.getPrototypeOf(v), path + '.__proto__', depth + 1);
    };
    walk(globalThis, 'globalThis', 0); walk(ctx, 'ctx', 0); walk(req, 'req', 0);
    for (const name of ['__isomeshRunner', '__isomesh']) if (name in globalThis) foreign.push(name);
    req.headers.set('x-attacker', foreign.length === 0 ? 'none' : foreign.join(','));
    // Its own result goes through its own JSON: restored, so the chain goes on to the victim.
    JSON.stringify = realStringify;
  },
};`;

// Runs second, in the same chain and isolate: reports what its own context looks like.
const VICTIM = `export default {
  onRequest(req) {
    const probe = [
      String(({}).polluted),
      String([1].includes(1)),
      String(typeof globalThis.sharedMarker),
      JSON.stringify({ a: [1] }),
      'a'.padStart(3, '-'),
    ].join('|');
    req.headers.set('x-victim', probe);
    req.headers.set('x-seen-attacker', req.headers.get('x-attacker') ?? 'missing');
  },
};`;

const header = (o: RequestOutcome, name: string) => (o.action === 'continue' ? o.headers.find(([k]) => k === name)?.[1] : undefined);

for (const mode of ['inline', 'cordon'] as const) {
  test(`[${mode}] a plugin of a tenant cannot tamper with another plugin of the same tenant, nor reach the chain runner`, async (t) => {
    const { host } = newHost({ mode, cordons: 1 });
    t.after(() => host.close());
    host.configure(await tenantConfig(host, 'iso', [{ name: 'attacker', source: ATTACKER }, { name: 'victim', source: VICTIM }]));
    for (let i = 0; i < 3; i++) {
      const adm = host.begin('iso', `iso-${i}`);
      assert.ok(adm.ok);
      const out = await host.onRequest(adm.run, request());
      host.end(adm.run);
      assert.equal(out.action, 'continue', JSON.stringify(out));
      // The attacker found nothing of another realm, and its edit reached the victim intact.
      assert.equal(header(out, 'x-attacker'), 'none');
      assert.equal(header(out, 'x-seen-attacker'), 'none');
      // The victim's context is pristine: prototypes, JSON, String, globals all its own.
      assert.equal(header(out, 'x-victim'), 'undefined|true|undefined|{"a":[1]}|--a');
    }
  });
}

test('the realm check finds objects and functions of another context (positive control)', () => {
  const ctx = vm.createContext({ leaked: { a: 1 }, leakedFn() {}, leakedArray: [1] });
  assert.equal(vm.runInContext(`${FOREIGN} [isForeign(leaked), isForeign(leakedFn), isForeign(leakedArray), isForeign({}), isForeign(function () {}), isForeign(Object.create(null))].join()`, ctx), 'true,true,true,false,false,false');
});
