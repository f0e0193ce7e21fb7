// TenantConfig → xDS resources, as pure functions of the config and a few node facts. Two flavors:
//   envoy     — per tenant a socket Listener `isomesh.<t>` (HCM → RDS `isomesh.<t>`), Clusters and
//               ClusterLoadAssignments `<t>/<s>`, plus the node's `isomesh_grpc` cluster (ext_proc / RLS);
//   proxyless — per grpc service an api_listener `<s>.<t>` (HCM → RDS `<s>.<t>`, router only), the same
//               Cluster/EDS names, and only what gRPC clients implement.
// Objects use proto field names; nested Any values are written {"@type": <type URL>, ...fields} and
// packed by the encoder (protos.ts). Resource contents are built only from the tenant's own config, every
// name embeds the tenant, and every cluster a tenant's route can reach is `<that tenant>/<service>`, so
// no tenant's config can name, shadow or reach another tenant's resources (names cannot hold '.' or '/').
//
// Routes: one virtual host `*`, routes in routesInPrecedence order (the built-in proxy's order), a route's
// host condition as `:authority` string matchers (so a host-specific miss falls through to catch-alls
// exactly as in the built-in proxy, which one-domain-per-virtual-host would not), then a route per VIP'd
// service matching its VIP authority (traffic to a VIP with no matching route goes to that service).

import { isIP } from 'node:net';
import type { ChainEntry, Endpoint, HashOn, PluginVersionDeclarations, RateLimit, Route, Service, TenantConfig } from '../store/model.ts';
import { routesInPrecedence } from '../store/index.ts';
import { EXT, TYPE_URL_PREFIX, duration, type ResourceKind } from './protos.ts';
import { re2Error } from './validate.ts';
import { REQUEST_ATTRIBUTES } from './ext-proc-wire.ts';

export type Flavor = 'envoy' | 'proxyless';
export type ResourceSet = Record<ResourceKind, Map<string, Record<string, unknown>>>;

export interface NodeFacts {
  /** Addresses the tenant's listener accepts on (first = the listener's address, then additional ones). */
  listenAddresses(tenant: string): readonly string[];
  /** Where Envoy reaches isomesh's ext_proc and rate-limit services (the unix socket on the node). */
  grpcTarget: { pipe: string } | { host: string; port: number };
  /** IP literals of a hostname endpoint (the control plane resolves them); undefined = not resolved. */
  resolve(hostname: string): readonly string[] | undefined;
}

export interface Translation {
  resources: ResourceSet;
  /** Non-fatal findings (e.g. a hostname endpoint that did not resolve), for logs and status. */
  warnings: string[];
}

/** The node-level cluster Envoy's ext_proc and ratelimit filters call. */
export const GRPC_CLUSTER = 'isomesh_grpc';
/** Header a plugin's ctx.route(service) sets (through ext_proc) to pick an upstream; removed from downstream requests. */
export const UPSTREAM_HEADER = 'x-isomesh-upstream';
export const TENANT_METADATA = 'x-isomesh-tenant';
export const ROUTE_METADATA = 'x-isomesh-route';
export const SERVICE_METADATA = 'x-isomesh-service';
/** Per ext_proc message; a plugin's ctx.fetch may take its 1 s default within the call. */
export const EXT_PROC_MESSAGE_TIMEOUT_MS = 2000;
export const RATELIMIT_TIMEOUT_MS = 100;
const DEFAULT_BUFFER_LIMIT = 1024 * 1024;
const IDEMPOTENT_METHODS = 'GET|HEAD|OPTIONS|TRACE|PUT|DELETE';
const ADS = Object.freeze({ ads: {}, resource_api_version: 'V3' });

export const listenerName = (tenant: string): string => `isomesh.${tenant}`;
export const routeConfigName = listenerName;
export const clusterName = (tenant: string, service: string): string => `${tenant}/${service}`;
export const apiListenerName = (tenant: string, service: string): string => `${service}.${tenant}`;

