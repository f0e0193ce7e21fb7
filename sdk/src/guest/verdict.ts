// Everything a plugin context hands back is untrusted: a plugin can monkey-patch its own context
// (JSON, prototypes) and return anything. The chain runner (runner.ts) checks each hook result with
// these functions inside the isolate, in a context no plugin can reach, so the chain's failure
// policy applies to the entry that returned it; the host checks what the runner hands back with the
// same functions again (checkPassOutcome), since for the host the whole isolate is untrusted.
// Pure JavaScript: runs inside isolates and in Node.

import type { ResponseHeaderOp } from '../types.ts';
import { RESULT_SEP, type WireHeaders } from './protocol.ts';

type HeaderList = WireHeaders;

export const RESULT_LIMITS = Object.freeze({
  resultChars: 4 * 1024 * 1024,
  headerCount: 1024,
  headerBytes: 256 * 1024,
  headerValueChars: 16 * 1024,
  bodyChars: 1024 * 1024,
  logLines: 64,
  logChars: 4096,
  metricSeries: 64,
  metricObservations: 256,
  /** ctx.responseHeaders edits of one pass (all entries together). */
  responseHeaderOps: 256,
});

const NAME_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]{1,256}$/;
// RFC 9110 field-value characters only; anything else Node's HTTP stack would refuse later (as a 502).
const BAD_VALUE_RE = /[^\t\x20-\x7e\x80-\xff]/;
const SERVICE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LEVELS = new Set(['debug', 'info', 'warn', 'error']);

export type GuestLog = { level: 'debug' | 'info' | 'warn' | 'error'; msg: string; fields?: string };

/** A metric series' updates from one call: counter sum, or histogram observations (names checked on apply). */
export type GuestMetricOp = ['c', string, Array<[string, string]>, number] | ['h', string, Array<[string, string]>, number[]];

interface Extras {
  logs?: GuestLog[];
  metrics?: GuestMetricOp[];
  metricsDropped?: number;
}

export type Verdict =
  /** `body`: base64 of a body replaced with setBody(). */
  | ({ action: 'continue'; headers?: HeaderList; service?: string; status?: number; body?: string; responseHeaders?: ResponseHeaderOp[]; skipResponse?: true } & Extras)
  | ({ action: 'respond'; status: number; headers: HeaderList; body: string } & Extras)
  | ({ action: 'error'; message: string } & Extras);

const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

/** Bytes a base64 string decodes to. */
export function base64Bytes(b64: string): number {
  let pad = 0;
  if (b64.endsWith('==')) pad = 2;
  else if (b64.endsWith('=')) pad = 1;
  return Math.floor(((b64.length - pad) * 3) / 4);
}

export function checkMetrics(r: Record<string, unknown>, out: Extras): void {
  if (r.metricsDropped !== undefined) {
    if (typeof r.metricsDropped !== 'number' || !Number.isInteger(r.metricsDropped) || r.metricsDropped < 0) throw new BadResult('invalid metricsDropped');
    out.metricsDropped = Math.min(r.metricsDropped, 1_000_000);
  }
  if (r.metrics === undefined) return;
  const v = r.metrics;
  if (!Array.isArray(v) || v.length > RESULT_LIMITS.metricSeries) throw new BadResult('invalid metrics');
  let observations = 0;
  const ops: GuestMetricOp[] = [];
  for (const op of v) {
    if (!Array.isArray(op) || op.length !== 4 || typeof op[1] !== 'string' || op[1].length > 64 || !Array.isArray(op[2]) || op[2].length > 5) throw new BadResult('invalid metric update');
    for (const pair of op[2] as unknown[]) {
      if (!Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== 'string' || typeof pair[1] !== 'string' || pair[0].length > 64 || pair[1].length > 128) {
        throw new BadResult('invalid metric labels');
      }
    }
    if (op[0] === 'c') {
      if (typeof op[3] !== 'number' || !Number.isFinite(op[3]) || op[3] < 0) throw new BadResult('invalid counter increment');
    } else if (op[0] === 'h') {
      if (!Array.isArray(op[3]) || !op[3].every((x) => typeof x === 'number' && Number.isFinite(x))) throw new BadResult('invalid histogram observations');
      observations += op[3].length;
      if (observations > RESULT_LIMITS.metricObservations) throw new BadResult('too many histogram observations');
    } else throw new BadResult('invalid metric type');
    ops.push(op as GuestMetricOp);
  }
  if (ops.length > 0) out.metrics = ops;
}

export class BadResult extends Error {}

