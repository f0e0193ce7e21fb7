// Shared by the telemetry tests and bench/telemetry.ts: a pino logger whose lines are kept, and an
// ExchangeRecord filled like the proxy fills one.

import pino from 'pino';
import type { ExchangeRecord, PluginCallRecord } from './record.ts';
import type { TraceContext } from './trace-context.ts';

export interface CapturedLogger {
  logger: pino.Logger;
  lines: Array<Record<string, unknown>>;
}

export function capturedLogger(level: pino.LevelWithSilent = 'info'): CapturedLogger {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level, base: { svc: 'isomesh', pid: process.pid } }, {
    write(s: string) {
      for (const l of s.split('\n')) if (l) lines.push(JSON.parse(l) as Record<string, unknown>);
    },
  });
  return { logger, lines };
}

export function exchangeRecord(trace: TraceContext, over: Partial<ExchangeRecord> = {}): ExchangeRecord {
  const startMs = 1_767_225_600_000.25; // 2026-01-01T00:00:00.000250Z: fractions are exact in binary
  const calls: PluginCallRecord[] = [
    { plugin: 'auth', version: 3, phase: 'onRequest', startMs: startMs + 0.5, durationMs: 0.75, outcome: 'continue' },
    { plugin: 'headers', version: 1, phase: 'onResponse', startMs: startMs + 4, durationMs: 0.5, outcome: 'continue' },
  ];
  return {
    tenant: 'shop',
    route: 'reviews',
    service: 'reviews',
    endpoint: '127.0.0.1:9080',
    method: 'GET',
    path: '/reviews/1',
    query: 'lang=en',
    authority: 'reviews.shop:8080',
    protocol: 'http/1.1',
    status: 200,
    bytesIn: 0,
    bytesOut: 512,
    startMs,
    durationMs: 5.5,
    upstreamMs: 3.25,
    pluginMs: 1.25,
    retries: 0,
    requestId: 'req-1',
    remoteAddress: '127.0.0.2',
    userAgent: 'curl/8.5.0',
    trace,
    pluginCalls: calls,
    ...over,
  };
}
