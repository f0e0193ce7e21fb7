// runChainPass against a real TenantSandbox: the chain semantics every mode shares (the host's own
// tests run them through PluginHost inline and in cordons), the per-entry reports the daemon turns
// into metrics, and the switch from synchronous to asynchronous in the middle of a chain.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { runChainPass, type ChainPass, type PassEntry, type PassResult } from './chain-pass.ts';
import { compilePlugin } from './compiler.ts';
import { request } from './fixtures.ts';
import { TenantSandbox } from './sandbox.ts';

const events = { onLoadError() {}, onIsolateLost() {}, onIsolateRebuilt() {} };

const GENERATION = 7;
let configIds = 0;

type Marks = 'each' | 'lazy';

/** `marks`: 'each' measures every entry of every pass; 'lazy' leaves out the marks where it may (pass-wire.ts). */
async function sandboxWith(marks: Marks, plugins: Record<string, string>, onLost?: (key: string | undefined) => void): Promise<TenantSandbox> {
  const sandbox = new TenantSandbox({ tenant: 'pass', memoryMb: 32, events: onLost === undefined ? events : { ...events, onIsolateLost: onLost }, measureEvery: marks === 'each' ? 1 : 0 });
  // The entries' configs (all {}) and services, installed once like a chain generation.
  sandbox.defineGeneration(GENERATION, ['reviews'], Array.from({ length: 200 }, (_, i) => [i + 1, {}] as const));
  for (const [name, source] of Object.entries(plugins)) {
    const c = await compilePlugin({ source, language: 'typescript', maxBundleBytes: 1 << 20 });
    sandbox.retain({ key: `${name}@1#d`, plugin: name, version: 1, digest: 'd', code: c.code });
  }
  return sandbox;
}

function entry(name: string, over: Partial<PassEntry> = {}): PassEntry {
  return { key: `${name}@1#d`, plugin: name, configId: ++configIds, failurePolicy: 'closed', ...over };
}

function onRequest(entries: PassEntry[], over: Partial<ChainPass> = {}): ChainPass {
  return { phase: 'onRequest', requestId: 'r1', generation: GENERATION, req: request({ headers: [['accept', '*/*']] }), entries, cpuBudgetMs: 50, services: ['reviews'], ...over };
}

const TAG = (name: string) => `export default { onRequest(req) { req.headers.set('x-${name}', req.headers.get('x-seen') ?? 'first'); req.headers.set('x-seen', '${name}'); } };`;
const THROW = `export default { onRequest() { throw new Error('boom'); } };`;
const SLEEP = `export default { async onRequest(req, ctx) { await ctx.sleep(20); req.headers.set('x-slept', req.headers.get('x-seen') ?? 'none'); req.headers.set('x-seen', 'sleeper'); } };`;
const RESPOND = `export default { onRequest(req, ctx) { ctx.respond(401, { body: 'no' }); }, onResponse(res, ctx) { ctx.respond(502, { headers: { 'x-replaced': '1' } }); } };`;
const RESPONSE_ONLY = `export default { onResponse(res) { res.status = 201; res.headers.set('x-b', '1'); } };`;

