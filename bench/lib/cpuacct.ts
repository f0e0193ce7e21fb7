// CPU accounting for the processes on a request's path. Each role (the proxy under test, the
// upstream, the load generator) is a root PID; its CPU is that process tree's user and system time
// from /proc/<pid>/stat (utime+stime of every live descendant, plus cutime+cstime for those that
// exited and were reaped inside the tree), sampled before and after a run. The kernel splits the
// precise runtime into user/system by tick samples, so the split is statistical, the sum is exact
// to one clock tick (10 ms) per process.
//
// The same window also reads /proc/stat: machine-wide busy time (wall time × CPUs minus idle and
// steal, see busyCpusBetween) minus everything accounted here (and this harness) is CPU used by other
// work — a disturbed run says so instead of looking slow.
import fs from 'node:fs';
import os from 'node:os';
import { CLOCK_TICK_SEC, busyCpusBetween, idleSample, processTree } from './processes.ts';

const TICK = CLOCK_TICK_SEC;

function safe<T>(fn: () => T, fallback: T): T {
  try {
    return fn();
  } catch {
    return fallback;
  }
}

interface Ticks {
  user: number;
  sys: number;
}

function statTicks(pid: number, withChildren: boolean): Ticks | undefined {
  const s = safe(() => fs.readFileSync(`/proc/${pid}/stat`, 'utf8'), '');
  if (s === '') return undefined;
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  // fields after the comm: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime cutime cstime
  const user = Number(f[11]) + (withChildren ? Number(f[13]) : 0);
  const sys = Number(f[12]) + (withChildren ? Number(f[14]) : 0);
  return { user, sys };
}

/** User and system ticks of a process and everything below it (reaped children included). */
export function treeTicks(root: number): Ticks {
  const t: Ticks = { user: 0, sys: 0 };
  for (const pid of processTree(root)) {
    const x = statTicks(pid, true);
    if (x !== undefined) {
      t.user += x.user;
      t.sys += x.sys;
    }
  }
  return t;
}

/** This harness's own ticks, and those of its children reaped so far (wrk / the generator exit inside a window). */
function selfTicks(): { own: number; children: Ticks } {
  const own = statTicks(process.pid, false);
  const all = statTicks(process.pid, true);
  if (own === undefined || all === undefined) return { own: 0, children: { user: 0, sys: 0 } };
  return { own: own.user + own.sys, children: { user: all.user - own.user, sys: all.sys - own.sys } };
}

export interface RoleCpu {
  /** CPU seconds in user mode during the window. */
  userSec: number;
  sysSec: number;
}

export interface CpuWindow {
  seconds: number;
  roles: Record<string, RoleCpu>;
  /** CPUs' worth of work by processes not on the path (other users of the machine), averaged. */
  foreignCpus: number;
  /** CPUs' worth of time the hypervisor gave to other guests. */
  stealCpus: number;
  loadAverage: number[];
}

/**
 * Starts a measurement window over the given role → root PID map; stop() returns the deltas.
 * `reapedRole`: the name under which to report this harness's children that exited during the window
 * (the load generator, run to completion inside it, is gone from /proc by then).
 */
export function cpuWindow(roles: Record<string, number | undefined>, reapedRole?: string): { stop: () => CpuWindow } {
  const t0 = performance.now();
  const m0 = idleSample();
  const s0 = selfTicks();
  const before = new Map<string, Ticks>();
  for (const [name, pid] of Object.entries(roles)) if (pid !== undefined) before.set(name, treeTicks(pid));
  return {
    stop() {
      const out: Record<string, RoleCpu> = {};
      const s1 = selfTicks();
      const reaped = { user: s1.children.user - s0.children.user, sys: s1.children.sys - s0.children.sys };
      let ours = s1.own - s0.own + reaped.user + reaped.sys;
      if (reapedRole !== undefined) out[reapedRole] = { userSec: reaped.user * TICK, sysSec: reaped.sys * TICK };
      for (const [name, pid] of Object.entries(roles)) {
        if (pid === undefined) continue;
        const b = before.get(name)!;
        const a = treeTicks(pid);
        const user = Math.max(0, a.user - b.user);
        const sys = Math.max(0, a.sys - b.sys);
        ours += user + sys;
        out[name] = { userSec: user * TICK, sysSec: sys * TICK };
      }
      const m1 = idleSample();
      const seconds = (performance.now() - t0) / 1000;
      const wallSec = Math.max(1e-3, (m1.atMs - m0.atMs) / 1000);
      return {
        seconds,
        roles: out,
        foreignCpus: Math.max(0, round3(busyCpusBetween(m0, m1) - (ours * TICK) / wallSec)),
        stealCpus: round3((m1.stealSec - m0.stealSec) / wallSec),
        loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
      };
    },
  };
}

function round3(x: number): number {
  return Math.round(x * 1000) / 1000;
}

export { CLOCK_TICK_SEC };
