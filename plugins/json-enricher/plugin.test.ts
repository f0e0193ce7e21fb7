import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createTestHost } from '@isomesh/sdk/testing';
import plugin, { parseConfig } from './src/index.ts';

const config = { service: 'customers', path: '/customers/{id}', idField: 'customerId', into: 'customer' };
const json = { 'content-type': 'application/json' };
const customers = {
  customers: (req: { path: string }) =>
    req.path === '/customers/c%2F7' ? { status: 200, body: JSON.stringify({ tier: 'gold' }) } : { status: 404 },
};

test('enriches a JSON body with the lookup answer and counts it', async () => {
  const host = createTestHost(plugin, { config, fetch: customers });
  const out = await host.onRequest({ method: 'POST', headers: json, body: JSON.stringify({ customerId: 'c/7', qty: 2 }) });
  assert.ok(out.action === 'continue', JSON.stringify(out));
  assert.deepEqual(JSON.parse(out.body ?? ''), { customerId: 'c/7', qty: 2, customer: { tier: 'gold' } });
  assert.ok(out.headers.some(([k, v]) => k === 'x-enriched-by' && v === 'json-enricher'));
  assert.deepEqual(host.fetches.map((f) => [f.service, f.method, f.path, f.timeoutMs]), [['customers', 'GET', '/customers/c%2F7', 200]]);
  assert.deepEqual(host.metrics.map((m) => [m.type, m.name, m.labels]), [
    ['histogram', 'json_enricher_lookup_seconds', { status: '200' }],
    ['counter', 'json_enricher_requests', { outcome: 'enriched' }],
  ]);
});

test('not found, failed lookups and skipped requests leave the body alone', async () => {
  const host = createTestHost(plugin, { config, fetch: customers });
  const missing = await host.onRequest({ method: 'POST', headers: json, body: '{"customerId":"nobody"}' });
  assert.ok(missing.action === 'continue' && missing.body === undefined);
  const get = await host.onRequest({ method: 'GET', headers: json, body: '' });
  assert.ok(get.action === 'continue' && get.body === undefined);
  const text = await host.onRequest({ method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' });
  assert.ok(text.action === 'continue' && text.body === undefined);
  const noId = await host.onRequest({ method: 'POST', headers: json, body: '{"other":1}' });
  assert.ok(noId.action === 'continue' && noId.body === undefined);
  assert.deepEqual(host.metrics.filter((m) => m.type === 'counter').map((m) => m.labels.outcome), ['not_found', 'skipped', 'skipped', 'no_id']);

  // A service the tenant does not have (no stub): the lookup fails; onError decides.
  const down = createTestHost(plugin, { config: { ...config, onError: 'reject' } });
  const rejected = await down.onRequest({ method: 'POST', headers: json, body: '{"customerId":"c/7"}' });
  assert.ok(rejected.action === 'respond' && rejected.status === 502, JSON.stringify(rejected));
  assert.match(down.logs[0]?.fields?.error as string, /not a service of tenant/);
});

test('invalid JSON is answered 400', async () => {
  const out = await createTestHost(plugin, { config, fetch: customers }).onRequest({ method: 'POST', headers: json, body: '{nope' });
  assert.ok(out.action === 'respond' && out.status === 400);
});

test('the declared config schema is config.schema.json; parseConfig refuses unknown fields', () => {
  assert.deepEqual(plugin.configSchema, JSON.parse(readFileSync(new URL('./config.schema.json', import.meta.url), 'utf8')));
  assert.deepEqual(plugin.body, { request: 64 * 1024 });
  assert.throws(() => parseConfig({ ...config, extra: 1 }), /unknown field "extra"/);
  assert.throws(() => parseConfig({ ...config, service: 'Not A Name' }), /service name/);
});
