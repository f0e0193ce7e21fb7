// `profile`: where the µs of one request go. Runs the daemon under `node --cpu-prof` (its cordon
// workers inherit the flag) with one scenario's wrk load, keeps only the samples taken while the load
// ran (V8's profile clock and process.hrtime are both CLOCK_MONOTONIC), and prints the top functions
// by self time, per process and by category; then, on a fresh daemon, a `strace -c -f` syscall
// summary over a load window (strace slows the daemon down; counts per request stay meaningful).
//
//   node bench/profile.ts [--scenario iso0|iso1|iso3noop|chain3|h2c|grpc] [--mode cordon|inline]
//                         [--body small|16KiB] [--seconds 5] [--top 25]
// h2c and grpc are isomesh without plugins under bench/h2.ts's h2load load (4 connections × 100
// streams): h2c to an HTTP/1.1 service, gRPC unary to a grpc-js server through a `grpc` service.
// As part of `npm run bench` (`--only profile`) it profiles iso0, chain3, h2c and grpc in the default
// host mode, with nginx's syscalls under the same loads for reference, and writes
// bench/results/profile.json for docs/benchmarks.md ("where the µs go").
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeStateDir, setupTenant, startDaemon, type BenchDaemon } from './lib/daemon.ts';
import { ECHO_MESSAGE, GRPC_PATH, grpcUnary, startGrpcUpstream, writeGrpcRequest } from './lib/grpc-upstream.ts';
import { runH2load } from './lib/h2load.ts';
import { LARGE_PATH, SMALL_BODY, SMALL_PATH, startNginxProxy, startNginxUpstream } from './lib/peers.ts';
import { NOOP, realisticChain } from './lib/plugins.ts';
import { ProcessGroup, cpuCount, pinSelf, processTree } from './lib/processes.ts';
import { aggregateProfile, type ProfileSummary } from './lib/cpuprofile.ts';
import { runWrk } from './lib/wrk.ts';
import type { BenchContext } from './run.ts';
import { h2Get } from './h2.ts';

export type Scenario = 'iso0' | 'iso1' | 'iso3noop' | 'chain3' | 'h2c' | 'grpc';
export const SCENARIOS: Scenario[] = ['iso0', 'iso1', 'iso3noop', 'chain3', 'h2c', 'grpc'];
type Load = (seconds: number) => Promise<{ requests: number; rps: number }>;

export interface ProfileOptions {
  scenario: Scenario;
  mode: 'cordon' | 'inline';
  body: 'small' | '16KiB';
  seconds: number;
  top: number;
}

export interface Syscall {
  name: string;
  calls: number;
  perRequest: number;
  errors: number;
  pctTime: number;
}

export interface PerfSymbol {
  pct: number;
  thread: string;
  dso: string;
  kernel: boolean;
  symbol: string;
}

export interface ProfileResult {
  options: ProfileOptions;
  profiled: { requests: number; rps: number; windowed: boolean; processes: ProfileSummary[] };
  /** perf (cpu-clock) on the proxy's CPU: kernel and user symbols, cordon workers included. */
  perf: { requests: number; kernelPct: number; byProcess: Array<{ process: string; pct: number; kernelPct: number }>; top: PerfSymbol[] } | { skipped: string };
  strace: { requests: number; rps: number; processes: Array<{ process: string; syscalls: Syscall[]; totalPerRequest: number }> } | { skipped: string };
}

async function tenantFor(d: BenchDaemon, scenario: Scenario, upstreamPort: number, grpcPort?: number): Promise<number> {
  const chain = realisticChain();
  if (scenario === 'chain3') return setupTenant(d, 't', { upstreamPort, plugins: chain.plugins, secrets: chain.secrets, quota: chain.quota });
  if (scenario === 'grpc') return setupTenant(d, 't', { upstreamPort: grpcPort!, protocol: 'grpc' });
  const plugins: Array<[string, string]> = scenario === 'iso1' ? [['noop', NOOP]] : scenario === 'iso3noop' ? [['a', NOOP], ['b', NOOP], ['c', NOOP]] : [];
  return setupTenant(d, 't', { upstreamPort, plugins });
}

async function ready(port: number, p: string, headers: string[], scenario: Scenario): Promise<void> {
  const h = Object.fromEntries(headers.map((x) => [x.slice(0, x.indexOf(':')).toLowerCase(), x.slice(x.indexOf(':') + 1).trim()]));
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      if (scenario === 'grpc') {
        const r = await grpcUnary(port, h);
        if (r.code === 0 && r.reply?.equals(ECHO_MESSAGE)) return;
      } else if (scenario === 'h2c') {
        const r = await h2Get(port, p, h);
        if (r.status === 200 && r.body.toString() === SMALL_BODY) return;
      } else {
        const r = await fetch(`http://127.0.0.1:${port}${p}`, { headers: h });
        await r.arrayBuffer();
        if (r.status === 200) return;
      }
    } catch {
      // not yet
    }
    if (Date.now() > deadline) throw new Error(`listener ${port} not serving 200`);
    await sleep(50);
  }
}

