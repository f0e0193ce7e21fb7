// Benchmark entry (`npm run bench` = `node bench/run.ts`): runs the benchmarks, writes each one's
// results to bench/results/<name>.json and regenerates docs/benchmarks.md from those files.
//
//   node bench/run.ts                          the full set (cpu, h2, openloop, host, noisy, memory, profile, idle)
//   node bench/run.ts --only cpu --quick       one benchmark, short runs (results go to bench/results/scratch/)
//   node bench/run.ts --only cpu --targets nginx,chain3-cordon --bodies small   a subset of targets
//   node bench/run.ts --only cpu --quick --compare bench/results/cpu.json       before/after table
//   --only also takes proxy (the older req/s table), xds (the control plane, docs/xds.md), datapath-proxy, datapath-redirect, doc (just
//   regenerate the doc). A quick or subset run never touches the committed results or the doc.
// Everything runs on loopback or in network namespaces the benchmark creates; every process it
// starts is stopped by PID, also when interrupted.
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { versionOf, waitForQuiet } from './lib/processes.ts';

export interface BenchMeta {
  date: string;
  /** Last commit of the measured code (runtime/, sdk/, plugins/; "+changes": uncommitted edits there). */
  revision: string;
  quick: boolean;
  machine: { cpus: number; model: string; memGiB: number; kernel: string };
  tools: Record<string, string>;
}

export interface BenchContext {
  quick: boolean;
  /** ISOMESH_HOST_MODE for daemons (and the in-process host); undefined = both / the runtime's default. */
  hostMode: 'cordon' | 'inline' | undefined;
  /** cpu / openloop target ids (or prefixes) to run; undefined = all. */
  targets?: string[] | undefined;
  /** Response bodies to run (cpu): small, 16KiB; undefined = both. */
  bodies?: Array<'small' | '16KiB'> | undefined;
  meta: BenchMeta & { quietCheck?: { busyCpus: number; waitedMs: number; quiet: boolean } };
}

const ROOT = path.resolve(import.meta.dirname, '..');
const RESULTS = path.join(import.meta.dirname, 'results');
type Json = Record<string, unknown>;
/** Benchmarks that return their results (written here, rendered by bench/doc.ts). */
const RETURNING: Record<string, () => Promise<(ctx: BenchContext) => Promise<Json>>> = {
  cpu: async () => (await import('./cpu.ts')).cpuBench,
  h2: async () => (await import('./h2.ts')).h2Bench,
  openloop: async () => (await import('./openloop.ts')).openLoopBench,
  memory: async () => (await import('./memory.ts')).memoryBench,
  profile: async () => (await import('./profile.ts')).profileBench,
  idle: async () => (await import('./idle.ts')).idleBench,
};
/** Older benchmarks that write their own report files. */
const WRITING: Record<string, () => Promise<(ctx: BenchContext) => Promise<void>>> = {
  proxy: async () => (await import('./proxy.ts')).proxyBench,
  host: async () => (await import('./host.ts')).hostBench,
  noisy: async () => (await import('./noisy.ts')).noisyBench,
  xds: async () => (await import('./xds.ts')).xdsBench,
};
/** Standalone scripts (root, own netns), run as child processes. */
const SCRIPTS: Record<string, string> = { 'datapath-proxy': 'datapath-proxy.ts', 'datapath-redirect': 'datapath-redirect.ts' };
// memory reads host's per-tenant figures, so it runs after host.
const DEFAULT = ['cpu', 'h2', 'openloop', 'host', 'noisy', 'memory', 'profile', 'idle'];

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string', multiple: true },
    'host-mode': { type: 'string' },
    targets: { type: 'string' },
    bodies: { type: 'string' },
    compare: { type: 'string' },
  },
});
const names = (values.only ?? DEFAULT).flatMap((n) => n.split(',')).filter((n) => n !== '');
const known = [...Object.keys(RETURNING), ...Object.keys(WRITING), ...Object.keys(SCRIPTS), 'doc'];
for (const n of names) {
  if (!known.includes(n)) {
    console.error(`unknown benchmark ${n}; choose from ${known.join(', ')}`);
    process.exit(2);
  }
}
const hostMode = values['host-mode'];
if (hostMode !== undefined && hostMode !== 'cordon' && hostMode !== 'inline') {
  console.error('--host-mode must be cordon or inline');
  process.exit(2);
}
const bodies = values.bodies?.split(',').filter((b) => b !== '');
if (bodies !== undefined && !bodies.every((b) => b === 'small' || b === '16KiB')) {
  console.error('--bodies takes small and/or 16KiB');
  process.exit(2);
}
const targets = values.targets?.split(',').filter((t) => t !== '');
// Partial runs must not overwrite the committed results the doc is generated from.
const partial = values.quick === true || targets !== undefined || bodies !== undefined || hostMode !== undefined;
const outDir = partial ? path.join(RESULTS, 'scratch') : RESULTS;
if (partial) process.env.ISOMESH_BENCH_RESULTS = outDir; // read by lib/report.ts for the older benchmarks

