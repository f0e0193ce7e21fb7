// One child process kept alive: spawn, watch its exit, restart it with back-off, stop it within a
// bound. The plugin host's cordons and the Envoy supervisor both run their processes through this.
//
// Back-off grows with the *streak* of exits: an exit more than `streakResetMs` after the previous one
// starts a new streak (a process that ran a while and then died is not crash-looping). `delay(streak)`
// gives the wait before restart number `streak` of the streak (streak ≥ 1).
//
// States: idle (never started, or not restarted because onExit said so) → running → backoff (exited,
// restart pending) → running …; stop() → stopping → stopped. stop() and kill() end for good.

import type { ChildProcess } from 'node:child_process';

export type SupervisorState = 'idle' | 'running' | 'backoff' | 'stopping' | 'stopped';

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  pid: number | undefined;
  at: Date;
  /** Exits in the current streak, this one included. */
  streak: number;
}

export interface ProcessSupervisorOptions {
  /** Starts the process (called again for every restart). */
  spawn: () => ChildProcess;
  /** Called with each new process right after spawn (`restart`: it ends a back-off, not a start()). */
  onStart?: (child: ChildProcess, restart: boolean) => void;
  /**
   * Called on an exit the supervisor did not ask for, before the restart is scheduled. Returning
   * false leaves the supervisor idle (no restart); start() brings it back.
   */
  onExit?: (info: ExitInfo) => boolean | void;
  /** Milliseconds to wait before the streak's n-th restart. Default: 0, then 100 ms doubling to 10 s. */
  delay?: (streak: number) => number;
  /** An exit this long after the previous one starts a new streak. Default 10 s. */
  streakResetMs?: number;
  /** Checked when the back-off ends: false → idle instead of a restart (e.g. nothing left to serve). */
  wanted?: () => boolean;
}

export const defaultDelay = (streak: number): number => (streak <= 1 ? 0 : Math.min(10_000, 100 * 2 ** (streak - 2)));

export class ProcessSupervisor {
  readonly #opts: ProcessSupervisorOptions;
  #child: ChildProcess | undefined;
  #state: SupervisorState = 'idle';
  #timer: NodeJS.Timeout | undefined;
  #streak = 0;
  #lastExitAt = 0;
  #exited: Promise<void> | undefined;
  restarts = 0;
  lastExit: ExitInfo | undefined;

  constructor(opts: ProcessSupervisorOptions) {
    this.#opts = opts;
  }

  get state(): SupervisorState {
    return this.#state;
  }

  /** The running process, if any. */
  get child(): ChildProcess | undefined {
    return this.#state === 'running' ? this.#child : undefined;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Starts the process now (no-op while running or after stop/kill); cancels a pending back-off. */
  start(): void {
    if (this.#state === 'running' || this.#state === 'stopping' || this.#state === 'stopped') return;
    clearTimeout(this.#timer);
    this.#spawn(false);
  }

  /** Forgets the exit streak: the next exit restarts at once (e.g. new code that may fix a crash loop). */
  resetBackoff(): void {
    this.#streak = 0;
    if (this.#state === 'backoff') {
      clearTimeout(this.#timer);
      this.#restart();
    }
  }

  /**
   * Ends the process for good: first `prelude` (e.g. ask it to drain; an exit meanwhile is not
   * restarted), then `signal` (default SIGTERM), then SIGKILL after `graceMs`; resolves once it has
   * exited (at once when none runs).
   */
  async stop(opts: { signal?: NodeJS.Signals; graceMs?: number; prelude?: (child: ChildProcess, exited: Promise<void>) => Promise<void> } = {}): Promise<void> {
    clearTimeout(this.#timer);
    const child = this.#child;
    const alive = (): boolean => child !== undefined && child.exitCode === null && child.signalCode === null;
    if (!alive() || this.#state === 'stopped') {
      this.#state = 'stopped';
      return;
    }
    this.#state = 'stopping';
    const exited = this.#exited!;
    if (opts.prelude) await opts.prelude(child!, exited);
    if (!alive()) return exited;
    child!.kill(opts.signal ?? 'SIGTERM');
    const kill = setTimeout(() => child!.kill('SIGKILL'), opts.graceMs ?? 5000);
    await exited;
    clearTimeout(kill);
  }

  /** SIGKILL now, no wait, no restart. */
  kill(): void {
    clearTimeout(this.#timer);
    this.#state = 'stopped';
    const child = this.#child;
    if (child !== undefined && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  }

  #spawn(restart: boolean): void {
    const child = this.#opts.spawn();
    this.#child = child;
    this.#state = 'running';
    this.#exited = new Promise((resolve) => {
      // 'exit' does not come when spawn itself failed (ENOENT, EACCES): 'error' does, once.
      let done = false;
      const finish = (code: number | null, signal: NodeJS.Signals | null) => {
        if (done) return;
        done = true;
        resolve();
        this.#onExit(child, code, signal);
      };
      child.once('exit', finish);
      child.once('error', (err: NodeJS.ErrnoException) => {
        if (child.pid === undefined) finish(typeof err.errno === 'number' ? -Math.abs(err.errno) : -1, null);
      });
    });
    this.#opts.onStart?.(child, restart);
  }

  #onExit(child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (child !== this.#child) return;
    const now = Date.now();
    if (now - this.#lastExitAt > (this.#opts.streakResetMs ?? 10_000)) this.#streak = 0;
    this.#lastExitAt = now;
    this.#streak++;
    const info: ExitInfo = { code, signal, pid: child.pid, at: new Date(now), streak: this.#streak };
    this.lastExit = info;
    if (this.#state === 'stopping' || this.#state === 'stopped') {
      this.#state = 'stopped';
      return;
    }
    this.#state = 'backoff';
    if (this.#opts.onExit?.(info) === false) {
      if (this.#state === 'backoff') this.#state = 'idle';
      return;
    }
    if (this.#state !== 'backoff') return; // onExit stopped it
    this.#timer = setTimeout(() => this.#restart(), (this.#opts.delay ?? defaultDelay)(this.#streak));
    this.#timer.unref();
  }

  #restart(): void {
    if (this.#state !== 'backoff') return;
    if (this.#opts.wanted?.() === false) {
      this.#state = 'idle';
      return;
    }
    this.restarts++;
    this.#spawn(true);
  }
}
