import assert from 'node:assert/strict';
import { test } from 'node:test';
import pino from 'pino';
import { facts, richTenant, route, service, tenant } from './fixtures.ts';
import { RESOURCE_KINDS, TYPE_URLS, envoyProtos, type ResourceKind } from './protos.ts';
import { Snapshot, SnapshotCache, type ChangeEvent, type TenantPart } from './snapshot.ts';
import { dataPlaneValidator } from './validate.ts';
import { decodeDiscoveryRequest, encodeAny, encodeDeltaResponse, encodeDiscoveryResponse } from './wire.ts';

const protos = envoyProtos();

function newCache(onRejected?: (t: string, e: string) => void): { cache: SnapshotCache; events: ChangeEvent[] } {
  const cache = new SnapshotCache({ protos, validator: dataPlaneValidator(protos), logger: pino({ level: 'silent' }), ...(onRejected ? { onRejected } : {}) });
  cache.setNode(facts());
  const events: ChangeEvent[] = [];
  cache.onChange((ev) => events.push(ev));
  return { cache, events };
}

const names = (s: Snapshot, k: ResourceKind) => [...s.resources(k)].map((r) => r.name).sort();

test('views: the admin sees every tenant, a tenant only its own; both are consistent and decode as Envoy types', () => {
  const { cache } = newCache();
  assert.ok(cache.setTenant(richTenant('acme', 17000), facts()));
  assert.ok(cache.setTenant(richTenant('beta', 17001), facts()));
  const all = cache.snapshot('envoy', '*');
  assert.deepEqual(names(all, 'listener'), ['isomesh.acme', 'isomesh.beta']);
  assert.deepEqual(names(all, 'cluster'), ['acme/api', 'acme/cart', 'acme/ring', 'acme/web', 'beta/api', 'beta/cart', 'beta/ring', 'beta/web', 'isomesh_grpc']);
  const acme = cache.snapshot('envoy', 'acme');
  assert.deepEqual(names(acme, 'listener'), ['isomesh.acme']);
  assert.deepEqual(names(acme, 'cluster'), ['acme/api', 'acme/cart', 'acme/ring', 'acme/web', 'isomesh_grpc']);
  assert.equal(acme.get('cluster', 'beta/web'), undefined, "another tenant's resource is absent from the view");
  assert.equal(cache.snapshot('envoy', 'nobody').count('listener'), 0);
  assert.deepEqual(names(cache.snapshot('proxyless', 'acme'), 'listener'), ['api.acme', 'ring.acme']);
  for (const s of [all, acme, cache.snapshot('proxyless', '*')]) {
    assert.deepEqual(s.consistent(), [], `${s.flavor} ${s.scope}`);
    for (const kind of RESOURCE_KINDS) {
      for (const r of s.resources(kind)) {
        const any = protos.decode<{ type_url: string; value: Uint8Array }>('google.protobuf.Any', r.any);
        assert.equal(any.type_url, TYPE_URLS[kind]);
        const msg = protos.decode<Record<string, unknown>>(TYPE_URLS[kind], any.value);
        assert.equal(msg.name ?? msg.cluster_name, r.name);
      }
    }
  }
  assert.equal(cache.snapshot('envoy', '*'), all, 'views are cached until something changes');
});

test('versions per type URL: a route change bumps RouteConfiguration only, for the admin view and that tenant', () => {
  const { cache, events } = newCache();
  const acme = tenant('acme', { listenerPort: 17000, services: [service('web')], routes: [route('r', { match: { pathPrefix: '/' }, to: { service: 'web' } })] });
  cache.setTenant(acme, facts());
  cache.setTenant(tenant('beta', { listenerPort: 17001, services: [service('web')] }), facts());
  const before = { all: cache.snapshot('envoy', '*'), acme: cache.snapshot('envoy', 'acme'), beta: cache.snapshot('envoy', 'beta') };
  const betaRes = [...before.beta.resources('cluster')];
  events.length = 0;
  cache.setTenant({ ...acme, generation: 2, routes: [route('r', { match: { pathPrefix: '/v2' }, to: { service: 'web' } })] }, facts());
  const after = { all: cache.snapshot('envoy', '*'), acme: cache.snapshot('envoy', 'acme'), beta: cache.snapshot('envoy', 'beta') };
  for (const view of ['all', 'acme'] as const) {
    assert.notEqual(after[view].version('route'), before[view].version('route'), view);
    for (const k of ['cluster', 'endpoint', 'listener'] as const) assert.equal(after[view].version(k), before[view].version(k), `${view} ${k}`);
  }
  for (const k of RESOURCE_KINDS) assert.equal(after.beta.version(k), before.beta.version(k), `beta ${k} untouched`);
  assert.deepEqual([...after.beta.resources('cluster')], betaRes, "beta's resources are the same objects");
  assert.deepEqual(events.map((e) => [e.flavor, e.tenant, Object.keys(e.changed)]), [['envoy', 'acme', ['route']]], 'proxyless (no grpc service) unchanged, so no event');
  assert.deepEqual(events[0]!.changed.route, { updated: ['isomesh.acme'], removed: [] });
  // the same config again changes nothing
  events.length = 0;
  cache.setTenant({ ...acme, generation: 3, routes: [route('r', { match: { pathPrefix: '/v2' }, to: { service: 'web' } })] }, facts());
  assert.deepEqual(events, []);
  assert.equal(cache.snapshot('envoy', '*'), after.all);
});

