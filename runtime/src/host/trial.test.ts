// Publish-time trial loads: what a plugin declares comes back from the load (and is checked), and in
// cordon mode the load runs in a process of its own — a plugin that kills it or exhausts memory at
// load time fails only its publish (400 with the reason) and the next publish gets a fresh process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import pino from 'pino';
import { Registry } from 'prom-client';
import { IsomeshError } from '../errors.ts';
import { PluginHost, type HostMode } from './index.ts';
import { TrialLoader } from './trial.ts';

const LIMIT = 1024 * 1024;

function hostFor(mode: HostMode, extra: { trialLoadTimeoutMs?: number } = {}): PluginHost {
  return new PluginHost({ logger: pino({ level: 'silent' }), registry: new Registry(), mode, cordons: 1, ...extra });
}

async function refusal(p: Promise<unknown>): Promise<IsomeshError> {
  const e = await p.then(() => undefined, (err: unknown) => err);
  assert.ok(e instanceof IsomeshError, `expected an IsomeshError, got ${String(e)}`);
  return e;
}

const ts = (source: string) => ({ source, language: 'typescript' as const, maxBundleBytes: LIMIT });

for (const mode of ['cordon', 'inline'] as const) {
  test(`[${mode}] the trial load reports hooks, body limits and configSchema`, async (t) => {
    const host = hostFor(mode);
    t.after(() => host.close());
    const compiled = await host.compile(ts(`
      import { definePlugin } from '@isomesh/sdk';
      export default definePlugin({
        body: { request: 4096 },
        configSchema: { type: 'object', properties: { header: { type: 'string' } }, additionalProperties: false },
        async onRequest(req) { await req.text(); },
        onResponse() {},
      });`));
    assert.deepEqual(compiled.declarations, {
      hooks: ['onRequest', 'onResponse'],
      body: { request: 4096 },
      configSchema: { type: 'object', properties: { header: { type: 'string' } }, additionalProperties: false },
    });
    assert.deepEqual(compiled.hooks, ['onRequest', 'onResponse']);
    const plain = await host.compile(ts('export default { onResponse() {} };'));
    assert.deepEqual(plain.declarations, { hooks: ['onResponse'] });
  });

  test(`[${mode}] invalid declarations are refused with ISOMESH_ERR_PLUGIN_BAD_DECLARATION`, async (t) => {
    const host = hostFor(mode);
    t.after(() => host.close());
    const cases: Array<[string, RegExp]> = [
      [`import { definePlugin } from '@isomesh/sdk'; export default definePlugin({ body: { request: 0 }, onRequest() {} });`, /body\.request must be an integer number of bytes in 1\.\.67108864/],
      [`export default { body: { request: 64 * 1024 * 1024 + 1 }, onRequest() {} };`, /64 MiB/],
      [`export default { body: { response: 10 }, onRequest() {} };`, /needs an onResponse hook/],
      [`export default { configSchema: { type: 'object', properties: { a: { type: 'strnig' } } }, onRequest() {} };`, /configSchema does not compile: schema is invalid/],
      [`export default { configSchema: { type: 'object', propertiez: {} }, onRequest() {} };`, /configSchema does not compile: strict mode: unknown keyword: "propertiez"/],
      [`export default { configSchema: { $schema: 'https://example.com/mine', type: 'object' }, onRequest() {} };`, /is not supported \(use draft 2020-12 or draft-07\)/],
    ];
    for (const [source, message] of cases) {
      const e = await refusal(host.compile(ts(source)));
      assert.equal(e.code, 'ISOMESH_ERR_PLUGIN_BAD_DECLARATION', `${source}: ${e.message}`);
      assert.equal(e.status, 400);
      assert.match(e.message, message);
    }
  });

  test(`[${mode}] a plugin that exhausts memory at load time is refused with the reason`, async (t) => {
    const host = hostFor(mode);
    t.after(() => host.close());
    const e = await refusal(host.compile(ts('const a: number[][] = []; for (;;) a.push(new Array(1e6).fill(1.5)); export default { onRequest() {} };')));
    assert.equal(e.code, 'ISOMESH_ERR_PLUGIN_LOAD');
    assert.match(e.message, /exhausted the 32 MiB memory limit of the trial load/);
    // The host is fine and the next publish loads.
    assert.deepEqual((await host.compile(ts('export default { onRequest() {} };'))).hooks, ['onRequest']);
  });
}