const any = (type: string, fields: Record<string, unknown> = {}): Record<string, unknown> => ({ '@type': TYPE_URL_PREFIX + type, ...fields });
const u32 = (value: number): { value: number } => ({ value });
const emptySet = (): ResourceSet => ({ listener: new Map(), route: new Map(), cluster: new Map(), endpoint: new Map() });

/** A tenant config that cannot become resources (the tenant keeps its last good ones). */
export class TranslateError extends Error {}

/** Envoy and gRPC compile regexes with RE2; a JavaScript-only construct would make the client NACK. */
function checkUserRegexes(cfg: TenantConfig): void {
  for (const r of cfg.routes) {
    const patterns = [r.match.pathRegex, ...(r.match.headers ?? []).map((h) => ('regex' in h ? h.regex : undefined))];
    for (const p of patterns) {
      const err = p === undefined ? undefined : re2Error(p);
      if (err !== undefined) throw new TranslateError(`route ${r.name}: regex ${JSON.stringify(p)} is not valid RE2 syntax (${err})`);
    }
  }
}

/**
 * Resources of one tenant for one flavor; throws TranslateError for a config no client would accept.
 * ClusterLoadAssignments are the same for both flavors: pass the other flavor's Translation as `shared`
 * to reuse its objects (the snapshot cache then encodes and validates them once).
 */
export function translateTenant(cfg: TenantConfig, facts: NodeFacts, flavor: Flavor, shared?: Translation): Translation {
  checkUserRegexes(cfg);
  const out: Translation = { resources: emptySet(), warnings: [] };
  const services = new Map(cfg.services.map((s) => [s.name, s]));
  for (const svc of cfg.services) {
    const name = clusterName(cfg.name, svc.name);
    out.resources.cluster.set(name, cluster(cfg, svc, flavor));
    out.resources.endpoint.set(name, shared?.resources.endpoint.get(name) ?? loadAssignment(cfg.name, svc, facts, out.warnings));
  }
  if (shared) out.warnings = shared.warnings;
  if (flavor === 'envoy') {
    out.resources.listener.set(listenerName(cfg.name), envoyListener(cfg, facts));
    out.resources.route.set(routeConfigName(cfg.name), envoyRouteConfig(cfg, services));
  } else {
    for (const svc of cfg.services) {
      if (svc.protocol !== 'grpc') continue;
      const name = apiListenerName(cfg.name, svc.name);
      out.resources.listener.set(name, apiListener(cfg.name, name));
      out.resources.route.set(name, proxylessRouteConfig(cfg, svc, services));
    }
  }
  return out;
}

/** Node-level resources every Envoy view carries: the cluster of isomesh's own gRPC services. */
export function translateNode(facts: NodeFacts, flavor: Flavor): ResourceSet {
  const set = emptySet();
  if (flavor !== 'envoy') return set;
  const t = facts.grpcTarget;
  const address = 'pipe' in t ? { pipe: { path: t.pipe } } : { socket_address: { address: t.host, port_value: t.port } };
  set.cluster.set(GRPC_CLUSTER, {
    name: GRPC_CLUSTER,
    type: 'STATIC',
    connect_timeout: duration(1000),
    load_assignment: { cluster_name: GRPC_CLUSTER, endpoints: [{ lb_endpoints: [{ endpoint: { address } }] }] },
    typed_extension_protocol_options: { [EXT_HTTP_OPTIONS]: http2Options() },
  });
  return set;
}

// ---- listeners ------------------------------------------------------------------------------

const EXT_HTTP_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';
const http2Options = (): Record<string, unknown> => any(EXT.httpProtocolOptions, { explicit_http_config: { http2_protocol_options: {} } });

function socketAddress(address: string, port: number): Record<string, unknown> {
  return { socket_address: { address, port_value: port } };
}

