// Everything a guest hands back is untrusted: a plugin can monkey-patch its own isolate (JSON,
// prototypes) and return anything. Parse and check each result before it can reach a data plane.

import type { HeaderList } from './contract.ts';

export const RESULT_LIMITS = Object.freeze({
  resultChars: 4 * 1024 * 1024,
  headerCount: 1024,
  headerBytes: 256 * 1024,
  headerValueChars: 16 * 1024,
  bodyChars: 1024 * 1024,
  logLines: 64,
  logChars: 4096,
});

const NAME_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]{1,256}$/;
// RFC 9110 field-value characters only; anything else Node's HTTP stack would refuse later (as a 502).
const BAD_VALUE_RE = /[^\t\x20-\x7e\x80-\xff]/;
const SERVICE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const LEVELS = new Set(['debug', 'info', 'warn', 'error']);

export type GuestLog = { level: 'debug' | 'info' | 'warn' | 'error'; msg: string; fields?: string };

export type Verdict =
  | { action: 'continue'; headers?: HeaderList; service?: string; status?: number; logs?: GuestLog[] }
  | { action: 'respond'; status: number; headers: HeaderList; body: string; logs?: GuestLog[] }
  | { action: 'error'; message: string; logs?: GuestLog[] };

export class BadResult extends Error {}

function isStatus(v: unknown): v is number {
  // Final statuses only: a 1xx from a plugin would break the exchange with the client.
  return typeof v === 'number' && Number.isInteger(v) && v >= 200 && v <= 599;
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

function checkLogs(v: unknown): GuestLog[] | undefined {
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

/** Parses one hook result. Throws BadResult with a reason the status API can show. */
export function parseVerdict(json: string, phase: 'onRequest' | 'onResponse', services: { has(name: string): boolean }): Verdict {
  if (json.length > RESULT_LIMITS.resultChars) throw new BadResult('result is too large');
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
      if (r.headers !== undefined) v.headers = checkHeaders(r.headers);
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
      return v;
    }
    case 'respond': {
      if (!isStatus(r.status)) throw new BadResult('status must be an integer 200..599');
      if (typeof r.body !== 'string' || r.body.length > RESULT_LIMITS.bodyChars) throw new BadResult('invalid body');
      return { action: 'respond', status: r.status, headers: checkHeaders(r.headers), body: r.body, logs };
    }
    case 'error':
      return { action: 'error', message: typeof r.message === 'string' ? r.message.slice(0, 2048) : 'plugin threw', logs };
    default:
      throw new BadResult('unknown result action');
  }
}
