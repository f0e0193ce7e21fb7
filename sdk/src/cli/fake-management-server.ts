// A small in-memory stand-in for the management API (API.md), for the CLI's tests: it records every
// request and keeps just enough state (tenants, quotas, plugin versions, activation) to answer.
import { createHash } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { capturedIo } from './io.ts';
import { main } from './main.ts';

export interface RecordedRequest {
  method: string;
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

interface FakePlugin {
  versions: Array<{ version: number; digest: string; size: number; language: string; createdAt: string }>;
  active?: { version: number; canary?: { version: number; percent: number } };
}

type Reply = { status: number; body?: unknown };
export type Override = (req: RecordedRequest) => Reply | undefined;

export const DEFAULT_QUOTA = {
  memoryMb: 64, cpuMsPerRequest: 50, cpuMsPerSecond: 500, maxConcurrentRequests: 1024,
  requestsPerSecond: 0, maxPlugins: 16, maxBundleBytes: 1048576, weight: 1,
};

export class FakeManagementServer {
  readonly requests: RecordedRequest[] = [];
  readonly tenants = new Map<string, { listenerPort: number; quota: Record<string, number> }>();
  readonly plugins = new Map<string, FakePlugin>(); // key "tenant/name"
  readonly rateLimits = new Map<string, Record<string, unknown>>(); // key "tenant/name"
  /** Consulted first; return a reply to answer a request differently (e.g. an error). */
  override: Override | undefined;
  #server = http.createServer((req, res) => this.#handle(req, res));
  #nextPort = 17000;

  async start(): Promise<string> {
    await new Promise<void>((resolve) => this.#server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  addTenant(name: string, listenerPort = this.#nextPort++): void {
    this.tenants.set(name, { listenerPort, quota: { ...DEFAULT_QUOTA } });
  }

  addPluginVersions(tenant: string, name: string, count: number, active?: FakePlugin['active']): void {
    const p: FakePlugin = { versions: [] };
    for (let v = 1; v <= count; v++) p.versions.push(version(v, Buffer.from(`v${v}`)));
    if (active) p.active = active;
    this.plugins.set(`${tenant}/${name}`, p);
  }

  /** Requests other than GET, in order: what the CLI changed. */
  mutations(): RecordedRequest[] {
    return this.requests.filter((r) => r.method !== 'GET');
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const rec: RecordedRequest = { method: req.method ?? 'GET', path: req.url ?? '/', headers: req.headers, body: Buffer.concat(chunks) };
      this.requests.push(rec);
      const reply = this.override?.(rec) ?? this.#route(rec);
      res.writeHead(reply.status, { 'content-type': 'application/json' });
      res.end(reply.body === undefined ? '' : JSON.stringify(reply.body));
    });
  }

