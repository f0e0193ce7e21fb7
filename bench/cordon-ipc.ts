// Cordon transport and containment costs: per-request latency (p50/p99) of a no-op plugin through
// the plugin host inline, in a cordon over the socketpair (length-prefixed JSON, batched per tick) and
// in a cordon over Node's IPC channel ('advanced' serialization); throughput with 64 concurrent
// requests; the daemon's event-loop delay while a tenant loops; isolated-vm applySync vs apply.
// Run: node bench/cordon-ipc.ts  (writes bench/results/cordon-ipc.json)

import { mkdirSync, writeFileSync } from 'node:fs';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import ivm from 'isolated-vm';
import pino from 'pino';
import { Registry } from 'prom-client';
import { PluginHost, type PluginHostOptions } from '../runtime/src/host/index.ts';
import { DEFAULT_QUOTA, DEFAULT_TENANT_SETTINGS, type TenantConfig } from '../runtime/src/store/model.ts';

const SEQ = Number(process.env.BENCH_CALLS ?? 20_000);
const CONC = 64;
const req = {
  method: 'GET', path: '/api/users', query: 'a=1', host: 'svc', remoteAddress: '127.0.0.1',
  headers: [['accept', '*/*'], ['user-agent', 'bench'], ['x-request-id', 'abc']] as Array<[string, string]>,
};

function config(name: string, code: { digest: string; code: string }, cpuMsPerRequest = 1000): TenantConfig {
  return {
    name, listenerPort: 17000, quota: { ...DEFAULT_QUOTA, cpuMsPerRequest, cpuMsPerSecond: 0 }, services: [], routes: [],
    chain: [{ plugin: 'p', config: {}, failurePolicy: 'closed' }],
    plugins: { p: { name: 'p', active: { version: 1, digest: code.digest, code: code.code } } },
    secrets: {}, settings: { ...DEFAULT_TENANT_SETTINGS }, rateLimits: [], generation: 1,
  };
}

async function one(host: PluginHost, tenant: string, id: string): Promise<void> {
  const a = host.begin(tenant, id);
  if (!a.ok) throw new Error(a.code);
  const out = await host.onRequest(a.run, req);
  host.end(a.run);
  if (out.action !== 'continue') throw new Error(JSON.stringify(out));
}

const pct = (xs: number[], p: number) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))] as number;

async function measure(label: string, opts: Omit<PluginHostOptions, 'logger' | 'registry'>) {
  const host = new PluginHost({ logger: pino({ level: 'silent' }), registry: new Registry(), ...opts });
  const noop = await host.compile({ source: 'export default { onRequest() {} }', language: 'typescript', maxBundleBytes: 1 << 20 });
  const loop = await host.compile({ source: 'export default { onRequest() { for (;;) {} } }', language: 'typescript', maxBundleBytes: 1 << 20 });
  host.configure(config('noop', noop));
  for (let i = 0; i < 3000; i++) await one(host, 'noop', `w${i}`);
  const lat: number[] = [];
  for (let i = 0; i < SEQ; i++) {
    const t0 = performance.now();
    await one(host, 'noop', `r${i}`);
    lat.push((performance.now() - t0) * 1000);
  }
  lat.sort((a, b) => a - b);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONC }, async () => {
    while (next < SEQ) await one(host, 'noop', `c${next++}`);
  }));
  const concUs = ((performance.now() - t0) * 1000) / SEQ;

  // Event-loop delay of this (daemon) process while one tenant loops to its 100 ms CPU limit, and
  // how many 1-per-ms requests two light tenants get through meanwhile: one placed in the looper's
  // cordon, one in the other cordon (inline: both in this process).
  host.configure(config('loop', loop, 100));
  const cordonOf = (t: string) => host.status(t).usage.placement?.cordon;
  let same = 'noop';
  let other = 'noop';
  for (let i = 0; i < 64; i++) {
    const name = `light-${i}`;
    host.configure(config(name, noop));
    if (cordonOf(name) === cordonOf('loop') && same === 'noop') same = name;
    else if (cordonOf(name) !== cordonOf('loop') && other === 'noop') other = name;
  }
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  let lastTick = performance.now();
  let maxGap = 0;
  const ticker = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - lastTick);
    lastTick = now;
  }, 1);
  const until = performance.now() + 2000;
  const loops = Array.from({ length: 2 }, async () => {
    while (performance.now() < until) {
      const a = host.begin('loop', `l${Math.random()}`);
      if (!a.ok) continue;
      await host.onRequest(a.run, req);
      host.end(a.run);
    }
  });
  const light = async (tenant: string) => {
    let served = 0;
    while (performance.now() < until) {
      await one(host, tenant, `n${served++}`);
      await new Promise((r) => setTimeout(r, 1));
    }
    return served;
  };
  const [sameServed, otherServed] = await Promise.all([light(same), light(other), ...loops]);
  clearInterval(ticker);
  maxGap = Math.max(maxGap, performance.now() - lastTick);
  h.disable();
  await host.close();
  return {
    label,
    p50Us: +pct(lat, 50).toFixed(1),
    p99Us: +pct(lat, 99).toFixed(1),
    meanUs: +(lat.reduce((a, b) => a + b, 0) / lat.length).toFixed(1),
    concurrent64UsPerRequest: +concUs.toFixed(1),
    loopingTenant: {
      eventLoopDelayP99Ms: +(h.percentile(99) / 1e6).toFixed(1),
      eventLoopMaxGapMs: +maxGap.toFixed(1),
      lightTenantSameCordonRequestsIn2s: sameServed,
      lightTenantOtherCordonRequestsIn2s: otherServed,
    },
  };
}

function ivmCalls() {
  const isolate = new ivm.Isolate({ memoryLimit: 32 });
  const ctx = isolate.createContextSync();
  const fn = ctx.evalSync('(s) => s.length', { reference: true }) as ivm.Reference<(s: string) => number>;
  const n = 20_000;
  let t0 = performance.now();
  for (let i = 0; i < n; i++) fn.applySync(undefined, ['{"hook":"onRequest"}']);
  const syncUs = ((performance.now() - t0) * 1000) / n;
  return (async () => {
    t0 = performance.now();
    for (let i = 0; i < 2000; i++) await fn.apply(undefined, ['{"hook":"onRequest"}']);
    const asyncUs = ((performance.now() - t0) * 1000) / 2000;
    isolate.dispose();
    return { applySyncUs: +syncUs.toFixed(1), applyAsyncUs: +asyncUs.toFixed(1) };
  })();
}

const results = {
  node: process.version,
  calls: SEQ,
  modes: [
    await measure('inline', { mode: 'inline' }),
    await measure('cordon/socket (length-prefixed JSON, batched)', { mode: 'cordon', wire: 'socket' }),
    await measure("cordon/ipc (Node IPC, 'advanced')", { mode: 'cordon', wire: 'ipc' }),
  ],
  isolatedVm: await ivmCalls(),
};
console.log(JSON.stringify(results, null, 2));
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL('./results/cordon-ipc.json', import.meta.url), `${JSON.stringify(results, null, 2)}\n`);
