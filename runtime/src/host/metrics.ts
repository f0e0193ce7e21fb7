// Prometheus series of the plugin host. Label children are cached by the caller (per plugin
// version) so the hot path does not hash label sets on every call.

import { Counter, Histogram, type Registry } from 'prom-client';

export class HostMetrics {
  readonly invocations: Counter<'tenant' | 'plugin' | 'version' | 'outcome'>;
  readonly cpuSeconds: Counter<'tenant' | 'plugin'>;
  readonly duration: Histogram<'tenant' | 'plugin'>;
  readonly restarts: Counter<'tenant'>;
  readonly rejections: Counter<'tenant' | 'reason'>;

  constructor(registry: Registry) {
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
      help: 'Requests refused by tenant admission (rps, concurrency, cpu).',
      labelNames: ['tenant', 'reason'],
      registers,
    });
  }
}
