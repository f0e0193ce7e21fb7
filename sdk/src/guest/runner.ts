// The chain runner: host-owned guest code in a context of its own inside each tenant isolate. It
// runs one phase of one request's chain — every entry, in order — in a single crossing of the
// isolate boundary, with the chain's semantics (runtime/src/host/chain-pass.ts describes them):
// header edits carried from entry to entry, ctx.respond stops the chain, ctx.route, failure policy
// closed/open per entry, the CPU budget per request (the host measures it, see MARK_*), body access
// only for entries that declared it, one report per entry that ran.
//
// Each plugin version keeps a context of its own (its own globals and intrinsics: a plugin that
// pollutes Object.prototype or replaces JSON sees that only itself). The runner holds that context's
// entry functions (the host hands them over by reference once, at load) and calls them directly — a
// call between contexts of one isolate costs nanoseconds. The rule that keeps the contexts apart:
// the runner passes plugin code only strings and numbers and takes back only strings; it never hands
// a plugin an object, a function or a promise of its own, so no plugin can reach this context's
// intrinsics or the other plugins' entry points. This file is strict code (no `caller` walk can
// reach it), and it is bundled on its own: it shares no module state with the guest runtime.
//
// Async hooks: a hook that awaits a host capability leaves the pass pending; the runner answers the
// capability requests the hook made, the host performs them and hands the results back (deliver),
// and the runner follows the hook to its end in the microtasks of that same crossing — then runs the
// rest of the chain there too. Microtasks run before a crossing returns, after the function's value
// has been produced, so such answers travel in a one-element array ("holder") filled meanwhile.

import { HOOK_REQUEST, HOOK_RESPONSE, LAZY_MARGIN_MS, MARK_OVER, MARK_SPENT, MSG_NOT_LOADED, MSG_OVER_BUDGET, MSG_SPENT, PENDING_ROUNDS, SHARED_BYTES, SHARED_CLOCK, SHARED_EACH, SHARED_RUNNING } from './pass-wire.ts';
import type { WireEntry, WireFailure, WirePass, WireReport, WireRequestLine, WireResult } from './pass-wire.ts';
import { RESULT_SEP } from './protocol.ts';
import { BadResult, RESULT_LIMITS, parseVerdict } from './verdict.ts';

type GuestFn = (...args: unknown[]) => unknown;

interface Slot {
  hooks: number;
  request: GuestFn;
  response: GuestFn;
  poll: GuestFn;
  deliver: GuestFn;
  cancel: GuestFn;
  /** Config ids this context has received. */
  seen: Set<number>;
}

interface Generation {
  services: Set<string>;
  configs: Map<number, string>;
}

/** What applying an entry changed, to take it back when the host finds it over budget afterwards. */
interface Undo {
  entry: number;
  headers: string | undefined;
  status: number;
  service: string | undefined;
  body: string | undefined;
  bodyReplaced: boolean;
  reports: number;
  responseOps: number;
  skips: number;
}

interface PassState {
  token: number;
  p: WirePass;
  req: boolean;
  gen: Generation;
  line: WireRequestLine;
  /** The headers after the entries so far, flat (protocol.ts); undefined while no entry changed them. */
  headers: string | undefined;
  status: number;
  service: string | undefined;
  body: string | undefined;
  bodyReplaced: boolean;
  reports: WireReport[];
  /** onRequest: ctx.responseHeaders edits so far (chain order) and the entries that skip onResponse. */
  responseOps: unknown[];
  skips: number[];
  spent: boolean;
  pending: { entry: number; slot: Slot; id: number } | undefined;
  /** The last entry that finished (its result applied), and how to take it back. */
  undo: Undo | undefined;
}

type Mark = (entry: number, next: number, charged: number) => number;
/** The host's callback for capability requests it can answer at once: results JSON, or "" (not now). */
type Capabilities = (entry: number, requestsJson: string) => string;

/** The pass is pending on an entry that made no capability request (yet): follow it in microtasks. */
const WAIT = Symbol('wait');
type Step = string | typeof WAIT;

