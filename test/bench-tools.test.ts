// The benchmark's own instruments: the open-loop generator (bench/loadgen/openloop.c) counts what it
// was asked to send and parses Content-Length and chunked responses; CPU accounting sees a child's
// work; the strace and cpuprofile readers; median/range. No assertion on speed.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import http from 'node:http';
import type net from 'node:net';
import { test } from 'node:test';
import { cpuWindow } from '../bench/lib/cpuacct.ts';
import { aggregateProfile } from '../bench/lib/cpuprofile.ts';
import { runOpenLoop } from '../bench/lib/loadgen.ts';
import { parseStrace } from '../bench/profile.ts';
import { selectTargets } from '../bench/cpu.ts';
import { spread } from '../bench/lib/stats.ts';

async function server(handler: http.RequestListener): Promise<{ port: number; close: () => Promise<void> }> {
  const s = http.createServer({ keepAliveTimeout: 10_000 }, handler);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return {
    port: (s.address() as net.AddressInfo).port,
    close: () => new Promise((r) => {
      s.closeAllConnections();
      s.close(() => r());
    }),
  };
}

test('openloop sends exactly rate × duration requests and reads Content-Length and chunked answers', async () => {
  let seen = 0;
  const headers: string[] = [];
  const s = await server((req, res) => {
    seen++;
    headers.push(String(req.headers.authorization));
    if (req.url === '/chunked') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('part one,');
      res.end('part two');
    } else res.writeHead(200, { 'content-length': '5' }).end('hello');
  });
  try {
    for (const p of ['/fixed', '/chunked']) {
      seen = 0;
      const r = await runOpenLoop({ port: s.port, path: p, rate: 100, connections: 4, durationSec: 1, warmupSec: 0, headers: ['authorization: Bearer t0k'] });
      // The schedule is deterministic: arrivals due inside the window are rate × duration.
      assert.equal(r.sent, 100, `${p}: sent`);
      assert.equal(r.ok, 100, `${p}: 2xx answers`);
      assert.equal(r.non2xx + r.errors + r.timeouts + r.skipped, 0, `${p}: failures`);
      assert.equal(seen, r.sentAll, `${p}: the server saw every request`);
      assert.ok(r.fromDue.p50Us > 0 && r.fromDue.p99Us >= r.fromDue.p50Us && r.fromDue.p50Us >= r.fromSend.p50Us - 1);
    }
    assert.ok(headers.every((h) => h === 'Bearer t0k'), 'extra header lines are sent');
  } finally {
    await s.close();
  }
});

test('openloop counts non-2xx answers apart from successes', async () => {
  const s = await server((req, res) => res.writeHead(req.url === '/nope' ? 503 : 200, { 'content-length': '0' }).end());
  try {
    const r = await runOpenLoop({ port: s.port, path: '/nope', rate: 50, connections: 2, durationSec: 1, warmupSec: 0 });
    assert.equal(r.sent, 50);
    assert.equal(r.ok, 0);
    assert.equal(r.non2xx, 50);
  } finally {
    await s.close();
  }
});

test('cpuWindow attributes a child\'s CPU to its role', async () => {
  // A bounded busy loop in a child process (about 0.3 s of CPU), measured by its PID.
  const child = spawn(process.execPath, ['-e', 'let x = 0; for (let i = 0; i < 3e8; i++) x += i; process.stdin.resume(); process.stdin.on("end", () => process.exit(0));'], { stdio: ['pipe', 'ignore', 'ignore'] });
  try {
    const w = cpuWindow({ busy: child.pid! });
    await new Promise((r) => setTimeout(r, 1500));
    const c = w.stop();
    assert.ok(c.roles.busy!.userSec + c.roles.busy!.sysSec > 0, 'the child used CPU');
    assert.ok(c.seconds > 0 && c.foreignCpus >= 0 && c.loadAverage.length === 3);
  } finally {
    child.stdin!.end();
    await new Promise((r) => child.once('exit', r));
  }
});

test('parseStrace reads strace -c rows and divides by requests', () => {
  const text = `% time     seconds  usecs/call     calls    errors syscall
------ ----------- ----------- --------- --------- ----------------
 85.71    0.120000          10     12000           futex
  5.00    0.007000           1      4000        12 read
  1.00    0.001000           1      2000           writev
------ ----------- ----------- --------- --------- ----------------
100.00    0.140000                 18000        12 total
`;
  const rows = parseStrace(text, 2000);
  assert.deepEqual(rows.map((r) => [r.name, r.calls, r.perRequest, r.errors]), [['futex', 12000, 6, 0], ['read', 4000, 2, 12], ['writev', 2000, 1, 0]]);
});

test('aggregateProfile keeps only samples inside the window and leaves idle out', () => {
  const frame = (id: number, functionName: string, url = '') => ({ id, callFrame: { functionName, url, lineNumber: 0 } });
  const p = {
    nodes: [frame(1, '(root)'), frame(2, 'handle', 'file:///x/runtime/src/proxy/exchange.ts'), frame(3, '(idle)'), frame(4, 'writev'), frame(5, '(garbage collector)')],
    startTime: 1000,
    endTime: 2000,
    // samples at t = 1100, 1200, …, 1900
    samples: [2, 2, 4, 3, 2, 5, 2, 4, 2],
    timeDeltas: [100, 100, 100, 100, 100, 100, 100, 100, 100],
  };
  const all = aggregateProfile(p, { role: 'daemon', pid: 1 });
  assert.equal(all.windowed, false);
  assert.equal(all.top[0]!.name, 'handle');
  assert.ok(!all.top.some((f) => f.name === '(idle)'));
  const part = aggregateProfile(p, { role: 'daemon', pid: 1, fromUs: 1250, toUs: 1650 });
  assert.equal(part.windowed, true);
  // in the window: 1300 writev, 1400 idle, 1500 handle, 1600 gc → 3 non-idle samples of 100 µs
  assert.equal(part.samples, 4);
  assert.equal(part.selfMs, 0.3);
  assert.deepEqual(part.categories.map((c) => c.name).sort(), ['GC', 'isomesh runtime', 'native (C++ bindings, syscalls)']);
});

test('spread gives median and range; selectTargets keeps the references and rejects unknown ids', () => {
  assert.deepEqual(spread([5, 1, 3]), { median: 3, min: 1, max: 5, n: 3 });
  assert.deepEqual(spread([4, 1, 3, 2]), { median: 2.5, min: 1, max: 4, n: 4 });
  assert.equal(spread([NaN]).n, 0);
  const all = [{ id: 'direct' }, { id: 'nginx' }, { id: 'iso0-cordon' }, { id: 'chain3-cordon' }, { id: 'chain3-inline' }];
  assert.deepEqual(selectTargets(all, ['chain3']).map((t) => t.id), ['direct', 'nginx', 'chain3-cordon', 'chain3-inline']);
  assert.throws(() => selectTargets(all, ['envoy']), /unknown target/);
});
