import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EXT, TYPE_URLS, envoyProtos } from './protos.ts';
import { dataPlaneValidator } from './validate.ts';

const protos = envoyProtos();
const v = dataPlaneValidator(protos);
const ADS = { ads: {}, resource_api_version: 'V3' };
const okCluster = { name: 't/s', type: 'EDS', eds_cluster_config: { eds_config: ADS, service_name: 't/s' }, connect_timeout: { seconds: 1, nanos: 0 } };
const router = { name: 'envoy.filters.http.router', typed_config: { '@type': `type.googleapis.com/${EXT.router}` } };
const hcm = (over: Record<string, unknown> = {}) => ({ '@type': `type.googleapis.com/${EXT.hcm}`, stat_prefix: 's', rds: { route_config_name: 'r', config_source: ADS }, http_filters: [router], ...over });
const listener = (h: Record<string, unknown>) => ({ name: 'l', api_listener: { api_listener: h } });
const route = (over: Record<string, unknown>) => ({ name: 'r', virtual_hosts: [{ name: 'v', domains: ['*'], routes: [{ match: { prefix: '/' }, route: { cluster: 'c' }, ...over }] }] });
const cla = (eps: unknown[]) => ({ cluster_name: 't/s', endpoints: eps });
const ep = (address: string, port: number, weight = 1, sub = `${address}:${port}`) => ({
  locality: { sub_zone: sub },
  lb_endpoints: [{ endpoint: { address: { socket_address: { address, port_value: port } } }, load_balancing_weight: { value: weight } }],
  load_balancing_weight: { value: weight },
});

/** Asserts the object is refused, with an error matching `re`. */
function fails(type: string, obj: unknown, re: RegExp): void {
  const errors = v.validate(type, obj);
  assert.ok(errors.some((e) => re.test(e)), `expected an error matching ${re}, got ${JSON.stringify(errors)}`);
}

test('valid resources pass', () => {
  assert.deepEqual(v.validate(TYPE_URLS.cluster, okCluster), []);
  assert.deepEqual(v.validate(TYPE_URLS.listener, listener(hcm())), []);
  assert.deepEqual(v.validate(TYPE_URLS.route, route({})), []);
  assert.deepEqual(v.validate(TYPE_URLS.endpoint, cla([ep('127.0.0.1', 80), ep('::1', 81, 3)])), []);
});

test('PGV string rules: min_len on an unset proto3 field, well_known_regex, max_bytes', () => {
  fails(TYPE_URLS.cluster, { ...okCluster, name: undefined }, /Cluster\.name: must be at least 1 characters/);
  fails(TYPE_URLS.cluster, { ...okCluster, name: '' }, /Cluster\.name: must be at least 1 characters/);
  fails(TYPE_URLS.listener, listener(hcm({ stat_prefix: undefined })), /<HttpConnectionManager>\.stat_prefix: must be at least 1/);
  fails(TYPE_URLS.route, route({ match: { prefix: '/', headers: [{ name: 'x\nbad', present_match: true }] } }), /headers\[0\]\.name: not a valid HTTP header name/);
  fails(TYPE_URLS.route, route({ request_headers_to_add: [{ header: { key: 'k', value: 'v'.repeat(16385) } }] }), /value: must be at most 16384 bytes/);
});

test('PGV enum, number, duration and wrapper rules', () => {
  fails(TYPE_URLS.cluster, { ...okCluster, type: 'BOGUS' }, /type: "BOGUS" is not a value of DiscoveryType/);
  fails(TYPE_URLS.cluster, { ...okCluster, lb_policy: 99 }, /lb_policy: 99 is not a defined value/);
  fails(TYPE_URLS.cluster, { ...okCluster, connect_timeout: { seconds: 0, nanos: 0 } }, /connect_timeout: 0 is out of range/);
  fails(TYPE_URLS.endpoint, cla([{ ...ep('127.0.0.1', 80), load_balancing_weight: { value: 0 } }]), /endpoints\[0\]\.load_balancing_weight: 0 is out of range/);
  fails(TYPE_URLS.endpoint, cla([ep('127.0.0.1', 70000)]), /port_value: 70000 is (out of range|not a port)/);
  fails(TYPE_URLS.cluster, { ...okCluster, per_connection_buffer_limit_bytes: { value: 'x' } }, /"x" is not a uint32/);
});

test('PGV message, oneof and repeated rules', () => {
  fails(TYPE_URLS.route, route({ route: undefined }), /routes\[0\]: one of route, redirect, direct_response.* is required/);
  fails(TYPE_URLS.route, { name: 'r', virtual_hosts: [{ name: 'v', domains: [], routes: [] }] }, /domains: at least 1 items required/);
  fails(TYPE_URLS.route, route({ route: { weighted_clusters: { clusters: [] } } }), /clusters: at least 1 items required/);
  fails(TYPE_URLS.endpoint, cla([{ lb_endpoints: [{ endpoint: { address: {} } }] }]), /address: one of socket_address, pipe, envoy_internal_address is required/);
  fails('envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor', {}, /grpc_service: is required/);
});