/** Passes kept while they wait; more are failed (the host bounds them per tenant far below this). */
const MAX_PASSES = 4096;
const NO_LINE: WireRequestLine = { method: '', path: '', query: '', host: '', remoteAddress: '' };
const NO_SERVICES: Generation = { services: new Set(), configs: new Map() };

const slots = new Map<number, Slot>();
const generations = new Map<number, Generation>();
const passes = new Map<number, PassState>();
/** The pass that finished last (the host may still take its last entry back: fail()). */
let lastDone: PassState | undefined;
let mark: Mark = () => 0;
let capabilities: Capabilities = () => '';
/** The memory shared with the host (pass-wire.ts, lazy marks); undefined: mark after every entry. */
let clock: Float64Array | undefined;
let shared: Int32Array | undefined;

/** A message from something a plugin context threw. Reading it may run plugin code (a getter), which is its own. */
function thrownMessage(e: unknown): string {
  try {
    if (e !== null && typeof e === 'object') {
      const m = (e as { message?: unknown }).message;
      if (typeof m === 'string') return m.slice(0, 2048);
    }
  } catch {
    // a throwing getter: fall through
  }
  return 'the plugin call threw';
}

function headersOf(s: PassState): string {
  return s.headers ?? (s.p.h as string);
}

/** The flat headers a compact result carries after RESULT_SEP (checked by parseVerdict already). */
function flatOf(out: string): string | undefined {
  const cut = out.indexOf(RESULT_SEP);
  return cut < 0 ? undefined : out.slice(cut + 1);
}

function report(s: PassState, entry: number, o: WireReport['o'], m?: string): WireReport {
  const r: WireReport = { e: entry, o };
  if (m !== undefined) r.m = m;
  s.reports.push(r);
  return r;
}

/** The final answer: its JSON, and the headers flat after RESULT_SEP when they changed. */
function finish(s: PassState, result: WireResult, headers?: string): string {
  passes.delete(s.token);
  lastDone = s;
  result.r = s.reports;
  const json = JSON.stringify(result);
  return headers === undefined ? json : json + RESULT_SEP + headers;
}

function finalResult(s: PassState): string {
  const out: WireResult = { a: 'c' };
  if (s.service !== undefined) out.s = s.service;
  if (!s.req && s.status !== s.p.st) out.st = s.status;
  if (s.bodyReplaced && s.body !== undefined) out.bd = s.body;
  if (s.responseOps.length > 0) out.rh = s.responseOps;
  if (s.skips.length > 0) out.sk = s.skips;
  return finish(s, out, s.headers);
}

/** Failure of entry `i` under its policy: a final answer when it is closed, undefined to go on. */
function failed(s: PassState, i: number, kind: WireFailure, message: string, extras?: { l?: unknown; x?: unknown; d?: number }): string | undefined {
  const r = report(s, i, kind, message);
  if (extras !== undefined) Object.assign(r, extras);
  if ((s.p.e[i] as WireEntry)[2] !== 1) return undefined;
  return finish(s, { a: 'f', k: kind, m: message });
}

/** The next entry that would call a plugin (-1: none); decides whether the host is asked between entries. */
function nextRunnable(s: PassState, from: number): number {
  const e = s.p.e;
  const bit = s.req ? HOOK_REQUEST : HOOK_RESPONSE;
  for (let i = from; i < e.length; i++) {
    const slotId = (e[i] as WireEntry)[0];
    if (slotId < 0) continue;
    const slot = slots.get(slotId);
    if (slot === undefined || (slot.hooks & bit) !== 0) return i;
  }
  return -1;
}

/**
 * Whether the host must judge the entry that just succeeded (pass-wire.ts, lazy marks): always when
 * it asked for every entry or shares no memory, else only once the crossing's wall time comes
 * within LAZY_MARGIN_MS of the pass's budget (a clock that went back counts as near).
 */
function markNeeded(s: PassState): boolean {
  if (shared === undefined || clock === undefined || shared[SHARED_EACH] !== 0) return true;
  const start = clock[SHARED_CLOCK] as number;
  const now = Date.now();
  return !(now >= start && now - start + LAZY_MARGIN_MS < s.p.b);
}

