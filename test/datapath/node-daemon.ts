// The real isomesh daemon (`node runtime/src/main.ts run`) started with nsenter inside a test's
// "node" netns, with its own state dir, a test-unique bpffs pin dir and proxy cgroup. Its admin
// API is on the node netns' loopback, so every API call is a curl run inside that netns.
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { TestNet } from './netns.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
export const ADMIN = '127.0.0.1:7700';

export interface NodeDaemonOptions {
  proxyCgroup: string;
  datapath?: 'auto' | 'on' | 'off';
  env?: Record<string, string>;
  /** Pin the daemon to these CPUs (taskset list, e.g. "0"), for benchmarks. */
  cpus?: string;
}

export class NodeDaemon {
  readonly stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-dp-test-'));
  readonly token = `dp-admin-${Math.random().toString(36).slice(2)}`;
  readonly #net: TestNet;
  readonly #opts: NodeDaemonOptions;
  #proc: ChildProcess | undefined;
  #logs = '';

  constructor(net: TestNet, opts: NodeDaemonOptions) {
    this.#net = net;
    this.#opts = opts;
  }

  get pid(): number | undefined {
    return this.#proc?.pid;
  }

  logs(): string {
    return this.#logs;
  }

  /** Starts the daemon and waits (≤ 30 s) for /readyz. */
  async start(): Promise<void> {
    const pin = this.#opts.cpus ? ['taskset', '-c', this.#opts.cpus] : [];
    const proc = this.#net.spawnIn(this.#net.nodeNs, [...pin, process.execPath, path.join(ROOT, 'runtime/src/main.ts'), 'run'], {
      ...process.env,
      ISOMESH_ADMIN_ADDR: ADMIN,
      ISOMESH_GRPC_ADDR: '127.0.0.1:7701',
      ISOMESH_STATE_DIR: this.stateDir,
      ISOMESH_ADMIN_TOKEN: this.token,
      ISOMESH_LISTENER_PORTS: '17000-17099',
      ISOMESH_DATAPATH: this.#opts.datapath ?? 'on',
      ISOMESH_BPF_PIN_DIR: this.#net.pinDir,
      ISOMESH_PROXY_CGROUP: this.#opts.proxyCgroup,
      ISOMESH_LOG_LEVEL: 'info',
      ...this.#opts.env,
    });
    this.#proc = proc;
    proc.stdout!.on('data', (d) => (this.#logs += d));
    proc.stderr!.on('data', (d) => (this.#logs += d));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`daemon exited with ${proc.exitCode}:\n${this.#logs.slice(-4000)}`);
      if (Date.now() > deadline) throw new Error(`daemon not ready in 30 s:\n${this.#logs.slice(-4000)}`);
      const r = await this.#net.exec(this.#net.nodeNs, ['curl', '-s', '-o', '/dev/null', '-w', '%{http_code}', `http://${ADMIN}/readyz`], { timeoutMs: 5000 });
      if (r.stdout === '200') return;
      await sleep(50);
    }
  }

  /** SIGTERM (drain) and wait for the exit; SIGKILL after 15 s. */
  async stop(): Promise<number | null> {
    const proc = this.#proc;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return proc?.exitCode ?? null;
    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    proc.kill('SIGTERM');
    const code = await Promise.race([exited, sleep(15_000).then(() => 'timeout' as const)]);
    if (code !== 'timeout') return code;
    proc.kill('SIGKILL');
    return await exited;
  }

  async api(method: string, p: string, body?: unknown): Promise<{ status: number; body: any }> {
    const args = ['curl', '-s', '-X', method, '-H', `authorization: Bearer ${this.token}`, '-w', '\n%{http_code}'];
    if (body !== undefined) args.push('-H', 'content-type: application/json', '--data-binary', '@-');
    args.push(`http://${ADMIN}${p}`);
    const r = await this.#net.exec(this.#net.nodeNs, args, { ...(body !== undefined ? { input: JSON.stringify(body) } : {}), timeoutMs: 15_000 });
    const i = r.stdout.lastIndexOf('\n');
    const text = r.stdout.slice(0, i);
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch { /* not JSON */ }
    return { status: Number(r.stdout.slice(i + 1)), body: parsed };
  }

  cleanup(): void {
    fs.rmSync(this.stateDir, { recursive: true, force: true });
  }
}
