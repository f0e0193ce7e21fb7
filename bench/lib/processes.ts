// Child processes of a benchmark: started (optionally pinned to a CPU with taskset, which execs so
// the PID is the real process), their output kept (bounded), and all stopped by PID — SIGTERM, then
// SIGKILL after a grace period — from the caller's finally block.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

const LOG_LIMIT = 64 * 1024;

export interface Started {
  name: string;
  proc: ChildProcess;
  pid: number;
  logs: () => string;
  exited: Promise<number | null>;
}

export interface StartOptions {
  /** CPU list for taskset -c (e.g. "0"); undefined = not pinned. */
  cpus?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** argv put before everything (e.g. nsenter into a netns); it must exec, so the PID stays the process's. */
  prefix?: string[];
}

const cleanups = new Set<() => Promise<void> | void>();
let trapped = false;

/**
 * Registers a clean-up to run if the benchmark is interrupted (SIGINT/SIGTERM) before its own
 * finally block runs: processes stopped by PID, namespaces and cgroups removed. Returns the unregister.
 */
export function atInterrupt(fn: () => Promise<void> | void): () => void {
  cleanups.add(fn);
  if (!trapped) {
    trapped = true;
    const onSignal = async (sig: NodeJS.Signals): Promise<void> => {
      process.stderr.write(`bench: ${sig}: cleaning up\n`);
      for (const f of [...cleanups].reverse()) {
        try {
          await f();
        } catch {
          // keep cleaning
        }
      }
      process.exit(130);
    };
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }
  return () => cleanups.delete(fn);
}

export class ProcessGroup {
  readonly #procs: Started[] = [];
  readonly #unregister = atInterrupt(() => this.stopAll());

  start(name: string, cmd: string, args: string[], opts: StartOptions = {}): Started {
    const full = [...(opts.prefix ?? []), ...(opts.cpus === undefined ? [] : ['taskset', '-c', opts.cpus]), cmd, ...args];
    const [file, argv] = [full[0]!, full.slice(1)];
    const proc = spawn(file, argv, { cwd: opts.cwd, env: opts.env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    const keep = (d: Buffer): void => {
      out += d.toString();
      if (out.length > LOG_LIMIT) out = out.slice(-LOG_LIMIT);
    };
    proc.stdout!.on('data', keep);
    proc.stderr!.on('data', keep);
    const exited = new Promise<number | null>((resolve) => {
      proc.once('exit', (code) => resolve(code));
      proc.once('error', () => resolve(-1));
    });
    if (proc.pid === undefined) throw new Error(`${name}: could not start ${cmd}`);
    const s: Started = { name, proc, pid: proc.pid, logs: () => out, exited };
    this.#procs.push(s);
    return s;
  }

  /** Stops one process by PID and forgets it. */
  async stop(s: Started, graceMs = 5000): Promise<void> {
    const i = this.#procs.indexOf(s);
    if (i >= 0) this.#procs.splice(i, 1);
    if (s.proc.exitCode !== null || s.proc.signalCode !== null) return;
    try {
      process.kill(s.pid, 'SIGTERM');
    } catch {
      return; // already gone
    }
    const done = await Promise.race([s.exited.then(() => true), sleep(graceMs).then(() => false)]);
    if (!done) {
      try {
        process.kill(s.pid, 'SIGKILL');
      } catch {
        // gone between the checks
      }
      await Promise.race([s.exited, sleep(2000)]);
    }
  }

  /** Stops every process still running, newest first. */
  async stopAll(): Promise<void> {
    for (const s of [...this.#procs].reverse()) await this.stop(s);
  }

  /** stopAll, and forget the interrupt hook (the group is done). */
  async close(): Promise<void> {
    await this.stopAll();
    this.#unregister();
  }
}

export { freePort, freePortRange } from '../../test/support/ports.ts';

/**
 * Waits until something accepts TCP connections on 127.0.0.1:port — in this network namespace, or,
 * given the nsenter `prefix` the process was started with, in that one (probed with bash's /dev/tcp).
 */
export async function waitForPort(port: number, s: Started, timeoutMs = 10_000, prefix?: string[]): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (s.proc.exitCode !== null) throw new Error(`${s.name} exited with ${s.proc.exitCode}:\n${s.logs()}`);
    const ok = prefix !== undefined ? probeIn(prefix, port) : await probe(port);
    if (ok) return;
    await sleep(25);
  }
  throw new Error(`${s.name} did not listen on ${port} within ${timeoutMs} ms:\n${s.logs()}`);
}

function probe(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const c = net.connect(port, '127.0.0.1');
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

function probeIn(prefix: string[], port: number): boolean {
  return spawnSync(prefix[0]!, [...prefix.slice(1), 'bash', '-c', `exec 3<>/dev/tcp/127.0.0.1/${port}`], { stdio: 'ignore', timeout: 5000 }).status === 0;
}

/** Pins every thread of this process to `cpus` (taskset -a); the isolated-vm and libuv threads too. */
export function pinSelf(cpus: string): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', cpus, String(process.pid)], { stdio: 'ignore' });
  } catch {
    // taskset missing: run unpinned (the report records the requested pinning only when it worked)
  }
}

/** CPUs online — not nproc, which counts only the CPUs this (possibly pinned) process may use. */
export function cpuCount(): number {
  return os.cpus().length;
}

/** First line `cmd args` prints (stdout or stderr: nginx -v writes to stderr), or "unknown". */
export function versionOf(cmd: string, args: string[]): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 5000 });
  const line = `${r.stdout ?? ''}\n${r.stderr ?? ''}`.split('\n').find((l) => l.trim() !== '');
  return line?.trim() ?? 'unknown';
}