/** Entry `i` returned `out` (its result JSON, or "" for no change): check it, ask the host, apply it. */
function completed(s: PassState, i: number, out: string): string | undefined {
  const entry = s.p.e[i] as WireEntry;
  if (out === '') return applied(s, i, undefined);
  let v;
  try {
    v = parseVerdict(out, s.req ? 'onRequest' : 'onResponse', s.gen.services, entry[3]);
  } catch (e) {
    if (!(e instanceof BadResult)) throw e;
    return afterFailure(s, i, 'bad_result', e.message);
  }
  const extras: { l?: unknown; x?: unknown; d?: number } = {};
  if (v.logs !== undefined && v.logs.length > 0) extras.l = v.logs;
  if (v.metrics !== undefined) extras.x = v.metrics;
  if (v.metricsDropped !== undefined) extras.d = v.metricsDropped;
  if (v.action === 'error') return afterFailure(s, i, 'threw', v.message, extras);
  if (v.action === 'continue' && v.responseHeaders !== undefined && s.responseOps.length + v.responseHeaders.length > RESULT_LIMITS.responseHeaderOps) {
    return afterFailure(s, i, 'bad_result', `more than ${RESULT_LIMITS.responseHeaderOps} response header edits in the chain`, extras);
  }
  return applied(s, i, v, extras, flatOf(out));
}

/** A failed entry's CPU does not count: tell the host (when more entries follow), then its policy. */
function afterFailure(s: PassState, i: number, kind: WireFailure, message: string, extras?: { l?: unknown; x?: unknown; d?: number }): string | undefined {
  const next = nextRunnable(s, i + 1);
  if (next >= 0) mark(i, next, 0);
  s.undo = undefined;
  return failed(s, i, kind, message, extras);
}

function applied(s: PassState, i: number, v: ReturnType<typeof parseVerdict> | undefined, extras?: { l?: unknown; x?: unknown; d?: number }, flat?: string): string | undefined {
  const stops = v !== undefined && v.action === 'respond';
  const next = stops ? -1 : nextRunnable(s, i + 1);
  if (next >= 0 && markNeeded(s)) {
    const bits = mark(i, next, 1);
    if ((bits & MARK_OVER) !== 0) {
      s.undo = undefined;
      return failed(s, i, 'timeout', MSG_OVER_BUDGET);
    }
    if ((bits & MARK_SPENT) !== 0) s.spent = true;
  }
  s.undo = { entry: i, headers: s.headers, status: s.status, service: s.service, body: s.body, bodyReplaced: s.bodyReplaced, reports: s.reports.length, responseOps: s.responseOps.length, skips: s.skips.length };
  const r = report(s, i, stops ? 'respond' : 'ok');
  if (extras !== undefined) Object.assign(r, extras);
  if (v === undefined) return undefined;
  if (v.action === 'respond') {
    // In onResponse, ctx.respond replaces status and headers and ends the response chain.
    return s.req ? finish(s, { a: 'r', st: v.status, bd: v.body }, flat ?? '') : finish(s, { a: 'c', st: v.status }, flat ?? '');
  }
  if (v.action !== 'continue') return undefined;
  if (flat !== undefined) s.headers = flat;
  if (v.service !== undefined) s.service = v.service;
  if (v.body !== undefined) {
    s.body = v.body;
    s.bodyReplaced = true;
  }
  if (v.status !== undefined && !s.req) s.status = v.status;
  if (v.responseHeaders !== undefined) for (const op of v.responseHeaders) s.responseOps.push(op);
  if (v.skipResponse === true) s.skips.push(i);
  return undefined;
}

