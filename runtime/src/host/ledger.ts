// The node ledger: the numbers every data-plane worker must share so that quotas and rate limits hold
// for the node, not per worker (API.md "Workers"). It lives in SharedArrayBuffers that the main thread
// creates and hands to each worker thread; nothing in it is per-process.
//   - a row per tenant (TenantQuota's cells: rps bucket, concurrency, CPU window, rejections) with a
//     lock word, plus the tenant's open client connections and requests seen;
//   - the node's open client connections;
//   - a fixed-size hash table of rate-limit counters (fixed windows), under one lock;
//   - upstream cells, one per (tenant, service) and (tenant, service, endpoint): the circuit breaker's
//     active requests, an endpoint's in-flight requests, consecutive failures and ejection deadline —
//     so breakers, outlier ejection and least-request see the node, not one worker.
// Rows and cells are assigned by the main thread (their numbers travel with each tenant's config).

import { QUOTA_CELLS, QUOTA_IN_FLIGHT_CELL, type QuotaCells } from './quota.ts';
import { MAX_KEYS_PER_LIMIT, UNIT_SECONDS, type RateLimitStore, type RateLimitVerdict } from './ratelimit.ts';
import type { RateLimitUnit } from '../store/model.ts';

export const DEFAULT_TENANT_SLOTS = 4096;
/** Data-plane workers whose own shares are kept (so a dead worker's can be taken back). */
export const MAX_WORKERS = 64;
/** Rate-limit table entries (each 4 × int32); probes per lookup. */
const RL_ENTRIES = 1 << 16;
const RL_PROBES = 32;
/** Upstream cells (services + endpoints of every tenant). */
export const UPSTREAM_CELLS = 16384;
/** A released upstream cell is not reused before this (a request on an old snapshot may still release it). */
const UPSTREAM_COOL_MS = 60_000;

/** A clock every thread of the process reads alike (performance.now() has a per-thread origin). */
export function sharedNow(): number {
  return performance.timeOrigin + performance.now();
}

export interface LedgerBuffers {
  rows: SharedArrayBuffer;
  locks: SharedArrayBuffer;
  counts: SharedArrayBuffer;
  ratelimits: SharedArrayBuffer;
  /** Per worker and slot: [in flight, connections] it holds. */
  workers: SharedArrayBuffer;
  /** Per upstream cell: [count (active / in flight), consecutive failures] as int32. */
  upstream: SharedArrayBuffer;
  /** Per upstream cell: ejected until (sharedNow() ms), float64. */
  upstreamUntil: SharedArrayBuffer;
  /** Per worker and upstream cell: its share of the count. */
  upstreamWorkers: SharedArrayBuffer;
}

// counts: per slot [connections, requests]; then the node's connections and the number of tenants
// holding any connection.
const COUNT_STRIDE = 2;

function fnv64(s: string): [number, number] {
  // Two 32-bit FNV-1a lanes with different offsets: a 64-bit key, collisions ~2^-64.
  let a = 0x811c9dc5;
  let b = 0xcbf29ce4;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000197);
  }
  a >>>= 0;
  b >>>= 0;
  // 0,0 marks an empty entry.
  return a === 0 && b === 0 ? [1, 0] : [a, b];
}

export class NodeLedger {
  readonly buffers: LedgerBuffers;
  readonly slots: number;
  readonly #rows: Float64Array;
  readonly #locks: Int32Array;
  readonly #counts: Int32Array;
  /** Entries [key a, key b, window end (s since epoch), count] as uint32. */
  readonly #rl: Uint32Array;
  /** Main thread only: tenant → slot. */
  readonly #assigned = new Map<string, number>();
  #free: number[] = [];
  #next = 0;

