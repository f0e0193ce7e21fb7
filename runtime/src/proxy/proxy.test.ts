// The built-in proxy over real loopback sockets: routing, headers, pooling, streaming.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { createHash } from 'node:crypto';
import { HostDouble, seenHeader, send, service, startProxy, startUpstream, tenantConfig } from './test-fixtures.ts';

test('routes by host, path, prefix, regex, method and headers; VIP default; 404 otherwise', async (t) => {
  const names = ['api', 'exact', 'items', 'deleter', 'canary', 'pre', 'vipsvc'];
  const ups = await Promise.all(names.map((n) => startUpstream(t, n)));
  const services = names.map((n, i) => service(n, [ups[i].port], n === 'vipsvc' ? { vip: '10.96.0.10:8080' } : {}));
  const { proxy } = await startProxy(t);
  await proxy.configure(
    tenantConfig('acme', services, [
      { name: 'r-host', match: { host: '*.example.com' }, to: { service: 'api' } },
      { name: 'r-exact', match: { path: '/exact' }, to: { service: 'exact' } },
      { name: 'r-regex', match: { pathRegex: '/items/[0-9]+' }, to: { service: 'items' } },
      { name: 'r-method', match: { method: 'DELETE', pathPrefix: '/things/' }, to: { service: 'deleter' } },
      { name: 'r-hdr', match: { pathPrefix: '/things/', headers: [{ name: 'x-env', exact: 'canary' }] }, to: { service: 'canary' } },
      { name: 'r-prefix', match: { pathPrefix: '/things/' }, to: { service: 'pre' } },
    ]),
  );
  const port = proxy.status('acme')!.listener!.port;
  const cases: Array<[string, string, Record<string, string>, string | number]> = [
    ['GET', '/x', { host: 'shop.example.com:8443' }, 'api'],
    ['GET', '/exact?q=1', { host: 'other' }, 'exact'],
    ['GET', '/items/7', { host: 'other' }, 'items'],
    ['GET', '/items/7x', { host: 'other' }, 404],
    ['DELETE', '/things/1', { host: 'other' }, 'deleter'],
    ['GET', '/things/1', { host: 'other', 'x-env': 'canary' }, 'canary'],
    ['GET', '/things/1', { host: 'other' }, 'pre'],
    ['GET', '/unrouted', { host: '10.96.0.10:8080' }, 'vipsvc'],
    ['GET', '/unrouted', { host: '10.96.0.10:9999' }, 404],
  ];
  for (const [method, path, headers, want] of cases) {
    const r = await send(port, { method, path, headers });
    if (typeof want === 'number') {
      assert.equal(r.status, want, `${method} ${path}`);
      assert.equal(r.headers['x-isomesh-error'], 'ISOMESH_ERR_PROXY_NO_ROUTE');
      assert.equal(JSON.parse(r.body).error.code, 'ISOMESH_ERR_PROXY_NO_ROUTE');
    } else {
      assert.equal(r.status, 200, `${method} ${path}`);
      const echo = JSON.parse(r.body);
      assert.equal(echo.service, want, `${method} ${path}`);
      assert.equal(echo.method, method);
      assert.equal(echo.url, path, 'path and query forwarded unchanged');
    }
  }
});

test('a weighted route splits traffic roughly by weight', async (t) => {
  const a = await startUpstream(t, 'a');
  const b = await startUpstream(t, 'b');
  const { proxy } = await startProxy(t);
  await proxy.configure(
    tenantConfig('acme', [service('a', [a.port]), service('b', [b.port])], [
      { name: 'split', match: { pathPrefix: '/' }, to: { weighted: [{ service: 'a', weight: 80 }, { service: 'b', weight: 20 }] } },
    ]),
  );
  const port = proxy.status('acme')!.listener!.port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
  t.after(() => agent.destroy());
  const N = 400;
  for (let i = 0; i < N; i += 8) await Promise.all(Array.from({ length: 8 }, () => send(port, { agent })));
  assert.equal(a.requests + b.requests, N);
  assert.ok(a.requests / N > 0.7 && a.requests / N < 0.9, `a got ${a.requests}/${N}`);
});

