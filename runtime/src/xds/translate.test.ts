import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RE2JS } from 're2js';
import { facts, richTenant, route, service, tenant } from './fixtures.ts';
import { EXT, TYPE_URLS, envoyProtos, RESOURCE_KINDS } from './protos.ts';
import { referencesOf, tenantOf } from './snapshot.ts';
import { GRPC_CLUSTER, TranslateError, UPSTREAM_HEADER, translateNode as translateNodeRaw, translateTenant as translateTenantRaw, type Flavor, type NodeFacts } from './translate.ts';
import type { ResourceKind } from './protos.ts';
import type { TenantConfig } from '../store/model.ts';
import { dataPlaneValidator, flavorErrors } from './validate.ts';

type Obj = Record<string, any>;
type Set = Record<ResourceKind, Map<string, Obj>>;
const translateTenant = (cfg: TenantConfig, f: NodeFacts, flavor: Flavor) => translateTenantRaw(cfg, f, flavor) as unknown as { resources: Set; warnings: string[] };
const translateNode = (f: NodeFacts, flavor: Flavor) => translateNodeRaw(f, flavor) as unknown as Set;
const hcmOf = (l: Obj): Obj => l.filter_chains?.[0]?.filters?.[0]?.typed_config ?? l.api_listener.api_listener;
const routesOf = (rc: Obj): Obj[] => rc.virtual_hosts[0].routes;

test('envoy flavor: names, listener on the tenant address:port, filter order ratelimit → ext_proc → router', () => {
  const cfg = richTenant('acme', 17042);
  const { resources } = translateTenant(cfg, facts({ listenAddresses: () => ['127.0.0.1', '10.0.0.1', '127.0.0.1'] }), 'envoy');
  assert.deepEqual([...resources.listener.keys()], ['isomesh.acme']);
  assert.deepEqual([...resources.route.keys()], ['isomesh.acme']);
  assert.deepEqual([...resources.cluster.keys()].sort(), ['acme/api', 'acme/cart', 'acme/ring', 'acme/web']);
  assert.deepEqual([...resources.endpoint.keys()].sort(), ['acme/api', 'acme/cart', 'acme/ring', 'acme/web']);
  const l = resources.listener.get('isomesh.acme')!;
  assert.deepEqual(l.address, { socket_address: { address: '127.0.0.1', port_value: 17042 } });
  assert.deepEqual(l.additional_addresses, [{ address: { socket_address: { address: '10.0.0.1', port_value: 17042 } } }], 'other listen addresses, deduplicated');
  const hcm = hcmOf(l);
  assert.equal(hcm['@type'], `type.googleapis.com/${EXT.hcm}`);
  assert.equal(hcm.codec_type, 'AUTO');
  assert.deepEqual(hcm.rds, { route_config_name: 'isomesh.acme', config_source: { ads: {}, resource_api_version: 'V3' } });
  assert.deepEqual(hcm.http_filters.map((f: Obj) => f.name), ['envoy.filters.http.local_ratelimit', 'envoy.filters.http.ratelimit', 'envoy.filters.http.ext_proc', 'envoy.filters.http.router']);
  const [local, rl, ext] = hcm.http_filters.map((f: Obj) => f.typed_config);
  assert.equal(local.token_bucket.max_tokens, 50);
  assert.equal(rl.domain, 'acme');
  assert.deepEqual(rl.rate_limit_service.grpc_service, { envoy_grpc: { cluster_name: GRPC_CLUSTER }, initial_metadata: [{ key: 'x-isomesh-tenant', value: 'acme' }] });
  assert.deepEqual(ext.grpc_service.initial_metadata, [{ key: 'x-isomesh-tenant', value: 'acme' }]);
  // the chain's unscoped entry (auth) has only onRequest: no response round trip, no bodies
  assert.deepEqual(ext.processing_mode, { request_header_mode: 'SEND', response_header_mode: 'SKIP', request_body_mode: 'NONE', response_body_mode: 'NONE', request_trailer_mode: 'SKIP', response_trailer_mode: 'SKIP' });
  // pathNormalization merge_slashes; header limits of the API; the upstream-pick header cannot come from downstream
  assert.deepEqual([hcm.normalize_path, hcm.merge_slashes, hcm.path_with_escaped_slashes_action], [{ value: true }, true, 'REJECT_REQUEST']);
  assert.deepEqual([hcm.max_request_headers_kb, hcm.common_http_protocol_options], [{ value: 16 }, { max_headers_count: { value: 100 } }]);
  assert.deepEqual(hcm.early_header_mutation_extensions[0].typed_config.mutations, [{ remove: UPSTREAM_HEADER }]);
  // a body-reading version (4 MiB) raises the downstream buffer above Envoy's 1 MiB default
  assert.ok(l.per_connection_buffer_limit_bytes.value > 4 * 1024 * 1024);
});

