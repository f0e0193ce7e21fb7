// Telemetry settings from the standard OpenTelemetry variables
// (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/).
// An empty value counts as unset, as the specification says. A value isomesh cannot honour stops the
// start with ISOMESH_ERR_API_VALIDATION (like every ISOMESH_* variable), rather than the
// specification's "warn and use the default": a mistyped ratio silently becoming 1 would trace
// every request of the node.

import { isomeshError } from '../errors.ts';
import type { SamplerConfig } from './trace-context.ts';

export interface ExportConfig {
  /** Where spans are POSTed (the full traces URL). */
  url: string;
  /** BatchSpanProcessor settings (OTEL_BSP_*). maxQueueSize bounds spans handed over and not yet exported. */
  maxQueueSize: number;
  maxExportBatchSize: number;
  scheduledDelayMillis: number;
  exportTimeoutMillis: number;
  /** OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT (Infinity = none). */
  attributeValueLengthLimit: number;
}

export interface TelemetryConfig {
  /** OTEL_SERVICE_NAME; when unset, OTEL_RESOURCE_ATTRIBUTES' service.name, else "isomesh". */
  serviceName: string | undefined;
  sampler: SamplerConfig;
  /** undefined: nothing is exported. */
  export: ExportConfig | undefined;
}

type Env = NodeJS.ProcessEnv;

function get(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === undefined || v === '' ? undefined : v;
}

function invalid(name: string, value: string, expected: string): never {
  throw isomeshError('ISOMESH_ERR_API_VALIDATION', `${name} must be ${expected} (got "${value}")`);
}

function wholeNumber(env: Env, name: string, fallback: number, min: number): number {
  const raw = get(env, name);
  if (raw === undefined) return fallback;
  const v = Number(raw);
  if (!/^\d{1,9}$/.test(raw) || v < min) invalid(name, raw, `a whole number ≥ ${min}`);
  return v;
}

function httpUrl(name: string, raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    invalid(name, raw, 'an http:// or https:// URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') invalid(name, raw, 'an http:// or https:// URL');
  return url;
}

/** OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is used as it is; OTEL_EXPORTER_OTLP_ENDPOINT is a base that gets "v1/traces". */
export function tracesUrl(env: Env): string | undefined {
  const specific = get(env, 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT');
  if (specific !== undefined) return httpUrl('OTEL_EXPORTER_OTLP_TRACES_ENDPOINT', specific).href;
  const base = get(env, 'OTEL_EXPORTER_OTLP_ENDPOINT');
  if (base === undefined) return undefined;
  const url = httpUrl('OTEL_EXPORTER_OTLP_ENDPOINT', base);
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  url.pathname += 'v1/traces';
  return url.href;
}

const SAMPLERS: Record<string, Omit<SamplerConfig, 'ratio'>> = {
  always_on: { root: 'always_on', parentBased: false },
  always_off: { root: 'always_off', parentBased: false },
  traceidratio: { root: 'traceidratio', parentBased: false },
  parentbased_always_on: { root: 'always_on', parentBased: true },
  parentbased_always_off: { root: 'always_off', parentBased: true },
  parentbased_traceidratio: { root: 'traceidratio', parentBased: true },
};

/** isomesh's default is parentbased_traceidratio with ratio 1 (API.md: OTEL_TRACES_SAMPLER_ARG is the ratio). */
export function samplerFromEnv(env: Env): SamplerConfig {
  const name = get(env, 'OTEL_TRACES_SAMPLER') ?? 'parentbased_traceidratio';
  const kind = SAMPLERS[name];
  if (!kind) invalid('OTEL_TRACES_SAMPLER', name, `one of ${Object.keys(SAMPLERS).join(', ')}`);
  const rawRatio = get(env, 'OTEL_TRACES_SAMPLER_ARG');
  let ratio = 1;
  if (rawRatio !== undefined && kind.root === 'traceidratio') {
    ratio = Number(rawRatio);
    if (!/^(?:\d+\.?\d*|\.\d+)$/.test(rawRatio) || !(ratio >= 0 && ratio <= 1)) {
      invalid('OTEL_TRACES_SAMPLER_ARG', rawRatio, 'a ratio from 0 to 1, e.g. 0.25');
    }
  }
  return { ...kind, ratio };
}

export function telemetryConfigFromEnv(env: Env): TelemetryConfig {
  const serviceName = get(env, 'OTEL_SERVICE_NAME');
  const sampler = samplerFromEnv(env);
  const disabled = get(env, 'OTEL_SDK_DISABLED')?.toLowerCase() === 'true';
  const exporter = get(env, 'OTEL_TRACES_EXPORTER') ?? 'otlp';
  if (exporter !== 'otlp' && exporter !== 'none') {
    invalid('OTEL_TRACES_EXPORTER', exporter, '"otlp" (OTLP/HTTP protobuf) or "none"');
  }
  const url = tracesUrl(env);
  if (disabled || exporter === 'none' || url === undefined) return { serviceName, sampler, export: undefined };
  for (const name of ['OTEL_EXPORTER_OTLP_TRACES_PROTOCOL', 'OTEL_EXPORTER_OTLP_PROTOCOL']) {
    const protocol = get(env, name);
    if (protocol !== undefined && protocol !== 'http/protobuf') invalid(name, protocol, '"http/protobuf" (isomesh exports OTLP/HTTP protobuf only)');
    if (protocol !== undefined) break; // the traces-specific one wins
  }
  const maxQueueSize = wholeNumber(env, 'OTEL_BSP_MAX_QUEUE_SIZE', 2048, 1);
  const maxExportBatchSize = wholeNumber(env, 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE', 512, 1);
  if (maxExportBatchSize > maxQueueSize) {
    invalid('OTEL_BSP_MAX_EXPORT_BATCH_SIZE', String(maxExportBatchSize), `at most OTEL_BSP_MAX_QUEUE_SIZE (${maxQueueSize})`);
  }
  return {
    serviceName,
    sampler,
    export: {
      url,
      maxQueueSize,
      maxExportBatchSize,
      scheduledDelayMillis: wholeNumber(env, 'OTEL_BSP_SCHEDULE_DELAY', 5000, 0),
      exportTimeoutMillis: wholeNumber(env, 'OTEL_BSP_EXPORT_TIMEOUT', 30_000, 1),
      attributeValueLengthLimit: wholeNumber(env, 'OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT', Infinity, 1),
    },
  };
}
