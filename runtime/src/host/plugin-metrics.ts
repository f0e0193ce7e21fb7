// Metrics that tenants' plugins record (ctx.metrics), exported at /metrics. The guest collects a
// call's updates and hands them back with its result; the host validates and applies them here.
//
// Naming, so that no tenant can block or corrupt another's series: a counter `x` is the family
// `isomesh_plugin_x_total` (`x_total` keeps its name), a histogram `x` is `isomesh_plugin_x` and may
// not end in _total/_bucket/_sum/_count — so a counter family and a histogram family never share a
// name or a sample name, whichever tenant comes first. Each family is one custom collector on the
// Registry whose series carry `tenant` and `plugin`; label names may differ between tenants (the text
// format allows it), and within a tenant a family keeps the label names it was first used with.
// Budget: 1,000 series per tenant; anything refused is counted in
// isomesh_plugin_metrics_dropped_total{tenant,plugin}.

import { Counter, type Registry } from 'prom-client';
import type { GuestMetricOp } from './validate.ts';

export const PLUGIN_METRIC_LIMITS = Object.freeze({ seriesPerTenant: 1000, labels: 5, labelValueChars: 128 });
/** prom-client's default buckets. */
const BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]{0,63}$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]{0,63}$/;
const RESERVED_LABELS = new Set(['tenant', 'plugin', 'le', 'quantile']);
const HISTOGRAM_SUFFIX = /_(total|bucket|sum|count)$/;
/** The host's own plugin families (registered by HostMetrics / here). */
const RESERVED = new Set(['isomesh_plugin_invocations_total', 'isomesh_plugin_cpu_seconds_total', 'isomesh_plugin_duration_seconds', 'isomesh_plugin_metrics_dropped_total']);

type Kind = 'counter' | 'histogram';

interface Series {
  tenant: string;
  labels: Record<string, string>;
  value: number;
  /** Histogram: cumulative counts per bucket (last = +Inf), and the sum. */
  buckets?: number[];
  sum?: number;
}

interface Family {
  name: string;
  kind: Kind;
  series: Map<string, Series>;
}

interface TenantBook {
  /** Family name → its label names (sorted, joined) for this tenant. */
  shapes: Map<string, string>;
  series: number;
}

export class PluginMetrics {
  readonly #registry: Registry;
  readonly #families = new Map<string, Family>();
  readonly #tenants = new Map<string, TenantBook>();
  readonly #dropped: Counter<'tenant' | 'plugin'>;
  /** Plugins of each tenant with a dropped-updates series (to remove them with the tenant). */
  readonly #droppedBy = new Map<string, Set<string>>();

