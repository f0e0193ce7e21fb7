// Telemetry for the data planes: W3C trace context per request, the access log and OpenTelemetry
// spans over OTLP/HTTP protobuf (docs/telemetry.md). A data plane calls trace() when a request head
// arrives (cheap: no SDK objects) and finish() once when the request is over; everything else —
// log line, spans, export — happens from that one record, after the fact.

import type pino from 'pino';
import prom from 'prom-client';
import { telemetryConfigFromEnv, type TelemetryConfig } from './config.ts';
import { accessFields, type AccessLogSettings, type ExchangeRecord } from './record.ts';
import { createRequire } from 'node:module';
import type { SpanCounters, SpanPipeline } from './spans.ts';
import { Throttle } from './throttle.ts';
import { TraceContextFactory, type TraceContext } from './trace-context.ts';

export type { TraceContext, SamplerConfig, ParsedTraceparent } from './trace-context.ts';
export type { ExchangeRecord, PluginCallRecord, AccessLogSettings } from './record.ts';
export type { TelemetryConfig, ExportConfig } from './config.ts';
export { parseTraceparent, ratioSampled } from './trace-context.ts';
export { telemetryConfigFromEnv } from './config.ts';
export { epochMs } from './clock.ts';

export interface TelemetryOptions {
  /** Where isomesh_trace_spans_total is registered (when exporting). */
  registry?: prom.Registry;
  /** Access-log sampling draws (tests may pass a seeded one). */
  random?: () => number;
  /** Longest wait for the final flush in shutdown() (default 5000 ms). */
  shutdownTimeoutMs?: number;
}

function spanCounters(registry: prom.Registry | undefined): SpanCounters {
  if (!registry) return { exported() {}, failed() {}, dropped() {} };
  const name = 'isomesh_trace_spans_total';
  const counter = (registry.getSingleMetric(name) as prom.Counter<'result'> | undefined) ?? new prom.Counter({
    name,
    help: 'Spans by export result: exported (accepted by the collector), failed (export failed), dropped (export queue full).',
    labelNames: ['result'] as const,
    registers: [registry],
  });
  const exported = counter.labels('exported');
  const failed = counter.labels('failed');
  const dropped = counter.labels('dropped');
  return { exported: (n) => exported.inc(n), failed: (n) => failed.inc(n), dropped: (n) => dropped.inc(n) };
}

function loadSpans(): typeof import('./spans.ts') {
  return createRequire(import.meta.url)('./spans.ts') as typeof import('./spans.ts');
}

export class Telemetry {
  readonly #contexts: TraceContextFactory;
  readonly #access: pino.Logger;
  readonly #logger: pino.Logger;
  readonly #random: () => number;
  readonly #spans: SpanPipeline | undefined;
  readonly #shutdownTimeoutMs: number;
  readonly #faults = new Throttle(60_000);

  constructor(config: TelemetryConfig, logger: pino.Logger, options: TelemetryOptions = {}) {
    this.#logger = logger;
    this.#contexts = new TraceContextFactory(config.sampler);
    // Access lines are written at info whatever ISOMESH_LOG_LEVEL says (the tenant turned them on),
    // except when logging is off altogether.
    this.#access = logger.child({}, { level: logger.level === 'silent' ? 'silent' : 'info' });
    this.#random = options.random ?? Math.random;
    this.#shutdownTimeoutMs = options.shutdownTimeoutMs ?? 5000;
    // The OpenTelemetry SDK (~9 MiB per thread) is loaded only when spans are exported.
    this.#spans = config.export
      ? new (loadSpans().SpanPipeline)(config.export, config.serviceName, logger, spanCounters(options.registry))
      : undefined;
  }

  /** From the OTEL_* variables (docs/telemetry.md); throws ISOMESH_ERR_API_VALIDATION on a value it cannot honour. */
  static fromEnv(env: NodeJS.ProcessEnv, logger: pino.Logger, options: TelemetryOptions = {}): Telemetry {
    return new Telemetry(telemetryConfigFromEnv(env), logger, options);
  }

  /** True when spans are exported (an OTLP endpoint is set). */
  get exporting(): boolean {
    return this.#spans !== undefined;
  }

  /**
   * The request's trace context: the incoming traceparent continued (a valid one; an invalid one is
   * ignored and a new trace starts), or a new trace. Send `traceparent` (and `tracestate`) upstream.
   */
  trace(traceparent: string | undefined, tracestate: string | undefined): TraceContext {
    return this.#contexts.trace(traceparent, tracestate);
  }

  /** A fresh request id (UUID layout, random), for requests that come without a usable x-request-id. */
  requestId(): string {
    return this.#contexts.requestId();
  }

  /** One finished request: its access line (when the tenant's settings and sample pick it) and spans (when exporting and sampled). */
  finish(record: ExchangeRecord, accessLog: AccessLogSettings): void {
    try {
      const sample = accessLog.sample;
      if (accessLog.enabled && (sample >= 1 || (sample > 0 && this.#random() < sample))) {
        this.#access.info(accessFields(record), 'access');
      }
      if (this.#spans !== undefined && record.trace.sampled) this.#spans.record(record);
    } catch (err) {
      // A bad record (or an SDK fault) must never reach the request path; say so, once a minute.
      this.#faults.run(1, (count) => this.#logger.error({ err, count, tenant: record.tenant }, 'telemetry failed to record a request'));
    }
  }

  /** Flushes queued spans (bounded wait); later finish() calls export nothing. Safe to call twice. */
  async shutdown(): Promise<void> {
    await this.#spans?.shutdown(this.#shutdownTimeoutMs);
  }
}
