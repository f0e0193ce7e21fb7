// The ADS server against raw SotW and Delta clients written with @grpc/grpc-js (no xDS library):
// every protocol rule of stream.ts / sotw.ts / delta.ts, with every resource decoded as its Envoy
// type and checked by the validator. Absence of a response is proven with a barrier: a later request
// whose answer comes after anything the server would still have pushed (pushes go out in
// CDS → EDS → LDS → RDS order within one flush).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { TenantConfig } from '../store/model.ts';
import { richTenant, route, service, tenant } from './fixtures.ts';
import { TYPE_URLS, envoyProtos } from './protos.ts';
import { ADMIN_TOKEN, RawAdsStream, decodeResources, node, startControlPlane, type DecodedResponse, type TestControlPlane } from './testing.ts';
import { dataPlaneValidator } from './validate.ts';

const { listener: LDS, route: RDS, cluster: CDS, endpoint: EDS } = TYPE_URLS;
const validator = dataPlaneValidator(envoyProtos());

function small(name: string, port: number, over: Partial<TenantConfig> = {}): TenantConfig {
  return tenant(name, {
    listenerPort: port,
    services: [service('web', { endpoints: [{ address: '127.0.0.1', port: 9001, weight: 1 }] }), service('api', { protocol: 'grpc' })],
    routes: [route('all', { match: { pathPrefix: '/' }, to: { service: 'web' } })],
    ...over,
  });
}

async function withPlane(t: { after: (fn: () => Promise<void>) => void }, opts: Parameters<typeof startControlPlane>[0] = {}): Promise<TestControlPlane> {
  const plane = await startControlPlane(opts);
  t.after(() => plane.close());
  plane.cp.apply(small('acme', 17000));
  plane.cp.apply(small('beta', 17001));
  return plane;
}

function names(r: DecodedResponse): string[] {
  return decodeResources(r).map((x) => x.name).sort();
}

/** Every resource decodes as its type and passes validation. */
function checkValid(r: DecodedResponse): void {
  for (const res of decodeResources(r)) assert.deepEqual(validator.validate(r.type_url, res.message), [], `${r.type_url} ${res.name}`);
}

test('SotW: wildcard LDS/CDS, full state; first request answered; ACK; a change pushes the new state; every resource valid', async (t) => {
  const plane = await withPlane(t);
  const s = new RawAdsStream(plane.target, 'sotw', { token: ADMIN_TOKEN });
  t.after(() => s.close());
  s.send({ node: node('envoy-1', { envoy: true }), type_url: CDS });
  const c1 = await s.next();
  assert.equal(c1.type_url, CDS);
  assert.deepEqual(names(c1), ['acme/api', 'acme/web', 'beta/api', 'beta/web', 'isomesh_grpc']);
  checkValid(c1);
  // listeners wait while a cluster update is unacknowledged (make before break)
  s.send({ type_url: LDS, resource_names: ['*'] });
  s.send({ type_url: CDS, version_info: c1.version_info, response_nonce: c1.nonce });
  const l1 = await s.next();
  assert.deepEqual(names(l1), ['isomesh.acme', 'isomesh.beta']);
  checkValid(l1);
  s.send({ type_url: LDS, version_info: l1.version_info, response_nonce: l1.nonce, resource_names: ['*'] });
  plane.cp.apply(small('acme', 17000, { generation: 2, services: [service('web')] })); // api removed
  const c2 = await s.next();
  assert.equal(c2.type_url, CDS);
  assert.notEqual(c2.version_info, c1.version_info);
  assert.deepEqual(names(c2), ['acme/web', 'beta/api', 'beta/web', 'isomesh_grpc'], 'full state: the removed cluster is left out');
  const status = plane.cp.status().clients.find((c) => c.node === 'envoy-1')!;
  assert.equal(status.protocol, 'sotw');
  assert.equal(status.tenant, undefined);
  assert.deepEqual(status.subscribed[CDS], ['*']);
  assert.deepEqual(status.acked, { [CDS]: c1.version_info, [LDS]: l1.version_info });
  // the snapshot the client sees is consistent
  assert.deepEqual(plane.cp.snapshot('envoy', '*').consistent(), []);
});

