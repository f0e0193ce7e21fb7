// Live upstream state of one tenant, kept apart from configuration (Envoy's cluster manager vs its
// config): endpoint health (consecutive failures, ejections), in-flight counts and circuit-breaker
// counts live here, keyed by service and endpoint, and a new configuration snapshot picks up the same
// objects for every endpoint it keeps. So a configuration change never resets an ejection, a breaker
// count or least-request's in-flight picture; an endpoint that leaves the configuration leaves its
// state with it (a request still running on an old snapshot keeps its reference until it ends).

import type { Endpoint, Service } from '../store/model.ts';
import { authorityOf, LocalEndpointState, weightOf, type EndpointState } from './balancer.ts';
import type { NodeLedger } from '../host/index.ts';

export { authorityOf };

/** A service's live counts: requests sent or queued to it (the circuit breaker's overflow gauge). */
export interface LiveService {
  readonly active: number;
  /** Adds `delta`; returns the count before. */
  addActive(delta: number): number;
}

class LocalService implements LiveService {
  active = 0;
  addActive(delta: number): number {
    const before = this.active;
    this.active += delta;
    return before;
  }
}

/**
 * With several data-plane workers: where a tenant's upstream state lives in the node ledger. `cell`
 * maps registry keys (`s\0service`, `e\0service\0authority`) to the cells the main thread assigned.
 */
export interface SharedUpstream {
  ledger: NodeLedger;
  worker: number;
  cell(key: string): number | undefined;
}

class SharedService implements LiveService {
  readonly #shared: SharedUpstream;
  readonly #cell: number;
  constructor(shared: SharedUpstream, cell: number) {
    this.#shared = shared;
    this.#cell = cell;
  }
  get active(): number {
    return this.#shared.ledger.upstreamCount(this.#cell);
  }
  addActive(delta: number): number {
    return this.#shared.ledger.upstreamAdd(this.#shared.worker, this.#cell, delta);
  }
}

/** An endpoint whose counts, failures and ejection every worker of the node shares. */
class SharedEndpointState implements EndpointState {
  readonly address: string;
  readonly port: number;
  weight: number;
  readonly authority: string;
  currentWeight = 0;
  readonly #ledger: NodeLedger;
  readonly #worker: number;
  readonly #cell: number;

  constructor(e: Endpoint, shared: SharedUpstream, cell: number) {
    this.address = e.address;
    this.port = e.port;
    this.weight = weightOf(e);
    this.authority = authorityOf(e);
    this.#ledger = shared.ledger;
    this.#worker = shared.worker;
    this.#cell = cell;
  }

  get inFlight(): number {
    return this.#ledger.upstreamCount(this.#cell);
  }
  get consecutiveFailures(): number {
    return this.#ledger.upstreamFailures(this.#cell);
  }
  /** The ledger keeps the deadline on the process-wide clock; this thread compares on its own. */
  get ejectedUntil(): number {
    const until = this.#ledger.upstreamEjectedUntil(this.#cell);
    return until === 0 ? 0 : until - performance.timeOrigin;
  }
  addInFlight(delta: number): void {
    this.#ledger.upstreamAdd(this.#worker, this.#cell, delta);
  }
  failure(): number {
    return this.#ledger.upstreamFailure(this.#cell);
  }
  success(): void {
    this.#ledger.upstreamSuccess(this.#cell);
  }
  eject(until: number): void {
    this.#ledger.setUpstreamEjectedUntil(this.#cell, until + performance.timeOrigin);
    this.#ledger.upstreamSuccess(this.#cell);
  }
}

export class LiveRegistry {
  readonly #endpoints = new Map<string, EndpointState>();
  readonly #services = new Map<string, LiveService>();
  readonly #shared: SharedUpstream | undefined;

  constructor(shared?: SharedUpstream) {
    this.#shared = shared;
  }

  /** The long-lived state of an endpoint of a service; its weight follows the configuration. */
  endpoint(service: string, e: Endpoint): EndpointState {
    const authority = authorityOf(e);
    const key = `e\u0000${service}\u0000${authority}`;
    let state = this.#endpoints.get(key);
    if (state === undefined) {
      const cell = this.#shared?.cell(key);
      state = cell === undefined ? new LocalEndpointState(e) : new SharedEndpointState(e, this.#shared!, cell);
      this.#endpoints.set(key, state);
    } else if (state.weight !== weightOf(e)) {
      (state as { weight: number }).weight = weightOf(e);
    }
    return state;
  }

  service(name: string): LiveService {
    const key = `s\u0000${name}`;
    let s = this.#services.get(key);
    if (s === undefined) {
      const cell = this.#shared?.cell(key);
      s = cell === undefined ? new LocalService() : new SharedService(this.#shared!, cell);
      this.#services.set(key, s);
    }
    return s;
  }

  /** Keep only the state of services and endpoints the configuration still has. */
  retain(services: readonly Service[]): void {
    const keep = new Set(upstreamKeys(services));
    for (const key of this.#endpoints.keys()) if (!keep.has(key)) this.#endpoints.delete(key);
    for (const key of this.#services.keys()) if (!keep.has(key)) this.#services.delete(key);
  }
}

/** The registry keys of a configuration's services and endpoints (what the main thread assigns cells to). */
export function upstreamKeys(services: readonly Service[]): string[] {
  const keys: string[] = [];
  for (const s of services) {
    keys.push(`s\u0000${s.name}`);
    for (const e of s.endpoints) keys.push(`e\u0000${s.name}\u0000${authorityOf(e)}`);
  }
  return keys;
}
