// Proxyless gRPC through isomesh's xDS with @grpc/grpc-js-xds (an xDS client nobody here wrote):
// resolution, weighted splits, live changes through the management API, a deleted service, the whole
// proxyless resource set, and tenant visibility. See scenario.ts.
import { after, before, test } from 'node:test';
import { liveTraffic, richConfig, startWorld, stopWorld, visibility, type World } from './scenario.ts';

let w: World;
before(async () => {
  w = await startWorld(['b1', 'b2', 'b3', 'c1']);
});
after(() => stopWorld(w));

test('grpc-js-xds: resolves xds:///svc.tenant, splits by weight, follows endpoint and route changes, fails UNAVAILABLE once the service is gone', () => liveTraffic(w, 'grpc-js'));
test('grpc-js-xds: accepts every proxyless resource isomesh emits (no NACK) and routes by it', () => richConfig(w, 'grpc-js'));
test('grpc-js-xds: a tenant token sees only its tenant; no token gets nothing', () => visibility(w, 'grpc-js'));