  constructor(buffers?: LedgerBuffers, slots = DEFAULT_TENANT_SLOTS) {
    this.slots = buffers === undefined ? slots : buffers.rows.byteLength / (QUOTA_CELLS * 8);
    this.buffers = buffers ?? {
      rows: new SharedArrayBuffer(this.slots * QUOTA_CELLS * 8),
      // one lock per row, then the rate-limit table's lock
      locks: new SharedArrayBuffer((this.slots + 1) * 4),
      counts: new SharedArrayBuffer((this.slots * COUNT_STRIDE + 2) * 4),
      ratelimits: new SharedArrayBuffer(RL_ENTRIES * 4 * 4),
      workers: new SharedArrayBuffer((MAX_WORKERS * this.slots * 2 + MAX_WORKERS) * 4),
      upstream: new SharedArrayBuffer(UPSTREAM_CELLS * 2 * 4),
      upstreamUntil: new SharedArrayBuffer(UPSTREAM_CELLS * 8),
      upstreamWorkers: new SharedArrayBuffer(UPSTREAM_CELLS * MAX_WORKERS * 4),
    };
    this.#rows = new Float64Array(this.buffers.rows);
    this.#locks = new Int32Array(this.buffers.locks);
    this.#counts = new Int32Array(this.buffers.counts);
    this.#rl = new Uint32Array(this.buffers.ratelimits);
    this.#workers = new Int32Array(this.buffers.workers);
    this.#up = new Int32Array(this.buffers.upstream);
    this.#upUntil = new Float64Array(this.buffers.upstreamUntil);
    this.#upWorkers = new Int32Array(this.buffers.upstreamWorkers);
  }

  readonly #workers: Int32Array;
  readonly #up: Int32Array;
  readonly #upUntil: Float64Array;
  readonly #upWorkers: Int32Array;
  /** Main thread only: upstream key → cell; released cells cooling before reuse. */
  readonly #upAssigned = new Map<string, number>();
  readonly #upCooling: Array<{ cell: number; at: number }> = [];
  #upNext = 0;

  // ---- upstream cells (assigned by the main thread) ----------------------------------------

