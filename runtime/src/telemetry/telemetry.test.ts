// Configuration from OTEL_*, the access log line and its sampling, and that nothing is exported (no
// connection at all) without an endpoint.
import assert from 'node:assert/strict';
import dc from 'node:diagnostics_channel';
import { test } from 'node:test';
import { IsomeshError } from '../errors.ts';
import { capturedLogger, exchangeRecord } from './fixtures.ts';
import { Telemetry, epochMs, telemetryConfigFromEnv } from './index.ts';

const PARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';

test('defaults: service isomesh, parent-based ratio 1, nothing exported without an endpoint', () => {
  const cfg = telemetryConfigFromEnv({});
  assert.equal(cfg.serviceName, undefined, 'resolved to "isomesh" unless OTEL_RESOURCE_ATTRIBUTES names one');
  assert.deepEqual(cfg.sampler, { root: 'traceidratio', parentBased: true, ratio: 1 });
  assert.equal(cfg.export, undefined);
  assert.equal(Telemetry.fromEnv({}, capturedLogger().logger).exporting, false);
});

test('endpoints: the generic one gets /v1/traces, the traces one is used as it is', () => {
  assert.equal(telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:4318' }).export?.url, 'http://127.0.0.1:4318/v1/traces');
  assert.equal(telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://c:4318/otlp/' }).export?.url, 'http://c:4318/otlp/v1/traces');
  assert.equal(
    telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:1', OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://b:2/custom' }).export?.url,
    'https://b:2/custom',
  );
  assert.equal(telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: '' }).export, undefined, 'empty counts as unset');
  assert.equal(telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:1', OTEL_SDK_DISABLED: 'true' }).export, undefined);
  assert.equal(telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:1', OTEL_TRACES_EXPORTER: 'none' }).export, undefined);
  const bsp = telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:1', OTEL_BSP_MAX_QUEUE_SIZE: '100', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '10', OTEL_BSP_SCHEDULE_DELAY: '0' }).export;
  assert.deepEqual([bsp?.maxQueueSize, bsp?.maxExportBatchSize, bsp?.scheduledDelayMillis, bsp?.exportTimeoutMillis], [100, 10, 0, 30_000]);
});

test('samplers and ratios from OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG', () => {
  assert.deepEqual(telemetryConfigFromEnv({ OTEL_TRACES_SAMPLER_ARG: '0.25' }).sampler, { root: 'traceidratio', parentBased: true, ratio: 0.25 });
  assert.deepEqual(telemetryConfigFromEnv({ OTEL_TRACES_SAMPLER: 'traceidratio', OTEL_TRACES_SAMPLER_ARG: '.5' }).sampler, { root: 'traceidratio', parentBased: false, ratio: 0.5 });
  assert.deepEqual(telemetryConfigFromEnv({ OTEL_TRACES_SAMPLER: 'parentbased_always_off' }).sampler, { root: 'always_off', parentBased: true, ratio: 1 });
  assert.deepEqual(telemetryConfigFromEnv({ OTEL_TRACES_SAMPLER: 'always_on', OTEL_TRACES_SAMPLER_ARG: 'ignored' }).sampler, { root: 'always_on', parentBased: false, ratio: 1 });
});

