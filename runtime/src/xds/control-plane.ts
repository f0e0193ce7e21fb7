// The xDS control plane of a node: keeps the snapshot cache in step with each tenant's TenantConfig
// (the daemon calls apply/remove after every commit), resolves hostname endpoints, serves ADS on the
// node's gRPC server and reports its clients for GET /v1/xds.

import type pino from 'pino';
import type prom from 'prom-client';
import { isIP } from 'node:net';
import type { TenantConfig } from '../store/model.ts';
import { AdsServer } from './ads.ts';
import { XdsMetrics } from './metrics.ts';
import { RESOURCE_KINDS, TYPE_URLS, envoyProtos, type EnvoyProtos } from './protos.ts';
import { HostnameResolver, type Lookup } from './resolver.ts';
import type { GrpcServer } from './server.ts';
import { SnapshotCache, type Snapshot } from './snapshot.ts';
import type { ClientStatus } from './stream.ts';
import type { Flavor, NodeFacts } from './translate.ts';
import { dataPlaneValidator } from './validate.ts';

export interface XdsControlPlaneOptions {
  grpc: GrpcServer;
  logger: pino.Logger;
  registry: prom.Registry;
  /** Addresses a tenant's listener accepts on (the node's listen address, plus workloads' proxy addresses). */
  listenAddresses: (tenant: string) => readonly string[];
  /** How Envoy reaches ext_proc and RLS; default the gRPC server's unix socket. */
  grpcTarget?: NodeFacts['grpcTarget'];
  lookup?: Lookup;
  resolveRefreshMs?: number;
}

export interface XdsStatus {
  clients: ClientStatus[];
  /** Per type URL, the version of the admin view served to Envoy clients. */
  versions: Record<string, string>;
  /** The same for proxyless gRPC clients (their resources differ, so do their versions). */
  proxylessVersions: Record<string, string>;
  tenants: Record<string, { generation: number; served?: number; error?: string; warnings: string[] }>;
}

function hostnamesOf(cfg: TenantConfig): Set<string> {
  const out = new Set<string>();
  for (const s of cfg.services) for (const e of s.endpoints) if (!IPV4_RE.test(e.address) && isIP(e.address) === 0) out.add(e.address);
  return out;
}

/** A cheap first test for the common case (isIP's own regex is far slower). */
const IPV4_RE = /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;

export class XdsControlPlane {
  readonly protos: EnvoyProtos;
  readonly cache: SnapshotCache;
  readonly #ads: AdsServer;
  readonly #resolver: HostnameResolver;
  readonly #facts: NodeFacts;
  readonly #configs = new Map<string, TenantConfig>();
  readonly #hostnamesByTenant = new Map<string, Set<string>>();
  readonly #logger: pino.Logger;

  constructor(opts: XdsControlPlaneOptions) {
    this.#logger = opts.logger;
    this.protos = envoyProtos();
    const metrics = new XdsMetrics(opts.registry);
    this.cache = new SnapshotCache({
      protos: this.protos,
      validator: dataPlaneValidator(this.protos),
      logger: opts.logger,
      onRejected: (tenant) => metrics.rejected(tenant),
    });
    this.#resolver = new HostnameResolver({
      ...(opts.lookup ? { lookup: opts.lookup } : {}),
      ...(opts.resolveRefreshMs ? { refreshMs: opts.resolveRefreshMs } : {}),
      onChange: (hosts) => this.#rebuildUsing(hosts),
    });
    this.#facts = {
      listenAddresses: opts.listenAddresses,
      grpcTarget: opts.grpcTarget ?? { pipe: opts.grpc.socketPath },
      resolve: (h) => this.#resolver.resolve(h),
    };
    this.cache.setNode(this.#facts);
    this.#ads = new AdsServer({ cache: this.cache, metrics, logger: opts.logger, identify: (t) => opts.grpc.identify(t) });
    this.#ads.register(opts.grpc, this.protos);
  }

  /** Installs a tenant's config; false when refused (its last good resources keep being served). */
  apply(cfg: TenantConfig): boolean {
    this.#configs.set(cfg.name, cfg);
    const ok = this.cache.setTenant(cfg, this.#facts);
    this.#trackHostnames(cfg.name, hostnamesOf(cfg));
    return ok;
  }

  remove(tenant: string): void {
    this.#configs.delete(tenant);
    this.cache.removeTenant(tenant);
    this.#trackHostnames(tenant, new Set());
  }

  /** The view a client of `flavor` with visibility `scope` ("*" or a tenant) is served. */
  snapshot(flavor: Flavor, scope: string): Snapshot {
    return this.cache.snapshot(flavor, scope);
  }

  /** Waits for hostname lookups in progress and the rebuilds they cause (tests). */
  async settled(): Promise<void> {
    await this.#resolver.settled();
  }

  /** Resolves every hostname endpoint again now (the resolver also does it every refresh period). */
  async refreshHostnames(): Promise<void> {
    await this.#resolver.refresh();
  }

  status(): XdsStatus {
    const versions = (flavor: Flavor) => {
      const v = this.cache.versions(flavor);
      return Object.fromEntries(RESOURCE_KINDS.map((k) => [TYPE_URLS[k], v[k]]));
    };
    return { clients: this.#ads.clients(), versions: versions('envoy'), proxylessVersions: versions('proxyless'), tenants: this.cache.status() };
  }

  close(): void {
    this.#ads.closeAll();
    this.#resolver.close();
  }

  /** Hostnames per tenant; the resolver forgets a hostname once no tenant names it. */
  #trackHostnames(tenant: string, names: Set<string>): void {
    const old = this.#hostnamesByTenant.get(tenant);
    if (names.size > 0) this.#hostnamesByTenant.set(tenant, names);
    else this.#hostnamesByTenant.delete(tenant);
    if (!old || [...old].every((h) => names.has(h))) return; // nothing dropped
    const inUse = new Set<string>();
    for (const set of this.#hostnamesByTenant.values()) for (const h of set) inUse.add(h);
    this.#resolver.retain(inUse);
  }

  #rebuildUsing(hosts: Set<string>): void {
    for (const cfg of this.#configs.values()) {
      if (cfg.services.some((s) => s.endpoints.some((e) => hosts.has(e.address)))) {
        this.#logger.debug({ tenant: cfg.name, hosts: [...hosts] }, 'xDS: hostname addresses changed');
        this.cache.setTenant(cfg, this.#facts);
      }
    }
  }
}