test('SotW: RDS/EDS by name, only what changed; a name that does not exist yet is served when it appears; unsubscribe', async (t) => {
  const plane = await withPlane(t);
  const s = new RawAdsStream(plane.target, 'sotw', { token: ADMIN_TOKEN });
  t.after(() => s.close());
  s.send({ node: node('envoy-2', { envoy: true }), type_url: EDS, resource_names: ['acme/web', 'beta/web', 'gamma/web'] });
  const e1 = await s.next();
  assert.deepEqual(names(e1), ['acme/web', 'beta/web'], 'gamma/web does not exist (yet)');
  checkValid(e1);
  s.send({ type_url: EDS, response_nonce: e1.nonce, version_info: e1.version_info, resource_names: ['acme/web', 'beta/web', 'gamma/web'] });
  plane.cp.apply(small('beta', 17001, { generation: 2, services: [service('web', { endpoints: [{ address: '127.0.0.7', port: 9009, weight: 4 }] })], routes: [] }));
  const e2 = await s.next();
  assert.deepEqual(names(e2), ['beta/web'], 'only the changed assignment');
  assert.equal(decodeResources(e2)[0]!.message.endpoints[0].lb_endpoints[0].load_balancing_weight.value, 4);
  s.send({ type_url: EDS, response_nonce: e2.nonce, version_info: e2.version_info, resource_names: ['acme/web', 'beta/web', 'gamma/web'] });
  plane.cp.apply(small('gamma', 17002));
  const e3 = await s.next();
  assert.deepEqual(names(e3), ['gamma/web'], 'the earlier subscription is served once the resource exists');
  // unsubscribe beta/web: a later beta change is not pushed (barrier: a fresh RDS subscription, pushed after EDS)
  s.send({ type_url: EDS, response_nonce: e3.nonce, version_info: e3.version_info, resource_names: ['acme/web', 'gamma/web'] });
  plane.cp.apply(small('beta', 17001, { generation: 3, services: [service('web', { endpoints: [{ address: '127.0.0.8', port: 9009, weight: 1 }] })], routes: [] }));
  s.send({ type_url: RDS, resource_names: ['isomesh.acme'] });
  const r1 = await s.next();
  assert.equal(r1.type_url, RDS, 'no EDS push for the unsubscribed beta/web came first');
  assert.deepEqual(names(r1), ['isomesh.acme']);
  checkValid(r1);
});

