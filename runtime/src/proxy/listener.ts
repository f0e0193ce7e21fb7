// Tenant listeners: one net.Server per (tenant, address), the connection caps that keep one tenant
// from taking the node's file descriptors, the sweep that enforces the codecs' deadlines (one timer for
// every connection, not one per request), and draining.
//
// Connection caps (node-wide): a tenant may hold at most its quota's maxConnections client
// connections; the node at most `maxConnections` (derived from the process's descriptor limit). Once
// the node is half full, no tenant may grow past an equal share of the node's cap among the tenants
// holding connections plus one — so a tenant that opens connections without end is refused long before
// a newcomer is, and never starves the others. Refused connections get a 503 and are closed.

import fs from 'node:fs';
import net from 'node:net';
import { IsomeshError } from '../errors.ts';
import { errorResponse, Http1Connection, type Http1Owner, type Http1Timeouts } from './http1/connection.ts';
import type { DownstreamStream } from './stream.ts';
import { Http2Sessions } from './http2/server.ts';
import type { NodeLedger } from '../host/index.ts';

export const DEFAULT_TIMEOUTS: Readonly<Http1Timeouts> = Object.freeze({ headersMs: 10_000, idleMs: 60_000, bodyMs: 30_000 });
const SWEEP_MS = 200;
const DRAIN_POLL_MS = 50;
/** Descriptors kept for upstream sockets, the admin API, cordons, logs: half of the limit. */
const DOWNSTREAM_SHARE = 0.5;

/** The process's soft limit on open descriptors (RLIMIT_NOFILE), when it can be read. */
export function descriptorLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Default node-wide cap on client connections: half the descriptor limit (at least 64). */
export function defaultMaxConnections(): number {
  const limit = descriptorLimit();
  if (limit === undefined || !Number.isFinite(limit)) return 65_536;
  return Math.max(64, Math.floor((limit - 64) * DOWNSTREAM_SHARE));
}

export type ConnectionVerdict = 'ok' | 'tenant' | 'node';

/** What a listener needs to count client connections (in this process, or node-wide in shared memory). */
export interface ConnectionCounter {
  readonly maxConnections: number;
  readonly total: number;
  of(tenant: string): number;
  /** Counts the connection when it may be taken. */
  admit(tenant: string, tenantCap: number): ConnectionVerdict;
  release(tenant: string): void;
}

/** Node-wide counts over the node ledger (several workers): add first, then judge, so races are exact. */
export class SharedConnectionCounter implements ConnectionCounter {
  readonly maxConnections: number;
  readonly #ledger: NodeLedger;
  readonly #slotOf: (tenant: string) => number | undefined;

  readonly #worker: number;

  constructor(ledger: NodeLedger, slotOf: (tenant: string) => number | undefined, maxConnections: number, worker: number) {
    this.#ledger = ledger;
    this.#slotOf = slotOf;
    this.maxConnections = maxConnections;
    this.#worker = worker;
  }

  get total(): number {
    return this.#ledger.nodeConnections;
  }

  of(tenant: string): number {
    const slot = this.#slotOf(tenant);
    return slot === undefined ? 0 : this.#ledger.connections(slot);
  }

