// The proxyless scenario both real clients run (proxyless.test.ts: grpc-js-xds; grpc-core.test.ts:
// gRPC C-core): a daemon child process configured through the management API, loopback gRPC echo
// backends started here, and a real xDS client resolving xds:///<service>.<tenant> from a bootstrap
// that points at the daemon's gRPC port. Waits are bounded; no assertion is on wall-clock time.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { bootstrap, echoBackend, type EchoBackend } from '../../runtime/src/xds/testing.ts';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';
import { RealClient, type ClientKind, type Tally } from './real-clients.ts';

const TYPE = {
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
};

export interface World {
  daemon: TestDaemon;
  backends: Map<string, EchoBackend>;
  clients: RealClient[];
}

export async function startWorld(ids: string[]): Promise<World> {
  // debug level: the xDS protocol trace is in daemon.logs() when a wait fails
  const daemon = await startDaemon({ env: { ISOMESH_LOG_LEVEL: 'debug' } });
  const backends = new Map<string, EchoBackend>();
  for (const id of ids) backends.set(id, await echoBackend(id));
  return { daemon, backends, clients: [] };
}

export async function stopWorld(w: World | undefined): Promise<void> {
  if (!w) return;
  for (const c of w.clients) {
    await c.stop();
    if (process.env.XDS_TEST_CLIENT_LOGS && c.stderr) console.log(`--- ${c.kind} stderr\n${c.stderr}`);
  }
  for (const b of w.backends.values()) await b.stop();
  await w.daemon.stop();
}

