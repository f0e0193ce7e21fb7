// The proxy's Prometheus series. Label children are resolved once per tenant (TenantSeries) so the
// request path never hashes label sets.

import prom from 'prom-client';

export type UpstreamErrorKind =
  | 'refused'
  | 'connect_failure'
  | 'connect_timeout'
  | 'reset'
  | 'timeout'
  | 'no_endpoint'
  | 'overflow'
  | 'unknown_service';

const CODE_CLASSES = ['aborted', '1xx', '2xx', '3xx', '4xx', '5xx'] as const;

export interface TenantSeries {
  inFlight: { inc(): void; dec(): void };
  duration: { observe(seconds: number): void };
  /** Index by Math.floor(status / 100) (1..5); 0 = the client went away before a response head. */
  byClass: Array<{ inc(): void }>;
  upstreamError(service: string, kind: UpstreamErrorKind): void;
  rateLimit(name: string, result: 'ok' | 'over' | 'shadow_over'): void;
  /** One finished request: by route (""' when none matched), service and status code. */
  routeRequest(route: string, service: string, code: number): void;
  retry(service: string): void;
  /** The circuit breaker refused a request (maxConnections × endpoints + maxPending in flight). */
  overflow(service: string): void;
  grpc(service: string, status: number): void;
  /** Connections refused by the tenant's or the node's connection cap. */
  connectionRefused(reason: 'tenant' | 'node'): void;
}

