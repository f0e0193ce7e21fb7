// The bpffs layout of one datapath and the cgroup links pinned in it. Links are pinned per
// cgroup id and program so a restarted runtime finds every attachment it made, swaps in its
// freshly loaded programs (BPF_LINK_UPDATE) and never attaches a second copy.
import fs from 'node:fs';
import path from 'node:path';
import { BpfError, BpfLink, type BpfProgram } from '../../../bpf/loader/index.ts';

/** Programs attached to each workload cgroup. */
export const WORKLOAD_PROGRAMS = ['mesh_connect4', 'mesh_connect6', 'mesh_getpeername4', 'mesh_getpeername6', 'mesh_sockops'] as const;

export type LinkRole = 'workload' | 'proxy';

export interface PinnedLink {
  role: LinkRole;
  cgroupId: bigint;
  program: string;
  link: BpfLink;
  pin: string;
}

export class PinLayout {
  readonly root: string;
  readonly maps: string;
  readonly links: string;

  constructor(root: string) {
    this.root = root;
    this.maps = path.join(root, 'maps');
    this.links = path.join(root, 'links');
  }

  create(): void {
    for (const d of [this.root, this.maps, this.links]) fs.mkdirSync(d, { recursive: true });
  }

  map(name: string): string {
    return path.join(this.maps, name);
  }

  link(role: LinkRole, cgroupId: bigint, program: string): string {
    return path.join(this.links, `${role}-${cgroupId}-${program}`);
  }

  /** Pinned links as (role, cgroup id, program) from their file names. */
  listLinks(): Array<{ role: LinkRole; cgroupId: bigint; program: string; pin: string }> {
    if (!fs.existsSync(this.links)) return [];
    const out = [];
    for (const f of fs.readdirSync(this.links).sort()) {
      const m = /^(workload|proxy)-(\d+)-(mesh_[a-z0-9_]+)$/.exec(f);
      if (m) out.push({ role: m[1] as LinkRole, cgroupId: BigInt(m[2]!), program: m[3]!, pin: path.join(this.links, f) });
    }
    return out;
  }

  /** Removes the whole tree (maps and links unpinned: the kernel frees what nothing else holds). */
  remove(): void {
    fs.rmSync(this.root, { recursive: true, force: true });
  }
}

/**
 * Re-adopts the pinned links, pointing each at the current program. A link whose cgroup is gone
 * (BPF_LINK_UPDATE fails with ENOLINK) is unpinned and dropped.
 */
export function adoptLinks(layout: PinLayout, programs: (name: string) => BpfProgram | undefined,
  onDrop: (pin: string, reason: string) => void): PinnedLink[] {
  const adopted: PinnedLink[] = [];
  for (const entry of layout.listLinks()) {
    const prog = programs(entry.program);
    let link: BpfLink | undefined;
    try {
      link = BpfLink.open(entry.pin);
      if (!prog) throw new Error(`program ${entry.program} no longer exists`);
      link.updateProgram(prog);
      adopted.push({ ...entry, link });
    } catch (err) {
      onDrop(entry.pin, err instanceof BpfError ? err.code : (err as Error).message);
      if (link) {
        try { link.detach(); } catch { /* already detached */ }
        link.destroy();
      }
      fs.rmSync(entry.pin, { force: true });
    }
  }
  return adopted;
}

/** Detaches a link now and removes its pin. */
export function dropLink(l: PinnedLink): void {
  try {
    l.link.detach();
  } catch {
    /* cgroup already gone: nothing attached */
  }
  l.link.destroy();
  fs.rmSync(l.pin, { force: true });
}
