// Prometheus series of the plugin host. The per-call families (invocations, CPU, duration) are
// plain numbers the hot path adds to — a series object resolved once per plugin version, no label
// hashing or allocation per call (prom-client's labels().inc() hashes the label set on every call) —
// exposed as custom collectors that prom-client reads at scrape time.

import { Counter, Gauge, type Registry } from 'prom-client';

/** Seconds buckets of isomesh_plugin_duration_seconds. */
export const DURATION_BUCKETS = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25];

export interface CounterSeries {
  value: number;
}

export interface HistogramSeries {
  /** Observations per bucket (not cumulative); the last is +Inf. */
  buckets: Float64Array;
  sum: number;
  count: number;
}

type Labels = Record<string, string>;

/** A counter family whose series live as long as the host (like prom-client's children). */
export class CounterFamily<L extends string> {
  readonly #series = new Map<string, { labels: Labels; s: CounterSeries }>();

  constructor(registry: Registry, name: string, help: string) {
    registry.registerMetric({
      name,
      help,
      type: 'counter',
      aggregator: 'sum',
      get: async () => ({ name, help, type: 'counter', aggregator: 'sum', values: [...this.#series.values()].map((x) => ({ labels: x.labels, value: x.s.value })) }),
      reset: () => this.#series.clear(),
    } as never);
  }

  /** The series of a label set: resolve once, then add to `.value`. */
  series(labels: Record<L, string>): CounterSeries {
    const key = JSON.stringify(Object.values(labels));
    let x = this.#series.get(key);
    if (x === undefined) {
      x = { labels: { ...labels }, s: { value: 0 } };
      this.#series.set(key, x);
    }
    return x.s;
  }
}

export class HistogramFamily<L extends string> {
  readonly #series = new Map<string, { labels: Labels; s: HistogramSeries }>();
  readonly #bounds: readonly number[];

  constructor(registry: Registry, name: string, help: string, bounds: readonly number[]) {
    this.#bounds = bounds;
    registry.registerMetric({
      name,
      help,
      type: 'histogram',
      aggregator: 'sum',
      get: async () => {
        const values: Array<{ metricName: string; labels: Record<string, string | number>; value: number }> = [];
        for (const { labels, s } of this.#series.values()) {
          let cumulative = 0;
          for (let i = 0; i <= bounds.length; i++) {
            cumulative += s.buckets[i] as number;
            values.push({ metricName: `${name}_bucket`, labels: { ...labels, le: i < bounds.length ? (bounds[i] as number) : '+Inf' }, value: cumulative });
          }
          values.push({ metricName: `${name}_sum`, labels, value: s.sum });
          values.push({ metricName: `${name}_count`, labels, value: s.count });
        }
        return { name, help, type: 'histogram', aggregator: 'sum', values };
      },
      reset: () => this.#series.clear(),
    } as never);
  }

  series(labels: Record<L, string>): HistogramSeries {
    const key = JSON.stringify(Object.values(labels));
    let x = this.#series.get(key);
    if (x === undefined) {
      x = { labels: { ...labels }, s: { buckets: new Float64Array(this.#bounds.length + 1), sum: 0, count: 0 } };
      this.#series.set(key, x);
    }
    return x.s;
  }

  observe(s: HistogramSeries, value: number): void {
    const b = this.#bounds;
    let i = 0;
    while (i < b.length && value > (b[i] as number)) i++;
    s.buckets[i] = (s.buckets[i] as number) + 1;
    s.sum += value;
    s.count++;
  }
}

export class HostMetrics {
  readonly invocations: CounterFamily<'tenant' | 'plugin' | 'version' | 'outcome'>;
  readonly cpuSeconds: CounterFamily<'tenant' | 'plugin'>;
  readonly duration: HistogramFamily<'tenant' | 'plugin'>;
  readonly restarts: Counter<'tenant'>;
  readonly rejections: Counter<'tenant' | 'reason'>;
  readonly cordonCrashes: Counter<'cordon'>;
  readonly cordonRestarts: Counter<'cordon'>;
  readonly cordonBlamed: Counter<'tenant'>;
  readonly quarantined: Gauge<'tenant'>;
  readonly confined: Gauge<'tenant'>;
  readonly memoryBytes: Gauge<'tenant'>;
  readonly cpuMsPerSecond: Gauge<'tenant'>;
  readonly placement: Gauge<'tenant' | 'cordon' | 'pid'>;

  /** `sample` reports per-tenant gauges at scrape time. */
  constructor(registry: Registry, sample: () => Array<{ tenant: string; memoryBytes: number; cpuMsPerSecond: number; cordon?: string; pid?: number | null }> = () => []) {
    const registers = [registry];
    this.invocations = new CounterFamily(registry, 'isomesh_plugin_invocations_total', 'Plugin hook invocations by outcome (ok, respond, threw, timeout, memory, crashed, bad_result, unavailable).');
    this.cpuSeconds = new CounterFamily(registry, 'isomesh_plugin_cpu_seconds_total', 'CPU time spent in plugin hooks, measured in the tenant isolate.');
    this.duration = new HistogramFamily(registry, 'isomesh_plugin_duration_seconds', 'Wall time of one plugin hook call, including the isolate boundary.', DURATION_BUCKETS);
    this.restarts = new Counter({
      name: 'isomesh_isolate_restarts_total',
      help: 'Tenant isolates rebuilt after a crash or memory-limit disposal.',
      labelNames: ['tenant'],
      registers,
    });
    this.rejections = new Counter({
      name: 'isomesh_quota_rejections_total',
      help: 'Requests refused by tenant admission (rps, concurrency, cpu) or shed by a full plugin call queue (queue).',
      labelNames: ['tenant', 'reason'],
      registers,
    });
    this.cordonCrashes = new Counter({
      name: 'isomesh_cordon_crashes_total',
      help: 'Cordon (plugin worker) processes that died: crash, abort, OOM kill, signal.',
      labelNames: ['cordon'],
      registers,
    });
    this.cordonRestarts = new Counter({
      name: 'isomesh_cordon_restarts_total',
      help: 'Cordon processes restarted by the supervisor.',
      labelNames: ['cordon'],
      registers,
    });
    this.cordonBlamed = new Counter({
      name: 'isomesh_cordon_crashes_blamed_total',
      help: 'Cordon deaths attributed to the tenant whose plugin call was running.',
      labelNames: ['tenant'],
      registers,
    });
    this.quarantined = new Gauge({
      name: 'isomesh_tenant_quarantined',
      help: '1 when the tenant runs in a quarantine cordon of its own after repeated cordon crashes.',
      labelNames: ['tenant'],
      registers,
    });
    this.confined = new Gauge({
      name: 'isomesh_tenant_confined',
      help: '1 while the tenant runs in a cordon of its own because it is held to its CPU quota.',
      labelNames: ['tenant'],
      registers,
    });
    this.memoryBytes = new Gauge({
      name: 'isomesh_tenant_isolate_heap_bytes',
      help: 'Heap used by the tenant isolate (last report from its cordon).',
      labelNames: ['tenant'],
      registers,
      collect() {
        this.reset();
        for (const s of sample()) this.set({ tenant: s.tenant }, s.memoryBytes);
      },
    });
    this.cpuMsPerSecond = new Gauge({
      name: 'isomesh_tenant_cpu_ms_per_second',
      help: 'Plugin CPU of the tenant over the last second (compare with quota cpuMsPerSecond).',
      labelNames: ['tenant'],
      registers,
      collect() {
        this.reset();
        for (const s of sample()) this.set({ tenant: s.tenant }, s.cpuMsPerSecond);
      },
    });
    this.placement = new Gauge({
      name: 'isomesh_tenant_cordon_info',
      help: 'The cordon process running the tenant isolate (value 1; labels cordon and pid).',
      labelNames: ['tenant', 'cordon', 'pid'],
      registers,
      collect() {
        this.reset();
        for (const s of sample()) if (s.cordon !== undefined) this.set({ tenant: s.tenant, cordon: s.cordon, pid: String(s.pid ?? '') }, 1);
      },
    });
  }
}
