// An isomesh daemon as a child process (`node runtime/src/main.ts run`, datapath off, explicit
// traffic to tenant listeners on loopback), configured only through the management API.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type http from 'node:http';
import { get } from './http.ts';
import { versionTag } from './plugins.ts';
import { freePort, freePortRange, type ProcessGroup, type Started } from './processes.ts';

export const ROOT = path.resolve(import.meta.dirname, '../..');

export interface ApiReply {
  status: number;
  body: any;
}

export interface BenchDaemon {
  url: string;
  proc: Started;
  stateDir: string;
  api: (method: string, p: string, body?: unknown) => Promise<ApiReply>;
  /** Like api() but throws unless the status is 2xx. */
  must: (method: string, p: string, body?: unknown) => Promise<any>;
}

export interface DaemonOptions {
  cpus?: string;
  /** ISOMESH_HOST_MODE; undefined = the runtime's default. */
  hostMode?: 'cordon' | 'inline' | undefined;
  listenerPorts?: number;
  env?: Record<string, string>;
  /** Node options before the script (e.g. --cpu-prof); cordon workers inherit them. */
  nodeArgs?: string[];
}

export async function startDaemon(group: ProcessGroup, opts: DaemonOptions = {}): Promise<BenchDaemon> {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-'));
  const adminPort = await freePort();
  const grpcPort = await freePort();
  const ports = await freePortRange(opts.listenerPorts ?? 20);
  const token = `bench-${randomBytes(16).toString('hex')}`; // the daemon wants ≥ 16 characters
  const proc = group.start('isomesh', process.execPath, [...(opts.nodeArgs ?? []), path.join(ROOT, 'runtime/src/main.ts'), 'run'], {
    cwd: ROOT,
    ...(opts.cpus === undefined ? {} : { cpus: opts.cpus }),
    env: {
      ...process.env,
      ISOMESH_ADMIN_ADDR: `127.0.0.1:${adminPort}`,
      ISOMESH_GRPC_ADDR: `127.0.0.1:${grpcPort}`,
      ISOMESH_STATE_DIR: stateDir,
      ISOMESH_ADMIN_TOKEN: token,
      ISOMESH_LISTENER_PORTS: `${ports.min}-${ports.max}`,
      ISOMESH_DATAPATH: 'off',
      ISOMESH_LOG_LEVEL: 'warn',
      ...(opts.hostMode === undefined ? {} : { ISOMESH_HOST_MODE: opts.hostMode }),
      // A daemon pinned to a CPU set runs one worker per CPU of it (the default counts the machine's).
      ...(opts.cpus === undefined ? {} : { ISOMESH_WORKERS: String(cpuSetSize(opts.cpus)) }),
      ...opts.env,
    },
  });
  const url = `http://127.0.0.1:${adminPort}`;
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.proc.exitCode !== null) throw new Error(`isomesh exited with ${proc.proc.exitCode}:\n${proc.logs()}`);
    if (Date.now() > deadline) throw new Error(`isomesh not ready in 30 s:\n${proc.logs()}`);
    try {
      if ((await fetch(`${url}/readyz`)).ok) break;
    } catch {
      // not listening yet
    }
    await sleep(50);
  }
  const api = async (method: string, p: string, body?: unknown): Promise<ApiReply> => {
    const res = await fetch(`${url}${p}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      // not JSON
    }
    return { status: res.status, body: parsed };
  };
  const must = async (method: string, p: string, body?: unknown): Promise<any> => {
    const r = await api(method, p, body);
    if (r.status < 200 || r.status > 299) throw new Error(`${method} ${p} → ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  return { url, proc, stateDir, api, must };
}

export function removeStateDir(d: BenchDaemon | undefined): void {
  if (d !== undefined) fs.rmSync(d.stateDir, { recursive: true, force: true });
}

export interface TenantSetup {
  /** Upstream the catch-all route sends to. */
  upstreamPort: number;
  /** What isomesh speaks to it (the service's `protocol`); undefined = the default, http1. */
  protocol?: 'http1' | 'http2' | 'grpc';
  /** Plugins published, activated and chained in this order: [name, TypeScript source, entry config?]. */
  plugins?: Array<[string, string] | [string, string, Record<string, unknown>]>;
  /** Tenant secrets set before the chain (e.g. a JWT key). */
  secrets?: Record<string, string>;
  quota?: Record<string, number>;
}

/** Creates a tenant with one service, a catch-all route and a chain; returns its listener port. */
export async function setupTenant(d: Pick<BenchDaemon, 'must'>, tenant: string, s: TenantSetup): Promise<number> {
  const t = await d.must('PUT', `/v1/tenants/${tenant}`, {});
  if (s.quota !== undefined) await d.must('PUT', `/v1/tenants/${tenant}/quota`, s.quota);
  await d.must('PUT', `/v1/tenants/${tenant}/services/origin`, { endpoints: [{ address: '127.0.0.1', port: s.upstreamPort }], ...(s.protocol === undefined ? {} : { protocol: s.protocol }) });
  await d.must('PUT', `/v1/tenants/${tenant}/routes/all`, { match: { pathPrefix: '/' }, to: { service: 'origin' } });
  for (const [name, value] of Object.entries(s.secrets ?? {})) await d.must('PUT', `/v1/tenants/${tenant}/secrets/${name}`, { value });
  const chain: Array<{ plugin: string; config?: Record<string, unknown> }> = [];
  for (const [name, source, config] of s.plugins ?? []) {
    const v = await d.must('POST', `/v1/tenants/${tenant}/plugins/${name}/versions`, { source, language: 'typescript' });
    await d.must('PUT', `/v1/tenants/${tenant}/plugins/${name}/active`, { version: v.version });
    chain.push({ plugin: name, ...(config === undefined ? {} : { config }) });
  }
  if (chain.length > 0) await d.must('PUT', `/v1/tenants/${tenant}/chain`, chain);
  return t.listenerPort as number;
}

/**
 * A tenant `name` with a service (port 9: never dialled), a catch-all route and one active plugin
 * that answers its own name; returns once that plugin has served one request (bench/host.ts memory
 * points, bench/idle.ts).
 */
export async function addTaggedTenant(d: Pick<BenchDaemon, 'must'>, agent: http.Agent, name: string): Promise<void> {
  const t = await d.must('PUT', `/v1/tenants/${name}`, {});
  await d.must('PUT', `/v1/tenants/${name}/services/origin`, { endpoints: [{ address: '127.0.0.1', port: 9 }] });
  await d.must('PUT', `/v1/tenants/${name}/routes/all`, { match: { pathPrefix: '/' }, to: { service: 'origin' } });
  const v = await d.must('POST', `/v1/tenants/${name}/plugins/p/versions`, { source: versionTag(name), language: 'typescript' });
  await d.must('PUT', `/v1/tenants/${name}/plugins/p/active`, { version: v.version });
  await d.must('PUT', `/v1/tenants/${name}/chain`, [{ plugin: 'p' }]);
  if (!(await until(async () => (await get(agent, t.listenerPort, '/')).body === name, 10_000))) throw new Error(`${name} never served`);
}

/** Polls (bounded) until `check` is true; returns whether it became true. */
export async function until(check: () => Promise<boolean>, limitMs = 5000): Promise<boolean> {
  const deadline = Date.now() + limitMs;
  while (Date.now() < deadline) {
    try {
      if (await check()) return true;
    } catch {
      // not yet
    }
    await sleep(20);
  }
  return false;
}

/** VmRSS of a process in KiB from /proc/<pid>/status. */
export function rssKiB(pid: number): number {
  const m = /VmRSS:\s+(\d+)\s+kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for ${pid}`);
  return Number(m[1]);
}

/** CPUs in a taskset list such as "0", "0-3" or "0,2-3". */
function cpuSetSize(list: string): number {
  let n = 0;
  for (const part of list.split(',')) {
    const [a, b] = part.split('-').map(Number);
    n += b === undefined ? 1 : b - a! + 1;
  }
  return Math.max(1, n);
}