/** Logs as a report carries them (already GuestLog objects): checked again by the host. */
export function checkReportLogs(v: unknown): GuestLog[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw new BadResult('logs must be an array');
  const out: GuestLog[] = [];
  for (const line of v.slice(0, RESULT_LIMITS.logLines)) {
    const l = line as Record<string, unknown> | null;
    if (l === null || typeof l !== 'object' || !LEVELS.has(l.level as string) || typeof l.msg !== 'string') throw new BadResult('invalid log line');
    const entry: GuestLog = { level: l.level as GuestLog['level'], msg: l.msg.slice(0, RESULT_LIMITS.logChars) };
    if (typeof l.fields === 'string') entry.fields = l.fields.slice(0, RESULT_LIMITS.logChars);
    out.push(entry);
  }
  return out;
}

function isStatus(v: unknown): v is number {
  // Final statuses only: a 1xx from a plugin would break the exchange with the client.
  return typeof v === 'number' && Number.isInteger(v) && v >= 200 && v <= 599;
}

/** ctx.responseHeaders edits as a result carries them: [op, lower-case name, value] ('delete': no value). */
export function checkResponseOps(v: unknown, max: number = RESULT_LIMITS.responseHeaderOps): ResponseHeaderOp[] {
  if (!Array.isArray(v)) throw new BadResult('responseHeaders must be an array');
  if (v.length > max) throw new BadResult('too many response header edits');
  const out: ResponseHeaderOp[] = [];
  for (const op of v) {
    if (!Array.isArray(op)) throw new BadResult('response header edit must be an array');
    const [kind, name, value] = op as unknown[];
    if (typeof name !== 'string' || !NAME_RE.test(name)) throw new BadResult('invalid response header name');
    if (kind === 'delete' && op.length === 2) {
      out.push(['delete', name]);
      continue;
    }
    if ((kind !== 'set' && kind !== 'append') || op.length !== 3) throw new BadResult('response header edit must be [set|append, name, value] or [delete, name]');
    if (typeof value !== 'string' || value.length > RESULT_LIMITS.headerValueChars || BAD_VALUE_RE.test(value)) throw new BadResult(`invalid value for response header ${name}`);
    out.push([kind, name, value]);
  }
  return out;
}

/**
 * `headers` with ctx.responseHeaders edits applied in order: set replaces every value of the name
 * (the new value goes last), append adds one, delete removes every value. The host applies them to
 * the upstream's response, createTestHost to a test's; `headers` itself is left as it was.
 */
export function applyResponseOps(headers: HeaderList, ops: readonly ResponseHeaderOp[]): HeaderList {
  let out = headers;
  for (const op of ops) {
    if (op[0] === 'append') {
      if (out === headers) out = headers.slice();
    } else {
      out = out.filter(([n]) => n.toLowerCase() !== op[1]);
    }
    if (op[0] !== 'delete') out.push([op[1], op[2]]);
  }
  return out;
}

/** checkHeaders for the runner's flat form (protocol.ts). */
export function checkFlatHeaders(flat: string): HeaderList {
  if (flat === '') return [];
  const parts = flat.split('\u0000');
  if (parts.length % 2 !== 0) throw new BadResult('header must be a [name, value] pair');
  if (parts.length / 2 > RESULT_LIMITS.headerCount) throw new BadResult('too many headers');
  if (flat.length > RESULT_LIMITS.headerBytes + parts.length) throw new BadResult('headers are too large');
  const out: HeaderList = [];
  for (let i = 0; i < parts.length; i += 2) {
    const name = parts[i] as string;
    const value = parts[i + 1] as string;
    if (!NAME_RE.test(name)) throw new BadResult('invalid header name');
    if (value.length > RESULT_LIMITS.headerValueChars || BAD_VALUE_RE.test(value)) throw new BadResult(`invalid value for header ${name}`);
    out.push([name, value]);
  }
  return out;
}

export function checkHeaders(v: unknown): HeaderList {
  if (!Array.isArray(v)) throw new BadResult('headers must be an array');
  if (v.length > RESULT_LIMITS.headerCount) throw new BadResult('too many headers');
  let bytes = 0;
  const out: HeaderList = [];
  for (const pair of v) {
    if (!Array.isArray(pair) || pair.length !== 2) throw new BadResult('header must be a [name, value] pair');
    const [name, value] = pair as unknown[];
    if (typeof name !== 'string' || !NAME_RE.test(name)) throw new BadResult('invalid header name');
    if (typeof value !== 'string' || value.length > RESULT_LIMITS.headerValueChars || BAD_VALUE_RE.test(value)) {
      throw new BadResult(`invalid value for header ${name}`);
    }
    bytes += name.length + value.length;
    out.push([name, value]);
  }
  if (bytes > RESULT_LIMITS.headerBytes) throw new BadResult('headers are too large');
  return out;
}

