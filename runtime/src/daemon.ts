// The daemon: opens the store, starts the plugin host, the built-in proxy, the eBPF datapath (when the
// node allows it), the gRPC server (xDS and friends) and the management API, and keeps the data plane
// in step with the store: every committed change becomes a new TenantConfig snapshot applied to the
// host and the proxy (or, with ISOMESH_DATAPLANE=envoy, to xDS for a supervised Envoy).
import fs from 'node:fs';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { Registry, collectDefaultMetrics } from 'prom-client';
import { resolveAdminToken } from './admin-token.ts';
import os from 'node:os';
import { buildAdminServer, type NodeInfo } from './admin/index.ts';
import type { DaemonConfig } from './config.ts';
import { NodeDatapath } from './datapath/index.ts';
import { EnvoyListenerPorts, EnvoySupervisor } from './envoy/index.ts';
import { NodeLedger, PluginHost, RateLimitCounters, SharedRateLimitCounters, type RateLimitStore } from './host/index.ts';
import { defaultMaxConnections, ProxyServer, WorkerPool, type DataPlane } from './proxy/index.ts';
import { AggregatorRegistry } from 'prom-client';
import { Telemetry } from './telemetry/index.ts';
import { Store } from './store/index.ts';
import type { RateLimit, TenantConfig } from './store/model.ts';
import { ExtProcServer, GrpcServer, RateLimitService, XdsControlPlane } from './xds/index.ts';

/** How often the event-loop lag metric samples the loop (isomesh_process_eventloop_lag_*). */
const EVENT_LOOP_SAMPLE_MS = 100;

export class Daemon {
  readonly config: DaemonConfig;
  readonly logger: pino.Logger;
  readonly registry: Registry;
  readonly store: Store;
  readonly host: PluginHost;
  /** The built-in data plane: this thread's ProxyServer, or ISOMESH_WORKERS worker threads. */
  readonly proxy: DataPlane;
  /** Shared admission/connection/rate-limit counts when there are several workers. */
  readonly ledger: NodeLedger | undefined;
  readonly telemetry: Telemetry;
  readonly adminToken: string;
  /** ADS, ext_proc and RLS on ISOMESH_GRPC_ADDR and <stateDir>/grpc.sock; more services via addService(). */
  readonly grpc: GrpcServer;
  /** Serves the tenants to Envoy and proxyless gRPC clients over ADS (both data-plane modes). */
  readonly xds: XdsControlPlane;
  /** Rate-limit counters of the node: the built-in proxy and the rate-limit service count in these. */
  readonly rateLimits: RateLimitStore;
  /** Envoy's ext_proc stream per request, run through `host` (both data-plane modes). */
  readonly extProc: ExtProcServer;
  /** Envoy mode only. */
  readonly envoy: EnvoySupervisor | undefined;
  /** Each tenant's rate limits as last applied (the rate-limit service reads these, not the database). */
  readonly #tenantRateLimits = new Map<string, readonly RateLimit[]>();
  #admin: FastifyInstance | undefined;
  #datapath: NodeDatapath | undefined;
  #ready = false;
  /** Per-tenant queue so snapshots of one tenant are applied in commit order. */
  #applying = new Map<string, Promise<void>>();

