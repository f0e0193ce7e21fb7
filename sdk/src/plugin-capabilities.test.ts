// The v1 plugin capabilities through createTestHost (the production guest runtime): declarations,
// buffered body access, ctx.fetch to the tenant's own services, ctx.metrics.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { definePlugin } from './index.ts';
import { createTestHost } from './testing.ts';
import { parseServiceUrl, VerifiedTokens } from './guest/capabilities.ts';
import { base64Decode, base64Encode, utf8Decode, utf8Encode } from './guest/bytes.ts';

test('definePlugin validates body limits and configSchema', () => {
  const hook = { onRequest() {} };
  assert.throws(() => definePlugin({ ...hook, body: { request: 0 } }), /body\.request must be an integer number of bytes in 1\.\.67108864/);
  assert.throws(() => definePlugin({ ...hook, body: { request: 64 * 1024 * 1024 + 1 } }), /64 MiB/);
  assert.throws(() => definePlugin({ ...hook, body: { request: 1.5 } }), /integer/);
  assert.throws(() => definePlugin({ ...hook, body: { response: 10 } }), /needs an onResponse hook/);
  assert.throws(() => definePlugin({ ...hook, body: { reqest: 10 } as never }), /unknown key "reqest"/);
  assert.throws(() => definePlugin({ ...hook, configSchema: [] as never }), /configSchema must be a JSON Schema object/);
  const cyclic: Record<string, unknown> = {};
  cyclic.self = cyclic;
  assert.throws(() => definePlugin({ ...hook, configSchema: cyclic }), /configSchema is not JSON/);
  assert.doesNotThrow(() => definePlugin({ ...hook, body: { request: 1024 }, configSchema: { type: 'object' } }));
});

test('bytes: base64 and UTF-8 round trips match Node', () => {
  const samples = ['', 'a', 'ab', 'abc', 'héllo wörld', '𝄞 music', '\u0000\u00ff', 'x'.repeat(10_000)];
  for (const s of samples) {
    const bytes = utf8Encode(s);
    assert.deepEqual(Buffer.from(bytes), Buffer.from(s, 'utf8'), s.slice(0, 20));
    assert.equal(base64Encode(bytes), Buffer.from(s, 'utf8').toString('base64'));
    assert.equal(utf8Decode(base64Decode(Buffer.from(s).toString('base64'))), s);
  }
  const binary = new Uint8Array(1000).map((_, i) => (i * 37) & 255);
  assert.deepEqual(base64Decode(Buffer.from(binary).toString('base64')), binary);
  assert.equal(utf8Decode(new Uint8Array([0x61, 0xff, 0x62])), 'a\ufffdb');
  assert.throws(() => base64Decode('ab$c'), /invalid base64/);
});

test('body: read, parse and replace the request body; undeclared access rejects clearly', async () => {
  const plugin = definePlugin({
    body: { request: 64 },
    async onRequest(req) {
      const order = (await req.json()) as { qty: number };
      req.setBody(JSON.stringify({ ...order, qty: order.qty * 2 }));
      req.headers.set('x-len', String((await req.arrayBuffer()).byteLength));
    },
  });
  const host = createTestHost(plugin);
  const out = await host.onRequest({ method: 'POST', body: '{"qty":2}' });
  assert.ok(out.action === 'continue', JSON.stringify(out));
  assert.equal(out.body, '{"qty":4}');
  assert.deepEqual(out.headers, [['x-len', '9']]);

  const big = definePlugin({ body: { request: 4 }, onRequest(req) { req.setBody('12345'); } });
  const tooBig = await createTestHost(big).onRequest({ body: 'ok' });
  assert.ok(tooBig.action === 'error' && /5 bytes is over the declared body\.request limit of 4/.test(tooBig.message), JSON.stringify(tooBig));

  const undeclared = definePlugin({ async onRequest(req) { await req.text(); } });
  const refused = await createTestHost(undeclared).onRequest({});
  assert.ok(refused.action === 'error' && /did not declare body access; add body: \{ request: maxBytes \}/.test(refused.message), JSON.stringify(refused));
  const setUndeclared = definePlugin({ onResponse(res) { res.setBody('x'); } });
  const refused2 = await createTestHost(setUndeclared).onResponse({});
  assert.ok(refused2.action === 'error' && /res\.setBody\(\): this plugin did not declare body access/.test(refused2.message));
});

test('body: the response body, binary-safe', async () => {
  const plugin = definePlugin({
    body: { response: 1024 },
    async onResponse(res) {
      const bytes = new Uint8Array(await res.arrayBuffer());
      res.setBody(bytes.map((b) => 255 - b));
    },
  });
  const input = new Uint8Array([0, 1, 2, 250, 255]);
  const out = await createTestHost(plugin).onResponse({ status: 200, body: input });
  assert.ok(out.action === 'continue');
  assert.deepEqual([...(out.bodyBytes ?? [])], [255, 254, 253, 5, 0]);
});

