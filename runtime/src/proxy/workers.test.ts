// WorkerPool (two data-plane worker threads) driven directly: a tenant's extra listen addresses
// survive a worker's restart, including one that lands while the address change is being sent.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import pino from 'pino';
import prom from 'prom-client';
import { IsomeshError } from '../errors.ts';
import { NodeLedger, PluginHost } from '../host/index.ts';
import { WorkerPool } from './index.ts';
import { freePort, service, sleep, startUpstream, tenantConfig } from './test-fixtures.ts';

const EXTRA = '127.0.0.2';
const TRIES = 30;

async function startPool(t: TestContext): Promise<{ pool: WorkerPool; port: number; configure: () => Promise<void> }> {
  const { pool, port, configure } = await unconfiguredPool(t);
  await configure();
  return { pool, port, configure };
}

/** A 2-worker pool, ready, and how to give it tenant acme (upstream a, a fixed port). */
async function unconfiguredPool(t: TestContext): Promise<{ pool: WorkerPool; port: number; configure: () => Promise<void> }> {
  const up = await startUpstream(t, 'a');
  const ledger = new NodeLedger();
  const logger = pino({ level: 'silent' });
  const host = new PluginHost({ logger, registry: new prom.Registry(), mode: 'inline', ledger });
  const pool = new WorkerPool({
    count: 2, host, ledger, logger, listenAddress: '127.0.0.1', maxConnections: 1000, drainTimeoutMs: 1000, logLevel: 'silent',
    timeouts: { headersMs: 10_000, idleMs: 60_000, bodyMs: 30_000 },
  });
  t.after(async () => {
    await pool.close();
    await host.close();
  });
  await pool.ready();
  // A fixed port, as the store gives every tenant: a restored worker binds the configured one.
  const port = await freePort();
  const configure = () => pool.configure(tenantConfig('acme', [service('a', [up.port])], [{ name: 'all', match: {}, to: { service: 'a' } }], 1, port));
  return { pool, port, configure };
}

/** Worker `index` has exited since it had `restarts` restarts, runs again, and has been given every tenant. */
async function back(pool: WorkerPool, index: number, restarts: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const w = pool.workerStatus()[index]!;
    if (w.restarts > restarts && w.state === 'running') return pool.ready();
    await sleep(25);
  }
  assert.fail(`worker ${index} runs again after its restart`);
}

/** Restarts worker `index` and waits until it is back. */
async function restart(pool: WorkerPool, index: number): Promise<void> {
  const restarts = pool.workerStatus()[index]!.restarts;
  await pool.restartWorker(index);
  await back(pool, index, restarts);
}

/** One GET on a fresh connection to address:port: its status (0: no answer) and which upstream answered (x-upstream). */
function get(port: number, address: string): Promise<{ status: number; upstream: string | undefined }> {
  return new Promise((resolve) => {
    const req = http.request({ host: address, port, path: '/', agent: false, timeout: 5000, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, upstream: res.headers['x-upstream'] as string | undefined }));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve({ status: 0, upstream: undefined }));
    req.end();
  });
}

/**
 * TRIES GETs on fresh connections (SO_REUSEPORT spreads them over the workers listening there): how
 * many were answered 200, and which workers answered (their request counts moved).
 */
async function served(pool: WorkerPool, port: number, address: string): Promise<{ ok: number; by: number[] }> {
  const before = pool.workerStatus().map((w) => w.requests);
  let ok = 0;
  for (let i = 0; i < TRIES; i++) if ((await get(port, address)).status === 200) ok++;
  return { ok, by: pool.workerStatus().filter((w) => w.requests > before[w.index]!).map((w) => w.index) };
}

/** Of TRIES fresh connections to address:port, how many were accepted. */
async function accepted(port: number, address: string): Promise<number> {
  let n = 0;
  for (let i = 0; i < TRIES; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect({ port, host: address, timeout: 2000 });
      const done = (connected: boolean) => {
        s.destroy();
        resolve(connected);
      };
      s.once('connect', () => done(true));
      s.once('timeout', () => done(false));
      s.once('error', () => done(false));
    });
    if (ok) n++;
  }
  return n;
}

// The address change and worker 0's death start together, so the death lands while the change is
// being sent (worker 0 is already terminating when the command reaches it). On the code before the
// fix — the change recorded only after every worker acknowledged it — each of the two tests below
// failed in every run.

test('an address added while a worker restarts is served by that worker, and by every worker restarted later', { timeout: 120_000 }, async (t) => {
  const { pool, port } = await startPool(t);
  const restarts = pool.workerStatus()[0]!.restarts;
  const [add] = await Promise.allSettled([pool.addListenAddress('acme', EXTRA), pool.restartWorker(0)]);
  await back(pool, 0, restarts);
  assert.deepEqual(await served(pool, port, EXTRA), { ok: TRIES, by: [0, 1] }, 'both workers serve the address, the restored one too');
  // Worker 1 restarted too: now both hold only what the pool recorded.
  await restart(pool, 1);
  assert.deepEqual(await served(pool, port, EXTRA), { ok: TRIES, by: [0, 1] }, 'the address is recorded');
  assert.deepEqual(add, { status: 'fulfilled', value: undefined }, 'a worker lost during the send does not fail the change');
  assert.deepEqual(pool.listeners().map((l) => l.address), ['127.0.0.1', EXTRA]);
});

