// The hostile plugin corpus: one row per attack. hostile.test.ts publishes each row's source as a
// plugin of tenant "evil", puts it first in the evil chain (the probe plugin second), and drives
// evil and good traffic at the same time. Adding a case is adding a row.
//
// Expected outcomes follow the contract (API.md "The chain", DESIGN.md "Tenancy and quotas"), not
// what the runtime happens to do: a row whose name starts with "defect-" pins a known bug and is
// expected to fail until that bug is fixed (see test/hostile/README.md).
import assert from 'node:assert/strict';
import type { EvilOutcome } from './bench.ts';
import { EVIL_SECRET, GOOD_SECRET } from './bench.ts';

export type Expectation =
  /** Closed policy → 503 with x-isomesh-error matching `code` on every evil request. */
  | { kind: 'fail'; code: RegExp }
  /** The hook is harmless: every evil request reaches the upstream and the probe after it is clean. */
  | { kind: 'pass'; check?: (o: EvilOutcome, i: number) => void }
  /** Per-request judgement (e.g. the first request fails, later ones pass). */
  | { kind: 'custom'; check: (o: EvilOutcome, i: number) => void }
  /** A hostile chain config: the admin API answers < 500, and if it took it, requests are judged by check. */
  | { kind: 'config'; check: (o: EvilOutcome, i: number) => void };

export interface HostileCase {
  name: string;
  /** JavaScript (ESM) plugin source; may import only '@isomesh/sdk'. */
  source: string;
  expect: Expectation;
  /** Also run with failurePolicy 'open' (expect: the request reaches the upstream). */
  open?: boolean;
  /** The chain entry's config, as raw JSON text (so hostile shapes survive byte for byte). */
  configJson?: string;
  /** Client timeout of each evil request (a hang fails the row sooner); default 20 s. */
  evilTimeoutMs?: number;
  /** Evil requests per run (sequential); default 3. */
  requests?: number;
  /**
   * Give the evil tenant a fresh upstream for this row, closed afterwards: a row that poisons pooled
   * upstream connections must not fail the rows after it.
   */
  ownUpstream?: boolean;
  /** After all evil requests: checks on the daemon's log output. */
  afterLogs?: (logs: string) => void;
}

const hook = (body: string, name: 'onRequest' | 'onResponse' = 'onRequest', async = false): string =>
  `export default { ${async ? 'async ' : ''}${name}(${name === 'onRequest' ? 'req' : 'res'}, ctx) {\n${body}\n} };`;

const TIMEOUT = /^ISOMESH_ERR_PLUGIN_TIMEOUT$/;
const THREW = /^ISOMESH_ERR_PLUGIN_THREW$/;
const BAD_RESULT = /^ISOMESH_ERR_PLUGIN_BAD_RESULT$/;
/** Rejected by the guest's Headers (a throw) or by the host's result check: either way, the entry's policy. */
const THREW_OR_BAD_RESULT = /^ISOMESH_ERR_PLUGIN_(THREW|BAD_RESULT)$/;
/** Isolate lost to its memory limit; later requests may meet the rebuild back-off (UNAVAILABLE). */
const MEMORY = /^ISOMESH_ERR_PLUGIN_(MEMORY|UNAVAILABLE)$/;
/**
 * An allocation bomb meets whichever bound fires first: the heap limit (MEMORY, or UNAVAILABLE in
 * the rebuild back-off), a failed allocation the guest reports (RangeError → THREW), or the CPU
 * limit, since V8 garbage-collects hard near its heap limit and that work is the tenant's CPU.
 * Which one wins is a race; each is the offending tenant's failure policy.
 */
const ALLOC = /^ISOMESH_ERR_PLUGIN_(MEMORY|UNAVAILABLE|THREW|TIMEOUT)$/;

const echoHeader = (o: EvilOutcome, name: string): string | undefined => o.echo?.headers[name];

// (module (func (export "f") (loop (br 0))))
const WASM_LOOP = '[0,97,115,109,1,0,0,0,1,4,1,96,0,0,3,2,1,0,7,5,1,1,102,0,0,10,9,1,7,0,3,64,12,0,11,11]';