test('SotW: a NACK (told by error_detail, with the new version in version_info) keeps the last good, is reported, and is not re-sent until changed', async (t) => {
  const plane = await withPlane(t);
  const s = new RawAdsStream(plane.target, 'sotw', { token: ADMIN_TOKEN });
  t.after(() => s.close());
  s.send({ node: node('envoy-3', { envoy: true }), type_url: CDS, resource_names: ['*'] });
  const c1 = await s.next();
  s.send({ type_url: CDS, response_nonce: c1.nonce, version_info: c1.version_info, resource_names: ['*'] });
  plane.cp.apply(small('acme', 17000, { generation: 2, services: [service('web', { connectTimeoutMs: 2500 }), service('api', { protocol: 'grpc' })] }));
  const c2 = await s.next();
  const web2 = decodeResources(c2).find((r) => r.name === 'acme/web')!;
  assert.deepEqual(web2.message.connect_timeout, { seconds: '2', nanos: 500_000_000 });
  // the client refuses it, naming the resource, and (as real clients do) puts the new version in version_info
  s.send({ type_url: CDS, response_nonce: c2.nonce, version_info: c2.version_info, resource_names: ['*'], error_detail: { code: 3, message: 'cluster acme/web: rejected by test' } });
  // barrier: EDS is pushed after any CDS resend would be
  s.send({ type_url: EDS, resource_names: ['acme/web'] });
  const e1 = await s.next();
  assert.equal(e1.type_url, EDS, 'the refused CDS version was not re-sent');
  const st = plane.cp.status().clients.find((c) => c.node === 'envoy-3')!;
  assert.deepEqual(st.nacked?.[CDS], { version: c2.version_info, message: 'cluster acme/web: rejected by test' });
  assert.equal(st.acked[CDS], c1.version_info, 'a NACK is not an ACK, whatever version_info says');
  assert.match(await plane.registry.metrics(), new RegExp(`isomesh_xds_nack_total\\{type_url="${CDS.replace(/\./g, '\\.')}"\\} 1`));
  // another cluster changes: the response carries it, and the client's last good acme/web (not the refused one)
  s.send({ type_url: EDS, response_nonce: e1.nonce, version_info: e1.version_info, resource_names: ['acme/web'] });
  plane.cp.apply(small('beta', 17001, { generation: 2, services: [service('web', { connectTimeoutMs: 3000 })] }));
  const c3 = await s.next();
  assert.equal(c3.type_url, CDS);
  const c3res = decodeResources(c3);
  assert.deepEqual(c3res.find((r) => r.name === 'acme/web')!.message.connect_timeout, { seconds: '1', nanos: 0 }, 'last good copy');
  assert.deepEqual(c3res.find((r) => r.name === 'beta/web')!.message.connect_timeout, { seconds: '3', nanos: 0 });
  s.send({ type_url: CDS, response_nonce: c3.nonce, version_info: c3.version_info, resource_names: ['*'] });
  // once acme/web changes again, it is offered again
  plane.cp.apply(small('acme', 17000, { generation: 3, services: [service('web', { connectTimeoutMs: 4000 }), service('api', { protocol: 'grpc' })] }));
  const c4 = await s.next();
  assert.deepEqual(decodeResources(c4).find((r) => r.name === 'acme/web')!.message.connect_timeout, { seconds: '4', nanos: 0 });
  s.send({ type_url: CDS, response_nonce: c4.nonce, version_info: c4.version_info, resource_names: ['*'] });
  s.send({ type_url: RDS, resource_names: ['isomesh.beta'] }); // barrier before reading status
  await s.next();
  assert.equal(plane.cp.status().clients.find((c) => c.node === 'envoy-3')!.nacked, undefined, 'cleared by the next ACK');
});

test('SotW: a stale nonce is ignored; a reconnect with a stale version is answered with the current state', async (t) => {
  const plane = await withPlane(t);
  const s = new RawAdsStream(plane.target, 'sotw', { token: ADMIN_TOKEN });
  t.after(() => s.close());
  s.send({ node: node('envoy-4', { envoy: true }), type_url: RDS, resource_names: ['isomesh.acme'] });
  const r1 = await s.next();
  s.send({ type_url: RDS, response_nonce: r1.nonce, version_info: r1.version_info, resource_names: ['isomesh.acme'] });
  plane.cp.apply(small('acme', 17000, { generation: 2, routes: [route('all', { match: { pathPrefix: '/v2' }, to: { service: 'web' } })] }));
  const r2 = await s.next();
  s.send({ type_url: RDS, response_nonce: r2.nonce, version_info: r2.version_info, resource_names: ['isomesh.acme'] });
  // a request with the superseded nonce asks for more names: ignored, as the protocol says. Had it
  // been taken, the next RDS response would answer the grown subscription (isomesh.beta included).
  s.send({ type_url: RDS, response_nonce: r1.nonce, version_info: r1.version_info, resource_names: ['isomesh.acme', 'isomesh.beta'] });
  plane.cp.apply(small('acme', 17000, { generation: 3, routes: [route('all', { match: { pathPrefix: '/v3' }, to: { service: 'web' } })] }));
  const r3 = await s.next();
  assert.deepEqual(names(r3), ['isomesh.acme'], 'only the change; the stale request was ignored');
  const st = plane.cp.status().clients.find((c) => c.node === 'envoy-4')!;
  assert.deepEqual(st.subscribed[RDS], ['isomesh.acme']);
  assert.equal(st.acked[RDS], r2.version_info);
  s.close();
  // reconnect, claiming the old version: the first request of a stream is always answered, with the current state
  const s2 = new RawAdsStream(plane.target, 'sotw', { token: ADMIN_TOKEN });
  t.after(() => s2.close());
  s2.send({ node: node('envoy-4', { envoy: true }), type_url: RDS, version_info: r1.version_info, resource_names: ['isomesh.acme'] });
  const again = await s2.next();
  assert.equal(again.version_info, r3.version_info);
  assert.equal(decodeResources(again)[0]!.message.virtual_hosts[0].routes.find((r: any) => r.name === 'all').match.prefix, '/v3');
  s2.send({ node: node('envoy-4', { envoy: true }), type_url: 'type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret' });
  const unknown = await s2.next();
  assert.deepEqual([unknown.type_url, unknown.resources ?? []], ['type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret', []], 'a type isomesh does not serve is answered empty');
});

