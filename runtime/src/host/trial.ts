// TrialLoader: publish-time trial loads in a supervised child process (trial-main.ts), for cordon
// mode. The daemon never runs a just-published plugin's top-level code itself: a load that crashes
// or OOM-kills the process fails only that publish (400 ISOMESH_ERR_PLUGIN_LOAD with the reason) and
// the next trial gets a fresh process. Loads run one at a time, so a death is always attributable to
// the load that was running. The process is started on the first publish and kept while publishes
// keep coming (a fork costs far more than a trial load); idle for IDLE_MS, it exits, giving back its
// ~100 MiB.

import { fork, type ChildProcess } from 'node:child_process';
import type { Logger } from 'pino';
import { IsomeshError, type ErrorCode } from '../errors.ts';
import type { PluginVersionDeclarations } from '../store/model.ts';
import { childEntry } from './child-entry.ts';
import { guestRuntimeCode } from './guest-code.ts';

export const PROBE_MEMORY_MB = 32;
// Generous: the trial load runs in its own process (a slow load blocks only that publish), and a busy
// machine must not turn a valid plugin into a load error. A top-level loop is still stopped.
export const PROBE_TIMEOUT_MS = 2000;

export type ToTrial = { t: 'init'; guest: string } | { t: 'probe'; id: number; code: string; timeoutMs: number };
export type FromTrial =
  | { t: 'ready' }
  | { t: 'probed'; id: number; ok: true; declarations: PluginVersionDeclarations }
  | { t: 'probed'; id: number; ok: false; error: { code: ErrorCode; message: string; details?: unknown } };

/** Wall time the daemon waits for an answer beyond the load's own timeout before it kills the process. */
const BACKSTOP_MS = 10_000;
/** Wall time a new trial process has to start (node, isolated-vm, the guest runtime) before it is killed. */
const START_MS = 30_000;
/** An idle trial process exits after this. */
const IDLE_MS = 30_000;

interface Job {
  id: number;
  code: string;
  resolve(d: PluginVersionDeclarations): void;
  reject(e: unknown): void;
}

function childExecArgv(): string[] {
  return process.execArgv.filter((a) => !/^--(test|inspect|watch|experimental-test)/.test(a));
}

export class TrialLoader {
  readonly #logger: Logger;
  readonly #timeoutMs: number;
  readonly #backstopMs: number;
  readonly #idleMs: number;
  #idle: NodeJS.Timeout | undefined;
  readonly #queue: Job[] = [];
  #child: ChildProcess | undefined;
  /** The current child answered init; until then a job waits (its startup is not the load's time). */
  #ready = false;
  /** Why the daemon itself killed the child, when it did: the job fails with that, not as a crash. */
  #killedFor: string | undefined;
  #running: Job | undefined;
  #backstop: NodeJS.Timeout | undefined;
  #ids = 0;
  #closed = false;
  /** Trial processes that died (crash, abort, OOM kill). */
  crashes = 0;

  /** A private directory of this process for the bundled entry (child-entry.ts); none: the .ts entry runs. */
  readonly #runDir: string | undefined;

  constructor(opts: { logger: Logger; timeoutMs?: number; backstopMs?: number; idleMs?: number; runDir?: string }) {
    this.#idleMs = opts.idleMs ?? IDLE_MS;
    this.#runDir = opts.runDir;
    this.#logger = opts.logger.child({ component: 'trial-load' });
    this.#timeoutMs = opts.timeoutMs ?? PROBE_TIMEOUT_MS;
    this.#backstopMs = opts.backstopMs ?? BACKSTOP_MS;
  }

