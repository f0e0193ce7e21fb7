// WorkerPool: the built-in data plane as ISOMESH_WORKERS worker threads (worker-main.ts), seen by the
// daemon as one ProxyServer-like object. Every worker serves every tenant port (SO_REUSEPORT); the
// node ledger (host/ledger.ts) makes admission, connection caps and rate limits node-wide; plugin calls
// come back to the main thread's one PluginHost (no isolate is duplicated per worker).
//
// A worker that dies is restarted with back-off and given every tenant again; the other workers'
// connections are not touched, and what the dead one held in the ledger (in-flight admissions,
// connections) is taken back. Upstream live state (circuit-breaker counts, endpoint in-flight
// counts, consecutive failures, ejections) lives in ledger cells the main thread assigns per
// (tenant, service[, endpoint]): breakers, outlier ejection and least_request act for the node. Pools
// are per worker (up to maxConnections sockets per endpoint each); the shared breaker count bounds
// the requests the node sends.

import net from 'node:net';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import type pino from 'pino';
import prom from 'prom-client';
import { IsomeshError, type ErrorCode } from '../errors.ts';
import { IdTable, MAX_WORKERS, type NodeLedger, type PluginHost } from '../host/index.ts';
import type { ChainRun, PluginCallTiming } from '../host/contract.ts';
import type { TenantConfig } from '../store/model.ts';
import type { Http1Timeouts } from './http1/connection.ts';
import type { FetchRequest, FetchResult } from './plugin-fetch.ts';
import { Outbox } from './outbox.ts';
import type { HostBatch, HostCall, HostReplies, HostReply } from './remote-host.ts';
import { upstreamKeys } from './registry.ts';
import type { WorkerCommand, WorkerInit } from './worker-main.ts';
import type { ProxyEndpointStatus, ProxyListener, ProxyTenantStatus } from './index.ts';

const ENTRY = path.join(import.meta.dirname, 'worker-main.ts');
const MAX_BACKOFF_MS = 5000;

export interface WorkerPoolOptions {
  count: number;
  host: PluginHost;
  ledger: NodeLedger;
  logger: pino.Logger;
  listenAddress: string;
  timeouts: Http1Timeouts;
  maxConnections: number;
  drainTimeoutMs?: number;
  logLevel: string;
}

interface TenantEntry {
  config: TenantConfig;
  slot: number;
  /** Upstream cells in the ledger: registry key → cell (registry.ts upstreamKeys). */
  cells: Record<string, number>;
  port: number;
}

interface Slot {
  index: number;
  worker: Worker | undefined;
  ready: Promise<void>;
  pending: Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>;
  /** Runs of this worker the main-thread host holds (key → run). */
  runs: IdTable<ChainRun>;
  restarts: number;
  streak: number;
  lastExitAt: number;
}

/**
 * A worker's answer that will never come: it exited, or is restarting. Not the command's failure —
 * the restarted worker is given what the pool records (#restore).
 */
class WorkerGone extends Error {}

/** What a worker sees of a tenant: no plugin code, no secret (those stay with the main thread's host). */
function stripped(config: TenantConfig): TenantConfig {
  const plugins: TenantConfig['plugins'] = {};
  for (const [name, p] of Object.entries(config.plugins)) {
    plugins[name] = {
      name: p.name,
      ...(p.active !== undefined ? { active: { ...p.active, code: '' } } : {}),
      ...(p.canary !== undefined ? { canary: { ...p.canary, code: '' } } : {}),
    };
  }
  return { ...config, plugins, secrets: {} };
}

export class WorkerPool {
  readonly #opts: WorkerPoolOptions;
  readonly #slots: Slot[];
  readonly #tenants = new Map<string, TenantEntry>();
  /** Ports the workers hold per tenant (bound by bind() before its first configuration, or by configure()). */
  readonly #ports = new Map<string, number>();
  /**
   * Each tenant's listen addresses besides the pool's own, configured or not yet (a worker keeps an
   * address of a tenant it has no configuration for until the tenant binds).
   */
  readonly #extra = new Map<string, string[]>();
  #ids = 0;
  #closed = false;
  #pins: string | undefined;
  #nextFetch = 0;

