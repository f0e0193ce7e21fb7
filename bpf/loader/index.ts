// Typed TypeScript API over libbpf.so.1: open and load an object, find its programs and maps,
// attach cgroup programs through links, pin and re-adopt maps and links, and operate on maps
// by fd with Buffers. Every failure is a BpfError carrying the errno name.
import fs from 'node:fs';
import { BpfError, call, libbpf, setLibbpfLog, type Ptr } from './libbpf.ts';

export { BpfError, setLibbpfLog };
export { cgroup2Mount, cgroupId, isCgroup2Dir, mounts, processCgroup } from './platform.ts';
export type { LogLevel, LogSink } from './libbpf.ts';

export const BPF_ANY = 0n;
export const BPF_NOEXIST = 1n;
export const BPF_EXIST = 2n;
const BPFFS_MAGIC = 0xcafe4a11;

export class BpfObject {
  readonly path: string;
  #ptr: Ptr | null;

  private constructor(path: string, ptr: Ptr) {
    this.path = path;
    this.#ptr = ptr;
  }

  /** bpf_object__open_file: parses the ELF, nothing reaches the kernel yet. */
  static open(path: string): BpfObject {
    const lib = libbpf();
    return new BpfObject(path, call('bpf_object__open_file', () => lib.objectOpenFile(path, null) as Ptr | null, path));
  }