function metric<T extends prom.Metric>(registry: prom.Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export class ProxyMetrics {
  readonly #requests: prom.Counter<'tenant' | 'code_class'>;
  readonly #duration: prom.Histogram<'tenant'>;
  readonly #upstreamErrors: prom.Counter<'tenant' | 'service' | 'kind'>;
  readonly #inFlight: prom.Gauge<'tenant'>;
  readonly #rateLimits: prom.Counter<'tenant' | 'ratelimit' | 'result'>;
  readonly #refused: prom.Counter<'tenant' | 'reason'>;
  readonly #routes: prom.Counter<'tenant' | 'route' | 'service' | 'code'>;
  readonly #retries: prom.Counter<'tenant' | 'service'>;
  readonly #overflows: prom.Counter<'tenant' | 'service'>;
  readonly #grpc: prom.Counter<'tenant' | 'service' | 'grpc_status'>;
  /** Set by the proxy: currently ejected endpoints per (tenant, service), read at scrape time. */
  ejections: () => Array<{ tenant: string; service: string; ejected: number }> = () => [];

  constructor(registry: prom.Registry) {
    const registers = [registry];
    this.#requests = metric(registry, 'isomesh_requests_total', () => new prom.Counter({
      name: 'isomesh_requests_total',
      help: 'Requests answered by the built-in proxy, by status class ("aborted": client left before a response).',
      labelNames: ['tenant', 'code_class'] as const,
      registers,
    }));
    this.#duration = metric(registry, 'isomesh_request_duration_seconds', () => new prom.Histogram({
      name: 'isomesh_request_duration_seconds',
      help: 'Time from request head to the end of the response, built-in proxy.',
      labelNames: ['tenant'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    }));
    this.#upstreamErrors = metric(registry, 'isomesh_upstream_errors_total', () => new prom.Counter({
      name: 'isomesh_upstream_errors_total',
      help: 'Upstream failures seen by the built-in proxy (each attempt counts, retries included).',
      labelNames: ['tenant', 'service', 'kind'] as const,
      registers,
    }));
    this.#inFlight = metric(registry, 'isomesh_inflight_requests', () => new prom.Gauge({
      name: 'isomesh_inflight_requests',
      help: 'Requests in flight on the tenant listener (built-in proxy).',
      labelNames: ['tenant'] as const,
      registers,
    }));
    this.#rateLimits = metric(registry, 'isomesh_ratelimit_total', () => new prom.Counter({
      name: 'isomesh_ratelimit_total',
      help: 'Requests counted by a tenant rate limit, by result (over = refused with 429; shadow_over = over a shadow limit, let through).',
      labelNames: ['tenant', 'ratelimit', 'result'] as const,
      registers,
    }));
    this.#routes = metric(registry, 'isomesh_route_requests_total', () => new prom.Counter({
      name: 'isomesh_route_requests_total',
      help: 'Requests answered, by route (empty: no route matched), service and HTTP status code.',
      labelNames: ['tenant', 'route', 'service', 'code'] as const,
      registers,
    }));
    this.#retries = metric(registry, 'isomesh_upstream_rq_retry_total', () => new prom.Counter({
      name: 'isomesh_upstream_rq_retry_total',
      help: 'Upstream request retries (each retry after the first attempt).',
      labelNames: ['tenant', 'service'] as const,
      registers,
    }));
    this.#overflows = metric(registry, 'isomesh_upstream_cx_overflow_total', () => new prom.Counter({
      name: 'isomesh_upstream_cx_overflow_total',
      help: 'Requests refused by the service circuit breaker (503 ISOMESH_ERR_PROXY_CIRCUIT_OPEN).',
      labelNames: ['tenant', 'service'] as const,
      registers,
    }));
    this.#grpc = metric(registry, 'isomesh_grpc_requests_total', () => new prom.Counter({
      name: 'isomesh_grpc_requests_total',
      help: 'gRPC requests answered, by service and grpc-status.',
      labelNames: ['tenant', 'service', 'grpc_status'] as const,
      registers,
    }));
    const self = this;
    metric(registry, 'isomesh_upstream_ejections_active', () => new prom.Gauge({
      name: 'isomesh_upstream_ejections_active',
      help: 'Endpoints currently ejected by outlier detection (consecutive5xx).',
      labelNames: ['tenant', 'service'] as const,
      registers,
      collect() {
        this.reset();
        for (const e of self.ejections()) this.labels(e.tenant, e.service).set(e.ejected);
      },
    }));
    this.#refused = metric(registry, 'isomesh_connections_refused_total', () => new prom.Counter({
      name: 'isomesh_connections_refused_total',
      help: "Client connections refused because the tenant (quota maxConnections) or the node was at its connection cap.",
      labelNames: ['tenant', 'reason'] as const,
      registers,
    }));
  }

  tenant(tenant: string): TenantSeries {
    const errors = this.#upstreamErrors;
    const routes = this.#routes;
    const retries = this.#retries;
    const overflows = this.#overflows;
    const grpc = this.#grpc;
    // Label children resolved once per distinct label set of the tenant (no hashing per request).
    const children = new Map<string, { inc(): void }>();
    const child = (key: string, make: () => { inc(): void }): { inc(): void } => {
      let c = children.get(key);
      if (c === undefined) {
        c = make();
        if (children.size < 10_000) children.set(key, c);
      }
      return c;
    };
    const rateLimits = this.#rateLimits;
    const refused = this.#refused;
    return {
      inFlight: this.#inFlight.labels(tenant),
      duration: this.#duration.labels(tenant),
      byClass: CODE_CLASSES.map((c) => this.#requests.labels(tenant, c)),
      upstreamError(service, kind) {
        errors.labels(tenant, service, kind).inc();
      },
      rateLimit(name, result) {
        rateLimits.labels(tenant, name, result).inc();
      },
      connectionRefused(reason) {
        refused.labels(tenant, reason).inc();
      },
      routeRequest(route, service, code) {
        child(`r\u0000${route}\u0000${service}\u0000${code}`, () => routes.labels(tenant, route, service, String(code))).inc();
      },
      retry(service) {
        child(`t\u0000${service}`, () => retries.labels(tenant, service)).inc();
      },
      overflow(service) {
        child(`o\u0000${service}`, () => overflows.labels(tenant, service)).inc();
      },
      grpc(service, status) {
        child(`g\u0000${service}\u0000${status}`, () => grpc.labels(tenant, service, String(status))).inc();
      },
    };
  }

  /** Drop a removed tenant's gauge so it does not report a stale in-flight value forever. */
  forget(tenant: string): void {
    this.#inFlight.remove(tenant);
  }
}