test('path normalization modes map to HCM options', () => {
  const hcm = (mode: 'base' | 'merge_slashes' | 'none') =>
    hcmOf(translateTenant(tenant('t', { settings: { pathNormalization: mode, accessLog: { enabled: false, sample: 1 } } }), facts(), 'envoy').resources.listener.get('isomesh.t')!);
  for (const [mode, expected] of [
    ['base', [{ value: true }, false, 'REJECT_REQUEST']],
    ['merge_slashes', [{ value: true }, true, 'REJECT_REQUEST']],
    ['none', [{ value: false }, false, 'KEEP_UNCHANGED']],
  ] as const) {
    const h = hcm(mode);
    assert.deepEqual([h.normalize_path, h.merge_slashes, h.path_with_escaped_slashes_action], expected, mode);
  }
  // no chain, no rate limits, no rps quota: the router alone
  assert.deepEqual(hcm('base').http_filters.map((f: Obj) => f.name), ['envoy.filters.http.router']);
});

test('envoy routes: precedence order, host alternatives, VIP defaults last, upstream-pick routes first', () => {
  const cfg = richTenant('acme');
  const rc = translateTenant(cfg, facts(), 'envoy').resources.route.get('isomesh.acme')!;
  assert.equal(rc.virtual_hosts.length, 1);
  assert.deepEqual(rc.virtual_hosts[0].domains, ['*']);
  const names = routesOf(rc).map((r) => r.name);
  assert.deepEqual(names, [
    // ctx.route(service) targets, one per service, only when the tenant has a chain
    'isomesh.upstream.web', 'isomesh.upstream.api', 'isomesh.upstream.cart', 'isomesh.upstream.ring',
    // routesInPrecedence: exact host before wildcard before any host; then exact path, longer prefix, regex
    'api', 'api', 'wild', 'wild', 'ws', 'catch-all', 'split',
    // VIP defaults (port 80 also without the port)
    'isomesh.vip.web', 'isomesh.vip.web', 'isomesh.vip.api',
  ]);
  const byName = (n: string) => routesOf(rc).filter((r) => r.name === n);
  const [api1, api2] = byName('api');
  assert.deepEqual(api1!.match.headers[0], { name: ':authority', string_match: { exact: 'api.example.com', ignore_case: true } });
  assert.deepEqual(api2!.match.headers[0], { name: ':authority', string_match: { prefix: 'api.example.com:', ignore_case: true } });
  assert.deepEqual(api1!.match.prefix, '/pkg.Api/');
  const [w1, w2] = byName('wild');
  assert.deepEqual(w1!.match.headers.slice(0, 2), [
    { name: ':authority', string_match: { suffix: '.shop.example', ignore_case: true } },
    { name: ':method', string_match: { exact: 'POST' } },
  ]);
  assert.deepEqual(w2!.match.headers[0].string_match, { contains: '.shop.example:', ignore_case: true });
  assert.equal(w1!.match.path, '/cart');
  assert.equal(w1!.route.upgrade_configs, undefined, 'upgrades: [] → none enabled (Envoy answers 403)');
  assert.deepEqual(byName('ws')[0]!.route.upgrade_configs, [{ upgrade_type: 'websocket', enabled: { value: true } }, { upgrade_type: 'h2c', enabled: { value: true } }]);
  assert.deepEqual(byName('catch-all')[0]!.route.upgrade_configs, [{ upgrade_type: 'websocket', enabled: { value: true } }]);
  const split = byName('split')[0]!;
  assert.deepEqual(split.match.safe_regex, { regex: '/v[0-9]+/.*' });
  assert.deepEqual(split.match.headers, [
    { name: 'x-canary', string_match: { exact: '1' } },
    { name: 'x-debug', present_match: true, invert_match: true },
    { name: 'x-p', string_match: { prefix: 'a' } },
    { name: 'x-r', string_match: { safe_regex: { regex: 'b+' } } },
  ]);
  assert.deepEqual(split.route.weighted_clusters, { clusters: [{ name: 'acme/api', weight: { value: 80 } }, { name: 'acme/ring', weight: { value: 20 } }] });
  assert.deepEqual(byName('isomesh.vip.web').map((r) => r.match.headers[0].string_match.exact), ['10.96.0.10:80', '10.96.0.10']);
  assert.deepEqual(byName('isomesh.vip.api')[0]!.match.headers[0].string_match.exact, '[fd00::10]:8080');
  assert.deepEqual(byName('isomesh.upstream.cart')[0]!.match.headers, [{ name: UPSTREAM_HEADER, string_match: { exact: 'cart' } }]);
});