/** Declarations of the versions a chain entry may run (active and canary); absent meta = unknown. */
function declarations(cfg: TenantConfig, entry: ChainEntry): Array<PluginVersionDeclarations | undefined> {
  const p = cfg.plugins[entry.plugin];
  const out: Array<PluginVersionDeclarations | undefined> = [];
  if (p?.active) out.push(p.active.meta);
  if (p?.canary) out.push(p.canary.meta);
  return out;
}

interface ChainNeeds {
  responseHeaders: boolean;
  requestBody: number;
  responseBody: number;
}

function chainNeeds(cfg: TenantConfig, route: string | undefined): ChainNeeds {
  const needs: ChainNeeds = { responseHeaders: false, requestBody: 0, responseBody: 0 };
  for (const e of cfg.chain) {
    if (e.routes !== undefined && (route === undefined || !e.routes.includes(route))) continue;
    for (const meta of declarations(cfg, e)) {
      // A version published before declarations were recorded may have any hook; bodies it never declared.
      if (meta === undefined || meta.hooks.includes('onResponse')) needs.responseHeaders = true;
      needs.requestBody = Math.max(needs.requestBody, meta?.body?.request ?? 0);
      needs.responseBody = Math.max(needs.responseBody, meta?.body?.response ?? 0);
    }
  }
  return needs;
}

function processingMode(n: ChainNeeds): Record<string, unknown> {
  return {
    request_header_mode: 'SEND', // always: admission (quotas) runs on every request of a tenant with a chain
    response_header_mode: n.responseHeaders || n.responseBody > 0 ? 'SEND' : 'SKIP',
    request_body_mode: n.requestBody > 0 ? 'BUFFERED' : 'NONE',
    response_body_mode: n.responseBody > 0 ? 'BUFFERED' : 'NONE',
    request_trailer_mode: 'SKIP',
    response_trailer_mode: 'SKIP',
  };
}

function grpcService(tenant: string): Record<string, unknown> {
  return { envoy_grpc: { cluster_name: GRPC_CLUSTER }, initial_metadata: [{ key: TENANT_METADATA, value: tenant }] };
}

