// PassDrive: the host's side of one chain pass in a tenant isolate. It makes the crossings into the
// chain runner (sdk/src/guest/runner.ts) — normally exactly one — and measures what each entry cost:
//
//   - CPU and wall time per entry: the isolate's cpuTime at the start and end of each crossing and at
//     the runner's callback between entries (mark). The CPU verdict is taken there: an entry that used
//     more than the request had left fails as a timeout, a spent budget times out the entries after
//     it, failed entries are not charged. The entry a crossing ended on is judged after the crossing
//     (and taken back with runner.fail when it was over).
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

import { MARK_OVER, MARK_SPENT, MSG_OVER_BUDGET, type WirePass, type WireReport, type WireResult } from '@isomesh/sdk/pass-wire';
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
  /** The isolate's CPU so far (ns). */
  cpuNs(): bigint;
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
  readonly #req: boolean;
  #json: string;
  #token: number;
  #generation: number;
  /** CPU (ms) of the budget not yet charged to a succeeded entry. */
  #remaining: number;
  #cur: number;
  #entry: EntryState | undefined;
  #markCpu = 0n;
  /** When the current entry started (its wall time includes its waits). */
  #startWall = 0;
  #holding = true;
  #turns = 0;
  #reruns = 0;
  #parsed: WirePass | undefined;

  constructor(host: DriveHost, pass: { json: string; slots: readonly number[]; req: boolean; cpuBudgetMs: number }, hooks: PassHooks) {
    this.#host = host;
    this.#hooks = hooks;
    this.#limits = hooks.limits ?? {};
    this.#json = pass.json;
    this.#slots = pass.slots.slice();
    this.#req = pass.req;
    this.#remaining = pass.cpuBudgetMs;
    this.cpuNs = new Array<number>(pass.slots.length).fill(0);
    this.wallMs = new Array<number>(pass.slots.length).fill(0);
    this.#token = host.newToken();
    this.#generation = host.generation();
    this.#cur = this.#first();
  }

  run(): PassWire | Promise<PassWire> {
    if (this.#cur >= 0) this.#start(this.#cur);
    return this.#drive(this.#cross('pass', [this.#token, this.#json], this.#passTimeout()));
  }

  // ── called by the sandbox around and inside crossings ────────────────────────────────────────

  beginCrossing(cpu: bigint): void {
    this.#markCpu = cpu;
  }

  endCrossing(cpu: bigint | undefined): void {
    this.#account(this.#cur, cpu);
  }

  /** The runner's callback: `entry` finished (charged: it succeeded), `next` starts. Returns MARK_* bits. */
  mark(entry: number, next: number, charged: number): number {
    if (!Number.isInteger(entry) || entry < 0 || entry >= this.cpuNs.length) return 0;
    this.#account(entry, this.#host.cpuNs());
    let bits = 0;
    if (charged === 1) {
      const used = (this.cpuNs[entry] as number) / 1e6;
      if (used > this.#remaining) {
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
    const used = this.#cur >= 0 ? (this.cpuNs[this.#cur] as number) / 1e6 : 0;
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
        this.#overBudget(this.#cur, used);
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
    const left = e.limitMs - (this.cpuNs[e.index] as number) / 1e6;
    if (left <= 0) return this.#fail(e.index, 'timeout', 'plugin exceeded its CPU time per request');
    return this.#cross(call, args, left);
  }

  /** The runner fails `entry` (taking back its result if it had one) and goes on under its policy. */
  #fail(entry: number, kind: FailureKind, message: string): Crossing {
    // Nothing was running (no entry calls a plugin): the pass as a whole failed.
    if (entry < 0) return { ok: true, out: JSON.stringify({ a: 'f', k: kind, m: message, r: [] }) };
    return this.#cross('fail', [this.#token, entry, kind, message], this.#passTimeout());
  }

  #goneCrossing(): Crossing {
    return { ok: false, kind: 'unavailable', message: GONE, lost: true };
  }

  // ── bookkeeping ──────────────────────────────────────────────────────────────────────────────

  /** CPU since the last mark goes to `entry`; its wall time runs from its start (waits included). */
  #account(entry: number, cpu: bigint | undefined): void {
    if (entry >= 0 && entry < this.cpuNs.length) {
      if (cpu !== undefined) this.cpuNs[entry] = (this.cpuNs[entry] as number) + Number(cpu - this.#markCpu);
      if (entry === this.#cur) this.wallMs[entry] = performance.now() - this.#startWall;
    }
    if (cpu !== undefined) this.#markCpu = cpu;
  }

  #overBudget(entry: number, usedMs: number): void {
    (this.over ??= {})[entry] = `plugin used ${usedMs.toFixed(1)} ms CPU, over the ${Math.max(0, this.#remaining).toFixed(1)} ms left of its CPU time per request`;
  }

  #start(entry: number): void {
    this.#startWall = performance.now();
    this.#entry = { index: entry, limitMs: Math.max(0, this.#remaining) * WALL_BACKSTOP_FACTOR + WALL_BACKSTOP_SLACK_MS, startedAt: performance.now(), capabilityMs: 0, queuedMs: 0, rounds: 0 };
    this.#host.entered(this.#slots[entry] as number);
    this.#hooks.enter?.(entry);
  }

  /** The first entry that calls a plugin (where CPU goes until the runner's first mark). */
  #first(): number {
    const bit = this.#req ? 1 : 2;
    for (let i = 0; i < this.#slots.length; i++) {
      const slot = this.#slots[i] as number;
      if (slot < 0 && slot !== -3) continue;
      const hooks = this.#host.slotHooks(slot);
      if (hooks === undefined || (hooks & bit) !== 0) return i;
    }
    return -1;
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
    this.#json = JSON.stringify(p) + (cut < 0 ? '' : this.#json.slice(cut));
    this.#token = this.#host.newToken();
    this.#generation = this.#host.generation();
    this.#remaining = p.b;
    this.#turns = 0;
    this.#cur = this.#first();
    if (this.#cur < 0) return this.#done(JSON.stringify({ a: 'c', r: [] }));
    this.#start(this.#cur);
    return { next: this.#cross('pass', [this.#token, this.#json], this.#passTimeout()) };
  }
}
