// TenantQuota: admission for one tenant — a requests-per-second token bucket, a concurrency cap and
// a CPU budget over a sliding one-second window of measured plugin CPU. Pure bookkeeping (no
// isolates), so a scheduler or a cordon supervisor can consult it with plain numbers.
//
// The state is a row of numbers (QuotaCells). In one process they are the quota's own; with several
// data-plane workers they are a row of a SharedArrayBuffer (ledger.ts) that every worker and the main
// thread use, under the row's lock: a tenant's quota then holds for the node, not per worker.

import type { Quota } from '../store/model.ts';
import type { ErrorCode } from '../errors.ts';

/** 'queue': the tenant's plugin call queue in its cordon was full (the call was shed, not admitted). */
export type RejectReason = 'rps' | 'concurrency' | 'cpu' | 'queue';

export type AdmitResult =
  | { ok: true }
  | { ok: false; reason: RejectReason; code: ErrorCode; message: string; retryAfterSec?: number };

const SLOTS = 10;
const SLOT_MS = 100;

// Cell layout of one tenant's row.
const TOKENS = 0;
const REFILLED_AT = 1;
const IN_FLIGHT = 2;
const CPU = 3; // SLOTS cells: CPU ns per 100 ms slot (ring)
const START = CPU + SLOTS; // SLOTS cells: each slot's start time
const REQS = START + SLOTS; // SLOTS cells: admitted requests per slot
const REJECT = REQS + SLOTS; // 4 cells: rejections by reason
const RATE = REJECT + 4; // requestsPerSecond the bucket was last filled for (-1: never)
export const QUOTA_CELLS = RATE + 1;
/** The in-flight cell of a row (the node ledger reclaims a dead worker's share from it). */
export const QUOTA_IN_FLIGHT_CELL = IN_FLIGHT;

const REASONS: readonly RejectReason[] = ['rps', 'concurrency', 'cpu', 'queue'];

/** Where a quota's numbers live: its own array, or a shared row with a lock word. */
export interface QuotaCells {
  cells: Float64Array;
  /** Int32Array over shared memory and the index of this row's lock; absent = single-threaded. */
  lock?: { words: Int32Array; index: number };
}

export class TenantQuota {
  #quota: Quota;
  readonly #c: Float64Array;
  readonly #lock: { words: Int32Array; index: number } | undefined;
  readonly #now: () => number;