function httpFilters(cfg: TenantConfig): Array<Record<string, unknown>> {
  const filters: Array<Record<string, unknown>> = [];
  if (cfg.quota.requestsPerSecond > 0) {
    // Admission's token bucket, for the routes ext_proc does not see (or a tenant without a chain).
    const rps = cfg.quota.requestsPerSecond;
    const always = { default_value: { numerator: 100, denominator: 'HUNDRED' }, runtime_key: `isomesh.${cfg.name}.rps` };
    filters.push({
      name: 'envoy.filters.http.local_ratelimit',
      typed_config: any('envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit', {
        stat_prefix: `isomesh_${cfg.name}_rps`,
        token_bucket: { max_tokens: rps, tokens_per_fill: u32(rps), fill_interval: duration(1000) },
        filter_enabled: always,
        filter_enforced: always,
        response_headers_to_add: [
          { header: { key: 'x-isomesh-error', value: 'ISOMESH_ERR_QUOTA_RPS' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
          { header: { key: 'retry-after', value: '1' }, append_action: 'OVERWRITE_IF_EXISTS_OR_ADD' },
        ],
      }),
    });
  }
  if (cfg.rateLimits.length > 0) {
    filters.push({
      name: 'envoy.filters.http.ratelimit',
      typed_config: any(EXT.rateLimit, {
        domain: cfg.name,
        timeout: duration(RATELIMIT_TIMEOUT_MS),
        disable_x_envoy_ratelimited_header: true,
        rate_limit_service: { grpc_service: grpcService(cfg.name), transport_api_version: 'V3' },
      }),
    });
  }
  if (cfg.chain.length > 0) {
    filters.push({
      name: 'envoy.filters.http.ext_proc',
      typed_config: any(EXT.extProc, {
        grpc_service: grpcService(cfg.name),
        failure_mode_allow: false,
        processing_mode: processingMode(chainNeeds(cfg, undefined)),
        message_timeout: duration(EXT_PROC_MESSAGE_TIMEOUT_MS),
        ...extProcServerNeeds(),
      }),
    });
  }
  filters.push({ name: 'envoy.filters.http.router', typed_config: any(EXT.router) });
  return filters;
}

/**
 * What the ext_proc server (ext-proc.ts) relies on beyond the processing mode: the client address and
 * the weighted pick as attributes, mode_override (a run's exact body/response needs), and plugin
 * changes to `host` (:authority) applied as the built-in proxy applies them.
 */
function extProcServerNeeds(): Record<string, unknown> {
  return {
    request_attributes: [...REQUEST_ATTRIBUTES],
    allow_mode_override: true,
    mutation_rules: { allow_all_routing: { value: true } },
  };
}

function pathOptions(cfg: TenantConfig): Record<string, unknown> {
  switch (cfg.settings.pathNormalization) {
    case 'none':
      return { normalize_path: { value: false }, merge_slashes: false, path_with_escaped_slashes_action: 'KEEP_UNCHANGED' };
    case 'merge_slashes':
      return { normalize_path: { value: true }, merge_slashes: true, path_with_escaped_slashes_action: 'REJECT_REQUEST' };
    default:
      return { normalize_path: { value: true }, merge_slashes: false, path_with_escaped_slashes_action: 'REJECT_REQUEST' };
  }
}

function bufferLimit(cfg: TenantConfig, dir: 'requestBody' | 'responseBody'): number {
  if (cfg.chain.length === 0) return 0;
  let max = 0;
  for (const r of [undefined, ...cfg.routes.map((x) => x.name)]) max = Math.max(max, chainNeeds(cfg, r)[dir]);
  return max;
}

function envoyListener(cfg: TenantConfig, facts: NodeFacts): Record<string, unknown> {
  const addrs = [...new Set(facts.listenAddresses(cfg.name))];
  if (addrs.length === 0) addrs.push('127.0.0.1');
  const hcm = any(EXT.hcm, {
    stat_prefix: `isomesh_${cfg.name}`,
    codec_type: 'AUTO', // HTTP/1.1 and h2c prior knowledge on one port, told apart by the preface
    rds: { route_config_name: routeConfigName(cfg.name), config_source: ADS },
    http_filters: httpFilters(cfg),
    use_remote_address: { value: true },
    max_request_headers_kb: u32(16),
    common_http_protocol_options: { max_headers_count: u32(100) },
    ...pathOptions(cfg),
    // Only ext_proc (a plugin's ctx.route) may pick an upstream through this header.
    early_header_mutation_extensions: [
      {
        name: 'envoy.http.early_header_mutation.header_mutation',
        typed_config: any('envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation', { mutations: [{ remove: UPSTREAM_HEADER }] }),
      },
    ],
  });
  const listener: Record<string, unknown> = {
    name: listenerName(cfg.name),
    address: socketAddress(addrs[0]!, cfg.listenerPort),
    filter_chains: [{ filters: [{ name: 'envoy.filters.network.http_connection_manager', typed_config: hcm }] }],
  };
  if (addrs.length > 1) listener.additional_addresses = addrs.slice(1).map((a) => ({ address: socketAddress(a, cfg.listenerPort) }));
  const limit = bufferLimit(cfg, 'requestBody');
  if (limit > DEFAULT_BUFFER_LIMIT) listener.per_connection_buffer_limit_bytes = u32(limit + 64 * 1024);
  return listener;
}

function apiListener(tenant: string, name: string): Record<string, unknown> {
  return {
    name,
    api_listener: {
      api_listener: any(EXT.hcm, {
        stat_prefix: `isomesh_${tenant}`,
        rds: { route_config_name: name, config_source: ADS },
        http_filters: [{ name: 'envoy.filters.http.router', typed_config: any(EXT.router) }],
      }),
    },
  };
}

// ---- routes ---------------------------------------------------------------------------------

interface Target {
  svc: Service;
  weight: number;
}

function targets(route: Route, services: Map<string, Service>): Target[] {
  const list = 'service' in route.to ? [{ service: route.to.service, weight: 1 }] : route.to.weighted;
  const out: Target[] = [];
  for (const t of list) {
    const svc = services.get(t.service);
    // The store refuses routes to unknown services; a stale reference is dropped, never guessed at.
    if (svc !== undefined && t.weight > 0) out.push({ svc, weight: t.weight });
  }
  if (out.length === 0 && list.length > 0) {
    const first = services.get(list[0]!.service); // all weights 0: the built-in proxy takes the first
    if (first) out.push({ svc: first, weight: 1 });
  }
  return out;
}

/**
 * A route's host condition as `:authority` matchers, one alternative per entry (so one route becomes
 * one Envoy route per alternative, kept adjacent): the built-in proxy ignores the port in Host, and
 * string matchers (no regex) keep every host within Envoy's RE2 program-size bound.
 */
function hostAlternatives(host: string | undefined): Array<Record<string, unknown> | undefined> {
  if (host === undefined || host === '' || host === '*') return [undefined];
  const h = host.toLowerCase().replace(/:\d+$/, '');
  const m = (match: Record<string, unknown>) => ({ name: ':authority', string_match: { ...match, ignore_case: true } });
  if (h.startsWith('*.')) return [m({ suffix: h.slice(1) }), m({ contains: `${h.slice(1)}:` })];
  return [m({ exact: h }), m({ prefix: `${h}:` })];
}

function headerMatchers(route: Route, flavor: Flavor, authority: Record<string, unknown> | undefined): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  const m = route.match;
  if (authority) out.push(authority);
  if (flavor === 'envoy' && m.method !== undefined) out.push({ name: ':method', string_match: { exact: m.method.toUpperCase() } });
  for (const h of m.headers ?? []) {
    if ('present' in h) out.push({ name: h.name, present_match: true, invert_match: h.present === false });
    else if (flavor === 'envoy') {
      const sm = 'exact' in h ? { exact: h.exact } : 'prefix' in h ? { prefix: h.prefix } : { safe_regex: { regex: h.regex } };
      out.push({ name: h.name, string_match: sm });
    } else {
      // gRPC C-core before 1.52 knows only the (deprecated, still valid) per-kind fields, not string_match
      const legacy = 'exact' in h ? { exact_match: h.exact } : 'prefix' in h ? { prefix_match: h.prefix } : { safe_regex_match: { regex: h.regex } };
      out.push({ name: h.name, ...legacy });
    }
  }
  return out;
}

function routeMatch(route: Route, flavor: Flavor, authority?: Record<string, unknown>): Record<string, unknown> {
  const m = route.match;
  const match: Record<string, unknown> =
    m.path !== undefined ? { path: m.path } : m.pathPrefix !== undefined ? { prefix: m.pathPrefix } : m.pathRegex !== undefined ? { safe_regex: { regex: m.pathRegex } } : { prefix: '/' };
  const headers = headerMatchers(route, flavor, authority);
  if (headers.length > 0) match.headers = headers;
  return match;
}

function hashPolicy(on: HashOn | undefined, flavor: Flavor): Record<string, unknown> {
  if (on !== undefined && on !== 'sourceIp' && 'header' in on) return { header: { header_name: on.header } };
  // gRPC clients hash only headers or their channel id; a channel is the closest thing to a client address.
  if (flavor === 'proxyless') return { filter_state: { key: 'io.grpc.channel_id' } };
  if (on !== undefined && on !== 'sourceIp' && 'cookie' in on) return { cookie: { name: on.cookie } };
  return { connection_properties: { source_ip: true } };
}

function retryPolicy(ts: Target[], flavor: Flavor): Record<string, unknown> | undefined {
  const on = new Set<string>();
  let attempts = 0;
  for (const { svc } of ts) {
    if (!svc.retries || svc.retries.attempts === 0) continue;
    attempts = Math.max(attempts, svc.retries.attempts);
    for (const o of svc.retries.on) on.add(o);
  }
  if (attempts === 0) return undefined;
  if (flavor === 'proxyless') {
    // gRPC retries by status code: resets and refused connections surface as UNAVAILABLE, 5xx as INTERNAL/UNAVAILABLE.
    const codes = new Set(['unavailable']);
    if (on.has('5xx')) codes.add('internal');
    return { retry_on: [...codes].join(','), num_retries: u32(Math.min(attempts, 4)) };
  }
  const policy: Record<string, unknown> = { retry_on: [...on].sort().join(','), num_retries: u32(attempts) };
  // As the built-in proxy: a 5xx or a reset is retried only for idempotent methods.
  if (on.has('5xx') || on.has('reset')) policy.retriable_request_headers = [{ name: ':method', string_match: { safe_regex: { regex: IDEMPOTENT_METHODS } } }];
  return policy;
}

function routeAction(cfg: TenantConfig, ts: Target[], route: Route | undefined, flavor: Flavor): Record<string, unknown> {
  let action: Record<string, unknown>;
  if (ts.length === 1) action = { cluster: clusterName(cfg.name, ts[0]!.svc.name) };
  else {
    const weighted: Record<string, unknown> = { clusters: ts.map((t) => ({ name: clusterName(cfg.name, t.svc.name), weight: u32(t.weight) })) };
    // gRPC C-core before 1.53 checks the (deprecated) total_weight against the sum, defaulting it to 100.
    if (flavor === 'proxyless') weighted.total_weight = u32(ts.reduce((s, t) => s + t.weight, 0));
    action = { weighted_clusters: weighted };
  }
  const timeoutMs = route?.timeoutMs ?? Math.max(...ts.map((t) => t.svc.timeoutMs));
  if (flavor === 'envoy') action.timeout = duration(timeoutMs);
  else action.max_stream_duration = { max_stream_duration: duration(timeoutMs) };
  const retry = retryPolicy(ts, flavor);
  if (retry) action.retry_policy = retry;
  const hashes = new Map<string, Record<string, unknown>>();
  for (const { svc } of ts) {
    if (svc.lb !== 'ring_hash') continue;
    const p = hashPolicy(svc.hashOn, flavor);
    hashes.set(JSON.stringify(p), p);
  }
  if (hashes.size > 0) action.hash_policy = [...hashes.values()];
  if (flavor === 'envoy') {
    const upgrades = route?.upgrades ?? ['websocket'];
    if (upgrades.length > 0) action.upgrade_configs = upgrades.map((u) => ({ upgrade_type: u, enabled: { value: true } }));
  }
  return action;
}

function rateLimitActions(limits: readonly RateLimit[], route: string | undefined): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const rl of limits) {
    // The built-in proxy counts a `route` descriptor only for requests that matched a route.
    if (route === undefined && rl.descriptors.some((d) => d.key === 'route')) continue;
    out.push({
      actions: rl.descriptors.map((d) => {
        switch (d.key) {
          case 'remote_address':
            return { remote_address: {} };
          case 'path':
            return { request_headers: { header_name: ':path', descriptor_key: 'path' } };
          case 'method':
            return { request_headers: { header_name: ':method', descriptor_key: 'method' } };
          case 'route':
            return { generic_key: { descriptor_value: route, descriptor_key: 'route' } };
          default:
            return { request_headers: { header_name: d.key.slice('header:'.length), descriptor_key: d.key } };
        }
      }),
    });
  }
  return out;
}

