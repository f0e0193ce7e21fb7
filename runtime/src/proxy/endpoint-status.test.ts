// ProxyServer.endpointStatus: the balancer's live state per endpoint (ejection, in-flight, failures),
// read over real loopback traffic.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type http from 'node:http';
import { send, service, startProxy, startUpstream, tenantConfig } from './test-fixtures.ts';

test('endpointStatus shows ejection after consecutive 5xx, in-flight requests, and nothing for unknown services', async (t) => {
  const good = await startUpstream(t, 'good');
  const bad = await startUpstream(t, 'bad', (req, res) => {
    req.resume();
    res.writeHead(500).end();
  });
  let held: http.ServerResponse | undefined;
  let arrived!: () => void;
  const arrival = new Promise<void>((resolve) => (arrived = resolve));
  const slow = await startUpstream(t, 'slow', (req, res) => {
    req.resume();
    held = res;
    arrived();
  });
  const { proxy } = await startProxy(t);
  const breaker = { maxConnections: 10, maxPending: 10, consecutive5xx: 2, ejectionMs: 60_000 };
  await proxy.configure(tenantConfig('acme', [
    service('web', [good.port, bad.port], { circuitBreaker: breaker }),
    service('slow', [slow.port]),
  ], [
    { name: 'slow', match: { pathPrefix: '/slow' }, to: { service: 'slow' } },
    { name: 'all', match: {}, to: { service: 'web' } },
  ]));
  const port = proxy.status('acme')!.listener!.port;

  const fresh = proxy.endpointStatus('acme', 'web')!;
  assert.deepEqual(fresh, [
    { address: '127.0.0.1', port: good.port, ejected: false, active: 0, consecutive5xx: 0 },
    { address: '127.0.0.1', port: bad.port, ejected: false, active: 0, consecutive5xx: 0 },
  ]);

  // Round robin alternates: after two requests the bad endpoint has one failure, after four it is ejected.
  for (let i = 0; i < 2; i++) await send(port);
  assert.deepEqual(proxy.endpointStatus('acme', 'web')!.map((e) => [e.ejected, e.consecutive5xx]), [[false, 0], [false, 1]]);
  const beforeEjection = Date.now();
  for (let i = 0; i < 2; i++) await send(port);
  const [ok, ejected] = proxy.endpointStatus('acme', 'web')!;
  assert.deepEqual([ok!.ejected, ok!.ejectedUntil], [false, undefined]);
  assert.equal(ejected!.ejected, true);
  const until = Date.parse(ejected!.ejectedUntil!);
  // ejectedUntil = failure time + ejectionMs, shown on the wall clock (a few ms of clock conversion slack)
  assert.ok(until >= beforeEjection + 60_000 - 5 && until <= Date.now() + 60_000 + 5, `ejectedUntil ${ejected!.ejectedUntil}`);

  // A request held by the upstream is active on its endpoint until it completes.
  const pending = send(port, { path: '/slow' });
  await arrival;
  assert.equal(proxy.endpointStatus('acme', 'slow')![0]!.active, 1);
  held!.writeHead(200).end('done');
  assert.equal((await pending).status, 200);
  assert.equal(proxy.endpointStatus('acme', 'slow')![0]!.active, 0);

  assert.equal(proxy.endpointStatus('acme', 'ghost'), undefined);
  assert.equal(proxy.endpointStatus('nobody', 'web'), undefined);
});

test('ejections, failure counts, in-flight and breaker counts survive a configuration change that keeps the endpoint', async (t) => {
  const good = await startUpstream(t, 'good');
  const bad = await startUpstream(t, 'bad', (req, res) => {
    req.resume();
    res.writeHead(500).end();
  });
  let held: http.ServerResponse | undefined;
  let arrived!: () => void;
  const arrival = new Promise<void>((resolve) => (arrived = resolve));
  const slow = await startUpstream(t, 'slow', (req, res) => {
    req.resume();
    held = res;
    arrived();
  });
  const { proxy } = await startProxy(t);
  const breaker = { maxConnections: 10, maxPending: 10, consecutive5xx: 2, ejectionMs: 60_000 };
  const routes = [
    { name: 'slow', match: { pathPrefix: '/slow' }, to: { service: 'slow' } },
    { name: 'all', match: {}, to: { service: 'web' } },
  ];
  await proxy.configure(tenantConfig('acme', [service('web', [good.port, bad.port], { circuitBreaker: breaker }), service('slow', [slow.port])], routes, 1));
  const port = proxy.status('acme')!.listener!.port;
  for (let i = 0; i < 4; i++) await send(port);
  assert.equal(proxy.endpointStatus('acme', 'web')![1]!.ejected, true);
  const pending = send(port, { path: '/slow' });
  await arrival;

  // A new snapshot: timeouts changed, a third endpoint added, a route renamed.
  const third = await startUpstream(t, 'third');
  await proxy.configure(tenantConfig('acme', [
    service('web', [good.port, bad.port, third.port], { circuitBreaker: breaker, timeoutMs: 7000 }),
    service('slow', [slow.port], { timeoutMs: 9000 }),
  ], [{ ...routes[0]!, name: 'slow-2' }, routes[1]!], 2));
  const after = proxy.endpointStatus('acme', 'web')!;
  assert.equal(after[1]!.ejected, true, 'the ejection outlives the configuration change');
  assert.equal(after[2]!.ejected, false);
  assert.equal(proxy.endpointStatus('acme', 'slow')![0]!.active, 1, 'the in-flight request is still counted on the new snapshot');
  held!.writeHead(200).end('done');
  assert.equal((await pending).status, 200);
  assert.equal(proxy.endpointStatus('acme', 'slow')![0]!.active, 0, 'and released on it when it ends');
  // Traffic keeps avoiding the ejected endpoint after the change.
  for (let i = 0; i < 6; i++) assert.equal((await send(port)).status, 200);

  // An endpoint that leaves the configuration leaves its state: re-added, it starts fresh.
  await proxy.configure(tenantConfig('acme', [service('web', [good.port], { circuitBreaker: breaker }), service('slow', [slow.port])], routes, 3));
  await proxy.configure(tenantConfig('acme', [service('web', [good.port, bad.port], { circuitBreaker: breaker }), service('slow', [slow.port])], routes, 4));
  assert.equal(proxy.endpointStatus('acme', 'web')![1]!.ejected, false);
});
