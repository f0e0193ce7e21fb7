// The proxy's Prometheus series. Counts the request path bumps on every request (requests by class,
// duration buckets, requests by route/service/code, in-flight) are plain numbers in TenantSeries,
// turned into Prometheus samples only when /metrics is scraped (custom collectors): no label hashing,
// no allocation per request. Rarer events (upstream errors, retries, refusals, rate-limit results)
// use prom-client counters with their label children resolved once.

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
/** Upper bounds (seconds) of isomesh_request_duration_seconds. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30] as const;

/** One tenant's series. */
export class TenantSeries {
  readonly tenant: string;
  /** Requests by status class; index Math.floor(status / 100), 0 = client gone before a response head. */
  readonly byClass = new Float64Array(CODE_CLASSES.length);
  /** Duration histogram: non-cumulative bucket counts (last = +Inf), sum, count. */
  readonly durationBuckets = new Float64Array(DURATION_BUCKETS.length + 1);
  durationSum = 0;
  durationCount = 0;
  /** route → service → status code → count. */
  readonly routes = new Map<string, Map<string, Map<number, number>>>();
  /** service → grpc-status → count. */
  readonly grpcStatuses = new Map<string, Map<number, number>>();
  /** In-flight requests (read at scrape). */
  inFlight = 0;
  readonly #rare: RareCounters;
  readonly #children = new Map<string, { inc(): void }>();

  constructor(tenant: string, rare: RareCounters) {
    this.tenant = tenant;
    this.#rare = rare;
  }

  /** One finished request. */
  finished(status: number, seconds: number, route: string, service: string): void {
    this.byClass[status >= 100 && status < 600 ? (status / 100) | 0 : 0]!++;
    let b = 0;
    while (b < DURATION_BUCKETS.length && seconds > DURATION_BUCKETS[b]!) b++;
    this.durationBuckets[b]!++;
    this.durationSum += seconds;
    this.durationCount++;
    let byService = this.routes.get(route);
    if (byService === undefined) this.routes.set(route, (byService = new Map()));
    let byCode = byService.get(service);
    if (byCode === undefined) byService.set(service, (byCode = new Map()));
    byCode.set(status, (byCode.get(status) ?? 0) + 1);
  }

  grpc(service: string, status: number): void {
    let byStatus = this.grpcStatuses.get(service);
    if (byStatus === undefined) this.grpcStatuses.set(service, (byStatus = new Map()));
    byStatus.set(status, (byStatus.get(status) ?? 0) + 1);
  }

  #child(key: string, make: () => { inc(): void }): { inc(): void } {
    let c = this.#children.get(key);
    if (c === undefined) {
      c = make();
      if (this.#children.size < 10_000) this.#children.set(key, c);
    }
    return c;
  }

  upstreamError(service: string, kind: UpstreamErrorKind): void {
    this.#child(`e\u0000${service}\u0000${kind}`, () => this.#rare.upstreamErrors.labels(this.tenant, service, kind)).inc();
  }

  rateLimit(name: string, result: 'ok' | 'over' | 'shadow_over'): void {
    this.#child(`l\u0000${name}\u0000${result}`, () => this.#rare.rateLimits.labels(this.tenant, name, result)).inc();
  }

  retry(service: string): void {
    this.#child(`t\u0000${service}`, () => this.#rare.retries.labels(this.tenant, service)).inc();
  }

  /** The circuit breaker refused a request (maxConnections × endpoints + maxPending in flight). */
  overflow(service: string): void {
    this.#child(`o\u0000${service}`, () => this.#rare.overflows.labels(this.tenant, service)).inc();
  }

  /** Connections refused by the tenant's or the node's connection cap. */
  connectionRefused(reason: 'tenant' | 'node'): void {
    this.#child(`c\u0000${reason}`, () => this.#rare.refused.labels(this.tenant, reason)).inc();
  }
}

interface RareCounters {
  upstreamErrors: prom.Counter<'tenant' | 'service' | 'kind'>;
  rateLimits: prom.Counter<'tenant' | 'ratelimit' | 'result'>;
  retries: prom.Counter<'tenant' | 'service'>;
  overflows: prom.Counter<'tenant' | 'service'>;
  refused: prom.Counter<'tenant' | 'reason'>;
}

type Sample = { value: number; labels: Record<string, string | number>; metricName?: string };

/** A metric whose samples are computed when scraped (prom-client's Registry calls get()). */
class ScrapeMetric {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  readonly aggregator = 'sum' as const;
  readonly #collect: () => Sample[];

  constructor(name: string, help: string, type: 'counter' | 'gauge' | 'histogram', collect: () => Sample[]) {
    this.name = name;
    this.help = help;
    this.type = type;
    this.#collect = collect;
  }

  get(): { name: string; help: string; type: string; aggregator: 'sum'; values: Sample[] } {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.#collect() };
  }

  reset(): void {}
}

