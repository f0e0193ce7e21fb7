// Test fixtures for the host's unit tests: tenant configs built around compiled plugin sources.

import pino from 'pino';
import { Registry } from 'prom-client';
import { DEFAULT_QUOTA, DEFAULT_TENANT_SETTINGS, type ChainEntry, type Quota, type ResolvedPlugin, type TenantConfig } from '../store/model.ts';
import type { HookRequest } from './contract.ts';
import { PluginHost, type PluginHostOptions } from './index.ts';

/** Mode defaults to ISOMESH_HOST_MODE (else cordon), so the suites run in either mode. */
export function newHost(opts: Partial<Omit<PluginHostOptions, 'logger' | 'registry'>> = {}): { host: PluginHost; registry: Registry } {
  const registry = new Registry();
  return { host: new PluginHost({ logger: pino({ level: 'silent' }), registry, ...opts }), registry };
}

/** Burns `ms` of wall time (≈ CPU in an otherwise idle isolate) then tags the request. */
export function burner(ms: number, tag = 'x-burnt'): string {
  return `export default { onRequest(req) { const end = Date.now() + ${ms}; while (Date.now() < end) {} req.headers.set('${tag}', '${ms}'); } };`;
}

/** Tenant names whose stable hash puts them in the same / a different cordon than `of`. */
export function cordonNeighbours(host: PluginHost, of: string, prefix: string): { same: string; other: string } {
  const home = host.cordonOf(of);
  let same: string | undefined;
  let other: string | undefined;
  for (let i = 0; i < 256 && (same === undefined || other === undefined); i++) {
    const name = `${prefix}-${i}`;
    if (host.cordonOf(name) === home) same ??= name;
    else other ??= name;
  }
  if (same === undefined || other === undefined) throw new Error('no neighbour names found');
  return { same, other };
}

export interface PluginSpec {
  name: string;
  source: string;
  version?: number;
  canary?: { source: string; version: number; percent: number };
  config?: Record<string, unknown>;
  failurePolicy?: 'closed' | 'open';
  routes?: string[];
}

export async function tenantConfig(
  host: PluginHost,
  name: string,
  plugins: PluginSpec[],
  extra: { quota?: Partial<Quota>; secrets?: Record<string, string>; services?: string[]; generation?: number } = {},
): Promise<TenantConfig> {
  const resolved: Record<string, ResolvedPlugin> = {};
  const chain: ChainEntry[] = [];
  for (const p of plugins) {
    const c = await host.compile({ source: p.source, language: 'typescript', maxBundleBytes: 1 << 20 });
    // meta as the store records it: what the trial load found the version declares.
    const r: ResolvedPlugin = { name: p.name, active: { version: p.version ?? 1, digest: c.digest, code: c.code, meta: c.declarations } };
    if (p.canary !== undefined) {
      const cc = await host.compile({ source: p.canary.source, language: 'typescript', maxBundleBytes: 1 << 20 });
      r.canary = { version: p.canary.version, digest: cc.digest, code: cc.code, percent: p.canary.percent, meta: cc.declarations };
    }
    resolved[p.name] = r;
    const entry: ChainEntry = { plugin: p.name, config: p.config ?? {}, failurePolicy: p.failurePolicy ?? 'closed' };
    if (p.routes !== undefined) entry.routes = p.routes;
    chain.push(entry);
  }
  return {
    name,
    listenerPort: 17000,
    quota: { ...DEFAULT_QUOTA, ...extra.quota },
    services: (extra.services ?? []).map((s) => ({ name: s, endpoints: [], lb: 'round_robin', connectTimeoutMs: 1000, timeoutMs: 1000 })),
    routes: [],
    chain,
    plugins: resolved,
    secrets: extra.secrets ?? {},
    settings: { ...DEFAULT_TENANT_SETTINGS },
    rateLimits: [],
    generation: extra.generation ?? 1,
  };
}

export function request(over: Partial<HookRequest> = {}): HookRequest {
  return { method: 'GET', path: '/', query: '', host: 'svc', headers: [], remoteAddress: '127.0.0.1', ...over };
}

/** begin → onRequest → end, for tests that need one request's outcome. */
export async function oneRequest(host: PluginHost, tenant: string, req: HookRequest = request(), requestId = `r-${Math.random()}`) {
  const adm = host.begin(tenant, requestId);
  if (!adm.ok) throw new Error(`not admitted: ${adm.code}`);
  try {
    return await host.onRequest(adm.run, req);
  } finally {
    host.end(adm.run);
  }
}