/** PIDs of `pid` and all its descendants (from /proc/<n>/stat ppid). */
export function processTree(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const e of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      parent.set(Number(e), ppid);
    } catch {
      // exited meanwhile
    }
  }
  const out = [pid];
  for (let i = 0; i < out.length; i++) for (const [child, ppid] of parent) if (ppid === out[i]) out.push(child);
  return out;
}

/** What a process of an isomesh daemon's tree is, from its command line. */
export function processKind(pid: number, root: number): string {
  if (pid === root) return 'daemon';
  let cmd = '';
  try {
    cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return 'gone';
  }
  if (/cordon-main\.(ts|mjs)/.test(cmd)) return 'cordon';
  if (/trial-main\.(ts|mjs)/.test(cmd)) return 'trial';
  if (cmd.includes('--service=')) return 'esbuild';
  return path.basename(cmd.split('\0')[0] ?? '') || 'other';
}

/** One thread of a process tree: its on-CPU time and how often it slept and was woken again. */
export interface ThreadSample {
  /** pid/tid: the same thread in two readings. */
  key: string;
  pid: number;
  /** processKind() of its process. */
  kind: string;
  /** The thread's name (comm: MainThread, WorkerThread, V8Worker, …). */
  name: string;
  /** On-CPU time, user + kernel, ns (schedstat: not rounded to clock ticks). */
  ns: number;
  /** Voluntary context switches: the thread slept and was woken. */
  switches: number;
}

/** Every thread of `root` and its descendants (threads that exit while being read are left out). */
export function threadSamples(root: number): ThreadSample[] {
  const out: ThreadSample[] = [];
  for (const pid of processTree(root)) {
    const kind = processKind(pid, root);
    let tids: string[];
    try {
      tids = fs.readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // exited
    }
    for (const tid of tids) {
      try {
        const base = `/proc/${pid}/task/${tid}`;
        const ns = Number(fs.readFileSync(`${base}/schedstat`, 'utf8').split(' ')[0]);
        const status = fs.readFileSync(`${base}/status`, 'utf8');
        const switches = Number(/^voluntary_ctxt_switches:\s+(\d+)/m.exec(status)?.[1] ?? 0);
        const name = fs.readFileSync(`${base}/comm`, 'utf8').trim();
        out.push({ key: `${pid}/${tid}`, pid, kind, name, ns, switches });
      } catch {
        // exited meanwhile
      }
    }
  }
  return out;
}

/** The process kinds that exist only around publishes (the trial-load process, esbuild's service); they exit 30 s after their last use. */
export const PUBLISH_KINDS: readonly string[] = ['trial', 'esbuild'];

/**
 * Waits (polling, at most `maxMs`) until no publish-time process is left under the daemon `pid`,
 * so that what is measured next is an idle node's. Returns the kinds still running at the deadline.
 */
export async function awaitPublishExit(pid: number, maxMs: number): Promise<string[]> {
  const deadline = performance.now() + maxMs;
  const left = (): string[] => {
    const kinds = new Set(processTree(pid).map((p) => processKind(p, pid)));
    return PUBLISH_KINDS.filter((k) => kinds.has(k));
  };
  let still = left();
  while (still.length > 0 && performance.now() < deadline) {
    await sleep(500);
    still = left();
  }
  return still;
}

