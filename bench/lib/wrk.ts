// Runs wrk (closed loop: a fixed number of keep-alive connections for a fixed duration) and parses
// its --latency report.
import { execFile } from 'node:child_process';

export interface WrkResult {
  requests: number;
  rps: number;
  latencyMs: { p50: number; p75: number; p90: number; p99: number };
  non2xx: number;
  socketErrors: { connect: number; read: number; write: number; timeout: number };
  transferPerSec: string;
}

export interface WrkOptions {
  url: string;
  connections: number;
  durationSec: number;
  threads?: number;
  /** taskset CPU list for the load generator. */
  cpus?: string;
  timeoutSec?: number;
  /** Extra request header lines ("name: value"). */
  headers?: string[];
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000, m: 60_000 };

function toMs(value: string, unit: string): number {
  return Number(value) * (UNIT_MS[unit] ?? NaN);
}

export function parseWrk(out: string): WrkResult {
  const pct = (p: string): number => {
    const m = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s|m)\\s*$`, 'm').exec(out);
    if (!m) throw new Error(`wrk output has no ${p}% latency:\n${out}`);
    return toMs(m[1]!, m[2]!);
  };
  const rps = /Requests\/sec:\s+([\d.]+)/.exec(out);
  const total = /(\d+) requests in/.exec(out);
  if (!rps || !total) throw new Error(`unparseable wrk output:\n${out}`);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(out);
  return {
    requests: Number(total[1]),
    rps: Number(rps[1]),
    latencyMs: { p50: pct('50'), p75: pct('75'), p90: pct('90'), p99: pct('99') },
    non2xx: non2xx ? Number(non2xx[1]) : 0,
    socketErrors: se
      ? { connect: Number(se[1]), read: Number(se[2]), write: Number(se[3]), timeout: Number(se[4]) }
      : { connect: 0, read: 0, write: 0, timeout: 0 },
    transferPerSec: /Transfer\/sec:\s+(\S+)/.exec(out)?.[1] ?? '',
  };
}

export function runWrk(o: WrkOptions): Promise<WrkResult> {
  const args = [
    `-t${o.threads ?? 1}`,
    `-c${o.connections}`,
    `-d${o.durationSec}s`,
    `--timeout`,
    `${o.timeoutSec ?? 5}s`,
    '--latency',
    ...(o.headers ?? []).flatMap((h) => ['-H', h]),
    o.url,
  ];
  const [file, argv] = o.cpus === undefined ? ['wrk', args] : ['taskset', ['-c', o.cpus, 'wrk', ...args]];
  // execFile's timeout kills this wrk (by its PID) if it ever overruns its own -d by a wide margin.
  return new Promise((resolve, reject) => {
    execFile(file, argv, { timeout: (o.durationSec + 30) * 1000, killSignal: 'SIGKILL', encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`wrk failed: ${err.message}\n${stdout}\n${stderr}`));
      try {
        resolve(parseWrk(stdout));
      } catch (e) {
        reject(e);
      }
    });
  });
}
