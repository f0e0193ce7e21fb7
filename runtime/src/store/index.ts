// The embedded state store: one SQLite file (<stateDir>/isomesh.db) in WAL mode with synchronous=FULL,
// so a write is durable when the API answers. Every mutation is one BEGIN IMMEDIATE transaction; a
// throw (or a crash) anywhere inside it leaves the previous state. Listeners registered with
// onChange() hear the tenant name after each commit and rebuild from tenantConfig().

import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import type { StatementSync } from 'node:sqlite';
import type pino from 'pino';
import { IsomeshError } from '../errors.ts';
import { completeQuota, DEFAULT_QUOTA, DEFAULT_TENANT_SETTINGS } from './model.ts';
import type { Activation, ChainEntry, PluginVersionDeclarations, PluginVersionMeta, Quota, RateLimit, Route, Service, TenantConfig, TenantSettings } from './model.ts';
import { configProblem } from './config-schema.ts';
import { rateLimitRoutes, validateRateLimit } from './ratelimit.ts';
import { migrate } from './schema.ts';
import { buildTenantConfig, dumpDatabase } from './snapshot.ts';
import type { StoreDump } from './snapshot.ts';
import {
  checkName,
  mergeQuota,
  mergeTenantSettings,
  routeServices,
  validateActivation,
  validateChain,
  validateQuotaPatch,
  validateRoute,
  validateSecretValue,
  validateService,
  validateTenantSettingsPatch,
  validateWorkload,
} from './validate.ts';

export type { StoreDump } from './snapshot.ts';
export * from './validate.ts';
export * from './ratelimit.ts';
export { HTTP_TOKEN_RE } from './fields.ts';
export { byPrecedence, routesInPrecedence } from './precedence.ts';
export { compileRouteRegex, MAX_REGEX_PROGRAM_SIZE, type RouteRegex } from './regex.ts';
export { configProblem, configSchemaProblem } from './config-schema.ts';

export interface StoreOptions {
  /** The state directory; the database is <dir>/isomesh.db. */
  dir: string;
  /** Where freeListenerPort() looks by default (ISOMESH_LISTENER_PORTS). */
  listenerPorts?: { min: number; max: number };
  logger?: pino.Logger;
  /** Test seam: called at named points inside multi-statement writes; a throw aborts the transaction. */
  faultInjector?: (point: string) => void;
}

export interface TenantRecord {
  name: string;
  listenerPort: number;
  quota: Quota;
  settings: TenantSettings;
  generation: number;
  createdAt: string;
  updatedAt: string;
}

export interface PluginRecord {
  name: string;
  createdAt: string;
  latestVersion: number;
  versions: PluginVersionMeta[];
  active?: Activation;
}

export interface PublishInput {
  code: string;
  language: PluginVersionMeta['language'];
  /** The submitted source when it differs from code (TypeScript/JavaScript sent as JSON). */
  source?: string;
  /** What the trial load found the version declares (hooks, body limits, config schema). */
  meta?: PluginVersionDeclarations;
}

export interface PublishResult {
  version: number;
  digest: string;
  size: number;
  /** false when an identical version (same digest) already existed and was returned instead. */
  created: boolean;
}

export interface WorkloadRecord {
  tenant: string;
  name: string;
  cgroupPath: string;
  proxyAddress: string;
  createdAt: string;
}

export type ChangeListener = (tenant: string) => void;

interface TenantRow {
  name: string;
  listener_port: number;
  quota: string;
  settings: string;
  generation: number;
  created_at: string;
  updated_at: string;
}

interface VersionRow {
  plugin: string;
  version: number;
  digest: string;
  size: number;
  language: PluginVersionMeta['language'];
  created_at: string;
  meta: string | null;
}

export function sha256Digest(code: string): string {
  return `sha256:${createHash('sha256').update(code).digest('hex')}`;
}