  get ptr(): Ptr {
    if (this.#ptr === null) throw new BpfError('bpf_object (closed)', 9 /* EBADF */);
    return this.#ptr;
  }

  /** Creates the maps (or adopts reused fds) and verifies and loads every program. */
  load(): void {
    const lib = libbpf();
    call('bpf_object__load', () => lib.objectLoad(this.ptr) as number, this.path);
  }

  program(name: string): BpfProgram {
    const lib = libbpf();
    const p = call('bpf_object__find_program_by_name', () => lib.findProgram(this.ptr, name) as Ptr | null, name);
    return new BpfProgram(name, p);
  }

  map(name: string): BpfMap {
    const lib = libbpf();
    const m = call('bpf_object__find_map_by_name', () => lib.findMap(this.ptr, name) as Ptr | null, name);
    return new BpfMap(name, m);
  }

  /** Closes the object: its program and map fds go; pinned or attached objects stay in the kernel. */
  close(): void {
    if (this.#ptr === null) return;
    libbpf().objectClose(this.#ptr);
    this.#ptr = null;
  }
}

export class BpfProgram {
  readonly name: string;
  readonly ptr: Ptr;

  constructor(name: string, ptr: Ptr) {
    this.name = name;
    this.ptr = ptr;
  }

  get fd(): number {
    const lib = libbpf();
    return call('bpf_program__fd', () => lib.programFd(this.ptr) as number, this.name);
  }

  /** Attaches to a cgroup v2 directory through a bpf_link (multi-attach: other programs stay). */
  attachCgroup(cgroupPath: string): BpfLink {
    const lib = libbpf();
    const fd = openDir(cgroupPath);
    try {
      const link = call('bpf_program__attach_cgroup', () => lib.attachCgroup(this.ptr, fd) as Ptr | null, `${this.name} -> ${cgroupPath}`);
      return new BpfLink(link);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** Program id in the kernel (bpftool prog show id N). */
  get id(): number {
    return objectInfo(this.fd).readUInt32LE(4);
  }
}

export class BpfMap {
  readonly name: string;
  readonly ptr: Ptr;

  constructor(name: string, ptr: Ptr) {
    this.name = name;
    this.ptr = ptr;
  }

  get fd(): number {
    const lib = libbpf();
    return call('bpf_map__fd', () => lib.mapFd(this.ptr) as number, this.name);
  }

  get keySize(): number {
    return libbpf().mapKeySize(this.ptr) as number;
  }

  get valueSize(): number {
    return libbpf().mapValueSize(this.ptr) as number;
  }

  /** Before load: use an existing map (e.g. a pinned one from bpf_obj_get) instead of creating it. */
  reuseFd(fd: number): void {
    const lib = libbpf();
    call('bpf_map__reuse_fd', () => lib.mapReuseFd(this.ptr, fd) as number, this.name);
  }

  pin(path: string): void {
    const lib = libbpf();
    call('bpf_map__pin', () => lib.mapPin(this.ptr, path) as number, path);
  }

  /** fd-level operations on the loaded map. */
  ops(perCpu = false): MapFd {
    return new MapFd(this.fd, this.keySize, this.valueSize, perCpu, false);
  }
}

export class BpfLink {
  #ptr: Ptr | null;

  constructor(ptr: Ptr) {
    this.#ptr = ptr;
  }

  /** bpf_link__open: adopts a pinned link (a restarted runtime finds its attachments this way). */
  static open(path: string): BpfLink {
    const lib = libbpf();
    return new BpfLink(call('bpf_link__open', () => lib.linkOpen(path) as Ptr | null, path));
  }

  get ptr(): Ptr {
    if (this.#ptr === null) throw new BpfError('bpf_link (destroyed)', 9 /* EBADF */);
    return this.#ptr;
  }

  get fd(): number {
    const lib = libbpf();
    return call('bpf_link__fd', () => lib.linkFd(this.ptr) as number);
  }

  /** Link id and the id of the program it runs (bpf_link_info). */
  info(): { id: number; progId: number } {
    const b = objectInfo(this.fd);
    return { id: b.readUInt32LE(4), progId: b.readUInt32LE(8) };
  }

  pin(path: string): void {
    const lib = libbpf();
    call('bpf_link__pin', () => lib.linkPin(this.ptr, path) as number, path);
  }

  unpin(): void {
    const lib = libbpf();
    call('bpf_link__unpin', () => lib.linkUnpin(this.ptr) as number);
  }

  /** Swaps the program in place (BPF_LINK_UPDATE): no moment without a program attached. */
  updateProgram(prog: BpfProgram): void {
    const lib = libbpf();
    call('bpf_link__update_program', () => lib.linkUpdateProgram(this.ptr, prog.ptr) as number, prog.name);
  }

  /** Detaches now, even if other fds or pins still reference the link. */
  detach(): void {
    const lib = libbpf();
    call('bpf_link__detach', () => lib.linkDetach(this.ptr) as number);
  }

  /** Frees our handle; the attachment lives on while the link is pinned. */
  destroy(): void {
    if (this.#ptr === null) return;
    libbpf().linkDestroy(this.#ptr);
    this.#ptr = null;
  }
}

/** Map operations on a raw fd (a loaded map or one from bpf_obj_get). */
export class MapFd {
  readonly fd: number;
  readonly keySize: number;
  /** Bytes of one value; per-CPU maps read and write `valueSize` rounded to 8 for every possible CPU. */
  readonly valueSize: number;
  readonly perCpu: boolean;
  readonly #owned: boolean;

  constructor(fd: number, keySize: number, valueSize: number, perCpu = false, owned = true) {
    this.fd = fd;
    this.keySize = keySize;
    this.valueSize = valueSize;
    this.perCpu = perCpu;
    this.#owned = owned;
  }

  /** Opens a pinned map; sizes come from the kernel (bpf_map_info). */
  static fromPin(path: string, perCpu = false): MapFd {
    const fd = objGet(path);
    const info = objectInfo(fd);
    return new MapFd(fd, info.readUInt32LE(8), info.readUInt32LE(12), perCpu, true);
  }

  get bufferSize(): number {
    return this.perCpu ? Math.ceil(this.valueSize / 8) * 8 * possibleCpus() : this.valueSize;
  }

  lookup(key: Buffer): Buffer | undefined {
    this.#checkKey(key);
    const lib = libbpf();
    const out = Buffer.alloc(this.bufferSize);
    const rc = lib.mapLookup(this.fd, key, out) as number;
    if (rc === -2 /* ENOENT */) return undefined;
    call('bpf_map_lookup_elem', () => rc);
    return out;
  }

  update(key: Buffer, value: Buffer, flags: bigint = BPF_ANY): void {
    this.#checkKey(key);
    if (value.length !== this.bufferSize) throw new BpfError('bpf_map_update_elem', 22, `value is ${value.length} bytes, map wants ${this.bufferSize}`);
    const lib = libbpf();
    call('bpf_map_update_elem', () => lib.mapUpdate(this.fd, key, value, flags) as number);
  }

  /** true when the key existed. */
  delete(key: Buffer): boolean {
    this.#checkKey(key);
    const rc = libbpf().mapDelete(this.fd, key) as number;
    if (rc === -2) return false;
    call('bpf_map_delete_elem', () => rc);
    return true;
  }

  /** Snapshot of the keys (bounded by `limit`): safe to delete while walking the result. */
  keys(limit = 1 << 20): Buffer[] {
    const lib = libbpf();
    const keys: Buffer[] = [];
    let prev: Buffer | null = null;
    while (keys.length < limit) {
      const next = Buffer.alloc(this.keySize);
      const rc = lib.mapNextKey(this.fd, prev, next) as number;
      if (rc === -2) break;
      call('bpf_map_get_next_key', () => rc);
      keys.push(next);
      prev = next;
    }
    return keys;
  }

  entries(limit?: number): Array<[Buffer, Buffer]> {
    const out: Array<[Buffer, Buffer]> = [];
    for (const k of this.keys(limit)) {
      const v = this.lookup(k);
      if (v) out.push([k, v]);
    }
    return out;
  }

  close(): void {
    if (this.#owned) closeFd(this.fd);
  }

  #checkKey(key: Buffer): void {
    if (key.length !== this.keySize) throw new BpfError('map key', 22, `key is ${key.length} bytes, map wants ${this.keySize}`);
  }
}

/** bpf_obj_get: an fd for a pinned map, program or link. */
export function objGet(path: string): number {
  const lib = libbpf();
  return call('bpf_obj_get', () => lib.objGet(path) as number, path);
}

/** bpf_obj_get_info_by_fd: raw info (map: type,id,key_size,value_size,...; prog/link: type,id,...). */
export function objectInfo(fd: number): Buffer {
  const lib = libbpf();
  const info = Buffer.alloc(256);
  const len = [info.length];
  call('bpf_obj_get_info_by_fd', () => lib.objGetInfoByFd(fd, info, len) as number);
  return info;
}

/** Legacy attach (used for sk_msg on a SOCKHASH, which has no link in libbpf 1.1). */
export function progAttach(progFd: number, targetFd: number, attachType: number, flags = 0): void {
  const lib = libbpf();
  call('bpf_prog_attach', () => lib.progAttach(progFd, targetFd, attachType, flags) as number);
}

export function progDetach(progFd: number, targetFd: number, attachType: number): void {
  const lib = libbpf();
  call('bpf_prog_detach2', () => lib.progDetach2(progFd, targetFd, attachType) as number);
}

/** Ids of programs attached to a cgroup (or map) fd for one attach type. */
export function progQuery(targetFd: number, attachType: number, max = 64): number[] {
  const lib = libbpf();
  const ids = new Uint32Array(max);
  const count = [max];
  const flags = [0];
  call('bpf_prog_query', () => lib.progQuery(targetFd, attachType, 0, flags, ids, count) as number);
  return Array.from(ids.subarray(0, count[0]));
}

/** progQuery on a cgroup directory. */
export function cgroupPrograms(cgroupPath: string, attachType: number): number[] {
  const fd = openDir(cgroupPath);
  try {
    return progQuery(fd, attachType);
  } finally {
    fs.closeSync(fd);
  }
}

let cpus: number | undefined;
export function possibleCpus(): number {
  const lib = libbpf();
  cpus ??= call('libbpf_num_possible_cpus', () => lib.numPossibleCpus() as number);
  return cpus;
}

export function closeFd(fd: number): void {
  libbpf().close(fd);
}

export function isBpffs(path: string): boolean {
  try {
    return fs.statfsSync(path).type === BPFFS_MAGIC;
  } catch {
    return false;
  }
}

/** Mounts bpffs at `target` unless it is one already. */
export function ensureBpffs(target = '/sys/fs/bpf'): void {
  if (isBpffs(target)) return;
  fs.mkdirSync(target, { recursive: true });
  const lib = libbpf();
  call('mount bpffs', () => lib.mount('bpf', target, 'bpf', 0, null) as number, target);
}

function openDir(path: string): number {
  try {
    return fs.openSync(path, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new BpfError(`open ${path}`, -(e.errno ?? -2), e.code);
  }
}
