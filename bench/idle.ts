// `idle`: what an idle node costs — the CPU and wake-ups of every thread of the proxy's processes
// while no request arrives. A per-node daemon runs on every node all the time; what it spends doing
// nothing is spent on every node (seed 002: "unpredictable resources"). Measured exactly: each
// thread's on-CPU time from /proc/<pid>/task/<tid>/schedstat (ns, not ticks) and its voluntary
// context switches (each one a sleep, so each one a wake-up after it) over a window of quiet.
//
// Targets: nginx (one worker, as in the cpu benchmark) and the daemon with the default number of
// data-plane workers (one per CPU) and default host mode, with no tenant and with 30 tenants (seed
// 000's pods per node), each with a service, a route and an active plugin that has served one
// request. Each daemon is measured once the publish-time processes (trial load, esbuild) have exited.
//
//   node bench/run.ts --only idle [--quick]
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { addTaggedTenant, removeStateDir, startDaemon, type BenchDaemon } from './lib/daemon.ts';
import { get } from './lib/http.ts';
import { startNginxProxy, startNginxUpstream } from './lib/peers.ts';
import { ProcessGroup, awaitPublishExit, threadSamples } from './lib/processes.ts';
import { round } from './lib/stats.ts';
import type { BenchContext } from './run.ts';

/** The publish-time processes exit 30 s after their last use. */
const SETTLE_MAX_MS = 45_000;

export interface IdleThread {
  /** Process kind (daemon, cordon, nginx) and thread name (MainThread, WorkerThread, V8Worker, …). */
  thread: string;
  threads: number;
  wakeupsPerSec: number;
  cpuMsPerSec: number;
}

export interface IdleTarget {
  id: string;
  label: string;
  processes: number;
  wakeupsPerSec: number;
  cpuMsPerSec: number;
  /** CPU share of one core, per cent. */
  corePct: number;
  byThread: IdleThread[];
  windowSec: number;
}

/** Wake-ups and CPU of every thread of a process tree over `seconds` of quiet. */
export async function measureIdle(root: number, seconds: number): Promise<Omit<IdleTarget, 'id' | 'label'>> {
  const a = new Map(threadSamples(root).map((s) => [s.key, s]));
  const t0 = performance.now();
  await sleep(seconds * 1000);
  const b = threadSamples(root);
  const sec = (performance.now() - t0) / 1000;
  const byKind = new Map<string, { threads: number; ns: number; switches: number }>();
  const pids = new Set<string>();
  for (const s of b) {
    const before = a.get(s.key);
    if (before === undefined) continue; // started during the window: not idle work of the node
    pids.add(String(s.pid));
    const thread = `${s.kind} ${s.name}`;
    const k = byKind.get(thread) ?? { threads: 0, ns: 0, switches: 0 };
    k.threads++;
    k.ns += s.ns - before.ns;
    k.switches += s.switches - before.switches;
    byKind.set(thread, k);
  }
  const byThread: IdleThread[] = [...byKind].map(([thread, k]) => ({ thread, threads: k.threads, wakeupsPerSec: round(k.switches / sec, 1), cpuMsPerSec: round(k.ns / 1e6 / sec, 2) }))
    .sort((x, y) => y.cpuMsPerSec - x.cpuMsPerSec);
  const ns = [...byKind.values()].reduce((s, k) => s + k.ns, 0);
  const switches = [...byKind.values()].reduce((s, k) => s + k.switches, 0);
  return { processes: pids.size, wakeupsPerSec: round(switches / sec, 1), cpuMsPerSec: round(ns / 1e6 / sec, 2), corePct: round(ns / 1e7 / sec, 3), byThread, windowSec: round(sec, 1) };
}

/** Waits (bounded) until the publish-time processes have exited, then a moment more. */
async function settle(pid: number): Promise<void> {
  const left = await awaitPublishExit(pid, SETTLE_MAX_MS);
  if (left.length > 0) process.stderr.write(`idle: ${left.join(' and ')} still running ${SETTLE_MAX_MS / 1000} s after the last publish\n`);
  await sleep(2000);
}

async function addTenants(d: BenchDaemon, n: number): Promise<void> {
  const agent = new http.Agent({ keepAlive: false });
  try {
    for (let i = 0; i < n; i++) await addTaggedTenant(d, agent, `t${i}`);
  } finally {
    agent.destroy();
  }
}

export async function idleBench(ctx: BenchContext): Promise<Record<string, unknown>> {
  const seconds = ctx.quick ? 5 : 15;
  const group = new ProcessGroup();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-idle-'));
  const targets: IdleTarget[] = [];
  try {
    const upstream = await startNginxUpstream(group, root);
    const nginx = await startNginxProxy(group, root, upstream.port);
    // One request through it, then quiet.
    const agent = new http.Agent({ keepAlive: false });
    await get(agent, nginx.port, '/small.txt');
    agent.destroy();
    await sleep(2000);
    targets.push({ id: 'nginx', label: 'nginx, one worker', ...(await measureIdle(nginx.proc.pid, seconds)) });
    for (const tenants of [0, 30]) {
      let d: BenchDaemon | undefined;
      try {
        d = await startDaemon(group, { hostMode: ctx.hostMode, listenerPorts: 40, env: { ISOMESH_WORKERS: String(os.availableParallelism()) } });
        await addTenants(d, tenants);
        await settle(d.proc.pid);
        const label = `isomesh, ${os.availableParallelism()} workers [${ctx.hostMode ?? 'default host mode'}], ${tenants === 0 ? 'no tenants' : `${tenants} tenants with a plugin each`}`;
        targets.push({ id: `iso-${tenants}`, label, ...(await measureIdle(d.proc.pid, seconds)) });
        process.stderr.write(`idle: ${label}: ${targets.at(-1)!.wakeupsPerSec} wake-ups/s, ${targets.at(-1)!.cpuMsPerSec} ms CPU/s\n`);
      } finally {
        if (d !== undefined) await group.stop(d.proc);
        removeStateDir(d);
      }
    }
  } finally {
    await group.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
  return { seconds, targets };
}
