// ctx.fetch through the host: performed by the data plane's backend (a fake here, recording calls),
// only to the tenant's own services; relayed from a cordon to the daemon and back in cordon mode; a
// cordon that dies mid-fetch fails only its in-flight calls.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { PluginFetch } from './contract.ts';
import { cordonNeighbours, newHost, oneRequest, request, tenantConfig } from './fixtures.ts';

type Call = { tenant: string; service: string; method: string; path: string; headers: Array<[string, string]>; body?: string; timeoutMs: number };

function recordingBackend(answer: (call: Call) => Promise<{ status: number; headers: Array<[string, string]>; body: Uint8Array }> | { status: number; headers: Array<[string, string]>; body: Uint8Array }) {
  const calls: Call[] = [];
  const fetch: PluginFetch = async (tenant, req) => {
    const call: Call = { tenant, service: req.service, method: req.method, path: req.path, headers: req.headers, timeoutMs: req.timeoutMs };
    if (req.body !== undefined) call.body = new TextDecoder().decode(req.body);
    calls.push(call);
    return answer(call);
  };
  return { calls, fetch };
}

const caller = (url: string, init = '{}') => `import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  async onRequest(req, ctx) {
    try {
      const res = await ctx.fetch(${JSON.stringify(url)}, ${init});
      req.headers.set('x-fetched', res.status + ' ' + (await res.text()) + ' ' + res.headers.get('x-origin'));
    } catch (e) {
      req.headers.set('x-fetch-error', e.name + ' ' + e.code + ' ' + e.message);
    }
  },
});`;

const header = (out: { action: string; headers?: Array<[string, string]> }, name: string) =>
  out.action === 'continue' ? out.headers?.find(([k]) => k === name)?.[1] : `not continue: ${JSON.stringify(out)}`;

