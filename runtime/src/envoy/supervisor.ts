// Envoy as a supervised child of the daemon (ISOMESH_DATAPLANE=envoy): the bootstrap written to
// <stateDir>/envoy/bootstrap.json, ENVOY_BIN (or `envoy` on PATH) started with it, restarted with
// exponential back-off when it exits, drained and stopped within a bound on shutdown. Without a binary
// the state is "absent" and the daemon keeps serving xDS, ext_proc and RLS for an Envoy run elsewhere.
//
// Stop: POST /drain_listeners?graceful on Envoy's admin (listeners stop taking connections and ask
// clients to close, for --drain-time-s), wait for that drain (or the exit), SIGTERM, SIGKILL after
// killAfterMs. Envoy's own logs go to <stateDir>/envoy/envoy.log (--log-path), not into the daemon's
// JSON log stream.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import type pino from 'pino';
import { ProcessSupervisor } from '../process-supervisor.ts';
import type { EnvoyProcessStatus } from '../admin/index.ts';
import { bootstrapErrors, envoyBootstrap } from './bootstrap.ts';

export interface EnvoySupervisorOptions {
  stateDir: string;
  socketPath: string;
  adminPort: number;
  nodeId: string;
  cluster?: string;
  /** ENVOY_BIN; default: `envoy` found on PATH. */
  bin?: string;
  /** PATH to search when bin is not given. */
  searchPath?: string;
  logger: pino.Logger;
  /** --drain-time-s (default 5). */
  drainTimeSec?: number;
  /** SIGKILL this long after SIGTERM (default 5 s). */
  killAfterMs?: number;
  /** Back-off before restart n of a streak: initialMs·2^(n-1), at most maxMs (defaults 250 ms, 30 s). */
  backoff?: { initialMs: number; maxMs: number };
  /** Extra arguments (after isomesh's own). */
  args?: string[];
}

/** An executable file: the path itself when it has a slash, else the first match on `searchPath`. */
export function findExecutable(name: string, searchPath = process.env.PATH ?? ''): string | undefined {
  const candidates = name.includes('/') ? [name] : searchPath.split(path.delimiter).filter(Boolean).map((d) => path.join(d, name));
  for (const c of candidates) {
    try {
      if (fs.statSync(c).isFile()) {
        fs.accessSync(c, fs.constants.X_OK);
        return path.resolve(c);
      }
    } catch {
      // not there, or not executable
    }
  }
  return undefined;
}

export class EnvoySupervisor {
  readonly bootstrapPath: string;
  readonly logPath: string;
  readonly #opts: EnvoySupervisorOptions;
  readonly #log: pino.Logger;
  #proc: ProcessSupervisor | undefined;
  #bin: string | undefined;
  #state: EnvoyProcessStatus['state'] = 'stopped';

  constructor(opts: EnvoySupervisorOptions) {
    this.#opts = opts;
    this.#log = opts.logger;
    const dir = path.join(opts.stateDir, 'envoy');
    this.bootstrapPath = path.join(dir, 'bootstrap.json');
    this.logPath = path.join(dir, 'envoy.log');
  }

  bootstrap(): Record<string, unknown> {
    const o = this.#opts;
    return envoyBootstrap({ nodeId: o.nodeId, cluster: o.cluster ?? 'isomesh', socketPath: o.socketPath, adminPort: o.adminPort });
  }

  /** Writes the bootstrap and starts Envoy (or reports it absent). */
  start(): void {
    const b = this.bootstrap();
    const errors = bootstrapErrors(b);
    if (errors.length > 0) throw new Error(`the Envoy bootstrap is invalid: ${errors.join('; ')}`);
    fs.mkdirSync(path.dirname(this.bootstrapPath), { recursive: true, mode: 0o700 });
    fs.writeFileSync(this.bootstrapPath, `${JSON.stringify(b, null, 2)}\n`, { mode: 0o600 });
    const wanted = this.#opts.bin ?? 'envoy';
    this.#bin = findExecutable(wanted, this.#opts.searchPath);
    if (this.#bin === undefined) {
      this.#state = 'absent';
      this.#log.warn(
        { bin: wanted, bootstrap: this.bootstrapPath },
        this.#opts.bin !== undefined
          ? `ENVOY_BIN ${wanted} is not an executable file: Envoy is not started; xDS, ext_proc and RLS stay served for an Envoy run with this bootstrap`
          : 'no envoy on PATH (set ENVOY_BIN): Envoy is not started; xDS, ext_proc and RLS stay served for an Envoy run with this bootstrap',
      );
      return;
    }
    const { initialMs, maxMs } = this.#opts.backoff ?? { initialMs: 250, maxMs: 30_000 };
    this.#proc = new ProcessSupervisor({
      spawn: () => this.#spawn(),
      onStart: (child, restart) => {
        this.#state = 'running';
        this.#log.info({ pid: child.pid, bin: this.#bin, restart }, 'envoy started');
      },
      onExit: (info) => {
        this.#state = 'restarting';
        this.#log.error({ code: info.code, signal: info.signal, streak: info.streak, log: this.logPath }, 'envoy exited; restarting after back-off');
      },
      delay: (streak) => Math.min(maxMs, initialMs * 2 ** (streak - 1)),
      streakResetMs: 60_000,
    });
    this.#proc.start();
  }

  #spawn() {
    const o = this.#opts;
    const args = ['-c', this.bootstrapPath, '--drain-time-s', String(o.drainTimeSec ?? 5), '--disable-hot-restart', '--log-path', this.logPath, ...(o.args ?? [])];
    // Same process group as the daemon: if the daemon dies, its group's signal reaches Envoy too,
    // rather than leaving an orphan holding the tenant ports.
    return spawn(this.#bin!, args, { stdio: 'ignore' });
  }

  status(): EnvoyProcessStatus {
    const p = this.#proc;
    const out: EnvoyProcessStatus = { state: this.#state, restarts: p?.restarts ?? 0 };
    const pid = p?.pid;
    if (this.#state === 'running' && pid !== undefined) out.pid = pid;
    const last = p?.lastExit;
    if (last !== undefined) out.lastExit = { code: last.code, signal: last.signal, at: last.at.toISOString() };
    return out;
  }

  /** Drains (bounded by --drain-time-s) and stops Envoy; SIGKILL after killAfterMs. */
  async stop(): Promise<void> {
    const p = this.#proc;
    if (p === undefined) {
      if (this.#state !== 'absent') this.#state = 'stopped';
      return;
    }
    const drainMs = (this.#opts.drainTimeSec ?? 5) * 1000;
    await p.stop({
      signal: 'SIGTERM',
      graceMs: this.#opts.killAfterMs ?? 5000,
      // Drain only when Envoy's admin took the request; an exit meanwhile ends the wait.
      prelude: async (_child, exited) => {
        if (await this.#startDrain()) await Promise.race([exited, sleep(drainMs)]);
      },
    });
    this.#state = 'stopped';
    this.#log.info({ lastExit: p.lastExit && { code: p.lastExit.code, signal: p.lastExit.signal } }, 'envoy stopped');
  }

  #startDrain(): Promise<boolean> {
    return new Promise((resolve) => {
      const req = http.request(
        { host: '127.0.0.1', port: this.#opts.adminPort, method: 'POST', path: '/drain_listeners?graceful', timeout: 1000 },
        (res) => {
          res.resume();
          resolve(res.statusCode === 200);
        },
      );
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
      req.end();
    });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms).unref());
}
