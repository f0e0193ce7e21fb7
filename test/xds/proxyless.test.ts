// Proxyless gRPC through isomesh's xDS with @grpc/grpc-js-xds (an xDS client nobody here wrote):
// resolution, weighted splits, live changes through the management API, a deleted service, the whole
// proxyless resource set, and tenant visibility. See scenario.ts.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { RawAdsStream, decodeResources, node } from '../../runtime/src/xds/testing.ts';
import { liveTraffic, ok, richConfig, startWorld, stopWorld, visibility, type World } from './scenario.ts';

let w: World;
before(async () => {
  w = await startWorld(['b1', 'b2', 'b3', 'c1']);
});
after(() => stopWorld(w));

test('grpc-js-xds: resolves xds:///svc.tenant, splits by weight, follows endpoint and route changes, fails UNAVAILABLE once the service is gone', () => liveTraffic(w, 'grpc-js'));
test('grpc-js-xds: accepts every proxyless resource isomesh emits (no NACK) and routes by it', () => richConfig(w, 'grpc-js'));
test('grpc-js-xds: a tenant token sees only its tenant; no token gets nothing', () => visibility(w, 'grpc-js'));

test('the daemon serves ADS on <stateDir>/grpc.sock (0600), which sees every tenant without a token', async (t) => {
  await ok(w.daemon.api('PUT', '/v1/tenants/sock-a', {}));
  await ok(w.daemon.api('PUT', '/v1/tenants/sock-b', {}));
  const sock = path.join(w.daemon.stateDir, 'grpc.sock');
  assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
  const s = new RawAdsStream(`unix:${sock}`, 'sotw');
  t.after(() => s.close());
  s.send({ node: node('local-envoy', { envoy: true }), type_url: 'type.googleapis.com/envoy.config.listener.v3.Listener', resource_names: ['isomesh.sock-a', 'isomesh.sock-b'] });
  const names = decodeResources(await s.next()).map((r) => r.name).sort();
  assert.deepEqual(names, ['isomesh.sock-a', 'isomesh.sock-b']);
});
