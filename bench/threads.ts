// Per-thread CPU and wake-ups of the daemon and its descendants under wrk: where a request's µs go
// between the data-plane workers, the main thread's plugin host, V8's helper threads and the cordons.
//
//   node bench/threads.ts [--workers 2] [--set none|chain] [--mode cordon|inline] [--secs 5] [--reps 2]
//
// The daemon is unpinned (ISOMESH_WORKERS=--workers); wrk (16 connections, small GET) and the
// upstream nginx on CPU 1. Per rep: CPU µs per request and voluntary context switches per request
// (a thread that sleeps and is woken again) of every thread, grouped by process and thread name,
// from /proc/<pid>/task/<tid>/{schedstat,status} before and after the load (threadSamples in
// bench/lib/processes.ts). Not part of `npm run bench`.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { removeStateDir, setupTenant, startDaemon } from './lib/daemon.ts';
import { SMALL_PATH, startNginxUpstream } from './lib/peers.ts';
import { realisticChain } from './lib/plugins.ts';
import { ProcessGroup, cpuCount, pinSelf, threadSamples } from './lib/processes.ts';
import { runWrk } from './lib/wrk.ts';

const { values } = parseArgs({ options: { mode: { type: 'string', default: 'cordon' }, set: { type: 'string', default: 'none' }, secs: { type: 'string', default: '5' }, workers: { type: 'string', default: '2' }, reps: { type: 'string', default: '2' } } });
if (values.set !== 'none' && values.set !== 'chain') throw new Error(`--set none|chain, not ${values.set}`);
if (values.mode !== 'cordon' && values.mode !== 'inline') throw new Error(`--mode cordon|inline, not ${values.mode}`);

/** Every thread of the daemon and its descendants, keyed pid/tid, named process kind[pid]:thread. */
function sample(root: number): Map<string, { name: string; cpuSec: number; switches: number }> {
  return new Map(threadSamples(root).map((t) => [t.key, { name: `${t.kind}${t.pid === root ? '' : `[${t.pid}]`}:${t.name}`, cpuSec: t.ns / 1e9, switches: t.switches }]));
}

const group = new ProcessGroup();
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-threads-'));
const pinned = cpuCount() >= 2;
if (pinned) pinSelf('1');
const chain = realisticChain();
try {
  const upstream = await startNginxUpstream(group, root, pinned ? '1' : undefined);
  const d = await startDaemon(group, { hostMode: values.mode, env: { ISOMESH_WORKERS: values.workers! } });
  const port = await setupTenant(d, 't', { upstreamPort: upstream.port, plugins: values.set === 'chain' ? chain.plugins : [], secrets: chain.secrets, quota: { cpuMsPerSecond: 100_000 } });
  const load = (secs: number) => runWrk({ url: `http://127.0.0.1:${port}${SMALL_PATH}`, connections: 16, durationSec: secs, headers: chain.headers, ...(pinned ? { cpus: '1' } : {}) });
  await load(2);
  for (let r = 0; r < Number(values.reps); r++) {
    const before = sample(d.proc.pid);
    const out = await load(Number(values.secs));
    const after = sample(d.proc.pid);
    const by = new Map<string, { cpuSec: number; switches: number }>();
    for (const [k, v] of after) {
      const b = before.get(k);
      const e = by.get(v.name) ?? { cpuSec: 0, switches: 0 };
      e.cpuSec += v.cpuSec - (b?.cpuSec ?? 0);
      e.switches += v.switches - (b?.switches ?? 0);
      by.set(v.name, e);
    }
    const rows = [...by].filter(([, v]) => v.cpuSec > 0).sort((a, b) => b[1].cpuSec - a[1].cpuSec);
    const total = rows.reduce((n, [, v]) => n + v.cpuSec, 0);
    console.log(`rep ${r + 1}: ${values.workers} worker(s), ${values.set}, ${values.mode}: ${out.requests} requests, ${((total * 1e6) / out.requests).toFixed(1)} µs CPU per request`);
    for (const [name, v] of rows) console.log(`  ${name.padEnd(40)} ${((v.cpuSec * 1e6) / out.requests).toFixed(1).padStart(7)} µs  ${(v.switches / out.requests).toFixed(2)} switches/request`);
  }
  removeStateDir(d);
} finally {
  await group.close();
  fs.rmSync(root, { recursive: true, force: true });
}