  #route(r: RecordedRequest): Reply {
    const parts = r.path.split('?')[0]!.split('/').filter(Boolean).map(decodeURIComponent);
    const m = r.method;
    if (parts[0] !== 'v1' || parts[1] !== 'tenants') return err(404, 'ISOMESH_ERR_API_NOT_FOUND', 'no such endpoint');
    if (parts.length === 2 && m === 'GET') {
      return { status: 200, body: { tenants: [...this.tenants].map(([name, t]) => ({ name, listenerPort: t.listenerPort })) } };
    }
    const tenantName = parts[2]!;
    if (parts.length === 3 && m === 'PUT') {
      const body = json(r) as { listenerPort?: number };
      const existed = this.tenants.has(tenantName);
      if (!existed) this.addTenant(tenantName, body.listenerPort);
      else if (body.listenerPort) this.tenants.get(tenantName)!.listenerPort = body.listenerPort;
      return { status: existed ? 200 : 201, body: { name: tenantName, listenerPort: this.tenants.get(tenantName)!.listenerPort } };
    }
    const tenant = this.tenants.get(tenantName);
    if (!tenant) return err(404, 'ISOMESH_ERR_TENANT_NOT_FOUND', `no such tenant: ${tenantName}`);
    const rest = parts.slice(3);
    if (rest.length === 0 && m === 'DELETE') {
      this.tenants.delete(tenantName);
      return { status: 204 };
    }
    if (rest[0] === 'tokens' && m === 'POST') return { status: 201, body: { token: `ism_t_${tenantName}_secret` } };
    if (rest[0] === 'quota') {
      if (m === 'GET') return { status: 200, body: tenant.quota };
      if (m === 'PUT') {
        Object.assign(tenant.quota, json(r));
        return { status: 200, body: tenant.quota };
      }
    }
    if (rest[0] === 'status' && m === 'GET') {
      // The runtime's shape: health on the active/canary version objects.
      const health = (version: number) => version === 1
        ? { version, loaded: true, health: 'degraded', lastError: { code: 'ISOMESH_ERR_PLUGIN_THREW', message: 'boom', at: '2025-01-01T00:00:00.000Z' } }
        : { version, loaded: true, health: 'ok', invocations: 10, failures: 0, restarts: 0 };
      return {
        status: 200,
        body: {
          tenant: tenantName,
          listener: null,
          listenerPort: tenant.listenerPort,
          plugins: [...this.plugins].filter(([k]) => k.startsWith(`${tenantName}/`)).map(([k, p]) => ({
            name: k.slice(tenantName.length + 1),
            ...(p.active ? { active: health(p.active.version) } : {}),
            ...(p.active?.canary ? { canary: { ...health(p.active.canary.version), percent: p.active.canary.percent } } : {}),
          })),
          quota: tenant.quota,
          usage: { cpuMsPerSecond: 12.5, memoryMb: 3.25, inFlight: 3, rejections: { rps: 7, concurrency: 0, cpu: 1 } },
        },
      };
    }
    if (rest[0] === 'plugins' && rest[1]) return this.#plugin(r, `${tenantName}/${rest[1]}`, rest.slice(2));
    if (rest[0] === 'ratelimits') return this.#rateLimit(r, tenantName, rest[1]);
    return err(404, 'ISOMESH_ERR_API_NOT_FOUND', 'no such endpoint');
  }

  #rateLimit(r: RecordedRequest, tenant: string, name: string | undefined): Reply {
    if (name === undefined) {
      if (r.method !== 'GET') return err(404, 'ISOMESH_ERR_API_NOT_FOUND', 'no such endpoint');
      const rateLimits = [...this.rateLimits].filter(([k]) => k.startsWith(`${tenant}/`)).map(([, v]) => v);
      return { status: 200, body: { rateLimits } };
    }
    const key = `${tenant}/${name}`;
    if (r.method === 'PUT') {
      const existed = this.rateLimits.has(key);
      const stored = { name, shadow: false, ...(json(r) as Record<string, unknown>) };
      this.rateLimits.set(key, stored);
      return { status: existed ? 200 : 201, body: stored };
    }
    const rl = this.rateLimits.get(key);
    if (!rl) return err(404, 'ISOMESH_ERR_RATELIMIT_NOT_FOUND', `rate limit "${name}" does not exist`);
    if (r.method === 'GET') return { status: 200, body: rl };
    if (r.method === 'DELETE') {
      this.rateLimits.delete(key);
      return { status: 204 };
    }
    return err(404, 'ISOMESH_ERR_API_NOT_FOUND', 'no such endpoint');
  }

  #plugin(r: RecordedRequest, key: string, rest: string[]): Reply {
    let p = this.plugins.get(key);
    if (rest[0] === 'versions' && r.method === 'POST') {
      if (!p) this.plugins.set(key, (p = { versions: [] }));
      const v = version(p.versions.length + 1, r.body);
      p.versions.push(v);
      return { status: 201, body: { version: v.version, digest: v.digest, size: v.size } };
    }
    if (!p) return err(404, 'ISOMESH_ERR_PLUGIN_NOT_FOUND', `no such plugin: ${key}`);
    if (rest.length === 0 && r.method === 'GET') {
      // As the runtime answers: active is a version number, canary sits beside it.
      return { status: 200, body: { name: key.split('/')[1], versions: p.versions, active: p.active?.version ?? null, canary: p.active?.canary ?? null } };
    }
    if (rest[0] === 'versions' && r.method === 'GET') return { status: 200, body: { versions: p.versions } };
    if (rest[0] === 'active' && r.method === 'PUT') {
      const a = json(r) as FakePlugin['active'] & object;
      const known = (n: number) => p.versions.some((v) => v.version === n);
      if (!known(a.version) || (a.canary && !known(a.canary.version))) {
        return err(404, 'ISOMESH_ERR_PLUGIN_VERSION_NOT_FOUND', 'no such plugin version');
      }
      p.active = a;
      return { status: 200, body: { active: a.version, canary: a.canary ?? null } };
    }
    return err(404, 'ISOMESH_ERR_API_NOT_FOUND', 'no such endpoint');
  }
}

function version(n: number, code: Buffer) {
  return {
    version: n, digest: 'sha256:' + createHash('sha256').update(code).digest('hex'), size: code.length,
    language: 'bundle', createdAt: new Date(Date.UTC(2025, 0, n)).toISOString(),
  };
}

function json(r: RecordedRequest): unknown {
  return r.body.length ? JSON.parse(r.body.toString('utf8')) : {};
}

function err(status: number, code: string, message: string): Reply {
  return { status, body: { error: { code, message } } };
}

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Run the CLI in-process with captured output and a clean environment (no ambient ISOMESH_*). */
export async function runCli(argv: string[], env: Record<string, string> = {}, cwd = process.cwd()): Promise<CliRun> {
  const io = capturedIo(env, cwd);
  const code = await main(argv, io);
  return { code, stdout: io.out.join(''), stderr: io.err.join('') };
}
