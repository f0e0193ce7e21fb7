// The open-loop generator (bench/loadgen/openloop.c): compiled once per source version into
// .tools/ (cc or clang, both installed by scripts/setup.sh) and run pinned like the other tools.
import { createHash } from 'node:crypto';
import { execFile, execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const SOURCE = path.join(import.meta.dirname, '..', 'loadgen', 'openloop.c');
const TOOLS = path.resolve(import.meta.dirname, '..', '..', '.tools');

export interface LatencySummary {
  meanUs: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  maxUs: number;
}

export interface OpenLoopRun {
  rate: number;
  connections: number;
  durationSec: number;
  /** Requests sent, warm-up included (the CPU window covers it too). */
  sentAll: number;
  /** Responses received, warm-up included. */
  answeredAll: number;
  /** Requests sent that were due after the warm-up (the measured ones). */
  sent: number;
  ok: number;
  non2xx: number;
  errors: number;
  timeouts: number;
  /** Requests never sent because the wait queue (one second of arrivals) was full. */
  skipped: number;
  achievedRps: number;
  /** Latency from each request's due time (the primary figure: includes waiting for a free connection). */
  fromDue: LatencySummary;
  fromSend: LatencySummary;
}

let built: string | undefined;

/** Path of the compiled generator (builds it when its source changed). */
export function openLoopBinary(): string {
  if (built !== undefined) return built;
  const src = fs.readFileSync(SOURCE);
  const bin = path.join(TOOLS, `openloop-${createHash('sha256').update(src).digest('hex').slice(0, 12)}`);
  if (!fs.existsSync(bin)) {
    fs.mkdirSync(TOOLS, { recursive: true });
    const cc = ['cc', 'clang'].find((c) => {
      try {
        execFileSync(c, ['--version'], { stdio: 'ignore' });
        return true;
      } catch {
        return false;
      }
    });
    if (cc === undefined) throw new Error('no C compiler (cc or clang) to build bench/loadgen/openloop.c; run scripts/setup.sh');
    execFileSync(cc, ['-O2', '-Wall', '-o', `${bin}.tmp`, SOURCE], { stdio: 'pipe' });
    fs.renameSync(`${bin}.tmp`, bin);
  }
  built = bin;
  return bin;
}

export interface OpenLoopOptions {
  port: number;
  path: string;
  rate: number;
  connections: number;
  durationSec: number;
  warmupSec: number;
  host?: string;
  headers?: string[];
  /** taskset CPU list. */
  cpus?: string;
  /** argv prefix (e.g. nsenter into a netns and a cgroup) put before taskset. */
  prefix?: string[];
  /** Called with the generator's PID right after it starts (for CPU accounting). */
  onStart?: (pid: number) => void;
}

export function runOpenLoop(o: OpenLoopOptions): Promise<OpenLoopRun> {
  const args = [o.host ?? '127.0.0.1', String(o.port), o.path, String(o.rate), String(o.connections), String(o.durationSec), String(o.warmupSec), ...(o.headers ?? [])];
  const argv = [...(o.prefix ?? []), ...(o.cpus === undefined ? [] : ['taskset', '-c', o.cpus]), openLoopBinary(), ...args];
  return new Promise((resolve, reject) => {
    // Bounded twice: the generator stops itself; the timeout kills this PID if it ever does not.
    const child = execFile(argv[0]!, argv.slice(1), { timeout: (o.durationSec + o.warmupSec + 20) * 1000, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`openloop failed: ${err.message}\n${stderr}`));
      try {
        resolve(JSON.parse(stdout.trim().split('\n').pop() ?? '') as OpenLoopRun);
      } catch {
        reject(new Error(`openloop printed no result:\n${stdout}\n${stderr}`));
      }
    });
    if (child.pid !== undefined) o.onStart?.(child.pid);
  });
}