test('envoy route actions: timeouts, retries, hash policies, rate-limit descriptors, ext_proc per route', () => {
  const cfg = richTenant('acme');
  const routes = routesOf(translateTenant(cfg, facts(), 'envoy').resources.route.get('isomesh.acme')!);
  const get = (n: string) => routes.find((r) => r.name === n)!;
  assert.deepEqual(get('api').route.timeout, { seconds: 2, nanos: 500_000_000 }, 'route timeoutMs');
  assert.deepEqual(get('catch-all').route.timeout, { seconds: 15, nanos: 0 }, 'service timeoutMs');
  assert.deepEqual(get('catch-all').route.retry_policy, {
    retry_on: '5xx,connect-failure',
    num_retries: { value: 2 },
    retriable_request_headers: [{ name: ':method', string_match: { safe_regex: { regex: 'GET|HEAD|OPTIONS|TRACE|PUT|DELETE' } } }],
  });
  assert.deepEqual(get('api').route.hash_policy, [{ header: { header_name: 'x-user' } }]);
  assert.deepEqual(get('wild').route.hash_policy, [{ cookie: { name: 'sid' } }]);
  assert.deepEqual(get('split').route.hash_policy, [{ header: { header_name: 'x-user' } }, { connection_properties: { source_ip: true } }]);
  assert.equal(get('catch-all').route.hash_policy, undefined, 'least_request has no hash');
  assert.deepEqual(get('catch-all').route.rate_limits, [
    { actions: [{ remote_address: {} }] },
    { actions: [{ generic_key: { descriptor_value: 'catch-all', descriptor_key: 'route' } }, { request_headers: { header_name: 'x-user', descriptor_key: 'header:x-user' } }] },
    { actions: [{ request_headers: { header_name: ':method', descriptor_key: 'method' } }, { request_headers: { header_name: ':path', descriptor_key: 'path' } }] },
  ]);
  // a VIP default has no route name: limits keyed by route do not apply there (as in the built-in proxy)
  assert.deepEqual(get('isomesh.vip.web').route.rate_limits.length, 2);
  // ext_proc learns the route (and the service when there is one) per route; modes follow the scoped entries
  const apiExt = get('api').typed_per_filter_config['envoy.filters.http.ext_proc'];
  assert.equal(apiExt['@type'], `type.googleapis.com/${EXT.extProcPerRoute}`);
  assert.deepEqual(apiExt.overrides.grpc_initial_metadata, [
    { key: 'x-isomesh-tenant', value: 'acme' },
    { key: 'x-isomesh-route', value: 'api' },
    { key: 'x-isomesh-service', value: 'api' },
  ]);
  assert.deepEqual(
    [apiExt.overrides.processing_mode.response_header_mode, apiExt.overrides.processing_mode.request_body_mode, apiExt.overrides.processing_mode.response_body_mode],
    ['SEND', 'BUFFERED', 'BUFFERED'],
    'the "body" entry (route api) declares request and (canary) response bodies and an onResponse hook',
  );
  const splitExt = get('split').typed_per_filter_config['envoy.filters.http.ext_proc'].overrides;
  assert.deepEqual(splitExt.grpc_initial_metadata.map((m: Obj) => m.key), ['x-isomesh-tenant', 'x-isomesh-route'], 'weighted: no single service');
  assert.equal(splitExt.processing_mode.request_body_mode, 'NONE');
  assert.equal(get('isomesh.upstream.web').typed_per_filter_config, undefined);
});