test('[cordon] a trial load that kills its process fails only that publish; the next gets a fresh process', async (t) => {
  // A long load timeout so the loop is certainly running when the process dies (SIGKILL by pid
  // stands in for an isolated-vm abort / OOM kill, which take seconds and gigabytes to provoke).
  const host = hostFor('cordon', { trialLoadTimeoutMs: 30_000 });
  t.after(() => host.close());
  await host.compile(ts('export default { onRequest() {} };'));
  const first = host.trialProcess();
  assert.ok(first?.pid, 'a trial process ran the first load');
  const publishing = refusal(host.compile(ts('for (;;) {} export default { onRequest() {} };')));
  for (let i = 0; i < 2000 && !host.trialProcess()?.busy; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(host.trialProcess()?.busy, true, 'the looping load is running');
  // A publish that arrives meanwhile waits for the trial process (loads run one at a time).
  const queued = host.compile(ts('export default { onResponse() {} };'));
  await new Promise((r) => setTimeout(r, 50));
  process.kill(first.pid, 'SIGKILL');
  const e = await publishing;
  assert.equal(e.code, 'ISOMESH_ERR_PLUGIN_LOAD');
  assert.equal(e.status, 400);
  assert.match(e.message, /the trial load crashed its process \(signal SIGKILL\)/);
  // The publish queued behind it runs in a new process.
  assert.deepEqual((await queued).hooks, ['onResponse']);
  const after = host.trialProcess();
  assert.ok(after?.pid && after.pid !== first.pid, 'a new trial process');
  assert.equal(after.crashes, 1);
});

test('[cordon] a trial process that stops answering is killed: that publish is a retryable 503, not blamed on the plugin', async (t) => {
  const trial = new TrialLoader({ logger: pino({ level: 'silent' }), timeoutMs: 200, backstopMs: 300 });
  t.after(() => trial.close());
  const bundle = 'module.exports = { default: { onRequest() {} } };';
  assert.deepEqual(await trial.probe(bundle), { hooks: ['onRequest'] }); // starts the process
  const first = trial.process.pid;
  assert.ok(first);
  // SIGSTOP stands in for whatever keeps it from answering (a starved node, a native hang).
  process.kill(first, 'SIGSTOP');
  const e = await refusal(trial.probe(bundle));
  assert.equal(e.code, 'ISOMESH_ERR_PLUGIN_UNAVAILABLE');
  assert.equal(e.status, 503);
  assert.match(e.message, /did not answer within 0\.5 s; nothing was published/);
  assert.equal(trial.crashes, 0, 'not counted as a crash of the plugin');
  // The next publish gets a fresh process.
  assert.deepEqual(await trial.probe(bundle), { hooks: ['onRequest'] });
  assert.ok(trial.process.pid && trial.process.pid !== first);
});

test('[cordon] an idle trial process exits (its memory given back); the next publish forks a new one', async (t) => {
  const trial = new TrialLoader({ logger: pino({ level: 'silent' }), idleMs: 200 });
  t.after(() => trial.close());
  const bundle = 'module.exports = { default: { onResponse() {} } };';
  assert.deepEqual(await trial.probe(bundle), { hooks: ['onResponse'] });
  const first = trial.process.pid;
  assert.ok(first);
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  for (let i = 0; i < 400 && alive(first); i++) await new Promise((r) => setTimeout(r, 25));
  assert.equal(alive(first), false, 'the idle trial process exited');
  assert.equal(trial.process.pid, null);
  assert.deepEqual(await trial.probe(bundle), { hooks: ['onResponse'] });
  assert.ok(trial.process.pid && trial.process.pid !== first, 'a new trial process');
  assert.equal(trial.crashes, 0, 'an idle exit is not a crash');
});