function extProcPerRoute(cfg: TenantConfig, route: string | undefined, ts: Target[]): Record<string, unknown> {
  const metadata = [{ key: TENANT_METADATA, value: cfg.name }];
  if (route !== undefined) metadata.push({ key: ROUTE_METADATA, value: route });
  if (ts.length === 1) metadata.push({ key: SERVICE_METADATA, value: ts[0]!.svc.name });
  return {
    'envoy.filters.http.ext_proc': any(EXT.extProcPerRoute, { overrides: { processing_mode: processingMode(chainNeeds(cfg, route)), grpc_initial_metadata: metadata } }),
  };
}

function envoyRoute(cfg: TenantConfig, name: string, match: Record<string, unknown>, ts: Target[], route: Route | undefined): Record<string, unknown> {
  const action = routeAction(cfg, ts, route, 'envoy');
  const limits = rateLimitActions(cfg.rateLimits, route?.name);
  if (limits.length > 0) action.rate_limits = limits;
  const r: Record<string, unknown> = { name, match, route: action };
  if (cfg.chain.length > 0) r.typed_per_filter_config = extProcPerRoute(cfg, route?.name, ts);
  return r;
}

/** A VIP's authority ("ip:port"; port 80 may be left out of Host). */
function vipMatches(vip: string): Array<Record<string, unknown>> {
  const m = /^(.*):(\d+)$/.exec(vip)!;
  const authorities = m[2] === '80' ? [vip, m[1]!] : [vip];
  return authorities.map((a) => ({ prefix: '/', headers: [{ name: ':authority', string_match: { exact: a, ignore_case: true } }] }));
}