export function checkLogs(v: unknown): GuestLog[] | undefined {
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw new BadResult('logs must be an array');
  const out: GuestLog[] = [];
  for (const line of v.slice(0, RESULT_LIMITS.logLines)) {
    if (!Array.isArray(line) || !LEVELS.has(line[0]) || typeof line[1] !== 'string') throw new BadResult('invalid log line');
    const entry: GuestLog = { level: line[0], msg: line[1].slice(0, RESULT_LIMITS.logChars) };
    if (typeof line[2] === 'string') entry.fields = line[2].slice(0, RESULT_LIMITS.logChars);
    out.push(entry);
  }
  return out;
}

/**
 * Parses one hook result. `bodyLimit`: the bytes the entry declared for this phase's body (0 = none),
 * the most a setBody() may carry. Throws BadResult with a reason the status API can show.
 */
export function parseVerdict(result: string, phase: 'onRequest' | 'onResponse', services: { has(name: string): boolean }, bodyLimit = 0): Verdict {
  if (result.length > RESULT_LIMITS.resultChars + Math.ceil(bodyLimit / 3) * 4) throw new BadResult('result is too large');
  // A compact result (the runner's calls) carries its headers flat after RESULT_SEP.
  const cut = result.indexOf(RESULT_SEP);
  const json = cut < 0 ? result : result.slice(0, cut);
  const flat = cut < 0 ? undefined : result.slice(cut + 1);
  let raw: unknown;
  try {
    raw = JSON.parse(json);
  } catch {
    throw new BadResult('result is not JSON');
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new BadResult('result is not an object');
  const r = raw as Record<string, unknown>;
  const logs = checkLogs(r.logs);
  switch (r.action) {
    case 'continue': {
      const v: Verdict = { action: 'continue', logs };
      checkMetrics(r, v);
      if (r.body !== undefined) {
        if (bodyLimit === 0) throw new BadResult('setBody() without a declared body limit');
        if (typeof r.body !== 'string' || r.body.length % 4 !== 0 || !BASE64_RE.test(r.body)) throw new BadResult('body must be base64');
        const bytes = base64Bytes(r.body);
        if (bytes > bodyLimit) throw new BadResult(`replaced body is ${bytes} bytes, over the declared limit of ${bodyLimit}`);
        v.body = r.body;
      }
      if (flat !== undefined) v.headers = checkFlatHeaders(flat);
      else if (r.headers !== undefined) v.headers = checkHeaders(r.headers);
      if (r.service !== undefined) {
        if (phase !== 'onRequest') throw new BadResult('ctx.route is only valid in onRequest');
        if (typeof r.service !== 'string' || !SERVICE_RE.test(r.service)) throw new BadResult('invalid service name');
        if (!services.has(r.service)) throw new BadResult(`ctx.route: tenant has no service ${r.service}`);
        v.service = r.service;
      }
      if (r.status !== undefined) {
        if (!isStatus(r.status)) throw new BadResult('status must be an integer 200..599');
        v.status = r.status;
      }
      if (r.responseHeaders !== undefined || r.skipResponse !== undefined) {
        if (phase !== 'onRequest') throw new BadResult('ctx.responseHeaders and ctx.skipOnResponse are only valid in onRequest');
        if (r.responseHeaders !== undefined) v.responseHeaders = checkResponseOps(r.responseHeaders);
        if (r.skipResponse !== undefined) {
          if (r.skipResponse !== true) throw new BadResult('skipResponse must be true');
          v.skipResponse = true;
        }
      }
      return v;
    }
    case 'respond': {
      if (!isStatus(r.status)) throw new BadResult('status must be an integer 200..599');
      if (typeof r.body !== 'string' || r.body.length > RESULT_LIMITS.bodyChars) throw new BadResult('invalid body');
      const v: Verdict = { action: 'respond', status: r.status, headers: flat !== undefined ? checkFlatHeaders(flat) : checkHeaders(r.headers), body: r.body, logs };
      checkMetrics(r, v);
      return v;
    }
    case 'error': {
      const v: Verdict = { action: 'error', message: typeof r.message === 'string' ? r.message.slice(0, 2048) : 'plugin threw', logs };
      checkMetrics(r, v);
      return v;
    }
    default:
      throw new BadResult('unknown result action');
  }
}
