// Aggregates a V8 .cpuprofile (node --cpu-prof) into self time per function and per category,
// optionally restricted to a time window (µs on CLOCK_MONOTONIC, the clock V8 and process.hrtime share).
import path from 'node:path';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
}

export interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface FunctionTime {
  name: string;
  location: string;
  category: string;
  selfMs: number;
  pct: number;
}

export interface ProfileSummary {
  pid: number;
  role: string;
  samples: number;
  /** Non-idle sampled time in the window. */
  selfMs: number;
  /** False when the window did not overlap the profile and the whole profile was used. */
  windowed: boolean;
  categories: Array<{ name: string; selfMs: number; pct: number }>;
  top: FunctionTime[];
}

/** What kind of code a frame is: where a µs goes, at a glance. */
export function categoryOf(f: CallFrame): string {
  if (f.functionName === '(garbage collector)') return 'GC';
  if (f.functionName === '(program)') return 'V8 / native (program)';
  if (f.url.startsWith('node:')) return 'node internals';
  if (f.url.includes('/runtime/src/')) return 'isomesh runtime';
  if (f.url.includes('/sdk/')) return 'isomesh sdk';
  if (f.url.includes('/node_modules/')) return 'dependencies';
  if (f.url === '') return 'native (C++ bindings, syscalls)';
  return 'other';
}

const ROOT_URL = `file://${path.resolve(import.meta.dirname, '..', '..')}/`;

function location(f: CallFrame): string {
  if (f.url === '') return 'native';
  const short = f.url.startsWith(ROOT_URL) ? f.url.slice(ROOT_URL.length) : f.url;
  return `${short}:${f.lineNumber + 1}`;
}

export function aggregateProfile(p: CpuProfile, o: { fromUs?: number; toUs?: number; top?: number; role: string; pid: number }): ProfileSummary {
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  let t = p.startTime;
  const stamps = p.timeDeltas.map((d) => (t += d));
  const overlaps = o.fromUs !== undefined && o.toUs !== undefined && o.fromUs < p.endTime && o.toUs > p.startTime;
  const selfUs = new Map<number, number>();
  let count = 0;
  for (let i = 0; i < p.samples.length; i++) {
    const ts = stamps[i]!;
    if (overlaps && (ts < o.fromUs! || ts > o.toUs!)) continue;
    // A sample stands for the time until the next one.
    const dur = i + 1 < stamps.length ? stamps[i + 1]! - ts : 0;
    const id = p.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dur);
    count++;
  }
  const fns = new Map<string, FunctionTime>();
  const cats = new Map<string, number>();
  let total = 0;
  for (const [id, us] of selfUs) {
    const f = byId.get(id)!.callFrame;
    if (f.functionName === '(idle)') continue;
    total += us;
    const category = categoryOf(f);
    cats.set(category, (cats.get(category) ?? 0) + us);
    const key = `${f.functionName}|${f.url}|${f.lineNumber}`;
    const e = fns.get(key) ?? { name: f.functionName || '(anonymous)', location: location(f), category, selfMs: 0, pct: 0 };
    e.selfMs += us / 1000;
    fns.set(key, e);
  }
  const pct = (us: number): number => Math.round((us / Math.max(1, total)) * 1000) / 10;
  const top = [...fns.values()].sort((a, b) => b.selfMs - a.selfMs).slice(0, o.top ?? 25).map((f) => ({ ...f, selfMs: Math.round(f.selfMs * 10) / 10, pct: pct(f.selfMs * 1000) }));
  return {
    pid: o.pid,
    role: o.role,
    samples: count,
    selfMs: Math.round(total / 100) / 10,
    windowed: overlaps,
    categories: [...cats.entries()].sort((a, b) => b[1] - a[1]).map(([name, us]) => ({ name, selfMs: Math.round(us / 100) / 10, pct: pct(us) })),
    top,
  };
}