test('values isomesh cannot honour stop the start with a clear message', () => {
  const bad: Array<[Record<string, string>, RegExp]> = [
    [{ OTEL_TRACES_SAMPLER_ARG: '1.5' }, /OTEL_TRACES_SAMPLER_ARG must be a ratio from 0 to 1.*"1\.5"/],
    [{ OTEL_TRACES_SAMPLER_ARG: '0,25' }, /OTEL_TRACES_SAMPLER_ARG/],
    [{ OTEL_TRACES_SAMPLER_ARG: '-0' }, /OTEL_TRACES_SAMPLER_ARG/],
    [{ OTEL_TRACES_SAMPLER: 'jaeger_remote' }, /OTEL_TRACES_SAMPLER must be one of always_on, .*parentbased_traceidratio/],
    [{ OTEL_TRACES_EXPORTER: 'zipkin' }, /OTEL_TRACES_EXPORTER must be "otlp"/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'localhost:4318' }, /OTEL_EXPORTER_OTLP_ENDPOINT must be an http:\/\/ or https:\/\/ URL/],
    [{ OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'not a url' }, /OTEL_EXPORTER_OTLP_TRACES_ENDPOINT/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:1', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }, /OTEL_EXPORTER_OTLP_PROTOCOL must be "http\/protobuf"/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:1', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/json', OTEL_EXPORTER_OTLP_PROTOCOL: 'http/protobuf' }, /OTEL_EXPORTER_OTLP_TRACES_PROTOCOL/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:1', OTEL_BSP_MAX_QUEUE_SIZE: '0' }, /OTEL_BSP_MAX_QUEUE_SIZE must be a whole number ≥ 1/],
    [{ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:1', OTEL_BSP_MAX_QUEUE_SIZE: '10', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '20' }, /OTEL_BSP_MAX_EXPORT_BATCH_SIZE must be at most OTEL_BSP_MAX_QUEUE_SIZE \(10\)/],
  ];
  for (const [env, message] of bad) {
    assert.throws(() => Telemetry.fromEnv(env, capturedLogger().logger), (err: unknown) => {
      assert.ok(err instanceof IsomeshError);
      assert.equal(err.code, 'ISOMESH_ERR_API_VALIDATION');
      assert.match(err.message, message);
      return true;
    }, JSON.stringify(env));
  }
  // The traces-specific protocol wins over the generic one.
  assert.ok(telemetryConfigFromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: 'http://a:1', OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: 'http/protobuf', OTEL_EXPORTER_OTLP_PROTOCOL: 'grpc' }).export);
});

test('an access line has exactly the fields API.md lists, in order, with pino’s own keys', () => {
  const { logger, lines } = capturedLogger();
  const t = Telemetry.fromEnv({}, logger);
  const trace = t.trace(PARENT, undefined);
  t.finish(exchangeRecord(trace), { enabled: true, sample: 1 });
  assert.equal(lines.length, 1);
  const line = lines[0]!;
  const { level, time, svc, pid, ...fields } = line;
  assert.equal(level, 30);
  assert.equal(typeof time, 'number');
  assert.deepEqual([svc, pid], ['isomesh', process.pid]);
  assert.deepEqual(fields, {
    tenant: 'shop',
    route: 'reviews',
    service: 'reviews',
    endpoint: '127.0.0.1:9080',
    method: 'GET',
    path: '/reviews/1',
    protocol: 'http/1.1',
    status: 200,
    bytesIn: 0,
    bytesOut: 512,
    durationMs: 5.5,
    upstreamMs: 3.25,
    pluginMs: 1.25,
    retries: 0,
    traceId: '4bf92f3577b34da6a3ce929d0e0e4736',
    requestId: 'req-1',
    msg: 'access',
  });
  assert.deepEqual(Object.keys(fields).slice(0, -1), [
    'tenant', 'route', 'service', 'endpoint', 'method', 'path', 'protocol', 'status',
    'bytesIn', 'bytesOut', 'durationMs', 'upstreamMs', 'pluginMs', 'retries', 'traceId', 'requestId',
  ]);
});

test('access line: grpcStatus and error only when set; unreached stages are null; durations in µs', () => {
  const { logger, lines } = capturedLogger();
  const t = Telemetry.fromEnv({}, logger);
  const noRoute = exchangeRecord(t.trace(undefined, undefined), {
    route: undefined, service: undefined, endpoint: undefined, upstreamMs: undefined, pluginCalls: undefined,
    status: 404, error: 'ISOMESH_ERR_PROXY_NO_ROUTE', durationMs: 0.123456789, pluginMs: 0,
  });
  t.finish(noRoute, { enabled: true, sample: 1 });
  const grpc = exchangeRecord(t.trace(undefined, undefined), { protocol: 'h2', grpcStatus: 14, error: 'ISOMESH_ERR_PROXY_NO_ENDPOINT' });
  t.finish(grpc, { enabled: true, sample: 1 });
  const [a, b] = lines;
  assert.deepEqual([a!.route, a!.service, a!.endpoint, a!.upstreamMs], [null, null, null, null]);
  assert.equal(a!.error, 'ISOMESH_ERR_PROXY_NO_ROUTE');
  assert.equal(a!.durationMs, 0.123);
  assert.equal('grpcStatus' in a!, false);
  assert.equal(a!.traceId, noRoute.trace.traceId);
  assert.equal(b!.grpcStatus, 14);
  assert.equal(b!.protocol, 'h2');
  assert.deepEqual(Object.keys(b!).filter((k) => k === 'grpcStatus' || k === 'error'), ['grpcStatus', 'error']);
  // the query string (it may hold credentials) is not logged
  assert.equal(JSON.stringify(lines).includes('lang=en'), false);
});

