// Upstream failures over real loopback sockets: refused, reset, timeout, retries, metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { spawn } from 'node:child_process';
import { freePort, send, service, startProxy, startUpstream, tenantConfig } from './test-fixtures.ts';
import type { Service } from '../store/model.ts';

async function proxyTo(t: Parameters<typeof startProxy>[0], svc: Service) {
  const { proxy, registry } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [svc], [{ name: 'all', match: {}, to: { service: svc.name } }]));
  return { port: proxy.status('acme')!.listener!.port, registry, proxy };
}

async function metricValue(registry: import('prom-client').Registry, name: string, labels: Record<string, string>): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) return 0;
  const { values } = await m.get();
  const hit = values.find((v) => Object.entries(labels).every(([k, val]) => v.labels[k] === val));
  return hit?.value ?? 0;
}

test('502 ISOMESH_ERR_PROXY_UPSTREAM_REFUSED when the endpoint refuses', async (t) => {
  const dead = await freePort();
  const { port, registry } = await proxyTo(t, service('gone', [dead]));
  const r = await send(port);
  assert.equal(r.status, 502);
  assert.equal(r.headers['x-isomesh-error'], 'ISOMESH_ERR_PROXY_UPSTREAM_REFUSED');
  assert.equal(JSON.parse(r.body).error.code, 'ISOMESH_ERR_PROXY_UPSTREAM_REFUSED');
  assert.equal(await metricValue(registry, 'isomesh_upstream_errors_total', { tenant: 'acme', service: 'gone', kind: 'refused' }), 1);
  assert.equal(await metricValue(registry, 'isomesh_requests_total', { tenant: 'acme', code_class: '5xx' }), 1);
});

test('502 ISOMESH_ERR_PROXY_UPSTREAM_RESET when the upstream drops the connection', async (t) => {
  const up = await startUpstream(t, 'rude', (req) => req.socket.destroy());
  const { port } = await proxyTo(t, service('rude', [up.port]));
  const r = await send(port, { method: 'POST', body: 'x' });
  assert.equal(r.status, 502);
  assert.equal(r.headers['x-isomesh-error'], 'ISOMESH_ERR_PROXY_UPSTREAM_RESET');
});

test('504 ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT when the upstream never answers', async (t) => {
  const up = await startUpstream(t, 'slow', () => {});
  const { port, registry } = await proxyTo(t, service('slow', [up.port], { timeoutMs: 150 }));
  const started = performance.now();
  const r = await send(port);
  const took = performance.now() - started;
  assert.equal(r.status, 504);
  assert.equal(r.headers['x-isomesh-error'], 'ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT');
  assert.ok(took >= 140 && took < 2000, `took ${took} ms`);
  assert.equal(await metricValue(registry, 'isomesh_upstream_errors_total', { tenant: 'acme', service: 'slow', kind: 'timeout' }), 1);
});

test('route timeoutMs overrides the service timeout', async (t) => {
  const up = await startUpstream(t, 'slow', (req, res) => setTimeout(() => res.end('late'), 300));
  const { proxy } = await startProxy(t);
  await proxy.configure(
    tenantConfig('acme', [service('slow', [up.port], { timeoutMs: 100 })], [
      { name: 'patient', match: { path: '/patient' }, to: { service: 'slow' }, timeoutMs: 2000 },
      { name: 'rest', match: {}, to: { service: 'slow' } },
    ]),
  );
  const port = proxy.status('acme')!.listener!.port;
  assert.equal((await send(port, { path: '/patient' })).status, 200);
  assert.equal((await send(port, { path: '/hasty' })).status, 504);
});

