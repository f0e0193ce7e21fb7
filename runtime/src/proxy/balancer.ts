// Endpoint selection for one service: smooth weighted round robin (nginx's algorithm: even
// interleaving, exact shares), least request (fewest in-flight per unit of weight), and a
// consistent-hash ring. Outlier detection ejects an endpoint after `consecutive5xx` failures for
// `ejectionMs`; when every endpoint is ejected the picker ignores ejection (panic mode) rather than
// failing all traffic.

import type { Endpoint, Service } from '../store/model.ts';

/**
 * An endpoint's live state. Counts change through methods, so the state may live in this thread
 * (LocalEndpointState) or in the node ledger, shared by every data-plane worker (registry.ts).
 */
export interface EndpointState {
  readonly address: string;
  readonly port: number;
  readonly weight: number;
  /** "address:port" ("[v6]:port"), also the connection pool key. */
  readonly authority: string;
  /** Requests sent to it and not finished (least_request's input). */
  readonly inFlight: number;
  /** Smooth weighted round robin's running weight: per picker thread by design. */
  currentWeight: number;
  readonly consecutiveFailures: number;
  /** Ejected until (this thread's performance.now() clock); ≤ now = not ejected. */
  readonly ejectedUntil: number;
  addInFlight(delta: number): void;
  /** One more consecutive failure; returns the count after it. */
  failure(): number;
  success(): void;
  /** Ejects until `until` and starts counting failures again. */
  eject(until: number): void;
}

export function authorityOf(e: Pick<Endpoint, 'address' | 'port'>): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

export function weightOf(e: Endpoint): number {
  return Number.isFinite(e.weight) && e.weight >= 0 ? e.weight : 1;
}

export class LocalEndpointState implements EndpointState {
  readonly address: string;
  readonly port: number;
  weight: number;
  readonly authority: string;
  inFlight = 0;
  currentWeight = 0;
  consecutiveFailures = 0;
  ejectedUntil = 0;

  constructor(e: Endpoint) {
    this.address = e.address;
    this.port = e.port;
    this.weight = weightOf(e);
    this.authority = authorityOf(e);
  }

  addInFlight(delta: number): void {
    this.inFlight += delta;
  }

  failure(): number {
    return ++this.consecutiveFailures;
  }

  success(): void {
    this.consecutiveFailures = 0;
  }

  eject(until: number): void {
    this.ejectedUntil = until;
    this.consecutiveFailures = 0;
  }
}

