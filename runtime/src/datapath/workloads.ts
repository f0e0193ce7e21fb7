// Tenants, workloads and VIPs as they live in the pinned maps. The maps are the only record, so
// a restarted runtime knows every tenant id, workload and VIP without a database.
import type { MapFd } from '../../../bpf/loader/index.ts';
import * as codec from './codec.ts';

export class WorkloadTable {
  readonly #tenants: MapFd;
  readonly #workloads: MapFd;
  readonly #vips: MapFd;

  constructor(tenants: MapFd, workloads: MapFd, vips: MapFd) {
    this.#tenants = tenants;
    this.#workloads = workloads;
    this.#vips = vips;
  }

  tenantId(name: string): number | undefined {
    for (const [k, v] of this.#tenants.entries()) if (codec.decodeTenant(v) === name) return k.readUInt32LE(0);
    return undefined;
  }

  tenantName(id: number): string | undefined {
    const v = this.#tenants.lookup(codec.u32Key(id));
    return v ? codec.decodeTenant(v) : undefined;
  }

  tenantNames(): string[] {
    return this.#tenants.entries().map(([, v]) => codec.decodeTenant(v)).sort();
  }

  /** The tenant's datapath id, allocated (max + 1) on first use. */
  ensureTenant(name: string): number {
    const existing = this.tenantId(name);
    if (existing !== undefined) return existing;
    const ids = this.#tenants.keys().map((k) => k.readUInt32LE(0));
    const id = ids.length ? Math.max(...ids) + 1 : 1;
    this.#tenants.update(codec.u32Key(id), codec.tenantValue(name));
    return id;
  }

  deleteTenant(id: number): void {
    this.#tenants.delete(codec.u32Key(id));
  }

  /** Makes the tenant's VIP set exactly `wanted`: stale VIPs go, new ones are added or updated. */
  setVips(tenantId: number, wanted: Array<{ ip: string; port: number; listenerPort: number }>): void {
    const keep = new Set(wanted.map((w) => codec.vipKey(tenantId, w.ip, w.port).toString('hex')));
    for (const k of this.#vips.keys()) {
      if (codec.decodeVipKey(k).tenantId === tenantId && !keep.has(k.toString('hex'))) this.#vips.delete(k);
    }
    for (const w of wanted) this.#vips.update(codec.vipKey(tenantId, w.ip, w.port), codec.vipValue(w.listenerPort));
  }

  vipsOf(tenantId: number): Array<{ vip: string; listenerPort: number }> {
    return this.#vips.entries()
      .map(([k, v]) => ({ key: codec.decodeVipKey(k), value: codec.decodeVipValue(v) }))
      .filter((e) => e.key.tenantId === tenantId)
      .map((e) => ({ vip: codec.formatEndpoint(e.key.addr, e.key.port), listenerPort: e.value.listenerPort }));
  }

  workloadAt(cgroupId: bigint): codec.WorkloadRecord | undefined {
    const v = this.#workloads.lookup(codec.u64Key(cgroupId));
    return v ? codec.decodeWorkload(v) : undefined;
  }

  allWorkloads(): Array<{ id: bigint; rec: codec.WorkloadRecord }> {
    return this.#workloads.entries().map(([k, v]) => ({ id: k.readBigUInt64LE(0), rec: codec.decodeWorkload(v) }));
  }

  findWorkload(tenantId: number, name: string): bigint | undefined {
    return this.allWorkloads().find((w) => w.rec.tenantId === tenantId && w.rec.name === name)?.id;
  }

  workloadsOf(tenantId: number): bigint[] {
    return this.allWorkloads().filter((w) => w.rec.tenantId === tenantId).map((w) => w.id);
  }

  putWorkload(cgroupId: bigint, rec: codec.WorkloadRecord): void {
    this.#workloads.update(codec.u64Key(cgroupId), codec.workloadValue(rec));
  }

  deleteWorkload(cgroupId: bigint): void {
    this.#workloads.delete(codec.u64Key(cgroupId));
  }
}
