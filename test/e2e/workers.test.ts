// ISOMESH_WORKERS=2 (API.md "Workers"): both workers serve the tenant port; quotas and rate limits hold
// for the node, not per worker; a worker that dies is restarted without dropping the other's
// connections, and what it held (in-flight admissions, connections) is given back.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';

let d: TestDaemon;
let upstream: http.Server;
let upPort: number;
const held: http.ServerResponse[] = [];

before(async () => {
  upstream = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      if (req.url?.startsWith('/hold')) {
        held.push(res);
        return;
      }
      res.end('ok');
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upPort = (upstream.address() as net.AddressInfo).port;
  d = await startDaemon({ env: { ISOMESH_WORKERS: '2' } });
});

after(async () => {
  for (const r of held.splice(0)) r.destroy();
  await d?.stop();
  upstream?.closeAllConnections();
  upstream?.close();
});

async function tenant(name: string, quota?: Record<string, number>): Promise<number> {
  const t = await d.api('PUT', `/v1/tenants/${name}`, {});
  assert.equal(t.status, 201, JSON.stringify(t.body));
  if (quota) assert.equal((await d.api('PUT', `/v1/tenants/${name}/quota`, quota)).status, 200);
  await d.api('PUT', `/v1/tenants/${name}/services/app`, { endpoints: [{ address: '127.0.0.1', port: upPort }], timeoutMs: 30_000 });
  await d.api('PUT', `/v1/tenants/${name}/routes/all`, { match: { pathPrefix: '/' }, to: { service: 'app' } });
  await sleep(300);
  return t.body.listenerPort as number;
}

/** One GET on a fresh connection (so SO_REUSEPORT spreads them over the workers): its status and body (status 0: the connection failed or was cut). */
function answer(port: number, headers: Record<string, string> = {}, path = '/'): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const req = http.request({ host: '127.0.0.1', port, path, agent: false, headers: { connection: 'close', ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', () => resolve({ status: 0, body: '' }));
    req.end();
  });
}

/** The status of one request on a fresh connection. */
async function once(port: number, path = '/'): Promise<number> {
  return (await answer(port, {}, path)).status;
}

/** Until 20 requests in a row on fresh connections (both workers) answer `body`. */
async function applied(ask: () => Promise<{ status: number; body: string }>, body: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (let inRow = 0; inRow < 20; ) {
    const r = await ask();
    inRow = r.status === 200 && r.body === body ? inRow + 1 : 0;
    if (inRow === 0) {
      assert.ok(Date.now() < deadline, `every worker answers ${body} (last: ${r.status} ${r.body})`);
      await sleep(20);
    }
  }
}

/** Worker 0 serves again after a restart: running, and its request count moves under new connections. */
async function workerZeroServes(ask: () => Promise<unknown>): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const before = (await d.api('GET', '/v1/node')).body.workerStatus[0];
    if (before.state === 'running') {
      await Promise.all(Array.from({ length: 8 }, ask));
      if ((await d.api('GET', '/v1/node')).body.workerStatus[0].requests > before.requests) return;
    }
    assert.ok(Date.now() < deadline, 'worker 0 serves again after its restart');
    await sleep(50);
  }
}

/** Publishes `source` as the tenant's plugin p and makes it active (its chain is the caller's). */
async function publish(tenant: string, source: string): Promise<void> {
  const v = await d.api('POST', `/v1/tenants/${tenant}/plugins/p/versions`, { source, language: 'typescript' });
  assert.equal(v.status, 201, JSON.stringify(v.body));
  assert.equal((await d.api('PUT', `/v1/tenants/${tenant}/plugins/p/active`, { version: v.body.version })).status, 200);
}

test('both workers serve the tenant port (SO_REUSEPORT), and /v1/node shows them', async () => {
  const port = await tenant('spread');
  const before = (await d.api('GET', '/v1/node')).body;
  assert.equal(before.workers, 2);
  const statuses = await Promise.all(Array.from({ length: 60 }, () => once(port)));
  assert.deepEqual(new Set(statuses), new Set([200]));
  const after = (await d.api('GET', '/v1/node')).body;
  const served = after.workerStatus.map((w: { requests: number }, i: number) => w.requests - before.workerStatus[i].requests);
  assert.equal(served.reduce((a: number, b: number) => a + b, 0), 60);
  assert.ok(served.every((n: number) => n > 0), `each worker served some of 60 connections: ${served}`);
});

