import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EXT, TYPE_URLS, duration, envoyProtos, structString } from './protos.ts';

test('protos: one Root holds ADS, ext_proc, RLS, bootstrap and the emitted extension types', () => {
  const p = envoyProtos();
  assert.equal(p, envoyProtos(), 'loaded once per process');
  for (const name of [
    'envoy.config.bootstrap.v3.Bootstrap',
    'envoy.service.discovery.v3.DiscoveryRequest',
    'envoy.service.discovery.v3.DeltaDiscoveryResponse',
    'envoy.service.ext_proc.v3.ProcessingRequest',
    'envoy.service.ratelimit.v3.RateLimitRequest',
    ...Object.values(EXT),
    ...Object.values(TYPE_URLS),
  ]) {
    assert.ok(p.has(name), name);
  }
  assert.equal(p.has('envoy.nope.v3.Nothing'), false);
  assert.deepEqual(Object.keys(p.service('envoy.service.discovery.v3.AggregatedDiscoveryService')).sort(), [
    'DeltaAggregatedResources',
    'StreamAggregatedResources',
  ]);
  const extProc = p.service('envoy.service.ext_proc.v3.ExternalProcessor').Process!;
  assert.equal(extProc.path, '/envoy.service.ext_proc.v3.ExternalProcessor/Process');
  assert.ok(extProc.requestStream && extProc.responseStream);
  const rls = p.service('envoy.service.ratelimit.v3.RateLimitService').ShouldRateLimit!;
  assert.ok(!rls.requestStream && !rls.responseStream);
});

test('protos: nested Any written as {"@type", ...} encodes, unpacks and round-trips as the Envoy type', () => {
  const p = envoyProtos();
  const listener = {
    name: 'svc.acme',
    api_listener: {
      api_listener: {
        '@type': `type.googleapis.com/${EXT.hcm}`,
        stat_prefix: 'acme',
        rds: { route_config_name: 'svc.acme', config_source: { ads: {}, resource_api_version: 'V3' } },
        http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': `type.googleapis.com/${EXT.router}` } }],
      },
    },
  };
  const any = p.pack(TYPE_URLS.listener, listener);
  assert.equal(any.type_url, TYPE_URLS.listener);
  const { typeName, message } = p.unpack<any>(any);
  assert.equal(typeName, 'envoy.config.listener.v3.Listener');
  assert.equal(message.name, 'svc.acme');
  const inner = message.api_listener.api_listener;
  assert.equal(inner.type_url, `type.googleapis.com/${EXT.hcm}`);
  const hcm = p.unpack<any>(inner).message;
  assert.equal(hcm.rds.route_config_name, 'svc.acme');
  assert.equal(hcm.rds.config_source.resource_api_version, 'V3', 'enums by name');
  assert.equal(hcm.rds.config_source.config_source_specifier, 'ads', 'oneof names set, as proto-loader does');
  assert.deepEqual(p.toJSON(TYPE_URLS.listener, any.value), {
    name: 'svc.acme',
    api_listener: {
      api_listener: {
        '@type': `type.googleapis.com/${EXT.hcm}`,
        stat_prefix: 'acme',
        rds: { route_config_name: 'svc.acme', config_source: { ads: {}, config_source_specifier: 'ads', resource_api_version: 'V3' } },
        route_specifier: 'rds',
        http_filters: [{ name: 'envoy.filters.http.router', typed_config: { '@type': `type.googleapis.com/${EXT.router}` }, config_type: 'typed_config' }],
      },
    },
  });
  // service serializers pass pre-encoded bytes through untouched
  const ads = p.service('envoy.service.discovery.v3.AggregatedDiscoveryService').StreamAggregatedResources!;
  const bytes = Buffer.from(p.encode('envoy.service.discovery.v3.DiscoveryResponse', { version_info: '7', nonce: 'n1' }));
  assert.equal(ads.responseSerialize(bytes), bytes);
  assert.deepEqual(ads.responseDeserialize(bytes), { version_info: '7', nonce: 'n1' });
  assert.throws(() => ads.responseSerialize([]), /cannot serialize an array/);
});

test('protos: duration and Struct helpers', () => {
  assert.deepEqual(duration(1500), { seconds: 1, nanos: 500_000_000 });
  assert.deepEqual(duration(0), { seconds: 0, nanos: 0 });
  assert.deepEqual(duration(3_600_000), { seconds: 3600, nanos: 0 });
  const p = envoyProtos();
  const node = p.decode<any>('envoy.config.core.v3.Node', p.encode('envoy.config.core.v3.Node', {
    id: 'n', metadata: { fields: { 'isomesh.token': { stringValue: 'tok' }, n: { numberValue: 1 } } },
  }));
  assert.equal(structString(node.metadata, 'isomesh.token'), 'tok');
  assert.equal(structString(node.metadata, 'n'), undefined);
  assert.equal(structString(undefined, 'x'), undefined);
});