export function hashToken(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

const now = (): string => new Date().toISOString();

function notFound(kind: 'TENANT' | 'SERVICE' | 'ROUTE' | 'PLUGIN' | 'SECRET' | 'WORKLOAD' | 'RATELIMIT', name: string): IsomeshError {
  const what = kind === 'RATELIMIT' ? 'rate limit' : kind.toLowerCase();
  return new IsomeshError(`ISOMESH_ERR_${kind}_NOT_FOUND`, `${what} "${name}" does not exist`);
}

function parseSettings(json: string): TenantSettings {
  // Stored settings are always complete; the merge only guards against a hand-edited row.
  return mergeTenantSettings(DEFAULT_TENANT_SETTINGS, JSON.parse(json) as Partial<TenantSettings>);
}

export class Store {
  readonly path: string;
  readonly listenerPorts: { min: number; max: number };
  private readonly db: DatabaseSync;
  private readonly logger: pino.Logger | undefined;
  private readonly faultInjector: ((point: string) => void) | undefined;
  private readonly statements = new Map<string, StatementSync>();
  private readonly listeners = new Set<ChangeListener>();
  private changed: Set<string> | undefined;

  constructor(options: StoreOptions) {
    mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    this.path = join(options.dir, 'isomesh.db');
    this.listenerPorts = options.listenerPorts ?? { min: 17000, max: 17999 };
    this.logger = options.logger;
    this.faultInjector = options.faultInjector;
    this.db = new DatabaseSync(this.path, { timeout: 5000 });
    this.db.exec('PRAGMA journal_mode = WAL');
    this.db.exec('PRAGMA synchronous = FULL');
    this.db.exec('PRAGMA foreign_keys = ON');
    this.db.exec('PRAGMA busy_timeout = 5000');
    migrate(this.db);
  }

  static open(options: StoreOptions): Store {
    return new Store(options);
  }

  /** The connection's durability settings (what the constructor set), for diagnostics and tests. */
  pragmas(): { journalMode: string; synchronous: number; foreignKeys: number; busyTimeout: number } {
    const one = (name: string): unknown => Object.values(this.db.prepare(`PRAGMA ${name}`).get() ?? {})[0];
    return {
      journalMode: String(one('journal_mode')),
      synchronous: Number(one('synchronous')),
      foreignKeys: Number(one('foreign_keys')),
      busyTimeout: Number(one('busy_timeout')),
    };
  }

  close(): void {
    this.statements.clear();
    if (this.db.isOpen) this.db.close();
  }

  /** Fires after each commit with the name of every tenant the transaction changed. */
  onChange(fn: ChangeListener): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  // ---- transaction plumbing ----------------------------------------------------------------

  private q(sql: string): StatementSync {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  private fault(point: string): void {
    this.faultInjector?.(point);
  }

  /** Runs fn in one write transaction; notifies listeners after COMMIT. Not re-entrant. */
  private write<T>(fn: () => T): T {
    if (this.changed) throw new Error('nested store transaction');
    this.changed = new Set();
    let result: T;
    const touched = this.changed;
    try {
      this.db.exec('BEGIN IMMEDIATE');
      try {
        result = fn();
        this.db.exec('COMMIT');
      } catch (err) {
        if (this.db.isTransaction) this.db.exec('ROLLBACK');
        throw err;
      }
    } catch (err) {
      if (err instanceof IsomeshError) throw err;
      this.logger?.error({ err }, 'store write failed');
      throw new IsomeshError('ISOMESH_ERR_STORE_FAULT', `state store fault: ${(err as Error).message}`);
    } finally {
      this.changed = undefined;
    }
    for (const tenant of touched) {
      for (const fn of this.listeners) {
        try {
          fn(tenant);
        } catch (err) {
          this.logger?.error({ err, tenant }, 'store change listener threw');
        }
      }
    }
    return result;
  }

  /** Bumps the tenant's generation (from a store-wide sequence, so it never repeats) and marks it changed. */
  private touch(tenant: string): void {
    const seq = this.nextGeneration();
    this.q('UPDATE tenants SET generation = ?, updated_at = ? WHERE name = ?').run(seq, now(), tenant);
    this.changed?.add(tenant);
  }

  private nextGeneration(): number {
    const row = this.q("SELECT value FROM meta WHERE key = 'generation_seq'").get() as { value: string } | undefined;
    const seq = (row ? Number(row.value) : 0) + 1;
    this.q("INSERT INTO meta(key, value) VALUES ('generation_seq', ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value").run(
      String(seq),
    );
    return seq;
  }

  private requireTenant(name: string): TenantRow {
    const row = this.q('SELECT * FROM tenants WHERE name = ?').get(name) as TenantRow | undefined;
    if (!row) throw notFound('TENANT', name);
    return row;
  }

  // ---- meta ---------------------------------------------------------------------------------

  getMeta(key: string): string | undefined {
    return (this.q('SELECT value FROM meta WHERE key = ?').get(key) as { value: string } | undefined)?.value;
  }

  setMeta(key: string, value: string): void {
    this.write(() => {
      this.q('INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value').run(key, value);
    });
  }

  // ---- tenants and quotas --------------------------------------------------------------------

  private tenantRecord(r: TenantRow): TenantRecord {
    return {
      name: r.name,
      listenerPort: r.listener_port,
      quota: completeQuota(JSON.parse(r.quota) as Partial<Quota>),
      settings: parseSettings(r.settings),
      generation: r.generation,
      createdAt: r.created_at,
      updatedAt: r.updated_at,
    };
  }

  listTenants(): TenantRecord[] {
    return (this.q('SELECT * FROM tenants ORDER BY name').all() as unknown as TenantRow[]).map((r) => this.tenantRecord(r));
  }

  tenantNames(): string[] {
    return (this.q('SELECT name FROM tenants ORDER BY name').all() as Array<{ name: string }>).map((r) => r.name);
  }

  getTenant(name: string): TenantRecord | undefined {
    const r = this.q('SELECT * FROM tenants WHERE name = ?').get(name) as TenantRow | undefined;
    return r ? this.tenantRecord(r) : undefined;
  }

  /** The tenant that owns a listener port, if any. */
  portOwner(port: number): string | undefined {
    return (this.q('SELECT name FROM tenants WHERE listener_port = ?').get(port) as { name: string } | undefined)?.name;
  }

  /** Lowest port in [min, max] that no tenant owns and that is not in `skip`. */
  freeListenerPort(skip: ReadonlySet<number> = new Set(), range: { min: number; max: number } = this.listenerPorts): number | undefined {
    const used = new Set((this.q('SELECT listener_port FROM tenants').all() as Array<{ listener_port: number }>).map((r) => r.listener_port));
    for (let p = range.min; p <= range.max; p++) {
      if (!used.has(p) && !skip.has(p)) return p;
    }
    return undefined;
  }

  /**
   * Creates the tenant (default quota, default settings overlaid with `settings`) or moves its
   * listener port and updates the settings given; settings left out keep their value. One
   * transaction; the generation moves only when something changed.
   */
  putTenant(name: string, listenerPort: number, settings?: unknown): { created: boolean; tenant: TenantRecord } {
    checkName('tenant', name);
    const patch = validateTenantSettingsPatch(settings);
    return this.write(() => {
      const owner = this.portOwner(listenerPort);
      if (owner !== undefined && owner !== name) {
        throw new IsomeshError('ISOMESH_ERR_TENANT_PORT_IN_USE', `listener port ${listenerPort} is already in use`);
      }
      const existing = this.q('SELECT * FROM tenants WHERE name = ?').get(name) as TenantRow | undefined;
      if (existing) {
        let changed = false;
        if (existing.listener_port !== listenerPort) {
          this.q('UPDATE tenants SET listener_port = ? WHERE name = ?').run(listenerPort, name);
          changed = true;
        }
        const current = parseSettings(existing.settings);
        const next = mergeTenantSettings(current, patch);
        if (JSON.stringify(next) !== JSON.stringify(current)) {
          this.q('UPDATE tenants SET settings = ? WHERE name = ?').run(JSON.stringify(next), name);
          changed = true;
        }
        if (changed) this.touch(name);
      } else {
        const t = now();
        this.q('INSERT INTO tenants(name, listener_port, quota, settings, generation, created_at, updated_at) VALUES (?, ?, ?, ?, 0, ?, ?)').run(
          name,
          listenerPort,
          JSON.stringify(DEFAULT_QUOTA),
          JSON.stringify(mergeTenantSettings(DEFAULT_TENANT_SETTINGS, patch)),
          t,
          t,
        );
        this.touch(name);
      }
      return { created: !existing, tenant: this.tenantRecord(this.requireTenant(name)) };
    });
  }

  /** Deletes the tenant and everything it owns; false when it did not exist. */
  deleteTenant(name: string): boolean {
    return this.write(() => {
      // Deleted piecewise (rather than by cascade alone) so the fault points can prove atomicity.
      if (!this.q('SELECT 1 FROM tenants WHERE name = ?').get(name)) return false;
      this.q('DELETE FROM chain WHERE tenant = ?').run(name);
      this.q('DELETE FROM ratelimits WHERE tenant = ?').run(name);
      this.q('DELETE FROM routes WHERE tenant = ?').run(name);
      this.fault('deleteTenant:after-routes');
      this.q('DELETE FROM plugins WHERE tenant = ?').run(name);
      this.q('DELETE FROM tenants WHERE name = ?').run(name);
      this.gcBlobs();
      this.changed?.add(name);
      return true;
    });
  }

  getQuota(tenant: string): Quota | undefined {
    return this.getTenant(tenant)?.quota;
  }

  /** Partial update; unspecified fields keep their value. */
  updateQuota(tenant: string, patch: unknown): Quota {
    const valid = validateQuotaPatch(patch);
    return this.write(() => {
      const row = this.requireTenant(tenant);
      const quota = mergeQuota(completeQuota(JSON.parse(row.quota) as Partial<Quota>), valid);
      this.q('UPDATE tenants SET quota = ? WHERE name = ?').run(JSON.stringify(quota), tenant);
      this.touch(tenant);
      return quota;
    });
  }

  // ---- tokens -------------------------------------------------------------------------------

  /** Mints a random 32-byte token for a tenant (or an admin token for null); only its hash is kept. */
  mintToken(tenant: string | null): string {
    const token = `ism_${randomBytes(32).toString('base64url')}`;
    this.write(() => {
      if (tenant !== null) this.requireTenant(tenant);
      this.q('INSERT INTO tokens(hash, tenant, created_at) VALUES (?, ?, ?)').run(hashToken(token), tenant, now());
    });
    return token;
  }

  /** The token's owner: `{ tenant: null }` for an admin token, undefined when unknown. */
  resolveToken(token: string): { tenant: string | null } | undefined {
    const row = this.q('SELECT tenant FROM tokens WHERE hash = ?').get(hashToken(token)) as { tenant: string | null } | undefined;
    return row ? { tenant: row.tenant } : undefined;
  }

  // ---- services and routes -------------------------------------------------------------------

  listServices(tenant: string): Service[] {
    return (this.q('SELECT body FROM services WHERE tenant = ? ORDER BY name').all(tenant) as Array<{ body: string }>).map(
      (r) => JSON.parse(r.body) as Service,
    );
  }

  getService(tenant: string, name: string): Service | undefined {
    const r = this.q('SELECT body FROM services WHERE tenant = ? AND name = ?').get(tenant, name) as { body: string } | undefined;
    return r ? (JSON.parse(r.body) as Service) : undefined;
  }

  putService(tenant: string, name: string, body: unknown): { created: boolean; service: Service } {
    const svc = validateService(name, body);
    return this.write(() => {
      this.requireTenant(tenant);
      if (svc.vip !== undefined) {
        const other = this.q('SELECT name FROM services WHERE tenant = ? AND vip = ? AND name != ?').get(tenant, svc.vip, name) as
          | { name: string }
          | undefined;
        if (other) throw new IsomeshError('ISOMESH_ERR_SERVICE_VIP_CONFLICT', `vip ${svc.vip} is already owned by service "${other.name}"`);
        // One owner per VIP on the node (compared in canonical form: "[FD00::0:1]:80" is "[fd00::1]:80").
        const key = canonicalVip(svc.vip);
        const rows = this.q('SELECT tenant, vip FROM services WHERE tenant != ? AND vip IS NOT NULL').all(tenant) as Array<{ tenant: string; vip: string }>;
        const owner = rows.find((r) => canonicalVip(r.vip) === key);
        if (owner) throw new IsomeshError('ISOMESH_ERR_SERVICE_VIP_CONFLICT', `vip ${svc.vip} is already owned by another tenant's service`);
      }
      const existed = this.q('SELECT 1 FROM services WHERE tenant = ? AND name = ?').get(tenant, name) !== undefined;
      const t = now();
      this.q(`INSERT INTO services(tenant, name, vip, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)
              ON CONFLICT(tenant, name) DO UPDATE SET vip = excluded.vip, body = excluded.body, updated_at = excluded.updated_at`).run(
        tenant, name, svc.vip ?? null, JSON.stringify(svc), t, t,
      );
      this.touch(tenant);
      return { created: !existed, service: svc };
    });
  }

  deleteService(tenant: string, name: string): void {
    this.write(() => {
      this.requireTenant(tenant);
      if (!this.getService(tenant, name)) throw notFound('SERVICE', name);
      const users = this.listRoutes(tenant).filter((r) => routeServices(r).includes(name)).map((r) => r.name);
      if (users.length > 0) {
        throw new IsomeshError('ISOMESH_ERR_SERVICE_IN_USE', `service "${name}" is referenced by route(s) ${users.join(', ')}`);
      }
      this.q('DELETE FROM services WHERE tenant = ? AND name = ?').run(tenant, name);
      this.touch(tenant);
    });
  }

  listRoutes(tenant: string): Route[] {
    return (this.q('SELECT body FROM routes WHERE tenant = ? ORDER BY name').all(tenant) as Array<{ body: string }>).map(
      (r) => JSON.parse(r.body) as Route,
    );
  }

  getRoute(tenant: string, name: string): Route | undefined {
    const r = this.q('SELECT body FROM routes WHERE tenant = ? AND name = ?').get(tenant, name) as { body: string } | undefined;
    return r ? (JSON.parse(r.body) as Route) : undefined;
  }

  putRoute(tenant: string, name: string, body: unknown): { created: boolean; route: Route } {
    const route = validateRoute(name, body);
    return this.write(() => {
      this.requireTenant(tenant);
      for (const s of routeServices(route)) {
        if (!this.getService(tenant, s)) {
          throw new IsomeshError('ISOMESH_ERR_ROUTE_UNKNOWN_SERVICE', `route "${name}" refers to service "${s}", which does not exist`);
        }
      }
      const existed = this.getRoute(tenant, name) !== undefined;
      const t = now();
      this.q(`INSERT INTO routes(tenant, name, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
              ON CONFLICT(tenant, name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at`).run(
        tenant, name, JSON.stringify(route), t, t,
      );
      this.touch(tenant);
      return { created: !existed, route };
    });
  }

  deleteRoute(tenant: string, name: string): void {
    this.write(() => {
      this.requireTenant(tenant);
      if (!this.getRoute(tenant, name)) throw notFound('ROUTE', name);
      const users = this.getChain(tenant).filter((e) => e.routes?.includes(name)).map((e) => e.plugin);
      if (users.length > 0) {
        throw new IsomeshError('ISOMESH_ERR_ROUTE_IN_USE', `route "${name}" is referenced by chain entries for plugin(s) ${users.join(', ')}`);
      }
      const limits = this.listRateLimits(tenant).filter((rl) => rateLimitRoutes(rl).includes(name)).map((rl) => rl.name);
      if (limits.length > 0) {
        throw new IsomeshError('ISOMESH_ERR_ROUTE_IN_USE', `route "${name}" is referenced by rate limit(s) ${limits.join(', ')}`);
      }
      this.q('DELETE FROM routes WHERE tenant = ? AND name = ?').run(tenant, name);
      this.touch(tenant);
    });
  }

  // ---- rate limits ---------------------------------------------------------------------------

  listRateLimits(tenant: string): RateLimit[] {
    return (this.q('SELECT body FROM ratelimits WHERE tenant = ? ORDER BY name').all(tenant) as Array<{ body: string }>).map(
      (r) => JSON.parse(r.body) as RateLimit,
    );
  }

  getRateLimit(tenant: string, name: string): RateLimit | undefined {
    const r = this.q('SELECT body FROM ratelimits WHERE tenant = ? AND name = ?').get(tenant, name) as { body: string } | undefined;
    return r ? (JSON.parse(r.body) as RateLimit) : undefined;
  }

  /** Creates or replaces a rate limit; a "route" descriptor with a value must name an existing route. */
  putRateLimit(tenant: string, name: string, body: unknown): { created: boolean; rateLimit: RateLimit } {
    const rl = validateRateLimit(name, body);
    return this.write(() => {
      this.requireTenant(tenant);
      for (const route of rateLimitRoutes(rl)) {
        if (!this.getRoute(tenant, route)) {
          const i = rl.descriptors.findIndex((d) => d.key === 'route');
          throw new IsomeshError('ISOMESH_ERR_RATELIMIT_INVALID', `descriptors[${i}].value refers to route "${route}", which does not exist`);
        }
      }
      const existed = this.getRateLimit(tenant, name) !== undefined;
      const t = now();
      this.q(`INSERT INTO ratelimits(tenant, name, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
              ON CONFLICT(tenant, name) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at`).run(
        tenant, name, JSON.stringify(rl), t, t,
      );
      this.touch(tenant);
      return { created: !existed, rateLimit: rl };
    });
  }

  deleteRateLimit(tenant: string, name: string): void {
    this.write(() => {
      this.requireTenant(tenant);
      const r = this.q('DELETE FROM ratelimits WHERE tenant = ? AND name = ?').run(tenant, name);
      if (r.changes === 0) throw notFound('RATELIMIT', name);
      this.touch(tenant);
    });
  }

  // ---- plugins -------------------------------------------------------------------------------

  /**
   * Stores compiled code as the plugin's next immutable version. Idempotent: code whose digest equals
   * an existing version of the same plugin returns that version with created=false.
   */
  publishPluginVersion(tenant: string, plugin: string, input: PublishInput): PublishResult {
    checkName('plugin', plugin);
    const digest = sha256Digest(input.code);
    const size = Buffer.byteLength(input.code);
    return this.write(() => {
      const t = this.requireTenant(tenant);
      const exists = this.q('SELECT 1 FROM plugins WHERE tenant = ? AND name = ?').get(tenant, plugin) !== undefined;
      if (exists) {
        const same = this.q('SELECT version FROM plugin_versions WHERE tenant = ? AND plugin = ? AND digest = ? ORDER BY version LIMIT 1').get(
          tenant, plugin, digest,
        ) as { version: number } | undefined;
        if (same) return { version: same.version, digest, size, created: false };
      } else {
        const quota = completeQuota(JSON.parse(t.quota) as Partial<Quota>);
        const count = (this.q('SELECT COUNT(*) AS n FROM plugins WHERE tenant = ?').get(tenant) as { n: number }).n;
        if (count >= quota.maxPlugins) {
          throw new IsomeshError('ISOMESH_ERR_QUOTA_MAX_PLUGINS', `tenant "${tenant}" already has ${count} plugin(s); maxPlugins is ${quota.maxPlugins}`);
        }
        this.q('INSERT INTO plugins(tenant, name, created_at) VALUES (?, ?, ?)').run(tenant, plugin, now());
      }
      this.q('INSERT INTO blobs(digest, code) VALUES (?, ?) ON CONFLICT(digest) DO NOTHING').run(digest, input.code);
      this.fault('publish:after-blob');
      const max = this.q('SELECT MAX(version) AS v FROM plugin_versions WHERE tenant = ? AND plugin = ?').get(tenant, plugin) as {
        v: number | null;
      };
      const version = (max.v ?? 0) + 1;
      const source = input.source !== undefined && input.source !== input.code ? input.source : null;
      const meta = input.meta === undefined ? null : JSON.stringify(input.meta);
      this.q(`INSERT INTO plugin_versions(tenant, plugin, version, digest, size, language, source, created_at, meta)
              VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(tenant, plugin, version, digest, size, input.language, source, now(), meta);
      this.touch(tenant);
      return { version, digest, size, created: true };
    });
  }

  private versionMeta(r: VersionRow): PluginVersionMeta {
    const out: PluginVersionMeta = { plugin: r.plugin, version: r.version, digest: r.digest, size: r.size, language: r.language, createdAt: r.created_at };
    if (r.meta !== null) out.meta = JSON.parse(r.meta) as PluginVersionDeclarations;
    return out;
  }

  listPluginVersions(tenant: string, plugin: string): PluginVersionMeta[] | undefined {
    if (!this.q('SELECT 1 FROM plugins WHERE tenant = ? AND name = ?').get(tenant, plugin)) return undefined;
    const rows = this.q('SELECT plugin, version, digest, size, language, created_at, meta FROM plugin_versions WHERE tenant = ? AND plugin = ? ORDER BY version').all(
      tenant, plugin,
    ) as unknown as VersionRow[];
    return rows.map((r) => this.versionMeta(r));
  }

  /** One version with its code and (when it differs) the submitted source. */
  getPluginVersion(tenant: string, plugin: string, version: number): (PluginVersionMeta & { code: string; source?: string }) | undefined {
    const r = this.q(`SELECT v.plugin, v.version, v.digest, v.size, v.language, v.created_at, v.meta, v.source, b.code
                      FROM plugin_versions v JOIN blobs b ON b.digest = v.digest
                      WHERE v.tenant = ? AND v.plugin = ? AND v.version = ?`).get(tenant, plugin, version) as
      | (VersionRow & { code: string; source: string | null })
      | undefined;
    if (!r) return undefined;
    const out: PluginVersionMeta & { code: string; source?: string } = { ...this.versionMeta(r), code: r.code };
    if (r.source !== null) out.source = r.source;
    return out;
  }

  private activation(tenant: string, plugin: string): Activation | undefined {
    const a = this.q('SELECT version, canary_version, canary_percent FROM activations WHERE tenant = ? AND plugin = ?').get(tenant, plugin) as
      | { version: number; canary_version: number | null; canary_percent: number | null }
      | undefined;
    if (!a) return undefined;
    const out: Activation = { version: a.version };
    if (a.canary_version !== null) out.canary = { version: a.canary_version, percent: a.canary_percent ?? 0 };
    return out;
  }

  getPlugin(tenant: string, plugin: string): PluginRecord | undefined {
    const p = this.q('SELECT name, created_at FROM plugins WHERE tenant = ? AND name = ?').get(tenant, plugin) as
      | { name: string; created_at: string }
      | undefined;
    if (!p) return undefined;
    const versions = this.listPluginVersions(tenant, plugin) ?? [];
    const rec: PluginRecord = { name: p.name, createdAt: p.created_at, latestVersion: versions.at(-1)?.version ?? 0, versions };
    const active = this.activation(tenant, plugin);
    if (active) rec.active = active;
    return rec;
  }

  listPlugins(tenant: string): PluginRecord[] {
    const names = this.q('SELECT name FROM plugins WHERE tenant = ? ORDER BY name').all(tenant) as Array<{ name: string }>;
    return names.map((n) => this.getPlugin(tenant, n.name)!);
  }

  /** The configSchema a version declared (undefined: none, or published before declarations were kept). */
  private versionSchema(tenant: string, plugin: string, version: number): Record<string, unknown> | undefined {
    const r = this.q('SELECT meta FROM plugin_versions WHERE tenant = ? AND plugin = ? AND version = ?').get(tenant, plugin, version) as
      | { meta: string | null }
      | undefined;
    if (r === undefined || r.meta === null) return undefined;
    return (JSON.parse(r.meta) as PluginVersionDeclarations).configSchema;
  }

  /** Refuses chain entry `i`'s config unless every version that may serve it (active, canary) accepts it. */
  private checkEntryConfig(tenant: string, i: number, entry: ChainEntry, versions: Array<number | undefined>): void {
    for (const v of versions) {
      if (v === undefined) continue;
      const schema = this.versionSchema(tenant, entry.plugin, v);
      if (schema === undefined) continue;
      const problem = configProblem(schema, entry.config, `chain[${i}].config`);
      if (problem !== undefined) {
        throw new IsomeshError('ISOMESH_ERR_CHAIN_BAD_CONFIG', `${problem} (configSchema of plugin "${entry.plugin}" version ${v})`);
      }
    }
  }

  setActivation(tenant: string, plugin: string, body: unknown): Activation {
    const a = validateActivation(body);
    return this.write(() => {
      this.requireTenant(tenant);
      if (!this.q('SELECT 1 FROM plugins WHERE tenant = ? AND name = ?').get(tenant, plugin)) throw notFound('PLUGIN', plugin);
      for (const v of [a.version, a.canary?.version]) {
        if (v === undefined) continue;
        if (!this.q('SELECT 1 FROM plugin_versions WHERE tenant = ? AND plugin = ? AND version = ?').get(tenant, plugin, v)) {
          throw new IsomeshError('ISOMESH_ERR_PLUGIN_VERSION_NOT_FOUND', `plugin "${plugin}" has no version ${v}`);
        }
      }
      // A request must never see a config its version's schema rejects.
      for (const [i, e] of this.getChain(tenant).entries()) {
        if (e.plugin === plugin) this.checkEntryConfig(tenant, i, e, [a.version, a.canary?.version]);
      }
      this.q(`INSERT INTO activations(tenant, plugin, version, canary_version, canary_percent) VALUES (?, ?, ?, ?, ?)
              ON CONFLICT(tenant, plugin) DO UPDATE SET version = excluded.version, canary_version = excluded.canary_version,
              canary_percent = excluded.canary_percent`).run(tenant, plugin, a.version, a.canary?.version ?? null, a.canary?.percent ?? null);
      this.touch(tenant);
      return a;
    });
  }

  deletePlugin(tenant: string, plugin: string): void {
    this.write(() => {
      this.requireTenant(tenant);
      if (!this.q('SELECT 1 FROM plugins WHERE tenant = ? AND name = ?').get(tenant, plugin)) throw notFound('PLUGIN', plugin);
      if (this.getChain(tenant).some((e) => e.plugin === plugin)) {
        throw new IsomeshError('ISOMESH_ERR_PLUGIN_IN_CHAIN', `plugin "${plugin}" is referenced by the chain; remove it from the chain first`);
      }
      this.q('DELETE FROM plugins WHERE tenant = ? AND name = ?').run(tenant, plugin);
      this.gcBlobs();
      this.touch(tenant);
    });
  }

  /** Content-addressed code is shared across versions and tenants; drop blobs nothing references. */
  private gcBlobs(): void {
    this.q('DELETE FROM blobs WHERE digest NOT IN (SELECT digest FROM plugin_versions)').run();
  }

  // ---- chain ---------------------------------------------------------------------------------

  getChain(tenant: string): ChainEntry[] {
    const r = this.q('SELECT entries FROM chain WHERE tenant = ?').get(tenant) as { entries: string } | undefined;
    return r ? (JSON.parse(r.entries) as ChainEntry[]) : [];
  }

  putChain(tenant: string, body: unknown): ChainEntry[] {
    const entries = validateChain(body);
    return this.write(() => {
      this.requireTenant(tenant);
      for (const [i, e] of entries.entries()) {
        if (!this.q('SELECT 1 FROM plugins WHERE tenant = ? AND name = ?').get(tenant, e.plugin)) {
          throw new IsomeshError('ISOMESH_ERR_CHAIN_UNKNOWN_PLUGIN', `chain[${i}].plugin "${e.plugin}" is not published`);
        }
        const active = this.activation(tenant, e.plugin);
        if (!active) {
          throw new IsomeshError('ISOMESH_ERR_CHAIN_NOT_ACTIVE', `chain[${i}].plugin "${e.plugin}" has no active version; PUT .../plugins/${e.plugin}/active first`);
        }
        this.checkEntryConfig(tenant, i, e, [active.version, active.canary?.version]);
        for (const r of e.routes ?? []) {
          if (!this.getRoute(tenant, r)) {
            throw new IsomeshError('ISOMESH_ERR_CHAIN_UNKNOWN_ROUTE', `chain[${i}].routes refers to route "${r}", which does not exist`);
          }
        }
      }
      this.q('INSERT INTO chain(tenant, entries) VALUES (?, ?) ON CONFLICT(tenant) DO UPDATE SET entries = excluded.entries').run(
        tenant, JSON.stringify(entries),
      );
      this.touch(tenant);
      return entries;
    });
  }

  // ---- secrets -------------------------------------------------------------------------------

  putSecret(tenant: string, name: string, value: unknown): { created: boolean } {
    checkName('secret', name);
    const v = validateSecretValue(value);
    return this.write(() => {
      this.requireTenant(tenant);
      const existed = this.q('SELECT 1 FROM secrets WHERE tenant = ? AND name = ?').get(tenant, name) !== undefined;
      const t = now();
      this.q(`INSERT INTO secrets(tenant, name, value, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
              ON CONFLICT(tenant, name) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at`).run(tenant, name, v, t, t);
      this.touch(tenant);
      return { created: !existed };
    });
  }

  deleteSecret(tenant: string, name: string): void {
    this.write(() => {
      this.requireTenant(tenant);
      const r = this.q('DELETE FROM secrets WHERE tenant = ? AND name = ?').run(tenant, name);
      if (r.changes === 0) throw notFound('SECRET', name);
      this.touch(tenant);
    });
  }

  /** Names and timestamps only: secret values leave the store only inside tenantConfig(). */
  listSecretNames(tenant: string): Array<{ name: string; createdAt: string; updatedAt: string }> {
    return (this.q('SELECT name, created_at, updated_at FROM secrets WHERE tenant = ? ORDER BY name').all(tenant) as Array<{
      name: string;
      created_at: string;
      updated_at: string;
    }>).map((r) => ({ name: r.name, createdAt: r.created_at, updatedAt: r.updated_at }));
  }

  // ---- workloads (the admin routes for these belong to main.ts / datapath) -------------------

  putWorkload(tenant: string, name: string, body: unknown): { created: boolean; workload: WorkloadRecord } {
    checkName('workload', name);
    const w = validateWorkload(body);
    return this.write(() => {
      this.requireTenant(tenant);
      const other = this.q('SELECT tenant, name FROM workloads WHERE cgroup_path = ?').get(w.cgroupPath) as
        | { tenant: string; name: string }
        | undefined;
      if (other && (other.tenant !== tenant || other.name !== name)) {
        throw new IsomeshError('ISOMESH_ERR_WORKLOAD_INVALID', `cgroupPath ${w.cgroupPath} is already attached to another workload`);
      }
      const existed = this.getWorkload(tenant, name) !== undefined;
      this.q(`INSERT INTO workloads(tenant, name, cgroup_path, proxy_address, created_at) VALUES (?, ?, ?, ?, ?)
              ON CONFLICT(tenant, name) DO UPDATE SET cgroup_path = excluded.cgroup_path, proxy_address = excluded.proxy_address`).run(
        tenant, name, w.cgroupPath, w.proxyAddress, now(),
      );
      this.touch(tenant);
      return { created: !existed, workload: this.getWorkload(tenant, name)! };
    });
  }

  getWorkload(tenant: string, name: string): WorkloadRecord | undefined {
    return this.listWorkloads(tenant).find((w) => w.name === name);
  }

  /** All workloads, or one tenant's. */
  listWorkloads(tenant?: string): WorkloadRecord[] {
    const rows = (tenant === undefined
      ? this.q('SELECT * FROM workloads ORDER BY tenant, name').all()
      : this.q('SELECT * FROM workloads WHERE tenant = ? ORDER BY name').all(tenant)) as Array<{
      tenant: string;
      name: string;
      cgroup_path: string;
      proxy_address: string;
      created_at: string;
    }>;
    return rows.map((r) => ({ tenant: r.tenant, name: r.name, cgroupPath: r.cgroup_path, proxyAddress: r.proxy_address, createdAt: r.created_at }));
  }

  deleteWorkload(tenant: string, name: string): void {
    this.write(() => {
      this.requireTenant(tenant);
      const r = this.q('DELETE FROM workloads WHERE tenant = ? AND name = ?').run(tenant, name);
      if (r.changes === 0) throw notFound('WORKLOAD', name);
      this.touch(tenant);
    });
  }

  // ---- snapshots -----------------------------------------------------------------------------

  /** The tenant's immutable data-plane snapshot; undefined when the tenant does not exist. */
  tenantConfig(name: string): TenantConfig | undefined {
    return buildTenantConfig(this.db, name);
  }

  /** Every row of every table, stably ordered: equal dumps mean equal state. */
  dump(): StoreDump {
    return dumpDatabase(this.db);
  }
}

/** "ip:port" with the address in canonical form (IPv6 compressed, lower case). */
function canonicalVip(vip: string): string {
  const m = /^\[(.+)\]:(\d+)$/.exec(vip);
  if (!m) return vip;
  return `${new URL(`http://[${m[1]}]/`).hostname}:${Number(m[2])}`;
}
