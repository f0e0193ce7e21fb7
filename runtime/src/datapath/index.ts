// The eBPF datapath: redirects workload cgroups' connects to their tenant's service VIPs into the
// tenant listener (bpf/), with every map and link pinned under pinDir so a restarted runtime
// re-adopts them and redirection never stops. All state lives in the pinned maps.
import fs from 'node:fs';
import path from 'node:path';
import pino from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import {
  BpfError, BpfObject, MapFd, cgroup2Mount, cgroupId, closeFd, ensureBpffs, isBpffs, isCgroup2Dir, objGet, objectInfo,
  processCgroup, progAttach, progDetach, setLibbpfLog, type BpfProgram,
} from '../../../bpf/loader/index.ts';
import { COUNTERS, MAPS, PROGRAMS, type CounterName, type MapName, type ProgramName } from '../../../bpf/generated.ts';
import { IsomeshError, isomeshError } from '../errors.ts';
import { OBJECT_NAME_RE, TENANT_NAME_RE } from '../store/model.ts';
import * as codec from './codec.ts';
import { PinLayout, WORKLOAD_PROGRAMS, adoptLinks, dropLink, type PinnedLink } from './pins.ts';
import { WorkloadTable } from './workloads.ts';

export { codec };
export type { OriginalDestination } from './codec.ts';
export { NodeDatapath } from './node.ts';
export type { DatapathMode, ListenerControl, NodeDatapathOptions, WorkloadAttachment, WorkloadInput } from './node.ts';

const DEFAULT_OBJECT = path.join(import.meta.dirname, '..', '..', '..', 'bpf', 'obj', 'isomesh.o');

export interface DatapathOptions {
  pinDir?: string;
  logger?: pino.Logger;
  registry?: Registry;
  objectPath?: string;
  /**
   * cgroup the proxy's sockets live in: mesh_sockops is attached there so accelerated
   * connections get both ends in the SOCKHASH. Default: this process's cgroup unless it is the
   * root; null: none.
   */
  proxyCgroupPath?: string | null;
}

export interface ServiceVip {
  /** "ip:port" or "[ipv6]:port" */
  vip: string;
  listenerPort: number;
}

export interface WorkloadSpec {
  tenant: string;
  name: string;
  cgroupPath: string;
  /** Where the workload reaches the proxy: 127.0.0.1 (default, with ::1) in the node's netns. */
  proxyAddress?: string;
  /** IPv6 proxy address when proxyAddress is IPv4. */
  proxyAddress6?: string;
}

export interface DatapathStatus {
  pinDir: string;
  acceleration: boolean;
  programs: Array<{ name: string; id: number; section: string }>;
  workloads: Array<{ tenant: string; name: string; cgroupId: string; proxy4?: string; proxy6?: string; programs: string[] }>;
  proxyCgroupId?: string;
  maps: Record<string, { type: string; entries?: number }>;
  counters: Record<CounterName, number>;
}

function unavailable(why: string, cause?: unknown): IsomeshError {
  const details = cause instanceof BpfError ? { op: cause.op, errno: cause.code, log: cause.log.slice(-20) } : undefined;
  return isomeshError('ISOMESH_ERR_DATAPATH_UNAVAILABLE', `eBPF datapath unavailable: ${why}`, details);
}

export class Datapath {
  readonly pinDir: string;
  readonly #log: pino.Logger;
  readonly #layout: PinLayout;
  readonly #obj: BpfObject;
  readonly #maps: Record<MapName, MapFd>;
  readonly #links: PinnedLink[];
  readonly #table: WorkloadTable;
  readonly #cgroupRoot: string;
  #closed = false;

  private constructor(pinDir: string, log: pino.Logger, obj: BpfObject, links: PinnedLink[], cgroupRoot: string) {
    this.pinDir = pinDir;
    this.#log = log;
    this.#layout = new PinLayout(pinDir);
    this.#obj = obj;
    this.#links = links;
    this.#cgroupRoot = cgroupRoot;
    const maps = {} as Record<MapName, MapFd>;
    for (const name of Object.keys(MAPS) as MapName[]) maps[name] = obj.map(name).ops(name === 'counters');
    this.#maps = maps;
    this.#table = new WorkloadTable(maps.tenants, maps.workloads, maps.vips);
  }

