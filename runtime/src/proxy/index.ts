// The built-in data plane: one listener per tenant (plus extra addresses, e.g. the node's pod-network
// address) serving HTTP/1.1 on raw sockets (http1/), a compiled route table per TenantConfig,
// keep-alive upstream pools per tenant, and the plugin host called through PluginHostApi (see
// exchange.ts for the request flow).
//
// configure() only updates the proxy; the caller configures the plugin host with the same
// TenantConfig itself (both sides expose configure/removeTenant).

import type { Socket } from 'node:net';
import type pino from 'pino';
import type prom from 'prom-client';
import type { PluginHostApi } from '../host/contract.ts';
import type { TenantConfig } from '../store/model.ts';
import { IsomeshError } from '../errors.ts';
import { ProxyMetrics } from './metrics.ts';
import { compileSnapshot, EMPTY_SNAPSHOT, TenantRuntime } from './tenant.ts';
import { ConnectionLedger, defaultMaxConnections, DEFAULT_TIMEOUTS, Sweeper, TenantServer, type ConnectionCounter } from './listener.ts';
import { startExchange, type ProxyContext } from './exchange.ts';
import { MemoryStream, type FetchRequest, type FetchResult } from './plugin-fetch.ts';
import type { Http1Timeouts } from './http1/connection.ts';
import { RateLimitCounters, type RateLimitStore } from '../host/index.ts';
import { Telemetry } from '../telemetry/index.ts';
import type { SharedUpstream } from './registry.ts';

export { DEFAULT_TIMEOUTS, defaultMaxConnections } from './listener.ts';
export type { Http1Timeouts } from './http1/connection.ts';

export interface ProxyServerOptions {
  host: PluginHostApi;
  logger: pino.Logger;
  registry: prom.Registry;
  /** Default listen address for every tenant; default 127.0.0.1. */
  listenAddress?: string;
  /** Upper bound on waiting for in-flight requests when a listener closes; default 10 s. */
  drainTimeoutMs?: number;
  /** Client-side timeouts (header, keep-alive idle, request body idle); defaults DEFAULT_TIMEOUTS. */
  timeouts?: Partial<Http1Timeouts>;
  /** Node-wide cap on client connections; default: half the descriptor limit. */
  maxConnections?: number;
  /** Counts shared by several data-plane workers (node-wide connection caps); default: this proxy's own. */
  connections?: ConnectionCounter;
  /** Bind tenant ports with SO_REUSEPORT (this proxy is one of several workers). */
  reusePort?: boolean;
  /** Rate-limit counters (shared with the rate-limit service); default: the proxy's own. */
  rateLimits?: RateLimitStore;
  /** Access log and tracing; default: no export, access lines through `logger`. */
  telemetry?: Telemetry;
  /** With several workers: where each tenant's breaker/ejection/in-flight state lives in the node ledger. */
  sharedUpstream?: (tenant: string) => SharedUpstream | undefined;
}

export interface ProxyListener {
  tenant: string;
  address: string;
  port: number;
}

export interface ProxyTenantStatus {
  listener?: { address: string; port: number };
  requests: number;
  inFlight: number;
}

/** One endpoint's live balancer state (the admin API's endpointStatus). */
export interface ProxyEndpointStatus {
  address: string;
  port: number;
  ejected: boolean;
  ejectedUntil?: string;
  active: number;
  consecutive5xx: number;
}

/** What the daemon drives: one ProxyServer in this thread, or a WorkerPool of them (ISOMESH_WORKERS). */
export interface DataPlane {
  readonly workers: number;
  configure(config: TenantConfig): Promise<void>;
  bind(tenant: string, port: number): Promise<number>;
  addListenAddress(tenant: string, address: string): Promise<void>;
  removeListenAddress(tenant: string, address: string): Promise<void>;
  removeTenant(tenant: string): Promise<void>;
  status(tenant: string): ProxyTenantStatus | undefined;
  endpointStatus(tenant: string, service: string): ProxyEndpointStatus[] | undefined | Promise<ProxyEndpointStatus[] | undefined>;
  fetch(tenant: string, req: FetchRequest): Promise<FetchResult>;
  setOriginalDestinationResolver(fn: (socket: Socket) => string | undefined): void;
  setOriginalDestinationPins?(pinDir: string): void;
  listeners(): ProxyListener[];
  close(): Promise<void>;
}

export { WorkerPool, type WorkerPoolOptions } from './workers.ts';

export class ProxyServer implements DataPlane {
  /** One data-plane thread: this one. */
  readonly workers = 1;
  readonly #host: PluginHostApi;
  readonly #logger: pino.Logger;
  readonly #metrics: ProxyMetrics;
  readonly #listenAddress: string;
  readonly #drainTimeoutMs: number;
  readonly #tenants = new Map<string, TenantRuntime>();
  /** Old listeners and removed tenants still draining; close() waits for them. */
  readonly #draining = new Set<Promise<void>>();
  readonly #context: ProxyContext;
  readonly #timeouts: Http1Timeouts;
  readonly #ledger: ConnectionCounter;
  readonly #sweeper: Sweeper;
  readonly #reusePort: boolean;
  readonly #sharedUpstream: ((tenant: string) => SharedUpstream | undefined) | undefined;
  #resolver: ((socket: Socket) => string | undefined) | undefined;
  /** Original destination per downstream connection: resolved once, reused by its keep-alive requests. */
  readonly #destinations = new WeakMap<Socket, string | null>();
  #closed = false;