  private constructor(config: DaemonConfig, logger: pino.Logger, store: Store, adminToken: string) {
    this.config = config;
    this.logger = logger;
    this.registry = new Registry();
    // The event-loop lag histogram samples with a timer: prom-client's default (every 10 ms) woke an
    // idle daemon 100 times a second, 2.4 ms of CPU a second for nothing.
    collectDefaultMetrics({ register: this.registry, prefix: 'isomesh_process_', eventLoopMonitoringPrecision: EVENT_LOOP_SAMPLE_MS });
    this.store = store;
    this.adminToken = adminToken;
    // Access lines go through the root logger (no component binding); spans over OTLP when OTEL_* say so.
    this.telemetry = Telemetry.fromEnv(process.env, logger, { registry: this.registry });
    // Several workers (and Envoy mode keeps one): node-wide counts live in shared memory.
    const workers = config.dataplane === 'envoy' ? 1 : config.workers;
    this.ledger = workers > 1 ? new NodeLedger() : undefined;
    this.rateLimits = this.ledger !== undefined ? new SharedRateLimitCounters(this.ledger) : new RateLimitCounters();
    this.host = new PluginHost({
      logger: logger.child({ component: 'host' }),
      registry: this.registry,
      // ctx.fetch goes through the built-in proxy's path (the proxy is created just below).
      fetch: (tenant, req) => this.proxy.fetch(tenant, req),
      ...(this.ledger !== undefined ? { ledger: this.ledger } : {}),
    });
    this.proxy = this.ledger !== undefined
      ? new WorkerPool({
          count: workers,
          host: this.host,
          ledger: this.ledger,
          logger: logger.child({ component: 'workers' }),
          listenAddress: config.listenAddress,
          timeouts: config.timeouts,
          maxConnections: config.maxConnections ?? defaultMaxConnections(),
          logLevel: config.logLevel,
        })
      : new ProxyServer({
          host: this.host,
          logger: logger.child({ component: 'proxy' }),
          registry: this.registry,
          listenAddress: config.listenAddress,
          timeouts: config.timeouts,
          telemetry: this.telemetry,
          rateLimits: this.rateLimits,
          ...(config.maxConnections !== undefined ? { maxConnections: config.maxConnections } : {}),
        });
    this.grpc = new GrpcServer({
      tcp: config.grpc,
      socketPath: path.join(config.stateDir, 'grpc.sock'),
      store,
      adminToken,
      logger: logger.child({ component: 'grpc' }),
    });
    this.xds = new XdsControlPlane({
      grpc: this.grpc,
      logger: logger.child({ component: 'xds' }),
      registry: this.registry,
      listenAddresses: (tenant) => this.#listenAddresses(tenant),
    });
    this.extProc = new ExtProcServer({ host: this.host, protos: this.xds.protos, logger: logger.child({ component: 'ext_proc' }) });
    this.extProc.register(this.grpc);
    new RateLimitService({
      protos: this.xds.protos,
      counters: this.rateLimits,
      rateLimits: (tenant) => this.#tenantRateLimits.get(tenant),
      registry: this.registry,
      logger: logger.child({ component: 'rls' }),
    }).register(this.grpc);
    this.envoy = config.dataplane === 'envoy'
      ? new EnvoySupervisor({
          stateDir: config.stateDir,
          socketPath: this.grpc.socketPath,
          adminPort: config.envoyAdminPort,
          nodeId: `isomesh-${os.hostname()}`,
          ...(config.envoyBin !== undefined ? { bin: config.envoyBin } : {}),
          logger: logger.child({ component: 'envoy' }),
        })
      : undefined;
  }