/** Summed VmRSS (KiB) of a process and its descendants (e.g. the daemon and its cordon workers), also by kind. */
export function treeRssKiB(pid: number): { totalKiB: number; processes: number; byKind: Record<string, { kib: number; processes: number }> } {
  let total = 0;
  let n = 0;
  const byKind: Record<string, { kib: number; processes: number }> = {};
  for (const p of processTree(pid)) {
    try {
      const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${p}/status`, 'utf8'));
      if (m) {
        total += Number(m[1]);
        n++;
        const k = (byKind[processKind(p, pid)] ??= { kib: 0, processes: 0 });
        k.kib += Number(m[1]);
        k.processes++;
      }
    } catch {
      // exited meanwhile
    }
  }
  return { totalKiB: total, processes: n, byKind };
}

/** Seconds per clock tick (USER_HZ) of /proc's time counters. */
export const CLOCK_TICK_SEC = 1 / Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim() || '100');

/** A reading of the machine's idle and steal time (/proc/stat, all CPUs) and of the monotonic clock. */
export interface IdleSample {
  /** Seconds of idle + iowait, summed over CPUs. */
  idleSec: number;
  /** Seconds the hypervisor ran other guests while a CPU of this one wanted to run, summed over CPUs. */
  stealSec: number;
  atMs: number;
}

export function idleSample(): IdleSample {
  const v = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  return { idleSec: ((v[3] ?? 0) + (v[4] ?? 0)) * CLOCK_TICK_SEC, stealSec: (v[7] ?? 0) * CLOCK_TICK_SEC, atMs: performance.now() };
}

/**
 * CPUs' worth of work the machine did between two samples: wall time × CPUs minus idle and steal.
 * Not the sum of /proc/stat's user/system/softirq columns: on this VM's tickless kernel those tick
 * counts disagree with the processes' own times in both directions (at 5,000 req/s open loop against
 * nginx they summed to 0.86 CPUs while the processes used 0.23 and the CPUs were idle all but 0.24;
 * a burner at 50 % of a core read as 0.445 CPUs). Idle time is kept in nanoseconds by the NOHZ code,
 * so this measure is exact: the same burner reads 0.502, and a load with nothing else running leaves
 * 0.01 CPUs unaccounted (kernel threads).
 */
export function busyCpusBetween(a: IdleSample, b: IdleSample): number {
  const wallSec = Math.max(1e-3, (b.atMs - a.atMs) / 1000);
  return Math.max(0, cpuCount() - (b.idleSec - a.idleSec + b.stealSec - a.stealSec) / wallSec);
}

/** Machine-wide busy CPU (in CPUs, 0..nproc) over `ms`. */
export async function machineBusy(ms = 1000): Promise<number> {
  const a = idleSample();
  await sleep(ms);
  return busyCpusBetween(a, idleSample());
}

/**
 * Benchmarks on a shared 2-core machine are only meaningful when nothing else runs: waits (bounded)
 * until background load is under `threshold` CPUs and reports what it saw.
 */
export async function waitForQuiet(maxWaitMs = 120_000, threshold = 0.15): Promise<{ busyCpus: number; waitedMs: number; quiet: boolean }> {
  const t0 = Date.now();
  let busy = await machineBusy();
  while (busy > threshold && Date.now() - t0 < maxWaitMs) {
    process.stderr.write(`bench: machine busy (${busy.toFixed(2)} CPUs used by other processes); waiting for quiet…\n`);
    await sleep(4000);
    busy = await machineBusy();
  }
  return { busyCpus: round2(busy), waitedMs: Date.now() - t0, quiet: busy <= threshold };
}

/**
 * Between the scenarios of one run: waits (bounded) until the machine is idle, so that the backlog a
 * saturated open-loop scenario left in its proxy is drained before the next scenario is measured
 * (it would otherwise count as other work in that scenario's window). Returns the ms waited.
 */
export async function waitForIdle(maxWaitMs = 15_000, threshold = 0.1): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < maxWaitMs && (await machineBusy(250)) > threshold) {
    // a scenario's backlog (or someone else's work) is still running
  }
  return Date.now() - t0;
}

function round2(x: number): number {
  return Math.round(x * 100) / 100;
}
