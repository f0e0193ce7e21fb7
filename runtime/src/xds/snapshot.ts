// Snapshots, go-control-plane style. Each tenant's resources (per flavor) are built, validated and
// encoded once per config change into an immutable TenantPart; a Snapshot is an immutable view over
// the parts one visibility sees (every tenant for the admin / the unix socket, one tenant for a tenant
// token) plus the node part, versioned per type URL. A tenant's new part is installed only when every
// resource passes validation and every name it references resolves within that tenant (or the node):
// otherwise the tenant keeps its last good part and the failure is logged, counted and shown in status.
// No other tenant's resources are touched by a tenant's update — structurally, since a part can only
// reference names inside itself.

import { hash as cryptoHash } from 'node:crypto';
import type pino from 'pino';
import type { TenantConfig } from '../store/model.ts';
import { RESOURCE_KINDS, TYPE_URLS, type EnvoyProtos, type ResourceKind } from './protos.ts';
import { TranslateError, translateNode, translateTenant, type Flavor, type NodeFacts, type ResourceSet, type Translation } from './translate.ts';
import { flavorErrors, type dataPlaneValidator } from './validate.ts';
import { encodeAny } from './wire.ts';

export const FLAVORS: readonly Flavor[] = ['envoy', 'proxyless'];
/** Push order: make before break (a listener or route never names a cluster the client lacks). */
export const PUSH_ORDER: readonly ResourceKind[] = ['cluster', 'endpoint', 'listener', 'route'];

export interface Ref {
  kind: ResourceKind;
  name: string;
}

export interface Resource {
  readonly name: string;
  /** Content hash of the encoded resource. */
  readonly version: string;
  /** The resource as an encoded google.protobuf.Any. */
  readonly any: Buffer;
  /** Names this resource makes the client look up. */
  readonly refs: readonly Ref[];
}

type KindMap<T> = Record<ResourceKind, T>;

export interface TenantPart {
  readonly tenant: string | null;
  readonly resources: Readonly<KindMap<ReadonlyMap<string, Resource>>>;
  /** Cache revision at which each kind last changed in this part. */
  readonly revision: Readonly<KindMap<number>>;
}

const kinds = <T>(f: (k: ResourceKind) => T): KindMap<T> => ({ cluster: f('cluster'), endpoint: f('endpoint'), listener: f('listener'), route: f('route') });
const EMPTY_PART: TenantPart = { tenant: null, resources: kinds(() => new Map()), revision: kinds(() => 0) };

/** The tenant a resource name belongs to (names embed it; see translate.ts), or undefined. */
export function tenantOf(kind: ResourceKind, flavor: Flavor, name: string): string | undefined {
  if (kind === 'cluster' || kind === 'endpoint') {
    const i = name.indexOf('/');
    return i > 0 ? name.slice(0, i) : undefined;
  }
  if (flavor === 'envoy') return name.startsWith('isomesh.') ? name.slice('isomesh.'.length) : undefined;
  const i = name.lastIndexOf('.');
  return i > 0 ? name.slice(i + 1) : undefined;
}

/** An immutable view: what one visibility (`*` or one tenant) of one flavor sees. */
export class Snapshot {
  readonly flavor: Flavor;
  readonly scope: string;
  readonly #parts: ReadonlyMap<string, TenantPart>;
  readonly #node: TenantPart;
  readonly #versions: Readonly<KindMap<string>>;

  constructor(flavor: Flavor, scope: string, parts: ReadonlyMap<string, TenantPart>, node: TenantPart, versions: KindMap<string>) {
    this.flavor = flavor;
    this.scope = scope;
    this.#parts = parts;
    this.#node = node;
    this.#versions = Object.freeze(versions);
  }

  version(kind: ResourceKind): string {
    return this.#versions[kind];
  }

  get(kind: ResourceKind, name: string): Resource | undefined {
    const n = this.#node.resources[kind].get(name);
    if (n) return n;
    const t = tenantOf(kind, this.flavor, name);
    return t === undefined ? undefined : this.#parts.get(t)?.resources[kind].get(name);
  }

