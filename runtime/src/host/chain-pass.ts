// ChainPass: one phase (onRequest or onResponse) of one request's chain, as plain data. The daemon
// picks the entries (route filter, canary version pinned by the ChainRun) and the CPU budget left;
// the tenant's isolate runs them all in one crossing, in its chain runner (sdk/src/guest/runner.ts),
// with the chain's semantics:
//   - entries in order, header edits carried from entry to entry; body access only for entries that
//     declared it (each later one sees earlier replacements);
//   - ctx.respond stops the chain (in onResponse it replaces status and headers); ctx.route picks one
//     of the tenant's services;
//   - failure policy per entry: closed → 503 with the entry's error code, open → the entry is skipped
//     (its edits are not applied); an entry without an active version fails without a report;
//   - cpuMsPerRequest is the chain's budget for one request, measured in isolate CPU: an entry that
//     used more than was left fails as a timeout, entries after a spent budget time out without
//     running, failed entries are not charged to the ones after them (the sandbox measures each
//     entry's CPU at the runner's callback between entries, pass-drive.ts);
//   - one report per entry that ran (outcome, CPU, wall time, error, logs, metrics) for the daemon's
//     metrics, quota, health and blame.
// This file is the host's side of that wire: encodePass (once per pass, in the daemon) and
// decodePass (checks everything the isolate hands back, then builds the PassResult). Inline mode
// runs both in the daemon around the sandbox; in cordon mode the encoded pass travels to the cordon
// as it is and the runner's answer comes back as it is.

import { HOOK_REQUEST, HOOK_RESPONSE, MSG_NOT_LOADED, MSG_OVER_BUDGET, MSG_SPENT, type WireEntry, type WirePass, type WireReport, type WireResult } from '@isomesh/sdk/pass-wire';
import type { ErrorCode } from '../errors.ts';
import type { FailurePolicy } from '../store/model.ts';
import type { HeaderList, HookRequest, HookResponse, RequestOutcome, ResponseOutcome } from './contract.ts';
import type { FailureKind, InvokeLimits } from './sandbox.ts';
import { BadResult, base64Bytes, checkFlatHeaders, checkMetrics, checkReportLogs, checkResponseOps, RESULT_LIMITS, type GuestLog, type GuestMetricOp } from './validate.ts';

const RESULT_SEP = '\u0001';

/** The runner's flat header form (sdk/src/guest/protocol.ts); refuses a NUL inside a name or value. */
function flatHeaders(list: HeaderList): string {
  let out = '';
  for (let i = 0; i < list.length; i++) {
    const [k, v] = list[i] as [string, string];
    // The data planes' parsers refuse control characters in fields; a NUL here would shift pairs.
    if (k.includes('\u0000') || v.includes('\u0000')) throw new BadResult(`header ${k.replace(/\u0000/g, '')} holds a NUL`);
    out += i === 0 ? `${k}\u0000${v}` : `\u0000${k}\u0000${v}`;
  }
  return out;
}

export type Phase = 'onRequest' | 'onResponse';

export interface PassEntry {
  /** Sandbox key of the version serving this request; absent when the plugin has no active version. */
  key?: string;
  plugin: string;
  configId: number;
  failurePolicy: FailurePolicy;
  /** The body limit (bytes) the version declared for this phase; absent = no body access. */
  body?: number;
}

export interface ChainPass {
  phase: Phase;
  requestId: string;
  /** The chain generation (its configs and services are installed in the isolate once). */
  generation: number;
  /** The request as the data plane saw it (onRequest), without its body. */
  req?: HookRequest;
  /** The upstream response (onResponse), without its body. */
  res?: HookResponse;
  /**
   * Base64 of the buffered body of this phase: set only when the data plane buffered one and an
   * entry declared body access (bytes cross the isolate and process boundaries as strings).
   */
  body?: string;
  entries: PassEntry[];
  /** CPU (ms) left of the request's cpuMsPerRequest when the pass starts. */
  cpuBudgetMs: number;
  /** The tenant's service names (valid ctx.route targets); onRequest only. */
  services?: readonly string[];
  /** Measure every entry on its own (a traced request's timings): no lazy marks (pass-wire.ts). */
  each?: boolean;
}

