// A loopback OTLP/HTTP collector receives what the SDK exports; each body is decoded with the OTLP
// protos (test/support/opentelemetry-proto) and the spans are checked field by field.
import assert from 'node:assert/strict';
import dc from 'node:diagnostics_channel';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import prom from 'prom-client';
import protobuf from 'protobufjs';
import { capturedLogger, exchangeRecord } from './fixtures.ts';
import { Telemetry } from './index.ts';

const PROTO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../test/support/opentelemetry-proto');
const root = new protobuf.Root();
root.resolvePath = (_origin, target) => path.join(PROTO_ROOT, target);
root.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto');
const ExportRequest = root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest');

interface OtlpValue { stringValue?: string; intValue?: protobuf.Long | number; doubleValue?: number; boolValue?: boolean }
interface OtlpSpan {
  traceId: Uint8Array; spanId: Uint8Array; parentSpanId: Uint8Array; traceState: string; name: string; kind: number;
  startTimeUnixNano: protobuf.Long; endTimeUnixNano: protobuf.Long;
  attributes: Array<{ key: string; value: OtlpValue }>; status?: { code?: number; message?: string };
}
interface Received { path: string; contentType: string | undefined; resource: Record<string, unknown>; scope: string; spans: OtlpSpan[] }

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const nanos = (v: protobuf.Long): bigint => BigInt(v.toString());
/** Epoch ms (with a fraction) in nanoseconds, without the rounding of ms × 1e6 in a double. */
const msToNanos = (ms: number): bigint => BigInt(Math.trunc(ms)) * 1_000_000n + BigInt(Math.round((ms - Math.trunc(ms)) * 1e6));

function value(v: OtlpValue): unknown {
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return Number(v.intValue.toString());
  if (v.doubleValue !== undefined) return v.doubleValue;
  return v.boolValue;
}

function attrs(list: Array<{ key: string; value: OtlpValue }>): Record<string, unknown> {
  return Object.fromEntries(list.map((a) => [a.key, value(a.value)]));
}

