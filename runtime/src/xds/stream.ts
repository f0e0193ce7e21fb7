// What every ADS stream shares, SotW or Delta: authorization from the first request, the client's
// flavor and visibility, per-type subscription state, the make-before-break push order, coalesced
// pushes on snapshot changes, and the status row GET /v1/xds shows. State is per stream — a gRPC
// C-core client opens one stream per xDS server per target, so nothing is keyed by node id.

import * as grpc from '@grpc/grpc-js';
import type pino from 'pino';
import { grpcError, type GrpcPrincipal } from './server.ts';
import { RESOURCE_KINDS, TYPE_URLS, structString, type ResourceKind } from './protos.ts';
import { PUSH_ORDER, type ChangeEvent, type Resource, type Snapshot, type SnapshotCache } from './snapshot.ts';
import type { Flavor } from './translate.ts';
import type { XdsMetrics } from './metrics.ts';

export const KIND_OF_TYPE: ReadonlyMap<string, ResourceKind> = new Map(RESOURCE_KINDS.map((k) => [TYPE_URLS[k], k]));
/** Types whose subscriptions may be wildcard (and whose SotW responses carry the full state). */
export const WILDCARD_KINDS: ReadonlySet<ResourceKind> = new Set(['listener', 'cluster']);

export interface StreamDeps {
  cache: SnapshotCache;
  metrics: XdsMetrics;
  logger: pino.Logger;
  identify(token: string): GrpcPrincipal | undefined;
}

/** Per type: what the client asked for, and what it holds. */
export interface KindState {
  wildcard: boolean;
  names: Set<string>;
  /** The client named resources explicitly at some point (ends legacy wildcard). */
  explicit: boolean;
  /** Resources the client has accepted, by name. */
  held: Map<string, Resource | { version: string }>;
  /** Resource versions the client refused; not sent again until their content changes. */
  rejected: Map<string, string>;
  inFlight?: { nonce: string; version: string; sent: ReadonlyMap<string, Resource>; removed: string[] };
  ackedVersion?: string;
  nacked?: { version: string; message: string };
  /** The client's first request for this type (or a subscription change) awaits an answer. */
  mustAnswer: boolean;
  /** The snapshot changed since the last response. */
  dirty: boolean;
  /** Names the changes since the last response touched (SotW RDS/EDS, and Delta, look only at these). */
  changed: Set<string>;
  /** Look at every subscribed resource next time, not only `changed` (subscription change, NACK, released clusters). */
  rescan: boolean;
  /** Clusters: how many the last response kept only because held routes or listeners still name them. */
  kept: number;
  /** Requests seen for this type (0 = none yet). */
  requests: number;
}

export interface ClientStatus {
  node: string;
  tenant?: string;
  protocol: 'sotw' | 'delta';
  /** Envoy (node.user_agent_name "envoy") or a proxyless gRPC client: they are served different resources. */
  flavor: Flavor;
  subscribed: Record<string, string[]>;
  acked: Record<string, string>;
  nacked?: Record<string, { version: string; message: string }>;
  /** Holds the current version of every resource it subscribes to (nothing in flight or refused). */
  synced: boolean;
}

let streamIds = 0;

export interface NodeInfo {
  id?: string;
  user_agent_name?: string;
  metadata?: unknown;
}

export abstract class AdsStream {
  readonly id = ++streamIds;
  abstract readonly protocol: 'sotw' | 'delta';
  protected readonly deps: StreamDeps;
  protected readonly call: grpc.ServerDuplexStream<any, any>;
  protected readonly kinds = new Map<ResourceKind, KindState>();
  protected nodeId = '';
  protected flavor: Flavor = 'proxyless';
  /** "*" (every tenant) or the one tenant this stream sees; undefined until authorized. */
  protected scope: string | undefined;
  #principal: GrpcPrincipal | undefined;
  #nonces = 0;
  #flushQueued = false;
  #closed = false;
  #unsubscribe: (() => void) | undefined;
  readonly #onClose: (s: AdsStream) => void;