  static async open(opts: DatapathOptions = {}): Promise<Datapath> {
    const pinDir = opts.pinDir ?? '/sys/fs/bpf/isomesh';
    const log = (opts.logger ?? pino({ level: 'silent' })).child({ component: 'datapath' });
    if (process.platform !== 'linux') throw unavailable('eBPF needs Linux');
    if (process.getuid?.() !== 0) throw unavailable('needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)');
    const cgroupRoot = cgroup2Mount();
    if (!cgroupRoot) throw unavailable('cgroup v2 is not mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)');
    let obj: BpfObject | undefined;
    try {
      setLibbpfLog((level, msg) => (level === 'warn' ? log.warn({ libbpf: msg }) : log.trace({ libbpf: msg })));
      if (pinDir.startsWith('/sys/fs/bpf/')) ensureBpffs('/sys/fs/bpf');
      if (!isBpffs(path.dirname(pinDir))) throw unavailable(`${path.dirname(pinDir)} is not on a bpffs mount`);
      const layout = new PinLayout(pinDir);
      layout.create();
      obj = BpfObject.open(opts.objectPath ?? DEFAULT_OBJECT);
      const reused = reusePinnedMaps(obj, layout, log);
      obj.load();
      for (const name of Object.keys(MAPS)) if (!reused.has(name)) obj.map(name).pin(layout.map(name));
      const o = obj;
      const links = adoptLinks(layout, (n) => (n in PROGRAMS ? o.program(n) : undefined),
        (pin, reason) => log.info({ pin, reason }, 'dropped a stale pinned link'));
      const dp = new Datapath(pinDir, log, obj, links, cgroupRoot);
      dp.#attachMsgRedirect();
      dp.#attachProxy(opts.proxyCgroupPath === undefined ? processCgroup('self', cgroupRoot) : opts.proxyCgroupPath);
      dp.#metrics(opts.registry);
      log.info({ pinDir, adoptedLinks: links.length, reusedMaps: reused.size }, 'datapath open');
      return dp;
    } catch (err) {
      obj?.close();
      if (err instanceof IsomeshError) throw err;
      if (err instanceof BpfError && err.code === 'ELIBBPF') throw unavailable('libbpf.so.1 is not installed', err);
      if (err instanceof BpfError && err.code === 'EPERM') throw unavailable(`${err.op}: operation not permitted`, err);
      if (err instanceof BpfError) throw unavailable(`${err.message} (kernel lacks a feature?)`, err);
      throw err;
    }
  }

  /** Replaces the tenant's VIPs (tenant is created in the datapath on first use). */
  setServices(tenant: string, vips: ServiceVip[]): void {
    this.#check();
    checkName(tenant, TENANT_NAME_RE, 'ISOMESH_ERR_TENANT_BAD_NAME');
    const wanted = vips.map(({ vip, listenerPort }) => {
      if (!Number.isInteger(listenerPort) || listenerPort < 1 || listenerPort > 65535) {
        throw isomeshError('ISOMESH_ERR_SERVICE_INVALID', `listenerPort must be 1-65535 (got ${listenerPort})`);
      }
      return { ...codec.parseVip(vip), listenerPort };
    });
    this.#table.setVips(this.#table.ensureTenant(tenant), wanted);
  }