/** Calls entry `i`'s hook. A string when the chain stops here, WAIT / a pending answer when it waits, undefined to go on. */
function callEntry(s: PassState, i: number, slot: Slot): Step | undefined {
  const entry = s.p.e[i] as WireEntry;
  const configId = entry[1];
  const known = slot.seen.has(configId);
  const configJson = known ? undefined : s.gen.configs.get(configId);
  if (!known && configJson === undefined) return afterFailure(s, i, 'unavailable', `the configuration of chain entry ${i} is not installed in the isolate`);
  const body = entry[3] > 0 ? (s.body ?? '') : undefined;
  if (shared !== undefined) shared[SHARED_RUNNING] = i;
  let out: unknown;
  try {
    if (s.req) {
      const w = s.line;
      out = slot.request(s.p.id, s.p.now, configId, configJson, w.method, w.path, w.query, w.host, w.remoteAddress, w.originalDestination, w.route, w.service, headersOf(s), body);
    } else {
      out = slot.response(s.p.id, s.p.now, configId, configJson, s.status, headersOf(s), body);
    }
  } catch (e) {
    slot.seen.add(configId);
    return afterFailure(s, i, 'threw', thrownMessage(e));
  }
  // Only once the call returned: a call stopped mid-way may not have kept the config.
  slot.seen.add(configId);
  if (typeof out !== 'string') return afterFailure(s, i, 'bad_result', 'hook call returned a non-string');
  if (out.startsWith('{"pending":')) {
    const id = Number(out.slice(11, -1));
    if (!Number.isSafeInteger(id)) return afterFailure(s, i, 'bad_result', 'invalid pending call');
    s.pending = { entry: i, slot, id };
    return waitOn(s);
  }
  return completed(s, i, out);
}

/** The pass waits on its pending entry: its capability requests if it made any, else WAIT. */
function waitOn(s: PassState): Step | undefined {
  const p = s.pending as NonNullable<PassState['pending']>;
  let out: unknown;
  try {
    out = p.slot.poll(p.id);
  } catch (e) {
    s.pending = undefined;
    return afterFailure(s, p.entry, 'threw', thrownMessage(e));
  }
  if (typeof out !== 'string') {
    s.pending = undefined;
    return afterFailure(s, p.entry, 'bad_result', 'hook call returned a non-string');
  }
  if (out === '') return WAIT;
  if (out.startsWith('[')) {
    try {
      if (!Array.isArray(JSON.parse(out))) throw new Error();
    } catch {
      s.pending = undefined;
      return afterFailure(s, p.entry, 'bad_result', 'invalid capability requests');
    }
    // Requests the host can answer at once (jwt.verify with a shared secret) are answered here,
    // and the hook goes on in this crossing's microtasks; the others end the crossing.
    let answered: unknown = '';
    try {
      answered = capabilities(p.entry, out);
    } catch {
      answered = '';
    }
    if (typeof answered === 'string' && answered !== '') {
      try {
        p.slot.deliver(answered);
      } catch (e) {
        s.pending = undefined;
        return afterFailure(s, p.entry, 'threw', thrownMessage(e));
      }
      return WAIT;
    }
    // Checked JSON: embedded as it is (the host checks every request again).
    return `{"a":"p","pe":${p.entry},"q":${out}}`;
  }
  s.pending = undefined;
  return completed(s, p.entry, out);
}

/** Runs entries from `from` on until the chain ends or waits. */
function run(s: PassState, from: number): Step {
  const e = s.p.e;
  const bit = s.req ? HOOK_REQUEST : HOOK_RESPONSE;
  for (let i = from; i < e.length; i++) {
    const entry = e[i] as WireEntry;
    const slotId = entry[0];
    if (slotId === -2) continue;
    if (slotId === -1) {
      // No version to attribute it to: no report, only the entry's policy.
      if (entry[2] === 1) return finish(s, { a: 'f', k: 'unavailable', m: `plugin ${String(entry[4])} has no active version` });
      continue;
    }
    const slot = slots.get(slotId);
    if (slot === undefined) {
      const stop = afterFailure(s, i, 'unavailable', MSG_NOT_LOADED);
      if (stop !== undefined) return stop;
      continue;
    }
    if ((slot.hooks & bit) === 0) continue;
    if (s.spent) {
      const stop = afterFailure(s, i, 'timeout', MSG_SPENT);
      if (stop !== undefined) return stop;
      continue;
    }
    const stop = callEntry(s, i, slot);
    if (stop !== undefined) return stop;
  }
  return finalResult(s);
}

/** Goes on after the pending entry settled or failed. */
function resume(s: PassState, step: Step | undefined, from: number): Step {
  return step !== undefined ? step : run(s, from);
}

