// A PluginHost in process, driven as the built-in proxy drives it: tenants configured with compiled
// plugins, and one request's host work (begin → onRequest (→ onResponse) → end). bench/host.ts and
// bench/crossings.ts measure with it.

import type { PluginHost } from '../../runtime/src/host/index.ts';
import type { HookRequest } from '../../runtime/src/host/contract.ts';
import { DEFAULT_QUOTA, DEFAULT_TENANT_SETTINGS, type ChainEntry, type ResolvedPlugin, type TenantConfig } from '../../runtime/src/store/model.ts';

export async function tenantConfig(host: PluginHost, name: string, plugins: Array<[string, string] | [string, string, Record<string, unknown>]>, secrets: Record<string, string> = {}): Promise<TenantConfig> {
  const resolved: Record<string, ResolvedPlugin> = {};
  const chain: ChainEntry[] = [];
  for (const [plugin, source, config] of plugins) {
    const c = await host.compile({ source, language: 'typescript', maxBundleBytes: 1 << 20 });
    resolved[plugin] = { name: plugin, active: { version: 1, digest: c.digest, code: c.code } };
    chain.push({ plugin, config: config ?? {}, failurePolicy: 'closed' });
  }
  return {
    // A CPU-per-second budget no sample loop reaches (the default would shed part of it).
    name, listenerPort: 17000, quota: { ...DEFAULT_QUOTA, cpuMsPerSecond: 1_000_000 },
    services: [{ name: 'origin', endpoints: [], lb: 'round_robin', connectTimeoutMs: 1000, timeoutMs: 1000 }],
    routes: [], chain, plugins: resolved, secrets, settings: { ...DEFAULT_TENANT_SETTINGS }, rateLimits: [], generation: 1,
  };
}

/** One request's host work, as the built-in proxy does it. */
export async function oneRequest(host: PluginHost, tenant: string, id: string, req: HookRequest): Promise<void> {
  const a = host.begin(tenant, id);
  if (!a.ok) throw new Error(`${tenant}: not admitted (${a.code})`);
  try {
    const out = await host.onRequest(a.run, req);
    if (out.action !== 'continue') throw new Error(`${tenant}: ${out.action}`);
    if (host.hasResponseHooks(a.run)) {
      const res = await host.onResponse(a.run, { status: 200, headers: [['content-type', 'text/plain']] });
      if (res.action !== 'continue') throw new Error(`${tenant}: onResponse ${res.action}`);
    }
  } finally {
    host.end(a.run);
  }
}