function tool(cmd: string, args: string[]): string {
  return versionOf(cmd, args);
}

const meta: BenchMeta = {
  date: new Date().toISOString(),
  revision: gitRevision(),
  quick: values.quick ?? false,
  machine: {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
  },
  tools: {
    node: process.version,
    nginx: tool('nginx', ['-v']),
    haproxy: tool('haproxy', ['-v']),
    wrk: tool('wrk', ['-v']),
    h2load: tool('h2load', ['--version']),
    cc: tool('cc', ['--version']),
    strace: tool('strace', ['-V']),
  },
};

let failed = false;
fs.mkdirSync(outDir, { recursive: true });
for (const n of names) {
  if (n === 'doc') continue;
  const started = Date.now();
  process.stderr.write(`== ${n}${meta.quick ? ' (quick)' : ''}\n`);
  try {
    // Other work on this small machine would be measured as proxy cost: wait (bounded) for quiet, record it.
    const quietCheck = await waitForQuiet(meta.quick ? 20_000 : 90_000);
    if (!quietCheck.quiet) process.stderr.write(`bench: WARNING: ${quietCheck.busyCpus} CPUs busy with other work before ${n}\n`);
    const ctx: BenchContext = { quick: meta.quick, hostMode, targets, bodies: bodies as BenchContext['bodies'], meta: { ...meta, quietCheck } };
    if (n in RETURNING) {
      const result = await (await RETURNING[n]!())(ctx);
      const file = path.join(outDir, partial ? `${n}-${meta.date.replace(/[:.]/g, '-')}.json` : `${n}.json`);
      fs.writeFileSync(file, `${JSON.stringify({ ...ctx.meta, ...result }, null, 2)}\n`);
      process.stderr.write(`== ${n}: ${path.relative(ROOT, file)}\n`);
      const { printSummary } = await import('./doc.ts');
      process.stdout.write(printSummary(n, { ...ctx.meta, ...result }, values.compare));
    } else if (n in WRITING) {
      await (await WRITING[n]!())(ctx);
    } else {
      await runScript(SCRIPTS[n]!);
    }
    process.stderr.write(`== ${n} done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  } catch (err) {
    failed = true;
    process.stderr.write(`== ${n} FAILED: ${(err as Error).stack ?? err}\n`);
  }
}
if (!partial || names.includes('doc')) {
  const { writeDoc, writeReadmeSummary } = await import('./doc.ts');
  const file = writeDoc(RESULTS);
  writeReadmeSummary(RESULTS);
  process.stderr.write(`== doc: ${path.relative(ROOT, file)} regenerated from bench/results/*.json\n`);
}
process.exit(failed ? 1 : 0);

function runScript(script: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(import.meta.dirname, script)], { stdio: 'inherit' });
    child.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`${script} exited with ${code}`))));
  });
}

function gitRevision(): string {
  try {
    // The last commit that changed the measured code (stable when benchmark-only commits are rebased).
    const rev = execFileSync('git', ['-C', ROOT, 'log', '-1', '--format=%h', '--', 'runtime', 'sdk', 'plugins'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['-C', ROOT, 'status', '--porcelain', '--', 'runtime', 'sdk', 'plugins'], { encoding: 'utf8' }).trim() !== '';
    return dirty ? `${rev}+changes` : rev;
  } catch {
    return 'unknown';
  }
}