test('a refused config keeps the last good resources, is counted and shown, and leaves other tenants alone', () => {
  const rejected: string[] = [];
  const { cache } = newCache((t, e) => rejected.push(`${t}: ${e}`));
  const good = tenant('acme', { services: [service('web')], routes: [route('r', { to: { service: 'web' } })] });
  assert.ok(cache.setTenant(good, facts()));
  const served = cache.snapshot('envoy', 'acme');
  // a regex RE2 refuses (the store refuses it too; this is the last line of defence)
  const bad = { ...good, generation: 2, routes: [route('r', { match: { pathRegex: '(?<=x)y' }, to: { service: 'web' } })] };
  assert.equal(cache.setTenant(bad, facts()), false);
  assert.equal(cache.snapshot('envoy', 'acme'), served, 'nothing changed');
  assert.equal(rejected.length, 1);
  assert.match(rejected[0]!, /^acme: route r: regex/);
  const st = cache.status().acme!;
  assert.deepEqual([st.generation, st.served], [2, 1]);
  assert.match(st.error!, /RE2/);
  // an invalid resource (an endpoint weight out of range) is refused by validation, never sent
  const heavy = { ...good, generation: 3, services: [service('web', { endpoints: [{ address: '127.0.0.1', port: 0, weight: 1 }] })] };
  assert.equal(cache.setTenant(heavy, facts()), false);
  assert.match(cache.status().acme!.error!, /endpoint acme\/web: .*port_value/);
  assert.ok(cache.setTenant(tenant('beta', { listenerPort: 17001 }), facts()), 'other tenants keep building');
  assert.ok(cache.setTenant({ ...good, generation: 4 }, facts()));
  assert.equal(cache.status().acme!.error, undefined);
});

test('two tenants can never be served on one listener socket', () => {
  const { cache } = newCache();
  assert.ok(cache.setTenant(tenant('acme', { listenerPort: 17000 }), facts()));
  assert.equal(cache.setTenant(tenant('beta', { listenerPort: 17000 }), facts()), false);
  assert.match(cache.status().beta!.error!, /127\.0\.0\.1:17000 is already served for another tenant/);
  assert.equal(cache.snapshot('envoy', '*').get('listener', 'isomesh.beta'), undefined);
  // once acme moves away (or is removed) beta may have it
  cache.removeTenant('acme');
  assert.ok(cache.setTenant(tenant('beta', { listenerPort: 17000 }), facts()));
});

test('removing a tenant removes its resources, tells listeners the names, and bumps its own view', () => {
  const { cache, events } = newCache();
  cache.setTenant(richTenant('acme'), facts());
  const v = cache.snapshot('envoy', 'acme').version('listener');
  events.length = 0;
  cache.removeTenant('acme');
  assert.equal(cache.snapshot('envoy', '*').count('listener'), 0);
  assert.notEqual(cache.snapshot('envoy', 'acme').version('listener'), v);
  const envoy = events.find((e) => e.flavor === 'envoy')!;
  assert.deepEqual(envoy.changed.listener, { updated: [], removed: ['isomesh.acme'] });
  assert.deepEqual(envoy.changed.cluster!.removed.sort(), ['acme/api', 'acme/cart', 'acme/ring', 'acme/web']);
});

test('consistent() names every dangling reference', () => {
  const { cache } = newCache();
  cache.setTenant(tenant('acme', { services: [service('web')] }), facts());
  const part = { tenant: 'acme', resources: { cluster: new Map(), endpoint: new Map(), listener: new Map(), route: new Map() }, revision: { cluster: 1, endpoint: 1, listener: 1, route: 1 } } as unknown as TenantPart;
  const r = cache.snapshot('envoy', 'acme').get('route', 'isomesh.acme')!;
  (part.resources.route as Map<string, unknown>).set('isomesh.acme', { ...r, refs: [{ kind: 'cluster', name: 'acme/gone' }] });
  const empty = { tenant: null, resources: { cluster: new Map(), endpoint: new Map(), listener: new Map(), route: new Map() }, revision: part.revision } as unknown as TenantPart;
  const s = new Snapshot('envoy', 'acme', new Map([['acme', part]]), empty, { cluster: '1', endpoint: '1', listener: '1', route: '1' });
  assert.deepEqual(s.consistent(), ['route isomesh.acme → cluster acme/gone']);
});