test('clusters and endpoints: LB policies per flavor, breakers, outlier detection, http2, one locality per endpoint', () => {
  const cfg = richTenant('acme');
  const envoy = translateTenant(cfg, facts(), 'envoy').resources;
  const grpc = translateTenant(cfg, facts(), 'proxyless').resources;
  assert.equal(envoy.cluster.get('acme/web')!.lb_policy, 'LEAST_REQUEST');
  assert.equal(grpc.cluster.get('acme/web')!.lb_policy, 'ROUND_ROBIN', 'proxyless clients have no least_request');
  assert.equal(envoy.cluster.get('acme/api')!.lb_policy, 'RING_HASH');
  assert.equal(grpc.cluster.get('acme/api')!.lb_policy, 'RING_HASH');
  const web = envoy.cluster.get('acme/web')!;
  assert.deepEqual(web.eds_cluster_config, { eds_config: { ads: {}, resource_api_version: 'V3' }, service_name: 'acme/web' });
  assert.deepEqual(web.connect_timeout, { seconds: 1, nanos: 0 });
  assert.deepEqual(web.circuit_breakers, { thresholds: [{ priority: 'DEFAULT', max_connections: { value: 100 }, max_pending_requests: { value: 10 } }] });
  assert.deepEqual(web.outlier_detection, { consecutive_5xx: { value: 5 }, base_ejection_time: { seconds: 30, nanos: 0 }, max_ejection_time: { seconds: 30, nanos: 0 }, max_ejection_percent: { value: 100 } });
  assert.equal(web.typed_extension_protocol_options, undefined, 'http1 service');
  for (const n of ['acme/api', 'acme/cart', 'acme/ring']) {
    assert.deepEqual(envoy.cluster.get(n)!.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'].explicit_http_config, { http2_protocol_options: {} }, n);
  }
  assert.deepEqual(Object.keys(grpc.cluster.get('acme/web')!).sort(), ['connect_timeout', 'eds_cluster_config', 'lb_policy', 'name', 'type'], 'proxyless: only what gRPC implements');
  const cla = envoy.endpoint.get('acme/web')!;
  assert.deepEqual(cla, grpc.endpoint.get('acme/web'));
  assert.deepEqual(cla.endpoints, [
    { locality: { region: 'isomesh', zone: 'acme', sub_zone: '127.0.0.1:9001' }, lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 9001 } } }, load_balancing_weight: { value: 3 } }], load_balancing_weight: { value: 3 } },
    { locality: { region: 'isomesh', zone: 'acme', sub_zone: '127.0.0.2:9001' }, lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.2', port_value: 9001 } } }, load_balancing_weight: { value: 1 } }], load_balancing_weight: { value: 1 } },
    // a hostname endpoint: the control plane's resolved addresses, in the endpoint's own locality
    { locality: { region: 'isomesh', zone: 'acme', sub_zone: 'localhost:9002' }, lb_endpoints: [{ endpoint: { address: { socket_address: { address: '127.0.0.1', port_value: 9002 } } }, load_balancing_weight: { value: 2 } }], load_balancing_weight: { value: 2 } },
  ]);
});

