// The datapath as the daemon runs it: ISOMESH_DATAPATH (auto/on/off), the proxy's own cgroup (so
// sk_msg acceleration sees both ends), tenant VIPs kept in step with each TenantConfig, workloads
// attached with the listener addresses they need, and a reconcile at start that re-adopts what a
// previous run left pinned and drops what the store no longer has (no leaked links or entries).
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Socket } from 'node:net';
import pino from 'pino';
import type { Registry } from 'prom-client';
import { cgroup2Mount, isBpffs, processCgroup } from '../../../bpf/loader/index.ts';
import { IsomeshError, isomeshError } from '../errors.ts';
import type { TenantConfig } from '../store/model.ts';
import { Datapath, type DatapathStatus } from './index.ts';

export type DatapathMode = 'auto' | 'on' | 'off';

/** What the datapath needs from the proxy. */
export interface ListenerControl {
  addListenAddress(tenant: string, address: string): Promise<void>;
  removeListenAddress(tenant: string, address: string): Promise<void>;
  setOriginalDestinationResolver(fn: (socket: Socket) => string | undefined): void;
  /** Data-plane workers in threads resolve from the pinned map themselves (Datapath.resolverFromPins). */
  setOriginalDestinationPins?(pinDir: string): void;
}

export interface NodeDatapathOptions {
  mode: DatapathMode;
  pinDir: string;
  /** cgroup the daemon moves itself into; default: its own cgroup, or <cgroup2>/isomesh-proxy from the root. */
  proxyCgroup?: string;
  /** Address tenant listeners bind by default (workloads on it need no extra listener). */
  listenAddress: string;
  proxy: ListenerControl;
  logger: pino.Logger;
  registry?: Registry;
}

export interface WorkloadInput {
  tenant: string;
  name: string;
  cgroupPath: string;
  proxyAddress: string;
}

export interface WorkloadAttachment {
  cgroupId: string;
  proxy4?: string;
  proxy6?: string;
  programs: string[];
}

export class NodeDatapath {
  readonly mode: DatapathMode;
  readonly #dp: Datapath | undefined;
  readonly #reason: string | undefined;
  readonly #opts: NodeDatapathOptions;
  /** The proxy cgroup when it is the daemon's own (removed by a detaching close), and where its processes came from. */
  readonly #ownCgroup: { dir: string; back: string } | undefined;
  readonly #log: pino.Logger;

  private constructor(opts: NodeDatapathOptions, dp: Datapath | undefined, reason: string | undefined, ownCgroup?: { dir: string; back: string }) {
    this.mode = opts.mode;
    this.#opts = opts;
    this.#dp = dp;
    this.#reason = reason;
    this.#log = opts.logger;
    this.#ownCgroup = ownCgroup;
  }

  /** off: nothing is touched. auto: a missing feature is a warning. on: it fails the start. */
  static async start(opts: NodeDatapathOptions): Promise<NodeDatapath> {
    if (opts.mode === 'off') return new NodeDatapath(opts, undefined, 'disabled (ISOMESH_DATAPATH=off)');
    let joined: ReturnType<typeof joinProxyCgroup> = null;
    try {
      // move into the proxy cgroup only where the datapath can open: a failed start leaves nothing
      const likely = opts.pinDir.startsWith('/sys/fs/bpf/') || isBpffs(path.dirname(opts.pinDir));
      joined = likely ? joinProxyCgroup(opts.proxyCgroup, opts.logger) : null;
      const proxyCgroupPath = joined === undefined || joined === null ? joined : joined.dir;
      const dp = await Datapath.open({ pinDir: opts.pinDir, logger: opts.logger, proxyCgroupPath,
        ...(opts.registry ? { registry: opts.registry } : {}) });
      opts.proxy.setOriginalDestinationResolver((socket) => dp.originalDestination(socket));
      opts.proxy.setOriginalDestinationPins?.(opts.pinDir);
      return new NodeDatapath(opts, dp, undefined, joined?.own === true ? { dir: joined.dir, back: joined.back } : undefined);
    } catch (err) {
      // The datapath did not open after all: back to the cgroup the daemon came from, and a cgroup
      // it made for itself goes.
      if (joined !== null && joined !== undefined && joined.dir !== joined.back) await leaveCgroup(joined, joined.own, opts.logger);
      if (opts.mode === 'on') throw err;
      const reason = err instanceof IsomeshError ? err.message : `eBPF datapath unavailable: ${(err as Error).message}`;
      opts.logger.warn({ err, details: (err as IsomeshError).details }, `${reason}; transparent redirection is off, explicit traffic is served`);
      return new NodeDatapath(opts, undefined, reason);
    }
  }

  get available(): boolean {
    return this.#dp !== undefined;
  }

  get reason(): string | undefined {
    return this.#reason;
  }