/** FNV-1a then murmur3's finaliser: cheap, and spreads similar keys ("ep#1", "ep#2") over the ring. */
export function hash32(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const RING_POINTS_PER_WEIGHT = 64;
const RING_MAX_POINTS = 8192;

export class EndpointPicker {
  readonly endpoints: EndpointState[];
  readonly #lb: Service['lb'];
  readonly #ejectAfter: number;
  readonly #ejectionMs: number;
  #cursor = 0;
  #ringHashes: Uint32Array = new Uint32Array(0);
  #ringOwners: Uint16Array = new Uint16Array(0);

  /**
   * `states` gives the live state of each endpoint (the tenant's LiveRegistry, so health and counts
   * survive a new configuration); without it each endpoint gets fresh state.
   */
  constructor(service: Pick<Service, 'endpoints' | 'lb' | 'circuitBreaker'>, states?: (e: Endpoint) => EndpointState) {
    this.endpoints = service.endpoints.map((e) => states?.(e) ?? new LocalEndpointState(e));
    // If every weight is 0, treat them as equal rather than refusing traffic.
    if (this.endpoints.length > 0 && this.endpoints.every((e) => e.weight === 0)) {
      for (const e of this.endpoints) (e as { weight: number }).weight = 1;
    }
    this.#lb = service.lb;
    this.#ejectAfter = service.circuitBreaker?.consecutive5xx ?? 0;
    this.#ejectionMs = service.circuitBreaker?.ejectionMs ?? 0;
    if (service.lb === 'ring_hash') this.#buildRing();
  }

  /** Pick an endpoint; `hashKey` is used by ring_hash only. Undefined when the service has none. */
  pick(hashKey: string, now: number): EndpointState | undefined {
    const eps = this.endpoints;
    if (eps.length === 0) return undefined;
    if (eps.length === 1) return eps[0];
    const honourEjection = this.#ejectAfter > 0 && eps.some((e) => e.weight > 0 && e.ejectedUntil <= now);
    switch (this.#lb) {
      case 'least_request':
        return this.#leastRequest(now, honourEjection);
      case 'ring_hash':
        return this.#ring(hashKey, now, honourEjection);
      default:
        return this.#smoothRoundRobin(now, honourEjection);
    }
  }

  /** Outlier detection input: ok=false for a 5xx or a connect failure/reset. */
  report(ep: EndpointState, ok: boolean, now: number): void {
    if (ok) {
      ep.success();
      return;
    }
    const failures = ep.failure();
    if (this.#ejectAfter > 0 && failures >= this.#ejectAfter) ep.eject(now + this.#ejectionMs);
  }

  #eligible(e: EndpointState, now: number, honourEjection: boolean): boolean {
    return e.weight > 0 && (!honourEjection || e.ejectedUntil <= now);
  }

  #smoothRoundRobin(now: number, honourEjection: boolean): EndpointState | undefined {
    let total = 0;
    let best: EndpointState | undefined;
    for (const e of this.endpoints) {
      if (!this.#eligible(e, now, honourEjection)) continue;
      e.currentWeight += e.weight;
      total += e.weight;
      if (best === undefined || e.currentWeight > best.currentWeight) best = e;
    }
    if (best !== undefined) best.currentWeight -= total;
    return best;
  }

  #leastRequest(now: number, honourEjection: boolean): EndpointState | undefined {
    // Start the scan at a rotating offset so ties spread instead of always hitting endpoint 0.
    const eps = this.endpoints;
    const start = this.#cursor++ % eps.length;
    let best: EndpointState | undefined;
    let bestScore = Infinity;
    for (let i = 0; i < eps.length; i++) {
      const e = eps[(start + i) % eps.length];
      if (!this.#eligible(e, now, honourEjection)) continue;
      const score = (e.inFlight + 1) / e.weight;
      if (score < bestScore) {
        bestScore = score;
        best = e;
      }
    }
    return best;
  }

  #buildRing(): void {
    const points: Array<[number, number]> = [];
    const totalWeight = this.endpoints.reduce((s, e) => s + e.weight, 0) || 1;
    const perWeight = Math.max(1, Math.min(RING_POINTS_PER_WEIGHT, Math.floor(RING_MAX_POINTS / totalWeight)));
    this.endpoints.forEach((e, idx) => {
      const n = Math.ceil(e.weight * perWeight);
      for (let i = 0; i < n; i++) points.push([hash32(`${e.authority}#${i}`), idx]);
    });
    points.sort((a, b) => a[0] - b[0]);
    this.#ringHashes = Uint32Array.from(points, (p) => p[0]);
    this.#ringOwners = Uint16Array.from(points, (p) => p[1]);
  }

  #ring(hashKey: string, now: number, honourEjection: boolean): EndpointState | undefined {
    const hashes = this.#ringHashes;
    if (hashes.length === 0) return this.#smoothRoundRobin(now, honourEjection);
    const h = hash32(hashKey);
    let lo = 0;
    let hi = hashes.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (hashes[mid] < h) lo = mid + 1;
      else hi = mid;
    }
    // Walk clockwise past ejected endpoints (bounded by the ring size).
    for (let i = 0; i < hashes.length; i++) {
      const e = this.endpoints[this.#ringOwners[(lo + i) % hashes.length]];
      if (this.#eligible(e, now, honourEjection)) return e;
    }
    return undefined;
  }
}