/** A collector on 127.0.0.1 that answers each export with `status` (held until release() when hold is set). */
async function collector(status = 200, hold = false) {
  const received: Received[] = [];
  const held: Array<() => void> = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const msg = ExportRequest.toObject(ExportRequest.decode(Buffer.concat(chunks)), { defaults: true }) as {
        resourceSpans: Array<{ resource: { attributes: Array<{ key: string; value: OtlpValue }> }; scopeSpans: Array<{ scope: { name: string }; spans: OtlpSpan[] }> }>;
      };
      for (const rs of msg.resourceSpans) {
        for (const ss of rs.scopeSpans) {
          received.push({ path: req.url ?? '', contentType: req.headers['content-type'], resource: attrs(rs.resource.attributes), scope: ss.scope.name, spans: ss.spans });
        }
      }
      const answer = (): void => {
        res.writeHead(status, { 'content-type': 'application/x-protobuf' });
        res.end();
      };
      if (hold) held.push(answer);
      else answer();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    received,
    spans: () => received.flatMap((r) => r.spans),
    release: () => held.splice(0).forEach((f) => f()),
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

const TID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PID = '00f067aa0ba902b7';

test('the request span and its plugin spans arrive over OTLP/HTTP protobuf with the request’s ids and times', async () => {
  const c = await collector();
  const registry = new prom.Registry();
  const requests: string[] = [];
  const onRequest = (m: unknown): void => {
    requests.push(String((m as { request: http.ClientRequest }).request.path));
  };
  dc.subscribe('http.client.request.start', onRequest);
  const { logger } = capturedLogger();
  const t = Telemetry.fromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: c.endpoint, OTEL_SERVICE_NAME: 'mesh-test', OTEL_BSP_SCHEDULE_DELAY: '20' }, logger, { registry });
  try {
    assert.equal(t.exporting, true);
    // continued trace, two plugin calls (one failed open)
    const continued = t.trace(`00-${TID}-${PID}-01`, 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE');
    const rec = exchangeRecord(continued);
    rec.pluginCalls![1]!.outcome = 'ISOMESH_ERR_PLUGIN_TIMEOUT';
    t.finish(rec, { enabled: false, sample: 1 });
    // a trace this proxy started, answered by isomesh with a 503 and no plugin calls
    const started = t.trace(undefined, undefined);
    const failed = exchangeRecord(started, { pluginCalls: undefined, status: 503, error: 'ISOMESH_ERR_PROXY_NO_ENDPOINT', method: 'PURGE', query: undefined, authority: '[::1]', endpoint: undefined, upstreamMs: undefined });
    t.finish(failed, { enabled: false, sample: 1 });
    // an unsampled parent: nothing exported
    t.finish(exchangeRecord(t.trace(`00-${TID.replace('4', '5')}-${PID}-00`, undefined)), { enabled: false, sample: 1 });
    await t.shutdown();

    assert.ok(c.received.length >= 1);
    for (const r of c.received) {
      assert.equal(r.path, '/v1/traces');
      assert.equal(r.contentType, 'application/x-protobuf');
      assert.equal(r.resource['service.name'], 'mesh-test');
      assert.equal(r.resource['telemetry.sdk.name'], 'opentelemetry');
      assert.equal(r.scope, 'isomesh');
    }
    assert.ok(requests.length >= 1 && requests.every((p) => p === '/v1/traces'), 'the connection probe of telemetry.test.ts sees exports');
    const spans = c.spans();
    assert.equal(spans.length, 4, 'two request spans and two plugin spans; the unsampled request has none');

    const server = spans.find((s) => hex(s.spanId) === continued.spanId);
    assert.ok(server, 'the request span has the span id the upstream saw as its parent');
    assert.equal(hex(server.traceId), TID);
    assert.equal(hex(server.parentSpanId), PID);
    assert.equal(server.traceState, 'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE');
    assert.equal(server.kind, 2, 'SPAN_KIND_SERVER');
    assert.equal(server.name, 'GET reviews');
    assert.equal(nanos(server.startTimeUnixNano), msToNanos(rec.startMs));
    assert.equal(nanos(server.endTimeUnixNano), msToNanos(rec.startMs + rec.durationMs));
    assert.equal(server.status?.code ?? 0, 0, 'a 200 leaves the status unset');
    assert.deepEqual(attrs(server.attributes), {
      'http.request.method': 'GET',
      'url.scheme': 'http',
      'url.path': '/reviews/1',
      'url.query': 'lang=en',
      'server.address': 'reviews.shop',
      'server.port': 8080,
      'network.protocol.version': '1.1',
      'client.address': '127.0.0.2',
      'user_agent.original': 'curl/8.5.0',
      'http.request.body.size': 0,
      'http.response.body.size': 512,
      'http.response.status_code': 200,
      'isomesh.tenant': 'shop',
      'isomesh.route': 'reviews',
      'isomesh.service': 'reviews',
      'isomesh.endpoint': '127.0.0.1:9080',
      'isomesh.request_id': 'req-1',
      'isomesh.retries': 0,
      'isomesh.plugin_ms': 1.25,
      'isomesh.upstream_ms': 3.25,
    });

    const plugins = spans.filter((s) => hex(s.parentSpanId) === continued.spanId);
    assert.deepEqual(plugins.map((s) => s.name).sort(), ['auth onRequest', 'headers onResponse']);
    for (const p of plugins) {
      const call = rec.pluginCalls!.find((x) => `${x.plugin} ${x.phase}` === p.name)!;
      assert.equal(hex(p.traceId), TID);
      assert.match(hex(p.spanId), /^[0-9a-f]{16}$/);
      assert.notEqual(hex(p.spanId), continued.spanId);
      assert.equal(p.kind, 1, 'SPAN_KIND_INTERNAL');
      assert.equal(nanos(p.startTimeUnixNano), msToNanos(call.startMs));
      assert.equal(nanos(p.endTimeUnixNano), msToNanos(call.startMs + call.durationMs));
      const a = attrs(p.attributes);
      assert.deepEqual([a['isomesh.tenant'], a['isomesh.plugin'], a['isomesh.plugin.version'], a['isomesh.plugin.phase'], a['isomesh.plugin.outcome']],
        ['shop', call.plugin, call.version, call.phase, call.outcome]);
    }
    const timedOut = plugins.find((p) => p.name === 'headers onResponse')!;
    assert.deepEqual([timedOut.status?.code, timedOut.status?.message], [2, 'ISOMESH_ERR_PLUGIN_TIMEOUT']);
    assert.equal(attrs(timedOut.attributes)['error.type'], 'ISOMESH_ERR_PLUGIN_TIMEOUT');
    assert.equal(plugins.find((p) => p.name === 'auth onRequest')!.status?.code ?? 0, 0);

    const rootSpan = spans.find((s) => hex(s.spanId) === started.spanId);
    assert.ok(rootSpan);
    assert.equal(hex(rootSpan.traceId), started.traceId, 'a started trace is exported under the trace id sent upstream');
    assert.equal(rootSpan.parentSpanId.length, 0);
    assert.equal(rootSpan.name, 'HTTP reviews', 'an unknown method is named HTTP');
    assert.deepEqual([rootSpan.status?.code, rootSpan.status?.message], [2, 'ISOMESH_ERR_PROXY_NO_ENDPOINT']);
    const ra = attrs(rootSpan.attributes);
    assert.deepEqual([ra['http.request.method'], ra['http.request.method_original'], ra['error.type'], ra['isomesh.error']],
      ['_OTHER', 'PURGE', 'ISOMESH_ERR_PROXY_NO_ENDPOINT', 'ISOMESH_ERR_PROXY_NO_ENDPOINT']);
    assert.deepEqual([ra['server.address'], ra['server.port'], ra['url.query'], ra['isomesh.endpoint']], ['::1', undefined, undefined, undefined]);

    const metrics = await registry.getSingleMetricAsString('isomesh_trace_spans_total');
    assert.match(metrics, /isomesh_trace_spans_total\{result="exported"\} 4/);
  } finally {
    dc.unsubscribe('http.client.request.start', onRequest);
    await t.shutdown();
    await c.close();
  }
});