  constructor(opts: WorkerPoolOptions) {
    if (opts.count < 2 || opts.count > MAX_WORKERS) throw new Error(`a worker pool has 2..${MAX_WORKERS} workers`);
    this.#opts = opts;
    this.#slots = Array.from({ length: opts.count }, (_, index) => ({ index, worker: undefined, ready: Promise.resolve(), pending: new Map(), runs: new IdTable(), restarts: 0, streak: 0, lastExitAt: 0 }));
    for (const s of this.#slots) this.#spawn(s);
  }

  get workers(): number {
    return this.#slots.length;
  }

  /** Resolves when every worker is up. */
  async ready(): Promise<void> {
    await Promise.all(this.#slots.map((s) => s.ready));
  }

  #spawn(s: Slot): void {
    const o = this.#opts;
    const init: WorkerInit = {
      worker: s.index,
      buffers: o.ledger.buffers,
      listenAddress: o.listenAddress,
      timeouts: o.timeouts,
      maxConnections: o.maxConnections,
      drainTimeoutMs: o.drainTimeoutMs ?? 10_000,
      logLevel: o.logLevel,
    };
    const w = new Worker(ENTRY, { workerData: init });
    s.worker = w;
    // Replies go to the worker that asked (bound to it: a restarted worker never sees its predecessor's).
    const replies = new Outbox<HostReply>((m) => w.postMessage({ t: 'hostReplies', m } satisfies HostReplies));
    let up!: () => void;
    s.ready = new Promise((r) => (up = r));
    // A worker that dies before it is ready must not leave what waits on its readiness waiting forever.
    w.once('exit', () => up());
    w.on('message', (m: { t: string }) => {
      if (m.t === 'ready') {
        void this.#restore(s).then(up, up);
        return;
      }
      if (m.t === 'done') {
        const d = m as unknown as { id: number; value?: unknown; error?: { code?: ErrorCode; message: string } };
        const p = s.pending.get(d.id);
        if (p === undefined) return;
        s.pending.delete(d.id);
        if (d.error === undefined) p.resolve(d.value);
        else p.reject(d.error.code !== undefined && d.error.code.startsWith('ISOMESH_ERR_') ? new IsomeshError(d.error.code, d.error.message) : new Error(d.error.message));
        return;
      }
      if (m.t === 'host') {
        for (const x of (m as unknown as HostBatch).m) {
          if (x.t === 'call') {
            this.#hostCall(s, replies, x);
            continue;
          }
          const run = s.runs.take(x.run);
          if (run !== undefined) o.host.end(run);
        }
      }
    });
    w.on('error', (err) => o.logger.error({ err, worker: s.index }, 'data-plane worker failed'));
    w.on('exit', (code) => this.#exited(s, w, code));
  }

  /** A (re)started worker gets every tenant and its listener again before it counts as ready. */
  async #restore(s: Slot): Promise<void> {
    if (this.#pins !== undefined) await this.#send(s, { t: 'pins', id: 0, pinDir: this.#pins }).catch(() => undefined);
    for (const e of this.#tenants.values()) {
      try {
        await this.#send(s, { t: 'configure', id: 0, config: stripped(e.config), slot: e.slot, cells: e.cells });
      } catch (err) {
        this.#opts.logger.error({ err, worker: s.index, tenant: e.config.name }, 'restarted worker could not take a tenant');
      }
    }
    for (const [tenant, addresses] of this.#extra) {
      for (const address of addresses) await this.#send(s, { t: 'addAddress', id: 0, tenant, address }).catch((err) => this.#opts.logger.error({ err, worker: s.index, tenant }, 'restarted worker could not take a listen address'));
    }
  }

  #exited(s: Slot, w: Worker, code: number): void {
    if (s.worker !== w) return;
    s.worker = undefined;
    const o = this.#opts;
    // What it held in the node ledger will never be released by it; nor will its plugin runs end.
    o.ledger.reclaim(s.index);
    for (const run of s.runs.values()) o.host.end(run);
    s.runs.clear();
    for (const p of s.pending.values()) p.reject(new WorkerGone(`data-plane worker ${s.index} exited (${code})`));
    s.pending.clear();
    if (this.#closed) return;
    const now = Date.now();
    s.streak = now - s.lastExitAt > 30_000 ? 1 : s.streak + 1;
    s.lastExitAt = now;
    s.restarts++;
    const delay = s.streak <= 1 ? 0 : Math.min(MAX_BACKOFF_MS, 100 * 2 ** (s.streak - 2));
    o.logger.error({ worker: s.index, code, restartInMs: delay }, 'data-plane worker exited; restarting it');
    setTimeout(() => {
      if (!this.#closed) this.#spawn(s);
    }, delay).unref();
  }

  #send(s: Slot, cmd: WorkerCommand): Promise<unknown> {
    const w = s.worker;
    if (w === undefined) return Promise.reject(new WorkerGone(`data-plane worker ${s.index} is restarting`));
    const id = ++this.#ids;
    return new Promise((resolve, reject) => {
      s.pending.set(id, { resolve, reject });
      w.postMessage({ ...cmd, id });
    });
  }

  /**
   * Sends to every live worker; the first failure rejects (after all have answered). A worker lost
   * meanwhile is no failure and gives no answer: configurations, addresses, pins and removals are
   * recorded before they are sent, and its restart restores it from that record (a port bind()
   * moves reaches it with the tenant's next configuration).
   */
  async #all(cmd: WorkerCommand): Promise<unknown[]> {
    const live = this.#slots.filter((s) => s.worker !== undefined);
    const results = await Promise.allSettled(live.map((s) => {
      const w = s.worker;
      // Sent to the worker it waited for: one that died meanwhile (even before it was ready) is gone,
      // and its successor gets the change from the record.
      return s.ready.then(() => (s.worker === w ? this.#send(s, cmd) : Promise.reject(new WorkerGone(`data-plane worker ${s.index} exited`))));
    }));
    const failed = results.find((r) => r.status === 'rejected' && !(r.reason instanceof WorkerGone));
    if (failed !== undefined) throw (failed as PromiseRejectedResult).reason;
    return results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  }

  // ---- plugin calls from workers ------------------------------------------------------------

  #hostCall(s: Slot, replies: Outbox<HostReply>, m: HostCall): void {
    const host = this.#opts.host;
    let run = s.runs.get(m.run);
    if (run === undefined) {
      run = host.attach(m.tenant, m.requestId, m.route);
      if (run === undefined) {
        replies.push({ t: 'hostReply', id: m.id, outcome: { action: 'fail', status: 503, code: 'ISOMESH_ERR_PLUGIN_UNAVAILABLE', message: `tenant ${m.tenant} is not configured in the plugin host` } });
        return;
      }
      s.runs.set(m.run, run);
      if (m.record) host.recordCalls(run);
    }
    const r = run;
    const done = m.phase === 'onRequest' ? host.onRequest(r, m.input as Parameters<PluginHost['onRequest']>[1]) : host.onResponse(r, m.input as Parameters<PluginHost['onResponse']>[1]);
    done.then(
      (outcome) => {
        const calls: PluginCallTiming[] | undefined = m.record ? host.calls(r) : undefined;
        const reply: HostReply = { t: 'hostReply', id: m.id, outcome, ...(calls !== undefined ? { calls } : {}) };
        // The worker answers onResponse itself when nothing is left to call (only response header edits).
        if (m.phase === 'onRequest' && outcome.action === 'continue') reply.responseHooks = host.responseHooksLeft(r);
        replies.push(reply);
      },
      (err: unknown) => replies.push({ t: 'hostReply', id: m.id, error: String(err) }),
    );
  }

  // ---- the ProxyServer surface ----------------------------------------------------------------

  async configure(config: TenantConfig): Promise<void> {
    const name = config.name;
    const slot = this.#opts.ledger.assign(name);
    const port = config.listenerPort;
    if (port !== 0 && port !== this.#ports.get(name)) await this.#probe(port);
    const cells = this.#cells(name, config);
    // Recorded before it is sent: a worker that dies while this send is under way is restored with
    // this configuration, like the workers that took it — not with the one before it (which would
    // leave that worker serving, say, without the tenant's new plugin chain until the next change).
    const entry = this.#tenants.get(name) ?? { config, slot, cells, port };
    entry.config = config;
    entry.cells = cells;
    this.#tenants.set(name, entry);
    const ports = await this.#all({ t: 'configure', id: 0, config: stripped(config), slot, cells });
    const bound = (ports.find((p) => typeof p === 'number') as number | undefined) ?? port;
    entry.port = bound;
    this.#ports.set(name, bound);
  }

  /** The ledger cells of a configuration's services and endpoints; cells of ones it dropped are released. */
  #cells(tenant: string, config: TenantConfig): Record<string, number> {
    const ledger = this.#opts.ledger;
    const cells: Record<string, number> = {};
    const keep = new Set<string>();
    for (const key of upstreamKeys(config.services)) {
      const full = `${tenant}\u0000${key}`;
      keep.add(full);
      const cell = ledger.upstreamCell(full);
      if (cell !== undefined) cells[key] = cell;
    }
    for (const full of ledger.upstreamKeys(tenant)) if (!keep.has(full)) ledger.releaseUpstream(full);
    return cells;
  }

  /**
   * Workers bind with SO_REUSEPORT, which another process of this user holding the port with it too
   * would silently share: first check, exclusively, that nothing holds the port.
   */
  async #probe(port: number): Promise<void> {
    if (port === 0) return;
    for (const p of this.#ports.values()) if (p === port) return; // ours already
    const address = this.#opts.listenAddress;
    await new Promise<void>((resolve, reject) => {
      const srv = net.createServer();
      srv.once('error', (err: NodeJS.ErrnoException) => {
        reject(err.code === 'EADDRINUSE'
          ? new IsomeshError('ISOMESH_ERR_TENANT_PORT_IN_USE', `listener port ${address}:${port} is already in use`)
          : new IsomeshError('ISOMESH_ERR_PROXY_LISTEN_FAILED', `cannot listen on ${address}:${port}: ${err.code ?? err.message}`));
      });
      srv.listen({ port, host: address, exclusive: true }, () => srv.close(() => resolve()));
    });
  }

  async bind(tenant: string, port: number): Promise<number> {
    const held = this.#ports.get(tenant);
    if (held !== undefined && (port === 0 || port === held)) return held;
    await this.#probe(port);
    // Port 0: the first worker picks a free port, the others join it.
    let bound = port;
    if (port === 0) {
      const first = this.#slots.find((s) => s.worker !== undefined);
      if (first === undefined) throw new IsomeshError('ISOMESH_ERR_PROXY_LISTEN_FAILED', 'no data-plane worker is running');
      await first.ready;
      bound = (await this.#send(first, { t: 'bind', id: 0, tenant, port: 0 })) as number;
    }
    await this.#all({ t: 'bind', id: 0, tenant, port: bound });
    this.#ports.set(tenant, bound);
    const e = this.#tenants.get(tenant);
    if (e !== undefined) e.port = bound;
    return bound;
  }

  // Address changes are recorded before they are sent, as configurations are: a worker lost during
  // the send is restored with the change, and the caller is not told of it (the change holds on
  // every worker). A live worker's refusal is the caller's error.
  async addListenAddress(tenant: string, address: string): Promise<void> {
    const list = this.#extra.get(tenant) ?? [];
    const added = address !== this.#opts.listenAddress && !list.includes(address);
    if (added) this.#extra.set(tenant, [...list, address]);
    try {
      await this.#all({ t: 'addAddress', id: 0, tenant, address });
    } catch (err) {
      if (added) {
        // Refused (the address cannot be bound, say): undone in the record and on the workers that took it.
        this.#unrecord(tenant, address);
        await this.#all({ t: 'removeAddress', id: 0, tenant, address })
          .catch((undoErr) => this.#opts.logger.error({ err: undoErr, tenant, address }, 'could not undo a refused listen address'));
      }
      throw err;
    }
  }

  async removeListenAddress(tenant: string, address: string): Promise<void> {
    // Stays removed from the record even if a worker fails the removal: a worker drops the address
    // before it closes the listener, and a restarted worker must not bind it again.
    this.#unrecord(tenant, address);
    await this.#all({ t: 'removeAddress', id: 0, tenant, address });
  }

  /** Takes an extra listen address out of the record (the pool's own address stays). */
  #unrecord(tenant: string, address: string): void {
    const left = this.#extra.get(tenant)?.filter((a) => a !== address) ?? [];
    if (left.length > 0) this.#extra.set(tenant, left);
    else this.#extra.delete(tenant);
  }

  async removeTenant(tenant: string): Promise<void> {
    this.#ports.delete(tenant);
    this.#extra.delete(tenant);
    if (!this.#tenants.has(tenant)) {
      await this.#all({ t: 'removeTenant', id: 0, tenant }).catch(() => undefined);
      return;
    }
    this.#tenants.delete(tenant);
    await this.#all({ t: 'removeTenant', id: 0, tenant }).catch((err) => this.#opts.logger.error({ err, tenant }, 'removing a tenant from the workers failed'));
    this.#opts.ledger.unassign(tenant);
    for (const full of this.#opts.ledger.upstreamKeys(tenant)) this.#opts.ledger.releaseUpstream(full);
  }

  setOriginalDestinationResolver(): void {
    // Functions do not cross threads: the workers open the pinned map themselves (setOriginalDestinationPins).
  }

  setOriginalDestinationPins(pinDir: string): void {
    this.#pins = pinDir;
    void this.#all({ t: 'pins', id: 0, pinDir }).catch((err) => this.#opts.logger.error({ err }, 'workers could not open the original-destination map'));
  }

  listeners(): ProxyListener[] {
    const out: ProxyListener[] = [];
    for (const e of this.#tenants.values()) {
      for (const address of [this.#opts.listenAddress, ...(this.#extra.get(e.config.name) ?? [])]) out.push({ tenant: e.config.name, address, port: e.port });
    }
    return out;
  }

  status(tenant: string): ProxyTenantStatus | undefined {
    const e = this.#tenants.get(tenant);
    if (e === undefined) return undefined;
    const ledger = this.#opts.ledger;
    return { listener: { address: this.#opts.listenAddress, port: e.port }, requests: ledger.requests(e.slot), inFlight: ledger.inFlight(e.slot) };
  }

  /** Every worker's view merged: ejected anywhere is ejected; in-flight added up. */
  async endpointStatus(tenant: string, service: string): Promise<ProxyEndpointStatus[] | undefined> {
    const views = (await this.#all({ t: 'endpointStatus', id: 0, tenant, service }).catch(() => [])) as Array<ProxyEndpointStatus[] | undefined>;
    let merged: ProxyEndpointStatus[] | undefined;
    for (const view of views) {
      if (view === undefined) continue;
      if (merged === undefined) {
        merged = view.map((e) => ({ ...e }));
        continue;
      }
      view.forEach((e, i) => {
        const m = merged![i];
        if (m === undefined) return;
        // Breaker, ejection and in-flight state live in the ledger: every worker sees the same
        // numbers (max only covers a worker mid-restart).
        m.active = Math.max(m.active, e.active);
        m.consecutive5xx = Math.max(m.consecutive5xx, e.consecutive5xx);
        if (e.ejected) {
          m.ejected = true;
          if (e.ejectedUntil !== undefined && (m.ejectedUntil === undefined || e.ejectedUntil > m.ejectedUntil)) m.ejectedUntil = e.ejectedUntil;
        }
      });
    }
    return merged;
  }

  /** ctx.fetch of a plugin (the main thread's host) performed by a worker's proxy, in turn. */
  async fetch(tenant: string, req: FetchRequest): Promise<FetchResult> {
    const live = this.#slots.filter((s) => s.worker !== undefined);
    if (live.length === 0) throw new Error('no data-plane worker is running');
    const s = live[this.#nextFetch++ % live.length]!;
    const r = (await this.#send(s, { t: 'fetch', id: 0, tenant, req })) as { status: number; headers: FetchResult['headers']; body: Uint8Array };
    return { status: r.status, headers: r.headers, body: r.body };
  }

  /** The workers' metrics (prom-client JSON), to aggregate with the main registry's. */
  async metrics(): Promise<prom.MetricObjectWithValues<prom.MetricValue<string>>[][]> {
    return (await this.#all({ t: 'metrics', id: 0 }).catch(() => [])) as prom.MetricObjectWithValues<prom.MetricValue<string>>[][];
  }

  /** Each worker's state for GET /v1/node. */
  workerStatus(): Array<{ index: number; state: 'running' | 'restarting'; restarts: number; requests: number; connections: number }> {
    const ledger = this.#opts.ledger;
    return this.#slots.map((s) => ({
      index: s.index,
      state: s.worker === undefined ? 'restarting' : 'running',
      restarts: s.restarts,
      requests: ledger.workerRequests(s.index),
      connections: ledger.workerConnections(s.index),
    }));
  }

  /**
   * Ends one worker abruptly, as a crash would (its connections are cut), and lets it restart: the
   * operator's way to recycle a worker, and how the tests prove a crash stays with its worker.
   * False when there is no such worker.
   */
  async restartWorker(index: number): Promise<boolean> {
    const s = this.#slots[index];
    if (s === undefined || this.#closed) return false;
    await s.worker?.terminate();
    return true;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    // Closed first: a worker that exits after draining must not be restarted.
    this.#closed = true;
    await Promise.all(this.#slots.map((s) => (s.worker === undefined ? undefined : this.#send(s, { t: 'close', id: 0 }).catch(() => undefined))));
    await Promise.all(this.#slots.map((s) => s.worker?.terminate()));
  }
}