function metric<T>(registry: prom.Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export class ProxyMetrics {
  readonly #rare: RareCounters;
  /** Every tenant's series, including removed tenants' (their counters stay, as Prometheus expects). */
  readonly #series = new Map<string, TenantSeries>();
  /** Set by the proxy: currently ejected endpoints per (tenant, service), read at scrape time. */
  ejections: () => Array<{ tenant: string; service: string; ejected: number }> = () => [];

  constructor(registry: prom.Registry) {
    const registers = [registry];
    const counter = <L extends string>(name: string, help: string, labelNames: readonly L[]): prom.Counter<L> =>
      metric(registry, name, () => new prom.Counter({ name, help, labelNames, registers }));
    this.#rare = {
      upstreamErrors: counter('isomesh_upstream_errors_total', 'Upstream failures seen by the built-in proxy (each attempt counts, retries included).', ['tenant', 'service', 'kind']),
      rateLimits: counter('isomesh_ratelimit_total', 'Requests counted by a tenant rate limit, by result (over = refused with 429; shadow_over = over a shadow limit, let through).', ['tenant', 'ratelimit', 'result']),
      retries: counter('isomesh_upstream_rq_retry_total', 'Upstream request retries (each retry after the first attempt).', ['tenant', 'service']),
      overflows: counter('isomesh_upstream_cx_overflow_total', 'Requests refused by the service circuit breaker (503 ISOMESH_ERR_PROXY_CIRCUIT_OPEN).', ['tenant', 'service']),
      refused: counter('isomesh_connections_refused_total', 'Client connections refused because the tenant (quota maxConnections) or the node was at its connection cap.', ['tenant', 'reason']),
    };
    const series = (): Iterable<TenantSeries> => this.#series.values();
    const scrape = (m: ScrapeMetric): void => {
      if (registry.getSingleMetric(m.name) === undefined) registry.registerMetric(m as unknown as prom.Metric);
    };
    scrape(new ScrapeMetric('isomesh_requests_total', 'Requests answered by the built-in proxy, by status class ("aborted": client left before a response).', 'counter', () => {
      const out: Sample[] = [];
      for (const s of series()) CODE_CLASSES.forEach((c, i) => out.push({ value: s.byClass[i]!, labels: { tenant: s.tenant, code_class: c } }));
      return out;
    }));
    scrape(new ScrapeMetric('isomesh_request_duration_seconds', 'Time from request head to the end of the response, built-in proxy.', 'histogram', () => {
      const out: Sample[] = [];
      for (const s of series()) {
        let cumulative = 0;
        for (let i = 0; i < DURATION_BUCKETS.length; i++) {
          cumulative += s.durationBuckets[i]!;
          out.push({ metricName: 'isomesh_request_duration_seconds_bucket', value: cumulative, labels: { tenant: s.tenant, le: DURATION_BUCKETS[i]! } });
        }
        out.push({ metricName: 'isomesh_request_duration_seconds_bucket', value: cumulative + s.durationBuckets[DURATION_BUCKETS.length]!, labels: { tenant: s.tenant, le: '+Inf' } });
        out.push({ metricName: 'isomesh_request_duration_seconds_sum', value: s.durationSum, labels: { tenant: s.tenant } });
        out.push({ metricName: 'isomesh_request_duration_seconds_count', value: s.durationCount, labels: { tenant: s.tenant } });
      }
      return out;
    }));
    scrape(new ScrapeMetric('isomesh_inflight_requests', 'Requests in flight on the tenant listener (built-in proxy).', 'gauge', () =>
      [...series()].filter((s) => this.#live.has(s.tenant)).map((s) => ({ value: s.inFlight, labels: { tenant: s.tenant } }))));
    scrape(new ScrapeMetric('isomesh_route_requests_total', 'Requests answered, by route (empty: no route matched), service and HTTP status code.', 'counter', () => {
      const out: Sample[] = [];
      for (const s of series()) {
        for (const [route, byService] of s.routes) {
          for (const [service, byCode] of byService) for (const [code, n] of byCode) out.push({ value: n, labels: { tenant: s.tenant, route, service, code } });
        }
      }
      return out;
    }));
    scrape(new ScrapeMetric('isomesh_grpc_requests_total', 'gRPC requests answered, by service and grpc-status.', 'counter', () => {
      const out: Sample[] = [];
      for (const s of series()) for (const [service, byStatus] of s.grpcStatuses) for (const [status, n] of byStatus) out.push({ value: n, labels: { tenant: s.tenant, service, grpc_status: status } });
      return out;
    }));
    scrape(new ScrapeMetric('isomesh_upstream_ejections_active', 'Endpoints currently ejected by outlier detection (consecutive5xx).', 'gauge', () =>
      this.ejections().map((e) => ({ value: e.ejected, labels: { tenant: e.tenant, service: e.service } }))));
  }

  /** Tenants with a live listener (their in-flight gauge is reported). */
  readonly #live = new Set<string>();

  tenant(tenant: string): TenantSeries {
    let s = this.#series.get(tenant);
    if (s === undefined) {
      s = new TenantSeries(tenant, this.#rare);
      this.#series.set(tenant, s);
    }
    this.#live.add(tenant);
    return s;
  }

  /** Drop a removed tenant's gauge so it does not report a stale in-flight value forever. */
  forget(tenant: string): void {
    this.#live.delete(tenant);
  }
}