test('a tenant rps quota holds for the node: two workers admit the quota between them, not each', async () => {
  const rps = 30;
  const port = await tenant('capped', { requestsPerSecond: rps });
  let ok = 0;
  let limited = 0;
  const seconds = 3;
  const t0 = Date.now();
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (Date.now() - t0 < seconds * 1000) {
      const s = await once(port);
      if (s === 200) ok++;
      else if (s === 429) limited++;
    }
  }));
  const elapsed = (Date.now() - t0) / 1000;
  // The bucket starts full (rps) and refills at rps per second.
  const expected = rps + rps * elapsed;
  assert.ok(limited > 0, 'the quota refused the excess');
  assert.ok(ok <= expected * 1.1 && ok >= expected * 0.8, `${ok} admitted in ${elapsed.toFixed(1)} s; the node's quota allows ${expected.toFixed(0)} (per-worker buckets would allow twice that)`);
});

test('maxConcurrentRequests and a rate limit hold for the node', async () => {
  const port = await tenant('conc', { maxConcurrentRequests: 4 });
  const pending = Array.from({ length: 10 }, () => once(port, '/hold'));
  const deadline = Date.now() + 10_000;
  while (held.length < 4 && Date.now() < deadline) await sleep(20);
  await sleep(300);
  assert.equal(held.length, 4, 'exactly the node-wide concurrency reached the upstream');
  for (const r of held.splice(0)) r.end('done');
  const statuses = await Promise.all(pending);
  assert.equal(statuses.filter((s) => s === 200).length, 4);
  assert.equal(statuses.filter((s) => s === 429).length, 6);

  const rl = await tenant('limited');
  assert.equal((await d.api('PUT', '/v1/tenants/limited/ratelimits/per-path', { descriptors: [{ key: 'path' }], limit: { requestsPerUnit: 20, unit: 'minute' } })).status, 201);
  await sleep(300);
  const results = await Promise.all(Array.from({ length: 30 }, () => once(rl, '/same')));
  assert.equal(results.filter((s) => s === 200).length, 20, 'the rate limit counted across both workers');
  assert.equal(results.filter((s) => s === 429).length, 10);
});

test('circuit breaking and outlier ejection act for the node: counts and ejections are shared by the workers', async () => {
  // A second upstream that fails every request.
  const bad = http.createServer((req, res) => {
    req.resume();
    res.writeHead(500).end('bad');
  });
  await new Promise<void>((r) => bad.listen(0, '127.0.0.1', r));
  const badPort = (bad.address() as net.AddressInfo).port;
  try {
    const t = await d.api('PUT', '/v1/tenants/breaker', {});
    const port = t.body.listenerPort as number;
    assert.equal((await d.api('PUT', '/v1/tenants/breaker/services/flaky', {
      endpoints: [{ address: '127.0.0.1', port: upPort }, { address: '127.0.0.1', port: badPort }],
      circuitBreaker: { maxConnections: 100, maxPending: 100, consecutive5xx: 2, ejectionMs: 60_000 },
    })).status, 201);
    assert.equal((await d.api('PUT', '/v1/tenants/breaker/services/held', {
      endpoints: [{ address: '127.0.0.1', port: upPort }],
      circuitBreaker: { maxConnections: 2, maxPending: 0, consecutive5xx: 1000, ejectionMs: 1000 },
      timeoutMs: 30_000,
    })).status, 201);
    await d.api('PUT', '/v1/tenants/breaker/routes/hold', { match: { pathPrefix: '/hold' }, to: { service: 'held' } });
    await d.api('PUT', '/v1/tenants/breaker/routes/all', { match: { pathPrefix: '/' }, to: { service: 'flaky' } });
    await sleep(300);
    // One at a time, each on a new connection (spread over both workers): after the node's second
    // consecutive failure the bad endpoint is ejected for everyone (per-worker state would allow four).
    const seen: number[] = [];
    for (let i = 0; i < 30; i++) seen.push(await once(port));
    assert.equal(seen.filter((s) => s === 500).length, 2, `statuses ${seen.join(' ')}`);
    assert.equal(seen.filter((s) => s === 200).length, 28);
    const status = await d.api('GET', '/v1/tenants/breaker/services/flaky');
    const badEp = status.body.endpointStatus.find((e: { port: number }) => e.port === badPort);
    assert.equal(badEp.ejected, true, JSON.stringify(status.body.endpointStatus));

    // maxConnections 2 × 1 endpoint + maxPending 0: two requests in flight on the node, the rest 503.
    const pending = Array.from({ length: 8 }, () => once(port, '/hold'));
    const deadline = Date.now() + 10_000;
    while (held.length < 2 && Date.now() < deadline) await sleep(20);
    await sleep(300);
    assert.equal(held.length, 2, 'two requests reached the upstream');
    for (const r of held.splice(0)) r.end('done');
    const statuses = await Promise.all(pending);
    assert.equal(statuses.filter((x) => x === 200).length, 2, statuses.join(' '));
    assert.equal(statuses.filter((x) => x === 503).length, 6, statuses.join(' '));
  } finally {
    for (const r of held.splice(0)) r.end('done');
    bad.closeAllConnections();
    bad.close();
  }
});