  /** The open datapath, or 503 ISOMESH_ERR_DATAPATH_UNAVAILABLE with the reason. */
  require(): Datapath {
    if (!this.#dp) throw isomeshError('ISOMESH_ERR_DATAPATH_UNAVAILABLE', this.#reason ?? 'eBPF datapath unavailable');
    return this.#dp;
  }

  /** Tenant VIPs follow every TenantConfig: each VIP → the tenant listener; no config → all gone. */
  syncTenant(tenant: string, cfg: TenantConfig | undefined): void {
    const dp = this.#dp;
    if (!dp) return;
    if (!cfg) {
      dp.removeTenant(tenant);
      return;
    }
    dp.setServices(tenant, cfg.services.flatMap((s) => (s.vip ? [{ vip: s.vip, listenerPort: cfg.listenerPort }] : [])));
  }

  /**
   * Validates, opens the listener addresses the workload will be sent to, then attaches. Throws
   * 4xx IsomeshErrors for bad input before anything changes.
   */
  async attach(w: WorkloadInput): Promise<void> {
    const dp = this.require();
    dp.resolveCgroup(w.cgroupPath);
    const proxy = this.proxyAddresses(w.proxyAddress);
    for (const address of [proxy.proxy4, proxy.proxy6]) {
      if (address && this.#needsListener(address)) await this.#opts.proxy.addListenAddress(w.tenant, address);
    }
    dp.attachWorkload({ tenant: w.tenant, name: w.name, cgroupPath: w.cgroupPath,
      ...(proxy.proxy4 ? { proxyAddress: proxy.proxy4 } : {}), ...(proxy.proxy6 ? { proxyAddress6: proxy.proxy6 } : {}) });
  }

  /**
   * Detaches the workload, then closes the extra listen addresses (e.g. the node's pod-network
   * address) that no other workload of the tenant still uses.
   */
  async detach(tenant: string, name: string): Promise<boolean> {
    const dp = this.require();
    const workloads = dp.status().workloads.filter((w) => w.tenant === tenant);
    const gone = workloads.find((w) => w.name === name);
    const detached = dp.detachWorkload(tenant, name);
    if (gone) {
      const stillUsed = new Set(workloads.filter((w) => w.name !== name).flatMap((w) => [w.proxy4, w.proxy6]));
      for (const address of [gone.proxy4, gone.proxy6]) {
        if (address && !stillUsed.has(address) && this.#needsListener(address)) {
          await this.#opts.proxy.removeListenAddress(tenant, address);
        }
      }
    }
    return detached;
  }

  attachment(tenant: string, name: string): WorkloadAttachment | undefined {
    if (!this.#dp) return undefined;
    const w = this.#dp.status().workloads.find((x) => x.tenant === tenant && x.name === name);
    if (!w) return undefined;
    return { cgroupId: w.cgroupId, programs: w.programs, ...(w.proxy4 ? { proxy4: w.proxy4 } : {}), ...(w.proxy6 ? { proxy6: w.proxy6 } : {}) };
  }

  /**
   * Where a workload reaches the proxy, per address family. Loopback means "the node's own netns":
   * both loopbacks. Another address must be the node's, and the same interface's address of the
   * other family (if any) serves that family, so a pod gets IPv4 and IPv6 VIPs from one setting.
   */
  proxyAddresses(address: string): { proxy4?: string; proxy6?: string } {
    const family = net.isIP(address);
    if (family === 0) throw isomeshError('ISOMESH_ERR_WORKLOAD_INVALID', `proxyAddress must be an IP address (got ${JSON.stringify(address)})`);
    const ifaces = os.networkInterfaces();
    const all = Object.values(ifaces).flatMap((l) => l ?? []);
    if (address === '127.0.0.1' || address === '::1') {
      const hasV6 = all.some((a) => a.address === '::1');
      return { proxy4: '127.0.0.1', ...(hasV6 ? { proxy6: '::1' } : {}) };
    }
    const norm = (a: string) => (net.isIP(a) === 6 ? new URL(`http://[${a}]/`).hostname.slice(1, -1) : a);
    const iface = Object.values(ifaces).find((l) => l?.some((a) => norm(a.address) === norm(address)));
    if (!iface) throw isomeshError('ISOMESH_ERR_WORKLOAD_INVALID', `proxyAddress ${address} is not an address of this node`);
    if (address.startsWith('fe80:') || /^fe[89ab]/i.test(address)) {
      throw isomeshError('ISOMESH_ERR_WORKLOAD_INVALID', `proxyAddress ${address} is link-local; use a global or unique-local address`);
    }
    const other = iface.find((a) => (family === 4 ? a.family === 'IPv6' && !/^fe[89ab]/i.test(a.address) : a.family === 'IPv4'));
    const mine = norm(address);
    if (family === 4) return { proxy4: mine, ...(other ? { proxy6: other.address } : {}) };
    return { proxy6: mine, ...(other ? { proxy4: other.address } : {}) };
  }

  /**
   * At start: VIPs of tenants the store no longer has and workloads it no longer lists are
   * dropped; every stored workload is (re-)attached — already pinned links are kept, so
   * redirection never stops. A workload whose cgroup is gone is logged and left detached.
   */
  async reconcile(tenants: string[], workloads: WorkloadInput[]): Promise<void> {
    const dp = this.#dp;
    if (!dp) return;
    const known = new Set(tenants);
    for (const t of dp.tenants()) {
      if (!known.has(t)) {
        dp.removeTenant(t);
        this.#log.info({ tenant: t }, 'dropped datapath state of a deleted tenant');
      }
    }
    const wanted = new Set(workloads.map((w) => `${w.tenant}/${w.name}`));
    for (const w of dp.status().workloads) {
      if (!wanted.has(`${w.tenant}/${w.name}`)) {
        dp.detachWorkload(w.tenant, w.name);
        this.#log.info({ tenant: w.tenant, workload: w.name }, 'detached a workload the store no longer has');
      }
    }
    for (const w of workloads) {
      try {
        await this.attach(w);
      } catch (err) {
        this.#log.warn({ err, tenant: w.tenant, workload: w.name, cgroupPath: w.cgroupPath }, 'stored workload could not be re-attached');
      }
    }
  }

  status(): (DatapathStatus & { available: true; mode: DatapathMode }) | { available: false; mode: DatapathMode; reason: string } {
    if (!this.#dp) return { available: false, mode: this.mode, reason: this.#reason ?? 'unavailable' };
    return { available: true, mode: this.mode, ...this.#dp.status() };
  }

  setAcceleration(on: boolean): void {
    this.require().setAcceleration(on);
  }

  /**
   * Default: the programs, pins and proxy cgroup stay (redirection goes on; the next run re-adopts
   * them). detach: every attachment and pin is removed, and so is the proxy cgroup when it is the
   * daemon's own — <cgroup2>/isomesh-proxy joined from the root, or an ISOMESH_PROXY_CGROUP directory
   * this run created — once its processes (this one and its children) are moved back to the cgroup
   * the daemon came from.
   * A configured directory that existed before, or the cgroup the daemon was started in, stays.
   */
  async close(opts: { detach?: boolean } = {}): Promise<void> {
    this.#dp?.close({ detach: opts.detach === true });
    const own = this.#ownCgroup;
    if (opts.detach !== true || own === undefined) return;
    await leaveCgroup(own, true, this.#log);
  }

  #needsListener(address: string): boolean {
    const def = this.#opts.listenAddress;
    if (address === def || def === '::') return false;
    return !(def === '0.0.0.0' && net.isIP(address) === 4);
  }
}

/**
 * Moves this process back from `c.dir` to `c.back`. `remove` (a directory the daemon made, so every
 * process in it is the daemon or its child): all of them, and the directory goes. A child forking
 * meanwhile can land in the directory after its processes were moved: bounded retries.
 */
async function leaveCgroup(c: { dir: string; back: string }, remove: boolean, log: pino.Logger): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      const procs = remove ? fs.readFileSync(path.join(c.dir, 'cgroup.procs'), 'utf8').split('\n').filter((l) => l !== '') : [String(process.pid)];
      for (const pid of procs) {
        try {
          fs.writeFileSync(path.join(c.back, 'cgroup.procs'), pid);
        } catch {
          // it exited meanwhile
        }
      }
      if (!remove) {
        log.info({ cgroup: c.back }, 'proxy moved back to its cgroup');
        return;
      }
      fs.rmdirSync(c.dir);
      log.info({ cgroup: c.dir }, 'proxy cgroup removed');
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return;
      if (attempt >= 20) {
        log.warn({ err, cgroup: c.dir }, remove ? 'could not remove the proxy cgroup' : 'could not move the proxy back to its cgroup');
        return;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/**
 * Puts this process in a non-root cgroup v2 directory so mesh_sockops sees the proxy's sockets.
 * A configured directory is created and joined; otherwise a process already in a non-root
 * cgroup (e.g. a systemd unit) stays there, and one in the root joins <cgroup2>/isomesh-proxy.
 * The directory is kept at stop (ISOMESH_DATAPATH_ON_STOP=keep, the default): the pinned proxy link
 * refers to it across restarts. `own`: the directory is <cgroup2>/isomesh-proxy (joined from the
 * root) or a configured one this call created; `back`: the cgroup this process was in.
 */
function joinProxyCgroup(configured: string | undefined, log: pino.Logger): { dir: string; back: string; own: boolean } | null | undefined {
  const root = cgroup2Mount();
  if (!root || process.getuid?.() !== 0) return undefined; // Datapath.open reports why
  const current = processCgroup('self', root);
  let dir = configured;
  if (!dir) {
    if (current && path.resolve(current) !== path.resolve(root)) return { dir: current, back: current, own: false };
    dir = path.join(root, 'isomesh-proxy');
  }
  try {
    const existed = fs.existsSync(dir);
    fs.mkdirSync(dir, { recursive: true });
    if (current === undefined || path.resolve(current) !== path.resolve(dir)) fs.writeFileSync(path.join(dir, 'cgroup.procs'), String(process.pid));
    log.info({ cgroup: dir }, 'proxy runs in its own cgroup (sk_msg acceleration covers both ends)');
    return { dir, back: current ?? root, own: !configured || !existed };
  } catch (err) {
    log.warn({ err, cgroup: dir }, 'cannot move the proxy into its cgroup: sk_msg acceleration covers only the workload side');
    return current === undefined ? null : { dir: current, back: current, own: false };
  }
}
