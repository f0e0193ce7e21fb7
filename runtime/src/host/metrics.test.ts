// The host's per-call families are plain numbers read by prom-client at scrape time: one series
// object per label set (resolved once, then added to), exported in Prometheus' text format with
// cumulative histogram buckets — the same series prom-client's Counter/Histogram would print.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Registry } from 'prom-client';
import { CounterFamily, HistogramFamily, HostMetrics } from './metrics.ts';

test('counter and histogram families print like prom-client metrics, series resolved once', async () => {
  const registry = new Registry();
  const c = new CounterFamily<'tenant' | 'outcome'>(registry, 'test_calls_total', 'Calls.');
  const h = new HistogramFamily<'tenant'>(registry, 'test_seconds', 'Seconds.', [0.1, 1]);
  const ok = c.series({ tenant: 'a', outcome: 'ok' });
  assert.equal(c.series({ tenant: 'a', outcome: 'ok' }), ok, 'the same label set is the same series');
  ok.value += 2;
  c.series({ tenant: 'b', outcome: 'threw' }).value++;
  const s = h.series({ tenant: 'a' });
  for (const v of [0.05, 0.5, 0.5, 7]) h.observe(s, v);
  const text = await registry.metrics();
  assert.match(text, /# TYPE test_calls_total counter/);
  assert.match(text, /test_calls_total\{tenant="a",outcome="ok"\} 2\n/);
  assert.match(text, /test_calls_total\{tenant="b",outcome="threw"\} 1\n/);
  assert.match(text, /# TYPE test_seconds histogram/);
  assert.match(text, /test_seconds_bucket\{tenant="a",le="0.1"\} 1\n/);
  assert.match(text, /test_seconds_bucket\{tenant="a",le="1"\} 3\n/);
  assert.match(text, /test_seconds_bucket\{tenant="a",le="\+Inf"\} 4\n/);
  assert.match(text, /test_seconds_sum\{tenant="a"\} 8.05\n/);
  assert.match(text, /test_seconds_count\{tenant="a"\} 4\n/);
});

test('HostMetrics registers the plugin families under their documented names', async () => {
  const registry = new Registry();
  const m = new HostMetrics(registry);
  m.invocations.series({ tenant: 't', plugin: 'p', version: '1', outcome: 'ok' }).value++;
  m.cpuSeconds.series({ tenant: 't', plugin: 'p' }).value += 0.5;
  m.duration.observe(m.duration.series({ tenant: 't', plugin: 'p' }), 0.00002);
  const text = await registry.metrics();
  assert.match(text, /isomesh_plugin_invocations_total\{tenant="t",plugin="p",version="1",outcome="ok"\} 1/);
  assert.match(text, /isomesh_plugin_cpu_seconds_total\{tenant="t",plugin="p"\} 0.5/);
  assert.match(text, /isomesh_plugin_duration_seconds_bucket\{tenant="t",plugin="p",le="0.000025"\} 1/);
  assert.match(text, /isomesh_plugin_duration_seconds_bucket\{tenant="t",plugin="p",le="0.00001"\} 0/);
});
