// Encodes and decodes the datapath's map keys and values. Offsets come from bpf/generated.ts
// (read from the object's BTF), so a layout change in bpf/lib/types.h cannot silently skew them.
import net from 'node:net';
import { CONSTANTS, STRUCTS } from '../../../bpf/generated.ts';
import { isomeshError } from '../errors.ts';

type Layout = { size: number; fields: Record<string, { offset: number; size: number }> };
const L = STRUCTS as unknown as Record<string, Layout>;
const AF_INET = CONSTANTS.MESH_AF_INET;

function field(struct: string, name: string): { offset: number; size: number } {
  const f = L[struct]?.fields[name];
  if (!f) throw new Error(`generated layout lacks ${struct}.${name}: rebuild bpf/`);
  return f;
}

/** 16 bytes in network order; IPv4 (and "::ffff:a.b.c.d") become v4-mapped. */
export function addr16(ip: string): Buffer {
  const out = Buffer.alloc(16);
  const v4 = net.isIPv4(ip) ? ip : /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip)?.[1];
  if (v4 && net.isIPv4(v4)) {
    out.writeUInt16BE(0xffff, 10);
    v4.split('.').forEach((o, i) => out.writeUInt8(Number(o), 12 + i));
    return out;
  }
  if (!net.isIPv6(ip)) throw new Error(`not an IP address: ${ip}`);
  const [head, tail] = ip.split('::') as [string, string | undefined];
  const parse = (s: string | undefined): number[] => (s ? s.split(':').map((h) => parseInt(h, 16)) : []);
  const hi = parse(head);
  const lo = parse(tail);
  const words = tail === undefined ? hi : [...hi, ...new Array(8 - hi.length - lo.length).fill(0), ...lo];
  words.forEach((w, i) => out.writeUInt16BE(w, i * 2));
  return out;
}

export function isV4Mapped(a: Buffer): boolean {
  return a.subarray(0, 10).every((b) => b === 0) && a.readUInt16BE(10) === 0xffff;
}

export function formatAddr(a: Buffer): string {
  if (isV4Mapped(a)) return Array.from(a.subarray(12, 16)).join('.');
  const words = Array.from({ length: 8 }, (_, i) => a.readUInt16BE(i * 2).toString(16));
  // net.SocketAddress normalises to the compressed form
  return new net.SocketAddress({ address: words.join(':'), family: 'ipv6' }).address;
}

/** "10.96.0.10:80" or "[fd00::10]:80" → address and port; throws SERVICE_INVALID. */
export function parseVip(vip: string): { ip: string; port: number } {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(vip) ?? /^([^:\]]+):(\d+)$/.exec(vip);
  const port = Number(m?.[2]);
  if (!m || !net.isIP(m[1]!) || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw isomeshError('ISOMESH_ERR_SERVICE_INVALID', `VIP must be "ip:port" or "[ipv6]:port" (got "${vip}")`);
  }
  return { ip: m[1]!, port };
}

export function formatEndpoint(a: Buffer, port: number): string {
  return isV4Mapped(a) ? `${formatAddr(a)}:${port}` : `[${formatAddr(a)}]:${port}`;
}

function writeAddr(buf: Buffer, struct: string, name: string, a: Buffer): void {
  a.copy(buf, field(struct, name).offset);
}

function writeName(buf: Buffer, struct: string, name: string): void {
  const f = field(struct, 'name');
  if (Buffer.byteLength(name) >= f.size) throw new Error(`name longer than ${f.size - 1} bytes`);
  buf.write(name, f.offset, f.size - 1, 'utf8');
}

function readName(buf: Buffer, struct: string): string {
  const f = field(struct, 'name');
  const raw = buf.subarray(f.offset, f.offset + f.size);
  const end = raw.indexOf(0);
  return raw.toString('utf8', 0, end < 0 ? raw.length : end);
}

export function u32Key(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n);
  return b;
}

export function u64Key(n: bigint): Buffer {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
}

export function vipKey(tenantId: number, ip: string, port: number): Buffer {
  const b = Buffer.alloc(L.mesh_vip_key!.size);
  b.writeUInt32LE(tenantId, field('mesh_vip_key', 'tenant_id').offset);
  b.writeUInt16LE(port, field('mesh_vip_key', 'port').offset);
  writeAddr(b, 'mesh_vip_key', 'addr', addr16(ip));
  return b;
}