test('ctx.fetch: calls a stubbed service of the tenant and reads the answer', async () => {
  const plugin = definePlugin({
    async onRequest(req, ctx) {
      const res = await ctx.fetch('http://users/v1/users/7?fields=name', { headers: { accept: 'application/json' } });
      const user = (await res.json()) as { name: string };
      req.headers.set('x-user-name', user.name);
      req.headers.set('x-user-status', `${res.status} ${res.ok} ${res.headers.get('x-from')}`);
      const posted = await ctx.fetch('http://audit/log', { method: 'post', body: 'seen 7', timeoutMs: 200 });
      req.headers.set('x-audit', String(posted.status));
    },
  });
  const host = createTestHost(plugin, {
    fetch: {
      users: (r) => ({ status: 200, headers: { 'x-from': 'users' }, body: JSON.stringify({ name: `user-${r.path}` }) }),
      audit: () => ({ status: 204 }),
    },
  });
  const out = await host.onRequest({});
  assert.ok(out.action === 'continue', JSON.stringify(out));
  assert.deepEqual(Object.fromEntries(out.headers), {
    'x-user-name': 'user-/v1/users/7?fields=name',
    'x-user-status': '200 true users',
    'x-audit': '204',
  });
  assert.deepEqual(
    host.fetches.map((f) => [f.service, f.method, f.path, f.body, f.timeoutMs]),
    [['users', 'GET', '/v1/users/7?fields=name', '', 1000], ['audit', 'POST', '/log', 'seen 7', 200]],
  );
  assert.deepEqual(host.fetches[0]?.headers, [['accept', 'application/json']]);
});

test('ctx.fetch: anything but http://<own service>/ is rejected without a request', async () => {
  const cases: Array<[string, RegExp, string]> = [
    ['https://users/x', /only http:\/\/ URLs/, 'ERR_FETCH_OPTIONS'],
    ['http://u:p@users/x', /userinfo/, 'ERR_FETCH_OPTIONS'],
    ['http://users:8080/x', /port/, 'ERR_FETCH_OPTIONS'],
    ['http://127.0.0.1/x', /IP address/, 'ERR_FETCH_OPTIONS'],
    ['http://[::1]/x', /IP address/, 'ERR_FETCH_OPTIONS'],
    ['http://users.other.svc/x', /not a service name/, 'ERR_FETCH_OPTIONS'],
    ['/relative', /not an absolute URL/, 'ERR_FETCH_OPTIONS'],
    ['http://billing/x', /"billing" is not a service of tenant test/, 'ERR_FETCH_UNKNOWN_SERVICE'],
  ];
  for (const [url, message, code] of cases) {
    const plugin = definePlugin({
      async onRequest(req, ctx) {
        const e = await ctx.fetch(url).then(() => undefined, (err: { name: string; code: string; message: string }) => err);
        req.headers.set('x-error', `${e?.name} ${e?.code} ${e?.message}`);
      },
    });
    const host = createTestHost(plugin, { fetch: { users: () => ({ status: 200 }) } });
    const out = await host.onRequest({});
    assert.ok(out.action === 'continue');
    const got = Object.fromEntries(out.headers)['x-error'] ?? '';
    assert.match(got, message, url);
    assert.ok(got.startsWith(`FetchError ${code}`), `${url}: ${got}`);
    assert.equal(host.fetches.length, 0, `${url} made no request`);
  }
  assert.deepEqual(parseServiceUrl('http://users'), { service: 'users', path: '/' });
  assert.deepEqual(parseServiceUrl('http://users?x=1#frag'), { service: 'users', path: '/?x=1' });
  assert.throws(() => parseServiceUrl('http://users/a b'), /visible ASCII/);
});