export async function ok(res: Promise<{ status: number; body: any }>, status = [200, 201, 204]): Promise<any> {
  const r = await res;
  assert.ok(status.includes(r.status), `${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

export async function client(w: World, kind: ClientKind, nodeId: string, token: string): Promise<RealClient> {
  const c = await RealClient.start(kind, bootstrap(w.daemon.grpcAddress, nodeId, token));
  w.clients.push(c);
  return c;
}

/** Waits (bounded) until client `nodeId` holds the current version of everything it subscribes to (GET /v1/xds `synced`). */
export async function synced(w: World, nodeId: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const { body } = await w.daemon.api('GET', '/v1/xds');
    if (body.clients.find((c: any) => c.node === nodeId)?.synced === true) return;
    await sleep(25);
  }
  const trace = w.daemon.logs().split('\n').filter((l) => l.includes('"msg":"xDS ')).slice(-30).join('\n');
  throw new Error(`${nodeId} did not acknowledge the current xDS versions: ${JSON.stringify((await w.daemon.api('GET', '/v1/xds')).body)}\n${trace}`);
}

/** Calls (bounded: `tries` single RPCs, 50 ms apart) until one outcome satisfies `pred`. */
export async function until(c: RealClient, target: string, pred: (t: Tally) => boolean, tries = 100): Promise<void> {
  let last: Tally | undefined;
  for (let i = 0; i < tries; i++) {
    last = await c.call(target, 1, { timeoutS: 2 });
    if (pred(last)) return;
    await sleep(50);
  }
  throw new Error(`condition not reached after ${tries} RPCs; last: ${JSON.stringify(last)}`);
}

const port = (w: World, id: string) => w.backends.get(id)!.port;
const only = (id: string) => (t: Tally) => t.ok[id] === 1;

/** Resolution, weighted endpoints, endpoint and route changes moving live traffic, a deleted service. */
export async function liveTraffic(w: World, kind: ClientKind): Promise<void> {
  const api = w.daemon.api;
  const tn = `shop-${kind === 'grpc-js' ? 'js' : 'core'}`;
  const node = `${kind}-live`;
  await ok(api('PUT', `/v1/tenants/${tn}`, {}));
  await ok(api('PUT', `/v1/tenants/${tn}/services/echo`, {
    protocol: 'grpc',
    endpoints: [{ address: '127.0.0.1', port: port(w, 'b1'), weight: 3 }, { address: '127.0.0.1', port: port(w, 'b2'), weight: 1 }],
  }));
  await ok(api('PUT', `/v1/tenants/${tn}/services/canary`, { protocol: 'grpc', endpoints: [{ address: '127.0.0.1', port: port(w, 'c1') }] }));
  const c = await client(w, kind, node, w.daemon.token);
  const target = `xds:///echo.${tn}`;

  // weighted endpoints (one locality each, weighted): 3:1 within a wide bound over 200 RPCs
  await until(c, target, (t) => Object.keys(t.ok).length === 1);
  const split = await c.call(target, 200);
  assert.deepEqual(split.errors, {}, JSON.stringify(split));
  assert.equal((split.ok.b1 ?? 0) + (split.ok.b2 ?? 0), 200);
  assert.ok(split.ok.b1! >= 120 && split.ok.b1! <= 180, `b1 got ${split.ok.b1} of 200 (expected ≈150)`);

  // an endpoint change through the management API moves live traffic
  await ok(api('PUT', `/v1/tenants/${tn}/services/echo`, { protocol: 'grpc', endpoints: [{ address: '127.0.0.1', port: port(w, 'b3') }] }));
  await synced(w, node);
  await until(c, target, only('b3')); // a call already on an old subchannel may still finish there
  assert.deepEqual((await c.call(target, 20)).ok, { b3: 20 });

  // a weighted route through the API: 1:1 between echo (b3) and canary (c1)
  await ok(api('PUT', `/v1/tenants/${tn}/routes/split`, { match: { pathPrefix: '/' }, to: { weighted: [{ service: 'echo', weight: 1 }, { service: 'canary', weight: 1 }] } }));
  await synced(w, node);
  await until(c, target, only('c1'));
  const halves = await c.call(target, 200);
  assert.deepEqual(halves.errors, {}, JSON.stringify(halves));
  assert.ok(halves.ok.c1! >= 70 && halves.ok.c1! <= 130, `canary got ${halves.ok.c1} of 200 (expected ≈100)`);

  // the split moves to 1:3 (a route that no longer reaches echo would not apply to xds:///echo.<t>:
  // its api_listener carries the routes that reach the service)
  await ok(api('PUT', `/v1/tenants/${tn}/routes/split`, { match: { pathPrefix: '/' }, to: { weighted: [{ service: 'echo', weight: 1 }, { service: 'canary', weight: 3 }] } }));
  await synced(w, node);
  const quarters = await c.call(target, 200);
  assert.deepEqual(quarters.errors, {}, JSON.stringify(quarters));
  assert.ok(quarters.ok.c1! >= 125 && quarters.ok.c1! <= 175, `canary got ${quarters.ok.c1} of 200 (expected ≈150)`);

  // deleting the service (its route first: a referenced service cannot be deleted) makes new RPCs fail UNAVAILABLE
  await ok(api('DELETE', `/v1/tenants/${tn}/routes/split`));
  await ok(api('DELETE', `/v1/tenants/${tn}/services/echo`));
  await until(c, target, (t) => t.errors.UNAVAILABLE === 1);
  assert.deepEqual((await c.call(target, 5)).errors, { UNAVAILABLE: 5 });

  // GET /v1/xds: the client's subscriptions and ACKs, no NACK
  const status = await ok(api('GET', '/v1/xds'));
  const row = status.clients.find((x: any) => x.node === node);
  assert.equal(row.protocol, 'sotw');
  assert.deepEqual(row.subscribed[TYPE.listener], [`echo.${tn}`]);
  assert.ok(row.acked[TYPE.cluster]);
  assert.equal(row.nacked, undefined, JSON.stringify(row.nacked));
}

/**
 * Everything the translator emits for proxyless clients, through the API: ring hash on a header,
 * retries, timeouts, circuit breakers, header/regex/method/host matchers, weighted routes, rate limits,
 * path normalization. The client must accept all of it (no NACK) and route by it.
 * `ringHash: false` serves the ring service as round robin: Debian's grpcio 1.51.1 (C-core) crashes
 * with SIGSEGV on its first pick through any RING_HASH cluster (reproduced with one endpoint and no
 * hash policy), so its run leaves ring hash to grpc-js (docs/xds.md, "Known client limits").
 */
export async function richConfig(w: World, kind: ClientKind, opts: { ringHash: boolean } = { ringHash: true }): Promise<void> {
  const api = w.daemon.api;
  const tn = `rich-${kind === 'grpc-js' ? 'js' : 'core'}`;
  const node = `${kind}-rich`;
  await ok(api('PUT', `/v1/tenants/${tn}`, { pathNormalization: 'merge_slashes', accessLog: { enabled: true, sample: 0.5 } }));
  await ok(api('PUT', `/v1/tenants/${tn}/services/ring`, {
    protocol: 'grpc', ...(opts.ringHash ? { lb: 'ring_hash', hashOn: { header: 'x-user' } } : { lb: 'round_robin' }),
    endpoints: [{ address: '127.0.0.1', port: port(w, 'b1'), weight: 2 }, { address: '127.0.0.1', port: port(w, 'b2'), weight: 1 }],
    connectTimeoutMs: 500, timeoutMs: 3000, retries: { attempts: 2, on: ['5xx', 'reset', 'connect-failure'] },
    circuitBreaker: { maxConnections: 100, maxPending: 10, consecutive5xx: 5, ejectionMs: 10_000 },
  }));
  await ok(api('PUT', `/v1/tenants/${tn}/services/lr`, { protocol: 'grpc', lb: 'least_request', vip: '10.96.7.7:80', endpoints: [{ address: '127.0.0.1', port: port(w, 'c1') }] }));
  await ok(api('PUT', `/v1/tenants/${tn}/routes/by-header`, { match: { pathPrefix: '/isomesh.test.Echo/', headers: [{ name: 'x-never', exact: 'set' }, { name: 'x-absent', present: false }] }, to: { service: 'lr' }, timeoutMs: 1500 }));
  await ok(api('PUT', `/v1/tenants/${tn}/services/cart`, { protocol: 'http2', endpoints: [{ address: '127.0.0.1', port: port(w, 'b3') }] }));
  await ok(api('PUT', `/v1/tenants/${tn}/routes/by-regex`, { match: { pathRegex: '/isomesh\\.test\\.Echo/[A-Z][a-z]+' }, to: { weighted: [{ service: 'ring', weight: 9 }, { service: 'cart', weight: 1 }] } }));
  await ok(api('PUT', `/v1/tenants/${tn}/routes/other-host`, { match: { host: 'api.example.com', method: 'GET' }, to: { service: 'lr' } }));
  await ok(api('PUT', `/v1/tenants/${tn}/ratelimits/per-ip`, { descriptors: [{ key: 'remote_address' }, { key: 'route' }], limit: { requestsPerUnit: 100, unit: 'second' } }));
  const c = await client(w, kind, node, w.daemon.token);
  const tally = await c.call(`xds:///ring.${tn}`, 50, { wait: true });
  assert.deepEqual(tally.errors, {}, JSON.stringify(tally));
  // by-regex wins (9:1 ring:cart); without an x-user header a ring-hash call hashes at random over b1/b2
  assert.equal((tally.ok.b1 ?? 0) + (tally.ok.b2 ?? 0) + (tally.ok.b3 ?? 0), 50);
  assert.ok((tally.ok.b1 ?? 0) + (tally.ok.b2 ?? 0) >= 35, JSON.stringify(tally.ok));
  const lr = await c.call(`xds:///lr.${tn}`, 10, { wait: true });
  assert.deepEqual(lr, { ok: { c1: 10 }, errors: {}, last_error: null }, 'least_request served as round robin to proxyless clients');
  await synced(w, node);
  const row = (await ok(api('GET', '/v1/xds'))).clients.find((x: any) => x.node === node);
  assert.equal(row.nacked, undefined, `the ${kind} client refused a resource: ${JSON.stringify(row.nacked)}`);
  assert.deepEqual(row.subscribed[TYPE.cluster].sort(), [`${tn}/cart`, `${tn}/lr`, `${tn}/ring`]);
}

/** A tenant token sees only its tenant; no token gets nothing. */
export async function visibility(w: World, kind: ClientKind): Promise<void> {
  const api = w.daemon.api;
  const [a, o] = kind === 'grpc-js' ? ['alpha-js', 'omega-js'] : ['alpha-core', 'omega-core'];
  await ok(api('PUT', `/v1/tenants/${a}`, {}));
  await ok(api('PUT', `/v1/tenants/${o}`, {}));
  await ok(api('PUT', `/v1/tenants/${a}/services/echo`, { protocol: 'grpc', endpoints: [{ address: '127.0.0.1', port: port(w, 'b1') }] }));
  await ok(api('PUT', `/v1/tenants/${o}/services/echo`, { protocol: 'grpc', endpoints: [{ address: '127.0.0.1', port: port(w, 'b2') }] }));
  const { token } = await ok(api('POST', `/v1/tenants/${a}/tokens`));
  const c = await client(w, kind, `${kind}-tenant`, token);
  assert.deepEqual((await c.call(`xds:///echo.${a}`, 5, { wait: true })).ok, { b1: 5 });
  const before = w.backends.get('b2')!.calls;
  const other = await c.call(`xds:///echo.${o}`, 1, { timeoutS: 3 });
  assert.deepEqual(other.ok, {}, "another tenant's service resolved");
  // absent from the tenant's view: the channel does not resolve (the client waits out its
  // does-not-exist timer, so the call ends on its deadline or UNAVAILABLE)
  assert.ok((other.errors.UNAVAILABLE ?? 0) + (other.errors.DEADLINE_EXCEEDED ?? 0) === 1, JSON.stringify(other));
  assert.equal(w.backends.get('b2')!.calls, before, "the other tenant's backend saw nothing");
  const status = await ok(api('GET', '/v1/xds'));
  assert.equal(status.clients.find((x: any) => x.node === `${kind}-tenant`)?.tenant, a);
  assert.equal((await api('GET', '/v1/xds', undefined, token)).status, 403, 'GET /v1/xds is admin-only');
  const anon = await client(w, kind, `${kind}-anon`, '');
  const refused = await anon.call(`xds:///echo.${a}`, 1, { timeoutS: 3 });
  assert.deepEqual(refused.ok, {});
  assert.equal((await ok(api('GET', '/v1/xds'))).clients.some((x: any) => x.node === `${kind}-anon`), false, 'an unauthenticated stream is not a client');
}