test('hostname endpoints: resolved to IP literals; unresolved ones are left out with a warning; duplicates get distinct localities', () => {
  const cfg = tenant('t', {
    services: [
      service('s', {
        endpoints: [
          { address: 'db.internal', port: 5432, weight: 1 },
          { address: 'nowhere.invalid', port: 1, weight: 1 },
          { address: '127.0.0.9', port: 80, weight: 1 },
          { address: '127.0.0.9', port: 80, weight: 2 },
        ],
      }),
    ],
  });
  const f = facts({ resolve: (h) => (h === 'db.internal' ? ['10.1.0.1', 'fd00::1', 'not-an-ip', '10.1.0.1'] : undefined) });
  const tr = translateTenant(cfg, f, 'envoy');
  const eps = tr.resources.endpoint.get('t/s')!.endpoints as Obj[];
  assert.deepEqual(eps[0]!.lb_endpoints.map((e: Obj) => e.endpoint.address.socket_address.address), ['10.1.0.1', 'fd00::1']);
  assert.deepEqual(eps.map((e) => e.locality.sub_zone), ['db.internal:5432', '127.0.0.9:80', '127.0.0.9:80#1']);
  assert.equal(tr.warnings.length, 1);
  assert.match(tr.warnings[0]!, /nowhere\.invalid:1 did not resolve/);
});

test('proxyless flavor: an api_listener per grpc service, routes that reach it, weighted clusters, gRPC route semantics', () => {
  const cfg = richTenant('acme');
  const { resources } = translateTenant(cfg, facts(), 'proxyless');
  assert.deepEqual([...resources.listener.keys()].sort(), ['api.acme', 'ring.acme'], 'only protocol: grpc services');
  const l = resources.listener.get('api.acme')!;
  assert.equal(l.address, undefined);
  const hcm = hcmOf(l);
  assert.deepEqual(hcm.rds.route_config_name, 'api.acme');
  assert.deepEqual(hcm.http_filters.map((f: Obj) => f.name), ['envoy.filters.http.router'], 'router last (and alone)');
  const routes = routesOf(resources.route.get('api.acme')!);
  // api: host api.example.com ≠ authority "api.acme" → unreachable for a gRPC channel, left out;
  // split reaches api (80/20 with ring); catch-all goes to web, not api; then the service default.
  assert.deepEqual(routes.map((r) => r.name), ['split', 'isomesh.default.api']);
  const split = routes[0]!;
  assert.deepEqual(split.route.weighted_clusters, { clusters: [{ name: 'acme/api', weight: { value: 80 } }, { name: 'acme/ring', weight: { value: 20 } }], total_weight: { value: 100 } });
  assert.equal(split.route.timeout, undefined);
  assert.deepEqual(split.route.max_stream_duration, { max_stream_duration: { seconds: 15, nanos: 0 } });
  assert.deepEqual(split.route.hash_policy, [{ header: { header_name: 'x-user' } }, { filter_state: { key: 'io.grpc.channel_id' } }]);
  assert.equal(split.route.upgrade_configs, undefined);
  assert.ok(!split.match.headers.some((h: Obj) => h.name.startsWith(':')), 'no pseudo-header matchers for gRPC');
  // gRPC C-core before 1.52 knows only the per-kind header fields (not string_match)
  assert.deepEqual(split.match.headers, [
    { name: 'x-canary', exact_match: '1' },
    { name: 'x-debug', present_match: true, invert_match: true },
    { name: 'x-p', prefix_match: 'a' },
    { name: 'x-r', safe_regex_match: { regex: 'b+' } },
  ]);
  assert.deepEqual(routes[1]!.match, { prefix: '' });
  assert.deepEqual(routes[1]!.route.cluster, 'acme/api');
  // a method other than POST can never match a gRPC call
  const post = tenant('g', { services: [service('s', { protocol: 'grpc', retries: { attempts: 3, on: ['5xx'] } })], routes: [route('get', { match: { method: 'GET' }, to: { service: 's' } }), route('post', { match: { method: 'post', host: '*.g' }, to: { service: 's' } })] });
  const pr = routesOf(translateTenant(post, facts(), 'proxyless').resources.route.get('s.g')!);
  assert.deepEqual(pr.map((r) => r.name), ['post', 'isomesh.default.s']);
  assert.deepEqual(pr[0]!.route.retry_policy, { retry_on: 'unavailable,internal', num_retries: { value: 3 } });
});