test('ctx.fetch: timeout, over-large answers, bodies on GET, and the wall budget', async () => {
  const run = async (fn: (ctx: Parameters<NonNullable<Parameters<typeof definePlugin>[0]['onRequest']>>[1]) => Promise<unknown>, opts = {}) => {
    const plugin = definePlugin({
      async onRequest(req, ctx) {
        const e = await fn(ctx).then(() => undefined, (err: { code: string; message: string }) => err);
        req.headers.set('x-error', `${e?.code} ${e?.message}`);
      },
    });
    const out = await createTestHost(plugin, {
      fetch: {
        slow: () => new Promise((resolve) => setTimeout(() => resolve({ status: 200 }), 300)),
        big: () => ({ status: 200, body: new Uint8Array(1024 * 1024 + 1) }),
        broken: () => { throw new Error('connection refused'); },
      },
      ...opts,
    }).onRequest({});
    return out.action === 'continue' ? (Object.fromEntries(out.headers)['x-error'] ?? '') : JSON.stringify(out);
  };
  assert.match(await run((ctx) => ctx.fetch('http://slow/', { timeoutMs: 20 })), /^ERR_FETCH_TIMEOUT .*did not answer within 20 ms/);
  assert.match(await run((ctx) => ctx.fetch('http://big/')), /^ERR_FETCH_TOO_LARGE .*1048577 bytes/);
  assert.match(await run((ctx) => ctx.fetch('http://broken/')), /^ERR_FETCH_FAILED ctx\.fetch: connection refused/);
  assert.match(await run((ctx) => ctx.fetch('http://slow/', { body: 'x' })), /^ERR_FETCH_OPTIONS .*GET request cannot have a body/);
  assert.match(await run((ctx) => ctx.fetch('http://slow/', { headers: { host: 'evil' } })), /^ERR_FETCH_OPTIONS .*"host" is set by the host/);
  assert.match(await run((ctx) => ctx.fetch('http://slow/', { timeoutMs: 2000 }), { capabilityWallMs: 500 }), /^ERR_CAPABILITY_LIMIT .*timeoutMs 2000 exceeds the 500 ms/);
});

test('ctx.metrics: counters are summed per series, histograms keep observations, bad names throw', async () => {
  const plugin = definePlugin({
    onRequest(req, ctx) {
      const hits = ctx.metrics.counter('hits', { route: req.path });
      hits.inc();
      hits.inc(2);
      ctx.metrics.histogram('body_bytes').observe(10);
      ctx.metrics.histogram('body_bytes').observe(20);
      assert.throws(() => ctx.metrics.counter('bad-name'), /invalid metric name/);
      assert.throws(() => ctx.metrics.counter('x', { tenant: 'other' }), /label "tenant" is reserved/);
      assert.throws(() => ctx.metrics.counter('x', { a: '1', b: '2', c: '3', d: '4', e: '5', f: '6' }), /at most 5 labels/);
      assert.throws(() => ctx.metrics.counter('x', { a: 'v'.repeat(129) }), /longer than 128/);
      assert.throws(() => ctx.metrics.histogram('latency_count'), /must not end in/);
      assert.throws(() => hits.inc(-1), /n must be a finite number >= 0/);
    },
  });
  const host = createTestHost(plugin);
  const out = await host.onRequest({ path: '/a' });
  assert.equal(out.action, 'continue', JSON.stringify(out));
  assert.deepEqual(host.metrics, [
    { type: 'counter', name: 'hits', labels: { route: '/a' }, value: 3 },
    { type: 'histogram', name: 'body_bytes', labels: {}, value: [10, 20] },
  ]);
});

test('VerifiedTokens keeps successes only while exp and nbf hold by the host rule, bounded, oldest out first', () => {
  const now = 1_800_000_000_000; // ms
  const sec = now / 1000;
  const ok = (payload: Record<string, unknown>) => ({ payload, header: { alg: 'HS256' } });
  const kept = new VerifiedTokens();
  kept.put('a', ok({ sub: 'a', exp: sec + 10 }), 0);
  assert.equal(kept.get('a', now)?.payload.sub, 'a');
  assert.equal(kept.get('a', now + 9_999)?.payload.sub, 'a', 'exp is still ahead');
  assert.equal(kept.get('a', (sec + 10) * 1000), undefined, 'exp <= now: the host decides again (it says expired)');
  kept.put('tol', ok({ exp: sec - 5 }), 10);
  assert.ok(kept.get('tol', now), 'within clockTolerance');
  assert.equal(kept.get('tol', now + 5_000), undefined, 'exp <= now - tolerance');
  kept.put('nbf', ok({ nbf: sec + 1 }), 0);
  assert.equal(kept.get('nbf', now), undefined, 'not yet valid');
  assert.ok(kept.get('nbf', now + 1_000));
  assert.equal(kept.get('unknown', now), undefined);
  kept.put('bad', undefined as never, 0);
  assert.equal(kept.get('bad', now), undefined, 'nothing but a result with a payload is kept');
  kept.clear();
  assert.equal(kept.size, 0);
  for (let i = 0; i < VerifiedTokens.MAX + 10; i++) kept.put(`t${i}`, ok({ sub: String(i) }), 0);
  assert.equal(kept.size, VerifiedTokens.MAX);
  assert.equal(kept.get('t0', now), undefined, 'the oldest went first');
  assert.equal(kept.get(`t${VerifiedTokens.MAX + 9}`, now)?.payload.sub, String(VerifiedTokens.MAX + 9));
});
