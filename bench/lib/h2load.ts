// Runs h2load (nghttp2's HTTP/2 load generator: closed loop, `clients` connections with `streams`
// requests in flight on each) and parses its report. h2load prints min/max/mean/sd of the request
// time but no percentiles, so p50/p99 come from its per-request log (`--log-file`: start time,
// status, µs to the end of the response). A run bounded by a request count (`-n`) accounts exactly
// (every started request is done and counted in the traffic figures); one bounded by `-D` leaves the
// requests in flight at the end half-counted, so the benchmark measures with `requests`.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import { percentile } from './stats.ts';

export interface H2loadResult {
  /** "h2c" when h2load spoke HTTP/2 prior knowledge (it says which protocol it negotiated). */
  protocol: string;
  seconds: number;
  rps: number;
  requests: { total: number; started: number; done: number; succeeded: number; failed: number; errored: number; timeout: number };
  status: { '2xx': number; '3xx': number; '4xx': number; '5xx': number };
  /** Bytes received: all, HPACK-compressed header blocks, DATA payload. */
  bytes: { total: number; headers: number; data: number };
  latencyMs: { min: number; max: number; mean: number; sd: number };
}

export interface H2loadLatency {
  count: number;
  p50Ms: number;
  p99Ms: number;
  /** Requests logged with a status other than 2xx (0 = no response). */
  non2xx: number;
}

export interface H2loadOptions {
  url: string;
  clients: number;
  /** Max concurrent streams per connection (-m). */
  streams: number;
  /** Exactly this many requests (-n); else `durationSec`. */
  requests?: number;
  durationSec?: number;
  /** File sent as each request's body (-d: the method becomes POST). */
  dataFile?: string;
  /** Extra request header lines ("name: value"). */
  headers?: string[];
  /** taskset CPU list for the load generator. */
  cpus?: string;
  /** Per-request log for percentiles (parse with parseH2loadLog). */
  logFile?: string;
  /** A connection with no I/O for this long is closed and its requests count as timed out (-N); default 10 s. */
  idleTimeoutSec?: number;
  /** Kills h2load (by its PID) if it runs longer than this. */
  timeoutSec?: number;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000 };

function ms(value: string, unit: string): number {
  return Number(value) * (UNIT_MS[unit] ?? NaN);
}

function need(re: RegExp, out: string, what: string): RegExpExecArray {
  const m = re.exec(out);
  if (!m) throw new Error(`h2load output has no ${what}:\n${out}`);
  return m;
}

export function parseH2load(out: string): H2loadResult {
  const fin = need(/^finished in ([\d.]+)(us|ms|s), ([\d.]+) req\/s/m, out, '"finished in" line');
  const r = need(/^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/m, out, 'requests line');
  const st = need(/^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx/m, out, 'status codes');
  const tr = need(/^traffic: \S+ \((\d+)\) total, \S+ \((\d+)\) headers .*?, \S+ \((\d+)\) data/m, out, 'traffic line');
  const t = need(/^time for request:\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)\s+([\d.]+)(us|ms|s)/m, out, 'request times');
  const n = (i: number, m: RegExpExecArray): number => Number(m[i]);
  return {
    protocol: /^Application protocol: (\S+)/m.exec(out)?.[1] ?? 'unknown',
    seconds: ms(fin[1]!, fin[2]!) / 1000,
    rps: Number(fin[3]),
    requests: { total: n(1, r), started: n(2, r), done: n(3, r), succeeded: n(4, r), failed: n(5, r), errored: n(6, r), timeout: n(7, r) },
    status: { '2xx': n(1, st), '3xx': n(2, st), '4xx': n(3, st), '5xx': n(4, st) },
    bytes: { total: n(1, tr), headers: n(2, tr), data: n(3, tr) },
    latencyMs: { min: ms(t[1]!, t[2]!), max: ms(t[3]!, t[4]!), mean: ms(t[5]!, t[6]!), sd: ms(t[7]!, t[8]!) },
  };
}

/** Percentiles from h2load's --log-file ("start µs<TAB>status<TAB>µs to response end" per request). */
export function parseH2loadLog(text: string): H2loadLatency {
  const lat: number[] = [];
  let non2xx = 0;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const f = line.split('\t');
    const status = Number(f[1]);
    const us = Number(f[2]);
    if (f.length < 3 || !Number.isFinite(us)) throw new Error(`bad h2load log line: ${JSON.stringify(line)}`);
    if (status < 200 || status > 299) non2xx++;
    lat.push(us / 1000);
  }
  const sorted = Float64Array.from(lat).sort();
  return { count: sorted.length, p50Ms: percentile(sorted, 0.5), p99Ms: percentile(sorted, 0.99), non2xx };
}

export function h2loadArgs(o: H2loadOptions): string[] {
  if ((o.requests === undefined) === (o.durationSec === undefined)) throw new Error('h2load: give exactly one of requests and durationSec');
  return [
    '-t', '1',
    '-c', String(o.clients),
    '-m', String(o.streams),
    ...(o.requests !== undefined ? ['-n', String(o.requests)] : ['-D', String(o.durationSec)]),
    '-N', String(o.idleTimeoutSec ?? 10), // a stalled proxy shows up as timeouts instead of a hung run
    ...(o.dataFile !== undefined ? ['-d', o.dataFile] : []),
    ...(o.logFile !== undefined ? [`--log-file=${o.logFile}`] : []),
    ...(o.headers ?? []).flatMap((h) => ['-H', h]),
    o.url,
  ];
}

export function runH2load(o: H2loadOptions): Promise<H2loadResult & { latency?: H2loadLatency }> {
  const args = h2loadArgs(o);
  const [file, argv] = o.cpus === undefined ? ['h2load', args] : ['taskset', ['-c', o.cpus, 'h2load', ...args]];
  const limit = o.timeoutSec ?? (o.durationSec ?? 120) + 30;
  return new Promise((resolve, reject) => {
    execFile(file, argv, { timeout: limit * 1000, killSignal: 'SIGKILL', encoding: 'utf8', maxBuffer: 8 << 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`h2load failed: ${err.message}\n${stdout}\n${stderr}`));
      try {
        const r = parseH2load(stdout);
        if (o.logFile === undefined) return resolve(r);
        const latency = parseH2loadLog(fs.readFileSync(o.logFile, 'utf8'));
        fs.rmSync(o.logFile, { force: true });
        resolve({ ...r, latency });
      } catch (e) {
        reject(e);
      }
    });
  });
}