test('an address removed while a worker restarts is bound by no worker', { timeout: 120_000 }, async (t) => {
  const { pool, port } = await startPool(t);
  await pool.addListenAddress('acme', EXTRA);
  assert.deepEqual(await served(pool, port, EXTRA), { ok: TRIES, by: [0, 1] });
  const restarts = pool.workerStatus()[0]!.restarts;
  const [remove] = await Promise.allSettled([pool.removeListenAddress('acme', EXTRA), pool.restartWorker(0)]);
  await back(pool, 0, restarts);
  assert.equal(await accepted(port, EXTRA), 0, 'the restored worker does not bind the removed address');
  await restart(pool, 1);
  assert.equal(await accepted(port, EXTRA), 0, 'the removal is recorded');
  assert.deepEqual(remove, { status: 'fulfilled', value: undefined }, 'a worker lost during the send does not fail the change');
  assert.deepEqual(await served(pool, port, '127.0.0.1'), { ok: TRIES, by: [0, 1] }, 'the default address still serves');
});

test('an address added before the tenant is configured survives a worker restart in between', { timeout: 120_000 }, async (t) => {
  const { pool, port, configure } = await unconfiguredPool(t);
  // The datapath may attach a workload's address before the tenant's configuration reaches the pool.
  await pool.addListenAddress('acme', EXTRA);
  await restart(pool, 0);
  await configure();
  assert.deepEqual(await served(pool, port, EXTRA), { ok: TRIES, by: [0, 1] }, 'the restarted worker serves the address too');
  assert.deepEqual(pool.listeners().map((l) => l.address), ['127.0.0.1', EXTRA]);
  await pool.removeListenAddress('acme', EXTRA);
  await restart(pool, 1);
  assert.equal(await accepted(port, EXTRA), 0, 'a removed address stays removed');
});

test('an address no worker can bind is refused and left in no record', { timeout: 120_000 }, async (t) => {
  const { pool, port } = await startPool(t);
  // 192.0.2.0/24 (TEST-NET-1) is not this host's: binding fails; nothing is sent there.
  await assert.rejects(pool.addListenAddress('acme', '192.0.2.123'), (err: unknown) => err instanceof IsomeshError && err.code === 'ISOMESH_ERR_PROXY_LISTEN_FAILED');
  assert.deepEqual(pool.listeners().map((l) => l.address), ['127.0.0.1']);
  // A restarted worker is not given it (its restore would fail the tenant's addresses after it).
  await pool.addListenAddress('acme', EXTRA);
  await restart(pool, 0);
  assert.deepEqual(await served(pool, port, EXTRA), { ok: TRIES, by: [0, 1] });
  assert.deepEqual(pool.listeners().map((l) => l.address), ['127.0.0.1', EXTRA]);
});

test('a change sent while a worker starts up is not held forever when that worker dies before it is ready', { timeout: 120_000 }, async (t) => {
  const up = await startUpstream(t, 'b');
  const { pool, port } = await startPool(t);
  const restarts = pool.workerStatus()[0]!.restarts;
  await pool.restartWorker(0);
  // Its successor is spawned at once and takes a while to load: wait until it exists, not until it is ready.
  for (let i = 0; i < 400 && pool.workerStatus()[0]!.state !== 'running'; i++) await sleep(5);
  const change = pool.configure(tenantConfig('acme', [service('b', [up.port])], [{ name: 'all', match: {}, to: { service: 'b' } }], 2, port));
  await pool.restartWorker(0);
  // Bounded: the change waits on worker 0's readiness; a worker that never got ready must release it.
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    change.then(() => 'applied', (err: unknown) => `failed: ${String(err)}`),
    new Promise<string>((resolve) => (timer = setTimeout(() => resolve('still waiting after 20 s'), 20_000))),
  ]);
  clearTimeout(timer);
  assert.equal(outcome, 'applied');
  await back(pool, 0, restarts + 1);
  // Both workers serve the change (upstream b answers "b").
  const answers = new Set<string>();
  const before = pool.workerStatus().map((w) => w.requests);
  for (let i = 0; i < TRIES; i++) {
    const { status, upstream } = await get(port, '127.0.0.1');
    answers.add(`${status} ${upstream}`);
  }
  assert.deepEqual([...answers], ['200 b']);
  assert.deepEqual(pool.workerStatus().filter((w) => w.requests > before[w.index]!).map((w) => w.index), [0, 1]);
});
