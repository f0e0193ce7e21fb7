// The clock crossings are measured with counts the thread's CPU, not the time it spends inside an
// isolate without running (blocked here; descheduled by other load on a busy node).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import ivm from 'isolated-vm';
import { threadCpuClock } from './thread-clock.ts';

test('the thread CPU clock counts work, not time the thread is blocked inside an isolate', () => {
  const clock = threadCpuClock();
  assert.ok(clock !== undefined, 'koffi and libc load on Linux');
  const isolate = new ivm.Isolate({ memoryLimit: 16 });
  try {
    const context = isolate.createContextSync();
    const wait = context.evalSync('(ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)', { reference: true }) as ivm.Reference<(ms: number) => string>;
    const spin = context.evalSync('(ms) => { const end = Date.now() + ms; let n = 0; while (Date.now() < end) n++; return n; }', { reference: true }) as ivm.Reference<(ms: number) => number>;
    let c0 = clock();
    let i0 = isolate.cpuTime;
    let w0 = performance.now();
    assert.equal(wait.applySync(undefined, [30]), 'timed-out');
    const blocked = { cpu: (clock() - c0) / 1e6, isolate: Number(isolate.cpuTime - i0) / 1e6, wall: performance.now() - w0 };
    assert.ok(blocked.wall >= 29, JSON.stringify(blocked));
    assert.ok(blocked.cpu < 10, `a blocked thread uses (almost) no CPU: ${JSON.stringify(blocked)}`);
    // Why not isolated-vm's cpuTime: it counts the blocked 30 ms.
    assert.ok(blocked.isolate >= 25, JSON.stringify(blocked));

    c0 = clock();
    i0 = isolate.cpuTime;
    w0 = performance.now();
    spin.applySync(undefined, [30]);
    const busy = { cpu: (clock() - c0) / 1e6, wall: performance.now() - w0 };
    assert.ok(busy.cpu > 0 && busy.cpu <= busy.wall + 0.5, `CPU never exceeds the wall time: ${JSON.stringify(busy)}`);
    assert.ok(busy.cpu > blocked.cpu, JSON.stringify({ busy, blocked }));
  } finally {
    isolate.dispose();
  }
});