test('original destination from the resolver selects the service by VIP', async (t) => {
  const up = await startUpstream(t, 'reviews');
  const { proxy } = await startProxy(t);
  let calls = 0;
  proxy.setOriginalDestinationResolver(() => {
    calls++;
    return '10.96.0.20:9080';
  });
  await proxy.configure(tenantConfig('acme', [service('reviews', [up.port], { vip: '10.96.0.20:9080' })], []));
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const port = proxy.status('acme')!.listener!.port;
  for (let i = 0; i < 3; i++) assert.equal(JSON.parse((await send(port, { agent, headers: { host: 'whatever' } })).body).service, 'reviews');
  assert.equal(calls, 1, 'resolved once per downstream connection');
});

test('hop-by-hop headers are stripped both ways; x-forwarded-* and x-request-id are set', async (t) => {
  const up = await startUpstream(t, 'echo', (req, res) => {
    req.resume();
    res.setHeader('connection', 'keep-alive, x-hop-resp');
    res.setHeader('x-hop-resp', 'secret');
    res.setHeader('keep-alive', 'timeout=99');
    res.setHeader('proxy-connection', 'keep-alive');
    res.setHeader('x-end-to-end', 'kept');
    res.setHeader('trailer', 'x-t');
    res.write(JSON.stringify({ rawHeaders: req.rawHeaders }));
    res.addTrailers({ 'x-t': '1' });
    res.end();
  });
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('echo', [up.port])], [{ name: 'all', match: {}, to: { service: 'echo' } }]));
  const port = proxy.status('acme')!.listener!.port;
  const r = await send(port, {
    headers: [
      'Host', 'svc.local',
      'Connection', 'keep-alive, X-Hop-Req',
      'X-Hop-Req', 'secret',
      'Keep-Alive', 'timeout=5',
      'Proxy-Connection', 'keep-alive',
      'TE', 'trailers',
      'Upgrade', 'h2c',
      'X-Forwarded-For', '203.0.113.9',
      'X-Keep', 'yes',
    ],
  });
  assert.equal(r.status, 200);
  const echo = JSON.parse(r.body);
  for (const name of ['x-hop-req', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'transfer-encoding']) {
    assert.deepEqual(seenHeader(echo, name), [], `${name} must not reach the upstream`);
  }
  assert.deepEqual(seenHeader(echo, 'x-keep'), ['yes']);
  assert.deepEqual(seenHeader(echo, 'host'), ['svc.local'], 'Host is kept');
  assert.deepEqual(seenHeader(echo, 'x-forwarded-for'), ['203.0.113.9, 127.0.0.1']);
  assert.deepEqual(seenHeader(echo, 'x-forwarded-proto'), ['http']);
  const [id] = seenHeader(echo, 'x-request-id');
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.equal(r.headers['x-request-id'], id, 'same id upstream and in the response');
  assert.equal(r.headers['x-hop-resp'], undefined);
  assert.equal(r.headers['proxy-connection'], undefined);
  assert.equal(r.headers['trailer'], undefined);
  assert.notEqual(r.headers['keep-alive'], 'timeout=99');
  assert.equal(r.headers['x-end-to-end'], 'kept');

  // A sane client id is kept; an oversized one is replaced.
  const kept = await send(port, { headers: { 'x-request-id': 'req-abc.123' } });
  assert.equal(kept.headers['x-request-id'], 'req-abc.123');
  assert.deepEqual(seenHeader(JSON.parse(kept.body), 'x-request-id'), ['req-abc.123']);
  const long = await send(port, { headers: { 'x-request-id': 'x'.repeat(201) } });
  assert.match(String(long.headers['x-request-id']), /^[0-9a-f-]{36}$/);
});

test('upstream connections are reused across sequential requests (keep-alive pool)', async (t) => {
  const up = await startUpstream(t, 'pooled');
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('pooled', [up.port])], [{ name: 'all', match: {}, to: { service: 'pooled' } }]));
  const port = proxy.status('acme')!.listener!.port;
  for (let i = 0; i < 20; i++) {
    // A new downstream connection each time: pooling must be on the upstream side.
    const r = await send(port, { path: `/n/${i}` });
    assert.equal(r.status, 200);
  }
  assert.equal(up.requests, 20);
  assert.equal(up.connections, 1);
});

