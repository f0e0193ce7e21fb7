// Spans over OTLP/HTTP protobuf with OpenTelemetry's own SDK: TracerProvider → BatchSpanProcessor →
// OTLPTraceExporter. Spans are made after the request finished, from its ExchangeRecord, with the
// recorded start and end times; the ids come from the record (PresetIdGenerator), so the exported
// request span has the id the upstream saw as its parent.
//
// The queue is bounded before the SDK: spans handed to the processor and not yet through the exporter
// are counted, and a request whose spans would pass maxQueueSize is dropped whole (no orphaned plugin
// spans) before any SDK object is made. Nothing here throws into the caller or blocks it.

import fs from 'node:fs';
import {
  DiagLogLevel,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  TraceFlags,
  createTraceState,
  diag,
  trace as otelTrace,
  type Attributes,
  type Context,
  type Tracer,
} from '@opentelemetry/api';
import { ExportResultCode, setGlobalErrorHandler, type ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { defaultResource, resourceAttributesEnvDetector, resourceFromAttributes, detectResources } from '@opentelemetry/resources';
import { AlwaysOnSampler, BatchSpanProcessor, TracerProvider, type IdGenerator, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace';
import {
  ATTR_CLIENT_ADDRESS,
  ATTR_ERROR_TYPE,
  ATTR_HTTP_REQUEST_METHOD,
  ATTR_HTTP_REQUEST_METHOD_ORIGINAL,
  ATTR_HTTP_RESPONSE_STATUS_CODE,
  ATTR_NETWORK_PROTOCOL_VERSION,
  ATTR_SERVER_ADDRESS,
  ATTR_SERVER_PORT,
  ATTR_SERVICE_NAME,
  ATTR_SERVICE_VERSION,
  ATTR_URL_PATH,
  ATTR_URL_QUERY,
  ATTR_URL_SCHEME,
  ATTR_USER_AGENT_ORIGINAL,
} from '@opentelemetry/semantic-conventions';
import type pino from 'pino';
import type { ExportConfig } from './config.ts';
import type { ExchangeRecord, PluginCallRecord } from './record.ts';
import { IdPool } from './trace-context.ts';
import { Throttle } from './throttle.ts';

// Incubating semantic conventions are copied, as the semantic-conventions package asks.
const ATTR_HTTP_REQUEST_BODY_SIZE = 'http.request.body.size';
const ATTR_HTTP_RESPONSE_BODY_SIZE = 'http.response.body.size';
const ATTR_RPC_SYSTEM_NAME = 'rpc.system.name';
const ATTR_RPC_GRPC_STATUS_CODE = 'rpc.grpc.status_code';

const KNOWN_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE', 'PATCH']);
const PROTOCOL_VERSION = { 'http/1.0': '1.0', 'http/1.1': '1.1', h2: '2' } as const;

export interface SpanCounters {
  exported(n: number): void;
  failed(n: number): void;
  dropped(n: number): void;
}

/** Hands the SDK the ids the request already uses; random ones (from the pool) otherwise. */
class PresetIdGenerator implements IdGenerator {
  readonly #pool = new IdPool();
  traceId: string | undefined;
  spanId: string | undefined;

  generateTraceId(): string {
    const id = this.traceId ?? this.#pool.traceId();
    this.traceId = undefined;
    return id;
  }

  generateSpanId(): string {
    const id = this.spanId ?? this.#pool.spanId();
    this.spanId = undefined;
    return id;
  }
}

/** Counts spans between the processor and the collector's answer; reports each batch's result. */
class CountingExporter implements SpanExporter {
  readonly #inner: SpanExporter;
  readonly #onResult: (count: number, result: ExportResult) => void;
  pending = 0;

  constructor(inner: SpanExporter, onResult: (count: number, result: ExportResult) => void) {
    this.#inner = inner;
    this.#onResult = onResult;
  }

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    let settled = false;
    const finish = (result: ExportResult): void => {
      if (settled) return;
      settled = true;
      this.pending -= spans.length;
      this.#onResult(spans.length, result);
      done(result);
    };
    // The processor exports a full batch from inside span.end(), i.e. inside some request's finish();
    // protobuf-encoding 512 spans there would bill that request for milliseconds. Run it on its own turn.
    setImmediate(() => {
      try {
        this.#inner.export(spans, finish);
      } catch (err) {
        finish({ code: ExportResultCode.FAILED, error: err as Error });
      }
    });
  }

  shutdown(): Promise<void> {
    return this.#inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.#inner.forceFlush?.() ?? Promise.resolve();
  }
}

function packageVersion(): string | undefined {
  try {
    const pkg = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: unknown };
    return typeof pkg.version === 'string' ? pkg.version : undefined;
  } catch {
    return undefined;
  }
}