test('a worker that dies is restarted; the other worker’s connections are not touched; its holdings are given back', async () => {
  const port = await tenant('sturdy');
  // Keep-alive connections spread over both workers, each with one request done.
  const sockets: net.Socket[] = [];
  const ask = (s: net.Socket, path: string) =>
    new Promise<string>((resolve) => {
      const onData = (b: Buffer) => {
        s.off('close', onClose);
        resolve(b.toString().split('\r\n')[0]!);
      };
      const onClose = () => {
        s.off('data', onData);
        resolve('closed');
      };
      s.once('data', onData);
      s.once('close', onClose);
      s.write(`GET ${path} HTTP/1.1\r\nHost: a\r\n\r\n`);
    });
  for (let i = 0; i < 20; i++) {
    const s = net.connect(port, '127.0.0.1');
    s.on('error', () => {});
    await new Promise((r) => s.once('connect', r));
    sockets.push(s);
  }
  assert.deepEqual(new Set(await Promise.all(sockets.map((s) => ask(s, '/first')))), new Set(['HTTP/1.1 200 OK']));
  // A request in flight on every connection: the dying worker's admissions must not stay counted.
  const second = sockets.map((s) => ask(s, '/hold'));
  const deadline0 = Date.now() + 10_000;
  while (held.length < 20 && Date.now() < deadline0) await sleep(20);
  assert.equal(held.length, 20);
  const before = (await d.api('GET', '/v1/node')).body.workerStatus[0];
  assert.equal((await d.api('GET', '/v1/tenants/sturdy/status')).body.usage.inFlight, 20);
  const restart = await d.api('POST', '/v1/node/workers/0/restart');
  assert.equal(restart.status, 202);
  await sleep(300);
  for (const r of held.splice(0)) r.end('done');
  const answers = await Promise.all(second);
  const survived = answers.filter((l) => l === 'HTTP/1.1 200 OK').length;
  const cut = answers.filter((l) => l === 'closed').length;
  assert.equal(survived + cut, 20);
  assert.equal(cut, before.connections, `worker 0's ${before.connections} connections were cut`);
  assert.ok(cut > 0 && survived > 0, `both workers held some of the connections (cut ${cut}, survived ${survived})`);
  for (const s of sockets) s.destroy();
  // Restarted: it serves again, and the node's counts came back to zero.
  const deadline = Date.now() + 10_000;
  let node = (await d.api('GET', '/v1/node')).body;
  while (node.workerStatus[0].state !== 'running' && Date.now() < deadline) {
    await sleep(50);
    node = (await d.api('GET', '/v1/node')).body;
  }
  assert.equal(node.workerStatus[0].restarts, 1);
  const after = await Promise.all(Array.from({ length: 30 }, () => once(port)));
  assert.deepEqual(new Set(after), new Set([200]), 'new connections are served by both workers again');
  await sleep(300);
  const status = (await d.api('GET', '/v1/tenants/sturdy/status')).body;
  assert.equal(status.usage.inFlight, 0, 'no request of the dead worker is left counted');
  assert.equal(status.usage.pluginInFlight, 0, 'no admission of the dead worker is left counted in the quota');
  assert.equal((await d.api('GET', '/v1/node')).body.workerStatus.reduce((n: number, w: { connections: number }) => n + w.connections, 0), 0);
  assert.equal((await d.api('POST', '/v1/node/workers/7/restart')).status, 404);
});

