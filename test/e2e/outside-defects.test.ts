// Issue 7: defects found from outside (raw sockets against a tenant listener and the management API),
// each pinned by a test named for it. They drive a real daemon over raw sockets, so they keep guarding
// whatever request path serves the tenant listener.
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import zlib from 'node:zlib';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';
import { header, parseResponses, raw } from '../support/raw.ts';

let d: TestDaemon;
let port: number;
let otherPort: number;
let upstream: http.Server;
let upstreamPort: number;
/** What the upstream saw, newest last. */
const seen: Array<{ method: string; url: string; rawHeaders: string[]; body: Buffer }> = [];

const FORBID = `
import { definePlugin } from '@isomesh/sdk';
export default definePlugin({ onRequest(_req, ctx) { return ctx.respond(403, { body: 'admin is guarded' }); } });`;

before(async () => {
  upstream = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', rawHeaders: req.rawHeaders, body: Buffer.concat(chunks) });
      if (req.url === '/bad-chunk') {
        // Head, then an invalid first chunk size: nothing valid of the body ever arrives.
        res.socket!.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n');
        res.socket!.destroy();
        return;
      }
      if (req.url === '/gz-response') {
        const gz = zlib.gzipSync(Buffer.from('gzip coded response'));
        // Written by hand (node would not send this coding), on a connection that closes after it.
        res.socket!.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: gzip, chunked\r\n\r\n${gz.length.toString(16)}\r\n`), gz, Buffer.from('\r\n0\r\n\r\n')]));
        return;
      }
      if (req.url === '/huge-chunk') {
        res.socket!.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffffff\r\nhello\r\n');
        res.socket!.destroy();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ url: req.url, host: req.headers.host, bytes: Buffer.concat(chunks).length }));
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamPort = (upstream.address() as net.AddressInfo).port;
  d = await startDaemon({
    env: { ISOMESH_HEADERS_TIMEOUT_MS: '1000', ISOMESH_IDLE_TIMEOUT_MS: '1500', ISOMESH_BODY_TIMEOUT_MS: '1000' },
  });
  const t = await d.api('PUT', '/v1/tenants/shop', {});
  assert.equal(t.status, 201, JSON.stringify(t.body));
  port = t.body.listenerPort;
  const o = await d.api('PUT', '/v1/tenants/other', {});
  otherPort = o.body.listenerPort;
  for (const tenant of ['shop', 'other']) {
    const s = await d.api('PUT', `/v1/tenants/${tenant}/services/app`, {
      endpoints: [{ address: '127.0.0.1', port: upstreamPort }],
      timeoutMs: 3000,
      circuitBreaker: { maxConnections: 20, maxPending: 1000, consecutive5xx: 1000, ejectionMs: 1000 },
    });
    assert.equal(s.status, 201, JSON.stringify(s.body));
    assert.equal((await d.api('PUT', `/v1/tenants/${tenant}/routes/all`, { match: { pathPrefix: '/' }, to: { service: 'app' } })).status, 201);
  }
  assert.equal((await d.api('PUT', '/v1/tenants/shop/routes/admin', { match: { host: 'admin.internal' }, to: { service: 'app' } })).status, 201);
  const p = await d.api('POST', '/v1/tenants/shop/plugins/forbid/versions', { source: FORBID, language: 'typescript' });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  assert.equal((await d.api('PUT', '/v1/tenants/shop/plugins/forbid/active', { version: p.body.version })).status, 200);
  assert.equal((await d.api('PUT', '/v1/tenants/shop/chain', [{ plugin: 'forbid', routes: ['admin'] }])).status, 200);
  // The chain is applied asynchronously after the commit: wait until the admin route is guarded.
  for (let i = 0; i < 100; i++) {
    const r = parseResponses((await raw(port, ['GET / HTTP/1.1\r\nHost: admin.internal\r\nconnection: close\r\n\r\n'])).data);
    if (r[0]?.status === 403) break;
    await sleep(20);
  }
});

after(async () => {
  await d?.stop();
  upstream?.closeAllConnections();
  upstream?.close();
});

const get = (path: string, host = 'app.example', extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}\r\n`;

async function one(steps: Parameters<typeof raw>[1], p = port, opts: Parameters<typeof raw>[2] = {}) {
  const r = await raw(p, steps, opts);
  return { ...r, responses: parseResponses(r.data) };
}

test('regression (issue 7 #2 absolute-form-bypasses-host-routing): the absolute-form authority replaces Host for routing, plugins and the upstream', async () => {
  const bypass = await one(['GET http://public.example/secret HTTP/1.1\r\nHost: admin.internal\r\nconnection: close\r\n\r\n']);
  assert.equal(bypass.responses[0]?.status, 200, bypass.data.toString());
  assert.equal(JSON.parse(bypass.responses[0]!.body.toString()).host, 'public.example', 'the upstream sees the authority of the target');
  const guarded = await one(['GET http://admin.internal/secret HTTP/1.1\r\nHost: public.example\r\nconnection: close\r\n\r\n']);
  assert.equal(guarded.responses[0]?.status, 403, 'the route of the absolute-form authority (and its plugin) applies');
  assert.equal(guarded.responses[0]?.body.toString(), 'admin is guarded');
});

test('regression (issue 7 #6 duplicate-or-invalid-host-forwarded): a missing, repeated or invalid Host is 400', async () => {
  for (const bad of [
    'GET / HTTP/1.1\r\nHost: evil@app.example\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: app.example/../x y\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: app.example\r\nHost: other.example\r\n\r\n',
    'GET / HTTP/1.1\r\n\r\n',
    'GET / HTTP/1.1\r\nHost: a b\r\n\r\n',
  ]) {
    const before = seen.length;
    const r = await one([bad]);
    assert.equal(r.responses[0]?.status, 400, `${JSON.stringify(bad)} → ${r.data.toString()}`);
    assert.equal(header(r.responses[0]!, 'x-isomesh-error'), 'ISOMESH_ERR_PROXY_BAD_HOST');
    assert.equal(seen.length, before, 'nothing reached the upstream');
  }
  const ok = await one(['GET / HTTP/1.1\r\nHost: [::1]:8080\r\nconnection: close\r\n\r\n']);
  assert.equal(ok.responses[0]?.status, 200, 'an IPv6 literal with a port is a valid Host');
});

test('regression (issue 7 #3 client-leaves-mid-request-poisons-pool): a connection whose exchange did not finish cleanly is never reused', async () => {
  const s = net.connect(port, '127.0.0.1');
  await new Promise((r) => s.once('connect', r));
  s.on('error', () => {});
  s.write('POST /a HTTP/1.1\r\nHost: app.example\r\nContent-Length: 5\r\n\r\nab');
  await sleep(100);
  s.write('cdeBROKEN\r\n\r\n');
  s.end();
  await sleep(200);
  const statuses: number[] = [];
  for (let i = 0; i < 10; i++) {
    const r = await one([get(`/after-${i}`, 'app.example', 'connection: close\r\n')], port, { timeoutMs: 5000 });
    statuses.push(r.responses[0]?.status ?? 0);
  }
  assert.deepEqual(statuses, Array(10).fill(200), 'no request of other clients hangs on a poisoned pooled connection');
});

test('regression (issue 7 #4 no-header-timeout): a client that never finishes its head gets 408 and is closed', async () => {
  const r = await raw(port, ['GET / HTTP/1.1\r\nHost: app.example\r\nx-slow: '], { timeoutMs: 8000, idleMs: 8000 });
  assert.equal(r.closed, true, 'the server closed the slowloris connection');
  const [res] = parseResponses(r.data);
  assert.equal(res?.status, 408);
  assert.equal(header(res!, 'x-isomesh-error'), 'ISOMESH_ERR_PROXY_REQUEST_TIMEOUT');
  const silent = await raw(port, [], { timeoutMs: 8000, idleMs: 8000 });
  assert.equal(silent.closed, true, 'a connection that sends nothing is closed too');
});

test('regression (issue 7 #4 no-idle-timeout): an idle keep-alive connection is closed after the idle timeout', async () => {
  const r = await raw(port, [get('/idle')], { timeoutMs: 8000, idleMs: 8000 });
  assert.equal(r.closed, true);
  assert.equal(parseResponses(r.data)[0]?.status, 200, 'the request itself was served');
});

test('regression (issue 7 #5 slow-uploads-starve-tenant): slow uploads time out and never hold the pool from fast requests', async () => {
  // 30 uploads at a byte every 250 ms against a service with maxConnections 20: without a cap on pool
  // sockets held by unfinished uploads they would hold every upstream socket.
  const uploads = Array.from({ length: 30 }, () =>
    raw(port, ['POST /upload HTTP/1.1\r\nHost: app.example\r\nContent-Length: 100\r\n\r\n', ...Array.from({ length: 8 }, () => [{ delayMs: 250 }, 'x']).flat()], { timeoutMs: 8000, idleMs: 8000 }),
  );
  await sleep(300);
  const fast: number[] = [];
  for (let i = 0; i < 20; i++) fast.push((await one([get(`/fast-${i}`, 'app.example', 'connection: close\r\n')], port, { timeoutMs: 5000 })).responses[0]?.status ?? 0);
  assert.deepEqual(fast, Array(20).fill(200), 'fast requests keep flowing past the slow uploads');
  const done = await Promise.all(uploads);
  for (const u of done) {
    const res = parseResponses(u.data)[0];
    assert.equal(res?.status, 408, 'a stalled upload ends with 408 (body idle timeout)');
    assert.equal(header(res!, 'x-isomesh-error'), 'ISOMESH_ERR_PROXY_REQUEST_TIMEOUT');
  }
});

test('regression (issue 7 #8 invalid-first-chunk-size-no-status): an upstream body that fails before any byte is sent is a 502', async () => {
  for (const path of ['/bad-chunk', '/huge-chunk']) {
    const r = await one([get(path, 'app.example', 'connection: close\r\n')]);
    assert.equal(r.responses[0]?.status, 502, `${path}: ${r.data.toString()}`);
    assert.equal(header(r.responses[0]!, 'x-isomesh-error'), 'ISOMESH_ERR_UPSTREAM_BAD_RESPONSE');
  }
});

test('regression (issue 7 #9 te-gzip-chunked-loses-gzip): transfer codings before the final chunked are forwarded', async () => {
  const gz = zlib.gzipSync(Buffer.from('hello gzip world'));
  const body = `${gz.length.toString(16)}\r\n${gz.toString('latin1')}\r\n0\r\n\r\n`;
  const before = seen.length;
  const r = await one([Buffer.from(`POST /gz HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: gzip, chunked\r\nconnection: close\r\n\r\n${body}`, 'latin1')]);
  assert.equal(r.responses[0]?.status, 200, r.data.toString());
  const got = seen[before]!;
  const teValue = got.rawHeaders.find((v, i) => i % 2 === 1 && got.rawHeaders[i - 1]!.toLowerCase() === 'transfer-encoding');
  assert.equal(teValue, 'gzip, chunked', 'the upstream is told the body is gzip-coded');
  assert.equal(zlib.gunzipSync(got.body).toString(), 'hello gzip world', 'the gzip bytes arrive intact');
  const response = await one([get('/gz-response', 'app.example', 'connection: close\r\n')]);
  assert.equal(header(response.responses[0]!, 'transfer-encoding'), 'gzip, chunked', 'the response keeps its coding toward the client');
  assert.equal(zlib.gunzipSync(response.responses[0]!.body).toString(), 'gzip coded response');
  const unknown = await one(['POST /x HTTP/1.1\r\nHost: app.example\r\nTransfer-Encoding: gzip\r\n\r\n']);
  assert.equal(unknown.responses[0]?.status, 400, 'a request whose final coding is not chunked has no knowable length (RFC 9112 §6.3)');
});

test('regression (issue 7 also-worth-mending pipelined-400-order): a malformed pipelined request is answered after the earlier response', async () => {
  const r = await one([get('/first') + 'BROKEN\r\n\r\n']);
  const [first, second] = r.responses;
  assert.equal(first?.status, 200, r.data.toString());
  assert.equal(second?.status, 400);
  assert.equal(r.closed, true);
});

test('regression (issue 7 #4 no-connection-cap): a tenant over its connection quota is refused; other tenants are not', async () => {
  assert.equal((await d.api('PUT', '/v1/tenants/shop/quota', { maxConnections: 20 })).status, 200);
  await sleep(200);
  const held: net.Socket[] = [];
  try {
    for (let i = 0; i < 30; i++) {
      const s = net.connect(port, '127.0.0.1');
      s.on('error', () => {});
      held.push(s);
    }
    await sleep(500);
    const refused = await one([get('/over', 'app.example', 'connection: close\r\n')]);
    assert.equal(refused.responses[0]?.status, 503, refused.data.toString());
    assert.equal(header(refused.responses[0]!, 'x-isomesh-error'), 'ISOMESH_ERR_PROXY_CONNECTION_LIMIT');
    const other = await one([get('/other', 'app.example', 'connection: close\r\n')], otherPort);
    assert.equal(other.responses[0]?.status, 200, 'the other tenant is served');
    const ready = await fetch(`${d.url}/readyz`);
    assert.equal(ready.status, 200);
  } finally {
    for (const s of held) s.destroy();
    assert.equal((await d.api('PUT', '/v1/tenants/shop/quota', { maxConnections: 4096 })).status, 200);
  }
});

test('regression (issue 7 #7 publish-without-body-500): publishing with no body is a 400', async () => {
  const r = await fetch(`${d.url}/v1/tenants/shop/plugins/p/versions`, { method: 'POST', headers: { authorization: `Bearer ${d.token}` } });
  assert.equal(r.status, 400);
  const body = (await r.json()) as { error: { code: string; message: string } };
  assert.equal(body.error.code, 'ISOMESH_ERR_API_BAD_REQUEST');
  assert.match(body.error.message, /needs a body/);
});

test('regression (issue 7 #4 descriptor-exhaustion): at a 600-descriptor limit, 700 idle connections to one tenant leave the others served', async () => {
  const limited = await startDaemon({ wrap: ['prlimit', '--nofile=600:600', '--'] });
  const held: net.Socket[] = [];
  try {
    const a = await limited.api('PUT', '/v1/tenants/greedy', {});
    const b = await limited.api('PUT', '/v1/tenants/quiet', {});
    for (const t of ['greedy', 'quiet']) {
      await limited.api('PUT', `/v1/tenants/${t}/services/app`, { endpoints: [{ address: '127.0.0.1', port: upstreamPort }] });
      await limited.api('PUT', `/v1/tenants/${t}/routes/all`, { match: { pathPrefix: '/' }, to: { service: 'app' } });
    }
    await sleep(300);
    // quiet's keep-alive connection, open before the flood, must survive it.
    const kept = net.connect(b.body.listenerPort, '127.0.0.1');
    kept.on('error', () => {});
    await new Promise((r) => kept.once('connect', r));
    const first = await new Promise<string>((resolve) => {
      kept.once('data', (d) => resolve(d.toString()));
      kept.write(get('/before'));
    });
    assert.match(first, /^HTTP\/1\.1 200/);
    let refused = 0;
    for (let i = 0; i < 700; i++) {
      const s = net.connect(a.body.listenerPort, '127.0.0.1');
      s.on('error', () => {});
      s.on('data', (d) => {
        if (d.toString().includes('ISOMESH_ERR_PROXY_CONNECTION_LIMIT')) refused++;
      });
      held.push(s);
      if (i % 50 === 49) await sleep(20);
    }
    await sleep(1000);
    assert.ok(refused > 0, 'the greedy tenant was refused past its share of the node');
    const other = await one([get('/during', 'app.example', 'connection: close\r\n')], b.body.listenerPort);
    assert.equal(other.responses[0]?.status, 200, `quiet is served during the flood: ${other.data.toString().slice(0, 200)}`);
    const again = await new Promise<string>((resolve) => {
      kept.once('data', (d) => resolve(d.toString()));
      kept.write(get('/after'));
    });
    assert.match(again, /^HTTP\/1\.1 200/, "quiet's existing connection was not reset");
    assert.equal((await fetch(`${limited.url}/readyz`)).status, 200);
    kept.destroy();
  } finally {
    for (const s of held) s.destroy();
    await limited.stop();
  }
});

test('regression (issue 7 also-worth-mending stale-cordon-dirs): a daemon killed with -9 leaves no cordon run directory behind the next start', async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const killed = await startDaemon();
  const pid = killed.proc.pid!;
  const mine = () => fs.readdirSync(os.tmpdir()).filter((n) => n.startsWith(`isomesh-cordons-${pid}-`));
  assert.equal(mine().length, 1, 'the running daemon has its run directory');
  const exited = new Promise((r) => killed.proc.once('exit', r));
  killed.proc.kill('SIGKILL');
  await exited;
  assert.equal(mine().length, 1, 'kill -9 left it behind');
  const next = await startDaemon();
  try {
    assert.equal(mine().length, 0, 'the next start removed the dead daemon’s directory');
  } finally {
    await next.stop();
  }
});