/** "host", "host:port", "[v6]" or "[v6]:port" → server.address / server.port. */
function splitAuthority(authority: string): [string, number | undefined] {
  const close = authority.startsWith('[') ? authority.indexOf(']') : -1;
  const colon = authority.lastIndexOf(':');
  if (colon > close && colon > 0 && (close >= 0 || authority.indexOf(':') === colon)) {
    const port = Number(authority.slice(colon + 1));
    const host = authority.slice(close >= 0 ? 1 : 0, close >= 0 ? close : colon);
    return [host, Number.isInteger(port) && port > 0 && port < 65536 ? port : undefined];
  }
  return [close > 0 ? authority.slice(1, close) : authority, undefined];
}

export function requestAttributes(r: ExchangeRecord): Attributes {
  const known = KNOWN_METHODS.has(r.method);
  const [host, port] = splitAuthority(r.authority);
  const a: Attributes = {
    [ATTR_HTTP_REQUEST_METHOD]: known ? r.method : '_OTHER',
    [ATTR_URL_SCHEME]: 'http',
    [ATTR_URL_PATH]: r.path,
    [ATTR_SERVER_ADDRESS]: host,
    [ATTR_NETWORK_PROTOCOL_VERSION]: PROTOCOL_VERSION[r.protocol],
    [ATTR_CLIENT_ADDRESS]: r.remoteAddress,
    [ATTR_HTTP_REQUEST_BODY_SIZE]: r.bytesIn,
    [ATTR_HTTP_RESPONSE_BODY_SIZE]: r.bytesOut,
    'isomesh.tenant': r.tenant,
    'isomesh.request_id': r.requestId,
    'isomesh.retries': r.retries,
    'isomesh.plugin_ms': r.pluginMs,
  };
  if (!known) a[ATTR_HTTP_REQUEST_METHOD_ORIGINAL] = r.method;
  if (r.query) a[ATTR_URL_QUERY] = r.query;
  if (port !== undefined) a[ATTR_SERVER_PORT] = port;
  if (r.status > 0) a[ATTR_HTTP_RESPONSE_STATUS_CODE] = r.status;
  if (r.userAgent !== undefined) a[ATTR_USER_AGENT_ORIGINAL] = r.userAgent;
  if (r.route !== undefined) a['isomesh.route'] = r.route;
  if (r.service !== undefined) a['isomesh.service'] = r.service;
  if (r.endpoint !== undefined) a['isomesh.endpoint'] = r.endpoint;
  if (r.upstreamMs !== undefined) a['isomesh.upstream_ms'] = r.upstreamMs;
  if (r.error !== undefined) a['isomesh.error'] = r.error;
  if (r.grpcStatus !== undefined) {
    a[ATTR_RPC_SYSTEM_NAME] = 'grpc';
    a[ATTR_RPC_GRPC_STATUS_CODE] = r.grpcStatus;
  }
  // A server span is an error for 5xx or no response at all (4xx is the client's); error.type is then
  // the isomesh code when there is one, else the status (semantic conventions, "error.type").
  if (r.status >= 500 || r.status === 0) a[ATTR_ERROR_TYPE] = r.error ?? (r.status === 0 ? 'aborted' : String(r.status));
  return a;
}

