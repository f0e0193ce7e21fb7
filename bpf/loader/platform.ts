// Where the kernel objects the datapath needs live on this node: the cgroup v2 mount (hybrid
// machines keep it at /sys/fs/cgroup/unified, pure v2 ones at /sys/fs/cgroup) and cgroup ids.
import fs from 'node:fs';
import path from 'node:path';

const CGROUP2_MAGIC = 0x63677270;

export interface Mount {
  mountPoint: string;
  fsType: string;
}

/** Mounts of this process, from /proc/self/mountinfo (octal escapes like \040 decoded). */
export function mounts(mountinfo = '/proc/self/mountinfo'): Mount[] {
  const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  return fs.readFileSync(mountinfo, 'utf8').split('\n').filter(Boolean).map((line) => {
    const [left, right] = line.split(' - ');
    return { mountPoint: unescape(left!.split(' ')[4]!), fsType: right!.split(' ')[0]! };
  });
}

/** The cgroup v2 mount point, or undefined when cgroup2 is not mounted. */
export function cgroup2Mount(mountinfo?: string): string | undefined {
  return mounts(mountinfo).find((m) => m.fsType === 'cgroup2')?.mountPoint;
}

export function isCgroup2Dir(dir: string): boolean {
  try {
    return fs.statfsSync(dir).type === CGROUP2_MAGIC && fs.statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/** The cgroup v2 id the kernel reports (bpf_get_current_cgroup_id) is the directory's inode. */
export function cgroupId(dir: string): bigint {
  return fs.statSync(dir, { bigint: true }).ino;
}

/** The cgroup v2 directory of a process (`0::/path` in /proc/PID/cgroup). */
export function processCgroup(pid: number | 'self' = 'self', mount = cgroup2Mount()): string | undefined {
  if (!mount) return undefined;
  const line = fs.readFileSync(`/proc/${pid}/cgroup`, 'utf8').split('\n').find((l) => l.startsWith('0::'));
  return line ? path.join(mount, line.slice(3)) : undefined;
}
