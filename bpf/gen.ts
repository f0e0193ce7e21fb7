// Writes bpf/generated.ts from a built object: program names and sections (from the ELF symbol
// table), map definitions and struct layouts (from the object's BTF, so offsets are the
// compiler's, not a copy), counter slots (from lib/counters.h) and a hash of the C sources.
// Usage: node bpf/gen.ts --object bpf/obj/isomesh.o --out bpf/generated.ts
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

const BPF_DIR = path.dirname(new URL(import.meta.url).pathname);

/** Every file whose change must trigger a rebuild, relative to bpf/. */
export function sourceFiles(dir = BPF_DIR): string[] {
  const top = fs.readdirSync(dir).filter((f) => f.endsWith('.c') || f === 'Makefile');
  const lib = fs.readdirSync(path.join(dir, 'lib')).filter((f) => f.endsWith('.h')).map((f) => `lib/${f}`);
  return [...top, ...lib].sort();
}

export function sourceHash(dir = BPF_DIR): string {
  const h = createHash('sha256');
  for (const f of sourceFiles(dir)) {
    h.update(f).update('\0').update(fs.readFileSync(path.join(dir, f))).update('\0');
  }
  return h.digest('hex');
}

/** Function symbols and the section each lives in, read straight from the ELF64 file. */
export function elfPrograms(file: string): Array<{ name: string; section: string }> {
  const b = fs.readFileSync(file);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2 || b[5] !== 1) throw new Error(`${file}: not an ELF64 LE object`);
  const shoff = Number(b.readBigUInt64LE(0x28));
  const shentsize = b.readUInt16LE(0x3a);
  const shnum = b.readUInt16LE(0x3c);
  const shstrndx = b.readUInt16LE(0x3e);
  const sections = Array.from({ length: shnum }, (_, i) => {
    const o = shoff + i * shentsize;
    return {
      nameOff: b.readUInt32LE(o),
      type: b.readUInt32LE(o + 4),
      offset: Number(b.readBigUInt64LE(o + 0x18)),
      size: Number(b.readBigUInt64LE(o + 0x20)),
      link: b.readUInt32LE(o + 0x28),
      entsize: Number(b.readBigUInt64LE(o + 0x38)),
    };
  });
  const str = (sec: { offset: number }, off: number): string => {
    const start = sec.offset + off;
    return b.toString('latin1', start, b.indexOf(0, start));
  };
  const shstr = sections[shstrndx]!;
  const SHT_SYMTAB = 2;
  const STT_FUNC = 2;
  const STB_GLOBAL = 1;
  const out: Array<{ name: string; section: string }> = [];
  for (const sec of sections.filter((s) => s.type === SHT_SYMTAB)) {
    const strtab = sections[sec.link]!;
    for (let o = sec.offset; o < sec.offset + sec.size; o += sec.entsize) {
      const info = b[o + 4]!;
      const shndx = b.readUInt16LE(o + 6);
      if ((info & 0xf) !== STT_FUNC || info >> 4 !== STB_GLOBAL) continue;
      out.push({ name: str(strtab, b.readUInt32LE(o)), section: str(shstr, sections[shndx]!.nameOff) });
    }
  }
  return out.sort((a, b2) => a.name.localeCompare(b2.name));
}

interface BtfType {
  id: number;
  kind: string;
  name: string;
  size?: number;
  type_id?: number;
  nr_elems?: number;
  members?: Array<{ name: string; type_id: number; bits_offset: number }>;
  vars?: Array<{ type_id: number; offset: number; size: number }>;
}

interface FieldLayout { offset: number; size: number }
interface StructLayout { size: number; fields: Record<string, FieldLayout> }

export function btfLayout(file: string): {
  maps: Record<string, { type: number; maxEntries: number; key: string; value: string; keySize: number; valueSize: number }>;
  structs: Record<string, StructLayout>;
} {
  const json = JSON.parse(execFileSync(process.env.BPFTOOL ?? 'bpftool', ['-j', 'btf', 'dump', 'file', file], { encoding: 'utf8' }));
  const types = new Map<number, BtfType>((json.types as BtfType[]).map((t) => [t.id, t]));
  const byId = (id: number): BtfType => types.get(id) ?? (() => { throw new Error(`BTF id ${id} missing`); })();
  const resolve = (id: number): BtfType => {
    let t = byId(id);
    while (t.kind === 'TYPEDEF' || t.kind === 'CONST' || t.kind === 'VOLATILE') t = byId(t.type_id!);
    return t;
  };
  const sizeOf = (id: number): number => {
    const t = resolve(id);
    if (t.kind === 'ARRAY') return sizeOf(t.type_id!) * t.nr_elems!;
    if (t.size === undefined) throw new Error(`BTF ${t.kind} ${t.name} has no size`);
    return t.size;
  };
  const typeName = (id: number): string => {
    const t = byId(id);
    return t.kind === 'STRUCT' ? t.name : resolve(id).kind === 'INT' ? t.name : `${t.kind}:${t.name}`;
  };
  const structs: Record<string, StructLayout> = {};
  for (const t of types.values()) {
    if (t.kind !== 'STRUCT' || !t.name.startsWith('mesh_')) continue;
    const fields: Record<string, FieldLayout> = {};
    for (const m of t.members ?? []) fields[m.name] = { offset: m.bits_offset / 8, size: sizeOf(m.type_id) };
    structs[t.name] = { size: t.size!, fields };
  }
  const maps: ReturnType<typeof btfLayout>['maps'] = {};
  const sec = [...types.values()].find((t) => t.kind === 'DATASEC' && t.name === '.maps');
  for (const v of sec?.vars ?? []) {
    const variable = byId(v.type_id);
    const def = resolve(variable.type_id!);
    const member = (n: string) => def.members?.find((m) => m.name === n);
    // __uint(x, N) is `int (*x)[N]`; __type(x, T) is `T *x`
    const uintOf = (n: string) => resolve(byId(member(n)!.type_id).type_id!).nr_elems!;
    const pointee = (n: string) => byId(member(n)!.type_id).type_id!;
    const keyId = pointee('key');
    const valueId = pointee('value');
    maps[variable.name] = {
      type: uintOf('type'),
      maxEntries: uintOf('max_entries'),
      key: typeName(keyId),
      value: typeName(valueId),
      keySize: sizeOf(keyId),
      valueSize: sizeOf(valueId),
    };
  }
  return { maps, structs };
}