function envoyRouteConfig(cfg: TenantConfig, services: Map<string, Service>): Record<string, unknown> {
  const routes: Array<Record<string, unknown>> = [];
  if (cfg.chain.length > 0) {
    // ctx.route(service): ext_proc sets the header (downstream copies are removed before routing) and
    // clears the route cache; these routes then pick the service.
    for (const svc of cfg.services) {
      const match = { prefix: '/', headers: [{ name: UPSTREAM_HEADER, string_match: { exact: svc.name } }] };
      routes.push({ name: `isomesh.upstream.${svc.name}`, match, route: routeAction(cfg, [{ svc, weight: 1 }], undefined, 'envoy'), request_headers_to_remove: [UPSTREAM_HEADER] });
    }
  }
  for (const r of routesInPrecedence(cfg.routes)) {
    const ts = targets(r, services);
    if (ts.length === 0) continue;
    for (const authority of hostAlternatives(r.match.host)) routes.push(envoyRoute(cfg, r.name, routeMatch(r, 'envoy', authority), ts, r));
  }
  for (const svc of cfg.services) {
    if (svc.vip === undefined) continue;
    for (const match of vipMatches(svc.vip)) routes.push(envoyRoute(cfg, `isomesh.vip.${svc.name}`, match, [{ svc, weight: 1 }], undefined));
  }
  return { name: routeConfigName(cfg.name), virtual_hosts: [{ name: cfg.name, domains: ['*'], routes }] };
}

