// Builds the immutable per-tenant TenantConfig snapshot and full-store dumps from the database.
// Read-only: callers run these outside write transactions (WAL readers never block writers).

import type { DatabaseSync } from 'node:sqlite';
import { completeQuota, DEFAULT_TENANT_SETTINGS } from './model.ts';
import type { ChainEntry, PluginVersionDeclarations, Quota, RateLimit, ResolvedPlugin, Route, Service, TenantConfig, TenantSettings } from './model.ts';

interface TenantRow {
  name: string;
  listener_port: number;
  quota: string;
  settings: string;
  generation: number;
}

interface ResolvedRow {
  name: string;
  version: number;
  canary_version: number | null;
  canary_percent: number | null;
  digest: string;
  code: string;
  meta: string | null;
  canary_digest: string | null;
  canary_code: string | null;
  canary_meta: string | null;
}

function declarations(json: string | null): PluginVersionDeclarations | undefined {
  return json === null ? undefined : (JSON.parse(json) as PluginVersionDeclarations);
}

export function buildTenantConfig(db: DatabaseSync, name: string): TenantConfig | undefined {
  const t = db.prepare('SELECT name, listener_port, quota, settings, generation FROM tenants WHERE name = ?').get(name) as
    | TenantRow
    | undefined;
  if (!t) return undefined;
  const services = (db.prepare('SELECT body FROM services WHERE tenant = ? ORDER BY name').all(name) as Array<{ body: string }>)
    .map((r) => JSON.parse(r.body) as Service);
  const routes = (db.prepare('SELECT body FROM routes WHERE tenant = ? ORDER BY name').all(name) as Array<{ body: string }>)
    .map((r) => JSON.parse(r.body) as Route);
  const chainRow = db.prepare('SELECT entries FROM chain WHERE tenant = ?').get(name) as { entries: string } | undefined;
  const chain = chainRow ? (JSON.parse(chainRow.entries) as ChainEntry[]) : [];
  const secrets: Record<string, string> = {};
  for (const r of db.prepare('SELECT name, value FROM secrets WHERE tenant = ? ORDER BY name').all(name) as Array<{
    name: string;
    value: string;
  }>) {
    secrets[r.name] = r.value;
  }
  const plugins: Record<string, ResolvedPlugin> = {};
  const resolve = db.prepare(`
    SELECT a.plugin AS name, a.version, a.canary_version, a.canary_percent,
           v.digest AS digest, b.code AS code, v.meta AS meta,
           cv.digest AS canary_digest, cb.code AS canary_code, cv.meta AS canary_meta
    FROM activations a
    JOIN plugin_versions v ON v.tenant = a.tenant AND v.plugin = a.plugin AND v.version = a.version
    JOIN blobs b ON b.digest = v.digest
    LEFT JOIN plugin_versions cv ON cv.tenant = a.tenant AND cv.plugin = a.plugin AND cv.version = a.canary_version
    LEFT JOIN blobs cb ON cb.digest = cv.digest
    WHERE a.tenant = ? AND a.plugin = ?`);
  for (const entry of chain) {
    if (plugins[entry.plugin]) continue;
    const r = resolve.get(name, entry.plugin) as ResolvedRow | undefined;
    const p: ResolvedPlugin = { name: entry.plugin };
    if (r) {
      p.active = { version: r.version, digest: r.digest, code: r.code };
      const meta = declarations(r.meta);
      if (meta !== undefined) p.active.meta = meta;
      if (r.canary_version !== null && r.canary_digest !== null && r.canary_code !== null) {
        p.canary = { version: r.canary_version, digest: r.canary_digest, code: r.canary_code, percent: r.canary_percent ?? 0 };
        const cmeta = declarations(r.canary_meta);
        if (cmeta !== undefined) p.canary.meta = cmeta;
      }
    }
    plugins[entry.plugin] = p;
  }
  const rateLimits = (db.prepare('SELECT body FROM ratelimits WHERE tenant = ? ORDER BY name').all(name) as Array<{ body: string }>)
    .map((r) => JSON.parse(r.body) as RateLimit);
  return {
    name: t.name,
    listenerPort: t.listener_port,
    quota: completeQuota(JSON.parse(t.quota) as Partial<Quota>),
    services,
    routes,
    chain,
    plugins,
    secrets,
    settings: { ...DEFAULT_TENANT_SETTINGS, ...(JSON.parse(t.settings) as Partial<TenantSettings>) },
    rateLimits,
    generation: t.generation,
  };
}

export type StoreDump = Record<string, unknown[]>;

/** Every row of every table (plus the schema version), in a stable order: for tests and debugging. */
export function dumpDatabase(db: DatabaseSync): StoreDump {
  const out: StoreDump = {};
  const tables = db
    .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
    .all() as Array<{ name: string }>;
  for (const { name } of tables) {
    const rows = db.prepare(`SELECT * FROM "${name}"`).all().map((r) => ({ ...r }));
    rows.sort((a, b) => (JSON.stringify(a) < JSON.stringify(b) ? -1 : 1));
    out[name] = rows;
  }
  out.user_version = [db.prepare('PRAGMA user_version').get()];
  return out;
}
