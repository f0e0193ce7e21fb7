// A fixed-rate (open-loop) HTTP client: request i is due at start + i/rate and is sent then whether
// or not earlier ones have answered (new keep-alive connections as needed), so a stalled server shows
// up as latency instead of silently lowering the offered load (no coordinated omission). Latency is
// kept both from the actual send (the primary number) and from the due time (adds this client's
// own timer lateness, ~1 ms with setTimeout).
import { execFile } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

export interface OpenLoopResult {
  rate: number;
  durationSec: number;
  sent: number;
  /** Latencies (ms) of 2xx responses, from when each request was actually sent. */
  okLatencyMs: number[];
  /** The same, from when each was due (includes this client's own timer lateness). */
  okScheduledLatencyMs: number[];
  statuses: Record<string, number>;
  /** Transport errors and timeouts. */
  errors: number;
  /** Requests never sent because too many were outstanding. */
  skipped: number;
}

export interface OpenLoopOptions {
  port: number;
  path: string;
  rate: number;
  durationSec: number;
  maxOutstanding?: number;
  timeoutMs?: number;
  /** Stop early (e.g. when the other phase ends). */
  signal?: AbortSignal;
}

export async function openLoop(o: OpenLoopOptions): Promise<OpenLoopResult> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const maxOutstanding = o.maxOutstanding ?? 512;
  const total = Math.round(o.rate * o.durationSec);
  const r: OpenLoopResult = { rate: o.rate, durationSec: o.durationSec, sent: 0, okLatencyMs: [], okScheduledLatencyMs: [], statuses: {}, errors: 0, skipped: 0 };
  let outstanding = 0;
  const pending = new Set<Promise<void>>();
  const fire = (due: number): void => {
    outstanding++;
    const sentAt = performance.now();
    const p = new Promise<void>((resolve) => {
      const done = (): void => {
        outstanding--;
        resolve();
      };
      const req = http.request({ host: '127.0.0.1', port: o.port, path: o.path, agent, timeout: o.timeoutMs ?? 5000 }, (res) => {
        res.resume();
        res.on('end', () => {
          const status = res.statusCode ?? 0;
          r.statuses[status] = (r.statuses[status] ?? 0) + 1;
          if (status >= 200 && status < 300) {
            const now = performance.now();
            r.okLatencyMs.push(now - sentAt);
            r.okScheduledLatencyMs.push(now - due);
          }
          done();
        });
        res.on('error', () => {
          r.errors++;
          done();
        });
      });
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', () => {
        r.errors++;
        done();
      });
      req.end();
    });
    pending.add(p);
    void p.then(() => pending.delete(p));
  };
  const start = performance.now();
  const interval = 1000 / o.rate;
  let i = 0;
  try {
    while (i < total && !o.signal?.aborted) {
      const now = performance.now();
      while (i < total && start + i * interval <= now) {
        const due = start + i * interval;
        i++;
        if (outstanding >= maxOutstanding) r.skipped++;
        else {
          r.sent++;
          fire(due);
        }
      }
      const next = start + i * interval - performance.now();
      if (next > 0) await sleep(Math.min(next, 50));
    }
    // Bounded wait for the stragglers (each request has its own timeout too).
    await Promise.race([Promise.all(pending), sleep((o.timeoutMs ?? 5000) + 1000)]);
  } finally {
    agent.destroy();
  }
  return r;
}

/**
 * The same open loop in a process of its own (pinned to `cpus`, at `nice`, when given): two tenants' clients
 * must not share one event loop, or the neighbour's answers delay the measured tenant's timers and
 * callbacks and the benchmark measures its own client (bench/noisy.ts did, until it used this).
 */
export function openLoopInChild(o: Omit<OpenLoopOptions, 'signal'>, opts: { cpus?: string; nice?: number } = {}): Promise<OpenLoopResult> {
  const script = fileURLToPath(import.meta.url);
  const argv = [...(opts.nice === undefined ? [] : ['nice', '-n', String(opts.nice)]), process.execPath, script, JSON.stringify(o)];
  if (opts.cpus !== undefined) argv.unshift('taskset', '-c', opts.cpus);
  return new Promise((resolve, reject) => {
    execFile(argv[0] as string, argv.slice(1), { maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      if (err !== null) return reject(new Error(`open-loop client failed: ${err.message}\n${stderr}`));
      try {
        resolve(JSON.parse(stdout) as OpenLoopResult);
      } catch {
        reject(new Error(`open-loop client printed no result:\n${stdout.slice(0, 500)}\n${stderr}`));
      }
    });
  });
}

// `node bench/lib/openloop.ts '<OpenLoopOptions JSON>'`: runs one open loop and prints its result.
if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const r = await openLoop(JSON.parse(process.argv[2] ?? '{}') as OpenLoopOptions);
  process.stdout.write(JSON.stringify(r));
}
