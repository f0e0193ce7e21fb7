// Starts a real isomesh daemon as a child process on free loopback ports with its own state dir,
// the way an operator would (`isomesh run`), and stops it by PID.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, freePortRange } from './ports.ts';

export const ROOT = path.resolve(import.meta.dirname, '../..');

export { freePort, freePortRange } from './ports.ts';

export interface TestDaemon {
  url: string;
  /** host:port of the daemon's gRPC server (xDS, ext_proc, RLS). */
  grpcAddress: string;
  token: string;
  stateDir: string;
  proc: ChildProcess;
  logs: () => string;
  /** Calls the management API with the admin token (or `token`) and parses JSON. */
  api: (method: string, p: string, body?: unknown, token?: string) => Promise<{ status: number; body: any; headers: Headers }>;
  stop: (signal?: NodeJS.Signals) => Promise<number | null>;
}

export interface StartOptions {
  stateDir?: string;
  env?: Record<string, string>;
  listenerPorts?: { min: number; max: number };
  token?: string;
  /** A command the daemon runs under, e.g. ['prlimit', '--nofile=600:600', '--']. */
  wrap?: string[];
}

/** State directories this process created; removed when it exits (a restart test reuses one meanwhile). */
const createdStateDirs: string[] = [];
process.once('exit', () => {
  for (const dir of createdStateDirs) fs.rmSync(dir, { recursive: true, force: true });
});

export async function startDaemon(opts: StartOptions = {}): Promise<TestDaemon> {
  let stateDir = opts.stateDir;
  if (stateDir === undefined) {
    stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-test-'));
    createdStateDirs.push(stateDir);
  }
  const adminPort = await freePort();
  const grpcPort = await freePort();
  const ports = opts.listenerPorts ?? (await freePortRange());
  const token = opts.token ?? `test-admin-${Math.random().toString(36).slice(2)}`;
  let out = '';
  const argv = [...(opts.wrap ?? []), process.execPath, path.join(ROOT, 'runtime/src/main.ts'), 'run'];
  const proc = spawn(argv[0]!, argv.slice(1), {
    cwd: ROOT,
    env: {
      ...process.env,
      ISOMESH_ADMIN_ADDR: `127.0.0.1:${adminPort}`,
      ISOMESH_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      ISOMESH_STATE_DIR: stateDir,
      ISOMESH_ADMIN_TOKEN: token,
      ISOMESH_LISTENER_PORTS: `${ports.min}-${ports.max}`,
      ISOMESH_DATAPATH: 'off',
      ISOMESH_LOG_LEVEL: 'warn',
      // Two data-plane workers on every machine: every e2e test goes through the multi-worker path
      // (shared ledger, plugin calls relayed to the daemon's host), the same on a 2- or a 64-CPU runner.
      ISOMESH_WORKERS: '2',
      ...opts.env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d) => (out += d));
  proc.stderr!.on('data', (d) => (out += d));
  const url = `http://127.0.0.1:${adminPort}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`daemon exited with ${proc.exitCode}:\n${out}`);
    if (Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`daemon not ready in 30 s:\n${out}`);
    }
    try {
      if ((await fetch(`${url}/readyz`)).ok) break;
    } catch {
      // not up yet
    }
    await sleep(50);
  }
  const api: TestDaemon['api'] = async (method, p, body, tok) => {
    const res = await fetch(`${url}${p}`, {
      method,
      headers: {
        authorization: `Bearer ${tok ?? token}`,
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON (e.g. /metrics)
    }
    return { status: res.status, body: parsed, headers: res.headers };
  };
  const stop = async (signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> => {
    if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
    const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
    proc.kill(signal);
    const code = await Promise.race([exited, sleep(10_000).then(() => 'timeout' as const)]);
    if (code === 'timeout') {
      proc.kill('SIGKILL');
      return await exited;
    }
    return code;
  };
  return { url, grpcAddress: `127.0.0.1:${grpcPort}`, token, stateDir, proc, logs: () => out, api, stop };
}
