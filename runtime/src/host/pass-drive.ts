// PassDrive: the host's side of one chain pass in a tenant isolate. It makes the crossings into the
// chain runner (sdk/src/guest/runner.ts) — normally exactly one — and measures what each entry cost:
//
//   - CPU and wall time per entry: the thread's CPU clock (DriveHost.cpuNs) at the start and end of each crossing and at
//     the runner's callback between entries (mark). The CPU verdict is taken there: an entry that used
//     more than the request had left fails as a timeout, a spent budget times out the entries after
//     it, failed entries are not charged. The entry a crossing ended on is judged after the crossing
//     (and taken back with runner.fail when it was over).
//   - Lazy marks (pass-wire.ts): unless the pass is measured entry by entry (`each`: sampled passes,
//     traced requests, cordons — whose blackbox records every entry), the runner leaves out the mark
//     after a successful entry while the crossing is far from the budget, where the mark's answer
//     could only be 0. What the host sees is then a stretch of entries with one CPU figure. Verdicts
//     stay exact: every entry of a stretch but its last kept the crossing's wall time — so its CPU —
//     under the budget, and failures are always marked, so the stretch's last entry is over exactly
//     when the stretch's CPU is over what was left. The split of a stretch among its entries (for
//     per-plugin metrics) is estimated: in proportion to the CPU each plugin version used where it was
//     measured alone (DriveHost.weight). The entry running when a crossing is stopped or lost is the
//     one the runner wrote into the shared memory last.
//   - The wall-clock backstop: one isolated-vm timeout per crossing (not per entry), the budget left
//     × 1.5 + 2 ms; a crossing stopped by it fails the running entry and the runner goes on.
//   - Async hooks: the runner answers with the capability requests of the entry it waits on. Those
//     the host can answer at once (HostCapabilities.performSync: jwt.verify with a shared secret) are
//     handed back in the next crossing without leaving the tenant's turn; the others (sleep, fetch,
//     JWKS) are awaited with the tenant released (InvokeLimits.onIdle / resume), within the entry's
//     capability rounds and wall budget. A hook waiting on another call's progress waits for the
//     isolate's next turn within its idle budget.
//   - Loss of the isolate under the pass (memory limit, crash, rebuild while waiting): the running
//     entry fails under its policy; when that is 'open' the pass runs again without it in the new
//     isolate (the entries before it ran in an isolate that is gone, as after a cordon crash).

import { HOOK_REQUEST, HOOK_RESPONSE, MARK_OVER, MARK_SPENT, MSG_OVER_BUDGET, type WirePass, type WireReport, type WireResult } from '@isomesh/sdk/pass-wire';
import type { HostCapabilities } from './capabilities.ts';
import { WALL_BACKSTOP_FACTOR, WALL_BACKSTOP_SLACK_MS, type PassHooks, type PassWire } from './chain-pass.ts';
import type { FailureKind, InvokeLimits } from './sandbox.ts';

export type RunnerCall = 'pass' | 'deliver' | 'poll' | 'fail';

/**
 * A crossing's outcome. When it threw (not lost), `slot` is the plugin whose code the error came
 * from when its stack says so (an unhandled rejection surfaces only when the crossing ends).
 */
export type Crossing = { ok: true; out: string } | { ok: false; kind: FailureKind; message: string; lost: boolean; slot?: number };

/** What a drive needs of its sandbox. */
export interface DriveHost {
  /** One crossing into the runner (the sandbox sets itself up so that mark() reaches `drive`). */
  cross(drive: PassDrive, call: RunnerCall, args: unknown[], timeoutMs: number): Crossing;
  /** The CPU clock crossings are measured with (ns): the CPU of the thread that runs them. */
  cpuNs(): number;
  /** An identity of the isolate now (a pass that outlives it must not touch the next one). */
  generation(): number;
  /** The slot's hooks as bits, undefined when the slot is not loaded. */
  slotHooks(slot: number): number | undefined;
  capabilities: HostCapabilities;
  secrets(): Readonly<Record<string, string>>;
  /** Resolves when some call next uses the isolate, or after `ms`. */
  nextTurn(ms: number): Promise<void>;
  newToken(): number;
  /** The runner may drop the state it keeps for a pass. */
  forget(token: number): void;
  /** The entry running in the isolate is this slot's (a lost isolate is blamed on it). */
  entered(slot: number): void;
  /** CPU (ns) a call of the slot's version costs where it was measured alone (splits unmarked stretches). */
  weight(slot: number): number | undefined;
  /** The slot's version used `ns` in a call measured alone. */
  learn(slot: number, ns: number): void;
}