test('a 20 MB body streams both ways without being buffered whole', async (t) => {
  // The upstream echoes as it reads. The client sends 1 MiB, then waits for that 1 MiB to come
  // back through the proxy before sending the rest: a proxy that buffered the request (or the
  // response) would deadlock here and the test would time out.
  const up = await startUpstream(t, 'echo', (req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    req.pipe(res);
  });
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('echo', [up.port], { timeoutMs: 0 })], [{ name: 'all', match: {}, to: { service: 'echo' } }]));
  const port = proxy.status('acme')!.listener!.port;
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31) & 0xff;
  const total = 20 * chunk.length;
  const sent = createHash('sha256');
  const got = createHash('sha256');
  let received = 0;
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`stalled after ${received} bytes echoed`)), 20_000);
    const req = http.request({ host: '127.0.0.1', port, method: 'POST', path: '/echo', agent: false, headers: { 'content-length': String(total) } });
    let rest = false;
    req.on('response', (res) => {
      assert.equal(res.statusCode, 200);
      res.on('data', (c: Buffer) => {
        received += c.length;
        got.update(c);
        if (!rest && received >= chunk.length) {
          rest = true;
          void (async () => {
            for (let i = 1; i < 20; i++) {
              sent.update(chunk);
              if (!req.write(chunk)) await new Promise((r) => req.once('drain', r));
            }
            req.end();
          })();
        }
      });
      res.on('end', () => {
        clearTimeout(timer);
        resolve();
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    sent.update(chunk);
    req.write(chunk);
  });
  assert.equal(received, total);
  assert.equal(got.digest('hex'), sent.digest('hex'));
});

test('HEAD and 204 responses pass through without a body', async (t) => {
  const up = await startUpstream(t, 'meta', (req, res) => {
    req.resume();
    if (req.url === '/empty') {
      res.writeHead(204, { 'x-kind': 'empty' });
      res.end();
      return;
    }
    res.writeHead(200, { 'content-length': '11', 'content-type': 'text/plain' });
    res.end(req.method === 'HEAD' ? undefined : 'hello world');
  });
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('meta', [up.port])], [{ name: 'all', match: {}, to: { service: 'meta' } }]));
  const port = proxy.status('acme')!.listener!.port;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  t.after(() => agent.destroy());
  const head = await send(port, { method: 'HEAD', agent });
  assert.equal(head.status, 200);
  assert.equal(head.headers['content-length'], '11');
  assert.equal(head.body, '');
  const empty = await send(port, { path: '/empty', agent });
  assert.equal(empty.status, 204);
  assert.equal(empty.headers['x-kind'], 'empty');
  const full = await send(port, { agent });
  assert.equal(full.body, 'hello world', 'the keep-alive connection is still in sync after HEAD and 204');
});

test('absolute-form request targets (explicit HTTP proxy clients) are routed by their authority', async (t) => {
  const up = await startUpstream(t, 'svc');
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('svc', [up.port])], [{ name: 'by-host', match: { host: 'svc.local' }, to: { service: 'svc' } }]));
  const port = proxy.status('acme')!.listener!.port;
  const r = await send(port, { path: 'http://svc.local/x/y?z=1', headers: { host: 'ignored.example' } });
  assert.equal(r.status, 200);
  assert.equal(JSON.parse(r.body).url, '/x/y?z=1', 'origin-form upstream');
});

test('an upstream that dies mid-body gives the client a truncated response, not a clean end', async (t) => {
  const up = await startUpstream(t, 'dies', (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-length': '1000' });
    res.write('x'.repeat(100));
    setTimeout(() => res.socket?.destroy(), 30);
  });
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('dies', [up.port])], [{ name: 'all', match: {}, to: { service: 'dies' } }]));
  const port = proxy.status('acme')!.listener!.port;
  const outcome = await new Promise<string>((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/', agent: false }, (res) => {
      let n = 0;
      res.on('data', (c: Buffer) => (n += c.length));
      res.on('end', () => resolve(`clean end after ${n}`));
      res.on('error', () => resolve(`error after ${n}`));
      res.on('aborted', () => resolve(`aborted after ${n}`));
    });
    req.on('error', () => resolve('request error'));
  });
  assert.match(outcome, /^(error|aborted) after 100$/);
});