function pendingUnknown(s: PassState): string {
  return `{"a":"p","pe":${(s.pending as NonNullable<PassState['pending']>).entry},"u":1}`;
}

/**
 * Follows a pending entry through the microtasks of this crossing (bounded rounds); the answer
 * goes into the holder, which the host reads after the crossing.
 */
function follow(s: PassState, holder: string[]): string[] {
  let left = PENDING_ROUNDS;
  holder[0] = pendingUnknown(s);
  const step = (): void => {
    try {
      if (passes.get(s.token) !== s || s.pending === undefined) return;
      const from = s.pending.entry + 1;
      const out = waitOn(s);
      if (out === WAIT) {
        if (--left > 0) void Promise.resolve().then(step);
        else holder[0] = pendingUnknown(s);
        return;
      }
      const next = out === undefined ? run(s, from) : out;
      if (next === WAIT) {
        left = PENDING_ROUNDS;
        holder[0] = pendingUnknown(s);
        void Promise.resolve().then(step);
        return;
      }
      holder[0] = next;
    } catch (e) {
      holder[0] = JSON.stringify({ a: 'f', k: 'crashed', m: `chain runner error: ${thrownMessage(e)}`, r: s.reports });
    }
  };
  void Promise.resolve().then(step);
  return holder;
}

function answer(s: PassState, out: Step): string | string[] {
  return out === WAIT ? follow(s, ['']) : out;
}

function stateOf(token: number): PassState | undefined {
  return passes.get(token) ?? (lastDone !== undefined && lastDone.token === token ? lastDone : undefined);
}

const gone = (token: number): string => JSON.stringify({ a: 'f', k: 'unavailable', m: `pass ${token} is not known to the chain runner`, r: [] });

/**
 * Runs a pass of each phase through a built-in slot 0 (host slots start at 1) once, when the
 * isolate is built: V8 compiles functions on first use, and that cost belongs to no tenant request.
 */
function warm(): void {
  const changed = `{"action":"continue","logs":[["info","warm"]]}${RESULT_SEP}x-warm\u00002`;
  const fn: GuestFn = () => changed;
  const none: GuestFn = () => '';
  slots.set(0, { hooks: HOOK_REQUEST | HOOK_RESPONSE, request: fn, response: fn, poll: none, deliver: none, cancel: none, seen: new Set() });
  generations.set(-1, { services: new Set(['warm']), configs: new Map([[0, '{}']]) });
  const saved = mark;
  mark = () => 0;
  try {
    for (const q of [1, 0] as const) {
      const p: WirePass = { q, id: 'warm', now: 0, g: -1, b: 1, e: [[0, 0, 1, 0], [0, 0, 0, 0]] };
      if (q === 1) p.w = NO_LINE;
      else p.st = 200;
      api.pass(-1, `${JSON.stringify(p)}${RESULT_SEP}x-warm${'\u0000'}1`);
    }
  } finally {
    mark = saved;
    slots.delete(0);
    generations.delete(-1);
    lastDone = undefined;
    passes.delete(-1);
  }
}

