// The data plane's protocols through a real daemon (API.md "Protocols"): WebSocket upgrades (and their
// refusal), trailers both ways, 431, 100-continue decided by the chain, path normalization vectors,
// h2c by curl and h2load, `via`, and the route/retry/breaker metrics.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { WebSocket, WebSocketServer } from 'ws';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';
import { header, parseResponses, raw } from '../support/raw.ts';

const run = promisify(execFile);
let d: TestDaemon;
let port: number;
let merged: number;
let upstream: http.Server;
let wss: WebSocketServer;
const seen: Array<{ url: string; headers: http.IncomingHttpHeaders; trailers: NodeJS.Dict<string>; body: string }> = [];

const GUARD = `
import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  onRequest(req, ctx) {
    if (req.path.startsWith('/admin')) return ctx.respond(403, { body: 'admin is guarded' });
    if (req.headers.get('x-refuse') === '1') return ctx.respond(403, { body: 'refused by plugin' });
  },
});`;

before(async () => {
  upstream = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      seen.push({ url: req.url ?? '', headers: req.headers, trailers: req.trailers, body });
      if (req.url === '/trailers') {
        res.writeHead(200, { trailer: 'x-checksum' });
        res.write('part one;');
        res.addTrailers({ 'x-checksum': 'abc123' });
        res.end('part two');
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ url: req.url, via: req.headers.via ?? null, bytes: body.length }));
    });
  });
  wss = new WebSocketServer({ server: upstream });
  wss.on('connection', (ws, req) => {
    ws.send(`hello ${req.url}`);
    ws.on('message', (m) => ws.send(`echo:${m.toString()}`));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const up = (upstream.address() as AddressInfo).port;
  d = await startDaemon();
  port = (await d.api('PUT', '/v1/tenants/shop', {})).body.listenerPort;
  merged = (await d.api('PUT', '/v1/tenants/merged', { pathNormalization: 'merge_slashes' })).body.listenerPort;
  for (const t of ['shop', 'merged']) {
    await d.api('PUT', `/v1/tenants/${t}/services/app`, { endpoints: [{ address: '127.0.0.1', port: up }], retries: { attempts: 1, on: ['connect-failure'] } });
    await d.api('PUT', `/v1/tenants/${t}/routes/all`, { match: { pathPrefix: '/' }, to: { service: 'app' } });
  }
  assert.equal((await d.api('PUT', '/v1/tenants/shop/routes/no-ws', { match: { pathPrefix: '/no-ws' }, to: { service: 'app' }, upgrades: [] })).status, 201);
  const p = await d.api('POST', '/v1/tenants/shop/plugins/guard/versions', { source: GUARD, language: 'typescript' });
  await d.api('PUT', '/v1/tenants/shop/plugins/guard/active', { version: p.body.version });
  assert.equal((await d.api('PUT', '/v1/tenants/shop/chain', [{ plugin: 'guard' }])).status, 200);
  for (let i = 0; i < 100; i++) {
    const r = parseResponses((await raw(port, ['GET /admin HTTP/1.1\r\nHost: a\r\nconnection: close\r\n\r\n'])).data);
    if (r[0]?.status === 403) break;
    await sleep(20);
  }
});

after(async () => {
  await d?.stop();
  wss?.close();
  upstream?.closeAllConnections();
  upstream?.close();
});

function wsOpen(url: string, headers: Record<string, string> = {}): Promise<{ ws?: WebSocket; status?: number; first?: string }> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers });
    ws.once('unexpected-response', (_req, res) => {
      resolve({ status: res.statusCode });
      ws.terminate();
    });
    ws.once('message', (m) => resolve({ ws, first: m.toString() }));
    ws.once('error', () => resolve({}));
  });
}

test('WebSocket: the upgrade passes the chain, then frames flow both ways until a side closes', async () => {
  const { ws, first } = await wsOpen(`ws://127.0.0.1:${port}/chat?room=1`);
  assert.ok(ws, 'upgraded');
  assert.equal(first, 'hello /chat?room=1');
  const replies: string[] = [];
  for (const m of ['one', 'two', 'x'.repeat(100_000)]) {
    ws.send(m);
    replies.push(await new Promise<string>((r) => ws.once('message', (b) => r(b.toString()))));
  }
  assert.deepEqual(replies.map((r) => r.slice(0, 20)), ['echo:one', 'echo:two', `echo:${'x'.repeat(15)}`]);
  assert.equal(replies[2]!.length, 100_005);
  const closed = new Promise((r) => ws.once('close', r));
  ws.close();
  await closed;
});

test('WebSocket refused: by a route with upgrades [] (403 ISOMESH_ERR_PROXY_UPGRADE_REFUSED) and by a plugin (its 403)', async () => {
  const route = await wsOpen(`ws://127.0.0.1:${port}/no-ws`);
  assert.equal(route.status, 403);
  const r = parseResponses((await raw(port, ['GET /no-ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n'])).data);
  assert.equal(header(r[0]!, 'x-isomesh-error'), 'ISOMESH_ERR_PROXY_UPGRADE_REFUSED');
  const plugin = await wsOpen(`ws://127.0.0.1:${port}/chat`, { 'x-refuse': '1' });
  assert.equal(plugin.status, 403);
});