test('retries turn a 5xx-then-200 upstream into a 200 for a bodyless GET', async (t) => {
  const up = await startUpstream(t, 'flaky', (req, res) => {
    req.resume();
    if (up.requests % 2 === 1) {
      res.writeHead(503);
      res.end('busy');
    } else {
      res.end('ok');
    }
  });
  const { port, registry } = await proxyTo(t, service('flaky', [up.port], { retries: { attempts: 2, on: ['5xx'] } }));
  const r = await send(port);
  assert.equal(r.status, 200);
  assert.equal(r.body, 'ok');
  assert.equal(up.requests, 2);
  assert.equal(await metricValue(registry, 'isomesh_requests_total', { tenant: 'acme', code_class: '2xx' }), 1);

  // A POST with a body is never replayed: the 503 goes to the client as is.
  const post = await send(port, { method: 'POST', body: 'payload' });
  assert.equal(post.status, 503);
  assert.equal(post.body, 'busy');
  assert.equal(up.requests, 3);
});

test('connect failures are retried onto another endpoint', async (t) => {
  const dead = await freePort();
  const up = await startUpstream(t, 'alive');
  const { port } = await proxyTo(t, service('mixed', [dead, up.port], { retries: { attempts: 1, on: ['connect-failure'] } }));
  for (let i = 0; i < 4; i++) assert.equal((await send(port, { method: 'POST' })).status, 200);
  assert.equal(up.requests, 4);
});

test('without a retry policy a 5xx is passed through unchanged', async (t) => {
  const up = await startUpstream(t, 'err', (req, res) => {
    res.writeHead(500, { 'x-from': 'upstream' });
    res.end('boom');
  });
  const { port } = await proxyTo(t, service('err', [up.port]));
  const r = await send(port);
  assert.equal(r.status, 500);
  assert.equal(r.headers['x-from'], 'upstream');
  assert.equal(r.headers['x-isomesh-error'], undefined);
  assert.equal(up.requests, 1);
});

test('a chunked request body is re-framed and forwarded', async (t) => {
  const up = await startUpstream(t, 'echo', (req, res) => {
    res.writeHead(200, { 'x-te': String(req.headers['transfer-encoding']) });
    req.pipe(res);
  });
  const { port } = await proxyTo(t, service('echo', [up.port]));
  const r = await new Promise<{ body: string; te: string | undefined }>((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, method: 'PATCH', path: '/', agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ body, te: res.headers['x-te'] as string | undefined }));
    });
    req.on('error', reject);
    req.setHeader('transfer-encoding', 'chunked');
    req.write('hello ');
    setTimeout(() => req.end('world'), 20);
  });
  assert.equal(r.body, 'hello world');
  assert.equal(r.te, 'chunked');
});