for (const marks of ['each', 'lazy'] as const) {
  test(`[${marks} marks] ` + 'entries run in order with header edits carried; every entry that ran is reported', async () => {
    const sandbox = await sandboxWith(marks, { a: TAG('a'), b: TAG('b'), c: TAG('c') });
    try {
      const out = runChainPass(sandbox, onRequest([entry('a'), entry('b'), entry('c')])) as PassResult;
      assert.ok(!(out instanceof Promise), 'synchronous hooks make a synchronous pass');
      assert.deepEqual(out.outcome, {
        action: 'continue',
        headers: [['accept', '*/*'], ['x-a', 'first'], ['x-seen', 'c'], ['x-b', 'a'], ['x-c', 'b']],
      });
      assert.deepEqual(out.reports.map((r) => [r.entry, r.outcome]), [[0, 'ok'], [1, 'ok'], [2, 'ok']]);
      assert.ok(out.reports.every((r) => r.cpuNs > 0 && r.wallMs > 0), out.reports.map((r) => r.cpuNs).join());
      assert.ok(out.budgetUsedMs > 0 && out.budgetUsedMs * 1e6 <= out.reports.reduce((s, r) => s + r.cpuNs, 0) + 1);
    } finally {
      sandbox.dispose();
    }
  });

  test(`[${marks} marks] ` + 'failure policy: open skips the entry, closed stops the chain with 503; a missing version too', async () => {
    const sandbox = await sandboxWith(marks, { a: TAG('a'), bad: THROW });
    try {
      const open = runChainPass(sandbox, onRequest([entry('bad', { failurePolicy: 'open' }), entry('a')])) as PassResult;
      assert.equal(open.outcome.action, 'continue');
      assert.deepEqual(open.reports.map((r) => [r.outcome, r.code]), [['threw', 'ISOMESH_ERR_PLUGIN_THREW'], ['ok', undefined]]);
      // The failed entry's CPU is not charged against the next ones.
      assert.ok(Math.abs(open.budgetUsedMs - (open.reports[1]?.cpuNs ?? 0) / 1e6) < 1e-9);

      const closed = runChainPass(sandbox, onRequest([entry('a'), entry('bad'), entry('a')])) as PassResult;
      assert.deepEqual(closed.outcome, { action: 'fail', status: 503, code: 'ISOMESH_ERR_PLUGIN_THREW', message: 'Error: boom' });
      assert.equal(closed.reports.length, 2, 'the entry after a closed failure never ran');

      const { key: _, ...noVersion } = entry('gone');
      const missing = runChainPass(sandbox, onRequest([entry('a'), noVersion])) as PassResult;
      assert.equal(missing.outcome.action === 'fail' && missing.outcome.code, 'ISOMESH_ERR_PLUGIN_UNAVAILABLE');
      const skipped = runChainPass(sandbox, onRequest([{ ...noVersion, failurePolicy: 'open' }, entry('a')])) as PassResult;
      assert.equal(skipped.outcome.action, 'continue');
    } finally {
      sandbox.dispose();
    }
  });

  test(`[${marks} marks] ` + 'ctx.respond stops the chain (onRequest) or replaces the response (onResponse); entries without the hook are skipped', async () => {
    const sandbox = await sandboxWith(marks, { r: RESPOND, a: TAG('a'), b: RESPONSE_ONLY });
    try {
      const req = runChainPass(sandbox, onRequest([entry('b'), entry('r'), entry('a')])) as PassResult;
      assert.deepEqual(req.outcome, { action: 'respond', status: 401, headers: [], body: 'no' });
      assert.deepEqual(req.reports.map((r) => [r.entry, r.outcome]), [[1, 'respond']], 'b has no onRequest: not run, not reported');

      const resPass: ChainPass = { phase: 'onResponse', requestId: 'r1', generation: GENERATION, res: { status: 200, headers: [] }, entries: [entry('b'), entry('a'), entry('r'), entry('b')], cpuBudgetMs: 50 };
      const res = runChainPass(sandbox, resPass) as PassResult;
      assert.deepEqual(res.outcome, { action: 'continue', status: 502, headers: [['x-replaced', '1']] });
      assert.deepEqual(res.reports.map((r) => r.entry), [0, 2]);
    } finally {
      sandbox.dispose();
    }
  });

  test(`[${marks} marks] ` + 'the CPU budget is per pass: an entry over what is left times out, a spent budget skips calls', async () => {
    const burn = `export default { onRequest(req) { const end = Date.now() + 15; while (Date.now() < end) {} req.headers.set('x-burnt', '1'); } };`;
    const sandbox = await sandboxWith(marks, { burn });
    try {
      const out = runChainPass(sandbox, onRequest([entry('burn', { failurePolicy: 'open' }), entry('burn', { failurePolicy: 'open' })], { cpuBudgetMs: 25 })) as PassResult;
      assert.deepEqual(out.reports.map((r) => r.outcome), ['ok', 'timeout']);
      const spent = runChainPass(sandbox, onRequest([entry('burn')], { cpuBudgetMs: 0 })) as PassResult;
      assert.equal(spent.outcome.action === 'fail' && spent.outcome.code, 'ISOMESH_ERR_PLUGIN_TIMEOUT');
      assert.equal(spent.reports[0]?.cpuNs, 0);
    } finally {
      sandbox.dispose();
    }
  });

  test(`[${marks} marks] ` + 'an entry that awaits a capability turns the pass asynchronous; the entries after it still see its edits', async () => {
    const sandbox = await sandboxWith(marks, { a: TAG('a'), s: SLEEP, c: TAG('c') });
    try {
      const trail: string[] = [];
      let idle = 0;
      const pending = runChainPass(sandbox, onRequest([entry('a'), entry('s'), entry('c')]), {
        enter: (i) => trail.push(`enter ${i}`),
        exit: () => trail.push('exit'),
        limits: { onIdle: () => idle++ },
      });
      assert.ok(pending instanceof Promise);
      assert.deepEqual(trail, ['enter 0', 'enter 1', 'exit'], 'the pass left the isolate while waiting');
      assert.equal(idle, 1);
      const out = await pending;
      assert.deepEqual(trail, ['enter 0', 'enter 1', 'exit', 'enter 2', 'exit']);
      assert.deepEqual(out.outcome, {
        action: 'continue',
        headers: [['accept', '*/*'], ['x-a', 'first'], ['x-seen', 'c'], ['x-slept', 'a'], ['x-c', 'sleeper']],
      });
      assert.deepEqual(out.reports.map((r) => r.outcome), ['ok', 'ok', 'ok']);
      assert.ok((out.reports[1]?.wallMs ?? 0) >= 15, 'the sleeping entry\'s wall time includes its wait');
    } finally {
      sandbox.dispose();
    }
  });

  test(`[${marks} marks] ` + 'a promise an entry leaves rejected fails that entry, not the one the crossing ended on', async () => {
    // isolated-vm reports an unhandled rejection when the crossing ends, after every entry has run:
    // the error's stack names the plugin, and the pass runs again without it (open) or fails (closed).
    const REJECT = `export default { onRequest(req) { req.headers.set('x-rejecter', '1'); Promise.reject(new Error('left unhandled')); } };`;
    const sandbox = await sandboxWith(marks, { rej: REJECT, a: TAG('a') });
    try {
      const open = runChainPass(sandbox, onRequest([entry('rej', { failurePolicy: 'open' }), entry('a')])) as PassResult;
      assert.deepEqual(open.outcome, { action: 'continue', headers: [['accept', '*/*'], ['x-a', 'first'], ['x-seen', 'a']] }, 'a ran without the rejecter\'s edit');
      assert.deepEqual(open.reports.map((r) => [r.entry, r.outcome, r.message]), [[0, 'threw', 'left unhandled'], [1, 'ok', undefined]]);
      const closed = runChainPass(sandbox, onRequest([entry('rej'), entry('a')])) as PassResult;
      assert.deepEqual(closed.outcome, { action: 'fail', status: 503, code: 'ISOMESH_ERR_PLUGIN_THREW', message: 'left unhandled' });
      assert.deepEqual(closed.reports.map((r) => [r.entry, r.outcome]), [[0, 'threw']]);
    } finally {
      sandbox.dispose();
    }
  });

  test(`[${marks} marks] ` + 'an entry over the budget in the middle of a chain is taken back; the entries after it still run', async () => {
    const burn = `export default { onRequest(req) { const end = Date.now() + 15; while (Date.now() < end) {} req.headers.set('x-burnt', String(Number(req.headers.get('x-burnt') ?? 0) + 1)); } };`;
    const sandbox = await sandboxWith(marks, { burn, a: TAG('a') });
    try {
      // Unmarked, the CPU before the entry that went over is what the earlier entries cost alone.
      if (marks === 'lazy') runChainPass(sandbox, onRequest([entry('burn')]));
      const out = runChainPass(sandbox, onRequest([entry('burn', { failurePolicy: 'open' }), entry('burn', { failurePolicy: 'open' }), entry('a')], { cpuBudgetMs: 25 })) as PassResult;
      assert.deepEqual(out.reports.map((r) => r.outcome), ['ok', 'timeout', 'ok']);
      assert.match(out.reports[1]?.message ?? '', /^plugin used \d+\.\d ms CPU, over the \d+\.\d ms left of its CPU time per request$/);
      // The second burn's edit was taken back: one burn counted, and entry a saw the first one's headers.
      assert.equal(out.outcome.action === 'continue' && out.outcome.headers.find(([k]) => k === 'x-burnt')?.[1], '1');
      // One burn is charged: its CPU (up to its 15 ms of wall time, less when the thread was descheduled).
      assert.ok(out.budgetUsedMs >= 7 && out.budgetUsedMs <= 25, `charged ${out.budgetUsedMs} ms`);
    } finally {
      sandbox.dispose();
    }
  });

  test(`[${marks} marks] ` + 'a hook stopped by the backstop in the middle of a chain fails that entry; the entries after it still run', async () => {
    const LOOP = `export default { onRequest() { for (;;) {} } };`;
    const sandbox = await sandboxWith(marks, { a: TAG('a'), loop: LOOP, c: TAG('c') });
    try {
      const out = runChainPass(sandbox, onRequest([entry('a'), entry('loop', { failurePolicy: 'open' }), entry('c')], { cpuBudgetMs: 20 })) as PassResult;
      assert.deepEqual(out.reports.map((r) => [r.entry, r.outcome]), [[0, 'ok'], [1, 'timeout'], [2, 'ok']]);
      assert.deepEqual(out.outcome, { action: 'continue', headers: [['accept', '*/*'], ['x-a', 'first'], ['x-seen', 'c'], ['x-c', 'a']] });
      // The loop's CPU is its own: not charged, not given to the entry before it.
      const [a, loop, c] = out.reports.map((r) => r.cpuNs) as [number, number, number];
      assert.ok(loop > 15e6 && loop > a, `${a}, ${loop}, ${c}`);
      assert.ok(Math.abs(out.budgetUsedMs * 1e6 - (a + c)) < 1, `charged ${out.budgetUsedMs} ms`);
    } finally {
      sandbox.dispose();
    }
  });

  test(`[${marks} marks] ` + 'an isolate lost in the middle of a chain is blamed on the entry that ran; open, the pass runs again without it', async () => {
    const BOMB = `export default { onRequest() { const keep = []; for (;;) keep.push(new Array(1 << 16).fill(7)); } };`;
    const lost: Array<string | undefined> = [];
    const sandbox = await sandboxWith(marks, { a: TAG('a'), bomb: BOMB, c: TAG('c') }, (key) => lost.push(key));
    try {
      const out = runChainPass(sandbox, onRequest([entry('a'), entry('bomb', { failurePolicy: 'open' }), entry('c')], { cpuBudgetMs: 2000 })) as PassResult;
      assert.deepEqual(lost, ['bomb@1#d']);
      assert.deepEqual(out.reports.map((r) => [r.entry, r.outcome]), [[0, 'ok'], [1, 'memory'], [2, 'ok']]);
      assert.deepEqual(out.outcome, { action: 'continue', headers: [['accept', '*/*'], ['x-a', 'first'], ['x-seen', 'c'], ['x-c', 'a']] });
    } finally {
      sandbox.dispose();
    }
  });
}