export function decodeVipKey(b: Buffer): { tenantId: number; addr: Buffer; port: number } {
  const a = field('mesh_vip_key', 'addr');
  return {
    tenantId: b.readUInt32LE(field('mesh_vip_key', 'tenant_id').offset),
    port: b.readUInt16LE(field('mesh_vip_key', 'port').offset),
    addr: Buffer.from(b.subarray(a.offset, a.offset + a.size)),
  };
}

export function vipValue(listenerPort: number): Buffer {
  const b = Buffer.alloc(L.mesh_vip_value!.size);
  b.writeUInt16LE(listenerPort, field('mesh_vip_value', 'listener_port').offset);
  return b;
}

export function decodeVipValue(b: Buffer): { listenerPort: number } {
  return { listenerPort: b.readUInt16LE(field('mesh_vip_value', 'listener_port').offset) };
}

export interface WorkloadRecord {
  tenantId: number;
  name: string;
  proxy4?: string;
  proxy6?: string;
}

export function workloadValue(w: WorkloadRecord): Buffer {
  const s = 'mesh_workload';
  const b = Buffer.alloc(L[s]!.size);
  b.writeUInt32LE(w.tenantId, field(s, 'tenant_id').offset);
  if (w.proxy4) {
    addr16(w.proxy4).copy(b, field(s, 'proxy4').offset, 12, 16);
    b.writeUInt8(1, field(s, 'has_proxy4').offset);
  }
  if (w.proxy6) {
    writeAddr(b, s, 'proxy6', addr16(w.proxy6));
    b.writeUInt8(1, field(s, 'has_proxy6').offset);
  }
  writeName(b, s, w.name);
  return b;
}

export function decodeWorkload(b: Buffer): WorkloadRecord {
  const s = 'mesh_workload';
  const p4 = field(s, 'proxy4').offset;
  const p6 = field(s, 'proxy6');
  const rec: WorkloadRecord = { tenantId: b.readUInt32LE(field(s, 'tenant_id').offset), name: readName(b, s) };
  if (b.readUInt8(field(s, 'has_proxy4').offset)) rec.proxy4 = Array.from(b.subarray(p4, p4 + 4)).join('.');
  if (b.readUInt8(field(s, 'has_proxy6').offset)) rec.proxy6 = formatAddr(b.subarray(p6.offset, p6.offset + 16));
  return rec;
}

export function tenantValue(name: string): Buffer {
  const b = Buffer.alloc(L.mesh_tenant!.size);
  writeName(b, 'mesh_tenant', name);
  return b;
}

export function decodeTenant(b: Buffer): string {
  return readName(b, 'mesh_tenant');
}

export function tupleKey(ip: string, port: number): Buffer {
  const b = Buffer.alloc(L.mesh_tuple!.size);
  writeAddr(b, 'mesh_tuple', 'addr', addr16(ip));
  b.writeUInt16LE(port, field('mesh_tuple', 'port').offset);
  return b;
}

export interface OriginalDestination {
  /** "ip:port" / "[ipv6]:port", the form Service.vip uses. */
  address: string;
  tenantId: number;
  family: 'ipv4' | 'ipv6';
}

export function decodeOrigDst(b: Buffer): OriginalDestination {
  const s = 'mesh_orig_dst';
  const a = field(s, 'addr');
  return {
    address: formatEndpoint(b.subarray(a.offset, a.offset + 16), b.readUInt16LE(field(s, 'port').offset)),
    tenantId: b.readUInt32LE(field(s, 'tenant_id').offset),
    family: b.readUInt16LE(field(s, 'family').offset) === AF_INET ? 'ipv4' : 'ipv6',
  };
}

export function configValue(accel: boolean): Buffer {
  const b = Buffer.alloc(L.mesh_config!.size);
  b.writeUInt32LE(accel ? 1 : 0, field('mesh_config', 'accel').offset);
  return b;
}

export function decodeConfig(b: Buffer): { accel: boolean } {
  return { accel: b.readUInt32LE(field('mesh_config', 'accel').offset) !== 0 };
}

/** Sums one per-CPU u64 slot over every CPU. */
export function sumPerCpu(b: Buffer): number {
  let total = 0n;
  for (let o = 0; o + 8 <= b.length; o += 8) total += b.readBigUInt64LE(o);
  return Number(total);
}
