// What a data plane reports about one finished request: the access log line and the spans are both
// made from it, after the fact, so the request path carries only this plain object.

import type { TraceContext } from './trace-context.ts';

export interface PluginCallRecord {
  plugin: string;
  version: number;
  phase: 'onRequest' | 'onResponse';
  /** Epoch milliseconds (fractions allowed). */
  startMs: number;
  durationMs: number;
  /** "continue", "respond", "route", … or the isomesh error code when the call failed (then the span is an error). */
  outcome: string;
}

export interface ExchangeRecord {
  tenant: string;
  route?: string | undefined;
  service?: string | undefined;
  /** The upstream endpoint of the last attempt, "ip:port" ("[v6]:port"). */
  endpoint?: string | undefined;
  method: string;
  /** Path without the query, as routed (after normalization). */
  path: string;
  /** Query without "?" ("" or undefined when absent). */
  query?: string | undefined;
  /** Host / :authority as the client sent it. */
  authority: string;
  protocol: 'http/1.0' | 'http/1.1' | 'h2';
  /** Status sent to the client; 0 when the client went away before a response head. */
  status: number;
  grpcStatus?: number | undefined;
  /** The isomesh error code, when isomesh answered or cut the exchange with one. */
  error?: string | undefined;
  /** Request and response body bytes (headers not counted). */
  bytesIn: number;
  bytesOut: number;
  /** Epoch milliseconds when the request head was read. */
  startMs: number;
  /** Until the response ended (or the exchange was cut). */
  durationMs: number;
  /** From the first upstream request to its response head (all attempts); undefined when never sent upstream. */
  upstreamMs?: number | undefined;
  /** Time spent in plugin calls (both phases). */
  pluginMs: number;
  /** Attempts after the first. */
  retries: number;
  requestId: string;
  remoteAddress: string;
  userAgent?: string | undefined;
  trace: TraceContext;
  pluginCalls?: PluginCallRecord[] | undefined;
}

export interface AccessLogSettings {
  enabled: boolean;
  /** 0..1: the share of requests logged. */
  sample: number;
}

/** Three decimals: microseconds are enough and keep lines short. */
export function ms(v: number): number {
  return Math.round(v * 1000) / 1000;
}

/**
 * The access log line's fields (API.md "Telemetry"), in the documented order. Fields the request never
 * reached (no route, no upstream) are null, so every line has the same keys; grpcStatus and error
 * appear only when set.
 */
export function accessFields(r: ExchangeRecord): Record<string, unknown> {
  const line: Record<string, unknown> = {
    tenant: r.tenant,
    route: r.route ?? null,
    service: r.service ?? null,
    endpoint: r.endpoint ?? null,
    method: r.method,
    path: r.path,
    protocol: r.protocol,
    status: r.status,
  };
  if (r.grpcStatus !== undefined) line.grpcStatus = r.grpcStatus;
  line.bytesIn = r.bytesIn;
  line.bytesOut = r.bytesOut;
  line.durationMs = ms(r.durationMs);
  line.upstreamMs = r.upstreamMs === undefined ? null : ms(r.upstreamMs);
  line.pluginMs = ms(r.pluginMs);
  line.retries = r.retries;
  if (r.error !== undefined) line.error = r.error;
  line.traceId = r.trace.traceId;
  line.requestId = r.requestId;
  return line;
}