for (const mode of [undefined, 'inline'] as const) {
  const label = mode ?? 'env mode';
  test(`[${label}] ctx.fetch reaches the tenant's own service through the backend`, async (t) => {
    const backend = recordingBackend((c) => ({ status: 201, headers: [['x-origin', c.service]], body: new TextEncoder().encode(`hi ${c.path}`) }));
    const { host } = newHost({ ...(mode === undefined ? {} : { mode }), fetch: backend.fetch });
    t.after(() => host.close());
    host.configure(await tenantConfig(host, 'shop', [
      { name: 'p', source: caller('http://users/v1/u?id=7', "{ method: 'POST', headers: { 'x-k': 'v' }, body: 'payload', timeoutMs: 300 }") },
    ], { services: ['users'] }));
    const out = await oneRequest(host, 'shop', request());
    assert.equal(header(out, 'x-fetched'), '201 hi /v1/u?id=7 users');
    assert.deepEqual(backend.calls, [{ tenant: 'shop', service: 'users', method: 'POST', path: '/v1/u?id=7', headers: [['x-k', 'v']], body: 'payload', timeoutMs: 300 }]);
  });

  test(`[${label}] another tenant's service, a non-service host, or no backend: rejected, never a request`, async (t) => {
    const backend = recordingBackend(() => ({ status: 200, headers: [], body: new Uint8Array(0) }));
    const { host } = newHost({ ...(mode === undefined ? {} : { mode }), fetch: backend.fetch });
    t.after(() => host.close());
    host.configure(await tenantConfig(host, 'other', [{ name: 'p', source: caller('http://billing/') }], { services: ['billing'] }));
    const cases: Array<[string, RegExp]> = [
      ['http://billing/charge', /^FetchError ERR_FETCH_UNKNOWN_SERVICE ctx\.fetch: "billing" is not a service of tenant shop$/],
      ['http://10.0.0.1/', /^FetchError ERR_FETCH_OPTIONS .*IP address/],
      ['http://example.com/', /^FetchError ERR_FETCH_OPTIONS .*not a service name/],
      ['https://users/', /^FetchError ERR_FETCH_OPTIONS .*only http:\/\//],
      ['http://users:81/', /^FetchError ERR_FETCH_OPTIONS .*port/],
      ['http://me@users/', /^FetchError ERR_FETCH_OPTIONS .*userinfo/],
    ];
    for (const [url, message] of cases) {
      host.configure(await tenantConfig(host, 'shop', [{ name: 'p', source: caller(url) }], { services: ['users'] }));
      assert.match(header(await oneRequest(host, 'shop'), 'x-fetch-error') ?? '', message, url);
    }
    assert.deepEqual(backend.calls, [], 'no request was made');

    const { host: bare } = newHost(mode === undefined ? {} : { mode });
    t.after(() => bare.close());
    bare.configure(await tenantConfig(bare, 'shop', [{ name: 'p', source: caller('http://users/') }], { services: ['users'] }));
    assert.match(header(await oneRequest(bare, 'shop'), 'x-fetch-error') ?? '', /^FetchError ERR_FETCH_UNAVAILABLE ctx\.fetch: fetch is not available$/);
  });

  test(`[${label}] backend failures and over-large answers reject the plugin's fetch`, async (t) => {
    const backend = recordingBackend((c) => {
      if (c.path === '/big') return { status: 200, headers: [], body: new Uint8Array(1024 * 1024 + 1) };
      throw new Error('upstream connect refused');
    });
    const { host } = newHost({ ...(mode === undefined ? {} : { mode }), fetch: backend.fetch });
    t.after(() => host.close());
    host.configure(await tenantConfig(host, 'shop', [{ name: 'p', source: caller('http://users/big') }], { services: ['users'] }));
    assert.match(header(await oneRequest(host, 'shop'), 'x-fetch-error') ?? '', /^FetchError ERR_FETCH_TOO_LARGE .*1048577 bytes/);
    host.configure(await tenantConfig(host, 'shop', [{ name: 'p', source: caller('http://users/down') }], { services: ['users'] }));
    assert.match(header(await oneRequest(host, 'shop'), 'x-fetch-error') ?? '', /^FetchError ERR_FETCH_FAILED ctx\.fetch: upstream connect refused$/);
  });
}

test('[cordon] a cordon that dies mid-fetch fails only its in-flight calls; the late answer is dropped', async (t) => {
  let release: () => void = () => {};
  const held = new Promise<void>((r) => (release = r));
  const backend = recordingBackend(async (c) => {
    if (c.tenant === 'victim') await held;
    return { status: 200, headers: [['x-origin', c.tenant]], body: new TextEncoder().encode('ok') };
  });
  const { host } = newHost({ mode: 'cordon', cordons: 2, fetch: backend.fetch });
  t.after(() => host.close());
  const { other } = cordonNeighbours(host, 'victim', 'calm');
  for (const tenant of ['victim', other]) {
    host.configure(await tenantConfig(host, tenant, [{ name: 'p', source: caller('http://users/x', '{ timeoutMs: 4000 }') }], { services: ['users'] }));
  }
  assert.equal(header(await oneRequest(host, other), 'x-fetched'), `200 ok ${other}`, 'warm');
  const pending = oneRequest(host, 'victim');
  for (let i = 0; i < 2000 && !backend.calls.some((c) => c.tenant === 'victim'); i++) await new Promise((r) => setTimeout(r, 5));
  assert.ok(backend.calls.some((c) => c.tenant === 'victim'), 'the fetch reached the backend');
  const pid = host.status('victim').usage.placement?.pid;
  assert.ok(pid, 'the victim runs in a cordon');
  process.kill(pid, 'SIGKILL');
  const out = await pending;
  assert.ok(out.action === 'fail' && out.code === 'ISOMESH_ERR_PLUGIN_CRASHED', JSON.stringify(out));
  // The tenant of the other cordon fetches on, and the dead cordon's late answer goes nowhere.
  release();
  assert.equal(header(await oneRequest(host, other), 'x-fetched'), `200 ok ${other}`);
  // The victim's cordon comes back and its fetches work again.
  let again = await oneRequest(host, 'victim');
  for (let i = 0; i < 200 && again.action !== 'continue'; i++) {
    await new Promise((r) => setTimeout(r, 10));
    again = await oneRequest(host, 'victim');
  }
  assert.equal(header(again, 'x-fetched'), '200 ok victim');
  assert.notEqual(host.status('victim').usage.placement?.pid, pid, 'a new cordon process');
});