test('a restarted worker gets only its own plugin replies: calls its predecessor left in flight are not answered to it', async () => {
  // The plugin answers each request with its own tag after the sleep it asks for. The calls of the
  // worker that is restarted are still sleeping in the main thread's plugin host when the new worker
  // (whose call ids start again at 1) sends its own; their replies must not be taken for the new ones'.
  const port = await tenant('tagged');
  const source = `import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  async onRequest(req, ctx) {
    await ctx.sleep(Number(req.headers.get('x-sleep') ?? '0'));
    return ctx.respond(200, { body: req.headers.get('x-tag') ?? 'none' });
  },
});`;
  await publish('tagged', source);
  assert.equal((await d.api('PUT', '/v1/tenants/tagged/chain', [{ plugin: 'p' }])).status, 200);
  const tagged = (tag: string, sleepMs: number) => answer(port, { 'x-tag': tag, 'x-sleep': String(sleepMs) });
  const serving = () => workerZeroServes(() => tagged('probe', 0));
  // The chain is applied after the API answers: wait until both workers run it (fresh connections
  // spread over both), so that the restarts below do not race the change.
  await applied(() => tagged('ready', 0), 'ready');
  // A fresh worker 0 first: its call ids start low, so the new worker's ids below reach them.
  assert.equal((await d.api('POST', '/v1/node/workers/0/restart')).status, 202);
  await serving();
  await applied(() => tagged('ready', 0), 'ready');
  // 16 calls in flight on fresh connections (both workers), each sleeping 1.5 s in the plugin host.
  const old = Array.from({ length: 16 }, (_, i) => tagged(`old-${i}`, 1500));
  await sleep(300);
  assert.equal((await d.api('POST', '/v1/node/workers/0/restart')).status, 202);
  await serving();
  // New calls on both workers while the old ones still sleep; they sleep longer, so an old reply
  // (due at 1.5 s) would reach a new call first if it were delivered to the restarted worker.
  const fresh = await Promise.all(Array.from({ length: 40 }, (_, i) => tagged(`new-${i}`, 2500)));
  fresh.forEach((r, i) => assert.deepEqual(r, { status: 200, body: `new-${i}` }, `request new-${i} got its own answer`));
  const olds = await Promise.all(old);
  // The old worker's connections were cut (status 0); the other worker's answered with their own tags.
  olds.forEach((r, i) => assert.ok(r.status === 0 || (r.status === 200 && r.body === `old-${i}`), `old-${i}: ${JSON.stringify(r)}`));
  assert.ok(olds.some((r) => r.status === 0), 'some old calls were on the restarted worker');
});

test('a worker restarted while a configuration change is being applied comes back with that change', async () => {
  // The API answers once the change is stored; the workers take it just after. A worker that dies in
  // between must be restored with the new configuration, not the one before it: here, the chain that
  // answers every request (before it, requests reach the upstream, "ok").
  const port = await tenant('racy');
  const ask = () => answer(port);
  await applied(ask, 'ok');
  await publish('racy', `export default { onRequest(req, ctx) { return ctx.respond(200, { body: 'guarded' }); } };`);
  await sleep(300);
  // The chain change and worker 0's death together: the restart lands while the change is sent.
  const [chain, restart] = await Promise.all([d.api('PUT', '/v1/tenants/racy/chain', [{ plugin: 'p' }]), d.api('POST', '/v1/node/workers/0/restart')]);
  assert.equal(chain.status, 200);
  assert.equal(restart.status, 202);
  await workerZeroServes(ask);
  const answers = await Promise.all(Array.from({ length: 30 }, ask));
  assert.deepEqual(answers.filter((a) => a.body !== 'guarded'), [], 'every worker runs the new chain');
});

test('ctx.responseHeaders edits reach the client from either worker; a skipped onResponse is not called', async () => {
  const port = await tenant('edits');
  const source = `import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  onRequest(req, ctx) {
    ctx.responseHeaders.set('x-edit', req.headers.get('x-tag') ?? 'none');
    if (req.headers.get('x-skip') !== null) ctx.skipOnResponse();
  },
  onResponse(res) { res.headers.set('x-on-response', res.headers.get('x-edit') ?? 'unset'); },
});`;
  await publish('edits', source);
  assert.equal((await d.api('PUT', '/v1/tenants/edits/chain', [{ plugin: 'p' }])).status, 200);
  const get = (headers: Record<string, string>) =>
    new Promise<http.IncomingMessage>((resolve, reject) => {
      const req = http.request({ host: '127.0.0.1', port, path: '/', agent: false, headers: { connection: 'close', ...headers } }, (res) => {
        res.resume();
        res.on('end', () => resolve(res));
      });
      req.on('error', reject);
      req.end();
    });
  // Until the chain is applied on both workers (fresh connections spread over them).
  const deadline = Date.now() + 10_000;
  for (let inRow = 0; inRow < 20; ) {
    const r = await get({ 'x-tag': 'ready' });
    inRow = r.headers['x-edit'] === 'ready' ? inRow + 1 : 0;
    if (inRow === 0) {
      assert.ok(Date.now() < deadline, 'both workers run the chain');
      await sleep(20);
    }
  }
  const before = (await d.api('GET', '/v1/node')).body.workerStatus.map((w: { requests: number }) => w.requests);
  for (let i = 0; i < 40; i++) {
    const skip = i % 2 === 0;
    const r = await get({ 'x-tag': `t${i}`, ...(skip ? { 'x-skip': '1' } : {}) });
    assert.equal(r.statusCode, 200);
    assert.equal(r.headers['x-edit'], `t${i}`);
    // onResponse sees the edit when it runs; it does not run when the request skipped it.
    assert.equal(r.headers['x-on-response'], skip ? undefined : `t${i}`, `request ${i}`);
  }
  const after = (await d.api('GET', '/v1/node')).body.workerStatus.map((w: { requests: number }) => w.requests);
  assert.ok(after.every((n: number, w: number) => n > before[w]), `both workers served: ${before} → ${after}`);
});