test('make before break: a new service and its route arrive CDS first, RDS only after the CDS ACK; a removed cluster stays until the route that named it is replaced and acknowledged', async (t) => {
  const plane = await withPlane(t);
  const s = new RawAdsStream(plane.target, 'sotw', { token: ADMIN_TOKEN });
  t.after(() => s.close());
  s.send({ node: node('envoy-5', { envoy: true }), type_url: CDS, resource_names: ['*'] });
  s.send({ type_url: RDS, resource_names: ['isomesh.acme'] });
  const c1 = await s.next();
  assert.equal(c1.type_url, CDS);
  s.send({ type_url: CDS, response_nonce: c1.nonce, version_info: c1.version_info, resource_names: ['*'] });
  const r1 = await s.next();
  assert.equal(r1.type_url, RDS, 'the route configuration came only after the clusters were acknowledged');
  s.send({ type_url: RDS, response_nonce: r1.nonce, version_info: r1.version_info, resource_names: ['isomesh.acme'] });
  const withCart = small('acme', 17000, { generation: 2, services: [service('web'), service('api', { protocol: 'grpc' }), service('cart')], routes: [route('all', { match: { pathPrefix: '/' }, to: { service: 'cart' } })] });
  plane.cp.apply(withCart);
  const c2 = await s.next();
  assert.equal(c2.type_url, CDS);
  assert.ok(names(c2).includes('acme/cart'));
  // An ungated RDS push would have gone out with c2, before anything answering a later request.
  s.send({ type_url: EDS, resource_names: ['acme/cart'] });
  const e1 = await s.next();
  assert.equal(e1.type_url, EDS, 'the route naming acme/cart waits for the CDS ACK');
  s.send({ type_url: EDS, response_nonce: e1.nonce, version_info: e1.version_info, resource_names: ['acme/cart'] });
  s.send({ type_url: CDS, response_nonce: c2.nonce, version_info: c2.version_info, resource_names: ['*'] });
  const r2 = await s.next();
  assert.equal(r2.type_url, RDS);
  assert.equal(decodeResources(r2)[0]!.message.virtual_hosts[0].routes.at(-1).route.cluster, 'acme/cart');
  s.send({ type_url: RDS, response_nonce: r2.nonce, version_info: r2.version_info, resource_names: ['isomesh.acme'] });
  // now drop cart (the route goes back to web): the client still holds a route naming acme/cart, so
  // CDS keeps it (and so has nothing new to say) and the new route goes first
  plane.cp.apply(small('acme', 17000, { generation: 3 }));
  const r3 = await s.next();
  assert.equal(r3.type_url, RDS);
  assert.equal(decodeResources(r3)[0]!.message.virtual_hosts[0].routes.at(-1).route.cluster, 'acme/web');
  s.send({ type_url: RDS, response_nonce: r3.nonce, version_info: r3.version_info, resource_names: ['isomesh.acme'] });
  // its ACK lets the cluster go
  const c3 = await s.next();
  assert.equal(c3.type_url, CDS);
  assert.ok(!names(c3).includes('acme/cart'));
  assert.ok(names(c2).every((n) => n === 'acme/cart' || names(c3).includes(n)));
});