test('shape checks PGV does not make but an encoder would need: unknown fields, wrong kinds, unknown Any types', () => {
  fails(TYPE_URLS.cluster, { ...okCluster, nmae: 'x' }, /Cluster has no field "nmae"/);
  fails(TYPE_URLS.cluster, { ...okCluster, eds_cluster_config: 'ads' }, /expected a EdsClusterConfig message/);
  fails(TYPE_URLS.cluster, { ...okCluster, transport_socket_matches: {} }, /expected a list/);
  fails(TYPE_URLS.listener, listener({ '@type': 'type.googleapis.com/envoy.nope.v3.Nope' }), /unknown type type\.googleapis\.com\/envoy\.nope\.v3\.Nope/);
  fails(TYPE_URLS.listener, listener({ '@type': 'nope/x' }), /Any without a type\.googleapis\.com\/ type URL/);
  // a packed Any is decoded and checked too
  const packed = protos.pack(EXT.hcm, hcm({ stat_prefix: '' }));
  fails(TYPE_URLS.listener, { name: 'l', api_listener: { api_listener: packed } }, /stat_prefix: must be at least 1/);
});

test('data-plane rules of real clients', () => {
  fails(TYPE_URLS.listener, listener(hcm({ http_filters: [] })), /http_filters: empty/);
  const ext = { name: 'envoy.filters.http.ext_proc', typed_config: { '@type': `type.googleapis.com/${EXT.extProc}`, grpc_service: { envoy_grpc: { cluster_name: 'c' } } } };
  const errs = v.validate(TYPE_URLS.listener, listener(hcm({ http_filters: [router, ext] })));
  assert.ok(errs.some((e) => /router must be the last filter/.test(e)), JSON.stringify(errs));
  fails(TYPE_URLS.listener, listener(hcm({ http_filters: [router, router] })), /duplicate filter names|appears before/);
  fails(TYPE_URLS.route, route({ route: { weighted_clusters: { clusters: [{ name: 'a', weight: { value: 0 } }] } } }), /weights must sum/);
  fails(TYPE_URLS.endpoint, cla([ep('127.0.0.1', 80), ep('127.0.0.2', 80, 1, '127.0.0.1:80')]), /endpoints\[1\]: duplicate locality/);
  fails(TYPE_URLS.endpoint, cla([ep('db.internal', 80)]), /"db\.internal" is not an IP address/);
  fails(TYPE_URLS.route, route({ match: { safe_regex: { regex: '(a)\\1' } } }), /regex: .*RE2/);
  fails(TYPE_URLS.cluster, { ...okCluster, eds_cluster_config: { service_name: 'x' } }, /eds_config: must be ads or self/);
  fails(TYPE_URLS.cluster, { ...okCluster, connect_timeout: { seconds: 1, nanos: 1e9 } }, /nanos out of range/);
  fails(TYPE_URLS.cluster, { ...okCluster, lb_policy: 'RING_HASH', ring_hash_lb_config: { minimum_ring_size: { value: 4096 }, maximum_ring_size: { value: 2048 } } }, /ring sizes out of range/);
});

test('the custom encoder agrees with protobufjs on every field kind it meets', () => {
  const samples: Array<[string, Record<string, unknown>]> = [
    [TYPE_URLS.cluster, { ...okCluster, lb_policy: 'RING_HASH', typed_extension_protocol_options: { 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions': { '@type': `type.googleapis.com/${EXT.httpProtocolOptions}`, explicit_http_config: { http2_protocol_options: {} } } }, common_lb_config: { healthy_panic_threshold: { value: 1.5 } } }],
    [TYPE_URLS.listener, { ...listener(hcm({ codec_type: 'HTTP2', merge_slashes: false, normalize_path: { value: true } })), per_connection_buffer_limit_bytes: { value: 0 } }],
    [TYPE_URLS.endpoint, cla([ep('::1', 65535, 10_000), ep('127.0.0.1', 1)])],
    [TYPE_URLS.route, { ...route({ route: { cluster: 'é⚡', timeout: { seconds: '3600', nanos: 5 } }, metadata: { filter_metadata: { a: { fields: { k: { stringValue: 'v' }, n: { numberValue: -2.5 } } } } } }) }],
    ['envoy.service.discovery.v3.DiscoveryRequest', { version_info: '1', error_detail: { code: -3, message: 'neg' }, resource_names: ['a', 'b'] }],
    ['envoy.config.core.v3.Node', { id: 'n', metadata: { fields: {} }, client_features: [] }],
  ];
  for (const [type, obj] of samples) {
    const ours = Buffer.from(protos.encode(type, obj));
    const theirs = Buffer.from(protos.encodeWithProtobufjs(type, obj));
    assert.deepEqual(protos.toJSON(type, ours), protos.toJSON(type, theirs), type);
  }
  assert.throws(() => protos.encode(TYPE_URLS.cluster, { nmae: 1 }), /no field "nmae"/);
  assert.throws(() => protos.encode(TYPE_URLS.cluster, { type: 'BOGUS' }), /not an enum value/);
});
