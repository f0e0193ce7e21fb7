// What the ext_proc server relies on in the translated Listener and RouteConfiguration: the tenant,
// route and service metadata, the attributes, mode_override, routing-header mutations, and the
// route-choice routes (the client cannot send their header; the upstream never sees it).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { richTenant, facts } from './fixtures.ts';
import { REQUEST_ATTRIBUTES } from './ext-proc-wire.ts';
import { EXT, TYPE_URLS } from './protos.ts';
import { ROUTE_METADATA, SERVICE_METADATA, TENANT_METADATA, UPSTREAM_HEADER, translateTenant } from './translate.ts';
import { dataPlaneValidator, flavorErrors } from './validate.ts';
import { envoyProtos } from './protos.ts';

type Obj = Record<string, any>;

test('translation for ext_proc: metadata, attributes, mode_override, routing mutations; route-choice routes strip their header', () => {
  const cfg = richTenant('acme', 17042);
  assert.ok(cfg.chain.length > 0 && cfg.services.length > 1, 'a tenant with a chain and several services');
  const { resources } = translateTenant(cfg, facts(), 'envoy');
  const listener = resources.listener.get('isomesh.acme') as Obj;
  const hcm = listener.filter_chains[0].filters[0].typed_config;
  const ext = hcm.http_filters.find((f: Obj) => f.name === 'envoy.filters.http.ext_proc').typed_config;
  assert.equal(ext['@type'], `type.googleapis.com/${EXT.extProc}`);
  assert.deepEqual(ext.grpc_service.initial_metadata, [{ key: TENANT_METADATA, value: 'acme' }]);
  assert.deepEqual(ext.request_attributes, [...REQUEST_ATTRIBUTES]);
  assert.deepEqual(ext.request_attributes, ['source.address', 'xds.cluster_name']);
  assert.equal(ext.allow_mode_override, true);
  assert.deepEqual(ext.mutation_rules, { allow_all_routing: { value: true } });
  assert.equal(ext.failure_mode_allow, false);
  // the client's copy of the routing header is removed before any filter runs
  const early = hcm.early_header_mutation_extensions.map((e: Obj) => e.typed_config.mutations);
  assert.deepEqual(early, [[{ remove: UPSTREAM_HEADER }]]);

  const routes = (resources.route.get('isomesh.acme') as Obj).virtual_hosts[0].routes as Obj[];
  const choice = routes.filter((r) => String(r.name).startsWith('isomesh.upstream.'));
  assert.deepEqual(choice.map((r) => r.name), cfg.services.map((s) => `isomesh.upstream.${s.name}`), 'one per service of the tenant, nothing else');
  assert.ok(routes.indexOf(choice.at(-1)!) === choice.length - 1, 'first in the route table');
  for (const r of choice) {
    const svc = String(r.name).slice('isomesh.upstream.'.length);
    assert.deepEqual(r.match.headers, [{ name: UPSTREAM_HEADER, string_match: { exact: svc } }]);
    assert.equal(r.route.cluster, `acme/${svc}`, "only the tenant's own cluster");
    assert.deepEqual(r.request_headers_to_remove, [UPSTREAM_HEADER]);
  }
  // per route: the route and (one-service routes) the service as stream metadata
  const named = routes.find((r) => r.typed_per_filter_config && !String(r.name).startsWith('isomesh.'))!;
  const per = named.typed_per_filter_config['envoy.filters.http.ext_proc'];
  const md = Object.fromEntries(per.overrides.grpc_initial_metadata.map((h: Obj) => [h.key, h.value]));
  assert.equal(md[ROUTE_METADATA], named.name);
  assert.ok(md[SERVICE_METADATA] === undefined || cfg.services.some((s) => s.name === md[SERVICE_METADATA]));

  // and it is all valid for Envoy
  const v = dataPlaneValidator(envoyProtos());
  const p = envoyProtos();
  for (const [kind, set] of Object.entries(resources) as Array<[keyof typeof TYPE_URLS, Map<string, Obj>]>) {
    for (const [name, obj] of set) {
      const decoded = p.decode(TYPE_URLS[kind], p.encode(TYPE_URLS[kind], obj));
      assert.deepEqual([...v.validate(TYPE_URLS[kind], decoded), ...flavorErrors(kind, 'envoy', obj)], [], `${kind} ${name}`);
    }
  }
});
