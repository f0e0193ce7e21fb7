// A cordon's blackbox: which pass and chain entry run now, in a 16-byte file (two float64: pass id,
// entry) that the daemon reads only after the process died, to blame the tenant and plugin that were
// running. It changes on every chain entry, so it is kept as memory stores into a shared mapping of
// the file (mmap through koffi → libc): the page outlives the process in the page cache, and no
// syscall is made per entry. Where the mapping cannot be made, each change is a pwrite instead.

import fs from 'node:fs';
import { createRequire } from 'node:module';

export interface Blackbox {
  /** Pass `id` runs entry `entry`; (-1, -1): nothing runs. */
  record(id: number, entry: number): void;
  /** How changes are kept: 'mapped' (memory stores) or 'pwrite' (a syscall each). */
  readonly kind: 'mapped' | 'pwrite';
}

const PROT_READ = 1;
const PROT_WRITE = 2;
const MAP_SHARED = 1;
const BYTES = 16;

type Mmap = (addr: null, length: number, prot: number, flags: number, fd: number, offset: number) => unknown;
let ffi: { koffi: typeof import('koffi'); mmap: Mmap } | undefined;

function mapFile(fd: number): ArrayBuffer | undefined {
  // Loaded here, not imported: a node where koffi cannot load still runs its cordons (with pwrite).
  if (ffi === undefined) {
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    ffi = { koffi, mmap: koffi.load('libc.so.6').func('void *mmap(void *addr, size_t length, int prot, int flags, int fd, intptr_t offset)') as Mmap };
  }
  const { koffi, mmap } = ffi;
  const ptr = mmap(null, BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (ptr === null || koffi.address(ptr) === 0xffffffffffffffffn) return undefined; // MAP_FAILED
  // Never unmapped: the mapping lives as long as the process, which is what the daemon reads it for.
  return koffi.view(ptr, BYTES);
}

/** Opens the daemon-created blackbox file (at least 16 bytes long). */
export function openBlackbox(file: string): Blackbox {
  const fd = fs.openSync(file, 'r+');
  if (fs.fstatSync(fd).size >= BYTES) {
    let mapped: ArrayBuffer | undefined;
    try {
      mapped = mapFile(fd);
    } catch {
      mapped = undefined; // koffi or libc cannot load here: pwrite below
    }
    if (mapped !== undefined) {
      fs.closeSync(fd); // the mapping holds the file
      const box = new Float64Array(mapped, 0, 2);
      return {
        kind: 'mapped',
        // Two stores, ordered so that a kill between them reads as "nothing runs" (id -1) rather than
        // as another pass's entry: the id goes last when set and first when cleared.
        record(id, entry) {
          if (id < 0) {
            box[0] = -1;
            box[1] = -1;
          } else {
            box[1] = entry;
            box[0] = id;
          }
        },
      };
    }
  }
  const buf = Buffer.alloc(BYTES);
  return {
    kind: 'pwrite',
    record(id, entry) {
      buf.writeDoubleLE(id, 0);
      buf.writeDoubleLE(entry, 8);
      fs.writeSync(fd, buf, 0, BYTES, 0);
    },
  };
}
