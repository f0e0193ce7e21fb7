// ctx.rateLimit: token buckets local to the tenant's isolate. Bounded in keys so a plugin that
// rate-limits by an attacker-chosen key cannot grow the heap without limit.

import type { RateLimitOptions, RateLimitResult } from '../types.ts';

interface Bucket {
  tokens: number;
  at: number;
  limit: number;
  windowMs: number;
}

export const MAX_BUCKETS = 10_000;
const MAX_KEY = 512;

export class TokenBuckets {
  #buckets = new Map<string, Bucket>();

  take(key: unknown, options: RateLimitOptions, now: number): RateLimitResult {
    if (typeof key !== 'string' || key.length === 0 || key.length > MAX_KEY) {
      throw new TypeError(`ctx.rateLimit: key must be a string of 1..${MAX_KEY} characters`);
    }
    const limit = options?.limit;
    const windowMs = options?.windowMs;
    if (!Number.isFinite(limit) || limit < 1 || !Number.isFinite(windowMs) || windowMs <= 0) {
      throw new TypeError('ctx.rateLimit: limit must be >= 1 and windowMs > 0');
    }
    let b = this.#buckets.get(key);
    if (b === undefined || b.limit !== limit || b.windowMs !== windowMs) {
      b = { tokens: limit, at: now, limit, windowMs };
      if (this.#buckets.size >= MAX_BUCKETS) {
        // Evict the oldest-inserted key (Map keeps insertion order; taking re-inserts, so it is LRU).
        const oldest = this.#buckets.keys().next().value;
        if (oldest !== undefined) this.#buckets.delete(oldest);
      }
    } else {
      this.#buckets.delete(key);
      const rate = limit / windowMs;
      b.tokens = Math.min(limit, b.tokens + Math.max(0, now - b.at) * rate);
      b.at = now;
    }
    this.#buckets.set(key, b);
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { allowed: true, remaining: Math.floor(b.tokens), retryAfterMs: 0 };
    }
    const retryAfterMs = Math.ceil((1 - b.tokens) * (windowMs / limit));
    return { allowed: false, remaining: 0, retryAfterMs };
  }

  get size(): number {
    return this.#buckets.size;
  }
}