/** 'ok' | 'respond' or the failure; 'shed' is the daemon's (a pass refused by a full queue). */
export type EntryOutcome = 'ok' | 'respond' | FailureKind | 'shed';

export interface EntryReport {
  /** Index into ChainPass.entries. */
  entry: number;
  outcome: EntryOutcome;
  cpuNs: number;
  /** Wall time of the hook call at the isolate boundary. */
  wallMs: number;
  /** Set when the entry failed. */
  code?: ErrorCode;
  message?: string;
  logs?: GuestLog[];
  metrics?: GuestMetricOp[];
  metricsDropped?: number;
}

export type PassOutcome = RequestOutcome | ResponseOutcome;

export interface PassResult {
  /** Entries that ran (an entry without the phase's hook is skipped and not reported). */
  reports: EntryReport[];
  outcome: PassOutcome;
  /** CPU (ms) of the entries that succeeded: what counts against cpuMsPerRequest afterwards. */
  budgetUsedMs: number;
  /** Base64 of the body when an entry replaced it (the daemon decodes it into the outcome). */
  body?: string;
  /** onRequest: the entries (of this pass) that called ctx.skipOnResponse(). */
  skipResponse?: number[];
}

/** What a runtime answers for a pass it could not run at all (cordon died, restarting, queue full). */
export interface PassFailure {
  transport: 'overloaded' | 'crashed' | 'unavailable';
  message: string;
  /** The entry that was running when it failed, when known (the cordon's blackbox). */
  entry?: number;
}

export type PassReply = PassResult | PassFailure;

/** An encoded pass and what the sandbox needs to know without parsing it. */
export interface EncodedPass {
  /** The pass's JSON, RESULT_SEP, the headers flat (see encodePass). */
  json: string;
  /** Entries in the pass. */
  entries: number;
  /** Each entry's runner slot (-1: no active version; -3: not loaded by this runtime). */
  slots: number[];
  /** The onRequest phase. */
  req: boolean;
  cpuBudgetMs: number;
  /** ChainPass.each. */
  each?: boolean;
}

/**
 * What the isolate answered for a pass: the runner's JSON, plus what the sandbox measured around it
 * (CPU and wall time per entry index) and decided itself (messages of entries it found over budget,
 * reports of entries whose isolate was lost under them).
 */
export interface PassWire {
  json: string;
  /** `json` parsed already (by the sandbox, when it had to look inside). */
  parsed?: WireResult;
  cpuNs: number[];
  wallMs: number[];
  over?: Record<number, string>;
  extra?: WireReport[];
}

/** What a sandbox runPass needs from its caller (the cordon's scheduler and blackbox). */
export interface PassHooks {
  /** Passed to every crossing (a cordon releases the tenant in onIdle). */
  limits?: InvokeLimits;
  /** When entry `entry` starts using the isolate (the cordon's blackbox records which entry runs). */
  enter?(entry: number): void;
  /** When the pass stops using the isolate: finished, or waiting for an async hook. */
  exit?(): void;
}

/** What runChainPass needs of a sandbox (TenantSandbox). */
export interface PassSandbox {
  runPass(pass: ChainPass, hooks?: PassHooks): PassResult | Promise<PassResult>;
}

export const FAILURE_CODES: Record<FailureKind | 'overloaded', ErrorCode> = {
  overloaded: 'ISOMESH_ERR_QUOTA_QUEUE',
  threw: 'ISOMESH_ERR_PLUGIN_THREW',
  timeout: 'ISOMESH_ERR_PLUGIN_TIMEOUT',
  memory: 'ISOMESH_ERR_PLUGIN_MEMORY',
  crashed: 'ISOMESH_ERR_PLUGIN_CRASHED',
  bad_result: 'ISOMESH_ERR_PLUGIN_BAD_RESULT',
  unavailable: 'ISOMESH_ERR_PLUGIN_UNAVAILABLE',
};