test('wire: hand-encoded ADS responses decode as DiscoveryResponse / DeltaDiscoveryResponse', () => {
  const any = encodeAny(TYPE_URLS.cluster, protos.encode(TYPE_URLS.cluster, { name: 'a/b', type: 'STATIC' }));
  const sotw = protos.decode<any>('envoy.service.discovery.v3.DiscoveryResponse', encodeDiscoveryResponse({ versionInfo: '7', resources: [any, any], typeUrl: TYPE_URLS.cluster, nonce: '1-2' }));
  assert.equal(sotw.version_info, '7');
  assert.equal(sotw.nonce, '1-2');
  assert.equal(sotw.type_url, TYPE_URLS.cluster);
  assert.equal(sotw.resources.length, 2);
  assert.equal(protos.unpack<any>(sotw.resources[1]).message.name, 'a/b');
  const delta = protos.decode<any>(
    'envoy.service.discovery.v3.DeltaDiscoveryResponse',
    encodeDeltaResponse({ systemVersionInfo: '8', resources: [{ name: 'a/b', version: 'v1', any }], typeUrl: TYPE_URLS.cluster, removed: ['x/y', 'ü/z'], nonce: 'n' }),
  );
  assert.deepEqual([delta.system_version_info, delta.nonce, delta.removed_resources], ['8', 'n', ['x/y', 'ü/z']]);
  assert.deepEqual([delta.resources[0].name, delta.resources[0].version], ['a/b', 'v1']);
  assert.equal(protos.unpack<any>(delta.resources[0].resource).message.name, 'a/b');
  const empty = protos.decode<any>('envoy.service.discovery.v3.DiscoveryResponse', encodeDiscoveryResponse({ versionInfo: '', resources: [], typeUrl: 'x', nonce: '' }));
  assert.equal(empty.resources, undefined);
});

test('flavors are built on first use: nothing for proxyless until a proxyless view is asked for, then every tenant at once', () => {
  const cache = new SnapshotCache({ protos, validator: dataPlaneValidator(protos), logger: pino({ level: 'silent' }), flavors: ['envoy'] });
  cache.setNode(facts());
  cache.setTenant(richTenant('acme'), facts());
  assert.deepEqual([...cache.active], ['envoy']);
  assert.equal(cache.versions('proxyless').listener, '0');
  assert.notEqual(cache.versions('envoy').listener, '0');
  const px = cache.snapshot('proxyless', '*');
  assert.deepEqual([...cache.active].sort(), ['envoy', 'proxyless']);
  assert.deepEqual(names(px, 'listener'), ['api.acme', 'ring.acme']);
  assert.deepEqual(px.consistent(), []);
  // from then on both are kept in step
  cache.setTenant(richTenant('beta', 17001), facts());
  assert.deepEqual(names(cache.snapshot('proxyless', '*'), 'listener'), ['api.acme', 'api.beta', 'ring.acme', 'ring.beta']);
});

test('wire: DiscoveryRequest decoded by hand agrees with protobufjs; the names key tells equal lists from different ones', () => {
  const T = 'envoy.service.discovery.v3.DiscoveryRequest';
  const req = {
    version_info: '12', type_url: TYPE_URLS.endpoint, response_nonce: '3-9', resource_names: ['acme/web', 'bëta/api', 'x'],
    node: { id: 'n1', user_agent_name: 'envoy', metadata: { fields: { 'isomesh.token': { stringValue: 't' } } } },
    error_detail: { code: 3, message: 'bad' },
  };
  const raw = decodeDiscoveryRequest(Buffer.from(protos.encode(T, req)));
  assert.deepEqual([raw.version_info, raw.type_url, raw.response_nonce], ['12', TYPE_URLS.endpoint, '3-9']);
  assert.deepEqual(raw.resource_names.list(), req.resource_names);
  assert.equal(raw.resource_names.count, 3);
  assert.deepEqual(protos.decode<any>('envoy.config.core.v3.Node', raw.node!).id, 'n1');
  assert.deepEqual(protos.decode<any>('google.rpc.Status', raw.error_detail!), { code: 3, message: 'bad' });
  const key = (names: string[]) => decodeDiscoveryRequest(Buffer.from(protos.encode(T, { type_url: 'x', resource_names: names }))).resource_names.key;
  assert.equal(key(['a', 'b']), key(['a', 'b']));
  for (const other of [['b', 'a'], ['ab'], ['a', 'b', 'c'], ['a'], []]) assert.notEqual(key(other), key(['a', 'b']), JSON.stringify(other));
  const empty = decodeDiscoveryRequest(Buffer.from(protos.encode(T, { type_url: 'x' })));
  assert.deepEqual([empty.resource_names.count, empty.resource_names.list(), empty.node, empty.error_detail], [0, [], undefined, undefined]);
  assert.throws(() => decodeDiscoveryRequest(Buffer.from([0x0a, 0x05, 0x61])), /truncated/);
});
