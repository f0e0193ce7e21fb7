// The wire between a host and the guest runtime: one JSON string in, one JSON string out per hook
// call. Only strings cross the isolate boundary, never references (isolated-vm's security guidance).
// The host re-validates every result: guest code may have tampered with anything in its isolate.

import type { ResponseHeaderOp } from '../types.ts';

export type WireHeaders = Array<[string, string]>;

/**
 * Headers as the chain runner passes them between the host and the plugin contexts: names and
 * values joined by NUL ("name\0value\0name\0value"; "" for none). Field names are tokens and
 * field values exclude control characters (the HTTP parsers and every check here refuse them), so
 * NUL cannot occur inside either; a split is all it takes to read them, a join to write them.
 */
export const FLAT_SEP = '\u0000';
/** Separates a compact result's JSON from its flat headers (JSON text holds no raw control character). */
export const RESULT_SEP = '\u0001';

export function flattenHeaders(list: ReadonlyArray<readonly [string, string]>): string {
  let out = '';
  for (let i = 0; i < list.length; i++) {
    const pair = list[i] as readonly [string, string];
    out += i === 0 ? `${pair[0]}\u0000${pair[1]}` : `\u0000${pair[0]}\u0000${pair[1]}`;
  }
  return out;
}

/** The pairs of a flat header string (an odd count leaves the last name without a value: the caller checks). */
export function unflattenHeaders(flat: string): WireHeaders {
  if (flat === '') return [];
  const parts = flat.split('\u0000');
  const out: WireHeaders = [];
  for (let i = 0; i + 1 < parts.length; i += 2) out.push([parts[i] as string, parts[i + 1] as string]);
  return out;
}

export interface WireRequest {
  method: string;
  path: string;
  query: string;
  host: string;
  headers: WireHeaders;
  remoteAddress: string;
  originalDestination?: string;
  route?: string;
  service?: string;
  /** Base64 of the buffered body; sent only to an entry that declared body.request. */
  body?: string;
}

export interface WireResponse {
  status: number;
  headers: WireHeaders;
  /** Base64 of the buffered body; sent only to an entry that declared body.response. */
  body?: string;
}

/**
 * One metric series' updates of one hook call: ['c', name, labels, sum of inc()] or
 * ['h', name, labels, observed values]. Labels are [name, value] pairs sorted by name.
 */
export type MetricOp = ['c', string, Array<[string, string]>, number] | ['h', string, Array<[string, string]>, number[]];

/** What a call reports besides its action: logs, metric updates, and ops it had to drop. */
export interface CallExtras {
  logs?: LogLine[];
  metrics?: MetricOp[];
  metricsDropped?: number;
}

export interface CallInput {
  hook: 'onRequest' | 'onResponse';
  requestId: string;
  /** Host clock (ms since epoch) for ctx.rateLimit, so test hosts can drive time. */
  now: number;
  /** Which chain entry's config applies; `config` is sent the first time a context sees an id. */
  configId: number;
  config?: unknown;
  req?: WireRequest;
  res?: WireResponse;
}

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
/** [level, message, fields as JSON] */
export type LogLine = [LogLevel, string, string?];

export type CallResult =
  | { pending: number }
  /** `body`: base64 of a body the plugin replaced with setBody(). */
  /** onRequest only: `responseHeaders`, edits for the upstream's response (ctx.responseHeaders); `skipResponse`, ctx.skipOnResponse(). */
  | ({ action: 'continue'; headers?: WireHeaders; service?: string; status?: number; body?: string; responseHeaders?: ResponseHeaderOp[]; skipResponse?: true } & CallExtras)
  | ({ action: 'respond'; status: number; headers: WireHeaders; body: string } & CallExtras)
  | ({ action: 'error'; message: string } & CallExtras);

export interface LoadMeta {
  tenant: string;
  plugin: string;
}

/** finishLoad's answer: what the plugin declares (hooks, body limits, config schema), or why it is not a plugin. */
export type LoadResult =
  | { hooks: Array<'onRequest' | 'onResponse'>; body?: { request?: number; response?: number }; configSchema?: Record<string, unknown> }
  | { noHooks: string }
  | { badDeclaration: string };

/** Bounds the guest applies to itself (the host enforces its own, equal or looser, again). */
export const GUEST_LIMITS = Object.freeze({
  logLinesPerCall: 32,
  logMessageChars: 1024,
  logFieldsChars: 2048,
  bodyBytes: 1024 * 1024,
  headerCount: 256,
  configsKept: 64,
  pendingCalls: 1024,
  /** ctx.responseHeaders edits one onRequest call may make. */
  responseHeaderOps: 64,
  /** Distinct metric series one call may update, and histogram observations it may make. */
  metricSeriesPerCall: 64,
  metricObservationsPerCall: 256,
});

/** Prefix of the error the guest's require() throws, so hosts can report ISOMESH_ERR_PLUGIN_BAD_IMPORT. */
export const BAD_IMPORT_PREFIX = 'ISOMESH_BAD_IMPORT:';
