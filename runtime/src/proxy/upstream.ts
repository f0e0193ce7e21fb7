// Upstream side of a tenant: one keep-alive http.Agent per (service, endpoint) so tenants never share
// connections and a service's circuit-breaker maxConnections caps its sockets per endpoint. Agents
// whose endpoint left the config are retired: idle sockets closed now, busy ones once their
// in-flight request ends.

import http from 'node:http';
import type { Service } from '../store/model.ts';
import { EndpointPicker, type EndpointState } from './balancer.ts';

/** Sockets per endpoint when the service sets no circuit breaker. */
export const DEFAULT_MAX_SOCKETS = 256;
/** Idle pooled sockets are closed before node's default 5 s server keep-alive timeout would. */
const FREE_SOCKET_TIMEOUT_MS = 4000;

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method);
}

/** A service of one TenantConfig: its policy and its endpoint picker (balancer state). */
export class UpstreamService {
  readonly name: string;
  readonly service: Service;
  readonly picker: EndpointPicker;
  /** Requests currently sent (or queued) to this service; the circuit breaker's overflow gauge. */
  active = 0;
  readonly maxActive: number;

  constructor(service: Service) {
    this.name = service.name;
    this.service = service;
    this.picker = new EndpointPicker(service);
    const cb = service.circuitBreaker;
    this.maxActive = cb ? Math.max(1, cb.maxConnections) * Math.max(1, service.endpoints.length) + Math.max(0, cb.maxPending) : Infinity;
  }

  get maxSockets(): number {
    return this.service.circuitBreaker?.maxConnections || DEFAULT_MAX_SOCKETS;
  }
}

function retire(agent: http.Agent): void {
  // Sockets still serving a request are closed by the agent when they are released.
  (agent as unknown as { keepAlive: boolean }).keepAlive = false;
  for (const list of Object.values(agent.freeSockets)) for (const s of list ?? []) s.destroy();
  if (Object.keys(agent.sockets).length === 0) agent.destroy();
}

export class UpstreamPool {
  readonly #agents = new Map<string, http.Agent>();
  #closed = false;

  static key(service: UpstreamService, ep: EndpointState): string {
    return `${service.name}|${ep.authority}|${service.maxSockets}`;
  }

  agent(service: UpstreamService, ep: EndpointState): http.Agent {
    const key = UpstreamPool.key(service, ep);
    let agent = this.#agents.get(key);
    if (agent === undefined) {
      agent = new http.Agent({
        keepAlive: true,
        maxSockets: service.maxSockets,
        maxFreeSockets: Math.min(service.maxSockets, 64),
        timeout: FREE_SOCKET_TIMEOUT_MS,
        scheduling: 'lifo',
      });
      if (!this.#closed) this.#agents.set(key, agent);
    }
    return agent;
  }

  /** Keep only the agents a new config still uses. */
  retain(services: Iterable<UpstreamService>): void {
    const keep = new Set<string>();
    for (const s of services) for (const ep of s.picker.endpoints) keep.add(UpstreamPool.key(s, ep));
    for (const [key, agent] of this.#agents) {
      if (keep.has(key)) continue;
      this.#agents.delete(key);
      retire(agent);
    }
  }

  /** Upstream connections currently open (busy + idle), for status and tests. */
  get openSockets(): number {
    let n = 0;
    for (const agent of this.#agents.values()) {
      for (const list of Object.values(agent.sockets)) n += list?.length ?? 0;
      for (const list of Object.values(agent.freeSockets)) n += list?.length ?? 0;
    }
    return n;
  }

  /** Retire every agent (busy sockets finish their request first). */
  close(): void {
    this.#closed = true;
    for (const agent of this.#agents.values()) retire(agent);
    this.#agents.clear();
  }

  /** Hard stop: destroy every socket. */
  destroy(): void {
    this.#closed = true;
    for (const agent of this.#agents.values()) agent.destroy();
    this.#agents.clear();
  }
}
