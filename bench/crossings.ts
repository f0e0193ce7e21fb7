// What a hop between threads and into an isolate costs, in CPU per call (both sides counted):
//  - a data-plane worker's plugin call to the main thread and its reply (MessagePort, the real
//    message shapes of proxy/remote-host.ts), one message per call and in batches (proxy/outbox.ts),
//    and batches of 8 sent as JSON strings instead of structured clone;
//  - an isolated-vm applySync of an empty function and of a small JSON round trip, without and with
//    the per-call `timeout` (the pass's wall backstop);
//  - the plugin host's whole work for one request with one no-op plugin (inline: PluginHost begin →
//    onRequest → end, sequential), against the same with no plugin: what a first plugin costs
//    before any socket or load is involved.
// Each case runs pinned to one core and unpinned. Run: node bench/crossings.ts
// (writes bench/results/crossings.json; not part of `npm run bench`, docs/host.md cites it).

import { spawnSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import ivm from 'isolated-vm';
import pino from 'pino';
import { Registry } from 'prom-client';
import { PluginHost } from '../runtime/src/host/index.ts';
import type { HookRequest } from '../runtime/src/host/contract.ts';
import { oneRequest, tenantConfig } from './lib/host-requests.ts';
import { NOOP } from './lib/plugins.ts';
import { round } from './lib/stats.ts';

const ROUND_TRIPS = 40_000;
const CALLS = 100_000;

const ECHO = `
const { parentPort } = require('node:worker_threads');
let t0 = process.threadCpuUsage();
parentPort.on('message', (m) => {
  if (m === 'cpu') {
    const t = process.threadCpuUsage(t0);
    parentPort.postMessage({ cpuUs: t.user + t.system });
    t0 = process.threadCpuUsage();
    return;
  }
  const reply = (c) => ({ t: 'hostReply', id: c.id, outcome: { action: 'continue', headers: c.input.headers } });
  // A string is the same batch as JSON (the alternative to structured clone): parsed, answered as JSON.
  if (typeof m === 'string') {
    const b = JSON.parse(m);
    parentPort.postMessage(JSON.stringify({ t: 'hostReplies', m: b.m.map(reply) }));
    return;
  }
  parentPort.postMessage(m.t === 'host' ? { t: 'hostReplies', m: m.m.map(reply) } : reply(m));
});`;

const INPUT = {
  method: 'GET', path: '/api/users', query: 'a=1', host: 'svc', remoteAddress: '127.0.0.1', route: 'all', service: 'origin',
  headers: [['host', 'svc'], ['accept', '*/*'], ['user-agent', 'bench'], ['x-request-id', 'abc'], ['authorization', `Bearer ${'x'.repeat(200)}`]],
};

/**
 * CPU µs per call and its reply, main thread + worker thread, `batch` calls per message (1 =
 * unbatched); `json`: each batch sent as a JSON string and parsed on arrival, both ways.
 */
async function relay(batch: number, json = false): Promise<{ mainUs: number; workerUs: number; totalUs: number }> {
  const w = new Worker(ECHO, { eval: true });
  await new Promise((r) => w.once('online', r));
  const cpuOfWorker = () => new Promise<number>((r) => { w.once('message', (m: { cpuUs: number }) => r(m.cpuUs)); w.postMessage('cpu'); });
  let id = 0;
  const call = () => ({ t: 'call', id: ++id, run: id, tenant: 't', requestId: `r${id}`, route: 'all', phase: 'onRequest', input: INPUT, record: false });
  const send = () => {
    if (batch === 1) return w.postMessage(call());
    const m = { t: 'host', m: Array.from({ length: batch }, call) };
    w.postMessage(json ? JSON.stringify(m) : m);
  };
  const run = async (n: number) => {
    let got = 0;
    await new Promise<void>((done) => {
      const onMessage = (raw: string | { t: string; m?: unknown[] }) => {
        const m = typeof raw === 'string' ? (JSON.parse(raw) as { t: string; m?: unknown[] }) : raw;
        got += m.t === 'hostReplies' ? m.m!.length : 1;
        if (got >= n) {
          w.off('message', onMessage);
          done();
        } else if (got % batch === 0) send();
      };
      w.on('message', onMessage);
      send();
    });
  };
  await run(5000); // warm both sides
  await cpuOfWorker();
  const t0 = process.threadCpuUsage();
  await run(ROUND_TRIPS);
  const t = process.threadCpuUsage(t0);
  const workerUs = await cpuOfWorker();
  await w.terminate();
  const mainUs = (t.user + t.system) / ROUND_TRIPS;
  const wUs = workerUs / ROUND_TRIPS;
  return { mainUs: round(mainUs), workerUs: round(wUs), totalUs: round(mainUs + wUs) };
}

interface IsolateCosts {
  /** An empty function, no arguments: isolated-vm's crossing itself. */
  emptyUs: number;
  emptyTimeoutUs: number;
  /** JSON in (a request's shape), JSON out. */
  noTimeoutUs: number;
  timeoutUs: number;
}

/** CPU µs per applySync of an empty function and of a JSON-in, JSON-out one, without and with a timeout. */
function isolateCall(): IsolateCosts {
  const iso = new ivm.Isolate({ memoryLimit: 32 });
  const ctx = iso.createContextSync();
  const fn = iso.compileScriptSync('(function (s) { const o = JSON.parse(s); return JSON.stringify({ action: "continue", n: o.headers.length }); })').runSync(ctx, { reference: true }) as ivm.Reference<(s: string) => string>;
  const empty = iso.compileScriptSync('(function () { return 0; })').runSync(ctx, { reference: true }) as ivm.Reference<() => number>;
  const arg = JSON.stringify(INPUT);
  const measure = (call: () => unknown) => {
    for (let i = 0; i < 5000; i++) call();
    const c0 = process.cpuUsage(); // the process: isolated-vm's timer thread included
    for (let i = 0; i < CALLS; i++) call();
    const c = process.cpuUsage(c0);
    return round((c.user + c.system) / CALLS);
  };
  const out = {
    emptyUs: measure(() => empty.applySync(undefined, [])),
    emptyTimeoutUs: measure(() => empty.applySync(undefined, [], { timeout: 50 })),
    noTimeoutUs: measure(() => fn.applySync(undefined, [arg])),
    timeoutUs: measure(() => fn.applySync(undefined, [arg], { timeout: 50 })),
  };
  iso.dispose();
  return out;
}

const HOST_REQUESTS = 20_000;

/** CPU µs of the plugin host's work for one request (inline, sequential): no plugin, one no-op plugin. */
async function hostRequest(): Promise<{ noPluginUs: number; noopUs: number }> {
  const host = new PluginHost({ logger: pino({ level: 'silent' }), registry: new Registry(), mode: 'inline' });
  const req: HookRequest = {
    method: 'GET', path: INPUT.path, query: INPUT.query, host: INPUT.host, remoteAddress: INPUT.remoteAddress, route: INPUT.route, service: INPUT.service,
    headers: INPUT.headers.map(([k, v]) => [k, v] as [string, string]),
  };
  const measure = async (name: string): Promise<number> => {
    for (let i = 0; i < 3000; i++) await oneRequest(host, name, `w${i}`, req);
    const c0 = process.cpuUsage();
    for (let i = 0; i < HOST_REQUESTS; i++) await oneRequest(host, name, `r${i}`, req);
    const c = process.cpuUsage(c0);
    return round((c.user + c.system) / HOST_REQUESTS);
  };
  try {
    host.configure(await tenantConfig(host, 'none', []));
    host.configure(await tenantConfig(host, 'noop', [['noop', NOOP]]));
    return { noPluginUs: await measure('none'), noopUs: await measure('noop') };
  } finally {
    await host.close();
  }
}

async function measureHere(): Promise<unknown> {
  const relays: Record<string, unknown> = {};
  for (const b of [1, 4, 8]) relays[b === 1 ? 'unbatched' : `batch${b}`] = await relay(b);
  relays.batch8Json = await relay(8, true);
  return { relay: relays, isolate: isolateCall(), host: await hostRequest() };
}

if (process.argv[2] === '--child') {
  process.stdout.write(JSON.stringify(await measureHere()));
} else {
  const self = path.join(import.meta.dirname, 'crossings.ts');
  const child = (pin?: string) => {
    const args = [process.execPath, self, '--child'];
    const r = pin === undefined ? spawnSync(args[0]!, args.slice(1), { encoding: 'utf8' }) : spawnSync('taskset', ['-c', pin, ...args], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`crossings child failed: ${r.stderr}`);
    return JSON.parse(r.stdout);
  };
  const result = {
    date: new Date().toISOString(),
    roundTrips: ROUND_TRIPS,
    isolateCalls: CALLS,
    oneCore: child('0'),
    unpinned: child(),
  };
  mkdirSync(path.join(import.meta.dirname, 'results'), { recursive: true });
  writeFileSync(path.join(import.meta.dirname, 'results/crossings.json'), `${JSON.stringify(result, null, 2)}\n`);
  for (const layout of ['oneCore', 'unpinned'] as const) {
    const r = result[layout] as { relay: Record<string, { mainUs: number; workerUs: number; totalUs: number }>; isolate: IsolateCosts; host: { noPluginUs: number; noopUs: number } };
    console.log(`${layout}:`);
    for (const [k, v] of Object.entries(r.relay)) console.log(`  worker call + reply, ${k.padEnd(9)}: ${v.totalUs} µs per call (main ${v.mainUs}, worker ${v.workerUs})`);
    console.log(`  isolate applySync, empty function: ${r.isolate.emptyUs} µs without timeout, ${r.isolate.emptyTimeoutUs} µs with`);
    console.log(`  isolate applySync, JSON round trip: ${r.isolate.noTimeoutUs} µs without timeout, ${r.isolate.timeoutUs} µs with`);
    console.log(`  plugin host, one request: ${r.host.noPluginUs} µs without plugins, ${r.host.noopUs} µs with one no-op plugin`);
  }
}
