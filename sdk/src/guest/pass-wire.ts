// The wire between the host and the chain runner (runner.ts): one phase of one request's chain goes
// into the tenant's isolate as one JSON string and comes back as one. Only strings and numbers
// cross (the isolate boundary, and inside the isolate the boundary between the runner's context and
// each plugin's); the host checks everything that comes back (verdict.ts).
//
// Compact on purpose: this is encoded and parsed once per request phase.

/** What a failed chain entry reports (the host maps each to an ISOMESH_ERR_PLUGIN_* code). */
export type WireFailure = 'threw' | 'timeout' | 'memory' | 'crashed' | 'bad_result' | 'unavailable';
export type WireOutcome = 'ok' | 'respond' | WireFailure;

/**
 * One chain entry: the plugin version's slot in the isolate (-1: the plugin has no active version;
 * -2: left out by the host, neither run nor reported), the config id, 1 when its failure policy is
 * closed, the body limit it declared for this phase (0: no body access), and for slot -1 the plugin's
 * name (for the error message).
 */
export type WireEntry = [slot: number, configId: number, closed: 0 | 1, bodyLimit: number, plugin?: string];

/** The request as a hook sees it, without headers and body (which change from entry to entry). */
export interface WireRequestLine {
  method: string;
  path: string;
  query: string;
  host: string;
  remoteAddress: string;
  originalDestination?: string;
  route?: string;
  service?: string;
}

/** The pass as runner.pass() takes it: `${JSON of WirePass}${RESULT_SEP}${the headers, flat}`. */
export interface WirePass {
  /** 1: onRequest, 0: onResponse. */
  q: 0 | 1;
  id: string;
  /** Host clock (ms) for ctx.rateLimit. */
  now: number;
  /** The chain generation: its configs and services were installed with runner.generation(). */
  g: number;
  /** CPU (ms) left of cpuMsPerRequest; <= 0: every entry times out without running. */
  b: number;
  /** onRequest: the request line. */
  w?: WireRequestLine;
  /** The headers, flat (protocol.ts): not in the pass's JSON but after it, past RESULT_SEP (handed to the first entry as it is). */
  h?: string;
  /** onResponse: the upstream status. */
  st?: number;
  /** Base64 of the buffered body, when an entry declared body access for this phase. */
  bd?: string;
  e: WireEntry[];
}

/** One entry that ran (or was failed without running). `m`: message of a failure. */
export interface WireReport {
  e: number;
  o: WireOutcome;
  m?: string;
  /** Logs, metric updates and dropped metric updates the call reported (checked in the isolate). */
  l?: unknown;
  x?: unknown;
  d?: number;
}

/**
 * The runner's answer. a: 'c' continue, 'r' respond (onRequest's early answer), 'f' a closed entry
 * failed, 'p' pending. Final answers carry one report per entry that ran. The headers follow the
 * JSON flat after RESULT_SEP, only when some entry changed them (or gave a response's); absent: the
 * input headers, unchanged.
 */
export interface WireResult {
  a: 'c' | 'r' | 'f' | 'p';
  /** ctx.route's service. */
  s?: string;
  /** respond: the status; onResponse continue: the status when an entry changed it (or ctx.respond replaced it). */
  st?: number;
  /** respond: the body text; continue: base64 of a body an entry replaced. */
  bd?: string;
  /** a = 'f': the failure and its message. */
  k?: WireFailure;
  m?: string;
  r?: WireReport[];
  /** onRequest continue: ctx.responseHeaders edits of every entry, in chain order, and the entries that called ctx.skipOnResponse(). */
  rh?: unknown[];
  sk?: number[];
  /** a = 'p': the entry the pass waits on, the capability requests to perform (absent: it waits on another call), u = 1: settle not known yet (poll again). */
  pe?: number;
  q?: unknown[];
  u?: 1;
}

/** Bits of a slot's hooks. */
export const HOOK_REQUEST = 1;
export const HOOK_RESPONSE = 2;

/**
 * The host's callback between entries: `mark(entry, next, charged)` after `entry` finished and before
 * `next` runs. charged = 1 when the entry succeeded (its CPU counts against the request's budget).
 * The answer's bits: MARK_OVER — the entry used more CPU than was left (it failed with a timeout);
 * MARK_SPENT — no CPU is left for the entries after it.
 */
export const MARK_OVER = 1;
export const MARK_SPENT = 2;

/**
 * Lazy marks. A mark costs a crossing back into the host (≈ 1 µs alone, several under load), and
 * between two entries it can only change the outcome when the request is near its CPU budget. The
 * host shares a 16-byte SharedArrayBuffer with the runner (setMark's third argument):
 *   - float64 at SHARED_CLOCK: the host's Date.now() when the crossing began (written before it reads
 *     the isolate's CPU clock);
 *   - int32 at SHARED_EACH: 1 when every entry must be marked (the host measures each entry of this
 *     pass, or the crossing is not a pass's first), 0 when marks may be left out;
 *   - int32 at SHARED_RUNNING: the entry the runner calls now (written before each hook call), which
 *     the host reads after a crossing (a stopped or lost crossing is blamed on it).
 * With SHARED_EACH 0 the runner leaves out the mark after an entry that succeeded while
 * (Date.now() − crossing start) + LAZY_MARGIN_MS < the pass's budget: the isolate's CPU in a
 * synchronous crossing cannot exceed its wall time, Date.now() is off by less than 1 ms, so no entry
 * so far can be over budget and some budget is left — the mark would have answered 0. Failed entries
 * are always marked (their CPU is not charged). The host then splits the CPU of the unmarked stretch
 * among its entries (pass-drive.ts).
 */
export const SHARED_BYTES = 16;
export const SHARED_CLOCK = 0;
export const SHARED_EACH = 2;
export const SHARED_RUNNING = 3;
export const LAZY_MARGIN_MS = 2;

/** Report messages the host fills in (it knows the figures or names the runner does not). */
export const MSG_OVER_BUDGET = '\u0000over-budget';
export const MSG_NOT_LOADED = '\u0000not-loaded';
export const MSG_SPENT = 'the request used up its CPU time per request in earlier plugins';

/** Pending answers the runner's microtask loop gives up with: poll again once microtasks have drained. */
export const PENDING_ROUNDS = 64;