  *resources(kind: ResourceKind): Iterable<Resource> {
    yield* this.#node.resources[kind].values();
    for (const p of this.#parts.values()) yield* p.resources[kind].values();
  }

  count(kind: ResourceKind): number {
    let n = this.#node.resources[kind].size;
    for (const p of this.#parts.values()) n += p.resources[kind].size;
    return n;
  }

  tenants(): string[] {
    return [...this.#parts.keys()];
  }

  /** Every reference that does not resolve in this snapshot ([] = consistent). */
  consistent(): string[] {
    const missing: string[] = [];
    for (const kind of RESOURCE_KINDS) {
      for (const r of this.resources(kind)) {
        for (const ref of r.refs) if (!this.get(ref.kind, ref.name)) missing.push(`${kind} ${r.name} → ${ref.kind} ${ref.name}`);
      }
    }
    return missing;
  }
}

// ---- references -----------------------------------------------------------------------------

type Obj = Record<string, any>;

function hcmOf(listener: Obj): Obj[] {
  const out: Obj[] = [];
  if (listener.api_listener?.api_listener) out.push(listener.api_listener.api_listener);
  for (const fc of listener.filter_chains ?? []) for (const f of fc.filters ?? []) if (f.typed_config?.rds || f.typed_config?.http_filters) out.push(f.typed_config);
  return out;
}

export function referencesOf(kind: ResourceKind, obj: Obj): Ref[] {
  const refs: Ref[] = [];
  if (kind === 'listener') {
    for (const hcm of hcmOf(obj)) {
      if (hcm.rds?.route_config_name) refs.push({ kind: 'route', name: hcm.rds.route_config_name });
      for (const f of hcm.http_filters ?? []) {
        const tc = f.typed_config ?? {};
        for (const gs of [tc.grpc_service, tc.rate_limit_service?.grpc_service]) {
          if (gs?.envoy_grpc?.cluster_name) refs.push({ kind: 'cluster', name: gs.envoy_grpc.cluster_name });
        }
      }
    }
  } else if (kind === 'route') {
    for (const vh of obj.virtual_hosts ?? []) {
      for (const r of vh.routes ?? []) {
        if (r.route?.cluster) refs.push({ kind: 'cluster', name: r.route.cluster });
        for (const c of r.route?.weighted_clusters?.clusters ?? []) refs.push({ kind: 'cluster', name: c.name });
      }
    }
  } else if (kind === 'cluster' && obj.type === 'EDS') {
    refs.push({ kind: 'endpoint', name: obj.eds_cluster_config?.service_name || obj.name });
  }
  const seen = new Set<string>();
  return refs.filter((r) => !seen.has(`${r.kind}\0${r.name}`) && seen.add(`${r.kind}\0${r.name}`));
}

// ---- the cache ------------------------------------------------------------------------------

export interface ChangeEvent {
  flavor: Flavor;
  /** null for the node part. */
  tenant: string | null;
  revision: number;
  /** Per kind, names updated or added, and names removed. */
  changed: Partial<KindMap<{ updated: string[]; removed: string[] }>>;
}

export interface SnapshotCacheOptions {
  /** Flavors built from the start (others on first use); default none. */
  flavors?: readonly Flavor[];
  protos: EnvoyProtos;
  validator: ReturnType<typeof dataPlaneValidator>;
  logger: pino.Logger;
  /** Called when a tenant's config is refused (metrics). */
  onRejected?: (tenant: string, error: string) => void;
}

export interface TenantBuildStatus {
  generation: number;
  /** The generation whose resources are served (lower than generation after a refused update). */
  served?: number;
  error?: string;
  warnings: string[];
}

const hash = (b: Uint8Array): string => cryptoHash('sha256', b, 'base64url').slice(0, 16);

export class SnapshotCache {
  readonly #o: SnapshotCacheOptions;
  #revision = 0;
  readonly #parts: Record<Flavor, Map<string, TenantPart>> = { envoy: new Map(), proxyless: new Map() };
  readonly #node: Record<Flavor, TenantPart> = { envoy: EMPTY_PART, proxyless: EMPTY_PART };
  /** Revision at which a kind last changed anywhere in a flavor (the admin view's version). */
  readonly #allRev: Record<Flavor, KindMap<number>> = { envoy: kinds(() => 0), proxyless: kinds(() => 0) };
  /** Revision at which a tenant was removed (its own view's version from then on). */
  readonly #removedRev = new Map<string, number>();
  readonly #views = new Map<string, Snapshot>();
  readonly #listeners = new Set<(ev: ChangeEvent) => void>();
  readonly #status = new Map<string, TenantBuildStatus>();
  /** Envoy listener address:port → tenant, so two tenants can never claim one socket. */
  readonly #sockets = new Map<string, string>();
  readonly #socketsOf = new Map<string, string[]>();
  readonly #active = new Set<Flavor>();
  /** Each tenant's last config and facts, to build a flavor activated later. */
  readonly #inputs = new Map<string, { cfg: TenantConfig; facts: NodeFacts }>();
  #nodeFacts: NodeFacts | undefined;

  constructor(opts: SnapshotCacheOptions) {
    this.#o = opts;
    for (const f of opts.flavors ?? []) this.#active.add(f);
  }

  get revision(): number {
    return this.#revision;
  }

  onChange(fn: (ev: ChangeEvent) => void): () => void {
    this.#listeners.add(fn);
    return () => this.#listeners.delete(fn);
  }

  /** The view of `scope` ("*" or a tenant name) for `flavor`. */
  snapshot(flavor: Flavor, scope: string): Snapshot {
    this.activate(flavor);
    const key = `${flavor}\0${scope}`;
    let s = this.#views.get(key);
    if (s) return s;
    const node = this.#node[flavor];
    if (scope === '*') {
      s = new Snapshot(flavor, scope, new Map(this.#parts[flavor]), node, kinds((k) => String(this.#allRev[flavor][k])));
    } else {
      const part = this.#parts[flavor].get(scope);
      const removed = this.#removedRev.get(scope) ?? 0;
      const parts = new Map(part ? [[scope, part]] : []);
      s = new Snapshot(flavor, scope, parts, node, kinds((k) => String(Math.max(part?.revision[k] ?? 0, node.revision[k], removed))));
    }
    this.#views.set(key, s);
    return s;
  }

  status(): Record<string, TenantBuildStatus> {
    return Object.fromEntries(this.#status);
  }

  /** Flavors someone has asked for: only these are built (a node serving only Envoy never builds the proxyless resources). */
  get active(): ReadonlySet<Flavor> {
    return this.#active;
  }

  /**
   * Starts building `flavor` (idempotent): the node part and every tenant's, at once, then on every
   * change. snapshot() calls it, so the first client of a flavor pays for its first build.
   */
  activate(flavor: Flavor): void {
    if (this.#active.has(flavor)) return;
    this.#active.add(flavor);
    if (this.#nodeFacts) this.#buildNode(flavor, this.#nodeFacts);
    for (const { cfg, facts } of this.#inputs.values()) this.#buildTenant(cfg, facts, [flavor]);
  }

  /** Per type URL, the current version of a flavor's admin view ("0" while the flavor is not built). */
  versions(flavor: Flavor): Record<ResourceKind, string> {
    return kinds((k) => (this.#active.has(flavor) ? String(this.#allRev[flavor][k]) : '0'));
  }

  /** Node-level resources (the isomesh_grpc cluster) from the node facts. */
  setNode(facts: NodeFacts): void {
    this.#nodeFacts = facts;
    for (const flavor of this.#active) this.#buildNode(flavor, facts);
  }

  #buildNode(flavor: Flavor, facts: NodeFacts): void {
    const built = this.#build(translateNode(facts, flavor), flavor, null, EMPTY_PART, new Map());
    if (typeof built === 'string') throw new Error(`node resources are invalid: ${built}`); // a translator bug
    this.#install(flavor, null, built.resources, built.changed);
  }

  /** Rebuilds a tenant from its config; false (and the last good resources kept) when refused. */
  setTenant(cfg: TenantConfig, facts: NodeFacts): boolean {
    this.#inputs.set(cfg.name, { cfg, facts });
    return this.#buildTenant(cfg, facts, [...this.#active].sort());
  }

  #buildTenant(cfg: TenantConfig, facts: NodeFacts, flavors: Flavor[]): boolean {
    const prevStatus = this.#status.get(cfg.name);
    const status: TenantBuildStatus = { generation: cfg.generation, warnings: prevStatus?.warnings ?? [], served: prevStatus?.served };
    this.#status.set(cfg.name, status);
    const built: Array<{ flavor: Flavor; resources: KindMap<Map<string, Resource>>; changed: ChangeEvent['changed'] }> = [];
    const sockets = [...new Set(facts.listenAddresses(cfg.name))].map((a) => `${a}:${cfg.listenerPort}`);
    let error = this.#socketConflict(cfg.name, sockets);
    let first: Translation | undefined;
    const shared = new Map<object, Resource>(); // objects both flavors share (endpoints): built once
    for (const flavor of error === undefined ? flavors : []) {
      let set: ResourceSet;
      try {
        const tr = translateTenant(cfg, facts, flavor, first);
        first ??= tr;
        set = tr.resources;
        status.warnings = tr.warnings;
      } catch (err) {
        if (!(err instanceof TranslateError)) throw err;
        error = err.message;
        break;
      }
      const b = this.#build(set, flavor, cfg.name, this.#parts[flavor].get(cfg.name) ?? EMPTY_PART, shared);
      if (typeof b === 'string') {
        error = b;
        break;
      }
      built.push({ flavor, ...b });
    }
    if (error !== undefined) {
      status.error = error;
      this.#o.logger.error({ tenant: cfg.name, generation: cfg.generation, err: error }, 'xDS: tenant configuration refused; its last good resources stay served');
      this.#o.onRejected?.(cfg.name, error);
      return false;
    }
    status.served = cfg.generation;
    this.#claimSockets(cfg.name, sockets);
    for (const b of built) this.#install(b.flavor, cfg.name, b.resources, b.changed);
    return true;
  }

  removeTenant(name: string): void {
    this.#inputs.delete(name);
    this.#status.delete(name);
    this.#releaseSockets(name);
    for (const flavor of FLAVORS) {
      const old = this.#parts[flavor].get(name);
      if (!old) continue;
      const changed: ChangeEvent['changed'] = {};
      for (const k of RESOURCE_KINDS) if (old.resources[k].size > 0) changed[k] = { updated: [], removed: [...old.resources[k].keys()] };
      this.#parts[flavor].delete(name);
      this.#emit(flavor, name, changed, true);
    }
  }

  #build(
    set: ResourceSet,
    flavor: Flavor,
    tenant: string | null,
    prev: TenantPart,
    memo: Map<object, Resource>,
  ): { resources: KindMap<Map<string, Resource>>; changed: ChangeEvent['changed'] } | string {
    const { protos, validator } = this.#o;
    const resources = kinds(() => new Map<string, Resource>());
    for (const kind of RESOURCE_KINDS) {
      for (const [name, obj] of set[kind]) {
        const done = memo.get(obj);
        if (done) {
          resources[kind].set(name, prev.resources[kind].get(name)?.version === done.version ? prev.resources[kind].get(name)! : done);
          continue;
        }
        let any: Buffer | undefined;
        try {
          any = encodeAny(TYPE_URLS[kind], protos.encode(TYPE_URLS[kind], obj));
        } catch {
          // protobufjs refuses some malformed objects outright; the validator says why below
        }
        const version = any ? hash(any) : '';
        const old = prev.resources[kind].get(name);
        if (any && old?.version === version) {
          resources[kind].set(name, old); // unchanged content: validated when first built
          memo.set(obj, old);
          continue;
        }
        const errors = [...validator.validate(TYPE_URLS[kind], obj), ...flavorErrors(kind, flavor, obj)];
        if (errors.length > 0 || !any) return `${flavor} ${kind} ${name}: ${(errors.length > 0 ? errors : ['does not encode']).slice(0, 5).join('; ')}`;
        const r: Resource = { name, version, any, refs: referencesOf(kind, obj) };
        resources[kind].set(name, r);
        memo.set(obj, r);
      }
    }
    // Every reference must resolve inside this part or the node's: a tenant can only name its own resources.
    const node = tenant === null ? EMPTY_PART : this.#node[flavor];
    for (const kind of RESOURCE_KINDS) {
      for (const r of resources[kind].values()) {
        for (const ref of r.refs) {
          if (!resources[ref.kind].has(ref.name) && !node.resources[ref.kind].has(ref.name)) return `${flavor} ${kind} ${r.name}: references missing ${ref.kind} ${ref.name}`;
        }
      }
    }
    const changed: ChangeEvent['changed'] = {};
    for (const kind of RESOURCE_KINDS) {
      const updated = [...resources[kind].values()].filter((r) => prev.resources[kind].get(r.name) !== r).map((r) => r.name);
      const removed = [...prev.resources[kind].keys()].filter((n) => !resources[kind].has(n));
      if (updated.length > 0 || removed.length > 0) changed[kind] = { updated, removed };
    }
    return { resources, changed };
  }

  #socketConflict(tenant: string, sockets: string[]): string | undefined {
    for (const sock of sockets) {
      const owner = this.#sockets.get(sock);
      if (owner !== undefined && owner !== tenant) return `listener address ${sock} is already served for another tenant`;
    }
    return undefined;
  }

  #claimSockets(tenant: string, sockets: string[]): void {
    this.#releaseSockets(tenant);
    for (const sock of sockets) this.#sockets.set(sock, tenant);
    this.#socketsOf.set(tenant, sockets);
  }

  #releaseSockets(tenant: string): void {
    for (const sock of this.#socketsOf.get(tenant) ?? []) if (this.#sockets.get(sock) === tenant) this.#sockets.delete(sock);
    this.#socketsOf.delete(tenant);
  }

  #install(flavor: Flavor, tenant: string | null, resources: KindMap<Map<string, Resource>>, changed: ChangeEvent['changed']): void {
    const prev = tenant === null ? this.#node[flavor] : this.#parts[flavor].get(tenant);
    if (Object.keys(changed).length === 0 && prev !== undefined) return; // same content: views stay as they are
    const revision = this.#revision + 1;
    const part: TenantPart = { tenant, resources, revision: kinds((k) => (changed[k] ? revision : (prev?.revision[k] ?? 0))) };
    if (tenant === null) this.#node[flavor] = part;
    else this.#parts[flavor].set(tenant, part);
    this.#emit(flavor, tenant, changed, false);
  }

  #emit(flavor: Flavor, tenant: string | null, changed: ChangeEvent['changed'], removal: boolean): void {
    const revision = ++this.#revision;
    for (const k of Object.keys(changed) as ResourceKind[]) this.#allRev[flavor][k] = revision;
    if (removal && tenant !== null) this.#removedRev.set(tenant, revision);
    if (tenant === null) {
      for (const key of [...this.#views.keys()]) if (key.startsWith(`${flavor}\0`)) this.#views.delete(key);
    } else {
      this.#views.delete(`${flavor}\0*`);
      this.#views.delete(`${flavor}\0${tenant}`);
    }
    const ev: ChangeEvent = { flavor, tenant, revision, changed };
    for (const fn of this.#listeners) fn(ev);
  }
}