/** Whether a route's host and method conditions can hold for a gRPC call to `xds:///<s>.<t>`. */
function reachableByGrpc(route: Route, authority: string): boolean {
  const m = route.match;
  if (m.method !== undefined && m.method.toUpperCase() !== 'POST') return false;
  const host = m.host?.toLowerCase().replace(/:\d+$/, '');
  if (host === undefined || host === '' || host === '*') return true;
  if (host.startsWith('*.')) return authority.endsWith(host.slice(1)) && authority.length > host.length - 1;
  return host === authority;
}

function proxylessRouteConfig(cfg: TenantConfig, svc: Service, services: Map<string, Service>): Record<string, unknown> {
  const name = apiListenerName(cfg.name, svc.name);
  const routes: Array<Record<string, unknown>> = [];
  for (const r of routesInPrecedence(cfg.routes)) {
    const ts = targets(r, services);
    if (!ts.some((t) => t.svc.name === svc.name) || !reachableByGrpc(r, name)) continue;
    routes.push({ name: r.name, match: routeMatch(r, 'proxyless'), route: routeAction(cfg, ts, r, 'proxyless') });
  }
  // Dialing the service is calling its VIP: with no matching route, the call goes to the service.
  routes.push({ name: `isomesh.default.${svc.name}`, match: { prefix: '' }, route: routeAction(cfg, [{ svc, weight: 1 }], undefined, 'proxyless') });
  return { name, virtual_hosts: [{ name, domains: ['*'], routes }] };
}