test('access log: off, sampled at 0, sampled at 1, and a sample share within a wide tolerance', () => {
  const { logger, lines } = capturedLogger();
  const t = Telemetry.fromEnv({}, logger);
  const r = exchangeRecord(t.trace(undefined, undefined));
  for (let i = 0; i < 100; i++) t.finish(r, { enabled: false, sample: 1 });
  for (let i = 0; i < 100; i++) t.finish(r, { enabled: true, sample: 0 });
  assert.equal(lines.length, 0);
  for (let i = 0; i < 100; i++) t.finish(r, { enabled: true, sample: 1 });
  assert.equal(lines.length, 100);
  lines.length = 0;
  const n = 10_000;
  for (let i = 0; i < n; i++) t.finish(r, { enabled: true, sample: 0.3 });
  // Expected 3000, σ ≈ 46: ±500 is over 10σ.
  assert.ok(lines.length > 2500 && lines.length < 3500, `${lines.length} of ${n} logged at sample 0.3`);
});

test('access log sampling uses the injected random source (deterministic draws)', () => {
  const { logger, lines } = capturedLogger();
  const draws = [0.1, 0.5, 0.49, 0.9, 0];
  let i = 0;
  const t = Telemetry.fromEnv({}, logger, { random: () => draws[i++ % draws.length]! });
  const r = exchangeRecord(t.trace(undefined, undefined));
  for (let k = 0; k < draws.length; k++) t.finish({ ...r, requestId: `r${k}` }, { enabled: true, sample: 0.5 });
  assert.deepEqual(lines.map((l) => l.requestId), ['r0', 'r2', 'r4']);
});

test('access lines are written at info even when the daemon logs only warnings; silent stays silent', () => {
  const warn = capturedLogger('warn');
  const t = Telemetry.fromEnv({}, warn.logger);
  t.finish(exchangeRecord(t.trace(undefined, undefined)), { enabled: true, sample: 1 });
  warn.logger.info('not an access line');
  assert.deepEqual(warn.lines.map((l) => l.msg), ['access']);
  const silent = capturedLogger('silent');
  const s = Telemetry.fromEnv({}, silent.logger);
  s.finish(exchangeRecord(s.trace(undefined, undefined)), { enabled: true, sample: 1 });
  assert.equal(silent.lines.length, 0);
});

test('finish() never throws into the request path; the fault is logged', () => {
  const { logger, lines } = capturedLogger();
  const t = Telemetry.fromEnv({}, logger);
  const broken = { ...exchangeRecord(t.trace(undefined, undefined)), trace: undefined } as unknown as Parameters<Telemetry['finish']>[0];
  assert.doesNotThrow(() => t.finish(broken, { enabled: true, sample: 1 }));
  assert.equal(lines.filter((l) => l.msg === 'telemetry failed to record a request').length, 1);
});

test('without an endpoint nothing is sent: no SDK, no connection, for sampled requests', async () => {
  const sockets: unknown[] = [];
  const onSocket = (s: unknown): void => {
    sockets.push(s);
  };
  dc.subscribe('net.client.socket', onSocket);
  dc.subscribe('http.client.request.start', onSocket);
  try {
    for (const env of [{}, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9', OTEL_SDK_DISABLED: 'true' }, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:9', OTEL_TRACES_EXPORTER: 'none' }]) {
      const t = Telemetry.fromEnv(env, capturedLogger().logger);
      assert.equal(t.exporting, false);
      for (let i = 0; i < 50; i++) {
        const trace = t.trace(PARENT, undefined);
        assert.equal(trace.sampled, true);
        t.finish(exchangeRecord(trace), { enabled: false, sample: 1 });
      }
      await t.shutdown();
    }
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(sockets.length, 0);
  } finally {
    dc.unsubscribe('net.client.socket', onSocket);
    dc.unsubscribe('http.client.request.start', onSocket);
  }
});

test('epochMs: wall-clock epoch time with the monotonic clock’s resolution, ordered like it', () => {
  const a = performance.now();
  const b = a + 0.125;
  assert.ok(Math.abs(epochMs() - Date.now()) < 50, 'aligned with the wall clock');
  assert.ok(Math.abs(epochMs(b) - epochMs(a) - 0.125) < 0.001, 'sub-millisecond differences survive');
});