  constructor(opts: ProxyServerOptions) {
    this.#host = opts.host;
    this.#logger = opts.logger;
    this.#metrics = new ProxyMetrics(opts.registry);
    this.#metrics.ejections = () => {
      const out: Array<{ tenant: string; service: string; ejected: number }> = [];
      const now = performance.now();
      for (const t of this.#tenants.values()) {
        for (const svc of t.snapshot.services.values()) {
          out.push({ tenant: t.name, service: svc.name, ejected: svc.picker.endpoints.filter((e) => e.ejectedUntil > now).length });
        }
      }
      return out;
    };
    this.#listenAddress = opts.listenAddress ?? '127.0.0.1';
    this.#drainTimeoutMs = opts.drainTimeoutMs ?? 10_000;
    this.#context = {
      host: this.#host,
      logger: this.#logger,
      rateLimits: opts.rateLimits ?? new RateLimitCounters(),
      telemetry: opts.telemetry ?? Telemetry.fromEnv({}, opts.logger),
      originalDestination: (socket) => this.#originalDestination(socket),
    };
    this.#timeouts = { ...DEFAULT_TIMEOUTS, ...opts.timeouts };
    this.#ledger = opts.connections ?? new ConnectionLedger(opts.maxConnections ?? defaultMaxConnections());
    this.#reusePort = opts.reusePort === true;
    this.#sharedUpstream = opts.sharedUpstream;
    this.#sweeper = new Sweeper(() => this.#allServers());
  }

  *#allServers(): Iterable<TenantServer> {
    for (const t of this.#tenants.values()) yield* t.servers.values();
    yield* this.#retiring;
  }

  /** Servers of old ports or removed tenants, still draining (their deadlines still apply). */
  readonly #retiring = new Set<TenantServer>();

  /** Client connections open on the node and per tenant. */
  connections(tenant?: string): number {
    return tenant === undefined ? this.#ledger.total : this.#ledger.of(tenant);
  }

  /** Bind the tenant's listener (idempotent; rebinds if the port changed; port 0 = any free port). */
  bind(tenant: string, port: number): Promise<number> {
    const t = this.#tenant(tenant);
    return t.serial(() => this.#bind(t, port)).catch((err: unknown) => {
      // Don't leave behind an empty tenant that only existed for this failed bind.
      if (t.servers.size === 0 && t.snapshot === EMPTY_SNAPSHOT && this.#tenants.get(tenant) === t) {
        this.#tenants.delete(tenant);
        this.#metrics.forget(tenant);
      }
      throw err;
    });
  }

  /** Also accept the tenant's traffic on `address` (same port). */
  addListenAddress(tenant: string, address: string): Promise<void> {
    const t = this.#tenant(tenant);
    return t.serial(async () => {
      if (t.addresses.includes(address)) return;
      if (t.servers.size > 0) {
        const server = this.#createServer(t);
        await server.listen(t.port, address);
        t.servers.set(address, server);
      }
      t.addresses.push(address);
    });
  }

  /**
   * Stop accepting the tenant's traffic on an extra `address` (its in-flight requests finish). The
   * proxy's default listen address is never removed this way — removeTenant closes it.
   */
  removeListenAddress(tenant: string, address: string): Promise<void> {
    const t = this.#tenants.get(tenant);
    if (t === undefined) return Promise.resolve();
    return t.serial(async () => {
      const i = t.addresses.indexOf(address);
      if (i <= 0) return; // unknown, or the default address (index 0)
      t.addresses.splice(i, 1);
      const server = t.servers.get(address);
      if (server === undefined) return;
      t.servers.delete(address);
      await this.#retire(server);
    });
  }

  /** Install a tenant's config (new requests use it at once) and bind its listener if needed. */
  async configure(config: TenantConfig): Promise<void> {
    const t = this.#tenant(config.name);
    const snapshot = compileSnapshot(config, t.live); // throws before anything changes
    t.install(snapshot, config);
    const wanted = config.listenerPort;
    if (t.servers.size === 0 || (wanted !== 0 && wanted !== t.port)) await this.bind(config.name, wanted);
  }

  /** Close the tenant's listeners; in-flight requests finish (bounded by drainTimeoutMs). */
  async removeTenant(tenant: string): Promise<void> {
    const t = this.#tenants.get(tenant);
    if (t === undefined) return;
    this.#tenants.delete(tenant);
    t.removed = true;
    await t.serial(async () => {
      const servers = [...t.servers.values()];
      t.servers = new Map();
      await Promise.all(servers.map((s) => this.#retire(s)));
      t.pool.close();
      this.#metrics.forget(tenant);
      this.#context.rateLimits.forget(tenant);
    });
  }

  setOriginalDestinationResolver(fn: (socket: Socket) => string | undefined): void {
    this.#resolver = fn;
  }

  listeners(): ProxyListener[] {
    const out: ProxyListener[] = [];
    for (const t of this.#tenants.values()) for (const address of t.servers.keys()) out.push({ tenant: t.name, address, port: t.port });
    return out;
  }

  status(tenant: string): ProxyTenantStatus | undefined {
    const t = this.#tenants.get(tenant);
    if (t === undefined) return undefined;
    const address = t.addresses.find((a) => t.servers.has(a));
    return {
      listener: address !== undefined ? { address, port: t.port } : undefined,
      requests: t.requests,
      inFlight: t.inFlight,
    };
  }

  /** Read-only view of the current snapshot's balancer state for one service; undefined when unknown. */
  endpointStatus(tenant: string, service: string): ProxyEndpointStatus[] | undefined {
    const svc = this.#tenants.get(tenant)?.snapshot.services.get(service);
    if (svc === undefined) return undefined;
    // Ejection deadlines are on the monotonic clock; shown as wall-clock time.
    const mono = performance.now();
    const wall = Date.now();
    return svc.picker.endpoints.map((e) => {
      const ejected = e.ejectedUntil > mono;
      const out: ProxyEndpointStatus = { address: e.address, port: e.port, ejected, active: e.inFlight, consecutive5xx: e.consecutiveFailures };
      if (ejected) out.ejectedUntil = new Date(wall + (e.ejectedUntil - mono)).toISOString();
      return out;
    });
  }

  /**
   * The ctx.fetch backend (host/contract.ts PluginFetch): one request of a plugin of `tenant` to its own
   * service, through the proxy path but not the chain. Counted in the tenant's admission quotas.
   */
  fetch(tenant: string, req: FetchRequest): Promise<FetchResult> {
    const t = this.#tenants.get(tenant);
    if (t === undefined) return Promise.reject(new Error(`tenant ${tenant} is not served here`));
    return new Promise((resolve, reject) => {
      const stream = new MemoryStream(req, req.service, resolve, reject);
      startExchange(this.#context, t, stream, { service: req.service, timeoutMs: req.timeoutMs });
    });
  }

  /** Stop accepting everywhere, drain in-flight requests (bounded), close upstream pools. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all([...this.#tenants.keys()].map((name) => this.removeTenant(name)));
    await Promise.all(this.#draining);
    this.#sweeper.stop();
  }

  #tenant(name: string): TenantRuntime {
    let t = this.#tenants.get(name);
    if (t === undefined) {
      if (this.#closed) throw new IsomeshError('ISOMESH_ERR_INTERNAL', 'proxy is closed');
      t = new TenantRuntime(name, this.#listenAddress, this.#metrics.tenant(name), this.#sharedUpstream?.(name));
      this.#tenants.set(name, t);
    }
    return t;
  }

  #createServer(t: TenantRuntime): TenantServer {
    const ctx = this.#context;
    return new TenantServer(t.name, {
      timeouts: this.#timeouts,
      ledger: this.#ledger,
      tenantCap: () => t.snapshot.maxConnections,
      refused: (reason) => t.series.connectionRefused(reason),
      onRequest: (stream) => startExchange(ctx, t, stream),
      onConnection: () => this.#sweeper.arm(),
      reusePort: this.#reusePort,
    });
  }

  #retire(server: TenantServer): Promise<void> {
    this.#retiring.add(server);
    return this.#track(server.drain(this.#drainTimeoutMs).finally(() => this.#retiring.delete(server)));
  }

  async #bind(t: TenantRuntime, port: number): Promise<number> {
    if (t.removed) throw new IsomeshError('ISOMESH_ERR_TENANT_NOT_FOUND', `tenant ${t.name} was removed`);
    if (t.servers.size > 0 && (port === 0 || port === t.port)) return t.port;
    // Bind every address on the new port before letting go of the old listeners, so a failed
    // rebind leaves the tenant serving where it was.
    const fresh = new Map<string, TenantServer>();
    let bound = port;
    try {
      for (const address of t.addresses) {
        const server = this.#createServer(t);
        fresh.set(address, server);
        bound = await server.listen(bound, address);
      }
    } catch (err) {
      for (const s of fresh.values()) s.close();
      throw err;
    }
    const old = [...t.servers.values()];
    t.servers = fresh;
    t.port = bound;
    for (const s of old) void this.#retire(s);
    this.#logger.info({ tenant: t.name, port: bound, addresses: t.addresses }, 'tenant listener bound');
    return bound;
  }

  #track(p: Promise<void>): Promise<void> {
    this.#draining.add(p);
    return p.finally(() => this.#draining.delete(p));
  }

  #originalDestination(socket: Socket | undefined): string | undefined {
    const resolver = this.#resolver;
    if (resolver === undefined || socket === undefined) return undefined;
    const cached = this.#destinations.get(socket);
    if (cached !== undefined) return cached ?? undefined;
    let dst: string | undefined;
    try {
      dst = resolver(socket);
    } catch (err) {
      this.#logger.warn({ err }, 'original destination resolver threw');
    }
    this.#destinations.set(socket, dst ?? null);
    return dst;
  }
}
