// Issue 7's attacks, replayed against a real daemon with default settings, printing the figures
// docs/reliability.md quotes. Loopback only; every loop is bounded. `node bench/reliability.ts`
import http from 'node:http';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, type TestDaemon } from '../test/support/daemon.ts';
import { parseResponses, raw } from '../test/support/raw.ts';

const get = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: app.example\r\n${extra}\r\n`;

async function tenant(d: TestDaemon, name: string, upstream: number, service: Record<string, unknown> = {}): Promise<number> {
  const t = await d.api('PUT', `/v1/tenants/${name}`, {});
  await d.api('PUT', `/v1/tenants/${name}/services/app`, { endpoints: [{ address: '127.0.0.1', port: upstream }], ...service });
  await d.api('PUT', `/v1/tenants/${name}/routes/all`, { match: { pathPrefix: '/' }, to: { service: 'app' } });
  return t.body.listenerPort as number;
}

async function status(port: number, path: string): Promise<{ status: number; ms: number }> {
  const t0 = performance.now();
  const r = await raw(port, [get(path, 'connection: close\r\n')], { timeoutMs: 20_000, idleMs: 20_000 });
  return { status: parseResponses(r.data)[0]?.status ?? 0, ms: performance.now() - t0 };
}

const upstream = http.createServer((req, res) => {
  req.resume();
  req.on('end', () => res.end('ok'));
});
await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
const up = (upstream.address() as net.AddressInfo).port;
const out: Record<string, unknown> = {};

const d = await startDaemon();
try {
  const port = await tenant(d, 'shop', up);
  await d.api('PUT', '/v1/tenants/shop/routes/rx', { match: { pathPrefix: '/rx', headers: [{ name: 'x-a', regex: '(a+)+$' }] }, to: { service: 'app' } });
  await sleep(300);

  // 1. ReDoS: the header took ~5 s (doubling per byte) on the event loop of every tenant.
  const t0 = performance.now();
  const redos = await raw(port, [`GET /rx HTTP/1.1\r\nHost: a\r\nx-a: ${'a'.repeat(26)}!\r\nconnection: close\r\n\r\n`], { timeoutMs: 20_000 });
  out.redos = { status: parseResponses(redos.data)[0]?.status, ms: +(performance.now() - t0).toFixed(1) };
  const refused = await d.api('PUT', '/v1/tenants/shop/routes/bad', { match: { pathRegex: '(a)\\1' }, to: { service: 'app' } });
  out.redosBackreference = refused.status;

  // 3. A client that leaves mid-request, then 10 requests of other clients.
  const s = net.connect(port, '127.0.0.1');
  s.on('error', () => {});
  await new Promise((r) => s.once('connect', r));
  s.write('POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nab');
  await sleep(100);
  s.end('cdeBROKEN\r\n\r\n');
  await sleep(100);
  const after = [];
  for (let i = 0; i < 10; i++) after.push(await status(port, `/after-${i}`));
  out.poisonedPool = { ok: after.filter((r) => r.status === 200).length, of: 10, maxMs: +Math.max(...after.map((r) => r.ms)).toFixed(1) };

  // 4. 200 slowloris connections (a head that never ends): how long until the node has closed them all.
  const slow: net.Socket[] = [];
  let closed = 0;
  const s0 = performance.now();
  for (let i = 0; i < 200; i++) {
    const c = net.connect(port, '127.0.0.1');
    c.on('error', () => {});
    c.on('close', () => closed++);
    c.resume(); // read what the node says (its 408), so the close is seen
    c.write('GET / HTTP/1.1\r\nHost: a\r\nx-slow: ');
    slow.push(c);
  }
  while (closed < 200 && performance.now() - s0 < 30_000) await sleep(50);
  out.slowloris = { connections: 200, closed, seconds: +((performance.now() - s0) / 1000).toFixed(2), headersTimeoutMs: 10_000 };
  for (const c of slow) c.destroy();

  // 5. 300 uploads at 1 byte/s against the default pool (256 sockets) while fast requests go on.
  const uploads: net.Socket[] = [];
  for (let i = 0; i < 300; i++) {
    const c = net.connect(port, '127.0.0.1');
    c.on('error', () => {});
    c.write('POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n');
    uploads.push(c);
  }
  const drip = setInterval(() => {
    for (const c of uploads) if (c.writable) c.write('x');
  }, 1000);
  await sleep(1500);
  const fast = [];
  for (let i = 0; i < 50; i++) fast.push(await status(port, `/fast-${i}`));
  clearInterval(drip);
  for (const c of uploads) c.destroy();
  out.slowUploads = { uploads: 300, fastOk: fast.filter((r) => r.status === 200).length, of: 50, p99Ms: +fast.map((r) => r.ms).sort((a, b) => a - b)[49]!.toFixed(1) };
} finally {
  await d.stop();
}

// 4b. 700 idle connections to one tenant with the daemon at a 600-descriptor limit.
const limited = await startDaemon({ wrap: ['prlimit', '--nofile=600:600', '--'] });
try {
  const greedy = await tenant(limited, 'greedy', up);
  const quiet = await tenant(limited, 'quiet', up);
  await sleep(300);
  const held: net.Socket[] = [];
  let refusedConns = 0;
  for (let i = 0; i < 700; i++) {
    const c = net.connect(greedy, '127.0.0.1');
    c.on('error', () => {});
    c.on('data', (b) => {
      if (b.includes('ISOMESH_ERR_PROXY_CONNECTION_LIMIT')) refusedConns++;
    });
    held.push(c);
    if (i % 50 === 49) await sleep(20);
  }
  await sleep(1000);
  const served = [];
  for (let i = 0; i < 20; i++) served.push(await status(quiet, `/q-${i}`));
  const ready = (await fetch(`${limited.url}/readyz`)).status;
  out.descriptors = { limit: 600, greedyConnections: 700, greedyRefused: refusedConns, quietOk: served.filter((r) => r.status === 200).length, of: 20, readyz: ready };
  for (const c of held) c.destroy();
} finally {
  await limited.stop();
}
upstream.close();
console.log(JSON.stringify(out, null, 2));