/** The wall-clock timeout is only a backstop for the CPU budget: budget × factor + slack. */
export const WALL_BACKSTOP_FACTOR = 1.5;
export const WALL_BACKSTOP_SLACK_MS = 2;

/** The outcome of a failed entry under its failure policy: undefined = skip it and go on ('open'). */
export function policyOutcome(entry: PassEntry, code: ErrorCode, message: string): PassOutcome | undefined {
  // A shed call is load shedding, not a plugin failure: 429 whatever the failure policy.
  if (code === 'ISOMESH_ERR_QUOTA_QUEUE') return { action: 'fail', status: 429, code, message };
  if (entry.failurePolicy === 'closed') return { action: 'fail', status: 503, code, message };
  return undefined;
}

/** The outcome of a pass whose entries all were skipped: the input, unchanged. */
export function unchanged(pass: ChainPass): PassOutcome {
  if (pass.phase === 'onRequest') return { action: 'continue', headers: (pass.req as HookRequest).headers };
  const res = pass.res as HookResponse;
  return { action: 'continue', status: res.status, headers: res.headers };
}

/** The pass as the runner reads it. `slotOf`: the isolate slot of a loaded version key. */
export function encodePass(pass: ChainPass, slotOf: (key: string) => number | undefined): EncodedPass {
  const req = pass.phase === 'onRequest';
  const slots: number[] = new Array(pass.entries.length);
  const e: WireEntry[] = new Array(pass.entries.length);
  for (let i = 0; i < pass.entries.length; i++) {
    const entry = pass.entries[i] as PassEntry;
    const closed = entry.failurePolicy === 'closed' ? 1 : 0;
    if (entry.key === undefined) {
      e[i] = [-1, entry.configId, closed, 0, entry.plugin];
      slots[i] = -1;
      continue;
    }
    // -3: a version this runtime has not loaded (the runner reports it as not loaded).
    const slot = slotOf(entry.key) ?? -3;
    e[i] = [slot, entry.configId, closed, entry.body ?? 0];
    slots[i] = slot;
  }
  const wire: WirePass = { q: req ? 1 : 0, id: pass.requestId, now: Date.now(), g: pass.generation, b: pass.cpuBudgetMs, e };
  let headers: HeaderList;
  if (req) {
    const r = pass.req as HookRequest;
    headers = r.headers;
    const w: NonNullable<WirePass['w']> = { method: r.method, path: r.path, query: r.query, host: r.host, remoteAddress: r.remoteAddress };
    if (r.originalDestination !== undefined) w.originalDestination = r.originalDestination;
    if (r.route !== undefined) w.route = r.route;
    if (r.service !== undefined) w.service = r.service;
    wire.w = w;
  } else {
    const r = pass.res as HookResponse;
    headers = r.headers;
    wire.st = r.status;
  }
  if (pass.body !== undefined) wire.bd = pass.body;
  // The headers follow the pass flat, after RESULT_SEP (which JSON text cannot contain): the runner
  // hands them to the first entry as they are, neither escaped into the pass nor parsed by it.
  const enc: EncodedPass = { json: `${JSON.stringify(wire)}${RESULT_SEP}${flatHeaders(headers)}`, entries: pass.entries.length, slots, req, cpuBudgetMs: pass.cpuBudgetMs };
  if (pass.each === true) enc.each = true;
  return enc;
}

const OUTCOMES = new Set(['ok', 'respond', 'threw', 'timeout', 'memory', 'crashed', 'bad_result', 'unavailable']);
const FAILURES = new Set(['threw', 'timeout', 'memory', 'crashed', 'bad_result', 'unavailable']);
const SERVICE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const BASE64_RE = /^[A-Za-z0-9+/]*={0,2}$/;

function isStatus(v: unknown): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= 200 && v <= 599;
}

function message(v: unknown): string {
  return typeof v === 'string' ? v.slice(0, 2048) : '';
}

