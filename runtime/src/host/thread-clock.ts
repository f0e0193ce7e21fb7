// The CPU clock plugin crossings are measured with: the CPU time of the calling thread, which is the
// thread a synchronous isolated-vm crossing runs on (clock_gettime(CLOCK_THREAD_CPUTIME_ID) through
// koffi → libc; ≈ 0.3 µs a reading, ns resolution).
//
// Neither of the obvious clocks is one. isolated-vm's `isolate.cpuTime` counts time inside the
// isolate by the wall clock while the thread is descheduled (three processes on two CPUs: 460–469 ms
// of "CPU" for 240–368 ms of the thread's), so other load on the node would be charged to the tenant
// — its per-request budget, its cpuMsPerSecond and its fair share. Node's `process.threadCpuUsage()`
// is getrusage(RUSAGE_THREAD), whose split of ticks makes short intervals meaningless (a 5 ms busy
// loop read as 1.3–3.3 ms, a 5 µs one as 97–2,680 µs).

import { createRequire } from 'node:module';

const CLOCK_THREAD_CPUTIME_ID = 3;

/** A reader of the calling thread's CPU time (ns), or undefined where koffi or libc cannot load. */
export function threadCpuClock(): (() => number) | undefined {
  try {
    // Loaded here, not imported: a node where koffi cannot load still runs its plugins (on isolated-vm's clock).
    const koffi = createRequire(import.meta.url)('koffi') as typeof import('koffi');
    const clockGettime = koffi.load('libc.so.6').func('int clock_gettime(int clk, void *ts)') as (clk: number, ts: Int32Array) => number;
    // struct timespec { int64 tv_sec; long tv_nsec; } read as 32-bit words: a thread's CPU seconds and
    // the nanoseconds each fit in the low word.
    const ts = new Int32Array(4);
    const read = (): number => {
      clockGettime(CLOCK_THREAD_CPUTIME_ID, ts);
      return (ts[0] as number) * 1e9 + (ts[2] as number);
    };
    const first = read();
    return first > 0 && Number.isFinite(first) ? read : undefined;
  } catch {
    return undefined;
  }
}