  constructor(registry: Registry) {
    this.#registry = registry;
    this.#dropped = new Counter({
      name: 'isomesh_plugin_metrics_dropped_total',
      help: 'Plugin metric updates dropped: over 1,000 series per tenant, over the per-call bound, invalid, or a name reused with another type or label names.',
      labelNames: ['tenant', 'plugin'],
      registers: [registry],
    });
  }

  /** Applies one call's updates for `plugin` of `tenant`; `droppedInGuest`: updates the guest already refused. */
  apply(tenant: string, plugin: string, ops: GuestMetricOp[] | undefined, droppedInGuest = 0): void {
    let dropped = droppedInGuest;
    for (const op of ops ?? []) if (!this.#one(tenant, plugin, op)) dropped++;
    if (dropped === 0) return;
    this.#dropped.inc({ tenant, plugin }, dropped);
    let plugins = this.#droppedBy.get(tenant);
    if (plugins === undefined) this.#droppedBy.set(tenant, (plugins = new Set()));
    plugins.add(plugin);
  }

  /** Forgets every series of a tenant (it was removed). */
  removeTenant(tenant: string): void {
    for (const plugin of this.#droppedBy.get(tenant) ?? []) this.#dropped.remove({ tenant, plugin });
    this.#droppedBy.delete(tenant);
    if (!this.#tenants.delete(tenant)) return;
    for (const [name, f] of this.#families) {
      for (const [key, s] of f.series) if (s.tenant === tenant) f.series.delete(key);
      if (f.series.size === 0) {
        this.#families.delete(name);
        this.#registry.removeSingleMetric(name);
      }
    }
  }

  #one(tenant: string, plugin: string, op: GuestMetricOp): boolean {
    const [type, short, raw, value] = op;
    // Canonical order: one label set is one series whatever order the (untrusted) guest sent.
    const pairs = raw.slice().sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0));
    if (!NAME_RE.test(short)) return false;
    const kind: Kind = type === 'c' ? 'counter' : 'histogram';
    if (kind === 'histogram' && HISTOGRAM_SUFFIX.test(short)) return false;
    const name = kind === 'counter' ? `isomesh_plugin_${short.endsWith('_total') ? short : `${short}_total`}` : `isomesh_plugin_${short}`;
    if (RESERVED.has(name)) return false;
    if (pairs.length > PLUGIN_METRIC_LIMITS.labels) return false;
    const labels: Record<string, string> = { tenant, plugin };
    for (const [k, v] of pairs) {
      if (!LABEL_RE.test(k) || k.startsWith('__') || RESERVED_LABELS.has(k) || Object.hasOwn(labels, k) || v.length > PLUGIN_METRIC_LIMITS.labelValueChars) return false;
      labels[k] = v;
    }
    let family = this.#families.get(name);
    if (family === undefined) {
      // Anything else in the registry under this name (the host's, the proxy's) is not ours to share.
      if (this.#registry.getSingleMetric(name) !== undefined) return false;
      family = this.#family(name, kind);
    }
    if (family.kind !== kind) return false;
    let book = this.#tenants.get(tenant);
    if (book === undefined) {
      book = { shapes: new Map(), series: 0 };
      this.#tenants.set(tenant, book);
    }
    const shape = pairs.map(([k]) => k).sort().join(',');
    const known = book.shapes.get(name);
    if (known !== undefined && known !== shape) return false;
    const key = `${tenant}\u0000${plugin}\u0000${JSON.stringify(pairs)}`;
    let series = family.series.get(key);
    if (series === undefined) {
      if (book.series >= PLUGIN_METRIC_LIMITS.seriesPerTenant) return false;
      series = { tenant, labels, value: 0 };
      if (kind === 'histogram') {
        series.buckets = new Array<number>(BUCKETS.length + 1).fill(0);
        series.sum = 0;
      }
      family.series.set(key, series);
      book.series++;
      book.shapes.set(name, shape);
    }
    if (kind === 'counter') {
      if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) return false;
      series.value += value;
      return true;
    }
    const buckets = series.buckets as number[];
    for (const v of value as number[]) {
      if (!Number.isFinite(v)) continue;
      let i = 0;
      while (i < BUCKETS.length && v > (BUCKETS[i] as number)) i++;
      buckets[i]!++;
      series.sum = (series.sum as number) + v;
      series.value++;
    }
    return true;
  }

  #family(name: string, kind: Kind): Family {
    const family: Family = { name, kind, series: new Map() };
    this.#families.set(name, family);
    const help = `Plugin ${kind} "${name.slice('isomesh_plugin_'.length)}" recorded by tenants' plugins (ctx.metrics).`;
    // A custom collector: prom-client asks it for its values at scrape time.
    this.#registry.registerMetric({
      name,
      help,
      type: kind,
      aggregator: 'sum',
      get: async () => ({ name, help, type: kind, aggregator: 'sum', values: valuesOf(family) }),
      reset: () => family.series.clear(),
    } as never);
    return family;
  }
}

function valuesOf(family: Family): Array<{ metricName?: string; labels: Record<string, string | number>; value: number }> {
  const out: Array<{ metricName?: string; labels: Record<string, string | number>; value: number }> = [];
  for (const s of family.series.values()) {
    if (family.kind === 'counter') {
      out.push({ labels: s.labels, value: s.value });
      continue;
    }
    let cumulative = 0;
    const buckets = s.buckets as number[];
    for (let i = 0; i <= BUCKETS.length; i++) {
      cumulative += buckets[i] as number;
      out.push({ metricName: `${family.name}_bucket`, labels: { ...s.labels, le: i < BUCKETS.length ? (BUCKETS[i] as number) : '+Inf' }, value: cumulative });
    }
    out.push({ metricName: `${family.name}_sum`, labels: s.labels, value: s.sum as number });
    out.push({ metricName: `${family.name}_count`, labels: s.labels, value: s.value });
  }
  return out;
}