  /** The cell of an upstream key ("tenant\0s\0service" or "tenant\0e\0service\0authority"), assigned now if new (main thread). */
  upstreamCell(key: string): number | undefined {
    const have = this.#upAssigned.get(key);
    if (have !== undefined) return have;
    let cell: number | undefined;
    const head = this.#upCooling[0];
    if (head !== undefined && Date.now() - head.at >= UPSTREAM_COOL_MS) cell = this.#upCooling.shift()!.cell;
    else if (this.#upNext < UPSTREAM_CELLS) cell = this.#upNext++;
    if (cell === undefined) return undefined; // full: that endpoint keeps per-worker state
    Atomics.store(this.#up, cell * 2, 0);
    Atomics.store(this.#up, cell * 2 + 1, 0);
    this.#upUntil[cell] = 0;
    for (let w = 0; w < MAX_WORKERS; w++) Atomics.store(this.#upWorkers, w * UPSTREAM_CELLS + cell, 0);
    this.#upAssigned.set(key, cell);
    return cell;
  }

  /** Upstream keys of `tenant` assigned now (main thread). */
  upstreamKeys(tenant: string): string[] {
    const prefix = `${tenant}\u0000`;
    return [...this.#upAssigned.keys()].filter((k) => k.startsWith(prefix));
  }

  /** Gives a key's cell back (after a cooling time, since an old snapshot may still release into it). */
  releaseUpstream(key: string): void {
    const cell = this.#upAssigned.get(key);
    if (cell === undefined) return;
    this.#upAssigned.delete(key);
    this.#upCooling.push({ cell, at: Date.now() });
  }

  upstreamCount(cell: number): number {
    return Math.max(0, Atomics.load(this.#up, cell * 2));
  }

  /** Adds `delta` to a cell's count (and the worker's share of it); returns the count before. */
  upstreamAdd(worker: number, cell: number, delta: number): number {
    Atomics.add(this.#upWorkers, worker * UPSTREAM_CELLS + cell, delta);
    return Atomics.add(this.#up, cell * 2, delta);
  }

  upstreamFailures(cell: number): number {
    return Atomics.load(this.#up, cell * 2 + 1);
  }

  /** One more consecutive failure; returns the count after it. */
  upstreamFailure(cell: number): number {
    return Atomics.add(this.#up, cell * 2 + 1, 1) + 1;
  }

  upstreamSuccess(cell: number): void {
    if (Atomics.load(this.#up, cell * 2 + 1) !== 0) Atomics.store(this.#up, cell * 2 + 1, 0);
  }

  /** Ejected until, on the sharedNow() clock (0 = not ejected). */
  upstreamEjectedUntil(cell: number): number {
    return this.#upUntil[cell]!;
  }

  setUpstreamEjectedUntil(cell: number, until: number): void {
    this.#upUntil[cell] = until;
  }

  /** A worker's own share of a slot's in-flight requests (+1 / -1). */
  workerInFlight(worker: number, slot: number, delta: number): void {
    Atomics.add(this.#workers, (worker * this.slots + slot) * 2, delta);
  }

  /** A worker's own share of a slot's connections (+1 / -1). */
  workerConnection(worker: number, slot: number, delta: number): void {
    Atomics.add(this.#workers, (worker * this.slots + slot) * 2 + 1, delta);
  }

  /** Requests a worker has admitted since it started (its total, after the per-slot shares). */
  countWorkerRequest(worker: number): void {
    Atomics.add(this.#workers, MAX_WORKERS * this.slots * 2 + worker, 1);
  }

  workerRequests(worker: number): number {
    return Atomics.load(this.#workers, MAX_WORKERS * this.slots * 2 + worker);
  }

  /** Client connections a worker holds now. */
  workerConnections(worker: number): number {
    let n = 0;
    for (let slot = 0; slot < this.slots; slot++) n += Atomics.load(this.#workers, (worker * this.slots + slot) * 2 + 1);
    return n;
  }

  /** In-flight requests of a tenant on the node (read without the lock: a gauge). */
  inFlight(slot: number): number {
    return this.#rows[slot * QUOTA_CELLS + QUOTA_IN_FLIGHT_CELL]!;
  }

  /**
   * A worker died: what it held (in-flight admissions, connections) will never be released by it.
   * Takes its shares back from every row and the node's counts, and zeroes them (main thread).
   */
  reclaim(worker: number): void {
    for (let slot = 0; slot < this.slots; slot++) {
      const at = (worker * this.slots + slot) * 2;
      const inFlight = Atomics.exchange(this.#workers, at, 0);
      const conns = Atomics.exchange(this.#workers, at + 1, 0);
      if (inFlight > 0) {
        const lock = slot;
        for (let spins = 0; Atomics.compareExchange(this.#locks, lock, 0, 1) !== 0; spins++) if (spins > 64) Atomics.wait(this.#locks, lock, 1, 0.2);
        const cell = slot * QUOTA_CELLS + QUOTA_IN_FLIGHT_CELL;
        this.#rows[cell] = Math.max(0, this.#rows[cell]! - inFlight);
        Atomics.store(this.#locks, lock, 0);
        Atomics.notify(this.#locks, lock, 1);
      }
      for (let i = 0; i < conns; i++) this.removeConnection(slot);
    }
    Atomics.store(this.#workers, MAX_WORKERS * this.slots * 2 + worker, 0);
    for (let cell = 0; cell < this.#upNext; cell++) {
      const share = Atomics.exchange(this.#upWorkers, worker * UPSTREAM_CELLS + cell, 0);
      if (share !== 0) Atomics.sub(this.#up, cell * 2, share);
    }
  }

  // ---- tenant rows (assigned by the main thread) -------------------------------------------

  /** The tenant's row, assigned now if it has none (main thread). Throws when every row is taken. */
  assign(tenant: string): number {
    const have = this.#assigned.get(tenant);
    if (have !== undefined) return have;
    const slot = this.#free.pop() ?? this.#next++;
    if (slot >= this.slots) throw new Error(`node ledger is full (${this.slots} tenants)`);
    this.#rows.fill(0, slot * QUOTA_CELLS, (slot + 1) * QUOTA_CELLS);
    Atomics.store(this.#counts, slot * COUNT_STRIDE, 0);
    Atomics.store(this.#counts, slot * COUNT_STRIDE + 1, 0);
    this.#assigned.set(tenant, slot);
    return slot;
  }

  /** A removed tenant's row goes back to the pool (main thread). */
  unassign(tenant: string): void {
    const slot = this.#assigned.get(tenant);
    if (slot === undefined) return;
    this.#assigned.delete(tenant);
    this.#free.push(slot);
  }

  slotOf(tenant: string): number | undefined {
    return this.#assigned.get(tenant);
  }

  quotaCells(slot: number): QuotaCells {
    return { cells: this.#rows.subarray(slot * QUOTA_CELLS, (slot + 1) * QUOTA_CELLS), lock: { words: this.#locks, index: slot } };
  }

  // ---- connections and requests -------------------------------------------------------------

  get nodeConnections(): number {
    return Atomics.load(this.#counts, this.slots * COUNT_STRIDE);
  }

  connections(slot: number): number {
    return Atomics.load(this.#counts, slot * COUNT_STRIDE);
  }

  /** Tenants holding at least one connection. */
  get activeTenants(): number {
    return Atomics.load(this.#counts, this.slots * COUNT_STRIDE + 1);
  }

  /** Adds a connection to the tenant and the node; returns the counts before (add first, then judge: exact across threads). */
  addConnection(slot: number): { tenant: number; node: number } {
    const tenant = Atomics.add(this.#counts, slot * COUNT_STRIDE, 1);
    if (tenant === 0) Atomics.add(this.#counts, this.slots * COUNT_STRIDE + 1, 1);
    const node = Atomics.add(this.#counts, this.slots * COUNT_STRIDE, 1);
    return { tenant, node };
  }

  removeConnection(slot: number): void {
    if (Atomics.sub(this.#counts, slot * COUNT_STRIDE, 1) === 1) Atomics.sub(this.#counts, this.slots * COUNT_STRIDE + 1, 1);
    Atomics.sub(this.#counts, this.slots * COUNT_STRIDE, 1);
  }

  countRequest(slot: number): void {
    Atomics.add(this.#counts, slot * COUNT_STRIDE + 1, 1);
  }

  requests(slot: number): number {
    return Atomics.load(this.#counts, slot * COUNT_STRIDE + 1);
  }

  // ---- rate limits (RateLimitCounters' hit() over shared memory) ----------------------------

  /** Counts `hits` in the limit's current window for `values` (see RateLimitCounters.hit). */
  hit(limitKey: string, values: string, requestsPerUnit: number, unit: RateLimitUnit, hits = 1, nowMs = Date.now()): RateLimitVerdict {
    const unitSec = UNIT_SECONDS[unit];
    const end = (Math.floor(nowMs / 1000 / unitSec) + 1) * unitSec;
    const nowSec = Math.floor(nowMs / 1000);
    const resetSec = Math.max(1, Math.ceil((end * 1000 - nowMs) / 1000));
    const lock = this.slots;
    for (let spins = 0; Atomics.compareExchange(this.#locks, lock, 0, 1) !== 0; spins++) {
      if (spins > 64) Atomics.wait(this.#locks, lock, 1, 0.2);
    }
    let count: number;
    try {
      count = this.#bump(`${limitKey}\u0000${unit}\u0000${values}`, end, nowSec, hits) ?? this.#bump(`${limitKey}\u0000${unit}\u0000\u0000overflow`, end, nowSec, hits) ?? requestsPerUnit + hits;
    } finally {
      Atomics.store(this.#locks, lock, 0);
      Atomics.notify(this.#locks, lock, 1);
    }
    const over = count > requestsPerUnit;
    return { over, remaining: over ? 0 : requestsPerUnit - count, resetSec, limit: requestsPerUnit };
  }

  /** The new count of `key` in the window ending at `end`, or undefined when its probe run is full of live keys. */
  #bump(key: string, end: number, nowSec: number, hits: number): number | undefined {
    const [a, b] = fnv64(key);
    const t = this.#rl;
    let h = (a ^ (b >>> 7)) & (RL_ENTRIES - 1);
    let reuse = -1;
    for (let p = 0; p < RL_PROBES; p++, h = (h + 1) & (RL_ENTRIES - 1)) {
      const at = h * 4;
      const ka = t[at]!;
      const kb = t[at + 1]!;
      if (ka === a && kb === b) {
        if (t[at + 2] !== end) {
          t[at + 2] = end;
          t[at + 3] = 0;
        }
        t[at + 3]! += hits;
        return t[at + 3]!;
      }
      // An empty entry, or one whose window has ended (whatever its unit), can take the key.
      if (reuse === -1 && ((ka === 0 && kb === 0) || t[at + 2]! <= nowSec)) reuse = at;
      if (ka === 0 && kb === 0) break;
    }
    if (reuse === -1) return undefined;
    t[reuse] = a;
    t[reuse + 1] = b;
    t[reuse + 2] = end;
    t[reuse + 3] = hits;
    return hits;
  }
}

/** RateLimitCounters' shape over the node ledger (what the proxy and the rate-limit service call). */
export class SharedRateLimitCounters implements RateLimitStore {
  readonly #ledger: NodeLedger;

  constructor(ledger: NodeLedger) {
    this.#ledger = ledger;
  }

  hit(limitKey: string, values: string, requestsPerUnit: number, unit: RateLimitUnit, hits = 1, nowMs = Date.now()): RateLimitVerdict {
    return this.#ledger.hit(limitKey, values, requestsPerUnit, unit, hits, nowMs);
  }

  /** Counters expire with their windows; a removed tenant's are not scanned for. */
  forget(_tenant: string, _name?: string): void {}
}

export { MAX_KEYS_PER_LIMIT };
