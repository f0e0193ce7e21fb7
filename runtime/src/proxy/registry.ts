// Live upstream state of one tenant, kept apart from configuration (Envoy's cluster manager vs its
// config): endpoint health (consecutive failures, ejections), in-flight counts and circuit-breaker
// counts live here, keyed by service and endpoint, and a new configuration snapshot picks up the same
// objects for every endpoint it keeps. So a configuration change never resets an ejection, a breaker
// count or least-request's in-flight picture; an endpoint that leaves the configuration leaves its
// state with it (a request still running on an old snapshot keeps its reference until it ends).

import type { Endpoint, Service } from '../store/model.ts';
import type { EndpointState } from './balancer.ts';

/** A service's live counts: requests sent or queued to it (the circuit breaker's overflow gauge). */
export interface LiveService {
  active: number;
}

export function authorityOf(e: Pick<Endpoint, 'address' | 'port'>): string {
  return e.address.includes(':') ? `[${e.address}]:${e.port}` : `${e.address}:${e.port}`;
}

export class LiveRegistry {
  readonly #endpoints = new Map<string, EndpointState>();
  readonly #services = new Map<string, LiveService>();

  /** The long-lived state of an endpoint of a service; its weight follows the configuration. */
  endpoint(service: string, e: Endpoint): EndpointState {
    const authority = authorityOf(e);
    const key = `${service}|${authority}`;
    const weight = Number.isFinite(e.weight) && e.weight >= 0 ? e.weight : 1;
    let state = this.#endpoints.get(key);
    if (state === undefined) {
      state = { address: e.address, port: e.port, weight, authority, inFlight: 0, currentWeight: 0, consecutiveFailures: 0, ejectedUntil: 0 };
      this.#endpoints.set(key, state);
    } else if (state.weight !== weight) {
      (state as { weight: number }).weight = weight;
    }
    return state;
  }

  service(name: string): LiveService {
    let s = this.#services.get(name);
    if (s === undefined) {
      s = { active: 0 };
      this.#services.set(name, s);
    }
    return s;
  }

  /** Keep only the state of services and endpoints the configuration still has. */
  retain(services: readonly Service[]): void {
    const keepEndpoints = new Set<string>();
    const keepServices = new Set<string>();
    for (const s of services) {
      keepServices.add(s.name);
      for (const e of s.endpoints) keepEndpoints.add(`${s.name}|${authorityOf(e)}`);
    }
    for (const key of this.#endpoints.keys()) if (!keepEndpoints.has(key)) this.#endpoints.delete(key);
    for (const key of this.#services.keys()) if (!keepServices.has(key)) this.#services.delete(key);
  }
}