// ---- clusters and endpoints -----------------------------------------------------------------

function cluster(cfg: TenantConfig, svc: Service, flavor: Flavor): Record<string, unknown> {
  const name = clusterName(cfg.name, svc.name);
  const c: Record<string, unknown> = {
    name,
    type: 'EDS',
    eds_cluster_config: { eds_config: ADS, service_name: name },
    connect_timeout: duration(svc.connectTimeoutMs),
    // proxyless gRPC has no least_request; round robin is its nearest
    lb_policy: svc.lb === 'ring_hash' ? 'RING_HASH' : svc.lb === 'least_request' && flavor === 'envoy' ? 'LEAST_REQUEST' : 'ROUND_ROBIN',
  };
  if (flavor === 'proxyless') return c;
  const cb = svc.circuitBreaker;
  if (cb) {
    c.circuit_breakers = { thresholds: [{ priority: 'DEFAULT', max_connections: u32(cb.maxConnections), max_pending_requests: u32(cb.maxPending) }] };
    // As the built-in proxy: any share of endpoints may be ejected, each for a fixed time, and only
    // when every endpoint is ejected are they all used again (panic).
    c.outlier_detection = {
      consecutive_5xx: u32(cb.consecutive5xx),
      base_ejection_time: duration(cb.ejectionMs),
      max_ejection_time: duration(cb.ejectionMs),
      max_ejection_percent: u32(100),
    };
    c.common_lb_config = { healthy_panic_threshold: { value: 1 } };
  }
  if (svc.protocol === 'http2' || svc.protocol === 'grpc') c.typed_extension_protocol_options = { [EXT_HTTP_OPTIONS]: http2Options() };
  const limit = bufferLimit(cfg, 'responseBody');
  if (limit > DEFAULT_BUFFER_LIMIT) c.per_connection_buffer_limit_bytes = u32(limit + 64 * 1024);
  return c;
}

/** One locality per endpoint, weighted by the endpoint's weight (clients that ignore endpoint weights still split by it). */
function loadAssignment(tenant: string, svc: Service, facts: NodeFacts, warnings: string[]): Record<string, unknown> {
  const seen = new Map<string, number>();
  const endpoints: Array<Record<string, unknown>> = [];
  for (const ep of svc.endpoints) {
    const ips = endpointIps(ep, facts);
    if (ips.length === 0) {
      warnings.push(`service ${svc.name}: endpoint ${ep.address}:${ep.port} did not resolve to an IP address; it gets no traffic`);
      continue;
    }
    const id = `${ep.address}:${ep.port}`;
    const n = seen.get(id) ?? 0;
    seen.set(id, n + 1);
    endpoints.push({
      locality: { region: 'isomesh', zone: tenant, sub_zone: n === 0 ? id : `${id}#${n}` },
      lb_endpoints: ips.map((ip) => ({ endpoint: { address: socketAddress(ip, ep.port) }, load_balancing_weight: u32(ep.weight) })),
      load_balancing_weight: u32(ep.weight),
    });
  }
  return { cluster_name: clusterName(tenant, svc.name), endpoints };
}

const MAX_IPS_PER_HOSTNAME = 16;

function endpointIps(ep: Endpoint, facts: NodeFacts): string[] {
  if (isIP(ep.address) !== 0) return [ep.address];
  return [...new Set(facts.resolve(ep.address) ?? [])].filter((ip) => isIP(ip) !== 0).slice(0, MAX_IPS_PER_HOSTNAME);
}
