// Proxyless gRPC through isomesh's xDS with gRPC C-core (Debian's python3-grpcio driven by
// clients/grpc_client.py as a child process): C-core validates resources more strictly than
// grpc-js and NACKs much of what Envoy would refuse. The same scenario as proxyless.test.ts.
// Without python3-grpcio the tests are skipped with the reason — except under CI=true, where
// they fail with it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { grpcCoreAvailable } from './real-clients.ts';
import { liveTraffic, richConfig, startWorld, stopWorld, visibility, type World } from './scenario.ts';

const core = grpcCoreAvailable();
const skip = !core.ok && process.env.CI !== 'true' ? core.reason : false;
let w: World | undefined;
before(async () => {
  if (core.ok) w = await startWorld(['b1', 'b2', 'b3', 'c1']);
});
after(() => stopWorld(w));

function need(): World {
  assert.ok(core.ok, core.ok ? '' : core.reason);
  return w!;
}

test('gRPC C-core: resolves xds:///svc.tenant, splits by weight, follows endpoint and route changes, fails UNAVAILABLE once the service is gone', { skip }, () => liveTraffic(need(), 'grpc-core'));
// ring_hash left out: grpcio 1.51.1 segfaults on RING_HASH clusters (see scenario.ts richConfig)
test('gRPC C-core: accepts every proxyless resource isomesh emits but ring hash (no NACK) and routes by it', { skip }, () => richConfig(need(), 'grpc-core', { ringHash: false }));
test('gRPC C-core: a tenant token sees only its tenant; no token gets nothing', { skip }, () => visibility(need(), 'grpc-core'));