test('Delta: wildcard and by-name subscriptions, only changes pushed (one tenant\'s route change sends one RouteConfiguration), removals, NACK, reconnect with initial versions', async (t) => {
  const plane = await withPlane(t);
  const s = new RawAdsStream(plane.target, 'delta', { token: ADMIN_TOKEN });
  t.after(() => s.close());
  s.send({ node: node('envoy-d', { envoy: true }), type_url: CDS, resource_names_subscribe: ['*'] });
  const c1 = await s.next();
  assert.deepEqual(names(c1), ['acme/api', 'acme/web', 'beta/api', 'beta/web', 'isomesh_grpc']);
  checkValid(c1);
  s.send({ type_url: CDS, response_nonce: c1.nonce });
  s.send({ type_url: RDS, resource_names_subscribe: ['isomesh.acme', 'isomesh.beta', 'isomesh.gamma'] });
  const r1 = await s.next();
  assert.deepEqual(names(r1), ['isomesh.acme', 'isomesh.beta']);
  assert.deepEqual(r1.removed_resources, ['isomesh.gamma'], 'a subscribed name that does not exist is reported');
  s.send({ type_url: RDS, response_nonce: r1.nonce });
  plane.cp.apply(small('acme', 17000, { generation: 2, routes: [route('all', { match: { pathPrefix: '/x' }, to: { service: 'web' } })] }));
  const r2 = await s.next();
  assert.equal(r2.type_url, RDS);
  assert.deepEqual(names(r2), ['isomesh.acme'], 'only the changed RouteConfiguration');
  assert.equal(r2.removed_resources, undefined);
  s.send({ type_url: RDS, response_nonce: r2.nonce });
  // a removed service: the cluster is reported removed
  plane.cp.apply(small('beta', 17001, { generation: 2, services: [service('web')] }));
  const c2 = await s.next();
  assert.deepEqual([names(c2), c2.removed_resources], [[], ['beta/api']]);
  // NACK: not re-sent until it changes
  s.send({ type_url: CDS, response_nonce: c2.nonce });
  plane.cp.apply(small('acme', 17000, { generation: 3, services: [service('web', { connectTimeoutMs: 2000 }), service('api', { protocol: 'grpc' })], routes: [route('all', { match: { pathPrefix: '/x' }, to: { service: 'web' } })] }));
  const c3 = await s.next();
  assert.deepEqual(names(c3), ['acme/web']);
  s.send({ type_url: CDS, response_nonce: c3.nonce, error_detail: { code: 3, message: 'no thanks' } });
  s.send({ type_url: EDS, resource_names_subscribe: ['acme/web'] }); // barrier (EDS after CDS)
  const e1 = await s.next();
  assert.equal(e1.type_url, EDS, 'the refused cluster was not re-sent');
  assert.deepEqual(plane.cp.status().clients.find((c) => c.node === 'envoy-d')!.nacked?.[CDS]?.message, 'no thanks');
  s.send({ type_url: EDS, response_nonce: e1.nonce });
  // unsubscribe
  s.send({ type_url: RDS, resource_names_unsubscribe: ['isomesh.beta'] });
  s.close();

  // reconnect: resources whose version the client holds are not sent again; gone ones are removed
  const versions = Object.fromEntries(decodeResources(c1).map((r) => [r.name, r.version!]));
  const s2 = new RawAdsStream(plane.target, 'delta', { token: ADMIN_TOKEN });
  t.after(() => s2.close());
  s2.send({ node: node('envoy-d', { envoy: true }), type_url: CDS, resource_names_subscribe: ['*'], initial_resource_versions: versions });
  const again = await s2.next();
  assert.deepEqual(names(again), ['acme/web'], 'only acme/web changed since c1 (connect timeout)');
  assert.deepEqual(again.removed_resources, ['beta/api']);
});

