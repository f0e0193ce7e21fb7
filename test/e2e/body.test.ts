// Buffered bodies through the real daemon and the built-in proxy: a plugin that declares
// body.request / body.response reads and replaces them (the upstream and the client see the new
// bodies with a matching content-length); a body over the declared limit is refused before any
// plugin runs; a chain without declarations streams bodies untouched.
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';
import { request } from '../support/http.ts';

let d: TestDaemon;
let upstream: http.Server;
let port: number;

const PLUGIN = `
import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  body: { request: 64, response: 1024 },
  async onRequest(req) {
    if (req.method === 'POST') req.setBody((await req.text()).toUpperCase());
  },
  async onResponse(res) {
    const seen = await res.json();
    res.setBody(JSON.stringify({ ...seen, wrapped: true }));
  },
});`;

before(async () => {
  // An upstream that echoes the body it received and the content-length it was told.
  upstream = http.createServer((req, res) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (body += c));
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ body, length: req.headers['content-length'] ?? null })));
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', () => r()));
  d = await startDaemon();
  const t = await d.api('PUT', '/v1/tenants/bodies', {});
  assert.equal(t.status, 201, JSON.stringify(t.body));
  port = t.body.listenerPort;
  const upstreamPort = (upstream.address() as net.AddressInfo).port;
  assert.equal((await d.api('PUT', '/v1/tenants/bodies/services/echo', { endpoints: [{ address: '127.0.0.1', port: upstreamPort }] })).status, 201);
  assert.equal((await d.api('PUT', '/v1/tenants/bodies/routes/all', { match: { pathPrefix: '/' }, to: { service: 'echo' } })).status, 201);
  const v = await d.api('POST', '/v1/tenants/bodies/plugins/upper/versions', { source: PLUGIN, language: 'typescript' });
  assert.equal(v.status, 201, JSON.stringify(v.body));
  assert.deepEqual(v.body.meta.body, { request: 64, response: 1024 });
  assert.equal((await d.api('PUT', '/v1/tenants/bodies/plugins/upper/active', { version: v.body.version })).status, 200);
  assert.equal((await d.api('PUT', '/v1/tenants/bodies/chain', [{ plugin: 'upper' }])).status, 200);
  for (let i = 0; i < 100; i++) {
    const res = await request(port, '/ready');
    if (res.status === 200 && res.body.includes('"wrapped":true')) return;
    await sleep(20);
  }
  throw new Error('chain did not become active');
});

after(async () => {
  await d?.stop();
  await new Promise<void>((r) => upstream?.close(() => r()));
});

test('request and response bodies are read and replaced by a declaring plugin', async () => {
  const res = await request(port, '/orders', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hello body' });
  assert.equal(res.status, 200, res.body);
  assert.deepEqual(JSON.parse(res.body), { body: 'HELLO BODY', length: '10', wrapped: true });
  assert.equal(res.headers['content-length'], String(Buffer.byteLength(res.body)), 'content-length fixed up for the client');
});

test('a request body over the smallest declared limit is refused before the plugin runs', async () => {
  const res = await request(port, '/orders', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x'.repeat(65) });
  assert.equal(res.status, 413, res.body);
  assert.equal(res.headers['x-isomesh-error'], 'ISOMESH_ERR_PROXY_BODY_TOO_LARGE');
});