/** The scenario's load on 127.0.0.1:port: wrk over HTTP/1.1, or h2load (4 × 100 streams) for h2c and gRPC. */
function loadFor(scenario: Scenario, port: number, p: string, headers: string[], grpcBody: string, cpus: string | undefined): Load {
  if (scenario !== 'h2c' && scenario !== 'grpc') return (seconds) => runWrk({ url: `http://127.0.0.1:${port}${p}`, connections: 16, durationSec: seconds, headers, ...(cpus ? { cpus } : {}) });
  return async (seconds) => {
    const r = await runH2load({
      url: `http://127.0.0.1:${port}${scenario === 'grpc' ? GRPC_PATH : p}`, clients: 4, streams: 100, durationSec: seconds,
      headers: scenario === 'grpc' ? [...headers, 'content-type: application/grpc', 'te: trailers'] : headers,
      ...(scenario === 'grpc' ? { dataFile: grpcBody } : {}), ...(cpus ? { cpus } : {}),
    });
    return { requests: r.requests.done, rps: r.rps };
  };
}

export async function profileOnce(o: ProfileOptions): Promise<ProfileResult> {
  const pinned = cpuCount() >= 2;
  const proxyCpu = pinned ? '0' : undefined;
  const loadCpu = pinned ? '1' : undefined;
  const headers = realisticChain().headers;
  const p = o.body === 'small' ? SMALL_PATH : LARGE_PATH;
  const group = new ProcessGroup();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-profile-'));
  const profDir = path.join(root, 'prof');
  fs.mkdirSync(profDir);
  let d: BenchDaemon | undefined;
  let d2: BenchDaemon | undefined;
  let perfMaps: string[] = [];
  const grpcBody = writeGrpcRequest(path.join(root, 'grpc-request.bin'));
  try {
    if (pinned) pinSelf(loadCpu!);
    const upstream = await startNginxUpstream(group, root, loadCpu);
    const grpcUp = o.scenario === 'grpc' ? await startGrpcUpstream(group, loadCpu) : undefined;
    const load: Load = (seconds) => loadFor(o.scenario, port, p, headers, grpcBody, loadCpu)(seconds);
    // 1. CPU profile of the daemon and its cordon workers, restricted to the load window.
    d = await startDaemon(group, { hostMode: o.mode, nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${profDir}`], ...(proxyCpu ? { cpus: proxyCpu } : {}), env: { ISOMESH_WORKERS: '1' } });
    let port = await tenantFor(d, o.scenario, upstream.port, grpcUp?.port);
    await ready(port, p, headers, o.scenario);
    await load(2);
    const from = Number(process.hrtime.bigint() / 1000n);
    const profiled = await load(o.seconds);
    const to = Number(process.hrtime.bigint() / 1000n);
    const pids = processTree(d.proc.pid);
    await group.stop(d.proc, 20_000); // SIGTERM: the daemon drains and exits, and node writes the profiles
    await sleep(500);
    const processes = fs.readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile')).map((f) => {
      const pid = Number(/^CPU\.\d+\.\d+\.(\d+)\./.exec(f)?.[1]); // CPU.<date>.<time>.<pid>.<tid>.<seq>.cpuprofile
      const role = pid === d!.proc.pid ? 'daemon' : pids.includes(pid) ? 'child' : 'child (started later)';
      return aggregateProfile(JSON.parse(fs.readFileSync(path.join(profDir, f), 'utf8')), { fromUs: from, toUs: to, top: o.top, role, pid });
    }).filter((s) => s.samples > 0).sort((a, b) => b.selfMs - a.selfMs);
    const windowed = processes.every((s) => s.windowed);

    // 2. A fresh daemon (JIT symbols for perf): perf on the proxy's CPU, then strace on its tree.
    d2 = await startDaemon(group, { hostMode: o.mode, nodeArgs: ['--perf-basic-prof-only-functions'], ...(proxyCpu ? { cpus: proxyCpu } : {}), env: { ISOMESH_WORKERS: '1' } });
    port = await tenantFor(d2, o.scenario, upstream.port, grpcUp?.port);
    await ready(port, p, headers, o.scenario);
    await load(2);
    const tree2 = processTree(d2.proc.pid);
    perfMaps = tree2.map((x) => `/tmp/perf-${x}.map`);
    // Thread ids → the process they belong to (perf reports per thread).
    const roles = new Map<number, string>([[0, 'idle']]);
    for (const x of tree2) {
      const role = x === d2.proc.pid ? 'daemon' : `child ${x} (${procName(x)})`;
      for (const tid of safeList(`/proc/${x}/task`)) roles.set(Number(tid), role);
    }
    const perf = proxyCpu === undefined ? { skipped: 'needs 2 CPUs (perf samples the proxy CPU)' } : await perfPhase(root, proxyCpu, roles, () => load(Math.min(o.seconds, 4)));

    // 3. Syscalls per request: one `strace -c -f` per process of the daemon's tree (a table each).
    const tree = processTree(d2.proc.pid).filter((x) => procName(x) !== 'esbuild'); // esbuild idles once plugins are compiled
    const strace = await stracePhase(root, tree, d2.proc.pid, () => load(Math.min(o.seconds, 4)));
    return { options: o, profiled: { requests: profiled.requests, rps: Math.round(profiled.rps), windowed, processes }, perf, strace };
  } finally {
    await group.close();
    for (const f of perfMaps) fs.rmSync(f, { force: true }); // the daemon's JIT maps for perf, ours to remove
    removeStateDir(d);
    removeStateDir(d2);
    fs.rmSync(root, { recursive: true, force: true });
    if (pinned) pinSelf(`0-${cpuCount() - 1}`);
  }
}

async function stracePhase(root: string, pids: number[], daemon: number, load: () => Promise<{ requests: number; rps: number }>): Promise<ProfileResult['strace']> {
  const runs = pids.map((pid) => {
    const out = path.join(root, `strace-${pid}.txt`);
    const st = spawn('strace', ['-c', '-f', '-o', out, '-p', String(pid)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    st.stderr!.on('data', (b) => (err += b));
    const exited = new Promise<void>((r) => {
      st.once('exit', () => r());
      st.once('error', () => r());
    });
    return { pid, out, st, exited, err: () => err };
  });
  const stopAll = async (): Promise<void> => {
    for (const r of runs) if (r.st.pid !== undefined && r.st.exitCode === null && r.st.signalCode === null) process.kill(r.st.pid, 'SIGINT'); // by PID: detach, write the summary
    await Promise.race([Promise.all(runs.map((r) => r.exited)), sleep(10_000)]);
    for (const r of runs) if (r.st.pid !== undefined && r.st.exitCode === null && r.st.signalCode === null) process.kill(r.st.pid, 'SIGKILL');
  };
  await sleep(1000); // attach
  const dead = runs.find((r) => r.st.exitCode !== null || r.st.pid === undefined);
  if (dead !== undefined) {
    await stopAll();
    return { skipped: `strace could not attach to ${dead.pid}: ${dead.err().trim() || 'not installed'}` };
  }
  const traced = await load();
  await stopAll();
  const processes = runs.map((r) => {
    const syscalls = parseStrace(fs.existsSync(r.out) ? fs.readFileSync(r.out, 'utf8') : '', traced.requests);
    return { process: r.pid === daemon ? 'daemon' : `child ${r.pid} (${procName(r.pid)})`, syscalls, totalPerRequest: round(syscalls.reduce((a, s) => a + s.perRequest, 0), 2) };
  });
  return { requests: traced.requests, rps: Math.round(traced.rps), processes };
}

/** perf record (software cpu-clock: works in VMs) on one CPU while `load` runs; flat report. */
async function perfPhase(root: string, cpu: string, roles: Map<number, string>, load: () => Promise<{ requests: number }>): Promise<ProfileResult['perf']> {
  const data = path.join(root, 'perf.data');
  const rec = spawn('perf', ['record', '-e', 'cpu-clock', '-F', '1999', '-C', cpu, '-o', data], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  rec.stderr!.on('data', (b) => (err += b));
  const exited = new Promise<void>((r) => {
    rec.once('exit', () => r());
    rec.once('error', () => r());
  });
  await sleep(500);
  if (rec.exitCode !== null || rec.pid === undefined) return { skipped: `perf record did not run: ${err.trim() || 'not installed'}` };
  const r = await load();
  process.kill(rec.pid, 'SIGINT'); // by PID: perf writes its data file and exits
  await Promise.race([exited, sleep(15_000)]);
  if (rec.exitCode === null && rec.signalCode === null) process.kill(rec.pid, 'SIGKILL');
  const report = (sort: string, limit: string): string =>
    spawnSync('perf', ['report', '-i', data, '--stdio', '--no-children', '--sort', sort, '--percent-limit', limit], { encoding: 'utf8', timeout: 60_000, maxBuffer: 32 << 20 }).stdout ?? '';
  const top: PerfSymbol[] = [];
  for (const line of report('comm,dso,sym', '0.3').split('\n')) {
    const m = /^\s+([\d.]+)%\s+(\S+)\s+(\S+)\s+\[(.)\]\s+(.+?)\s*$/.exec(line);
    if (m) top.push({ pct: Number(m[1]), thread: m[2]!, dso: m[3]!, kernel: m[4] === 'k', symbol: m[5]! });
  }
  // Whole split (no limit): each sample by process (the thread's pid → daemon / cordon) and kernel or not.
  const procs = new Map<string, { pct: number; kernelPct: number }>();
  let kernelPct = 0;
  for (const line of report('pid,dso', '0').split('\n')) {
    const m = /^\s+([\d.]+)%\s+(\d+):\S*\s+(\S+)\s*$/.exec(line);
    if (!m) continue;
    const pct = Number(m[1]);
    const kernel = m[3] === '[kernel.kallsyms]';
    const who = roles.get(Number(m[2])) ?? 'other';
    const e = procs.get(who) ?? { pct: 0, kernelPct: 0 };
    e.pct += pct;
    if (kernel) e.kernelPct += pct;
    if (kernel) kernelPct += pct;
    procs.set(who, e);
  }
  if (top.length === 0) return { skipped: 'perf report gave nothing' };
  return {
    requests: r.requests,
    kernelPct: round(kernelPct, 1),
    byProcess: [...procs.entries()].sort((a, b) => b[1].pct - a[1].pct).map(([process, v]) => ({ process, pct: round(v.pct, 1), kernelPct: round(v.kernelPct, 1) })),
    top: top.slice(0, 30),
  };
}

function safeList(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

function procName(pid: number): string {
  try {
    const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((x) => x !== '');
    const script = cmd.find((a) => /\.(ts|js)$/.test(a));
    return script !== undefined ? path.basename(script) : path.basename(cmd[0] ?? '?');
  } catch {
    return '?';
  }
}

function round(x: number, digits = 1): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Parses `strace -c` output: "% time  seconds  usecs/call  calls  errors syscall". */
export function parseStrace(text: string, requests: number): Syscall[] {
  const rows: Syscall[] = [];
  for (const line of text.split('\n')) {
    const m = /^\s*([\d.]+)\s+[\d.]+\s+\d+\s+(\d+)\s+(\d+)?\s*([a-z_0-9]+)\s*$/.exec(line);
    if (!m || m[4] === 'total') continue;
    const calls = Number(m[2]);
    rows.push({ name: m[4]!, calls, perRequest: round(calls / Math.max(1, requests), 3), errors: Number(m[3] ?? 0), pctTime: Number(m[1]) });
  }
  return rows.sort((a, b) => b.calls - a.calls);
}

export function formatProfile(r: ProfileResult): string {
  const o = r.options;
  const lines = [`profile: ${o.scenario} [${o.mode}], ${o.body} body, ${o.seconds} s of ${o.scenario === 'h2c' || o.scenario === 'grpc' ? 'h2load (4 connections × 100 streams)' : 'wrk (16 connections)'}: ${r.profiled.requests} requests, ${r.profiled.rps} req/s under the profiler${r.profiled.windowed ? '' : ' (whole-run profile: the load window could not be isolated)'}`];
  for (const p of r.profiled.processes) {
    lines.push('', `${p.role} (pid ${p.pid}): ${p.selfMs.toFixed(0)} ms of samples in the window, ${(p.selfMs * 1000 / Math.max(1, r.profiled.requests)).toFixed(1)} µs per request`);
    lines.push(`  by category: ${p.categories.map((c) => `${c.name} ${c.pct.toFixed(1)} %`).join(', ')}`);
    lines.push('   self %   self ms  function (location)');
    for (const f of p.top) lines.push(`  ${f.pct.toFixed(1).padStart(6)}  ${f.selfMs.toFixed(1).padStart(8)}  ${f.name} (${f.location})`);
  }
  if ('skipped' in r.perf) lines.push('', `perf: ${r.perf.skipped}`);
  else {
    lines.push('', `perf (cpu-clock) on the proxy CPU over ${r.perf.requests} requests: ${r.perf.kernelPct} % of samples in the kernel; by process: ${r.perf.byProcess.map((t) => `${t.process} ${t.pct} % (kernel ${t.kernelPct} %)`).join(', ')}`);
    lines.push('   %     thread           symbol [dso]');
    for (const s of r.perf.top.slice(0, 20)) lines.push(`  ${s.pct.toFixed(2).padStart(5)}  ${s.thread.padEnd(16)} ${s.kernel ? '[k] ' : ''}${s.symbol} [${s.dso}]`);
  }
  if ('skipped' in r.strace) lines.push('', `strace: ${r.strace.skipped}`);
  else {
    for (const p of r.strace.processes) {
      lines.push('', `strace -c -f, ${p.process}, over ${r.strace.requests} requests (${r.strace.rps} req/s while traced): ${p.totalPerRequest} syscalls per request`);
      lines.push('   calls/req    calls  %time  syscall');
      for (const s of p.syscalls.slice(0, 12)) lines.push(`  ${s.perRequest.toFixed(3).padStart(10)} ${String(s.calls).padStart(8)} ${s.pctTime.toFixed(1).padStart(6)}  ${s.name}`);
    }
  }
  return `${lines.join('\n')}\n`;
}

/**
 * The reference: syscalls per request of one nginx hop under the same load (strace -c): HTTP/1.1
 * (`iso0`), the h2c listener with proxy_pass (`h2c`), or grpc_pass to the grpc-js server (`grpc`).
 */
export async function nginxSyscalls(seconds: number, scenario: 'iso0' | 'h2c' | 'grpc' = 'iso0'): Promise<ProfileResult['strace']> {
  const pinned = cpuCount() >= 2;
  const loadCpu = pinned ? '1' : undefined;
  const group = new ProcessGroup();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-profile-nginx-'));
  try {
    if (pinned) pinSelf('1');
    const upstream = scenario === 'grpc' ? await startGrpcUpstream(group, loadCpu) : await startNginxUpstream(group, root, loadCpu);
    const nginx = await startNginxProxy(group, root, upstream.port, pinned ? '0' : undefined, { h2c: scenario === 'h2c', grpc: scenario === 'grpc' });
    const run = loadFor(scenario, nginx.port, SMALL_PATH, realisticChain().headers, writeGrpcRequest(path.join(root, 'grpc-request.bin')), loadCpu);
    const load = () => run(seconds);
    await load();
    const r = await stracePhase(root, [nginx.proc.pid], nginx.proc.pid, load);
    const what = scenario === 'iso0' ? 'one hop' : scenario === 'h2c' ? 'one hop, h2c listener' : 'one hop, grpc_pass';
    if (!('skipped' in r)) for (const p of r.processes) p.process = `nginx (${what})`;
    return r;
  } finally {
    await group.close();
    fs.rmSync(root, { recursive: true, force: true });
    if (pinned) pinSelf(`0-${cpuCount() - 1}`);
  }
}

/** run.ts entry: the plain proxy, the realistic chain, h2c and gRPC in the default host mode, and nginx's syscalls under each load. */
export async function profileBench(ctx: BenchContext): Promise<Record<string, unknown>> {
  const runs: ProfileResult[] = [];
  for (const scenario of ['iso0', 'chain3', 'h2c', 'grpc'] as const) {
    const r = await profileOnce({ scenario, mode: ctx.hostMode ?? 'cordon', body: 'small', seconds: ctx.quick ? 3 : 6, top: 25 });
    process.stderr.write(formatProfile(r));
    runs.push(r);
  }
  const nginx = await nginxSyscalls(ctx.quick ? 2 : 3);
  const nginxH2 = { h2c: await nginxSyscalls(ctx.quick ? 2 : 3, 'h2c'), grpc: await nginxSyscalls(ctx.quick ? 2 : 3, 'grpc') };
  return { runs, nginx, nginxH2 };
}

if (import.meta.main) {
  const { values } = parseArgs({ options: { scenario: { type: 'string', default: 'iso0' }, mode: { type: 'string', default: 'cordon' }, body: { type: 'string', default: 'small' }, seconds: { type: 'string', default: '5' }, top: { type: 'string', default: '25' } } });
  const scenario = values.scenario as Scenario;
  if (!SCENARIOS.includes(scenario)) throw new Error(`--scenario: ${SCENARIOS.join(', ')}`);
  if (values.mode !== 'cordon' && values.mode !== 'inline') throw new Error('--mode: cordon or inline');
  if (values.body !== 'small' && values.body !== '16KiB') throw new Error('--body: small or 16KiB');
  const seconds = Number(values.seconds);
  if (!(seconds >= 1 && seconds <= 60)) throw new Error('--seconds: 1..60');
  const r = await profileOnce({ scenario, mode: values.mode, body: values.body, seconds, top: Number(values.top) || 25 });
  process.stdout.write(formatProfile(r));
}