test('lazy marks: a chain far from its budget makes no mark; sampled and traced passes mark every entry, and the split follows what each plugin costs alone', async () => {
  const burn = `export default { onRequest(req) { const end = Date.now() + 20; while (Date.now() < end) {} req.headers.set('x-burnt', '1'); } };`;
  const lazy = await sandboxWith('lazy', { a: TAG('a'), b: TAG('b'), burn });
  const sampled = new TenantSandbox({ tenant: 'sampled', memoryMb: 32, events, measureEvery: 4 });
  try {
    const chain = () => onRequest([entry('a'), entry('burn'), entry('b')]);
    let marks = lazy.marks;
    const first = runChainPass(lazy, chain()) as PassResult;
    assert.equal(lazy.marks - marks, 0, 'no mark between entries far from the budget');
    assert.deepEqual(first.reports.map((r) => r.outcome), ['ok', 'ok', 'ok']);
    // No weights yet: the stretch is split evenly, and nothing is lost.
    assert.ok(first.reports.every((r) => r.cpuNs > 0 && r.wallMs > 0), first.reports.map((r) => r.cpuNs).join());

    marks = lazy.marks;
    const traced = runChainPass(lazy, onRequest([entry('a'), entry('burn'), entry('b')], { each: true })) as PassResult;
    assert.equal(lazy.marks - marks, 2, 'a traced pass marks between every two entries');
    const burnt = traced.reports[1]?.cpuNs ?? 0;
    assert.ok(burnt > 15e6 && burnt > 2 * (traced.reports[0]?.cpuNs ?? 0), traced.reports.map((r) => r.cpuNs).join());

    // Measured alone once, the weights split the next lazy pass like the measured one.
    marks = lazy.marks;
    const split = runChainPass(lazy, chain()) as PassResult;
    assert.equal(lazy.marks - marks, 0);
    const [a, b, c] = split.reports.map((r) => r.cpuNs) as [number, number, number];
    assert.ok(b > 2 * a && b > 2 * c, `${a}, ${b}, ${c}`);
    assert.ok(Math.abs(split.budgetUsedMs * 1e6 - (a + b + c)) < 1, 'every entry succeeded: all of the stretch is charged');

    // One pass in measureEvery marks every entry.
    sampled.defineGeneration(GENERATION, ['reviews'], Array.from({ length: 200 }, (_, i) => [i + 1, {}] as const));
    for (const name of ['a', 'b']) {
      const c = await compilePlugin({ source: TAG(name), language: 'typescript', maxBundleBytes: 1 << 20 });
      sampled.retain({ key: `${name}@1#d`, plugin: name, version: 1, digest: 'd', code: c.code });
    }
    for (let i = 0; i < 8; i++) runChainPass(sampled, onRequest([entry('a'), entry('b')]));
    assert.equal(sampled.marks, 2, 'passes 1 and 5 of 8 were measured entry by entry');
  } finally {
    lazy.dispose();
    sampled.dispose();
  }
});

