// Plugin metrics (ctx.metrics) at /metrics: naming that keeps tenants apart, per-tenant shapes and
// series budget, drops counted, and the path from a plugin's call to the scraped text in both modes.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { newHost, oneRequest, tenantConfig } from './fixtures.ts';
import { PluginMetrics } from './plugin-metrics.ts';
import type { GuestMetricOp } from './validate.ts';

/** The scrape must stay valid Prometheus text: one TYPE per family, every sample under a declared family. */
function checkExposition(text: string): void {
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (m) {
      assert.ok(!types.has(m[1]!), `family ${m[1]} declared twice`);
      types.set(m[1]!, m[2]!);
      continue;
    }
    if (line === '' || line.startsWith('#')) continue;
    const name = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line)?.[1] ?? '';
    const family = [name, name.replace(/_(bucket|sum|count)$/, '')].find((n) => types.has(n));
    assert.ok(family !== undefined, `sample ${name} has no family`);
    if (family !== name) assert.equal(types.get(family), 'histogram', `${name} belongs to a histogram`);
  }
}

const c = (name: string, labels: Array<[string, string]>, n: number): GuestMetricOp => ['c', name, labels, n];
const h = (name: string, labels: Array<[string, string]>, values: number[]): GuestMetricOp => ['h', name, labels, values];

test('two tenants, one name, different types and labels: both exported, neither blocks the other', async () => {
  const registry = new Registry();
  const m = new PluginMetrics(registry);
  m.apply('a', 'p', [c('requests', [['route', '/x']], 2), c('requests', [['route', '/x']], 1)]);
  m.apply('b', 'q', [h('requests', [['code', '200']], [0.003, 0.2, 7])]);
  m.apply('c', 'r', [c('requests_total', [['zone', 'eu'], ['code', '500']], 5)]);
  const text = await registry.metrics();
  checkExposition(text);
  assert.match(text, /^isomesh_plugin_requests_total\{tenant="a",plugin="p",route="\/x"\} 3$/m);
  assert.match(text, /^isomesh_plugin_requests_total\{tenant="c",plugin="r",code="500",zone="eu"\} 5$/m, 'label names may differ between tenants');
  assert.match(text, /^# TYPE isomesh_plugin_requests_total counter$/m);
  assert.match(text, /^# TYPE isomesh_plugin_requests histogram$/m);
  assert.match(text, /^isomesh_plugin_requests_bucket\{tenant="b",plugin="q",code="200",le="0\.005"\} 1$/m);
  assert.match(text, /^isomesh_plugin_requests_bucket\{tenant="b",plugin="q",code="200",le="0\.25"\} 2$/m);
  assert.match(text, /^isomesh_plugin_requests_bucket\{tenant="b",plugin="q",code="200",le="\+Inf"\} 3$/m);
  assert.match(text, /^isomesh_plugin_requests_sum\{tenant="b",plugin="q",code="200"\} 7\.203$/m);
  assert.match(text, /^isomesh_plugin_requests_count\{tenant="b",plugin="q",code="200"\} 3$/m);
  assert.doesNotMatch(text, /isomesh_plugin_metrics_dropped_total\{/);
});

test('within a tenant a name keeps its type and label names; invalid or reserved updates are dropped and counted', async () => {
  const registry = new Registry();
  const m = new PluginMetrics(registry);
  m.apply('a', 'p', [c('hits', [['route', '/']], 1)]);
  m.apply('a', 'p', [
    c('hits', [['path', '/']], 1), // other label names
    c('invocations', [], 1), // the host's isomesh_plugin_invocations_total
    c('x', [['tenant', 'b']], 1), // a tampered guest claiming another tenant
    c('bad-name', [], 1),
    h('lat_count', [], [1]),
    c('y', [['a', 'v'.repeat(129)]], 1),
    c('z', [['a', '1'], ['b', '1'], ['c', '1'], ['d', '1'], ['e', '1'], ['f', '1']], 1),
    c('neg', [], -1),
  ], 2);
  const text = await registry.metrics();
  checkExposition(text);
  assert.match(text, /^isomesh_plugin_metrics_dropped_total\{tenant="a",plugin="p"\} 10$/m);
  assert.match(text, /^isomesh_plugin_hits_total\{tenant="a",plugin="p",route="\/"\} 1$/m);
  assert.doesNotMatch(text, /isomesh_plugin_invocations_total|tenant="b"|isomesh_plugin_x_total/);
  // Another tenant may use "hits" with its own label names.
  m.apply('b', 'p', [c('hits', [['path', '/']], 4)]);
  assert.match(await registry.metrics(), /^isomesh_plugin_hits_total\{tenant="b",plugin="p",path="\/"\} 4$/m);
});

test('1,000 series per tenant: beyond is dropped and counted; other tenants are unaffected; removal forgets them', async () => {
  const registry = new Registry();
  const m = new PluginMetrics(registry);
  const ops = Array.from({ length: 1005 }, (_, i) => c('users', [['id', String(i)]], 1));
  m.apply('greedy', 'p', ops);
  m.apply('greedy', 'p', [c('users', [['id', '0']], 1)]);
  m.apply('calm', 'p', [c('users', [['id', 'me']], 1)]);
  let text = await registry.metrics();
  assert.equal(text.match(/^isomesh_plugin_users_total\{tenant="greedy"/gm)?.length, 1000);
  assert.match(text, /^isomesh_plugin_users_total\{tenant="greedy",plugin="p",id="0"\} 2$/m, 'existing series still count');
  assert.match(text, /^isomesh_plugin_metrics_dropped_total\{tenant="greedy",plugin="p"\} 5$/m);
  assert.match(text, /^isomesh_plugin_users_total\{tenant="calm",plugin="p",id="me"\} 1$/m);
  m.removeTenant('greedy');
  text = await registry.metrics();
  assert.doesNotMatch(text, /tenant="greedy"/);
  m.removeTenant('calm');
  assert.doesNotMatch(await registry.metrics(), /isomesh_plugin_users_total/, 'an empty family leaves the registry');
});

for (const mode of [undefined, 'inline'] as const) {
  test(`[${mode ?? 'env mode'}] a plugin's ctx.metrics reach the scraped registry`, async (t) => {
    const { host, registry } = newHost(mode === undefined ? {} : { mode });
    t.after(() => host.close());
    host.configure(await tenantConfig(host, 'shop', [{
      name: 'meter',
      source: `import { definePlugin } from '@isomesh/sdk';
        export default definePlugin({
          onRequest(req, ctx) {
            ctx.metrics.counter('orders', { method: req.method }).inc();
            ctx.metrics.histogram('order_value').observe(0.3);
          },
        });`,
    }]));
    for (let i = 0; i < 3; i++) assert.equal((await oneRequest(host, 'shop')).action, 'continue');
    const text = await registry.metrics();
    checkExposition(text);
    assert.match(text, /^isomesh_plugin_orders_total\{tenant="shop",plugin="meter",method="GET"\} 3$/m);
    assert.match(text, /^isomesh_plugin_order_value_bucket\{tenant="shop",plugin="meter",le="0\.5"\} 3$/m);
    assert.match(text, /^isomesh_plugin_order_value_count\{tenant="shop",plugin="meter"\} 3$/m);
    host.removeTenant('shop');
    assert.doesNotMatch(await registry.metrics(), /isomesh_plugin_orders_total\{/);
  });
}
