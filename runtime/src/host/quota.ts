// TenantQuota: admission for one tenant — a requests-per-second token bucket, a concurrency cap and
// a CPU budget over a sliding one-second window of measured plugin CPU. Pure bookkeeping (no
// isolates), so a scheduler or a cordon supervisor can consult it with plain numbers.

import type { Quota } from '../store/model.ts';
import type { ErrorCode } from '../errors.ts';

/** 'queue': the tenant's plugin call queue in its cordon was full (the call was shed, not admitted). */
export type RejectReason = 'rps' | 'concurrency' | 'cpu' | 'queue';

export type AdmitResult =
  | { ok: true }
  | { ok: false; reason: RejectReason; code: ErrorCode; message: string; retryAfterSec?: number };

const SLOTS = 10;
const SLOT_MS = 100;

export class TenantQuota {
  #quota: Quota;
  #tokens: number;
  #refilledAt: number;
  #inFlight = 0;
  /** CPU ns per 100 ms slot over the last second (ring), and each slot's start time. */
  #cpuSlots = new Float64Array(SLOTS);
  #slotStart = new Float64Array(SLOTS);
  /** Admitted requests per slot (same ring), for the measured rps in status. */
  #reqSlots = new Float64Array(SLOTS);
  readonly rejections: Record<RejectReason, number> = { rps: 0, concurrency: 0, cpu: 0, queue: 0 };
  readonly #now: () => number;

  constructor(quota: Quota, now: () => number = Date.now) {
    this.#quota = quota;
    this.#now = now;
    this.#tokens = quota.requestsPerSecond;
    this.#refilledAt = now();
  }

  get quota(): Quota {
    return this.#quota;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  update(quota: Quota): void {
    if (quota.requestsPerSecond !== this.#quota.requestsPerSecond) {
      this.#tokens = Math.min(this.#tokens, quota.requestsPerSecond);
      if (this.#quota.requestsPerSecond === 0) this.#tokens = quota.requestsPerSecond;
    }
    this.#quota = quota;
  }

  admit(): AdmitResult {
    const q = this.#quota;
    const now = this.#now();
    if (q.maxConcurrentRequests > 0 && this.#inFlight >= q.maxConcurrentRequests) {
      return this.#reject('concurrency', 'ISOMESH_ERR_QUOTA_CONCURRENCY', `tenant has ${this.#inFlight} requests in flight (max ${q.maxConcurrentRequests})`);
    }
    const cpuMs = this.cpuMsLastSecond(now);
    if (q.cpuMsPerSecond > 0 && cpuMs >= q.cpuMsPerSecond) {
      return this.#reject('cpu', 'ISOMESH_ERR_QUOTA_CPU', `tenant plugins used ${cpuMs.toFixed(1)} ms CPU in the last second (max ${q.cpuMsPerSecond})`, this.#cpuRetryAfterSec(now));
    }
    if (q.requestsPerSecond > 0) {
      const rate = q.requestsPerSecond / 1000;
      this.#tokens = Math.min(q.requestsPerSecond, this.#tokens + (now - this.#refilledAt) * rate);
      this.#refilledAt = now;
      if (this.#tokens < 1) {
        const retryAfterSec = Math.max(1, Math.ceil((1 - this.#tokens) / q.requestsPerSecond));
        return this.#reject('rps', 'ISOMESH_ERR_QUOTA_RPS', `tenant exceeded ${q.requestsPerSecond} requests per second`, retryAfterSec);
      }
      this.#tokens -= 1;
    }
    this.#inFlight++;
    const i = this.#slot(now);
    this.#reqSlots[i] = (this.#reqSlots[i] ?? 0) + 1;
    return { ok: true };
  }

  /** A call shed after admission (queue full) still counts as a rejection of the tenant. */
  countRejection(reason: RejectReason): void {
    this.rejections[reason]++;
  }

  /** Requests admitted over the last second. */
  requestsLastSecond(now = this.#now()): number {
    let n = 0;
    for (let i = 0; i < SLOTS; i++) {
      if (now - (this.#slotStart[i] ?? 0) < SLOTS * SLOT_MS) n += this.#reqSlots[i] ?? 0;
    }
    return n;
  }

  release(): void {
    if (this.#inFlight > 0) this.#inFlight--;
  }

  /** Records measured plugin CPU. */
  addCpu(cpuNs: number): void {
    if (cpuNs <= 0) return;
    const now = this.#now();
    const i = this.#slot(now);
    this.#cpuSlots[i] = (this.#cpuSlots[i] ?? 0) + cpuNs;
  }

  cpuMsLastSecond(now = this.#now()): number {
    let ns = 0;
    for (let i = 0; i < SLOTS; i++) {
      if (now - (this.#slotStart[i] ?? 0) < SLOTS * SLOT_MS) ns += this.#cpuSlots[i] ?? 0;
    }
    return ns / 1e6;
  }

  #slot(now: number): number {
    const start = Math.floor(now / SLOT_MS) * SLOT_MS;
    const i = Math.floor(now / SLOT_MS) % SLOTS;
    if (this.#slotStart[i] !== start) {
      this.#slotStart[i] = start;
      this.#cpuSlots[i] = 0;
      this.#reqSlots[i] = 0;
    }
    return i;
  }

  /** Seconds until enough of the window's CPU ages out to fall under the budget (at least 1). */
  #cpuRetryAfterSec(now: number): number {
    const budgetNs = this.#quota.cpuMsPerSecond * 1e6;
    const live: Array<[number, number]> = [];
    for (let i = 0; i < SLOTS; i++) {
      const start = this.#slotStart[i] ?? 0;
      if (now - start < SLOTS * SLOT_MS) live.push([start, this.#cpuSlots[i] ?? 0]);
    }
    live.sort((a, b) => a[0] - b[0]);
    let total = live.reduce((n, [, ns]) => n + ns, 0);
    for (const [start, ns] of live) {
      total -= ns;
      if (total < budgetNs) return Math.max(1, Math.ceil((start + SLOTS * SLOT_MS - now) / 1000));
    }
    return 1;
  }

  #reject(reason: RejectReason, code: ErrorCode, message: string, retryAfterSec?: number): AdmitResult {
    this.rejections[reason]++;
    return retryAfterSec === undefined ? { ok: false, reason, code, message } : { ok: false, reason, code, message, retryAfterSec };
  }
}