  constructor(quota: Quota, now: () => number = Date.now, cells?: QuotaCells) {
    this.#quota = quota;
    this.#now = now;
    this.#c = cells?.cells ?? new Float64Array(QUOTA_CELLS);
    this.#lock = cells?.lock;
    this.#locked(() => {
      const c = this.#c;
      // A fresh row (or a rate change since it was filled): the bucket starts full.
      if (c[RATE] !== quota.requestsPerSecond) {
        c[TOKENS] = quota.requestsPerSecond;
        c[REFILLED_AT] = now();
        c[RATE] = quota.requestsPerSecond;
      }
    });
  }

  get quota(): Quota {
    return this.#quota;
  }

  get inFlight(): number {
    return this.#c[IN_FLIGHT]!;
  }

  /** Rejections by reason (a copy). */
  get rejections(): Record<RejectReason, number> {
    const c = this.#c;
    return { rps: c[REJECT]!, concurrency: c[REJECT + 1]!, cpu: c[REJECT + 2]!, queue: c[REJECT + 3]! };
  }

  update(quota: Quota): void {
    this.#locked(() => {
      const c = this.#c;
      if (quota.requestsPerSecond !== c[RATE]) {
        c[TOKENS] = c[RATE] === 0 || c[RATE] === -1 ? quota.requestsPerSecond : Math.min(c[TOKENS]!, quota.requestsPerSecond);
        c[RATE] = quota.requestsPerSecond;
      }
    });
    this.#quota = quota;
  }

  admit(): AdmitResult {
    return this.#locked(() => this.#admit());
  }

  #admit(): AdmitResult {
    const q = this.#quota;
    const c = this.#c;
    const now = this.#now();
    if (q.maxConcurrentRequests > 0 && c[IN_FLIGHT]! >= q.maxConcurrentRequests) {
      return this.#reject(1, 'concurrency', 'ISOMESH_ERR_QUOTA_CONCURRENCY', `tenant has ${c[IN_FLIGHT]} requests in flight (max ${q.maxConcurrentRequests})`);
    }
    const cpuMs = this.#cpuMs(now);
    if (q.cpuMsPerSecond > 0 && cpuMs >= q.cpuMsPerSecond) {
      return this.#reject(2, 'cpu', 'ISOMESH_ERR_QUOTA_CPU', `tenant plugins used ${cpuMs.toFixed(1)} ms CPU in the last second (max ${q.cpuMsPerSecond})`, this.#cpuRetryAfterSec(now));
    }
    if (q.requestsPerSecond > 0) {
      const rate = q.requestsPerSecond / 1000;
      const tokens = Math.min(q.requestsPerSecond, c[TOKENS]! + (now - c[REFILLED_AT]!) * rate);
      c[REFILLED_AT] = now;
      if (tokens < 1) {
        c[TOKENS] = tokens;
        const retryAfterSec = Math.max(1, Math.ceil((1 - tokens) / q.requestsPerSecond));
        return this.#reject(0, 'rps', 'ISOMESH_ERR_QUOTA_RPS', `tenant exceeded ${q.requestsPerSecond} requests per second`, retryAfterSec);
      }
      c[TOKENS] = tokens - 1;
    }
    c[IN_FLIGHT]!++;
    c[REQS + this.#slot(now)]!++;
    return { ok: true };
  }

  /** A call shed after admission (queue full) still counts as a rejection of the tenant. */
  countRejection(reason: RejectReason): void {
    this.#locked(() => {
      this.#c[REJECT + REASONS.indexOf(reason)]!++;
    });
  }

  /** Requests admitted over the last second. */
  requestsLastSecond(now = this.#now()): number {
    const c = this.#c;
    let n = 0;
    for (let i = 0; i < SLOTS; i++) if (now - c[START + i]! < SLOTS * SLOT_MS) n += c[REQS + i]!;
    return n;
  }

  release(): void {
    this.#locked(() => {
      if (this.#c[IN_FLIGHT]! > 0) this.#c[IN_FLIGHT]!--;
    });
  }

  /** Records measured plugin CPU. */
  addCpu(cpuNs: number): void {
    if (cpuNs <= 0) return;
    this.#locked(() => {
      this.#c[CPU + this.#slot(this.#now())]! += cpuNs;
    });
  }

  cpuMsLastSecond(now = this.#now()): number {
    return this.#cpuMs(now);
  }

  #cpuMs(now: number): number {
    const c = this.#c;
    let ns = 0;
    for (let i = 0; i < SLOTS; i++) if (now - c[START + i]! < SLOTS * SLOT_MS) ns += c[CPU + i]!;
    return ns / 1e6;
  }

  #slot(now: number): number {
    const c = this.#c;
    const start = Math.floor(now / SLOT_MS) * SLOT_MS;
    const i = Math.floor(now / SLOT_MS) % SLOTS;
    if (c[START + i] !== start) {
      c[START + i] = start;
      c[CPU + i] = 0;
      c[REQS + i] = 0;
    }
    return i;
  }

  /** Seconds until enough of the window's CPU ages out to fall under the budget (at least 1). */
  #cpuRetryAfterSec(now: number): number {
    const c = this.#c;
    const budgetNs = this.#quota.cpuMsPerSecond * 1e6;
    const live: Array<[number, number]> = [];
    for (let i = 0; i < SLOTS; i++) {
      const start = c[START + i]!;
      if (now - start < SLOTS * SLOT_MS) live.push([start, c[CPU + i]!]);
    }
    live.sort((a, b) => a[0] - b[0]);
    let total = live.reduce((n, [, ns]) => n + ns, 0);
    for (const [start, ns] of live) {
      total -= ns;
      if (total < budgetNs) return Math.max(1, Math.ceil((start + SLOTS * SLOT_MS - now) / 1000));
    }
    return 1;
  }

  #reject(index: number, reason: RejectReason, code: ErrorCode, message: string, retryAfterSec?: number): AdmitResult {
    this.#c[REJECT + index]!++;
    return retryAfterSec === undefined ? { ok: false, reason, code, message } : { ok: false, reason, code, message, retryAfterSec };
  }

  /** Runs fn holding the row's lock (a spin lock: held for a few hundred ns, never across an await). */
  #locked<T>(fn: () => T): T {
    const lock = this.#lock;
    if (lock === undefined) return fn();
    for (let spins = 0; Atomics.compareExchange(lock.words, lock.index, 0, 1) !== 0; spins++) {
      // Another thread holds it for a moment: spin a little, then sleep on the word until released.
      if (spins > 64) Atomics.wait(lock.words, lock.index, 1, 0.2);
    }
    try {
      return fn();
    } finally {
      Atomics.store(lock.words, lock.index, 0);
      Atomics.notify(lock.words, lock.index, 1);
    }
  }
}
