// Listener lifecycle: bind, rebind, conflicts, extra addresses, config swap, removal, close.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { IsomeshError } from '../errors.ts';
import { freePort, send, service, sleep, startProxy, startUpstream, tenantConfig } from './test-fixtures.ts';

function refused(port: number, address = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(port, address);
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

test('bind is idempotent and rebinds when the port changes', async (t) => {
  const up = await startUpstream(t, 'a');
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('a', [up.port])], [{ name: 'all', match: {}, to: { service: 'a' } }]));
  const first = proxy.status('acme')!.listener!.port;
  assert.equal(await proxy.bind('acme', first), first);
  assert.equal(await proxy.bind('acme', 0), first, 'port 0 keeps an existing listener');
  const next = await freePort();
  assert.equal(await proxy.bind('acme', next), next);
  assert.deepEqual(proxy.listeners(), [{ tenant: 'acme', address: '127.0.0.1', port: next }]);
  assert.equal((await send(next)).status, 200);
  assert.equal(await refused(first), true, 'old port released');
});

test('a port in use rejects ISOMESH_ERR_TENANT_PORT_IN_USE and the tenant keeps serving', async (t) => {
  const up = await startUpstream(t, 'a');
  const blocker = http.createServer();
  await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
  t.after(() => blocker.close());
  const taken = (blocker.address() as net.AddressInfo).port;
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('a', [up.port])], [{ name: 'all', match: {}, to: { service: 'a' } }]));
  const port = proxy.status('acme')!.listener!.port;
  await assert.rejects(proxy.bind('acme', taken), (err: unknown) => err instanceof IsomeshError && err.code === 'ISOMESH_ERR_TENANT_PORT_IN_USE');
  assert.equal(proxy.status('acme')!.listener!.port, port);
  assert.equal((await send(port)).status, 200);
  // A second tenant cannot take the first one's port either.
  await assert.rejects(proxy.bind('other', port), (err: unknown) => err instanceof IsomeshError && err.code === 'ISOMESH_ERR_TENANT_PORT_IN_USE');
  assert.equal(proxy.status('other'), undefined, 'a failed first bind leaves no tenant behind');
});

test('configure swap takes effect for the next request; a bad route leaves the old config', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const { proxy } = await startProxy(t);
  const services = [service('a', [a.port]), service('b', [b.port])];
  await proxy.configure(tenantConfig('acme', services, [{ name: 'r', match: {}, to: { service: 'a' } }], 1));
  const port = proxy.status('acme')!.listener!.port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  assert.equal(JSON.parse((await send(port, { agent })).body).service, 'a');
  await proxy.configure(tenantConfig('acme', services, [{ name: 'r', match: {}, to: { service: 'b' } }], 2));
  assert.equal(JSON.parse((await send(port, { agent })).body).service, 'b', 'same keep-alive connection, new config');
  await assert.rejects(
    proxy.configure(tenantConfig('acme', services, [{ name: 'r', match: { pathRegex: '[' }, to: { service: 'a' } }], 3)),
    (err: unknown) => err instanceof IsomeshError && err.code === 'ISOMESH_ERR_ROUTE_INVALID',
  );
  assert.equal(JSON.parse((await send(port, { agent })).body).service, 'b');
  assert.equal(proxy.status('acme')!.listener!.port, port, 'a swap with the same port does not rebind');
});

test('removeTenant closes the listener and lets in-flight requests finish', async (t) => {
  const up = await startUpstream(t, 'slow', (req, res) => setTimeout(() => res.end('finished'), 200));
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('slow', [up.port])], [{ name: 'all', match: {}, to: { service: 'slow' } }]));
  const port = proxy.status('acme')!.listener!.port;
  const inflight = send(port);
  await sleep(50);
  const removed = proxy.removeTenant('acme');
  await sleep(20);
  assert.equal(await refused(port), true, 'no new connections once removal started');
  const r = await inflight;
  assert.equal(r.status, 200);
  assert.equal(r.body, 'finished');
  await removed;
  assert.equal(proxy.status('acme'), undefined);
  assert.deepEqual(proxy.listeners(), []);
});

test('addListenAddress accepts the tenant’s traffic on another address, also after a rebind', async (t) => {
  const up = await startUpstream(t, 'a');
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('a', [up.port])], [{ name: 'all', match: {}, to: { service: 'a' } }]));
  await proxy.addListenAddress('acme', '127.0.0.2');
  const port = proxy.status('acme')!.listener!.port;
  assert.deepEqual(
    proxy.listeners().map((l) => `${l.address}:${l.port}`).sort(),
    [`127.0.0.1:${port}`, `127.0.0.2:${port}`],
  );
  assert.equal((await send(port, { address: '127.0.0.2' })).status, 200);
  const next = await freePort();
  await proxy.bind('acme', next);
  assert.equal((await send(next, { address: '127.0.0.2' })).status, 200);
  assert.equal(await refused(port, '127.0.0.2'), true);
  await assert.rejects(proxy.addListenAddress('acme', '192.0.2.123'), (err: unknown) => err instanceof IsomeshError && err.code === 'ISOMESH_ERR_PROXY_LISTEN_FAILED');
  assert.equal(proxy.listeners().length, 2);
  // removing the extra address closes it and keeps the default listener; the default is never removed
  await proxy.removeListenAddress('acme', '127.0.0.2');
  assert.equal(await refused(next, '127.0.0.2'), true);
  assert.equal((await send(next)).status, 200);
  await proxy.removeListenAddress('acme', '127.0.0.1');
  assert.equal((await send(next)).status, 200);
  assert.deepEqual(proxy.listeners().map((l) => l.address), ['127.0.0.1']);
  // a later rebind no longer follows the removed address
  const third = await freePort();
  await proxy.bind('acme', third);
  assert.equal(await refused(third, '127.0.0.2'), true);
});

test('status counts requests; close() drains in-flight requests and stops listening', async (t) => {
  const up = await startUpstream(t, 'slow', (req, res) => setTimeout(() => res.end('ok'), 150));
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('slow', [up.port])], [{ name: 'all', match: {}, to: { service: 'slow' } }]));
  const port = proxy.status('acme')!.listener!.port;
  const pending = [send(port), send(port)];
  await sleep(50);
  assert.deepEqual(proxy.status('acme'), { listener: { address: '127.0.0.1', port }, requests: 2, inFlight: 2 });
  await proxy.close();
  for (const r of await Promise.all(pending)) assert.equal(r.status, 200);
  assert.equal(await refused(port), true);
});
