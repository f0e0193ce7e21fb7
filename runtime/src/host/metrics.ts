// Prometheus series of the plugin host. Label children are cached by the caller (per plugin
// version) so the hot path does not hash label sets on every call.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export class HostMetrics {
  readonly invocations: Counter<'tenant' | 'plugin' | 'version' | 'outcome'>;
  readonly cpuSeconds: Counter<'tenant' | 'plugin'>;
  readonly duration: Histogram<'tenant' | 'plugin'>;
  readonly restarts: Counter<'tenant'>;
  readonly rejections: Counter<'tenant' | 'reason'>;
  readonly cordonCrashes: Counter<'cordon'>;
  readonly cordonRestarts: Counter<'cordon'>;
  readonly cordonBlamed: Counter<'tenant'>;
  readonly quarantined: Gauge<'tenant'>;
  readonly memoryBytes: Gauge<'tenant'>;
  readonly cpuMsPerSecond: Gauge<'tenant'>;
  readonly placement: Gauge<'tenant' | 'cordon' | 'pid'>;

  /** `sample` reports per-tenant gauges at scrape time. */
  constructor(registry: Registry, sample: () => Array<{ tenant: string; memoryBytes: number; cpuMsPerSecond: number; cordon?: string; pid?: number | null }> = () => []) {
    const registers = [registry];
    this.invocations = new Counter({
      name: 'isomesh_plugin_invocations_total',
      help: 'Plugin hook invocations by outcome (ok, respond, threw, timeout, memory, crashed, bad_result, unavailable).',
      labelNames: ['tenant', 'plugin', 'version', 'outcome'],
      registers,
    });
    this.cpuSeconds = new Counter({
      name: 'isomesh_plugin_cpu_seconds_total',
      help: 'CPU time spent in plugin hooks, measured in the tenant isolate.',
      labelNames: ['tenant', 'plugin'],
      registers,
    });
    this.duration = new Histogram({
      name: 'isomesh_plugin_duration_seconds',
      help: 'Wall time of one plugin hook call, including the isolate boundary.',
      labelNames: ['tenant', 'plugin'],
      buckets: [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25],
      registers,
    });
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