test('circuit breaker overflow answers 503 ISOMESH_ERR_PROXY_CIRCUIT_OPEN', async (t) => {
  const held: http.ServerResponse[] = [];
  const up = await startUpstream(t, 'held', (req, res) => held.push(res));
  t.after(() => held.forEach((r) => r.end()));
  const { port } = await proxyTo(
    t,
    service('held', [up.port], { circuitBreaker: { maxConnections: 1, maxPending: 1, consecutive5xx: 0, ejectionMs: 0 } }),
  );
  const first = send(port);
  const second = send(port);
  // Wait until the first request reached the upstream (the second is queued on the single socket).
  for (let i = 0; i < 100 && held.length < 1; i++) await new Promise((r) => setTimeout(r, 10));
  const third = await send(port);
  assert.equal(third.status, 503);
  assert.equal(third.headers['x-isomesh-error'], 'ISOMESH_ERR_PROXY_CIRCUIT_OPEN');
  held.forEach((r) => r.end('done'));
  for (let i = 0; i < 100 && held.length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  held.forEach((r) => r.end('done'));
  assert.equal((await first).status, 200);
  assert.equal((await second).status, 200);
});

test('a dead reused keep-alive socket is retried once on a fresh connection (idempotent, bodyless only)', async (t) => {
  // The upstream serves the first request of each connection and drops the connection on the
  // second, like a server that closed an idle keep-alive socket just as the proxy reused it.
  const served = new WeakMap<object, number>();
  const up = await startUpstream(t, 'stale', (req, res) => {
    const n = (served.get(req.socket) ?? 0) + 1;
    served.set(req.socket, n);
    req.resume();
    if (n > 1) {
      req.socket.destroy();
      return;
    }
    res.end('fresh');
  });
  const { port } = await proxyTo(t, service('stale', [up.port]));
  assert.equal((await send(port)).body, 'fresh');
  const second = await send(port);
  assert.equal(second.status, 200);
  assert.equal(second.body, 'fresh');
  assert.equal(up.connections, 2);
  // Not for a POST with a body: it may have reached the upstream.
  const post = await send(port, { method: 'POST', body: 'once' });
  assert.equal(post.status, 502);
  assert.equal(post.headers['x-isomesh-error'], 'ISOMESH_ERR_PROXY_UPSTREAM_RESET');
});

test('connectTimeoutMs: 504 when the TCP connect does not complete in time', async (t) => {
  // A listener whose process is stopped never accepts; once its backlog is full the kernel drops
  // further SYNs, so a connect to it hangs — on loopback, with no firewall rules.
  const child = spawn(process.execPath, ['-e', "require('net').createServer().listen({ port: 0, host: '127.0.0.1', backlog: 1 }, function () { console.log(this.address().port); })"], { stdio: ['ignore', 'pipe', 'inherit'] });
  t.after(() => child.kill('SIGKILL'));
  const stuckPort = await new Promise<number>((resolve, reject) => {
    child.stdout.once('data', (d: Buffer) => resolve(Number(String(d).trim())));
    child.once('error', reject);
  });
  child.kill('SIGSTOP');
  const fillers: net.Socket[] = [];
  t.after(() => fillers.forEach((s) => s.destroy()));
  // Fill the accept queue until a connect no longer completes (bounded).
  for (let i = 0; i < 16; i++) {
    const s = net.connect(stuckPort, '127.0.0.1');
    s.on('error', () => {});
    fillers.push(s);
    const connected = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 200);
      s.once('connect', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (!connected) break;
  }
  const { port, registry } = await proxyTo(t, service('stuck', [stuckPort], { connectTimeoutMs: 150, timeoutMs: 5000 }));
  const started = performance.now();
  const r = await send(port);
  const took = performance.now() - started;
  assert.equal(r.status, 504);
  assert.equal(r.headers['x-isomesh-error'], 'ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT');
  assert.match(JSON.parse(r.body).error.message, /after 150 ms/);
  assert.ok(took >= 140 && took < 1500, `took ${took} ms`);
  assert.equal(await metricValue(registry, 'isomesh_upstream_errors_total', { tenant: 'acme', service: 'stuck', kind: 'connect_timeout' }), 1);
});

test('ring_hash on a header or a cookie: the same key always reaches the same endpoint; keys spread', async (t) => {
  const ups = await Promise.all([0, 1, 2].map((i) => startUpstream(t, `ep${i}`)));
  for (const [hashOn, build] of [
    [{ header: 'x-user' }, (k: string) => ({ 'x-user': k })],
    [{ cookie: 'session' }, (k: string) => ({ cookie: `theme=dark; session=${k}` })],
  ] as const) {
    const { port } = await proxyTo(t, service('ring', ups.map((u) => u.port), { lb: 'ring_hash', hashOn }));
    const owner = new Map<string, string>();
    for (let i = 0; i < 20; i++) {
      const key = `user-${i}`;
      for (let n = 0; n < 3; n++) {
        const r = await send(port, { headers: build(key) });
        const served = r.headers['x-upstream'] as string;
        assert.equal(owner.get(key) ?? served, served, `${JSON.stringify(hashOn)} ${key} sticks to one endpoint`);
        owner.set(key, served);
      }
    }
    assert.ok(new Set(owner.values()).size >= 2, `20 keys spread over the endpoints (${JSON.stringify(hashOn)})`);
  }
});