  /** The trial process (tests and diagnostics): its pid and whether a load is running in it. */
  get process(): { pid: number | null; busy: boolean } {
    return { pid: this.#child?.pid ?? null, busy: this.#running !== undefined };
  }

  probe(code: string): Promise<PluginVersionDeclarations> {
    if (this.#closed) return Promise.reject(new IsomeshError('ISOMESH_ERR_INTERNAL', 'plugin host is closed'));
    return new Promise((resolve, reject) => {
      this.#queue.push({ id: ++this.#ids, code, resolve, reject });
      this.#next();
    });
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#idle);
    const child = this.#child;
    this.#child = undefined;
    this.#fail(new IsomeshError('ISOMESH_ERR_INTERNAL', 'plugin host is closing'));
    for (const job of this.#queue.splice(0)) job.reject(new IsomeshError('ISOMESH_ERR_INTERNAL', 'plugin host is closing'));
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }

  #next(): void {
    if (this.#running !== undefined || this.#closed) return;
    const job = this.#queue.shift();
    if (job === undefined) {
      this.#child?.channel?.unref();
      if (this.#child !== undefined) this.#idleExit(this.#child);
      return;
    }
    clearTimeout(this.#idle);
    const child = this.#child ?? this.#start();
    child.channel?.ref();
    this.#running = job;
    if (this.#ready) this.#send(child, job);
    // else: sent on 'ready'
  }

  /** No job for idleMs: the process is let go (disconnect → it exits 0); the next publish forks again. */
  #idleExit(child: ChildProcess): void {
    clearTimeout(this.#idle);
    this.#idle = setTimeout(() => {
      if (this.#child !== child || this.#running !== undefined) return;
      this.#child = undefined;
      child.disconnect();
      setTimeout(() => {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      }, 5000).unref();
    }, this.#idleMs);
    this.#idle.unref();
  }

  #send(child: ChildProcess, job: Job): void {
    const wait = this.#timeoutMs + this.#backstopMs;
    this.#backstop = setTimeout(() => this.#kill(child, `the trial load did not answer within ${wait / 1000} s`), wait);
    child.send({ t: 'probe', id: job.id, code: job.code, timeoutMs: this.#timeoutMs } satisfies ToTrial);
  }

  #kill(child: ChildProcess, why: string): void {
    this.#logger.warn({ pid: child.pid }, `${why}; killing the trial process`);
    this.#killedFor = why;
    child.kill('SIGKILL');
  }

  #start(): ChildProcess {
    const source = new URL('./trial-main.ts', import.meta.url);
    const entry = this.#runDir === undefined ? source : childEntry(source, this.#runDir, (err) => this.#logger.warn({ err }, 'could not bundle the trial-load entry; it runs as TypeScript (20 MiB more)'));
    const child = fork(entry, [], {
      execPath: process.execPath,
      execArgv: childExecArgv(),
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.#child = child;
    this.#ready = false;
    this.#killedFor = undefined;
    this.#backstop = setTimeout(() => this.#kill(child, `the trial-load process did not start within ${START_MS / 1000} s`), START_MS);
    child.on('message', (m: FromTrial) => this.#answer(child, m));
    child.on('error', (err) => this.#logger.error({ err }, 'trial process error'));
    child.once('exit', (code, signal) => this.#exited(child, code, signal));
    child.unref();
    child.send({ t: 'init', guest: guestRuntimeCode() } satisfies ToTrial);
    return child;
  }

  #answer(child: ChildProcess, m: FromTrial): void {
    if (child !== this.#child) return;
    if (m.t === 'ready') {
      clearTimeout(this.#backstop);
      this.#ready = true;
      if (this.#running !== undefined) this.#send(child, this.#running);
      return;
    }
    const job = this.#running;
    if (child !== this.#child || job === undefined || m.t !== 'probed' || m.id !== job.id) return;
    clearTimeout(this.#backstop);
    this.#running = undefined;
    if (m.ok) job.resolve(m.declarations);
    else job.reject(new IsomeshError(m.error.code, m.error.message, m.error.details));
    this.#next();
  }

  #fail(e: unknown): void {
    clearTimeout(this.#backstop);
    const job = this.#running;
    this.#running = undefined;
    job?.reject(e);
  }

  #exited(child: ChildProcess, code: number | null, signal: string | null): void {
    if (child !== this.#child) return;
    this.#child = undefined;
    if (this.#closed) return;
    const killedFor = this.#killedFor;
    this.#killedFor = undefined;
    if (killedFor !== undefined) {
      // Not the plugin's doing as far as anyone can tell (an overloaded node, a hang outside the
      // isolate's CPU limit): nothing was published, and the publisher may retry.
      this.#fail(new IsomeshError('ISOMESH_ERR_PLUGIN_UNAVAILABLE', `${killedFor}; nothing was published, retry the publish`));
      this.#next();
      return;
    }
    this.crashes++;
    const why = signal !== null ? `signal ${signal}` : `exit code ${code}`;
    this.#logger.warn({ code, signal, publishing: this.#running !== undefined }, 'trial load process died');
    const text =
      `the trial load crashed its process (${why}): the plugin aborted V8 or exhausted memory while loading ` +
      `(the trial load has ${PROBE_MEMORY_MB} MiB)`;
    this.#fail(new IsomeshError('ISOMESH_ERR_PLUGIN_LOAD', text, [{ line: 0, column: 0, message: text }]));
    this.#next();
  }
}