  attachWorkload(spec: WorkloadSpec): void {
    this.#check();
    checkName(spec.tenant, TENANT_NAME_RE, 'ISOMESH_ERR_TENANT_BAD_NAME');
    checkName(spec.name, OBJECT_NAME_RE, 'ISOMESH_ERR_WORKLOAD_BAD_NAME');
    const dir = this.#resolveCgroup(spec.cgroupPath);
    const id = cgroupId(dir);
    const proxy = proxyAddresses(spec);
    const tenantId = this.#table.ensureTenant(spec.tenant);
    const current = this.#table.workloadAt(id);
    if (current && (current.tenantId !== tenantId || current.name !== spec.name)) {
      throw isomeshError('ISOMESH_ERR_WORKLOAD_INVALID', `cgroup ${dir} is already workload ${current.name} of tenant ${this.#table.tenantName(current.tenantId)}`);
    }
    const moved = this.#table.findWorkload(tenantId, spec.name);
    if (moved !== undefined && moved !== id) this.#detachCgroup(moved);
    const fresh: PinnedLink[] = [];
    try {
      for (const program of WORKLOAD_PROGRAMS) {
        if (this.#linkFor('workload', id, program)) continue;
        fresh.push(this.#attach('workload', id, program, dir));
      }
    } catch (err) {
      for (const l of fresh) dropLink(l);
      this.#links.splice(0, this.#links.length, ...this.#links.filter((l) => !fresh.includes(l)));
      if (err instanceof BpfError && err.code === 'ENOENT') throw isomeshError('ISOMESH_ERR_WORKLOAD_CGROUP_NOT_FOUND', `cgroup ${dir} vanished`);
      throw unavailable(`attaching to ${dir} failed`, err);
    }
    // the map entry is what turns redirection on, so it goes in after every program is attached
    this.#table.putWorkload(id, { tenantId, name: spec.name, ...proxy });
    this.#log.info({ tenant: spec.tenant, workload: spec.name, cgroup: dir, cgroupId: String(id), ...proxy }, 'workload attached');
  }

  /** true when the workload was attached. */
  detachWorkload(tenant: string, name: string): boolean {
    this.#check();
    const tenantId = this.#table.tenantId(tenant);
    const id = tenantId === undefined ? undefined : this.#table.findWorkload(tenantId, name);
    if (id === undefined) return false;
    this.#detachCgroup(id);
    this.#log.info({ tenant, workload: name, cgroupId: String(id) }, 'workload detached');
    return true;
  }

  /** Tenants the pinned maps know (they may outlive the runtime's own records). */
  tenants(): string[] {
    this.#check();
    return this.#table.tenantNames();
  }

  /**
   * The real cgroup v2 directory for a workload path; throws ISOMESH_ERR_WORKLOAD_CGROUP_NOT_FOUND
   * or ISOMESH_ERR_WORKLOAD_CGROUP_ROOT (so callers can check before committing anything).
   */
  resolveCgroup(p: string): string {
    this.#check();
    return this.#resolveCgroup(p);
  }

  /** Drops the tenant's VIPs and workloads. */
  removeTenant(tenant: string): void {
    this.#check();
    const tenantId = this.#table.tenantId(tenant);
    if (tenantId === undefined) return;
    this.#table.setVips(tenantId, []);
    for (const id of this.#table.workloadsOf(tenantId)) this.#detachCgroup(id);
    this.#table.deleteTenant(tenantId);
  }

  /**
   * An original-destination resolver over the pinned map of a datapath opened elsewhere in this process
   * (a data-plane worker thread: the main thread owns the Datapath, the worker has its own fd on the map).
   */
  static resolverFromPins(pinDir: string): (socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }) => string | undefined {
    const map = MapFd.fromPin(new PinLayout(pinDir).map('orig_dst_by_tuple'));
    return (socket) => {
      if (!socket.remoteAddress || !socket.remotePort) return undefined;
      const v = map.lookup(codec.tupleKey(socket.remoteAddress, socket.remotePort));
      return v === undefined ? undefined : codec.decodeOrigDst(v).address;
    };
  }

  /**
   * The VIP a redirected client asked for, from the accepted socket's peer (the client's local
   * ip and port); undefined for connections that were not redirected.
   */
  originalDestination(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): string | undefined {
    return this.originalDestinationInfo(socket)?.address;
  }

  originalDestinationInfo(socket: { remoteAddress?: string | undefined; remotePort?: number | undefined }): (codec.OriginalDestination & { tenant?: string }) | undefined {
    if (this.#closed || !socket.remoteAddress || !socket.remotePort) return undefined;
    const v = this.#maps.orig_dst_by_tuple.lookup(codec.tupleKey(socket.remoteAddress, socket.remotePort));
    if (!v) return undefined;
    const orig = codec.decodeOrigDst(v);
    const tenant = this.#table.tenantName(orig.tenantId);
    return tenant === undefined ? orig : { ...orig, tenant };
  }

  setAcceleration(on: boolean): void {
    this.#check();
    this.#maps.config.update(codec.u32Key(0), codec.configValue(on));
    this.#log.info({ acceleration: on }, 'sk_msg acceleration');
  }

  get acceleration(): boolean {
    const v = this.#maps.config.lookup(codec.u32Key(0));
    return v ? codec.decodeConfig(v).accel : false;
  }

  counters(): Record<CounterName, number> {
    const out = {} as Record<CounterName, number>;
    for (const [name, slot] of Object.entries(COUNTERS) as Array<[CounterName, number]>) {
      const v = this.#maps.counters.lookup(codec.u32Key(slot));
      out[name] = v ? codec.sumPerCpu(v) : 0;
    }
    return out;
  }

  status(): DatapathStatus {
    this.#check();
    const programs = (Object.keys(PROGRAMS) as ProgramName[]).map((name) => ({
      name, id: this.#obj.program(name).id, section: PROGRAMS[name].section,
    }));
    const workloads = this.#table.allWorkloads().map(({ id, rec }) => ({
      tenant: this.#table.tenantName(rec.tenantId) ?? String(rec.tenantId),
      name: rec.name,
      cgroupId: String(id),
      ...(rec.proxy4 ? { proxy4: rec.proxy4 } : {}),
      ...(rec.proxy6 ? { proxy6: rec.proxy6 } : {}),
      programs: this.#links.filter((l) => l.role === 'workload' && l.cgroupId === id).map((l) => l.program),
    }));
    const maps: DatapathStatus['maps'] = {};
    for (const [name, def] of Object.entries(MAPS)) {
      const countable = def.typeName.includes('HASH') && def.typeName !== 'BPF_MAP_TYPE_SOCKHASH';
      maps[name] = { type: def.typeName, ...(countable ? { entries: this.#maps[name as MapName].keys(100_000).length } : {}) };
    }
    const proxy = this.#links.find((l) => l.role === 'proxy');
    return {
      pinDir: this.pinDir,
      acceleration: this.acceleration,
      programs,
      workloads,
      ...(proxy ? { proxyCgroupId: String(proxy.cgroupId) } : {}),
      maps,
      counters: this.counters(),
    };
  }

  /**
   * Default: keep pins, so redirection continues and the next open() re-adopts everything.
   * detach: true removes every attachment and pin this datapath made.
   */
  close(opts: { detach?: boolean } = {}): void {
    if (this.#closed) return;
    this.#closed = true;
    if (opts.detach) {
      for (const l of this.#links) dropLink(l);
      try {
        progDetach(this.#obj.program('mesh_msg_redirect').fd, this.#maps.sock_pairs.fd, PROGRAMS.mesh_msg_redirect.attachType);
      } catch { /* not attached */ }
      this.#layout.remove();
    } else {
      for (const l of this.#links) l.link.destroy();
    }
    this.#links.length = 0;
    this.#obj.close();
    setLibbpfLog(undefined);
    this.#log.info({ detached: !!opts.detach }, 'datapath closed');
  }

  #check(): void {
    if (this.#closed) throw isomeshError('ISOMESH_ERR_DATAPATH_UNAVAILABLE', 'datapath is closed');
  }

  #resolveCgroup(p: string): string {
    if (typeof p !== 'string' || !path.isAbsolute(p)) {
      throw isomeshError('ISOMESH_ERR_WORKLOAD_INVALID', `cgroupPath must be an absolute path (got ${JSON.stringify(p)})`);
    }
    let dir: string;
    try {
      dir = fs.realpathSync(p);
    } catch {
      throw isomeshError('ISOMESH_ERR_WORKLOAD_CGROUP_NOT_FOUND', `cgroup path ${p} does not exist`);
    }
    if (!isCgroup2Dir(dir)) {
      throw isomeshError('ISOMESH_ERR_WORKLOAD_CGROUP_NOT_FOUND', `${p} is not a cgroup v2 directory (cgroup v2 is at ${this.#cgroupRoot})`);
    }
    if (dir === fs.realpathSync(this.#cgroupRoot) || cgroupId(dir) === cgroupId(this.#cgroupRoot)) {
      throw isomeshError('ISOMESH_ERR_WORKLOAD_CGROUP_ROOT', `${p} is the cgroup v2 root; attach a workload's own cgroup`);
    }
    return dir;
  }

  #linkFor(role: PinnedLink['role'], id: bigint, program: string): PinnedLink | undefined {
    return this.#links.find((l) => l.role === role && l.cgroupId === id && l.program === program);
  }

  #attach(role: PinnedLink['role'], id: bigint, program: ProgramName, dir: string): PinnedLink {
    const link = this.#obj.program(program).attachCgroup(dir);
    const pin = this.#layout.link(role, id, program);
    try {
      link.pin(pin);
    } catch (err) {
      link.detach();
      link.destroy();
      throw err;
    }
    const l: PinnedLink = { role, cgroupId: id, program, link, pin };
    this.#links.push(l);
    return l;
  }

  #detachCgroup(id: bigint): void {
    this.#table.deleteWorkload(id);
    for (const l of this.#links.filter((x) => x.role === 'workload' && x.cgroupId === id)) {
      dropLink(l);
      this.#links.splice(this.#links.indexOf(l), 1);
    }
  }

  /** sk_msg rides on the SOCKHASH; attaching again replaces the previous program in place. */
  #attachMsgRedirect(): void {
    const prog: BpfProgram = this.#obj.program('mesh_msg_redirect');
    progAttach(prog.fd, this.#maps.sock_pairs.fd, PROGRAMS.mesh_msg_redirect.attachType);
  }

  #attachProxy(dir: string | null | undefined): void {
    const stale = this.#links.filter((l) => l.role === 'proxy');
    const resolved = dir ? fs.realpathSync(dir) : undefined;
    const id = resolved && isCgroup2Dir(resolved) ? cgroupId(resolved) : undefined;
    for (const l of stale) {
      if (l.cgroupId === id) continue;
      dropLink(l);
      this.#links.splice(this.#links.indexOf(l), 1);
    }
    if (!resolved || id === undefined) return;
    if (id === cgroupId(this.#cgroupRoot)) {
      this.#log.warn({ cgroup: resolved }, 'proxy runs in the cgroup v2 root: sk_msg acceleration covers only the workload side');
      return;
    }
    if (!this.#linkFor('proxy', id, 'mesh_sockops')) this.#attach('proxy', id, 'mesh_sockops', resolved);
  }

  #metrics(registry: Registry | undefined): void {
    if (!registry) return;
    const dp = this;
    new Counter({
      name: 'isomesh_datapath_events_total',
      help: 'eBPF datapath events (redirects, misses, errors, getpeername rewrites, sk_msg redirects)',
      labelNames: ['event'],
      registers: [registry],
      collect() {
        if (dp.#closed) return;
        this.reset();
        for (const [event, n] of Object.entries(dp.counters())) this.inc({ event }, n);
      },
    });
    new Gauge({
      name: 'isomesh_datapath_workloads',
      help: 'workload cgroups redirected into the tenant listener',
      labelNames: ['tenant'],
      registers: [registry],
      collect() {
        if (dp.#closed) return;
        this.reset();
        for (const { rec } of dp.#table.allWorkloads()) this.inc({ tenant: dp.#table.tenantName(rec.tenantId) ?? '' });
      },
    });
  }
}

/** Pinned maps whose shape still matches the object are reused; others are unpinned and recreated. */
function reusePinnedMaps(obj: BpfObject, layout: PinLayout, log: pino.Logger): Set<string> {
  const reused = new Set<string>();
  for (const [name, def] of Object.entries(MAPS)) {
    const pin = layout.map(name);
    if (!fs.existsSync(pin)) continue;
    const fd = objGet(pin);
    try {
      const info = objectInfo(fd);
      const [type, keySize, valueSize, maxEntries] = [info.readUInt32LE(0), info.readUInt32LE(8), info.readUInt32LE(12), info.readUInt32LE(16)];
      if (type === def.type && keySize === def.keySize && valueSize === def.valueSize && maxEntries === def.maxEntries) {
        obj.map(name).reuseFd(fd);
        reused.add(name);
      } else {
        log.warn({ map: name, pinned: { type, keySize, valueSize, maxEntries } }, 'pinned map has another layout: recreating it');
        fs.rmSync(pin);
      }
    } finally {
      closeFd(fd); // reuse_fd keeps its own dup
    }
  }
  return reused;
}

function checkName(name: string, re: RegExp, code: 'ISOMESH_ERR_TENANT_BAD_NAME' | 'ISOMESH_ERR_WORKLOAD_BAD_NAME'): void {
  if (typeof name !== 'string' || !re.test(name)) throw isomeshError(code, `invalid name ${JSON.stringify(name)}`);
}

function proxyAddresses(spec: WorkloadSpec): { proxy4?: string; proxy6?: string } {
  const { proxyAddress: a, proxyAddress6: a6 } = spec;
  if (a === undefined && a6 === undefined) return { proxy4: '127.0.0.1', proxy6: '::1' };
  const out: { proxy4?: string; proxy6?: string } = {};
  for (const ip of [a, a6]) {
    if (ip === undefined) continue;
    try {
      const mapped = codec.isV4Mapped(codec.addr16(ip));
      if (mapped) out.proxy4 = codec.formatAddr(codec.addr16(ip));
      else out.proxy6 = ip;
    } catch {
      throw isomeshError('ISOMESH_ERR_WORKLOAD_INVALID', `proxyAddress must be an IP address (got ${JSON.stringify(ip)})`);
    }
  }
  return out;
}
