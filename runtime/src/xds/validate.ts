// What a resource must satisfy before it is sent: protoc-gen-validate's rules (pgv.ts) plus the
// data-plane rules real clients enforce on top of them (Envoy's config checks, gRPC's xDS client
// checks — gRFC A27/A28/A42 and the C-core/grpc-js resource parsers). A failure here is a bug in the
// translator or an input the store should have refused; it is never sent.

import { isIP } from 'node:net';
import { compileRouteRegex } from '../store/index.ts';
import { ResourceValidator } from './pgv.ts';
import { EXT, TYPE_URLS, type EnvoyProtos, type ResourceKind } from './protos.ts';
import type { Flavor } from './translate.ts';

const IPV4_RE = /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/;
const MAX_RING_SIZE = 8_388_608; // gRPC's cap on ring_hash ring sizes
const MAX_DURATION_S = 315_576_000_000;
const UINT32_MAX = 2 ** 32 - 1;

export function dataPlaneValidator(protos: EnvoyProtos): ResourceValidator {
  return new ResourceValidator(protos)
    .hook('google.protobuf.Duration', (d, fail) => {
      const s = Number(d.seconds ?? 0);
      const n = Number(d.nanos ?? 0);
      if (!Number.isInteger(s) || Math.abs(s) > MAX_DURATION_S) fail(`seconds out of range`);
      if (!Number.isInteger(n) || n < 0 || n > 999_999_999) fail(`nanos out of range`);
    })
    .hook('envoy.config.core.v3.SocketAddress', (a, fail) => {
      // EDS and listener addresses must be IP literals (no DNS in isomesh's clusters); 0 is no port.
      const address = String(a.address ?? '');
      if (!(IPV4_RE.test(address) && isIP(address) === 4) && isIP(address) === 0) fail(`address: ${JSON.stringify(a.address)} is not an IP address`);
      const port = Number(a.port_value ?? 0);
      if (!(port >= 1 && port <= 65535)) fail(`port_value: ${port} is not a port`);
    })
    .hook(EXT.hcm, (h, fail) => {
      const filters = (h.http_filters ?? []) as Array<{ name?: string }>;
      if (filters.length === 0) fail(`http_filters: empty (the router must be last)`);
      const names = filters.map((f) => f.name);
      if (names.at(-1) !== 'envoy.filters.http.router') fail(`http_filters: the router must be the last filter`);
      if (names.indexOf('envoy.filters.http.router') !== names.length - 1) fail(`http_filters: the router appears before the end`);
      if (new Set(names).size !== names.length) fail(`http_filters: duplicate filter names`);
      if (h.rds === undefined && h.route_config === undefined) fail(`neither rds nor route_config is set`);
    })
    .hook('envoy.config.route.v3.WeightedCluster', (w, fail) => {
      const clusters = (w.clusters ?? []) as Array<{ weight?: { value?: number } }>;
      const sum = clusters.reduce((s, c) => s + Number(c.weight?.value ?? 0), 0);
      if (!(sum > 0 && sum <= UINT32_MAX)) fail(`weights must sum to 1..${UINT32_MAX} (got ${sum})`);
    })
    .hook('envoy.config.endpoint.v3.ClusterLoadAssignment', (cla, fail) => {
      const seen = new Set<string>();
      for (const [i, l] of ((cla.endpoints ?? []) as Array<{ locality?: unknown; priority?: number }>).entries()) {
        const key = JSON.stringify([l.locality ?? {}, l.priority ?? 0]);
        if (seen.has(key)) fail(`endpoints[${i}]: duplicate locality`);
        seen.add(key);
      }
    })
    .hook('envoy.type.matcher.v3.RegexMatcher', (m, fail) => {
      const err = typeof m.regex === 'string' ? re2Error(m.regex) : undefined;
      if (err !== undefined) fail(`regex: ${JSON.stringify(m.regex)} ${err}`);
    })
    .hook('envoy.config.cluster.v3.Cluster', (c, fail) => {
      if (c.type === 'EDS') {
        const eds = (c.eds_cluster_config as { eds_config?: { ads?: unknown; self?: unknown } } | undefined)?.eds_config;
        if (!eds || (eds.ads === undefined && eds.self === undefined)) fail(`eds_cluster_config.eds_config: must be ads or self`);
      }
      const ring = c.ring_hash_lb_config as { minimum_ring_size?: { value?: number }; maximum_ring_size?: { value?: number } } | undefined;
      const min = Number(ring?.minimum_ring_size?.value ?? 1024);
      const max = Number(ring?.maximum_ring_size?.value ?? MAX_RING_SIZE);
      if (min > max || max > MAX_RING_SIZE) fail(`ring_hash_lb_config: ring sizes out of range`);
    });
}

/** Flavor rules: what an Envoy or a proxyless gRPC client accepts for a resource kind. */
export function flavorErrors(kind: ResourceKind, flavor: Flavor, obj: Record<string, unknown>): string[] {
  const errors: string[] = [];
  if (kind === 'listener') {
    if (flavor === 'proxyless' && obj.api_listener === undefined) errors.push('listener: proxyless clients need an api_listener');
    if (flavor === 'envoy' && obj.api_listener !== undefined) errors.push('listener: Envoy does not accept api_listener over LDS');
    if (flavor === 'envoy' && obj.address === undefined) errors.push('listener: address is required');
  }
  if (kind === 'cluster' && flavor === 'proxyless' && !['ROUND_ROBIN', 'RING_HASH'].includes(String(obj.lb_policy ?? 'ROUND_ROBIN'))) {
    errors.push(`cluster: proxyless clients do not implement lb_policy ${String(obj.lb_policy)}`);
  }
  return errors;
}

/** Type name of each resource kind, for the validator. */
export const KIND_TYPE: Readonly<Record<ResourceKind, string>> = TYPE_URLS;

// ---- RE2 (Envoy and gRPC compile every safe_regex with RE2, Envoy within a program-size bound) ----

const re2Cache = new Map<string, string | null>();
const RE2_CACHE_MAX = 10_000;

/** Why Envoy's RE2 would refuse `pattern` (syntax, or program size over Envoy's default), else undefined. */
export function re2Error(pattern: string): string | undefined {
  let hit = re2Cache.get(pattern);
  if (hit === undefined) {
    try {
      compileRouteRegex(pattern);
      hit = null;
    } catch (err) {
      hit = (err as Error).message;
    }
    if (re2Cache.size >= RE2_CACHE_MAX) re2Cache.clear();
    re2Cache.set(pattern, hit);
  }
  return hit ?? undefined;
}