/** One report as the runner made it, checked, with what the sandbox measured. */
function entryReport(pass: ChainPass, wire: PassWire, r: WireReport): EntryReport {
  const i = r.e;
  if (typeof i !== 'number' || !Number.isInteger(i) || i < 0 || i >= pass.entries.length || !OUTCOMES.has(r.o)) throw new BadResult('invalid report');
  // An entry failed for a spent budget never ran: what the runner did meanwhile is not its CPU.
  const ran = r.m !== MSG_SPENT;
  const out: EntryReport = { entry: i, outcome: r.o, cpuNs: ran ? (wire.cpuNs[i] ?? 0) : 0, wallMs: ran ? (wire.wallMs[i] ?? 0) : 0 };
  if (FAILURES.has(r.o)) {
    out.code = FAILURE_CODES[r.o as FailureKind];
    out.message = filledIn(pass, wire, i, message(r.m));
  }
  const logs = checkReportLogs(r.l);
  if (logs !== undefined && logs.length > 0) out.logs = logs;
  if (r.x !== undefined || r.d !== undefined) {
    const extras: { metrics?: GuestMetricOp[]; metricsDropped?: number } = {};
    checkMetrics({ metrics: r.x, metricsDropped: r.d }, extras);
    if (extras.metrics !== undefined) out.metrics = extras.metrics;
    if (extras.metricsDropped !== undefined) out.metricsDropped = extras.metricsDropped;
  }
  return out;
}

/** Messages the runner leaves to the host (figures and names it does not know). */
function filledIn(pass: ChainPass, wire: PassWire, entry: number, m: string): string {
  if (m === MSG_OVER_BUDGET) return wire.over?.[entry] ?? 'plugin exceeded its CPU time per request';
  if (m === MSG_NOT_LOADED) return `plugin version ${pass.entries[entry]?.key ?? '?'} is not loaded`;
  return m;
}

function largestBody(pass: ChainPass): number {
  let n = 0;
  for (const e of pass.entries) if (e.body !== undefined && e.body > n) n = e.body;
  return n;
}

/** The outcome the runner reported, checked again (for the host the isolate is untrusted). */
function outcomeOf(pass: ChainPass, wire: PassWire, r: WireResult, flat: string | undefined): { outcome: PassOutcome; body?: string; skipResponse?: number[] } {
  const req = pass.phase === 'onRequest';
  const input = req ? (pass.req as HookRequest).headers : (pass.res as HookResponse).headers;
  const headers = (): HeaderList => (flat === undefined ? input : checkFlatHeaders(flat));
  switch (r.a) {
    case 'c': {
      let body: string | undefined;
      if (r.bd !== undefined) {
        if (typeof r.bd !== 'string' || r.bd.length % 4 !== 0 || !BASE64_RE.test(r.bd) || base64Bytes(r.bd) > largestBody(pass)) throw new BadResult('invalid replaced body');
        body = r.bd;
      }
      if (!req) {
        if (r.rh !== undefined || r.sk !== undefined) throw new BadResult('response header edits and skipResponse belong to onRequest');
        const status = r.st === undefined ? (pass.res as HookResponse).status : r.st;
        if (!isStatus(status)) throw new BadResult('status must be an integer 200..599');
        return { outcome: { action: 'continue', status, headers: headers() }, ...(body === undefined ? {} : { body }) };
      }
      const outcome: RequestOutcome & { action: 'continue' } = { action: 'continue', headers: headers() };
      if (r.rh !== undefined) outcome.responseHeaders = checkResponseOps(r.rh);
      let skipResponse: number[] | undefined;
      if (r.sk !== undefined) {
        const sk = r.sk as unknown;
        // Entries of this pass, each once, in order.
        if (!Array.isArray(sk) || !sk.every((e, i) => Number.isInteger(e) && e >= 0 && e < pass.entries.length && (i === 0 || e > (sk[i - 1] as number)))) throw new BadResult('invalid skipResponse entries');
        skipResponse = sk as number[];
      }
      if (r.s !== undefined) {
        if (typeof r.s !== 'string' || !SERVICE_RE.test(r.s) || !(pass.services ?? []).includes(r.s)) throw new BadResult('ctx.route: not a service of the tenant');
        outcome.service = r.s;
      }
      return { outcome, ...(body === undefined ? {} : { body }), ...(skipResponse === undefined ? {} : { skipResponse }) };
    }
    case 'r':
      if (!req || !isStatus(r.st) || typeof r.bd !== 'string' || r.bd.length > RESULT_LIMITS.bodyChars) throw new BadResult('invalid early response');
      return { outcome: { action: 'respond', status: r.st, headers: checkFlatHeaders(flat ?? ''), body: r.bd } };
    case 'f': {
      if (typeof r.k !== 'string' || !FAILURES.has(r.k)) throw new BadResult('invalid failure');
      // The failing entry is the last one reported (a closed failure ends the chain).
      const last = r.r?.at(-1)?.e ?? -1;
      return { outcome: { action: 'fail', status: 503, code: FAILURE_CODES[r.k], message: filledIn(pass, wire, last, message(r.m)) } };
    }
    default:
      throw new BadResult('unknown pass answer');
  }
}

