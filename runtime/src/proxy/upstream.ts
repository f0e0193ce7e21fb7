// Upstream side of a tenant: one keep-alive connection pool (origin.ts) per (service, endpoint) so
// tenants never share connections and a service's circuit-breaker maxConnections caps its sockets per
// endpoint. Pools whose endpoint left the config are retired: idle sockets closed now, busy ones once
// their in-flight request ends.

import type { Service } from '../store/model.ts';
import { EndpointPicker, type EndpointState } from './balancer.ts';
import { LiveRegistry, type LiveService } from './registry.ts';
import { EndpointPool } from './origin.ts';
import { H2EndpointPool } from './origin-h2.ts';

/** Sockets per endpoint when the service sets no circuit breaker. */
export const DEFAULT_MAX_SOCKETS = 256;
/** Idle pooled sockets are closed before node's default 5 s server keep-alive timeout would. */
const FREE_SOCKET_TIMEOUT_MS = 4000;

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE']);

export function isIdempotent(method: string): boolean {
  return IDEMPOTENT.has(method);
}

/** A service of one TenantConfig: its policy and its endpoint picker over the tenant's live state. */
export class UpstreamService {
  readonly name: string;
  readonly service: Service;
  readonly picker: EndpointPicker;
  /** Live counts, shared with every snapshot that has this service (LiveRegistry). */
  readonly live: LiveService;
  readonly maxActive: number;
  constructor(service: Service, registry?: LiveRegistry) {
    this.name = service.name;
    this.service = service;
    this.live = registry?.service(service.name) ?? new LiveRegistry().service(service.name);
    this.picker = new EndpointPicker(service, registry === undefined ? undefined : (e) => registry.endpoint(service.name, e));
    const cb = service.circuitBreaker;
    this.maxActive = cb ? Math.max(1, cb.maxConnections) * Math.max(1, service.endpoints.length) + Math.max(0, cb.maxPending) : Infinity;
  }

  /** Requests currently sent (or queued) to this service; the circuit breaker's overflow gauge. */
  get active(): number {
    return this.live.active;
  }

  /**
   * Sockets this worker's pool may open to one endpoint: maxConnections (256 without a breaker). Not
   * split between workers: a split share strands requests on a busy worker while another has room;
   * the node-wide bound on requests sent is the shared breaker count (maxActive).
   */
  get maxSockets(): number {
    return this.service.circuitBreaker?.maxConnections || DEFAULT_MAX_SOCKETS;
  }
}

export class UpstreamPool {
  readonly #pools = new Map<string, EndpointPool | H2EndpointPool>();
  #closed = false;

  static key(service: UpstreamService, ep: EndpointState): string {
    return `${service.name}|${ep.authority}|${service.maxSockets}|${service.service.protocol ?? 'http1'}`;
  }

  /** The endpoint's HTTP/1.1 pool; cached on the EndpointState so the request path does not build the key. */
  endpoint(service: UpstreamService, ep: EndpointState): EndpointPool {
    const cached = (ep as { pool?: EndpointPool }).pool;
    if (cached !== undefined && !cached.retired) return cached;
    const key = UpstreamPool.key(service, ep);
    let pool = this.#pools.get(key) as EndpointPool | undefined;
    if (pool === undefined) {
      pool = new EndpointPool(ep.address, ep.port, service.maxSockets, FREE_SOCKET_TIMEOUT_MS);
      if (this.#closed) pool.retire();
      else this.#pools.set(key, pool);
    }
    (ep as { pool?: EndpointPool }).pool = pool;
    return pool;
  }

  /** The endpoint's HTTP/2 sessions (protocol http2/grpc): circuitBreaker.maxConnections bounds them, else 4. */
  h2Endpoint(service: UpstreamService, ep: EndpointState): H2EndpointPool {
    const cached = (ep as { h2?: H2EndpointPool }).h2;
    if (cached !== undefined && !cached.retired) return cached;
    const key = UpstreamPool.key(service, ep);
    let pool = this.#pools.get(key) as H2EndpointPool | undefined;
    if (pool === undefined) {
      pool = new H2EndpointPool(ep.address, ep.port, service.service.circuitBreaker?.maxConnections ?? 4);
      if (this.#closed) pool.retire();
      else this.#pools.set(key, pool);
    }
    (ep as { h2?: H2EndpointPool }).h2 = pool;
    return pool;
  }

  /** Keep only the pools a new config still uses. */
  retain(services: Iterable<UpstreamService>): void {
    const keep = new Set<string>();
    for (const s of services) for (const ep of s.picker.endpoints) keep.add(UpstreamPool.key(s, ep));
    for (const [key, pool] of this.#pools) {
      if (keep.has(key)) continue;
      this.#pools.delete(key);
      pool.retire();
    }
  }

  /** Upstream connections currently open (busy + idle), for status and tests. */
  get openSockets(): number {
    let n = 0;
    for (const pool of this.#pools.values()) n += pool.openSockets;
    return n;
  }

  /** Retire every pool (busy sockets finish their request first). */
  close(): void {
    this.#closed = true;
    for (const pool of this.#pools.values()) pool.retire();
    this.#pools.clear();
  }

  /** Hard stop: destroy every socket. */
  destroy(): void {
    this.#closed = true;
    for (const pool of this.#pools.values()) pool.destroy();
    this.#pools.clear();
  }
}