  constructor(deps: StreamDeps, call: grpc.ServerDuplexStream<any, any>, principal: GrpcPrincipal | undefined, onClose: (s: AdsStream) => void) {
    this.deps = deps;
    this.call = call;
    this.#principal = principal;
    this.#onClose = onClose;
    call.on('data', (req) => this.#onRequest(req));
    call.on('end', () => this.close());
    call.on('error', () => this.close());
    call.on('cancelled', () => this.close());
  }

  get closed(): boolean {
    return this.#closed;
  }

  get authorized(): boolean {
    return this.scope !== undefined;
  }

  close(err?: grpc.ServiceError): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#unsubscribe) {
      this.#unsubscribe();
      this.deps.metrics.stream(this.protocol, -1);
    }
    this.#onClose(this);
    // grpc-js ends a server stream with an error status through its 'error' event
    if (err) this.call.emit('error', err);
    else if (!this.call.destroyed && !this.call.writableEnded) this.call.end();
  }

  #onRequest(req: { node?: NodeInfo; type_url?: string }): void {
    if (this.#closed) return;
    try {
      if (this.scope === undefined && !this.#authorize(req.node)) return;
      this.handle(req);
      this.scheduleFlush();
    } catch (err) {
      this.deps.logger.error({ err, stream: this.id, node: this.nodeId }, 'xDS stream failed');
      this.close(grpcError(grpc.status.INTERNAL, 'xDS server error'));
    }
  }

  /** First request: who the client is, and which tenants it may see. */
  #authorize(node: NodeInfo | undefined): boolean {
    this.nodeId = node?.id ?? '';
    this.flavor = node?.user_agent_name === 'envoy' ? 'envoy' : 'proxyless';
    let principal = this.#principal;
    if (principal === undefined) {
      const token = structString(node?.metadata, 'isomesh.token');
      principal = token === undefined ? undefined : this.deps.identify(token);
      if (principal === undefined) {
        this.close(grpcError(grpc.status.UNAUTHENTICATED, token === undefined ? 'xDS needs a token: authorization metadata or node.metadata["isomesh.token"]' : 'invalid isomesh.token'));
        return false;
      }
    }
    this.scope = principal.kind === 'admin' ? '*' : principal.tenant;
    this.#unsubscribe = this.deps.cache.onChange((ev) => this.#onChange(ev));
    this.deps.metrics.stream(this.protocol, 1);
    return true;
  }

  #onChange(ev: ChangeEvent): void {
    if (ev.flavor !== this.flavor || (ev.tenant !== null && this.scope !== '*' && ev.tenant !== this.scope)) return;
    let touched = false;
    for (const k of Object.keys(ev.changed) as ResourceKind[]) {
      const st = this.kinds.get(k);
      if (st) {
        st.dirty = true;
        const c = ev.changed[k]!;
        if (this.protocol === 'delta' || !WILDCARD_KINDS.has(k)) {
          for (const n of c.updated) st.changed.add(n);
          for (const n of c.removed) st.changed.add(n);
        }
        touched = true;
      }
    }
    if (touched) this.scheduleFlush();
  }

  protected scheduleFlush(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    setImmediate(() => {
      this.#flushQueued = false;
      if (this.#closed) return;
      try {
        this.flush();
      } catch (err) {
        this.deps.logger.error({ err, stream: this.id, node: this.nodeId }, 'xDS push failed');
        this.close(grpcError(grpc.status.INTERNAL, 'xDS server error'));
      }
    });
  }

  protected state(kind: ResourceKind): KindState {
    let st = this.kinds.get(kind);
    if (!st) {
      st = { wildcard: false, names: new Set(), explicit: false, held: new Map(), rejected: new Map(), mustAnswer: false, dirty: false, changed: new Set(), rescan: false, kept: 0, requests: 0 };
      this.kinds.set(kind, st);
    }
    return st;
  }

  protected snapshot(): Snapshot {
    return this.deps.cache.snapshot(this.flavor, this.scope!);
  }

  protected nonce(): string {
    return `${this.id}-${++this.#nonces}`;
  }

  /** Pushes in make-before-break order; listeners and routes wait while a cluster update is unacknowledged. */
  protected flush(): void {
    for (const kind of PUSH_ORDER) {
      const st = this.kinds.get(kind);
      if (!st) continue;
      if ((kind === 'listener' || kind === 'route') && this.kinds.get('cluster')?.inFlight) continue;
      if (st.inFlight || !(st.dirty || st.mustAnswer)) continue;
      this.respond(kind, st, this.snapshot());
    }
  }

  /**
   * Of `gone` (clusters the client holds that left the snapshot), those its held (or in-flight)
   * listeners and routes still name: kept in responses until the client has acknowledged what
   * replaced them.
   */
  protected stillReferenced(gone: ReadonlySet<string>): Map<string, Resource> {
    const keep = new Map<string, Resource>();
    const clusters = this.kinds.get('cluster');
    if (!clusters || gone.size === 0) return keep;
    for (const k of ['listener', 'route'] as const) {
      const st = this.kinds.get(k);
      if (!st) continue;
      for (const holders of [st.held.values(), st.inFlight?.sent.values() ?? []]) {
        for (const r of holders) {
          for (const ref of 'refs' in r ? r.refs : []) {
            if (ref.kind !== 'cluster' || !gone.has(ref.name)) continue;
            const held = clusters.held.get(ref.name);
            if (held && 'any' in held) keep.set(ref.name, held);
          }
        }
      }
    }
    clusters.kept = keep.size;
    return keep;
  }

  /**
   * After the client acknowledged new listeners or routes, clusters kept only because the old ones
   * named them may go: look at the clusters again.
   */
  protected released(kind: ResourceKind): void {
    const clusters = this.kinds.get('cluster');
    if ((kind === 'listener' || kind === 'route') && clusters && clusters.kept > 0) {
      clusters.dirty = true;
      clusters.rescan = true;
    }
  }

  /** Which of the response's changed resources a NACK blames: those its message names, else all of them. */
  protected blame(changed: string[], message: string): string[] {
    const named = changed.filter((n) => message.includes(n));
    return named.length > 0 ? named : changed;
  }

  protected recordNack(kind: ResourceKind, st: KindState, version: string, message: string): void {
    st.nacked = { version, message };
    this.deps.metrics.nack(TYPE_URLS[kind]);
    this.deps.logger.warn({ node: this.nodeId, stream: this.id, type: TYPE_URLS[kind], version, message }, 'xDS client rejected a response');
  }

  protected send(kind: ResourceKind, bytes: Buffer, what: { nonce: string; version: string; count: number; removed?: number }): void {
    this.deps.metrics.response(TYPE_URLS[kind], this.protocol);
    this.trace('response', { type: TYPE_URLS[kind], ...what });
    this.call.write(bytes);
  }

  /** Debug-level protocol trace (ISOMESH_LOG_LEVEL=debug). */
  protected trace(msg: string, fields: object): void {
    if (this.deps.logger.isLevelEnabled('debug')) this.deps.logger.debug({ stream: this.id, node: this.nodeId, ...fields }, `xDS ${this.protocol} ${msg}`);
  }

  protected abstract handle(req: unknown): void;
  protected abstract respond(kind: ResourceKind, st: KindState, snap: Snapshot): void;

  status(): ClientStatus {
    const subscribed: Record<string, string[]> = {};
    const acked: Record<string, string> = {};
    const nacked: Record<string, { version: string; message: string }> = {};
    for (const [kind, st] of this.kinds) {
      const url = TYPE_URLS[kind];
      subscribed[url] = st.wildcard ? ['*', ...[...st.names].sort()] : [...st.names].sort();
      if (st.ackedVersion !== undefined) acked[url] = st.ackedVersion;
      if (st.nacked) nacked[url] = st.nacked;
    }
    return {
      node: this.nodeId,
      ...(this.scope !== undefined && this.scope !== '*' ? { tenant: this.scope } : {}),
      protocol: this.protocol,
      flavor: this.flavor,
      subscribed,
      acked,
      ...(Object.keys(nacked).length > 0 ? { nacked } : {}),
      synced: this.#synced(),
    };
  }

  /** The client holds the current version of everything it subscribes to, and nothing is in flight. */
  #synced(): boolean {
    if (this.scope === undefined) return false;
    const snap = this.snapshot();
    for (const [kind, st] of this.kinds) {
      if (st.inFlight || st.mustAnswer) return false;
      const current = new Map<string, string>();
      if (st.wildcard) for (const r of snap.resources(kind)) current.set(r.name, r.version);
      for (const n of st.names) {
        const r = snap.get(kind, n);
        if (r) current.set(n, r.version);
      }
      for (const [name, version] of current) if (st.held.get(name)?.version !== version) return false;
      if (WILDCARD_KINDS.has(kind)) {
        const gone = new Set([...st.held.keys()].filter((n) => !current.has(n)));
        const kept = kind === 'cluster' ? this.stillReferenced(gone) : new Map();
        if ([...gone].some((n) => !kept.has(n))) return false;
      }
    }
    return true;
  }
}