export const CAPABILITY_WALL_MS = 5_000;
export const CAPABILITY_ROUNDS = 8;
/** Crossings one pass may make (each a turn of the isolate). */
const MAX_TURNS = 10_000;
const GONE = 'the plugin context was unloaded or rebuilt while the call was waiting';

/**
 * isolated-vm arms a watchdog timer per timed call; its timer thread wakes at each distinct deadline.
 * Deadlines rounded up to a 10 ms grid (a backstop may fire that much later) make the passes of a
 * busy isolate share wake-ups: at most 100 per second instead of one per pass.
 */
const BACKSTOP_GRID_MS = 10;

export function backstopMs(timeoutMs: number): number {
  const now = performance.now();
  const deadline = Math.ceil((now + Math.max(1, timeoutMs)) / BACKSTOP_GRID_MS) * BACKSTOP_GRID_MS;
  return Math.max(1, Math.ceil(deadline - now));
}

type Step = { done: PassWire } | { next: Crossing } | { wait: () => Promise<Crossing> };

/** The state of the entry the pass currently waits on or runs. */
interface EntryState {
  index: number;
  /** Wall backstop of the entry (and its idle budget): the budget left when it started × 1.5 + 2. */
  limitMs: number;
  startedAt: number;
  capabilityMs: number;
  queuedMs: number;
  rounds: number;
}

export class PassDrive {
  readonly cpuNs: number[];
  readonly wallMs: number[];
  over: Record<number, string> | undefined;
  extra: WireReport[] | undefined;
  readonly #host: DriveHost;
  readonly #hooks: PassHooks;
  readonly #limits: InvokeLimits;
  readonly #slots: number[];
  /** Entry i calls a plugin in this phase, or is reported as not loaded (decided once, at the start). */
  readonly #runs: boolean[];
  #json: string;
  #token: number;
  #generation: number;
  /** CPU (ms) of the budget not yet charged to a succeeded entry. */
  #remaining: number;
  #cur: number;
  #entry: EntryState | undefined;
  #markCpu = 0;
  /** Every entry is marked (no lazy marks): the runner is told so in the shared memory. */
  readonly each: boolean;
  /**
   * The stretch since the last mark — one entry, or several when marks were left out: its first
   * entry, its CPU (ns) and wall time so far (an entry's wall time includes its waits), when it began.
   */
  #openFrom: number;
  #openNs = 0;
  #openWall = 0;
  #openAt = 0;
  #holding = true;
  #turns = 0;
  #reruns = 0;
  #parsed: WirePass | undefined;