test('gRPC requests carry rpc attributes; h2 is protocol version 2', async () => {
  const c = await collector();
  const t = Telemetry.fromEnv({ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: `${c.endpoint}/v1/traces`, OTEL_BSP_SCHEDULE_DELAY: '20' }, capturedLogger().logger);
  try {
    t.finish(exchangeRecord(t.trace(undefined, undefined), { protocol: 'h2', method: 'POST', grpcStatus: 4, status: 200, pluginCalls: undefined }), { enabled: false, sample: 1 });
    await t.shutdown();
    const [span] = c.spans();
    assert.ok(span);
    const a = attrs(span.attributes);
    assert.deepEqual([a['network.protocol.version'], a['rpc.system.name'], a['rpc.grpc.status_code']], ['2', 'grpc', 4]);
    assert.equal(c.received[0]!.resource['service.name'], 'isomesh', 'the default service name');
  } finally {
    await c.close();
  }
});

test('a collector refusing exports is logged at most once a minute and counted; finish() never throws', async () => {
  const c = await collector(400);
  const registry = new prom.Registry();
  const { logger, lines } = capturedLogger();
  const t = Telemetry.fromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: c.endpoint, OTEL_BSP_SCHEDULE_DELAY: '5', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '1' }, logger, { registry });
  try {
    for (let i = 0; i < 5; i++) {
      assert.doesNotThrow(() => t.finish(exchangeRecord(t.trace(undefined, undefined), { pluginCalls: undefined }), { enabled: false, sample: 1 }));
    }
    // The processor sends one span per batch, one batch at a time; wait (bounded) for all five answers.
    const failedCount = async (): Promise<number> => ((await registry.getSingleMetric('isomesh_trace_spans_total')!.get()).values.find((v) => v.labels.result === 'failed')?.value ?? 0);
    for (let i = 0; i < 250 && (await failedCount()) < 5; i++) await new Promise((r) => setTimeout(r, 20));
    await t.shutdown();
    assert.equal(c.spans().length, 5, 'each span reached the collector');
    const failures = lines.filter((l) => l.msg === 'trace export failed; spans lost (logged at most once a minute)');
    assert.equal(failures.length, 1);
    assert.match(await registry.getSingleMetricAsString('isomesh_trace_spans_total'), /result="failed"\} 5/);
  } finally {
    await c.close();
  }
});

test('the export queue is bounded: a request that does not fit is dropped whole, counted, logged once', async () => {
  const c = await collector(200, true);
  const registry = new prom.Registry();
  const { logger, lines } = capturedLogger();
  const t = Telemetry.fromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: c.endpoint, OTEL_BSP_MAX_QUEUE_SIZE: '4', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '4', OTEL_BSP_SCHEDULE_DELAY: '60000' }, logger, { registry });
  try {
    // 3 spans (request + 2 plugins), then 1: the queue holds 4, and the batch goes out (held by the collector)
    t.finish(exchangeRecord(t.trace(undefined, undefined)), { enabled: false, sample: 1 });
    t.finish(exchangeRecord(t.trace(undefined, undefined), { pluginCalls: undefined }), { enabled: false, sample: 1 });
    // nothing more fits until the collector answers
    for (let i = 0; i < 6; i++) t.finish(exchangeRecord(t.trace(undefined, undefined)), { enabled: false, sample: 1 });
    for (let i = 0; i < 50 && c.received.length === 0; i++) await new Promise((r) => setTimeout(r, 20));
    c.release();
    await t.shutdown();
    assert.equal(c.spans().length, 4);
    const drops = lines.filter((l) => l.msg === 'trace export queue full; spans dropped (logged at most once a minute)');
    assert.equal(drops.length, 1);
    assert.equal(drops[0]!.spans, 3);
    const m = await registry.getSingleMetricAsString('isomesh_trace_spans_total');
    assert.match(m, /result="dropped"\} 18/);
    assert.match(m, /result="exported"\} 4/);
  } finally {
    c.release();
    await c.close();
  }
});

test('shutdown waits a bounded time for a collector that never answers', async () => {
  const c = await collector(200, true);
  const { logger, lines } = capturedLogger();
  const t = Telemetry.fromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: c.endpoint, OTEL_BSP_SCHEDULE_DELAY: '60000' }, logger, { shutdownTimeoutMs: 300 });
  try {
    t.finish(exchangeRecord(t.trace(undefined, undefined)), { enabled: false, sample: 1 });
    await t.shutdown();
    assert.equal(lines.filter((l) => l.msg === 'trace export did not finish before shutdown; spans lost').length, 1);
    // a finish after shutdown exports nothing and does not throw
    t.finish(exchangeRecord(t.trace(undefined, undefined)), { enabled: false, sample: 1 });
  } finally {
    c.release();
    await c.close();
  }
});