  /** GET /v1/node. */
  #node(): NodeInfo {
    // One data-plane process: this one (builtin), or the supervised Envoy.
    if (this.envoy === undefined) {
      const info: NodeInfo = { workers: this.proxy.workers, dataplane: { mode: 'builtin' } };
      if (this.proxy instanceof WorkerPool) info.workerStatus = this.proxy.workerStatus();
      return info;
    }
    return { workers: 1, dataplane: { mode: 'envoy', envoy: this.envoy.status() } };
  }

  /** Where a tenant's listener accepts: the node's listen address, then its workloads' proxy addresses. */
  #listenAddresses(tenant: string): string[] {
    const out = new Set([this.config.listenAddress]);
    for (const w of this.store.listWorkloads(tenant)) out.add(w.proxyAddress);
    return [...out];
  }

  static async start(config: DaemonConfig, logger?: pino.Logger): Promise<Daemon> {
    const log = logger ?? pino({ level: config.logLevel, base: { svc: 'isomesh', pid: process.pid } });
    fs.mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
    const { token, generated } = resolveAdminToken(config.stateDir, config.adminToken);
    if (generated) {
      // Printed once, at first start; it stays readable (0600) in the state dir.
      process.stderr.write(`isomesh: generated admin token (stored in ${config.stateDir}/admin-token): ${token}\n`);
    }
    const store = Store.open({ dir: config.stateDir, listenerPorts: config.listenerPorts });
    const daemon = new Daemon(config, log, store, token);
    try {
      await daemon.#boot();
    } catch (err) {
      await daemon.stop().catch(() => {});
      throw err;
    }
    return daemon;
  }

  get ready(): boolean {
    return this.#ready;
  }

  get adminAddress(): { host: string; port: number } {
    const addr = this.#admin?.server.address();
    if (!addr || typeof addr === 'string') return this.config.admin;
    return { host: addr.address, port: addr.port };
  }

  /** The eBPF datapath (possibly unavailable, with its reason); set once boot opened it. */
  get datapath(): NodeDatapath | undefined {
    return this.#datapath;
  }

  /** /metrics: this thread's registry, plus the data-plane workers' when there are several. */
  async #metricsText(): Promise<string> {
    if (!(this.proxy instanceof WorkerPool)) return this.registry.metrics();
    const parts = [await this.registry.getMetricsAsJSON(), ...(await this.proxy.metrics())];
    return AggregatorRegistry.aggregate(parts as Parameters<typeof AggregatorRegistry.aggregate>[0]).metrics();
  }

  async #boot(): Promise<void> {
    if (this.proxy instanceof WorkerPool) await this.proxy.ready();
    // The datapath opens first (re-adopting pins from a previous run), so the snapshots below fill
    // its VIP map, and stored workloads are re-attached once their tenants' listeners are bound.
    this.#datapath = await NodeDatapath.start({
      mode: this.config.datapath,
      pinDir: this.config.bpfPinDir,
      ...(this.config.proxyCgroup ? { proxyCgroup: this.config.proxyCgroup } : {}),
      listenAddress: this.config.listenAddress,
      proxy: this.proxy,
      logger: this.logger.child({ component: 'datapath' }),
      registry: this.registry,
    });
    for (const name of this.store.tenantNames()) await this.#apply(name);
    await this.#datapath.reconcile(this.store.tenantNames(), this.store.listWorkloads());
    this.store.onChange((tenant) => {
      void this.#enqueue(tenant);
    });
    await this.grpc.start();
    // Envoy connects to the gRPC socket for ADS: it starts once xDS is served.
    this.envoy?.start();
    this.#admin = await buildAdminServer({
      store: this.store,
      host: this.host,
      // Envoy mode: Envoy binds the tenant ports; the API only checks a port is free.
      proxy: this.envoy === undefined ? this.proxy : new EnvoyListenerPorts({ listenAddress: this.config.listenAddress, portOf: (t) => this.store.getTenant(t)?.listenerPort }),
      registry: this.registry,
      logger: this.logger.child({ component: 'admin' }),
      adminToken: this.adminToken,
      listenerPorts: this.config.listenerPorts,
      ready: () => this.#ready,
      datapath: this.#datapath,
      node: () => this.#node(),
      metrics: () => this.#metricsText(),
      restartWorker: async (index) => (this.proxy instanceof WorkerPool ? this.proxy.restartWorker(index) : false),
      xds: () => this.xds.status(),
    });
    await this.#admin.listen({ host: this.config.admin.host, port: this.config.admin.port });
    this.#ready = true;
    const a = this.adminAddress;
    this.logger.info({ admin: `${a.host}:${a.port}`, tenants: this.store.tenantNames().length }, 'isomesh ready');
  }

  #enqueue(tenant: string): Promise<void> {
    const prev = this.#applying.get(tenant) ?? Promise.resolve();
    const next = prev.then(() => this.#apply(tenant));
    this.#applying.set(tenant, next);
    void next.finally(() => {
      if (this.#applying.get(tenant) === next) this.#applying.delete(tenant);
    });
    return next;
  }

  async #apply(tenant: string): Promise<void> {
    try {
      const cfg = this.store.tenantConfig(tenant);
      this.#applyXds(tenant, cfg);
      if (cfg) this.#tenantRateLimits.set(tenant, cfg.rateLimits);
      else this.#tenantRateLimits.delete(tenant);
      if (!cfg) {
        this.#datapath?.syncTenant(tenant, undefined);
        this.host.removeTenant(tenant);
        await this.proxy.removeTenant(tenant);
        return;
      }
      this.host.configure(cfg);
      // Envoy mode: Envoy serves the tenant's listener (from xDS); the eBPF datapath redirects VIPs to
      // the same ports either way.
      if (this.envoy === undefined) await this.proxy.configure(cfg);
      this.#datapath?.syncTenant(tenant, cfg);
    } catch (err) {
      // A snapshot that cannot be applied leaves the previous one serving; the error is visible in logs.
      this.logger.error({ err, tenant }, 'failed to apply tenant configuration');
    }
  }

  /** xDS is kept apart: a config the translator refuses must not stop the built-in proxy, nor the reverse. */
  #applyXds(tenant: string, cfg: TenantConfig | undefined): void {
    try {
      if (cfg) this.xds.apply(cfg);
      else this.xds.remove(tenant);
    } catch (err) {
      this.logger.error({ err, tenant }, 'failed to apply tenant configuration to xDS');
    }
  }

  async stop(): Promise<void> {
    this.#ready = false;
    await this.#admin?.close();
    // Envoy drains first, while xDS, ext_proc and RLS still answer its in-flight requests.
    await this.envoy?.stop();
    this.xds.close();
    this.extProc.closeAll();
    await this.grpc.stop();
    await Promise.allSettled([...this.#applying.values()]);
    await this.proxy.close();
    // By default pins stay: redirection of new connections resumes as soon as the next run's
    // listener is up. ISOMESH_DATAPATH_ON_STOP=detach leaves nothing behind (a demo, an uninstall).
    await this.#datapath?.close({ detach: this.config.datapathOnStop === 'detach' });
    await this.host.close();
    await this.telemetry.shutdown();
    this.store.close();
  }
}
