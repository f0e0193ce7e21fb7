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
    this.#refused = metric(registry, 'isomesh_connections_refused_total', () => new prom.Counter({
      name: 'isomesh_connections_refused_total',
      help: "Client connections refused because the tenant (quota maxConnections) or the node was at its connection cap.",
      labelNames: ['tenant', 'reason'] as const,
      registers,
    }));
  }

  tenant(tenant: string): TenantSeries {
    const errors = this.#upstreamErrors;
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
    };
  }

  /** Drop a removed tenant's gauge so it does not report a stale in-flight value forever. */
  forget(tenant: string): void {
    this.#inFlight.remove(tenant);
  }
}
