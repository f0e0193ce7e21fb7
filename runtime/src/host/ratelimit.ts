// Self-service rate limits (API.md "Rate limits"): fixed-window counters keyed by (tenant, rate limit,
// descriptor values), one model for both data planes — the built-in proxy applies a tenant's limits
// before the chain (applyRateLimits), the rate-limit service answers Envoy's ShouldRateLimit from the
// same counters (RateLimitCounters.hit). Windows are aligned to the unit (a "minute" window starts at
// :00), as Envoy's reference rate-limit service does, so retry-after is the time to the window's end.
//
// Memory is bounded: each rate limit keeps at most MAX_KEYS_PER_LIMIT distinct descriptor values per
// window; further values share one overflow counter (so a client cannot escape a per-path limit by
// inventing paths, nor grow the node's memory without bound). A window's counters are dropped when
// it ends.

import type { RateLimit, RateLimitUnit } from '../store/model.ts';

export const UNIT_SECONDS: Readonly<Record<RateLimitUnit, number>> = Object.freeze({ second: 1, minute: 60, hour: 3600, day: 86400 });

export const MAX_KEYS_PER_LIMIT = 10_000;
const OVERFLOW = '\u0000overflow';

export interface RateLimitVerdict {
  over: boolean;
  /** Requests left in the window after this hit (0 when over). */
  remaining: number;
  /** Seconds until the window ends (≥ 1). */
  resetSec: number;
  /** The limit's requestsPerUnit. */
  limit: number;
}

/** What a rate limit's descriptors read from one request. */
export interface RequestFacts {
  remoteAddress: string;
  path: string;
  method: string;
  route?: string;
  /** A request header's value (lower-case name); repeated headers joined with ", "; undefined when absent. */
  header(name: string): string | undefined;
}

interface Window {
  start: number;
  counts: Map<string, number>;
}

/** What counts rate-limit hits: in this process (RateLimitCounters) or node-wide (ledger.ts). */
export interface RateLimitStore {
  hit(limitKey: string, values: string, requestsPerUnit: number, unit: RateLimitUnit, hits?: number, nowMs?: number): RateLimitVerdict;
  forget(tenant: string, name?: string): void;
}

/** Fixed-window counters; `limitKey` identifies one rate limit of one tenant (see limitKey()). */
export class RateLimitCounters implements RateLimitStore {
  readonly #windows = new Map<string, Window>();

  /** Counts `hits` against the limit's current window for `values`; over when the window's total exceeds the limit. */
  hit(limitKey: string, values: string, requestsPerUnit: number, unit: RateLimitUnit, hits = 1, nowMs = Date.now()): RateLimitVerdict {
    const unitMs = UNIT_SECONDS[unit] * 1000;
    const start = Math.floor(nowMs / unitMs) * unitMs;
    const windowKey = `${limitKey}\u0000${unit}`;
    let w = this.#windows.get(windowKey);
    if (w === undefined || w.start !== start) {
      w = { start, counts: new Map() };
      this.#windows.set(windowKey, w);
    }
    let key = values;
    if (!w.counts.has(key) && w.counts.size >= MAX_KEYS_PER_LIMIT) key = OVERFLOW;
    const count = (w.counts.get(key) ?? 0) + hits;
    w.counts.set(key, count);
    const resetSec = Math.max(1, Math.ceil((start + unitMs - nowMs) / 1000));
    const over = count > requestsPerUnit;
    return { over, remaining: over ? 0 : requestsPerUnit - count, resetSec, limit: requestsPerUnit };
  }

  /** Drops every counter of a tenant (deleted tenant), or of one of its rate limits. */
  forget(tenant: string, name?: string): void {
    const prefix = name === undefined ? `${tenant}\u0000` : limitKey(tenant, name);
    for (const key of this.#windows.keys()) if (key.startsWith(prefix)) this.#windows.delete(key);
  }

  /** Windows currently kept (for tests and status). */
  get size(): number {
    return this.#windows.size;
  }
}

/** The counter namespace of one rate limit of one tenant. Tenant and rate-limit names cannot hold NUL. */
export function limitKey(tenant: string, name: string): string {
  return `${tenant}\u0000${name}\u0000`;
}

/**
 * The descriptor values a rate limit counts this request under, joined into one key; undefined when the
 * request is not subject to it (a fixed `value` differs, or a header it reads is absent — as Envoy does
 * not generate a descriptor for a missing header).
 */
export function descriptorValues(rl: RateLimit, facts: RequestFacts): string | undefined {
  let out = '';
  for (const d of rl.descriptors) {
    let v: string | undefined;
    switch (d.key) {
      case 'remote_address':
        v = facts.remoteAddress;
        break;
      case 'path':
        v = facts.path;
        break;
      case 'method':
        v = facts.method;
        break;
      case 'route':
        v = facts.route;
        break;
      default:
        v = facts.header(d.key.slice(7));
    }
    if (v === undefined || (d.value !== undefined && v !== d.value)) return undefined;
    out += `${v}\u0000`;
  }
  return out;
}

export interface RateLimitDecision {
  /** The first enforcing rate limit the request went over, with its verdict; undefined = admitted. */
  over?: { rateLimit: RateLimit; verdict: RateLimitVerdict };
  /** Every rate limit that applied, with its result (for metrics). */
  results: Array<{ rateLimit: RateLimit; result: 'ok' | 'over' | 'shadow_over' }>;
}

/** Applies every rate limit of a tenant to one request (each applicable limit counts the request). */
export function applyRateLimits(tenant: string, limits: readonly RateLimit[], facts: RequestFacts, counters: RateLimitStore, nowMs = Date.now()): RateLimitDecision {
  const decision: RateLimitDecision = { results: [] };
  for (const rl of limits) {
    const values = descriptorValues(rl, facts);
    if (values === undefined) continue;
    const verdict = counters.hit(limitKey(tenant, rl.name), values, rl.limit.requestsPerUnit, rl.limit.unit, 1, nowMs);
    if (!verdict.over) decision.results.push({ rateLimit: rl, result: 'ok' });
    else if (rl.shadow) decision.results.push({ rateLimit: rl, result: 'shadow_over' });
    else {
      decision.results.push({ rateLimit: rl, result: 'over' });
      decision.over ??= { rateLimit: rl, verdict };
    }
  }
  return decision;
}
