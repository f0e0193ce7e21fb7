// Benchmark entry: node bench/run.ts [--quick] [--only proxy|host|noisy] [--host-mode cordon|inline]
// Each benchmark writes bench/results/<name>.{json,md,svg} and prints its markdown tables.
// Everything runs on loopback; every process a benchmark starts is stopped by PID in its finally.
import os from 'node:os';
import { parseArgs } from 'node:util';
import { versionOf, waitForQuiet } from './lib/processes.ts';

export interface BenchMeta {
  date: string;
  quick: boolean;
  machine: { cpus: number; model: string; memGiB: number; kernel: string };
  tools: Record<string, string>;
}

export interface BenchContext {
  quick: boolean;
  /** ISOMESH_HOST_MODE for daemons (and the in-process host); undefined = the runtime's default. */
  hostMode: 'cordon' | 'inline' | undefined;
  meta: BenchMeta & { quietCheck?: { busyCpus: number; waitedMs: number; quiet: boolean } };
}

type Bench = (ctx: BenchContext) => Promise<void>;

const BENCHES: Record<string, () => Promise<Bench>> = {
  proxy: async () => (await import('./proxy.ts')).proxyBench,
  host: async () => (await import('./host.ts')).hostBench,
  noisy: async () => (await import('./noisy.ts')).noisyBench,
};

const { values } = parseArgs({ options: { quick: { type: 'boolean', default: false }, only: { type: 'string', multiple: true }, 'host-mode': { type: 'string' } } });
const names = values.only ?? Object.keys(BENCHES);
for (const n of names) {
  if (!(n in BENCHES)) {
    console.error(`unknown benchmark ${n}; choose from ${Object.keys(BENCHES).join(', ')}`);
    process.exit(2);
  }
}

const hostMode = values['host-mode'];
if (hostMode !== undefined && hostMode !== 'cordon' && hostMode !== 'inline') {
  console.error('--host-mode must be cordon or inline');
  process.exit(2);
}

const meta: BenchMeta = {
  date: new Date().toISOString(),
  quick: values.quick ?? false,
  machine: {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model ?? 'unknown',
    memGiB: Math.round(os.totalmem() / 2 ** 30),
    kernel: os.release(),
  },
  tools: {
    node: process.version,
    nginx: versionOf('nginx', ['-v']),
    haproxy: versionOf('haproxy', ['-v']),
    wrk: versionOf('wrk', ['-v']),
  },
};

let failed = false;
for (const n of names) {
  const started = Date.now();
  process.stderr.write(`== ${n}${meta.quick ? ' (quick)' : ''}\n`);
  try {
    const bench = await BENCHES[n]!();
    // Other work on this 2-core machine would be measured as proxy slowness: wait for quiet, record it.
    const quietCheck = await waitForQuiet(meta.quick ? 30_000 : 180_000);
    if (!quietCheck.quiet) process.stderr.write(`bench: WARNING: ${quietCheck.busyCpus} CPUs busy with other work; results of ${n} are contaminated\n`);
    await bench({ quick: meta.quick, hostMode, meta: { ...meta, quietCheck } });
    process.stderr.write(`== ${n} done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  } catch (err) {
    failed = true;
    process.stderr.write(`== ${n} FAILED: ${(err as Error).stack ?? err}\n`);
  }
}
process.exit(failed ? 1 : 0);