const api = {
  /** The host's callback between entries (an ivm.Callback; runs in the host) and the memory it shares (pass-wire.ts). */
  setMark(fn: Mark, caps: Capabilities, memory?: unknown): void {
    mark = fn;
    capabilities = caps;
    if (memory instanceof SharedArrayBuffer && memory.byteLength >= SHARED_BYTES) {
      clock = new Float64Array(memory, 0, 1);
      shared = new Int32Array(memory, 0, SHARED_BYTES / 4);
    } else {
      clock = undefined;
      shared = undefined;
    }
  },
  /** A loaded plugin version: its context's entry functions, handed over by reference. */
  install(slot: number, hooks: number, request: GuestFn, response: GuestFn, poll: GuestFn, deliver: GuestFn, cancel: GuestFn): void {
    slots.set(slot, { hooks, request, response, poll, deliver, cancel, seen: new Set() });
  },
  uninstall(slot: number): void {
    slots.delete(slot);
  },
  /** A chain generation: the services ctx.route may pick and the config (JSON) of each entry. */
  generation(g: number, json: string): void {
    const d = JSON.parse(json) as { s: string[]; c: Array<[number, string]> };
    generations.set(g, { services: new Set(d.s), configs: new Map(d.c) });
  },
  dropGeneration(g: number): void {
    generations.delete(g);
  },
  /** Runs one phase of a request's chain: the final answer, a pending one, or a holder (see follow). */
  pass(token: number, json: string): string | string[] {
    const cut = json.indexOf(RESULT_SEP);
    const p = JSON.parse(cut < 0 ? json : json.slice(0, cut)) as WirePass;
    p.h = cut < 0 ? '' : json.slice(cut + 1);
    const gen = generations.get(p.g);
    const s: PassState = {
      token,
      p,
      req: p.q === 1,
      gen: gen ?? NO_SERVICES,
      line: p.w ?? NO_LINE,
      headers: undefined,
      status: p.st ?? 0,
      service: undefined,
      body: p.bd,
      bodyReplaced: false,
      reports: [],
      responseOps: [],
      skips: [],
      spent: !(p.b > 0),
      pending: undefined,
      undo: undefined,
    };
    if (gen === undefined) return JSON.stringify({ a: 'f', k: 'unavailable', m: `chain generation ${p.g} is not installed in the isolate`, r: [] });
    if (passes.size >= MAX_PASSES) return JSON.stringify({ a: 'f', k: 'unavailable', m: 'too many pending chain passes in this isolate', r: [] });
    passes.set(token, s);
    return answer(s, run(s, 0));
  },
  /** Capability results for the pending entry; the hook goes on in this crossing's microtasks. */
  deliver(token: number, resultsJson: string): string | string[] {
    const s = passes.get(token);
    if (s === undefined || s.pending === undefined) return gone(token);
    try {
      s.pending.slot.deliver(resultsJson);
    } catch (e) {
      const p = s.pending;
      s.pending = undefined;
      return answer(s, resume(s, afterFailure(s, p.entry, 'threw', thrownMessage(e)), p.entry + 1));
    }
    return follow(s, ['']);
  },
  /** After the microtasks have drained: the pending entry's state now (it may wait on another call). */
  poll(token: number): string | string[] {
    const s = passes.get(token);
    if (s === undefined || s.pending === undefined) return gone(token);
    const from = s.pending.entry + 1;
    const out = waitOn(s);
    if (out === WAIT) return `{"a":"p","pe":${s.pending.entry}}`;
    return answer(s, resume(s, out, from));
  },
  /**
   * The host fails `entry` (a timeout, its capability limits, a crossing stopped while it ran, or
   * its CPU found over budget once it had finished): takes back its result if it had one, cancels
   * its pending call, reports the failure and goes on under its policy.
   */
  fail(token: number, entry: number, kind: WireFailure, message: string): string | string[] {
    const s = stateOf(token);
    if (s === undefined) return gone(token);
    if (s.pending !== undefined && s.pending.entry === entry) {
      try {
        s.pending.slot.cancel(s.pending.id);
      } catch {
        // its own context's problem; the call is given up either way
      }
      s.pending = undefined;
    }
    const u = s.undo;
    if (u !== undefined && u.entry === entry) {
      s.headers = u.headers;
      s.status = u.status;
      s.service = u.service;
      s.body = u.body;
      s.bodyReplaced = u.bodyReplaced;
      s.reports.length = u.reports;
      s.responseOps.length = u.responseOps;
      s.skips.length = u.skips;
    } else {
      // A report the entry made before it was stopped (none normally) gives way to the failure.
      const at = s.reports.findIndex((r) => r.e === entry);
      if (at >= 0) s.reports.length = at;
    }
    s.undo = undefined;
    passes.set(token, s);
    if (lastDone === s) lastDone = undefined;
    const stop = failed(s, entry, kind, message);
    return answer(s, stop !== undefined ? stop : run(s, entry + 1));
  },
  /** The host gives up on a pass without an answer. */
  forget(token: number): void {
    passes.delete(token);
    if (lastDone !== undefined && lastDone.token === token) lastDone = undefined;
  },
};

warm();
(globalThis as Record<string, unknown>).__isomeshRunner = api;