test('trailers pass through both ways (HTTP/1.1 chunked)', async () => {
  const before = seen.length;
  const req = 'POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: x-digest\r\nconnection: close\r\n\r\n5\r\nhello\r\n0\r\nx-digest: sha-1\r\n\r\n';
  const r = parseResponses((await raw(port, [req])).data);
  assert.equal(r[0]?.status, 200);
  assert.equal(seen[before]!.trailers['x-digest'], 'sha-1', 'the upstream got the request trailer');
  assert.equal(seen[before]!.body, 'hello');
  const res = parseResponses((await raw(port, ['GET /trailers HTTP/1.1\r\nHost: a\r\nconnection: close\r\n\r\n'])).data);
  assert.equal(res[0]?.body.toString(), 'part one;part two');
  assert.deepEqual(res[0]?.trailers, [['x-checksum', 'abc123']], 'the client got the response trailer');
});

test('request headers over 16 KiB or over 100 fields are 431', async () => {
  const big = parseResponses((await raw(port, [`GET / HTTP/1.1\r\nHost: a\r\nx-big: ${'a'.repeat(17 * 1024)}\r\n\r\n`])).data);
  assert.equal(big[0]?.status, 431);
  assert.equal(header(big[0]!, 'x-isomesh-error'), 'ISOMESH_ERR_PROXY_HEADERS_TOO_LARGE');
  const many = parseResponses((await raw(port, [`GET / HTTP/1.1\r\nHost: a\r\n${Array.from({ length: 101 }, (_, i) => `x-${i}: v\r\n`).join('')}\r\n`])).data);
  assert.equal(many[0]?.status, 431);
});

test('Expect: 100-continue is answered only after the chain accepted; a refusal is sent instead of 100', async () => {
  const refused = await raw(port, ['POST /admin HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n'], { idleMs: 800 });
  const r = parseResponses(refused.data);
  assert.equal(r[0]?.status, 403, 'the refusal comes without a 100 first');
  assert.equal(r.length, 1);
  const before = seen.length;
  const accepted = await raw(port, ['POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\nconnection: close\r\n\r\n', { delayMs: 300 }, 'hello'], { idleMs: 800 });
  const a = parseResponses(accepted.data);
  assert.deepEqual(a.map((x) => x.status), [100, 200]);
  assert.equal(seen[before]!.body, 'hello');
  assert.equal(seen[before]!.headers.expect, undefined, 'expect is the proxy’s to answer, not forwarded');
});

test('path normalization: dot segments removed before routing and plugins; climbing, %2F, %5C and backslash refused', async () => {
  const get = (p: string, t = port) => raw(t, [`GET ${p} HTTP/1.1\r\nHost: a\r\nconnection: close\r\n\r\n`]).then((x) => parseResponses(x.data)[0]!);
  assert.equal((await get('/pre/../admin')).status, 403, 'the plugin guarding /admin sees the normalized path');
  assert.equal((await get('/pre/%2e%2e/admin')).status, 403);
  const ok = await get('/a/./b/%7Euser');
  assert.equal(JSON.parse(ok.body.toString()).url, '/a/b/~user', 'the upstream gets the normalized path');
  for (const bad of ['/../etc', '/a/%2e%2e/%2e%2e/x', '/a%2Fb', '/a%5cb', '/a\\b']) {
    const r = await get(bad);
    assert.equal(r.status, 400, bad);
    assert.equal(header(r, 'x-isomesh-error'), 'ISOMESH_ERR_PROXY_BAD_PATH', bad);
  }
  assert.equal(JSON.parse((await get('//a///b', merged)).body.toString()).url, '/a/b', 'merge_slashes collapses runs of /');
  assert.equal(JSON.parse((await get('//a///b')).body.toString()).url, '//a///b', 'base keeps them');
});

test('h2c with prior knowledge on the same port: curl and h2load; via per hop', async () => {
  const curl = await run('curl', ['-s', '-i', '--http2-prior-knowledge', `http://127.0.0.1:${port}/h2?q=1`]);
  assert.match(curl.stdout, /^HTTP\/2 200/);
  assert.match(curl.stdout, /via: 2 isomesh/);
  assert.match(curl.stdout, /"via":"2 isomesh"/, 'the upstream request carries our via too');
  const h1 = parseResponses((await raw(port, ['GET /h1 HTTP/1.1\r\nHost: a\r\nVia: 1.1 edge\r\nconnection: close\r\n\r\n'])).data)[0]!;
  assert.equal(JSON.parse(h1.body.toString()).via, '1.1 edge, 1.1 isomesh', 'one via entry per hop, appended');
  const load = await run('h2load', ['-n', '2000', '-c', '4', '-m', '10', `http://127.0.0.1:${port}/load`]);
  assert.match(load.stdout, /2000 succeeded, 0 failed, 0 errored/);
  assert.match(load.stdout, /status codes: 2000 2xx/);
});

test('metrics: requests by route/service/code, retries, breaker overflow, ejections', async () => {
  const text = (await d.api('GET', '/metrics')).body as string;
  assert.match(text, /isomesh_route_requests_total\{tenant="shop",route="all",service="app",code="200"\} \d+/);
  assert.match(text, /isomesh_route_requests_total\{tenant="shop",route="no-ws",service="app",code="403"\} \d+/);
  assert.match(text, /# TYPE isomesh_upstream_rq_retry_total counter/);
  assert.match(text, /# TYPE isomesh_upstream_cx_overflow_total counter/);
  assert.match(text, /isomesh_upstream_ejections_active\{tenant="shop",service="app"\} 0/);
});