export const CORPUS: HostileCase[] = [
  // ── CPU ────────────────────────────────────────────────────────────────────────────────────────
  { name: 'loop-sync', source: hook('for (;;) {}'), expect: { kind: 'fail', code: TIMEOUT }, open: true },
  { name: 'loop-in-promise-executor', source: hook('return new Promise(() => { for (;;) {} });'), expect: { kind: 'fail', code: TIMEOUT } },
  { name: 'loop-after-await', source: hook('await null; for (;;) {}', 'onRequest', true), expect: { kind: 'fail', code: TIMEOUT }, open: true },
  {
    name: 'microtask-chain-forever',
    // The hook returns at once; the chain it leaves behind never drains.
    source: hook('const f = () => Promise.resolve().then(f); f();'),
    expect: { kind: 'fail', code: /^ISOMESH_ERR_PLUGIN_(TIMEOUT|MEMORY)$/ },
  },
  {
    name: 'queuemicrotask-flood',
    source: hook(`const q = typeof queueMicrotask === 'function' ? queueMicrotask : (f) => Promise.resolve().then(f);
      let n = 0; const f = () => { n++; q(f); q(f); }; f();`),
    expect: { kind: 'fail', code: /^ISOMESH_ERR_PLUGIN_(TIMEOUT|MEMORY)$/ },
  },
  {
    name: 'timers-flood',
    // The guest has no timers (isolated-vm contexts get none); if it ever gets some, flooding them must not matter.
    source: hook(`if (typeof setTimeout === 'function') for (let i = 0; i < 1e5; i++) setTimeout(() => { for (;;) {} }, 0);
      if (typeof setInterval === 'function') for (let i = 0; i < 1e4; i++) setInterval(() => {}, 0);
      req.headers.set('x-timers', typeof setTimeout + ',' + typeof setInterval + ',' + typeof setImmediate);`),
    expect: { kind: 'pass', check: (o) => assert.equal(echoHeader(o, 'x-timers'), 'undefined,undefined,undefined') },
  },
  { name: 'redos', source: hook(`/^(a+)+$/.test('a'.repeat(40) + '!');`), expect: { kind: 'fail', code: TIMEOUT }, open: true },
  { name: 'deep-recursion', source: hook('const f = (n) => f(n + 1) + 1; f(0);'), expect: { kind: 'fail', code: THREW }, open: true },
  {
    // Guests get no Atomics.wait (it would hold the thread without using the CPU the budget counts):
    // the call is a TypeError, and the entry fails as a throw instead of blocking until the backstop.
    name: 'atomics-wait-forever',
    source: hook('Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);'),
    expect: { kind: 'fail', code: THREW },
    open: true,
  },
  { name: 'promise-never-resolves', source: hook('return new Promise(() => {});'), expect: { kind: 'fail', code: TIMEOUT }, open: true },
  {
    // Guests get no WebAssembly (its memory escapes the isolate's heap limit, see below): a wasm
    // loop cannot even be instantiated and the entry fails as a throw.
    name: 'wasm-infinite-loop',
    source: hook(`const m = new WebAssembly.Instance(new WebAssembly.Module(new Uint8Array(${WASM_LOOP}))); m.exports.f();`),
    expect: { kind: 'fail', code: THREW },
  },

  // ── Memory ─────────────────────────────────────────────────────────────────────────────────────
  {
    name: 'heap-bomb',
    source: hook('const a = []; for (;;) a.push(new Array(1e6).fill(Math.random()));'),
    expect: { kind: 'fail', code: ALLOC },
    open: true,
  },
  {
    // One allocation far over the 16 MB heap: no race with the CPU limit, the heap limit must fire.
    name: 'heap-single-huge-array',
    source: hook('globalThis.hostileKeep = new Array(5e6).fill(1.5);'),
    expect: { kind: 'fail', code: MEMORY },
  },
  {
    name: 'arraybuffer-bomb',
    source: hook('const a = []; for (;;) { const b = new Uint8Array(1 << 20); b.fill(7); a.push(b); }'),
    expect: { kind: 'fail', code: ALLOC },
    open: true,
  },
  { name: 'typed-array-giant', source: hook('new Float64Array(2 ** 28).fill(1);'), expect: { kind: 'fail', code: ALLOC } },
  {
    // WebAssembly.Memory lives outside the V8 heap: each request commits 16 MB more (every page
    // touched) and keeps it, in a tenant whose memoryMb is 16. From the second request on the tenant
    // holds at least twice its quota, so those requests must meet the memory limit.
    name: 'defect-wasm-memory-escapes-memory-limit',
    source: hook(`globalThis.hostileKeep ??= [];
      const m = new WebAssembly.Memory({ initial: 256 });
      const u = new Uint8Array(m.buffer); for (let i = 0; i < u.length; i += 4096) u[i] = 1;
      hostileKeep.push(m);
      req.headers.set('x-wasm-held-mb', String(hostileKeep.length * 16));`),
    requests: 4,
    expect: {
      kind: 'custom',
      check: (o, i) => {
        // Fixed by removing WebAssembly from guests: no request may hold wasm memory at all.
        assert.equal(o.res.status, 503, `request ${i} held ${echoHeader(o, 'x-wasm-held-mb') ?? '?'} MB of wasm memory on a 16 MB quota`);
        assert.match(String(o.res.headers['x-isomesh-error']), /^ISOMESH_ERR_PLUGIN_(THREW|MEMORY)$/);
      },
    },
  },

  // ── Headers ────────────────────────────────────────────────────────────────────────────────────
  { name: 'header-value-50mb', source: hook(`req.headers.set('x-big', 'x'.repeat(50 * 1024 * 1024));`), expect: { kind: 'fail', code: ALLOC } },
  { name: 'header-value-1mb', source: hook(`req.headers.set('x-big', 'x'.repeat(1024 * 1024));`), expect: { kind: 'fail', code: THREW }, open: true },
  {
    name: 'headers-thousands',
    source: hook(`for (let i = 0; i < 1500; i++) req.headers.append('x-h-' + i, 'v');`),
    expect: { kind: 'fail', code: /^ISOMESH_ERR_PLUGIN_(BAD_RESULT|THREW)$/ },
    open: true,
  },
  {
    name: 'header-values-non-string-coerced',
    // Fetch Headers convert values with ToString: numbers, booleans, null and objects become strings.
    source: hook(`req.headers.set('x-num', 42); req.headers.set('x-bool', true); req.headers.set('x-null', null);
      req.headers.set('x-obj', { toString() { return 'custom'; } });`),
    expect: {
      kind: 'pass',
      check: (o) => {
        assert.equal(echoHeader(o, 'x-num'), '42');
        assert.equal(echoHeader(o, 'x-bool'), 'true');
        assert.equal(echoHeader(o, 'x-null'), 'null');
        assert.equal(echoHeader(o, 'x-obj'), 'custom');
      },
    },
  },
  {
    name: 'header-value-throwing-tostring',
    source: hook(`req.headers.set('x-t', { toString() { throw new Error('boom'); } });`),
    expect: { kind: 'fail', code: THREW },
    open: true,
  },
  {
    // Fetch: a Symbol header value is a TypeError (ToString on a Symbol); String(sym) must not be used.
    name: 'defect-header-value-symbol-accepted',
    source: hook(`req.headers.set('x-sym', Symbol('s'));`),
    expect: { kind: 'fail', code: THREW },
  },
  {
    // A control character the guest's Headers accept but HTTP/1.1 cannot carry: the host must treat
    // it as the entry's bad result (closed → 503, open → entry skipped), not answer 502 regardless.
    name: 'defect-header-value-control-char-bypasses-policy',
    source: hook(`req.headers.set('x-ctl', 'a\\u0001b');`),
    expect: { kind: 'fail', code: THREW_OR_BAD_RESULT },
    open: true,
  },
  {
    name: 'defect-header-value-non-latin1-bypasses-policy',
    source: hook(`req.headers.set('x-uni', '\\u4e2d\\u6587');`),
    expect: { kind: 'fail', code: THREW_OR_BAD_RESULT },
    open: true,
  },
  {
    name: 'defect-respond-header-control-char-gives-502',
    source: hook(`return ctx.respond(200, { headers: { 'x-ctl': 'a\\u0001b' }, body: 'x' });`),
    expect: { kind: 'fail', code: THREW_OR_BAD_RESULT },
  },

  // ── Garbage from hooks ─────────────────────────────────────────────────────────────────────────
  // A hook's return value is ignored unless it is a thenable; only what it did through req/ctx counts.
  { name: 'return-number', source: hook('return 42;'), expect: { kind: 'pass' } },
  { name: 'return-symbol', source: hook(`return Symbol('garbage');`), expect: { kind: 'pass' } },
  { name: 'return-cyclic-object', source: hook('const o = { a: [] }; o.self = o; o.a.push(o); return o;'), expect: { kind: 'pass' } },
  {
    name: 'return-proxy-throwing-traps',
    source: hook(`return new Proxy({}, { get() { throw new Error('trap'); }, getPrototypeOf() { throw new Error('proto'); } });`),
    expect: { kind: 'fail', code: THREW },
    open: true,
  },
  { name: 'return-throwing-then-getter', source: hook(`return { get then() { throw Symbol('then'); } };`), expect: { kind: 'fail', code: THREW } },
  { name: 'thenable-rejects-with-symbol', source: hook(`return { then(_, reject) { reject(Symbol('no')); } };`), expect: { kind: 'fail', code: THREW } },
  {
    name: 'async-resolves-with-throwing-proxy',
    source: hook(`return new Proxy({}, { get() { throw 1; } });`, 'onRequest', true),
    expect: { kind: 'fail', code: THREW },
  },
  { name: 'respond-garbage-status', source: hook(`return ctx.respond('200');`), expect: { kind: 'fail', code: THREW } },
  {
    name: 'respond-garbage-headers',
    source: hook(`return ctx.respond(200, { headers: new Proxy({}, { ownKeys() { throw new Error('keys'); } }) });`),
    expect: { kind: 'fail', code: THREW },
  },

  // ── Throwing non-Error values ──────────────────────────────────────────────────────────────────
  { name: 'throw-null', source: hook('throw null;'), expect: { kind: 'fail', code: THREW } },
  { name: 'throw-undefined', source: hook('throw undefined;'), expect: { kind: 'fail', code: THREW } },
  { name: 'throw-plain-object', source: hook(`throw { code: 42, toJSON() { throw new Error('no json'); } };`), expect: { kind: 'fail', code: THREW } },
  { name: 'throw-symbol', source: hook(`throw Symbol('sym');`), expect: { kind: 'fail', code: THREW }, open: true },
  {
    name: 'throw-proxy-throwing-traps',
    source: hook(`throw new Proxy({}, { get() { throw new Error('trap'); }, getPrototypeOf() { throw new Error('proto'); } });`),
    expect: { kind: 'fail', code: THREW },
  },
  {
    // Async rejection with a value whose every inspection throws: must still fail the request promptly.
    name: 'async-reject-proxy-throwing-traps',
    source: hook(`throw new Proxy({}, { get() { throw new Error('trap'); }, getPrototypeOf() { throw new Error('proto'); } });`, 'onRequest', true),
    expect: { kind: 'fail', code: /^ISOMESH_ERR_PLUGIN_(THREW|TIMEOUT)$/ },
  },

  // ── Frozen objects ─────────────────────────────────────────────────────────────────────────────
  {
    name: 'frozen-config-write-in-strict-function',
    source: hook(`(function () { 'use strict'; ctx.config.mode = 'mutated'; })();`),
    configJson: '{"mode":"frozen","nested":{"deep":[1,2]}}',
    expect: { kind: 'fail', code: THREW },
  },
  {
    // Plugin sources are ES modules, which are strict: a write to the frozen config must throw.
    name: 'defect-esm-plugin-runs-sloppy-frozen-write-ignored',
    source: hook(`ctx.config.mode = 'mutated';`),
    configJson: '{"mode":"frozen","nested":{"deep":[1,2]}}',
    expect: { kind: 'fail', code: THREW },
  },

  // ── Prototype pollution ────────────────────────────────────────────────────────────────────────
  {
    // Stays in this plugin's own context: the probe (another context of the same tenant) and the
    // good tenant's probe must see pristine globals, on every request.
    name: 'prototype-pollution',
    source: hook(`Object.prototype.polluted = 'evil';
      Array.prototype.push = function () { return 0; };
      globalThis.hostileMarker = true;
      Object.defineProperty(Object.prototype, 'hostileThen', { get() { for (;;) {} }, configurable: true });`),
    expect: { kind: 'pass' },
  },

  // ── Escapes ────────────────────────────────────────────────────────────────────────────────────
  {
    name: 'function-constructor-escape',
    source: hook(`const g = (function () {}).constructor('return this')();
      const found = [];
      for (const n of ['process', 'require', 'module', 'exports', 'Buffer', 'global', '__isomesh', 'ivm', '_ivm', 'fetch',
        'XMLHttpRequest', 'setTimeout', 'setImmediate', '__dirname', '__filename', 'Deno', 'Bun']) if (typeof g[n] !== 'undefined') found.push(n);
      try { if (g.constructor.constructor('return typeof process')() !== 'undefined') found.push('ctor-process'); } catch (e) {}
      try { if ((0, eval)('typeof require') !== 'undefined') found.push('eval-require'); } catch (e) {}
      const stack = String(new Error('probe').stack);
      if (/\\/work\\/|node:internal|node_modules|\\.ts:\\d/.test(stack)) found.push('host-stack');
      req.headers.set('x-escape', found.length ? found.join(',') : 'none');
      req.headers.set('x-global-is-own', String(g === globalThis));`),
    expect: {
      kind: 'pass',
      check: (o) => {
        assert.equal(echoHeader(o, 'x-escape'), 'none');
        assert.equal(echoHeader(o, 'x-global-is-own'), 'true');
      },
    },
  },
  {
    name: 'eval-host-code',
    source: hook(`const r = [];
      for (const src of ['process.mainModule', 'require("fs")', 'globalThis.process', 'this.constructor.constructor("return process")()',
        'Function("return process")()']) {
        try { const v = eval(src); r.push(v === undefined ? 'undefined' : 'VALUE'); } catch (e) { r.push('threw'); }
      }
      req.headers.set('x-eval', r.join(','));`),
    expect: { kind: 'pass', check: (o) => assert.doesNotMatch(echoHeader(o, 'x-eval') ?? 'missing', /VALUE|missing/) },
  },
  {
    name: 'require-beyond-sdk',
    source: `let atLoad = 'unset';
      try { globalThis['req' + 'uire']('f' + 's'); atLoad = 'loaded'; } catch (e) { atLoad = /ISOMESH_BAD_IMPORT/.test(String(e)) ? 'refused' : 'other'; }
      ${hook(`let atHook = 'unset';
        try { globalThis['req' + 'uire']('child_' + 'process'); atHook = 'loaded'; } catch (e) { atHook = 'absent'; }
        req.headers.set('x-require', atLoad + ',' + atHook + ',' + typeof globalThis['req' + 'uire']);`)}`,
    expect: { kind: 'pass', check: (o) => assert.equal(echoHeader(o, 'x-require'), 'refused,absent,undefined') },
  },
  {
    name: 'dynamic-import',
    source: hook(`const out = [];
      for (const m of ['f' + 's', 'node:child_' + 'process', 'data:text/javascript,export default 1']) {
        try { await import(m); out.push('loaded'); } catch (e) { out.push('refused'); }
      }
      req.headers.set('x-import', out.join(','));`, 'onRequest', true),
    expect: { kind: 'pass', check: (o) => assert.equal(echoHeader(o, 'x-import'), 'refused,refused,refused') },
  },

  // ── Secrets ────────────────────────────────────────────────────────────────────────────────────
  {
    name: 'read-other-tenants-secret',
    source: hook(`req.headers.set('x-stolen', String(ctx.secrets.get('${GOOD_SECRET.name}')));
      req.headers.set('x-own', String(ctx.secrets.get('${EVIL_SECRET.name}')));
      req.headers.set('x-proto', String(ctx.secrets.get('__proto__')) + ',' + String(ctx.secrets.get('constructor')));
      const seen = [];
      const walk = (o, depth) => {
        if (depth > 3 || o === null || (typeof o !== 'object' && typeof o !== 'function')) return;
        for (const k of Reflect.ownKeys(o)) { seen.push(String(k)); try { walk(o[k], depth + 1); } catch (e) {} }
      };
      walk(ctx, 0);
      let dump = ''; try { dump = JSON.stringify(ctx); } catch (e) {}
      req.headers.set('x-enum', seen.join(',').slice(0, 8000));
      req.headers.set('x-dump', dump.slice(0, 4000));`),
    expect: {
      kind: 'pass',
      check: (o) => {
        assert.equal(echoHeader(o, 'x-stolen'), 'undefined');
        assert.equal(echoHeader(o, 'x-own'), EVIL_SECRET.value, 'positive control: the tenant reads its own secret');
        assert.equal(echoHeader(o, 'x-proto'), 'undefined,undefined');
        assert.ok(!o.res.body.includes(GOOD_SECRET.value), 'good tenant secret never appears');
        assert.ok(!(echoHeader(o, 'x-enum') ?? '').includes(EVIL_SECRET.value), 'secret values are not enumerable on ctx');
      },
    },
  },

  // ── Timing ─────────────────────────────────────────────────────────────────────────────────────
  {
    // The host promises no high-resolution clock: `performance` is absent (or, if ever added, no finer
    // than 1 ms), Date is whole milliseconds of the real clock.
    name: 'timing-probes',
    source: hook(`let minStep = 'none';
      if (typeof performance === 'object' && performance !== null) {
        let min = Infinity, last = performance.now();
        for (let i = 0; i < 20000; i++) { const t = performance.now(); if (t !== last) { min = Math.min(min, t - last); last = t; } }
        minStep = String(min);
      }
      const now = Date.now();
      req.headers.set('x-perf', typeof performance + ',' + minStep);
      req.headers.set('x-date', String(now) + ',' + String(Number.isInteger(now)));`),
    expect: {
      kind: 'pass',
      check: (o) => {
        const [type, step] = (echoHeader(o, 'x-perf') ?? '').split(',');
        if (type !== 'undefined') assert.ok(step === 'none' || Number(step) >= 1, `performance.now() is coarse: ${step}`);
        const [ms, integer] = (echoHeader(o, 'x-date') ?? '').split(',');
        assert.equal(integer, 'true');
        assert.ok(Math.abs(Number(ms) - Date.now()) < 60_000, 'Date is the real clock');
      },
    },
  },

  // ── ctx after the request ended ────────────────────────────────────────────────────────────────
  {
    name: 'stale-ctx-replayed-in-later-request',
    source: `var stash;
      ${hook(`let late = 'first';
        if (stash !== undefined) {
          late = 'called';
          try { stash.respond(299, { body: 'hijacked' }); } catch (e) { late = 'respond-threw'; }
          try { stash.route('echo'); } catch (e) {}
          try { stash.log.warn('late log'); } catch (e) {}
          try { stash.rateLimit('k', { limit: 1, windowMs: 1000 }); } catch (e) {}
        }
        stash = ctx;
        req.headers.set('x-late', late);`)}`,
    expect: {
      kind: 'pass',
      check: (o, i) => {
        assert.equal(o.res.status, 200);
        assert.ok(!o.res.body.includes('hijacked'));
        assert.ok(i === 0 ? echoHeader(o, 'x-late') === 'first' : /^(called|respond-threw)$/.test(echoHeader(o, 'x-late') ?? ''));
      },
    },
  },
  {
    // Request 0 parks a never-settling promise with its ctx; request 1 answers through that stale ctx
    // and settles it. Request 0 must have failed on time; request 1 must be untouched.
    name: 'stale-ctx-late-settle',
    source: `var stash;
      ${hook(`if (stash === undefined) return new Promise((resolve) => { stash = { ctx, resolve }; });
        try { stash.ctx.respond(299, { body: 'hijacked' }); } catch (e) {}
        stash.resolve();
        req.headers.set('x-late', 'settled-earlier');`)}`,
    expect: {
      kind: 'custom',
      check: (o, i) => {
        if (i === 0) {
          assert.equal(o.res.status, 503);
          assert.match(String(o.res.headers['x-isomesh-error']), TIMEOUT);
          return;
        }
        assert.equal(o.res.status, 200, o.res.body);
        assert.ok(!o.res.body.includes('hijacked'));
        assert.equal(echoHeader(o, 'x-late'), 'settled-earlier');
        assert.equal(echoHeader(o, 'x-probe'), 'clean');
      },
    },
  },

  // ── Response hooks ─────────────────────────────────────────────────────────────────────────────
  { name: 'onresponse-loop', source: hook('for (;;) {}', 'onResponse'), expect: { kind: 'fail', code: TIMEOUT }, open: true },
  {
    name: 'onresponse-heap-bomb',
    source: hook('globalThis.hostileKeep = new Array(5e6).fill(1.5);', 'onResponse'),
    expect: { kind: 'fail', code: MEMORY },
  },
  {
    // An informational status cannot be a final response; the host must refuse it as a bad result
    // (today a 101 without an upgrade reaches the client, and the upstream body is lost).
    name: 'defect-onresponse-status-1xx-forwarded',
    source: hook('res.status = 101;', 'onResponse'),
    expect: { kind: 'fail', code: /^ISOMESH_ERR_PLUGIN_(BAD_RESULT|THREW)$/ },
  },
  {
    name: 'defect-respond-status-1xx-forwarded',
    source: hook(`return ctx.respond(100, { body: 'informational' });`),
    expect: { kind: 'fail', code: /^ISOMESH_ERR_PLUGIN_(BAD_RESULT|THREW)$/ },
    evilTimeoutMs: 3000,
  },
  {
    // Message framing is the proxy's: a plugin-set Content-Length on a bodiless GET must not make the
    // upstream wait for a body that never comes (or desynchronise the pooled upstream connection).
    name: 'defect-plugin-content-length-reaches-upstream',
    source: hook(`req.headers.set('content-length', '64');`),
    expect: { kind: 'pass' },
    evilTimeoutMs: 3000,
    ownUpstream: true,
  },

  // ── Bodies and logs ────────────────────────────────────────────────────────────────────────────
  { name: 'respond-body-100mb', source: hook(`return ctx.respond(200, { body: 'x'.repeat(100 * 1024 * 1024) });`), expect: { kind: 'fail', code: ALLOC } },
  { name: 'respond-body-over-limit-2mb', source: hook(`return ctx.respond(200, { body: 'x'.repeat(2 * 1024 * 1024) });`), expect: { kind: 'fail', code: THREW }, open: true },
  {
    name: 'log-flood',
    source: hook(`const cyclic = {}; cyclic.self = cyclic;
      ctx.log.warn('hostile-log-flood-marker ' + 'm'.repeat(1e5), cyclic);
      for (let i = 0; i < 2000; i++) ctx.log.warn('hostile-log-flood-marker ' + i);`),
    expect: { kind: 'pass' },
    afterLogs: (logs) => {
      const lines = logs.split('\n').filter((l) => l.includes('hostile-log-flood-marker'));
      assert.ok(lines.length >= 1, 'plugin logs reach the daemon log at all (positive control)');
      assert.ok(lines.length <= 3 * 33, `plugin log lines are bounded per call: ${lines.length}`);
      for (const l of lines) assert.ok(l.length < 8 * 1024, `a log line is bounded: ${l.length} chars`);
    },
  },

  // ── Bodies, ctx.fetch, ctx.metrics (v1 capabilities) ───────────────────────────────────────────
  {
    // A tampered JSON.stringify adds a replaced body to a result although the plugin declared none.
    name: 'body-forged-without-declaration',
    source: `const orig = JSON.stringify;
      JSON.stringify = function (v, ...rest) { if (v && v.action === 'continue') v.body = 'aGFja2Vk'; return orig.call(this, v, ...rest); };
      export default { onRequest(req) { req.headers.set('x-a', '1'); } };`,
    expect: { kind: 'fail', code: BAD_RESULT },
    open: true,
  },
  {
    name: 'set-body-over-declared-limit',
    source: `export default { body: { request: 1024 }, onRequest(req) { req.setBody('x'.repeat(2 * 1024 * 1024)); } };`,
    expect: { kind: 'fail', code: THREW },
    open: true,
  },
  {
    // Every way out of the tenant: another tenant's service, loopback, the admin API, IPs, https,
    // userinfo, ports. Each must reject (in the isolate or in the daemon), never reach anything.
    name: 'fetch-escape',
    source: hook(`const urls = ['http://good/', 'http://echo/', 'http://127.0.0.1:7700/v1/tenants', 'http://localhost/', 'http://[::1]/',
        'https://probe/', 'http://u:p@probe/', 'http://probe:80/', 'http://169.254.169.254/latest/meta-data', 'file:///etc/passwd', 'http://a.b/'];
      const codes = [];
      for (const u of urls) codes.push(await ctx.fetch(u, { timeoutMs: 100 }).then(() => 'REACHED ' + u, (e) => e.code));
      req.headers.set('x-fetch-codes', codes.join(','));`, 'onRequest', true),
    expect: {
      kind: 'pass',
      check: (o) => {
        const codes = echoHeader(o, 'x-fetch-codes')?.split(',') ?? [];
        assert.equal(codes.length, 11, String(codes));
        // The tenant's own service "echo" is the one thing ctx.fetch may reach; every escape is refused.
        assert.equal(codes[1], 'REACHED http://echo/', String(codes));
        for (const c of codes.filter((_, i) => i !== 1)) assert.match(c, /^ERR_FETCH_(OPTIONS|UNKNOWN_SERVICE)$/, String(codes));
      },
    },
  },
  {
    // Thousands of distinct series per call, names of the host's own families: bounded per call in
    // the guest, per tenant in the host; the request flows on (or, on a loaded machine, meets the
    // tenant's own CPU limit — the loop is its CPU) and other tenants see nothing.
    name: 'metrics-flood',
    source: hook(`for (let i = 0; i < 3000; i++) ctx.metrics.counter('flood', { id: String(i) }).inc();
      ctx.metrics.counter('invocations').inc();
      ctx.metrics.histogram('duration_seconds').observe(1);
      for (let i = 0; i < 300; i++) ctx.metrics.histogram('h' + i).observe(i);`),
    expect: {
      kind: 'custom',
      check: (o) => {
        if (o.res.status === 503) assert.match(String(o.res.headers['x-isomesh-error']), TIMEOUT, o.res.body);
        else assert.equal(o.res.status, 200, o.res.body);
      },
    },
  },

  // ── Hostile configs ────────────────────────────────────────────────────────────────────────────
  {
    // JSON nested 50 000 deep (300 KB, under the body limit): bad input → 4xx, not a store fault.
    name: 'defect-config-deeply-nested-gives-500',
    source: hook(`req.headers.set('x-config-size', String(JSON.stringify(ctx.config).length));`),
    configJson: `${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)}`,
    expect: { kind: 'config', check: (o) => assert.ok(o.res.status === 200 || /^ISOMESH_ERR_PLUGIN_/.test(String(o.res.headers['x-isomesh-error']))) },
  },
  {
    name: 'config-prototype-keys',
    source: hook(`req.headers.set('x-config-proto', String(({}).polluted) + ',' + String(ctx.config.polluted) + ',' + String(Object.getPrototypeOf(ctx.config) === Object.prototype));`),
    configJson: '{"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}}}',
    expect: { kind: 'config', check: (o) => assert.equal(echoHeader(o, 'x-config-proto'), 'undefined,undefined,true') },
  },
];
