// The control plane's Prometheus series.

import prom from 'prom-client';

function metric<T extends prom.Metric>(registry: prom.Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

export class XdsMetrics {
  readonly #nacks: prom.Counter<'type_url'>;
  readonly #responses: prom.Counter<'type_url' | 'protocol'>;
  readonly #streams: prom.Gauge<'protocol'>;
  readonly #rejected: prom.Counter<'tenant'>;

  constructor(registry: prom.Registry) {
    const registers = [registry];
    this.#nacks = metric(registry, 'isomesh_xds_nack_total', () => new prom.Counter({
      name: 'isomesh_xds_nack_total',
      help: 'xDS responses a client rejected (NACK), by resource type.',
      labelNames: ['type_url'] as const,
      registers,
    }));
    this.#responses = metric(registry, 'isomesh_xds_responses_total', () => new prom.Counter({
      name: 'isomesh_xds_responses_total',
      help: 'xDS responses sent, by resource type and protocol (sotw or delta).',
      labelNames: ['type_url', 'protocol'] as const,
      registers,
    }));
    this.#streams = metric(registry, 'isomesh_xds_streams', () => new prom.Gauge({
      name: 'isomesh_xds_streams',
      help: 'Open, authorized ADS streams.',
      labelNames: ['protocol'] as const,
      registers,
    }));
    this.#rejected = metric(registry, 'isomesh_xds_rejected_configs_total', () => new prom.Counter({
      name: 'isomesh_xds_rejected_configs_total',
      help: 'Tenant configurations the translator or validator refused (the last good resources stay served).',
      labelNames: ['tenant'] as const,
      registers,
    }));
  }

  nack(typeUrl: string): void {
    this.#nacks.inc({ type_url: typeUrl });
  }

  response(typeUrl: string, protocol: 'sotw' | 'delta'): void {
    this.#responses.inc({ type_url: typeUrl, protocol });
  }

  stream(protocol: 'sotw' | 'delta', delta: 1 | -1): void {
    this.#streams.inc({ protocol }, delta);
  }

  rejected(tenant: string): void {
    this.#rejected.inc({ tenant });
  }
}
