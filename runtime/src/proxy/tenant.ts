// A tenant as the proxy holds it: its listeners, the compiled snapshot of its current TenantConfig
// (route table + upstream services, swapped atomically on configure), its connection pool and
// its metric series. An exchange captures the snapshot it started with.

import { DEFAULT_QUOTA, DEFAULT_TENANT_SETTINGS, type RateLimit, type TenantConfig, type TenantSettings } from '../store/model.ts';
import type { TenantServer } from './listener.ts';
import { RouteTable } from './route-table.ts';
import { UpstreamPool, UpstreamService } from './upstream.ts';
import { LiveRegistry, type SharedUpstream } from './registry.ts';
import type { TenantSeries } from './metrics.ts';

export interface TenantSnapshot {
  readonly generation: number;
  readonly table: RouteTable;
  readonly services: ReadonlyMap<string, UpstreamService>;
  readonly settings: TenantSettings;
  readonly rateLimits: readonly RateLimit[];
  /** Client connections the tenant may hold (quota maxConnections). */
  readonly maxConnections: number;
}

const EMPTY_TABLE = new RouteTable([], []);

export const EMPTY_SNAPSHOT: TenantSnapshot = Object.freeze({
  generation: -1,
  table: EMPTY_TABLE,
  services: new Map<string, UpstreamService>(),
  settings: DEFAULT_TENANT_SETTINGS,
  rateLimits: [],
  maxConnections: DEFAULT_QUOTA.maxConnections,
});

/**
 * Compile a TenantConfig over the tenant's live state; throws ISOMESH_ERR_ROUTE_INVALID (and leaves
 * nothing changed) on a bad route.
 */
export function compileSnapshot(config: TenantConfig, registry?: LiveRegistry): TenantSnapshot {
  const table = new RouteTable(config.routes, config.services);
  const services = new Map<string, UpstreamService>();
  for (const s of config.services) services.set(s.name, new UpstreamService(s, registry));
  return {
    generation: config.generation,
    table,
    services,
    settings: config.settings ?? DEFAULT_TENANT_SETTINGS,
    rateLimits: config.rateLimits ?? [],
    maxConnections: config.quota.maxConnections ?? DEFAULT_QUOTA.maxConnections,
  };
}

export class TenantRuntime {
  readonly name: string;
  readonly series: TenantSeries;
  readonly pool = new UpstreamPool();
  /** Endpoint health and counts, across configuration snapshots (in the node ledger with several workers). */
  readonly live: LiveRegistry;
  snapshot: TenantSnapshot = EMPTY_SNAPSHOT;
  /** Port all of this tenant's listeners share; 0 until bound. */
  port = 0;
  /** Listen addresses, the proxy's default first. */
  readonly addresses: string[];
  /** address → server, for the current port. */
  servers = new Map<string, TenantServer>();
  requests = 0;
  inFlight = 0;
  removed = false;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(name: string, defaultAddress: string, series: TenantSeries, shared?: SharedUpstream) {
    this.name = name;
    this.live = new LiveRegistry(shared);
    this.addresses = [defaultAddress];
    this.series = series;
  }

  /** Run listener changes for this tenant one at a time (bind/addListenAddress/remove may overlap). */
  serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  install(snapshot: TenantSnapshot, config: TenantConfig): void {
    this.snapshot = snapshot;
    this.pool.retain(snapshot.services.values());
    this.live.retain(config.services);
  }
}
