// Real proxyless xDS clients as child processes (bounded, ended by PID): @grpc/grpc-js-xds
// (clients/grpcjs-client.ts) and gRPC C-core through Debian's python3-grpcio (clients/grpc_client.py).
// Both speak the same JSON-lines protocol, so one scenario drives either.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';
import readline from 'node:readline';
import { ROOT } from '../support/daemon.ts';

export type ClientKind = 'grpc-js' | 'grpc-core';

export const PYTHON = '/usr/bin/python3';

export interface Tally {
  ok: Record<string, number>;
  errors: Record<string, number>;
  last_error: string | null;
}

/** Whether Debian's python3-grpcio can be imported (the C-core client); the reason when not. */
export function grpcCoreAvailable(): { ok: true; version: string } | { ok: false; reason: string } {
  try {
    const version = execFileSync(PYTHON, ['-c', 'import grpc; print(grpc.__version__)'], { encoding: 'utf8', timeout: 20_000, env: { PATH: '/usr/bin:/bin' } }).trim();
    return { ok: true, version };
  } catch (err) {
    return { ok: false, reason: `${PYTHON} cannot import grpc (Debian package python3-grpcio; scripts/setup.sh installs it): ${(err as Error).message.split('\n')[0]}` };
  }
}

export class RealClient {
  readonly kind: ClientKind;
  readonly #proc: ChildProcess;
  readonly #lines: AsyncIterator<string>;
  #stderr = '';

  private constructor(kind: ClientKind, proc: ChildProcess) {
    this.kind = kind;
    this.#proc = proc;
    proc.stderr!.on('data', (d) => {
      this.#stderr = (this.#stderr + d).slice(-20_000);
    });
    this.#lines = readline.createInterface({ input: proc.stdout! })[Symbol.asyncIterator]();
  }

  /** Starts a client whose xDS bootstrap is `bootstrap` (one process = one node = one token). */
  static async start(kind: ClientKind, bootstrap: object): Promise<RealClient> {
    const env: Record<string, string> = { GRPC_XDS_BOOTSTRAP_CONFIG: JSON.stringify(bootstrap) };
    let proc: ChildProcess;
    if (kind === 'grpc-core') {
      proc = spawn(PYTHON, [path.join(ROOT, 'test/xds/clients/grpc_client.py')], {
        env: { ...env, PATH: '/usr/bin:/bin', GRPC_VERBOSITY: 'ERROR', PYTHONUNBUFFERED: '1' },
        stdio: ['pipe', 'pipe', 'pipe'],
      });
    } else {
      proc = spawn(process.execPath, [path.join(ROOT, 'test/xds/clients/grpcjs-client.ts')], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    }
    const client = new RealClient(kind, proc);
    const ready = await client.#read(30_000);
    if (!(ready as { ready?: boolean }).ready) throw new Error(`${kind} client did not start: ${JSON.stringify(ready)}`);
    return client;
  }

  /** `count` RPCs to `target`, each with a deadline of `timeoutS`. */
  async call(target: string, count: number, opts: { timeoutS?: number; wait?: boolean } = {}): Promise<Tally> {
    const timeout = opts.timeoutS ?? 5;
    this.#proc.stdin!.write(JSON.stringify({ op: 'call', target, count, timeout, wait: opts.wait === true }) + '\n');
    return (await this.#read(count * timeout * 1000 + 10_000)) as Tally;
  }

  async closeTarget(target: string): Promise<void> {
    this.#proc.stdin!.write(JSON.stringify({ op: 'close', target }) + '\n');
    await this.#read(10_000);
  }

  /** Asks the process to exit; kills it (by PID) if it has not within 5 s. */
  async stop(): Promise<void> {
    if (this.#proc.exitCode !== null || this.#proc.signalCode !== null) return;
    const exited = new Promise<void>((r) => this.#proc.once('exit', () => r()));
    this.#proc.stdin!.end(JSON.stringify({ op: 'exit' }) + '\n');
    const timer = setTimeout(() => this.#proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }

  get stderr(): string {
    return this.#stderr;
  }

  async #read(timeoutMs: number): Promise<unknown> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${this.kind} client: no answer within ${timeoutMs} ms; stderr: ${this.#stderr.slice(-2000)}`)), timeoutMs);
    });
    try {
      const next = await Promise.race([this.#lines.next(), timeout]);
      if (next.done) throw new Error(`${this.kind} client exited (${this.#proc.exitCode}); stderr: ${this.#stderr.slice(-2000)}`);
      return JSON.parse(next.value);
    } finally {
      clearTimeout(timer);
    }
  }
}