/** Turns the isolate's answer into the PassResult the daemon accounts for. */
export function decodePass(pass: ChainPass, wire: PassWire): PassResult {
  let r: WireResult;
  const reports: EntryReport[] = [];
  try {
    const cut = wire.json.indexOf(RESULT_SEP);
    const flat = cut < 0 ? undefined : wire.json.slice(cut + 1);
    r = wire.parsed ?? (JSON.parse(cut < 0 ? wire.json : wire.json.slice(0, cut)) as WireResult);
    if (r === null || typeof r !== 'object' || (r.r !== undefined && !Array.isArray(r.r))) throw new BadResult('the chain runner answered no object');
    const all = wire.extra === undefined ? (r.r ?? []) : [...wire.extra, ...(r.r ?? [])].sort((a, b) => a.e - b.e);
    for (const rep of all) reports.push(entryReport(pass, wire, rep));
    const { outcome, body, skipResponse } = outcomeOf(pass, wire, r, flat);
    let budgetUsedMs = 0;
    for (const rep of reports) if (rep.outcome === 'ok' || rep.outcome === 'respond') budgetUsedMs += rep.cpuNs / 1e6;
    const result: PassResult = { reports, outcome, budgetUsedMs };
    if (body !== undefined) result.body = body;
    if (skipResponse !== undefined) result.skipResponse = skipResponse;
    return result;
  } catch (e) {
    // The runner is host code in a context no plugin reaches: an answer that fails these checks
    // means the isolate cannot be trusted for this pass. Closed, whatever the policy.
    const why = e instanceof Error ? e.message : String(e);
    const message = `the chain runner's answer failed the host's checks: ${why}`;
    const last = reports.at(-1)?.entry ?? Math.max(0, wire.cpuNs.length - 1);
    const failedReport: EntryReport = { entry: last, outcome: 'bad_result', cpuNs: wire.cpuNs[last] ?? 0, wallMs: wire.wallMs[last] ?? 0, code: 'ISOMESH_ERR_PLUGIN_BAD_RESULT', message };
    return { reports: [...reports.filter((x) => x.entry !== last), failedReport], outcome: { action: 'fail', status: 503, code: 'ISOMESH_ERR_PLUGIN_BAD_RESULT', message }, budgetUsedMs: 0 };
  }
}

/** Which hook bit a phase needs (the runner's slots carry their hooks as bits). */
export function hookBits(hooks: ReadonlyArray<Phase>): number {
  return (hooks.includes('onRequest') ? HOOK_REQUEST : 0) | (hooks.includes('onResponse') ? HOOK_RESPONSE : 0);
}

/**
 * Runs a pass's entries in order against `sandbox`. Synchronous when every hook settles
 * synchronously (the common case); a promise once a hook awaits something (a host capability).
 */
export function runChainPass(sandbox: PassSandbox, pass: ChainPass, hooks: PassHooks = {}): PassResult | Promise<PassResult> {
  return sandbox.runPass(pass, hooks);
}

/** The JSON the runner's generation() takes: services and each entry's config (as JSON, parsed in the plugin's context). */
export function generationJson(services: readonly string[], configs: ReadonlyArray<readonly [number, unknown]>): string {
  return JSON.stringify({ s: services, c: configs.map(([id, config]) => [id, JSON.stringify(config ?? {})]) });
}