function pluginAttributes(tenant: string, c: PluginCallRecord): Attributes {
  const a: Attributes = {
    'isomesh.tenant': tenant,
    'isomesh.plugin': c.plugin,
    'isomesh.plugin.version': c.version,
    'isomesh.plugin.phase': c.phase,
    'isomesh.plugin.outcome': c.outcome,
  };
  if (c.outcome.startsWith('ISOMESH_ERR_')) a[ATTR_ERROR_TYPE] = c.outcome;
  return a;
}

export class SpanPipeline {
  readonly #provider: TracerProvider;
  readonly #tracer: Tracer;
  readonly #ids = new PresetIdGenerator();
  readonly #exporter: CountingExporter;
  readonly #maxQueue: number;
  readonly #counters: SpanCounters;
  readonly #logger: pino.Logger;
  readonly #dropLog = new Throttle(60_000);
  readonly #failLog = new Throttle(60_000);
  #closed = false;

  constructor(cfg: ExportConfig, serviceName: string | undefined, logger: pino.Logger, counters: SpanCounters) {
    this.#logger = logger;
    this.#counters = counters;
    this.#maxQueue = cfg.maxQueueSize;
    routeDiagnostics(logger);
    this.#exporter = new CountingExporter(new OTLPTraceExporter({ url: cfg.url }), (count, result) => this.#exported(count, result));
    const version = packageVersion();
    // service.name: OTEL_SERVICE_NAME, else OTEL_RESOURCE_ATTRIBUTES' service.name, else "isomesh".
    let resource = defaultResource()
      .merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: 'isomesh', ...(version ? { [ATTR_SERVICE_VERSION]: version } : {}) }))
      .merge(detectResources({ detectors: [resourceAttributesEnvDetector] }));
    if (serviceName !== undefined) resource = resource.merge(resourceFromAttributes({ [ATTR_SERVICE_NAME]: serviceName }));
    this.#provider = new TracerProvider({
      resource,
      idGenerator: this.#ids,
      // Sampling was decided per request by trace(); a span made here is one to export.
      sampler: new AlwaysOnSampler(),
      spanLimits: { attributeValueLengthLimit: cfg.attributeValueLengthLimit },
      spanProcessors: [
        new BatchSpanProcessor({
          exporter: this.#exporter,
          maxQueueSize: cfg.maxQueueSize,
          maxExportBatchSize: cfg.maxExportBatchSize,
          scheduledDelayMillis: cfg.scheduledDelayMillis,
          exportTimeoutMillis: cfg.exportTimeoutMillis,
        }),
      ],
    });
    this.#tracer = this.#provider.getTracer('isomesh', version);
  }

  #exported(count: number, result: ExportResult): void {
    if (result.code === ExportResultCode.SUCCESS) {
      this.#counters.exported(count);
      return;
    }
    this.#counters.failed(count);
    this.#failLog.run(count, (spans, since) => {
      this.#logger.warn({ err: result.error, spans, sinceMs: since }, 'trace export failed; spans lost (logged at most once a minute)');
    });
  }

  #drop(count: number): void {
    this.#counters.dropped(count);
    this.#dropLog.run(count, (spans, since) => {
      this.#logger.warn({ spans, sinceMs: since, maxQueueSize: this.#maxQueue }, 'trace export queue full; spans dropped (logged at most once a minute)');
    });
  }

  /** The request span and one child per plugin call, for a sampled request. */
  record(r: ExchangeRecord): void {
    if (this.#closed) return;
    const calls = r.pluginCalls;
    const count = 1 + (calls ? calls.length : 0);
    if (this.#exporter.pending + count > this.#maxQueue) {
      this.#drop(count);
      return;
    }
    const t = r.trace;
    let parent: Context = ROOT_CONTEXT;
    if (t.parentSpanId !== undefined) {
      parent = otelTrace.setSpanContext(ROOT_CONTEXT, {
        traceId: t.traceId,
        spanId: t.parentSpanId,
        traceFlags: TraceFlags.SAMPLED,
        isRemote: true,
        ...(t.tracestate !== undefined ? { traceState: createTraceState(t.tracestate) } : {}),
      });
    } else {
      this.#ids.traceId = t.traceId;
    }
    this.#ids.spanId = t.spanId;
    const method = KNOWN_METHODS.has(r.method) ? r.method : 'HTTP';
    // Attributes are set after the start: startSpan's `attributes` option validates them twice and
    // costs about three times as much (measured with sdk-trace 3.1: 9–12 µs against 3–4 µs for 20).
    let span;
    try {
      span = this.#tracer.startSpan(r.route !== undefined ? `${method} ${r.route}` : method, { kind: SpanKind.SERVER, startTime: r.startMs }, parent);
    } finally {
      this.#ids.traceId = this.#ids.spanId = undefined; // never left for the next span
    }
    span.setAttributes(requestAttributes(r));
    if (r.status >= 500 || r.status === 0) span.setStatus({ code: SpanStatusCode.ERROR, ...(r.error !== undefined ? { message: r.error } : {}) });
    if (calls) {
      const inRequest = otelTrace.setSpan(ROOT_CONTEXT, span);
      for (const c of calls) {
        const child = this.#tracer.startSpan(`${c.plugin} ${c.phase}`, { kind: SpanKind.INTERNAL, startTime: c.startMs }, inRequest);
        child.setAttributes(pluginAttributes(r.tenant, c));
        if (c.outcome.startsWith('ISOMESH_ERR_')) child.setStatus({ code: SpanStatusCode.ERROR, message: c.outcome });
        this.#exporter.pending++;
        child.end(c.startMs + c.durationMs);
      }
    }
    this.#exporter.pending++;
    span.end(r.startMs + r.durationMs);
  }

  /** Flushes what is queued, waiting at most timeoutMs (the collector may be gone). */
  async shutdown(timeoutMs: number): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), timeoutMs);
    });
    try {
      const outcome = await Promise.race([this.#provider.shutdown().then(() => 'done' as const), late]);
      if (outcome === 'late') this.#logger.warn({ spans: this.#exporter.pending, timeoutMs }, 'trace export did not finish before shutdown; spans lost');
    } catch (err) {
      this.#logger.warn({ err }, 'trace export failed at shutdown');
    } finally {
      clearTimeout(timer);
    }
  }
}

let diagRouted = false;

/**
 * The SDK reports configuration problems (bad OTEL_EXPORTER_OTLP_HEADERS, unreadable certificates)
 * through `diag`, and failed batches through its global error handler. Failed batches are already
 * logged and counted by CountingExporter, so the handler writes them only at debug; diag warnings and
 * errors go to the log, at most one line a minute. Both are process-wide: the first Telemetry sets them.
 */
function routeDiagnostics(logger: pino.Logger): void {
  if (diagRouted) return;
  diagRouted = true;
  const throttle = new Throttle(60_000);
  const log = (level: 'warn' | 'error') => (message: string, ...args: unknown[]) => {
    throttle.run(1, (count) => logger[level]({ component: 'opentelemetry', args: args.length ? args.map(String) : undefined, suppressed: count - 1 }, message));
  };
  const noop = (): void => {};
  diag.setLogger({ error: log('error'), warn: log('warn'), info: noop, debug: noop, verbose: noop }, { logLevel: DiagLogLevel.WARN, suppressOverrideMessage: true });
  setGlobalErrorHandler((err) => logger.debug({ err, component: 'opentelemetry' }, 'opentelemetry SDK error'));
}