/** `enum name { A = 0, ... }` entries from a C header. */
export function headerEnum(file: string, enumName: string): Record<string, number> {
  const text = fs.readFileSync(file, 'utf8');
  const body = new RegExp(`enum ${enumName}\\s*{([^}]*)}`).exec(text)?.[1];
  if (!body) throw new Error(`enum ${enumName} not found in ${file}`);
  const out: Record<string, number> = {};
  for (const m of body.replace(/\/\*[\s\S]*?\*\//g, '').matchAll(/([A-Z0-9_]+)\s*=\s*(\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

/** Attach type of each section prefix, resolved to its number through the uapi header. */
const SECTION_ATTACH: Record<string, string> = {
  'cgroup/connect4': 'BPF_CGROUP_INET4_CONNECT',
  'cgroup/connect6': 'BPF_CGROUP_INET6_CONNECT',
  'cgroup/getpeername4': 'BPF_CGROUP_INET4_GETPEERNAME',
  'cgroup/getpeername6': 'BPF_CGROUP_INET6_GETPEERNAME',
  sockops: 'BPF_CGROUP_SOCK_OPS',
  sk_msg: 'BPF_SK_MSG_VERDICT',
};

function uapiEnum(name: string): Record<string, number> {
  const text = fs.readFileSync('/usr/include/linux/bpf.h', 'utf8');
  const body = new RegExp(`enum ${name}\\s*{([^}]*)}`).exec(text)?.[1] ?? '';
  const out: Record<string, number> = {};
  let next = 0;
  for (const line of body.replace(/\/\*[\s\S]*?\*\//g, '').split(',')) {
    const m = /^\s*([A-Z0-9_]+)\s*(?:=\s*(\d+))?\s*$/.exec(line);
    if (!m) continue;
    next = m[2] !== undefined ? Number(m[2]) : next;
    out[m[1]!] = next++;
  }
  return out;
}

export function render(objectFile: string, dir = BPF_DIR): string {
  const attachTypes = uapiEnum('bpf_attach_type');
  const mapTypes = Object.fromEntries(Object.entries(uapiEnum('bpf_map_type')).map(([k, v]) => [v, k]));
  const programs = Object.fromEntries(elfPrograms(objectFile).map((p) => {
    const attach = SECTION_ATTACH[p.section];
    if (!attach) throw new Error(`program ${p.name}: no attach type known for section ${p.section}`);
    return [p.name, { section: p.section, attachType: attachTypes[attach]!, attachTypeName: attach }];
  }));
  const { maps, structs } = btfLayout(objectFile);
  const mapsOut = Object.fromEntries(Object.entries(maps).map(([n, m]) => [n, { ...m, typeName: mapTypes[m.type] }]));
  const counters = Object.fromEntries(
    Object.entries(headerEnum(path.join(dir, 'lib/counters.h'), 'mesh_counter'))
      .filter(([k]) => k !== 'MESH_CTR_MAX')
      .map(([k, v]) => [k.replace(/^MESH_CTR_/, '').toLowerCase(), v]),
  );
  const types = fs.readFileSync(path.join(dir, 'lib/types.h'), 'utf8');
  const constants = Object.fromEntries([...types.matchAll(/#define (MESH_[A-Z0-9_]+) (\d+)/g)].map((m) => [m[1], Number(m[2])]));
  const j = (v: unknown) => JSON.stringify(v, null, 2);
  return `// generated by bpf/gen.ts from bpf/*.c and bpf/lib/*.h — do not edit; run \`make -C bpf\`.
/* eslint-disable */

/** sha256 of the C sources and Makefile the committed object was built from. */
export const SOURCE_HASH = '${sourceHash(dir)}';
export const OBJECT_FILE = 'obj/isomesh.o';

export const PROGRAMS = ${j(programs)} as const;

export const MAPS = ${j(mapsOut)} as const;

export const STRUCTS = ${j(structs)} as const;

/** Slots of the per-CPU \`counters\` map. */
export const COUNTERS = ${j(counters)} as const;

export const CONSTANTS = ${j(constants)} as const;

export type ProgramName = keyof typeof PROGRAMS;
export type MapName = keyof typeof MAPS;
export type StructName = keyof typeof STRUCTS;
export type CounterName = keyof typeof COUNTERS;
`;
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { object: { type: 'string' }, out: { type: 'string' } } });
  if (!values.object || !values.out) throw new Error('usage: gen.ts --object <file.o> --out <generated.ts>');
  fs.writeFileSync(values.out, render(values.object));
}