  admit(tenant: string, tenantCap: number): ConnectionVerdict {
    const slot = this.#slotOf(tenant);
    if (slot === undefined) return 'node';
    const before = this.#ledger.addConnection(slot);
    const cap = this.maxConnections;
    let verdict: ConnectionVerdict = 'ok';
    if (before.tenant >= tenantCap) verdict = 'tenant';
    else if (before.node >= cap) verdict = 'node';
    // The same fair share as ConnectionLedger: the tenants holding connections (this one included) plus a newcomer.
    else if (before.node * 2 >= cap && before.tenant >= cap / (this.#ledger.activeTenants + 1)) verdict = 'node';
    if (verdict !== 'ok') this.#ledger.removeConnection(slot);
    else this.#ledger.workerConnection(this.#worker, slot, 1);
    return verdict;
  }

  release(tenant: string): void {
    const slot = this.#slotOf(tenant);
    if (slot === undefined) return;
    this.#ledger.removeConnection(slot);
    this.#ledger.workerConnection(this.#worker, slot, -1);
  }
}

/** Open client connections per tenant and on the node (one data-plane process). */
export class ConnectionLedger implements ConnectionCounter {
  readonly maxConnections: number;
  #total = 0;
  readonly #perTenant = new Map<string, number>();

  constructor(maxConnections: number) {
    this.maxConnections = maxConnections;
  }

  get total(): number {
    return this.#total;
  }

  of(tenant: string): number {
    return this.#perTenant.get(tenant) ?? 0;
  }

  admit(tenant: string, tenantCap: number): ConnectionVerdict {
    const held = this.#perTenant.get(tenant) ?? 0;
    if (held >= tenantCap) return 'tenant';
    const cap = this.maxConnections;
    if (this.#total >= cap) return 'node';
    if (this.#total * 2 >= cap) {
      const share = cap / (this.#perTenant.size + (held === 0 ? 1 : 0) + 1);
      if (held >= share) return 'node';
    }
    this.#perTenant.set(tenant, held + 1);
    this.#total++;
    return 'ok';
  }

  release(tenant: string): void {
    const held = this.#perTenant.get(tenant);
    if (held === undefined) return;
    this.#total--;
    if (held <= 1) this.#perTenant.delete(tenant);
    else this.#perTenant.set(tenant, held - 1);
  }
}

export interface TenantServerHooks {
  readonly timeouts: Http1Timeouts;
  readonly ledger: ConnectionCounter;
  /** The tenant's current connection cap. */
  tenantCap(): number;
  refused(reason: 'tenant' | 'node'): void;
  onRequest(stream: DownstreamStream): void;
  /** A client connection was accepted (the proxy arms its deadline sweep). */
  onConnection?(): void;
  /** Bind with SO_REUSEPORT (data-plane workers sharing the tenant's port). */
  reusePort?: boolean;
}

/** One listening address of one tenant and its connections (HTTP/1.1, and HTTP/2 sessions). */
export class TenantServer implements Http1Owner {
  readonly tenant: string;
  readonly server: net.Server;
  readonly connections = new Set<Http1Connection>();
  /** Sockets handed to HTTP/2 (still counted in the ledger until they close). */
  readonly #h2Sockets = new Set<net.Socket>();
  readonly #hooks: TenantServerHooks;
  #h2: Http2Sessions | undefined;
  #draining = false;

  constructor(tenant: string, hooks: TenantServerHooks) {
    this.tenant = tenant;
    this.#hooks = hooks;
    this.server = net.createServer({ noDelay: true }, this.#onConnection);
  }

  toHttp2(conn: Http1Connection, initial: Buffer): void {
    this.connections.delete(conn);
    const socket = conn.socket;
    this.#h2Sockets.add(socket);
    socket.once('close', () => {
      if (this.#h2Sockets.delete(socket)) this.#hooks.ledger.release(this.tenant);
    });
    this.#h2 ??= new Http2Sessions({
      timeouts: this.#hooks.timeouts,
      onRequest: (stream) => this.#hooks.onRequest(stream),
      onSessionClosed: () => {},
    });
    this.#h2.adopt(socket, initial);
  }

  /** Open client connections of this server (both protocols). */
  get size(): number {
    return this.connections.size + this.#h2Sockets.size;
  }

  get timeouts(): Http1Timeouts {
    return this.#hooks.timeouts;
  }

  onRequest(stream: DownstreamStream): void {
    this.#hooks.onRequest(stream);
  }

  onClosed(conn: Http1Connection): void {
    if (this.connections.delete(conn)) this.#hooks.ledger.release(this.tenant);
  }

  readonly #onConnection = (socket: net.Socket): void => {
    if (this.#draining) {
      socket.destroy();
      return;
    }
    const verdict = this.#hooks.ledger.admit(this.tenant, this.#hooks.tenantCap());
    if (verdict !== 'ok') {
      this.#hooks.refused(verdict);
      socket.on('error', () => {});
      const why = verdict === 'tenant' ? `tenant ${this.tenant} is at its connection quota` : 'the node is at its connection cap';
      socket.end(errorResponse(503, 'ISOMESH_ERR_PROXY_CONNECTION_LIMIT', why, true), 'latin1');
      setTimeout(() => socket.destroy(), 1000).unref();
      return;
    }
    this.connections.add(new Http1Connection(socket, this));
    this.#hooks.onConnection?.();
  };

  /** Deadlines of this server's connections (called by the proxy's sweep). */
  sweep(now: number): void {
    for (const conn of this.connections) if (conn.deadline !== 0 && now >= conn.deadline) conn.expire();
  }

  listen(port: number, address: string): Promise<number> {
    const server = this.server;
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        server.off('listening', onListening);
        if (err.code === 'EADDRINUSE') {
          reject(new IsomeshError('ISOMESH_ERR_TENANT_PORT_IN_USE', `listener port ${address}:${port} is already in use`));
        } else {
          reject(new IsomeshError('ISOMESH_ERR_PROXY_LISTEN_FAILED', `cannot listen on ${address}:${port}: ${err.code ?? err.message}`));
        }
      };
      const onListening = (): void => {
        server.off('error', onError);
        const bound = server.address();
        resolve(typeof bound === 'object' && bound !== null ? bound.port : port);
      };
      server.once('error', onError);
      server.once('listening', onListening);
      // Several data-plane workers share a port through SO_REUSEPORT (the kernel spreads connections);
      // one process alone binds it exclusively.
      server.listen(this.#hooks.reusePort === true ? { port, host: address, reusePort: true } : { port, host: address, exclusive: true });
    });
  }

  close(): void {
    this.#draining = true;
    if (this.server.listening) this.server.close();
    this.#h2?.close();
  }

  /**
   * Stop accepting, let in-flight requests finish, close keep-alive connections as they go idle, and
   * after `timeoutMs` cut whatever is left.
   */
  drain(timeoutMs: number): Promise<void> {
    this.close();
    return new Promise((resolve) => {
      const deadline = Date.now() + timeoutMs;
      const tick = (): void => {
        for (const conn of this.connections) {
          if (conn.stream === undefined) conn.destroy();
          else conn.closeAfter = true;
        }
        if (this.size === 0) {
          resolve();
          return;
        }
        if (Date.now() >= deadline) {
          for (const conn of this.connections) conn.destroy();
          this.#h2?.destroy();
          for (const s of this.#h2Sockets) s.destroy();
          resolve();
          return;
        }
        setTimeout(tick, DRAIN_POLL_MS);
      };
      tick();
    });
  }
}

/**
 * One timer for the deadlines of every connection of a set of servers. It runs only while some
 * server holds a connection: an idle node's data plane does not wake up (each wake-up of an idle
 * thread costs tens of µs of CPU here), and the first connection arms it again (`arm()`).
 */
export class Sweeper {
  readonly #servers: () => Iterable<TenantServer>;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;

  constructor(servers: () => Iterable<TenantServer>) {
    this.#servers = servers;
  }

  /** A connection was accepted: sweep from now on, until no server holds one. */
  arm(): void {
    if (this.#timer !== undefined || this.#closed) return;
    this.#timer = setInterval(() => {
      const now = performance.now();
      let held = false;
      for (const s of this.#servers()) {
        if (s.connections.size === 0) continue;
        held = true;
        s.sweep(now);
      }
      if (!held) this.#disarm();
    }, SWEEP_MS);
    this.#timer.unref();
  }

  /** Whether the timer is running (tests). */
  get armed(): boolean {
    return this.#timer !== undefined;
  }

  /** For good (the proxy is closed). */
  stop(): void {
    this.#closed = true;
    this.#disarm();
  }

  #disarm(): void {
    clearInterval(this.#timer);
    this.#timer = undefined;
  }
}
