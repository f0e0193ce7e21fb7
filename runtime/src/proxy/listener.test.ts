// The deadline sweep: armed by the first connection, enforcing deadlines while connections exist,
// stopped once none is left (an idle data plane is not woken), for good after stop().
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { ConnectionLedger, Sweeper, TenantServer } from './listener.ts';

async function until(check: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return check();
}

test('the sweep runs only while a connection is open, and expires deadlines meanwhile', async (t) => {
  const servers: TenantServer[] = [];
  const sweeper = new Sweeper(() => servers);
  t.after(() => sweeper.stop());
  const server = new TenantServer('acme', {
    timeouts: { headersMs: 150, idleMs: 60_000, bodyMs: 30_000 },
    ledger: new ConnectionLedger(100),
    tenantCap: () => 100,
    refused: () => {},
    onRequest: () => assert.fail('no request completes in this test'),
    onConnection: () => sweeper.arm(),
  });
  servers.push(server);
  const port = await server.listen(0, '127.0.0.1');
  t.after(() => {
    for (const c of server.connections) c.destroy();
    return new Promise<void>((r) => server.server.close(() => r()));
  });
  assert.equal(sweeper.armed, false, 'no connection yet: no timer');

  // A client that never finishes its head: the header deadline (150 ms) must close it with a 408.
  const client = net.connect(port, '127.0.0.1');
  t.after(() => client.destroy());
  let answer = '';
  client.on('data', (d) => (answer += d.toString('latin1')));
  const closed = new Promise<void>((r) => client.once('close', () => r()));
  await new Promise<void>((r) => client.once('connect', () => r()));
  client.write('GET / HTTP/1.1\r\nhost: a\r\n');
  assert.ok(await until(() => sweeper.armed, 2000), 'the first connection arms the sweep');
  await closed;
  assert.match(answer, /^HTTP\/1\.1 408 /, 'the sweep enforced the header deadline');
  assert.ok(await until(() => !sweeper.armed && server.connections.size === 0, 2000), 'with no connection left the sweep stops');

  // A new connection arms it again; after stop() nothing does.
  const again = net.connect(port, '127.0.0.1');
  t.after(() => again.destroy());
  await new Promise<void>((r) => again.once('connect', () => r()));
  assert.ok(await until(() => sweeper.armed, 2000), 'a later connection arms it again');
  sweeper.stop();
  assert.equal(sweeper.armed, false);
  const third = net.connect(port, '127.0.0.1');
  t.after(() => third.destroy());
  await new Promise<void>((r) => third.once('connect', () => r()));
  await until(() => server.connections.size >= 2, 2000);
  assert.equal(sweeper.armed, false, 'a stopped sweep is not armed by new connections');
});