test('every resource of both flavors passes PGV and data-plane validation, encodes as its Envoy type, and references only its own tenant', () => {
  const protos = envoyProtos();
  const validator = dataPlaneValidator(protos);
  for (const flavor of ['envoy', 'proxyless'] as Flavor[]) {
    const node = translateNode(facts(), flavor);
    for (const cfg of [richTenant('acme'), richTenant('other', 17001), tenant('empty')]) {
      const { resources } = translateTenant(cfg, facts(), flavor);
      for (const kind of RESOURCE_KINDS) {
        for (const [name, obj] of resources[kind]) {
          assert.deepEqual([...validator.validate(TYPE_URLS[kind], obj), ...flavorErrors(kind, flavor, obj)], [], `${flavor} ${kind} ${name}`);
          assert.equal(tenantOf(kind, flavor, name), cfg.name, `${name} names its tenant`);
          const decoded = protos.toJSON(TYPE_URLS[kind], protos.encode(TYPE_URLS[kind], obj));
          assert.equal(decoded.name ?? decoded.cluster_name, name);
          for (const ref of referencesOf(kind, obj)) {
            const own = ref.name === GRPC_CLUSTER ? node[ref.kind].has(ref.name) : resources[ref.kind].has(ref.name) && tenantOf(ref.kind, flavor, ref.name) === cfg.name;
            assert.ok(own, `${flavor} ${name} → ${ref.kind} ${ref.name}`);
          }
        }
      }
    }
  }
});

test('node resources: the isomesh_grpc cluster (unix socket or TCP), Envoy only', () => {
  const pipe = translateNode(facts(), 'envoy').cluster.get(GRPC_CLUSTER)!;
  assert.deepEqual(pipe.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, { pipe: { path: '/var/lib/isomesh/grpc.sock' } });
  assert.equal(pipe.type, 'STATIC');
  const tcp = translateNode(facts({ grpcTarget: { host: '127.0.0.1', port: 7701 } }), 'envoy').cluster.get(GRPC_CLUSTER)!;
  assert.deepEqual(tcp.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, { socket_address: { address: '127.0.0.1', port_value: 7701 } });
  assert.equal(translateNode(facts(), 'proxyless').cluster.size, 0);
});

test('a regex RE2 refuses fails the tenant translation (never sent); generated regexes are within Envoy RE2 bounds', () => {
  const bad = tenant('t', { services: [service('s')], routes: [route('r', { match: { pathRegex: '/(?=x)' }, to: { service: 's' } })] });
  assert.throws(() => translateTenant(bad, facts(), 'envoy'), (err: Error) => err instanceof TranslateError && /route r: regex .* RE2/.test(err.message));
  const header = tenant('t', { services: [service('s')], routes: [route('r', { match: { headers: [{ name: 'x', regex: '(a)\\1' }] }, to: { service: 's' } })] });
  assert.throws(() => translateTenant(header, facts(), 'proxyless'), TranslateError);
  assert.ok(RE2JS.compile('GET|HEAD|OPTIONS|TRACE|PUT|DELETE').programSize() <= 100);
});

test('stale references and zero weights: dropped or reduced as the built-in proxy does, never pointed elsewhere', () => {
  const cfg = tenant('t', {
    services: [service('a'), service('b')],
    routes: [
      route('gone', { to: { service: 'missing' } }),
      route('zero', { match: { pathPrefix: '/z' }, to: { weighted: [{ service: 'a', weight: 0 }, { service: 'b', weight: 0 }] } }),
      route('half', { match: { pathPrefix: '/h' }, to: { weighted: [{ service: 'a', weight: 0 }, { service: 'b', weight: 5 }] } }),
    ],
  });
  const routes = routesOf(translateTenant(cfg, facts(), 'envoy').resources.route.get('isomesh.t')!);
  assert.deepEqual(routes.map((r) => [r.name, r.route.cluster]), [['zero', 't/a'], ['half', 't/b']]);
});
