// Plugin host micro-benchmarks: per-call overhead of a no-op hook (raw sandbox call and the full
// begin → onRequest → end path), and isolate cold start (new tenant isolate + one plugin context).
// Run: node bench/host-overhead.ts (cordon mode → bench/results/host-overhead-cordon.json);
//      ISOMESH_HOST_MODE=inline node bench/host-overhead.ts (→ bench/results/host-overhead.json)

import { mkdirSync, writeFileSync } from 'node:fs';
import pino from 'pino';
import { Registry } from 'prom-client';
import { PluginHost } from '../runtime/src/host/index.ts';
import { TenantSandbox } from '../runtime/src/host/sandbox.ts';
import { DEFAULT_QUOTA, DEFAULT_TENANT_SETTINGS, type TenantConfig } from '../runtime/src/store/model.ts';

const N = 50_000;
const host = new PluginHost({ logger: pino({ level: 'silent' }), registry: new Registry() });
const noop = await host.compile({ source: 'export default { onRequest() {} }', language: 'typescript', maxBundleBytes: 1 << 20 });
const setHeader = await host.compile({
  source: `export default { onRequest(req, ctx) { req.headers.set('x-tenant', ctx.tenant); } }`,
  language: 'typescript',
  maxBundleBytes: 1 << 20,
});

function config(name: string, code: typeof noop): TenantConfig {
  return {
    name,
    listenerPort: 17000,
    // A CPU-per-second budget large enough that shedding never cuts a measurement short.
    quota: { ...DEFAULT_QUOTA, cpuMsPerSecond: 1_000_000 },
    services: [],
    routes: [],
    chain: [{ plugin: 'p', config: {}, failurePolicy: 'closed' }],
    plugins: { p: { name: 'p', active: { version: 1, digest: code.digest, code: code.code } } },
    secrets: {},
    settings: { ...DEFAULT_TENANT_SETTINGS },
    rateLimits: [],
    generation: 1,
  };
}

const req = {
  method: 'GET', path: '/api/users', query: 'a=1', host: 'svc', remoteAddress: '127.0.0.1',
  headers: [['accept', '*/*'], ['user-agent', 'bench'], ['x-request-id', 'abc']] as Array<[string, string]>,
};

async function perRequest(tenant: string): Promise<number> {
  for (let i = 0; i < 5000; i++) {
    const a = host.begin(tenant, `w${i}`);
    if (!a.ok) throw new Error(a.code);
    await host.onRequest(a.run, req);
    host.end(a.run);
  }
  const t0 = performance.now();
  for (let i = 0; i < N; i++) {
    const a = host.begin(tenant, `r${i}`);
    if (!a.ok) throw new Error(a.code);
    await host.onRequest(a.run, req);
    host.end(a.run);
  }
  return ((performance.now() - t0) * 1000) / N;
}

host.configure(config('noop', noop));
host.configure(config('sethdr', setHeader));
host.configure({ ...config('empty', noop), chain: [], plugins: {} });
const emptyChainUs = await perRequest('empty');
const noopChainUs = await perRequest('noop');
const setHeaderChainUs = await perRequest('sethdr');

// Raw sandbox call (what a cordon worker would do per hook).
const events = { onLoadError() {}, onIsolateLost() {}, onIsolateRebuilt() {} };
const sandbox = new TenantSandbox({ tenant: 'raw', memoryMb: 64, events });
sandbox.retain({ key: 'p@1#x', plugin: 'p', version: 1, digest: noop.digest, code: noop.code });
const input = { hook: 'onRequest', requestId: 'r', now: 0, configId: 1, req };
for (let i = 0; i < 5000; i++) sandbox.invoke('p@1#x', input, {}, 50);
let t0 = performance.now();
for (let i = 0; i < N; i++) sandbox.invoke('p@1#x', input, {}, 50);
const rawCallUs = ((performance.now() - t0) * 1000) / N;
sandbox.dispose();

// Cold start: a tenant isolate with the guest runtime and one plugin context, ready to serve.
const COLD = 30;
t0 = performance.now();
for (let i = 0; i < COLD; i++) {
  const s = new TenantSandbox({ tenant: `cold${i}`, memoryMb: 64, events });
  s.retain({ key: 'p@1#x', plugin: 'p', version: 1, digest: noop.digest, code: noop.code });
  const out = s.invoke('p@1#x', input, {}, 50);
  if (!('ok' in out) || !out.ok) throw new Error('cold start failed');
  s.dispose();
}
const coldStartMs = (performance.now() - t0) / COLD;

t0 = performance.now();
for (let i = 0; i < 10; i++) await host.compile({ source: `export default { onRequest(req) { req.headers.set('x', '${i}'); } }`, language: 'typescript', maxBundleBytes: 1 << 20 });
const compileMs = (performance.now() - t0) / 10;

await host.close();
const results = {
  node: process.version,
  calls: N,
  emptyChainUsPerRequest: +emptyChainUs.toFixed(2),
  noopHookUsPerRequest: +noopChainUs.toFixed(2),
  noopHookOverheadUs: +(noopChainUs - emptyChainUs).toFixed(2),
  setHeaderHookUsPerRequest: +setHeaderChainUs.toFixed(2),
  rawSandboxCallUs: +rawCallUs.toFixed(2),
  isolateColdStartMs: +coldStartMs.toFixed(2),
  compileMs: +compileMs.toFixed(2),
};
console.log(JSON.stringify(results, null, 2));
mkdirSync(new URL('./results/', import.meta.url), { recursive: true });
writeFileSync(new URL(process.env.ISOMESH_HOST_MODE === 'inline' ? './results/host-overhead.json' : './results/host-overhead-cordon.json', import.meta.url), `${JSON.stringify(results, null, 2)}\n`);
