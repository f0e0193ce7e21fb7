import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTestHost, type TestOutcome } from '@isomesh/sdk/testing';
import plugin, { parseConfig } from './src/index.ts';

const service = (out: TestOutcome) => (out.action === 'continue' ? out.service : `(${out.action})`);
const get = (out: TestOutcome, name: string) => (out.action === 'error' ? undefined : out.headers.find(([k]) => k === name)?.[1]);

test('opt in by header (exact value) or by cookie; the mark header tells the upstream why', async () => {
  const host = createTestHost(plugin, {
    config: { service: 'reviews-v2', header: { name: 'x-canary', value: '1' }, cookie: { name: 'canary' }, markHeader: 'x-canary-route' },
    services: ['reviews', 'reviews-v2'],
  });
  const byHeader = await host.onRequest({ headers: { 'x-canary': '1' } });
  assert.equal(service(byHeader), 'reviews-v2');
  assert.equal(get(byHeader, 'x-canary-route'), 'header');
  assert.equal(service(await host.onRequest({ headers: { 'x-canary': '0' } })), undefined);
  const byCookie = await host.onRequest({ headers: { cookie: 'a=b; canary=yes' } });
  assert.equal(service(byCookie), 'reviews-v2');
  assert.equal(get(byCookie, 'x-canary-route'), 'cookie');
  // A client-sent mark is removed when the request is not routed.
  const faked = await host.onRequest({ headers: { 'x-canary-route': 'header' } });
  assert.equal(service(faked), undefined);
  assert.equal(get(faked, 'x-canary-route'), undefined);
});

test('percent split: close to the configured share, and sticky per user', async () => {
  const host = createTestHost(plugin, { config: { service: 'v2', percent: 20, stickyBy: 'header:x-user' } });
  const decisions = new Map<string, string | undefined>();
  for (let i = 0; i < 2000; i++) decisions.set(`user-${i}`, service(await host.onRequest({ headers: { 'x-user': `user-${i}` } })));
  const share = [...decisions.values()].filter((s) => s === 'v2').length / decisions.size;
  assert.ok(share > 0.17 && share < 0.23, `canary share ${share}`);
  for (let i = 0; i < 200; i++) {
    assert.equal(service(await host.onRequest({ headers: { 'x-user': `user-${i}` } })), decisions.get(`user-${i}`));
  }
});

test('a different salt reshuffles who is in the canary; 0% and 100% are exact', async () => {
  const a = createTestHost(plugin, { config: { service: 'v2', percent: 50, stickyBy: 'cookie:sid' } });
  const b = createTestHost(plugin, { config: { service: 'v2', percent: 50, stickyBy: 'cookie:sid', salt: 'round-2' } });
  let differ = 0;
  for (let i = 0; i < 200; i++) {
    const headers = { cookie: `sid=s${i}` };
    if (service(await a.onRequest({ headers })) !== service(await b.onRequest({ headers }))) differ++;
  }
  assert.ok(differ > 60 && differ < 140, `differ ${differ}`);
  const all = createTestHost(plugin, { config: { service: 'v2', percent: 100 } });
  const none = createTestHost(plugin, { config: { service: 'v2', percent: 0, header: { name: 'x-c' } } });
  for (let i = 0; i < 50; i++) {
    assert.equal(service(await all.onRequest()), 'v2');
    assert.equal(service(await none.onRequest()), undefined);
  }
});

test('routing to a service the tenant does not have fails like it does in the host', async () => {
  const host = createTestHost(plugin, { config: { service: 'ghost', percent: 100 }, services: ['real'] });
  assert.equal((await host.onRequest()).action, 'error');
});

test('config is validated with clear errors', () => {
  assert.throws(() => parseConfig({ service: 'v2' }), /nothing routes to the canary/);
  assert.throws(() => parseConfig({ service: 'V2!', percent: 5 }), /service must be a service name/);
  assert.throws(() => parseConfig({ service: 'v2', percent: 101 }), /percent must be a number in 0\.\.100/);
  assert.throws(() => parseConfig({ service: 'v2', percent: 5, stickyBy: 'session' }), /stickyBy must be/);
  assert.throws(() => parseConfig({ service: 'v2', header: { name: 'X-Canary' } }), /header must be/);
  assert.equal(parseConfig({ service: 'v2', percent: 12.5 }).buckets, 1250);
});
