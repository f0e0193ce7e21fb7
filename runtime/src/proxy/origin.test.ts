// The proxy's own upstream HTTP/1.1 client (origin.ts) against raw TCP upstreams that answer with
// exact bytes: framing (chunked split anywhere, close-delimited, HEAD, 1xx), strictness (invalid
// responses are 502 ISOMESH_ERR_UPSTREAM_BAD_RESPONSE, API.md v1) and connection reuse only after a clean, complete response.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import type { TestContext } from 'node:test';
import { HostDouble, send, service, startProxy, tenantConfig } from './test-fixtures.ts';

interface RawUpstream {
  port: number;
  connections: number;
  requests: string[];
}

/** A TCP upstream: for each request head it receives, `answer` gives the byte pieces to write (with a pause between). */
async function rawUpstream(t: TestContext, answer: (head: string, n: number) => Array<string | Buffer> | 'hang' | 'close'): Promise<RawUpstream> {
  const up: RawUpstream = { port: 0, connections: 0, requests: [] };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    up.connections++;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => {});
    let buf = '';
    socket.on('data', async (d) => {
      buf += d.toString('latin1');
      for (;;) {
        const end = buf.indexOf('\r\n\r\n');
        if (end === -1) return;
        const head = buf.slice(0, end);
        buf = buf.slice(end + 4);
        up.requests.push(head);
        const out = answer(head, up.requests.length);
        if (out === 'hang') return;
        if (out === 'close') {
          socket.destroy();
          return;
        }
        for (const piece of out) {
          if (socket.destroyed) return;
          socket.write(piece);
          await new Promise((r) => setTimeout(r, 5));
        }
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  up.port = (server.address() as net.AddressInfo).port;
  t.after(() => {
    for (const s of sockets) s.destroy();
    server.close();
  });
  return up;
}

async function proxyFor(t: TestContext, port: number, extra = {}): Promise<number> {
  const { proxy } = await startProxy(t);
  await proxy.configure(tenantConfig('acme', [service('raw', [port], extra)], [{ name: 'all', match: {}, to: { service: 'raw' } }]));
  return proxy.status('acme')!.listener!.port;
}

test('chunked response split at every awkward place is decoded and re-framed; trailers dropped', async (t) => {
  const up = await rawUpstream(t, () => [
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r',
    '\n5\r\nhel',
    'lo\r\n',
    '7;ext=1\r\n, world\r',
    '\n0\r\nX-Trailer: t\r\n',
    '\r\n',
  ]);
  const port = await proxyFor(t, up.port);
  for (let i = 0; i < 2; i++) {
    const r = await send(port);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'hello, world');
    assert.equal(r.headers['x-a'], '1');
    assert.equal(r.headers['x-trailer'], undefined);
  }
  assert.equal(up.connections, 1, 'a complete chunked response leaves the connection reusable');
});

test('content-length body in pieces; interim 1xx skipped; connection reused', async (t) => {
  const up = await rawUpstream(t, (_h, n) => [
    'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n',
    `HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-N: ${n}\r\n\r\n01234`,
    '56789',
  ]);
  const port = await proxyFor(t, up.port);
  const a = await send(port);
  const b = await send(port);
  assert.deepEqual([a.status, a.body, a.headers['x-n'], a.headers['content-length']], [200, '0123456789', '1', '10']);
  assert.deepEqual([b.status, b.body, b.headers['x-n']], [200, '0123456789', '2']);
  assert.equal(a.headers['link'], undefined, 'interim headers are not merged into the final response');
  assert.equal(up.connections, 1);
});

test('a close-delimited body ends when the upstream closes; that connection is not reused', async (t) => {
  let connections = 0;
  const server = net.createServer((socket) => {
    connections++;
    socket.once('data', () => {
      socket.write('HTTP/1.1 200 OK\r\nX-Mode: eof\r\n\r\npart one, ');
      setTimeout(() => socket.end('part two'), 30);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const port = await proxyFor(t, (server.address() as net.AddressInfo).port);
  for (let i = 0; i < 2; i++) {
    const r = await send(port);
    assert.equal(r.status, 200);
    assert.equal(r.body, 'part one, part two');
    assert.equal(r.headers['x-mode'], 'eof');
  }
  assert.equal(connections, 2);
});

test('HEAD: a Content-Length without a body; 204 and 304 carry no body either', async (t) => {
  const up = await rawUpstream(t, (head) => {
    if (head.startsWith('HEAD')) return ['HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n'];
    if (head.includes('/nc')) return ['HTTP/1.1 204 No Content\r\n\r\n'];
    return ['HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n'];
  });
  const port = await proxyFor(t, up.port);
  const h = await send(port, { method: 'HEAD' });
  assert.equal(h.status, 200);
  assert.equal(h.headers['content-length'], '1234');
  assert.equal((await send(port, { path: '/nc' })).status, 204);
  const nm = await send(port, { path: '/nm' });
  assert.equal(nm.status, 304);
  assert.equal(nm.headers['etag'], '"x"');
  assert.equal(up.connections, 1);
});

test('invalid upstream responses are 502 ISOMESH_ERR_UPSTREAM_BAD_RESPONSE and never reused', async (t) => {
  const bad: Record<string, string> = {
    '/both': 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    '/twice': 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc',
    '/status': 'HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n',
    '/fold': 'HTTP/1.1 200 OK\r\nX-A: 1\r\n  folded\r\nContent-Length: 0\r\n\r\n',
    '/ctl': 'HTTP/1.1 200 OK\r\nX-A: a\x01b\r\nContent-Length: 0\r\n\r\n',
    '/name': 'HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 0\r\n\r\n',
    '/lf': 'HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n',
    '/huge': `HTTP/1.1 200 OK\r\nX-Big: ${'x'.repeat(20_000)}\r\n\r\n`,
  };
  // The field-line faults are named (the first refused line, as the line-by-line checks see it).
  const faults: Record<string, string> = { '/fold': 'header line without a name', '/ctl': 'bad header value', '/name': 'bad header name' };
  const up = await rawUpstream(t, (head) => [bad[head.split(' ')[1]!] ?? 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok']);
  const port = await proxyFor(t, up.port);
  for (const path of Object.keys(bad)) {
    const r = await send(port, { method: 'POST', path }); // POST: no stale-connection retry
    assert.equal(r.status, 502, `${path}: ${r.status} ${r.body}`);
    assert.equal(r.headers['x-isomesh-error'], 'ISOMESH_ERR_UPSTREAM_BAD_RESPONSE', path);
    const fault = faults[path];
    if (fault !== undefined) assert.match(r.body, new RegExp(`invalid response: ${fault}"`), path);
  }
  const good = await send(port, { path: '/fine' });
  assert.equal(good.body, 'ok');
  assert.equal(up.connections, Object.keys(bad).length + 1, 'each broken connection was closed, not reused');
});

test('a bad chunk size mid-body truncates the response', async (t) => {
  const up = await rawUpstream(t, () => ['HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n', 'zz\r\n']);
  const port = await proxyFor(t, up.port);
  await assert.rejects(send(port), /aborted|ECONNRESET|socket hang up|terminated/i);
});

test('bytes after a complete response make the connection unusable (never parsed as the next response)', async (t) => {
  const up = await rawUpstream(t, (_h, n) => [`HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nforgd`, ...(n > 0 ? [] : [])]);
  const port = await proxyFor(t, up.port);
  const a = await send(port);
  const b = await send(port);
  assert.deepEqual([a.body, b.body], ['ok', 'ok'], 'the smuggled second response never reached a client');
  assert.equal(up.connections, 2);
});

test('a request body (content-length and chunked) reaches the upstream intact', async (t) => {
  const bodies: string[] = [];
  const server = net.createServer((socket) => {
    let buf = '';
    socket.on('data', (d) => {
      buf += d.toString('latin1');
      const end = buf.indexOf('\r\n\r\n');
      if (end === -1) return;
      const head = buf.slice(0, end).toLowerCase();
      const rest = buf.slice(end + 4);
      const done = head.includes('transfer-encoding: chunked') ? rest.endsWith('0\r\n\r\n') : rest.length >= Number(/content-length: (\d+)/.exec(head)?.[1] ?? 0);
      if (!done) return;
      bodies.push(`${head.includes('chunked') ? 'chunked' : 'length'}:${rest}`);
      buf = '';
      socket.write('HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const port = await proxyFor(t, (server.address() as net.AddressInfo).port);
  const a = await send(port, { method: 'POST', body: 'hello body' });
  const b = await send(port, { method: 'POST', headers: { 'transfer-encoding': 'chunked' }, body: 'chunky' });
  assert.equal(a.status, 201);
  assert.equal(b.status, 201);
  assert.equal(bodies[0], 'length:hello body');
  assert.equal(bodies[1], 'chunked:6\r\nchunky\r\n0\r\n\r\n');
});

test('while an onResponse hook runs, the body is held (also when the upstream closes meanwhile), then streamed', async (t) => {
  const server = net.createServer((socket) => {
    socket.once('data', (d) => {
      if (d.toString().includes('/close')) socket.end('HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 4\r\n\r\ndone');
      else {
        socket.write('HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nab');
        setTimeout(() => socket.write('cd'), 20);
        setTimeout(() => socket.write('ef'), 120);
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const host = new HostDouble();
  host.responseHook = async (res) => {
    await new Promise((r) => setTimeout(r, 60));
    return { action: 'continue', status: res.status, headers: [...res.headers, ['x-hooked', 'yes']] };
  };
  const { proxy } = await startProxy(t, host);
  await proxy.configure(tenantConfig('acme', [service('raw', [(server.address() as net.AddressInfo).port])], [{ name: 'all', match: {}, to: { service: 'raw' } }]));
  const port = proxy.status('acme')!.listener!.port;
  const [closed, pieces] = await Promise.all([send(port, { path: '/close' }), send(port, { path: '/pieces' })]);
  assert.deepEqual([closed.status, closed.body, closed.headers['x-hooked']], [200, 'done', 'yes']);
  assert.deepEqual([pieces.status, pieces.body, pieces.headers['x-hooked']], [200, 'abcdef', 'yes']);
  assert.deepEqual(host.imbalance(), { open: 0, repeated: 0 });
});

test('regression: a burst of more than 64 concurrent requests keeps its upstream connections for the next burst', async (t) => {
  // HTTP/2 clients put hundreds of requests in flight at once; the pool used to keep only 64 idle
  // sockets, so every burst closed the rest and reconnected them (0.09 connects per request under
  // h2load -c 4 -m 100). Idle sockets are now bounded by the socket cap and the idle timeout.
  const burst = 100;
  let connections = 0;
  let held: net.Socket[] = [];
  const server = net.createServer((socket) => {
    connections++;
    socket.on('error', () => {});
    socket.on('data', () => {
      // Answer nobody until the whole burst is here, so the proxy must hold `burst` sockets at once.
      held.push(socket);
      if (held.length < burst) return;
      for (const s of held) s.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok');
      held = [];
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.after(() => server.close());
  const port = await proxyFor(t, (server.address() as net.AddressInfo).port);
  for (let round = 0; round < 2; round++) {
    const replies = await Promise.all(Array.from({ length: burst }, () => send(port)));
    assert.ok(replies.every((r) => r.status === 200 && r.body === 'ok'), `round ${round}: every request answered`);
  }
  assert.equal(connections, burst, 'the second burst reused the first burst\'s connections');
});