test('visibility: a tenant token (bearer or node metadata) sees only its tenant; the unix socket sees all; no token → UNAUTHENTICATED; no admin token in any tenant view', async (t) => {
  const plane = await withPlane(t, { tokens: { 'tok-acme-0123456789': 'acme' } });
  plane.cp.apply(richTenant('rich', 17005));
  const viaMeta = new RawAdsStream(plane.target, 'sotw');
  t.after(() => viaMeta.close());
  viaMeta.send({ node: node('gw-acme', { envoy: true, token: 'tok-acme-0123456789' }), type_url: CDS, resource_names: ['*'] });
  const cds = await viaMeta.next();
  assert.deepEqual(names(cds), ['acme/api', 'acme/web', 'isomesh_grpc']);
  viaMeta.send({ type_url: CDS, response_nonce: cds.nonce, version_info: cds.version_info, resource_names: ['*'] });
  viaMeta.send({ type_url: LDS, resource_names: ['isomesh.beta', 'isomesh.acme'] });
  assert.deepEqual(names(await viaMeta.next()), ['isomesh.acme'], "another tenant's name is simply absent");
  const bearer = new RawAdsStream(plane.target, 'delta', { token: 'tok-acme-0123456789' });
  t.after(() => bearer.close());
  bearer.send({ node: node('gw-acme-2'), type_url: LDS, resource_names_subscribe: ['*'] });
  assert.deepEqual(names(await bearer.next()), ['api.acme'], 'proxyless: the api_listener of the grpc service');
  assert.equal(plane.cp.status().clients.find((c) => c.node === 'gw-acme-2')!.tenant, 'acme');
  const unix = new RawAdsStream(`unix:${plane.server.socketPath}`, 'sotw');
  t.after(() => unix.close());
  unix.send({ node: node('local', { envoy: true }), type_url: LDS });
  assert.deepEqual(names(await unix.next()), ['isomesh.acme', 'isomesh.beta', 'isomesh.rich']);

  for (const [token, label] of [[undefined, 'no token'], ['nope-not-a-token', 'unknown token in node metadata']] as const) {
    const s = new RawAdsStream(plane.target, 'sotw');
    t.after(() => s.close());
    s.send({ node: node('anon', token ? { token } : {}), type_url: LDS });
    await assert.rejects(s.next(), (err: grpc.ServiceError) => err.code === grpc.status.UNAUTHENTICATED, label);
  }
  const badBearer = new RawAdsStream(plane.target, 'delta', { token: 'wrong-bearer-token' });
  t.after(() => badBearer.close());
  badBearer.send({ node: node('anon2'), type_url: LDS });
  await assert.rejects(badBearer.next(), (err: grpc.ServiceError) => err.code === grpc.status.UNAUTHENTICATED);

  for (const scope of ['acme', 'beta', 'rich']) {
    for (const flavor of ['envoy', 'proxyless'] as const) {
      const snap = plane.cp.snapshot(flavor, scope);
      for (const kind of ['cluster', 'endpoint', 'listener', 'route'] as const) {
        for (const r of snap.resources(kind)) assert.ok(!r.any.includes(ADMIN_TOKEN), `${flavor} ${scope} ${r.name}`);
      }
    }
  }
});

test('100 concurrent streams each get their own state and every push', async (t) => {
  const plane = await withPlane(t);
  const streams = Array.from({ length: 100 }, (_, i) => new RawAdsStream(plane.target, i % 2 ? 'delta' : 'sotw', { token: ADMIN_TOKEN }));
  t.after(() => streams.forEach((s) => s.close()));
  // the same node id on every stream (as a C-core client with several targets): state is per stream
  streams.forEach((s, i) => s.send(i % 2 ? { node: node('same-node', { envoy: true }), type_url: RDS, resource_names_subscribe: ['isomesh.acme'] } : { node: node('same-node', { envoy: true }), type_url: RDS, resource_names: ['isomesh.acme'] }));
  const first = await Promise.all(streams.map((s) => s.next(20_000)));
  assert.ok(first.every((r) => names(r).join() === 'isomesh.acme'));
  streams.forEach((s, i) => s.send(i % 2 ? { type_url: RDS, response_nonce: first[i]!.nonce } : { type_url: RDS, response_nonce: first[i]!.nonce, version_info: first[i]!.version_info, resource_names: ['isomesh.acme'] }));
  assert.equal(new Set(first.map((r) => r.nonce)).size, 100, 'no two streams share a nonce');
  plane.cp.apply(small('acme', 17000, { generation: 2, routes: [] }));
  const second = await Promise.all(streams.map((s) => s.next(20_000)));
  assert.ok(second.every((r) => r.type_url === RDS && names(r).join() === 'isomesh.acme'));
  assert.equal(plane.cp.status().clients.filter((c) => c.node === 'same-node').length, 100);
});