test('lazy marks near the budget: the outcome is the one every mark would give, and the entry that crosses the budget is the one that fails', async () => {
  const burn = (ms: number) => `export default { onRequest(req) { const end = Date.now() + ${ms}; while (Date.now() < end) {} req.headers.set('x-burnt', String(Number(req.headers.get('x-burnt') ?? 0) + 1)); } };`;
  const sandbox = await sandboxWith('lazy', { a: TAG('a'), short: burn(5), long: burn(40) });
  try {
    // What each costs alone (a pass of one entry needs no mark: its own measurement).
    runChainPass(sandbox, onRequest([entry('a')]));
    runChainPass(sandbox, onRequest([entry('short')]));
    // ~10 ms of a 40 ms budget: whether or not the runner marks after the first burn, all fits.
    const fits = runChainPass(sandbox, onRequest([entry('a'), entry('short'), entry('short'), entry('a')], { cpuBudgetMs: 40 })) as PassResult;
    assert.deepEqual(fits.reports.map((r) => r.outcome), ['ok', 'ok', 'ok', 'ok']);
    assert.equal(fits.outcome.action === 'continue' && fits.outcome.headers.find(([k]) => k === 'x-burnt')?.[1], '2');
    // The long burn ends past the budget, so it is marked; the stretch before it (a and the short
    // burn, unmarked) is charged what they cost alone, and the long burn is over.
    const marks = sandbox.marks;
    // (30 ms: the long burn needs only 25 of its 40 ms on the CPU to be over, and the pass ends within its backstop.)
    const over = runChainPass(sandbox, onRequest([entry('a'), entry('short', { failurePolicy: 'open' }), entry('long', { failurePolicy: 'open' }), entry('a')], { cpuBudgetMs: 30 })) as PassResult;
    assert.ok(sandbox.marks > marks, 'near the budget the runner marks again');
    assert.deepEqual(over.reports.map((r) => r.outcome), ['ok', 'ok', 'timeout', 'ok'], 'the entry whose CPU crossed the budget fails, not the one before it');
    assert.equal(over.outcome.action === 'continue' && over.outcome.headers.find(([k]) => k === 'x-burnt')?.[1], '1', 'its edit was taken back');
    assert.ok(over.budgetUsedMs >= 3 && over.budgetUsedMs < 30, `charged ${over.budgetUsedMs} ms`);
    assert.ok((over.reports[2]?.cpuNs ?? 0) >= 20e6, 'the long burn keeps its own CPU');
    assert.match(over.reports[2]?.message ?? '', /^plugin used \d+\.\d ms CPU, over the \d+\.\d ms left of its CPU time per request$/);
  } finally {
    sandbox.dispose();
  }
});

test('a version not measured alone yet gets its pass marked entry by entry; the passes after it are lazy', async () => {
  const sandbox = new TenantSandbox({ tenant: 'fresh', memoryMb: 32, events });
  try {
    sandbox.defineGeneration(GENERATION, ['reviews'], Array.from({ length: 200 }, (_, i) => [i + 1, {}] as const));
    const load = async (name: string) => {
      const c = await compilePlugin({ source: TAG(name), language: 'typescript', maxBundleBytes: 1 << 20 });
      sandbox.retain({ key: `${name}@1#d`, plugin: name, version: 1, digest: 'd', code: c.code });
    };
    await load('a');
    await load('b');
    const count = (entries: PassEntry[]): number => {
      const before = sandbox.marks;
      runChainPass(sandbox, onRequest(entries));
      return sandbox.marks - before;
    };
    assert.equal(count([entry('a'), entry('b')]), 1, 'the first pass is measured');
    assert.equal(count([entry('a'), entry('b')]), 0);
    await load('c');
    assert.equal(count([entry('a'), entry('b'), entry('c')]), 2, 'c is new: measured');
    assert.equal(count([entry('a'), entry('b'), entry('c')]), 0);
  } finally {
    sandbox.dispose();
  }
});
