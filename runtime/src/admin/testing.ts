// Test fixture for the admin API: a real Store in a temp dir, a real fastify instance, and doubles
// for the plugin host (compile returns the source as code) and the proxy (binds nothing, but can be
// told that a port is taken). Used by this folder's tests only.

import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { Registry } from 'prom-client';
import { IsomeshError } from '../errors.ts';
import type { CompileInput, CompiledPlugin, PluginHostAdmin, TenantHostStatus } from '../host/contract.ts';
import { Store } from '../store/index.ts';
import { buildAdminServer } from './index.ts';
import type { EndpointStatus, NodeInfo, ProxyAdmin } from './index.ts';

export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';

/** compile() returns the source as code; a source containing "SYNTAX ERROR" fails like the real host. */
export class HostDouble implements PluginHostAdmin {
  readonly compiled: CompileInput[] = [];
  statusOf: (tenant: string) => TenantHostStatus = () => ({
    plugins: {},
    usage: { cpuMsPerSecond: 0, memoryBytes: 0, inFlight: 0, rejections: { rps: 0, concurrency: 0, cpu: 0 } },
  });

  async compile(input: CompileInput): Promise<CompiledPlugin> {
    this.compiled.push(input);
    if (input.source.includes('SYNTAX ERROR')) {
      throw new IsomeshError('ISOMESH_ERR_PLUGIN_COMPILE', 'plugin.ts:1:1: Unexpected token', [{ line: 1, column: 1, text: 'Unexpected token' }]);
    }
    const code = input.source;
    const size = Buffer.byteLength(code);
    if (size > input.maxBundleBytes) throw new IsomeshError('ISOMESH_ERR_PLUGIN_TOO_LARGE', `bundle is ${size} bytes`);
    return { code, size, digest: `sha256:${createHash('sha256').update(code).digest('hex')}`, hooks: ['onRequest'], declarations: { hooks: ['onRequest'] } };
  }

  status(tenant: string): TenantHostStatus {
    return this.statusOf(tenant);
  }
}

export class ProxyDouble implements ProxyAdmin {
  readonly bound = new Map<string, number>();
  /** Ports "taken by another process": bind() fails with EADDRINUSE. */
  readonly busy = new Set<number>();
  /** Live endpoint state by "tenant/service"; services not in it have none. */
  readonly endpoints = new Map<string, EndpointStatus[]>();

  endpointStatus(tenant: string, service: string): EndpointStatus[] | undefined {
    return this.endpoints.get(`${tenant}/${service}`);
  }

  async bind(tenant: string, port: number): Promise<number> {
    if (this.busy.has(port)) throw Object.assign(new Error(`listen EADDRINUSE: 127.0.0.1:${port}`), { code: 'EADDRINUSE' });
    this.bound.set(tenant, port);
    return port;
  }

  async removeTenant(tenant: string): Promise<void> {
    this.bound.delete(tenant);
  }

  status(tenant: string): ReturnType<ProxyAdmin['status']> {
    const port = this.bound.get(tenant);
    return port === undefined ? undefined : { listener: { address: '127.0.0.1', port }, requests: 7, inFlight: 2 };
  }
}

export interface AdminFixture<H extends PluginHostAdmin = HostDouble> {
  app: FastifyInstance;
  store: Store;
  host: H;
  proxy: ProxyDouble;
  registry: Registry;
  dir: string;
  /** inject() with the admin token, JSON body. */
  call(method: string, url: string, body?: unknown, token?: string | null): Promise<{ status: number; json: any; headers: Record<string, unknown>; text: string }>;
  close(): Promise<void>;
}

export async function startAdmin<H extends PluginHostAdmin = HostDouble>(
  opts: { dir?: string; listenerPorts?: { min: number; max: number }; host?: H; logger?: pino.Logger; node?: () => NodeInfo } = {},
): Promise<AdminFixture<H>> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), 'isomesh-admin-'));
  const listenerPorts = opts.listenerPorts ?? { min: 17000, max: 17999 };
  const store = new Store({ dir, listenerPorts });
  const host = opts.host ?? (new HostDouble() as unknown as H);
  const proxy = new ProxyDouble();
  const registry = new Registry();
  const app = await buildAdminServer({
    store,
    host,
    proxy,
    registry,
    logger: opts.logger ?? pino({ level: 'silent' }),
    adminToken: ADMIN_TOKEN,
    listenerPorts,
    ready: () => true,
    node: opts.node ?? (() => ({ workers: 1, dataplane: { mode: 'builtin' } })),
  });
  await app.ready();
  const call: AdminFixture<H>['call'] = async (method, url, body, token = ADMIN_TOKEN) => {
    const headers: Record<string, string> = {};
    if (token !== null) headers.authorization = `Bearer ${token}`;
    let payload: string | undefined;
    if (body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const res = await app.inject({ method: method as 'GET', url, headers, payload });
    let json: unknown;
    try {
      json = res.body ? JSON.parse(res.body) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.statusCode, json, headers: res.headers, text: res.body };
  };
  return {
    app,
    store,
    host,
    proxy,
    registry,
    dir,
    call,
    async close() {
      await app.close();
      store.close();
      if (!opts.dir) rmSync(dir, { recursive: true, force: true });
    },
  };
}