  constructor(host: DriveHost, pass: { json: string; slots: readonly number[]; req: boolean; cpuBudgetMs: number; each?: boolean }, hooks: PassHooks) {
    this.#host = host;
    this.#hooks = hooks;
    this.#limits = hooks.limits ?? {};
    this.#json = pass.json;
    this.#slots = pass.slots.slice();
    this.#runs = this.#slots.map((slot) => {
      if (slot < 0 && slot !== -3) return false;
      const hooks = host.slotHooks(slot);
      return hooks === undefined || (hooks & (pass.req ? HOOK_REQUEST : HOOK_RESPONSE)) !== 0;
    });
    this.#remaining = pass.cpuBudgetMs;
    this.cpuNs = new Array<number>(pass.slots.length).fill(0);
    this.wallMs = new Array<number>(pass.slots.length).fill(0);
    this.#token = host.newToken();
    this.#generation = host.generation();
    this.#cur = this.#first();
    this.#openFrom = this.#cur;
    // A cordon's blackbox records each entry as it starts: it needs every mark.
    this.each = pass.each === true || hooks.enter !== undefined;
  }

  /** The entry the host last knew to run (-1: none yet). */
  get current(): number {
    return this.#cur;
  }

  run(): PassWire | Promise<PassWire> {
    if (this.#cur >= 0) this.#start(this.#cur);
    this.#openAt = performance.now();
    return this.#drive(this.#cross('pass', [this.#token, this.#json], this.#passTimeout()));
  }

  // ── called by the sandbox around and inside crossings ────────────────────────────────────────

  beginCrossing(cpu: number): void {
    this.#markCpu = cpu;
  }

  /** `running`: the entry the runner wrote into the shared memory last (it may have started entries unmarked). */
  endCrossing(cpu: number, running?: number): void {
    this.#account(cpu);
    this.#advance(running);
  }

  /** The runner's callback: `entry` finished (charged: it succeeded), `next` starts. Returns MARK_* bits. */
  mark(entry: number, next: number, charged: number): number {
    if (!Number.isInteger(entry) || entry < 0 || entry >= this.cpuNs.length) return 0;
    this.#account(this.#host.cpuNs());
    if (entry > this.#cur) this.#cur = entry; // the entries since the last mark ran unmarked
    const stretchMs = this.#openNs / 1e6;
    // The stretch's entries before `entry` succeeded (a failure is always marked): charged.
    const over = charged === 1 && stretchMs > this.#remaining;
    const beforeMs = this.#close(entry, charged !== 1 || over) / 1e6;
    this.#remaining -= beforeMs;
    let bits = 0;
    if (charged === 1) {
      // The verdict does not depend on the split: used > what is left ⟺ stretchMs > what was left.
      const used = stretchMs - beforeMs;
      if (over) {
        bits |= MARK_OVER;
        this.#overBudget(entry, used);
      } else {
        this.#remaining -= used;
        if (this.#remaining <= 0) bits |= MARK_SPENT;
      }
    }
    if (Number.isInteger(next) && next > entry && next < this.cpuNs.length) {
      this.#cur = next;
      this.#start(next);
    }
    return bits;
  }

  /**
   * The runner's callback for capability requests of the running entry: answered now when they
   * can be (jwt.verify with a shared secret), within the entry's rounds and wall budget; "" when
   * not — the crossing then ends with them and #step takes them on (and fails what is over).
   */
  capabilitiesNow(entry: number, requestsJson: string): string {
    this.#advance(entry);
    const e = this.#entry;
    if (e === undefined || entry !== this.#cur || entry !== e.index) return '';
    if (e.rounds + 1 > Math.max(0, this.#limits.capabilityRounds ?? CAPABILITY_ROUNDS)) return '';
    let requests: unknown;
    try {
      requests = JSON.parse(requestsJson);
    } catch {
      return '';
    }
    const wallMs = Math.max(0, this.#limits.capabilityWallMs ?? CAPABILITY_WALL_MS);
    const t0 = performance.now();
    const results = this.#host.capabilities.performSyncJson(requests, { secrets: this.#host.secrets(), now: Date.now(), wallLeftMs: wallMs - e.capabilityMs });
    if (results === undefined) return '';
    const took = performance.now() - t0;
    if (e.capabilityMs + took > wallMs) return '';
    e.rounds++;
    e.capabilityMs += took;
    return results;
  }

  // ── the loop ─────────────────────────────────────────────────────────────────────────────────

  #drive(c: Crossing): PassWire | Promise<PassWire> {
    for (;;) {
      const step = this.#step(c);
      if ('done' in step) return step.done;
      if ('wait' in step) return this.#driveAsync(step.wait);
      c = step.next;
    }
  }

  async #driveAsync(wait: () => Promise<Crossing>): Promise<PassWire> {
    let c = await wait();
    for (;;) {
      const step = this.#step(c);
      if ('done' in step) {
        await this.#regain();
        return step.done;
      }
      c = 'wait' in step ? await step.wait() : step.next;
    }
  }

  /** What to do after a crossing: the pass's answer, the next crossing (already made), or a wait. */
  #step(c: Crossing): Step {
    if (++this.#turns > MAX_TURNS) {
      if (this.#turns > MAX_TURNS + 2 * this.cpuNs.length) return this.#done(JSON.stringify({ a: 'f', k: 'timeout', m: 'async hook did not settle', r: [] }));
      if (c.ok) return { next: this.#fail(this.#cur, 'timeout', 'async hook did not settle') };
    }
    if (!c.ok) {
      if (c.lost) return this.#lost(c.kind, c.message);
      // An error of an entry that finished earlier in this crossing (a promise it left rejected):
      // its edits already reached the entries after it, so the pass runs again without it.
      const culprit = c.slot === undefined ? -1 : this.#slots.lastIndexOf(c.slot, this.#cur);
      if (culprit >= 0 && culprit < this.#cur) {
        this.#host.forget(this.#token);
        return this.#rerunWithout(culprit, c.kind, c.message);
      }
      return { next: this.#fail(this.#cur, c.kind, c.message) };
    }
    // A final answer is read only where it must be (the daemon decodes it): pending ones start so.
    const final = !c.out.startsWith('{"a":"p"');
    // The stretch the crossing ended in: the entry it ended on, and any run before it unmarked.
    const used = this.#openNs / 1e6;
    if (final && used <= this.#remaining) return this.#done(c.out);
    let r: WireResult;
    try {
      const cut = c.out.indexOf('\u0001');
      r = JSON.parse(cut < 0 ? c.out : c.out.slice(0, cut)) as WireResult;
    } catch {
      return this.#done(c.out); // decodePass reports the broken answer
    }
    if (r.a !== 'p') {
      // The entry the crossing ended on has not been judged by a mark, and it used more than was left.
      const last = r.r?.findLast((x) => x.e === this.#cur);
      if (last !== undefined && (last.o === 'ok' || last.o === 'respond')) {
        const beforeMs = this.#close(this.#cur, true) / 1e6;
        this.#remaining -= beforeMs;
        this.#overBudget(this.#cur, used - beforeMs);
        return { next: this.#fail(this.#cur, 'timeout', MSG_OVER_BUDGET) };
      }
      return this.#done(c.out, r);
    }
    const pe = typeof r.pe === 'number' && r.pe >= 0 && r.pe < this.cpuNs.length ? r.pe : this.#cur;
    if (pe !== this.#cur) {
      this.#cur = pe;
      this.#start(pe);
    }
    const e = this.#entry as EntryState;
    if (r.u === 1) return { next: this.#continue('poll', [this.#token]) };
    if (Array.isArray(r.q)) {
      const max = Math.max(0, this.#limits.capabilityRounds ?? CAPABILITY_ROUNDS);
      if (++e.rounds > max) return { next: this.#fail(pe, 'timeout', `plugin needed more than ${max} rounds of capability calls in one hook call`) };
      const wallMs = Math.max(0, this.#limits.capabilityWallMs ?? CAPABILITY_WALL_MS);
      const env = { secrets: this.#host.secrets(), now: Date.now(), wallLeftMs: wallMs - e.capabilityMs };
      const t0 = performance.now();
      const sync = this.#host.capabilities.performSyncJson(r.q, env);
      if (sync !== undefined) {
        // Answered at once (no wait): the pass keeps the tenant's turn and goes straight on.
        e.capabilityMs += performance.now() - t0;
        if (e.capabilityMs > wallMs) return { next: this.#fail(pe, 'timeout', `capability calls took longer than ${wallMs} ms in one hook call`) };
        return { next: this.#continue('deliver', [this.#token, sync]) };
      }
      const requests = r.q;
      return {
        wait: async () => {
          this.#idle();
          const results = await this.#host.capabilities.perform(requests, env);
          e.capabilityMs += performance.now() - t0;
          await this.#regain();
          if (this.#host.generation() !== this.#generation) return this.#goneCrossing();
          if (e.capabilityMs > wallMs) return this.#fail(pe, 'timeout', `capability calls took longer than ${wallMs} ms in one hook call`);
          return this.#continue('deliver', [this.#token, JSON.stringify(results)]);
        },
      };
    }
    // Waiting on something another call may settle: the isolate's next turn, within the idle budget.
    const idleLeft = e.limitMs - (performance.now() - e.startedAt - e.capabilityMs - e.queuedMs);
    if (idleLeft <= 0) return { next: this.#fail(pe, 'timeout', 'async hook did not settle within the CPU time per request') };
    return {
      wait: async () => {
        this.#idle();
        await this.#host.nextTurn(idleLeft);
        await this.#regain();
        if (this.#host.generation() !== this.#generation) return this.#goneCrossing();
        return this.#continue('poll', [this.#token]);
      },
    };
  }

  #done(json: string, parsed?: WireResult): Step {
    this.#close(this.#cur);
    this.#hooks.exit?.();
    const wire: PassWire = { json, cpuNs: this.cpuNs, wallMs: this.wallMs };
    if (parsed !== undefined) wire.parsed = parsed;
    if (this.over !== undefined) wire.over = this.over;
    if (this.extra !== undefined) wire.extra = this.extra;
    return { done: wire };
  }

  // ── crossings ────────────────────────────────────────────────────────────────────────────────

  #cross(call: RunnerCall, args: unknown[], timeoutMs: number): Crossing {
    return this.#host.cross(this, call, args, backstopMs(timeoutMs));
  }

  /** The backstop of a crossing that starts entries afresh: the budget left × 1.5 + 2 ms. */
  #passTimeout(): number {
    return Math.max(0, this.#remaining) * WALL_BACKSTOP_FACTOR + WALL_BACKSTOP_SLACK_MS;
  }

  /** A crossing that goes on with the current entry: within what is left of its backstop. */
  #continue(call: 'poll' | 'deliver', args: unknown[]): Crossing {
    const e = this.#entry as EntryState;
    const left = e.limitMs - ((this.cpuNs[e.index] as number) + this.#openNs) / 1e6;
    if (left <= 0) return this.#fail(e.index, 'timeout', 'plugin exceeded its CPU time per request');
    return this.#cross(call, args, left);
  }

  /** The runner fails `entry` (taking back its result if it had one) and goes on under its policy. */
  #fail(entry: number, kind: FailureKind, message: string): Crossing {
    // Nothing was running (no entry calls a plugin): the pass as a whole failed.
    if (entry < 0) return { ok: true, out: JSON.stringify({ a: 'f', k: kind, m: message, r: [] }) };
    // What the entry used so far is its own (not charged); the stretch's entries before it succeeded.
    if (entry === this.#cur) this.#remaining -= this.#close(entry, true) / 1e6;
    return this.#cross('fail', [this.#token, entry, kind, message], this.#passTimeout());
  }

  #goneCrossing(): Crossing {
    return { ok: false, kind: 'unavailable', message: GONE, lost: true };
  }

  // ── bookkeeping ──────────────────────────────────────────────────────────────────────────────

  /** CPU since the last reading goes to the open stretch; its wall time runs from its start (waits included). */
  #account(cpu: number): void {
    this.#openNs += cpu - this.#markCpu;
    this.#markCpu = cpu;
    this.#openWall = performance.now() - this.#openAt;
  }

  /** The runner started `entry` without a mark (lazy marks): it is the running one now. */
  #advance(entry: number | undefined): void {
    if (entry === undefined || !Number.isInteger(entry) || entry <= this.#cur || entry >= this.cpuNs.length) return;
    this.#cur = entry;
    this.#start(entry);
  }

  /**
   * Closes the open stretch at entry `last` (the next one opens after it): its CPU and wall time go
   * to the entries in it that ran — all to `last` when it holds only `last` (a measurement the
   * slot's weight learns from), else split in proportion to the slots' weights. When `last` failed
   * or went over budget, what it used says nothing of its weight: the entries before it get what
   * they cost alone (their weight; nothing when not known yet), `last` the rest. Answers the CPU (ns)
   * given to the entries before `last`.
   */
  #close(last: number, failed = false): number {
    const ns = this.#openNs;
    const wall = this.#openWall;
    const from = this.#openFrom;
    this.#openNs = 0;
    this.#openWall = 0;
    this.#openFrom = last + 1;
    this.#openAt = performance.now();
    if (last < 0 || last >= this.cpuNs.length) return 0;
    let ran: number[] | undefined;
    for (let i = Math.max(0, from); i < last; i++) if (this.#runs[i] === true) (ran ??= []).push(i);
    if (ran === undefined) {
      this.cpuNs[last] = (this.cpuNs[last] as number) + ns;
      this.wallMs[last] = (this.wallMs[last] as number) + wall;
      if (!failed && from === last && this.#slots[last]! > 0) this.#host.learn(this.#slots[last]!, ns);
      return 0;
    }
    ran.push(last);
    const n = ran.length - 1;
    let weights: number[];
    let total = 0;
    if (!failed) {
      weights = ran.map((i) => Math.max(1, this.#host.weight(this.#slots[i]!) ?? 1000));
      for (const w of weights) total += w;
    } else {
      // The entries before `last` get their weight (ns; 0 when not known), `last` the rest — or,
      // when the stretch holds less than their weights, it is split among them in that proportion.
      weights = ran.map((i, k) => (k < n ? (this.#host.weight(this.#slots[i]!) ?? 0) : 0));
      let known = 0;
      for (const w of weights) known += w;
      weights[n] = Math.max(0, ns - known);
      total = Math.max(ns, known);
      if (total <= 0) {
        weights[n] = 1;
        total = 1;
      }
    }
    let before = 0;
    for (let k = 0; k < n; k++) {
      const i = ran[k]!;
      const share = Math.round((ns * weights[k]!) / total);
      this.cpuNs[i] = (this.cpuNs[i] as number) + share;
      this.wallMs[i] = (this.wallMs[i] as number) + (wall * weights[k]!) / total;
      before += share;
    }
    this.cpuNs[last] = (this.cpuNs[last] as number) + (ns - before);
    this.wallMs[last] = (this.wallMs[last] as number) + (wall * weights[n]!) / total;
    return before;
  }

  #overBudget(entry: number, usedMs: number): void {
    (this.over ??= {})[entry] = `plugin used ${usedMs.toFixed(1)} ms CPU, over the ${Math.max(0, this.#remaining).toFixed(1)} ms left of its CPU time per request`;
  }

  #start(entry: number): void {
    this.#entry = { index: entry, limitMs: Math.max(0, this.#remaining) * WALL_BACKSTOP_FACTOR + WALL_BACKSTOP_SLACK_MS, startedAt: performance.now(), capabilityMs: 0, queuedMs: 0, rounds: 0 };
    this.#host.entered(this.#slots[entry] as number);
    this.#hooks.enter?.(entry);
  }

  /** The first entry that calls a plugin (where CPU goes until the runner's first mark). */
  #first(): number {
    return this.#runs.indexOf(true);
  }

  #idle(): void {
    this.#hooks.exit?.();
    if (!this.#holding || this.#limits.onIdle === undefined) return;
    this.#holding = false;
    try {
      this.#limits.onIdle();
    } catch {}
  }

  async #regain(): Promise<void> {
    if (this.#holding || this.#limits.resume === undefined) return;
    const t0 = performance.now();
    try {
      await this.#limits.resume();
    } catch {}
    if (this.#entry !== undefined) this.#entry.queuedMs += performance.now() - t0;
    this.#holding = true;
  }

  /**
   * The isolate is gone under the pass (or it could not go on): the running entry fails under its
   * policy; 'open' → the pass runs again without it, in the isolate the sandbox builds next.
   */
  #lost(kind: FailureKind, message: string): Step {
    return this.#rerunWithout(this.#cur, kind, message);
  }

  /** Entry `cur` failed with the pass's state gone: closed → the pass fails; open → it runs again without the entry. */
  #rerunWithout(cur: number, kind: FailureKind, message: string): Step {
    const cut = this.#json.indexOf('\u0001');
    const p = (this.#parsed ??= JSON.parse(cut < 0 ? this.#json : this.#json.slice(0, cut)) as WirePass);
    const entry = p.e[cur];
    if (entry === undefined) return this.#done(JSON.stringify({ a: 'f', k: kind, m: message, r: [] }));
    // What the lost attempt cost is the failed entry's: the other entries' reports are gone with it.
    this.#close(this.#cur, true);
    let spent = 0;
    for (let i = 0; i < this.cpuNs.length; i++) {
      if (i === cur) continue;
      spent += this.cpuNs[i] as number;
      this.cpuNs[i] = 0;
    }
    this.cpuNs[cur] = (this.cpuNs[cur] as number) + spent;
    (this.extra ??= []).push({ e: cur, o: kind, m: message });
    if (entry[2] === 1 || ++this.#reruns > p.e.length) return this.#done(JSON.stringify({ a: 'f', k: kind, m: message, r: [] }));
    entry[0] = -2;
    this.#slots[cur] = -2;
    this.#runs[cur] = false;
    this.#json = JSON.stringify(p) + (cut < 0 ? '' : this.#json.slice(cut));
    this.#token = this.#host.newToken();
    this.#generation = this.#host.generation();
    this.#remaining = p.b;
    this.#turns = 0;
    this.#cur = this.#first();
    if (this.#cur < 0) return this.#done(JSON.stringify({ a: 'c', r: [] }));
    this.#openFrom = this.#cur;
    this.#start(this.#cur);
    return { next: this.#cross('pass', [this.#token, this.#json], this.#passTimeout()) };
  }
}
