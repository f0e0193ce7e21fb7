// The benchmark's own instruments: the open-loop generator (bench/loadgen/openloop.c) counts what it
// was asked to send and parses Content-Length and chunked responses; CPU accounting sees a child's
// work; the strace and cpuprofile readers; median/range; h2load's report and per-request log, and the
// gRPC peer whose DATA bytes the h2 benchmark counts. No assertion on speed.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { cpuWindow } from '../bench/lib/cpuacct.ts';
import { aggregateProfile } from '../bench/lib/cpuprofile.ts';
import { runOpenLoop } from '../bench/lib/loadgen.ts';
import { parseStrace } from '../bench/profile.ts';
import { selectTargets } from '../bench/cpu.ts';
import { spread } from '../bench/lib/stats.ts';
import { h2loadArgs, parseH2load, parseH2loadLog, runH2load } from '../bench/lib/h2load.ts';
import { ECHO_FRAMED, ECHO_MESSAGE, GRPC_PATH, grpcFrame, grpcUnary, startGrpcUpstream, writeGrpcRequest } from '../bench/lib/grpc-upstream.ts';
import { ProcessGroup } from '../bench/lib/processes.ts';
import { h2Verdicts, summarizeH2, type H2Sample } from '../bench/h2.ts';

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


test('cpuWindow counts a process outside its roles as other work, and one of its roles not', async () => {
  // A child spinning for 600 ms of wall time in a 1 s window: ≈ 0.6 CPUs of work, outside or inside the roles.
  const measure = async (asRole: boolean): Promise<{ foreign: number; roleSec: number }> => {
    const child = spawn(process.execPath, ['-e', 'const end = Date.now() + 600; let x = 0; while (Date.now() < end) x++; process.stdin.resume(); process.stdin.on("end", () => process.exit(x < 0 ? 1 : 0));'], { stdio: ['pipe', 'ignore', 'ignore'] });
    try {
      const w = cpuWindow(asRole ? { burner: child.pid! } : {});
      await new Promise((r) => setTimeout(r, 1000));
      const c = w.stop();
      return { foreign: c.foreignCpus, roleSec: asRole ? c.roles.burner!.userSec + c.roles.burner!.sysSec : 0 };
    } finally {
      child.stdin!.end();
      await new Promise((r) => child.once('exit', r));
    }
  };
  const outside = await measure(false);
  const inside = await measure(true);
  assert.ok(inside.roleSec >= 0.3, `the burner used ${inside.roleSec} s of CPU as a role`);
  // Whatever else runs on the machine is in both windows; the burner only in the first one's other work.
  assert.ok(outside.foreign - inside.foreign >= 0.3, `other work: ${outside.foreign} CPUs with the burner outside the roles, ${inside.foreign} with it inside`);
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

const H2LOAD_REPORT = `starting benchmark...
Application protocol: h2c

finished in 912.54ms, 21916.80 req/s, 1.07MB/s
requests: 20000 total, 20000 started, 19990 done, 19980 succeeded, 20 failed, 10 errored, 4 timeout
status codes: 19980 2xx, 0 3xx, 10 4xx, 0 5xx
traffic: 1016.33KB (1040724) total, 98.10KB (100452) headers (space savings 96.39%), 351.56KB (360000) data
                     min         max         mean         sd        +/- sd
time for request:      867us    139.90ms     36.34ms     26.29ms    87.41%
time for connect:      164us       658us       397us       208us    50.00%
`;

test('parseH2load reads the report in its mixed units; the log gives percentiles and non-2xx', () => {
  const r = parseH2load(H2LOAD_REPORT);
  assert.equal(r.protocol, 'h2c');
  assert.equal(r.seconds, 0.91254);
  assert.equal(r.rps, 21916.8);
  assert.deepEqual(r.requests, { total: 20000, started: 20000, done: 19990, succeeded: 19980, failed: 20, errored: 10, timeout: 4 });
  assert.deepEqual(r.status, { '2xx': 19980, '3xx': 0, '4xx': 10, '5xx': 0 });
  assert.deepEqual(r.bytes, { total: 1040724, headers: 100452, data: 360000 });
  assert.deepEqual(r.latencyMs, { min: 0.867, max: 139.9, mean: 36.34, sd: 26.29 });
  assert.throws(() => parseH2load('finished in 1s, 2 req/s\n'), /no requests line/);
  // 100 requests of 1..100 ms, two of them refused and one never answered.
  const lines = Array.from({ length: 100 }, (_, i) => `17961268610${String(i).padStart(5, '0')}\t${i === 7 || i === 8 ? 503 : i === 9 ? 0 : 200}\t${(i + 1) * 1000}`);
  const l = parseH2loadLog(`${lines.join('\n')}\n`);
  assert.deepEqual(l, { count: 100, p50Ms: 50, p99Ms: 99, non2xx: 3 });
  assert.throws(() => parseH2loadLog('1\t200\n'), /bad h2load log line/);
  assert.throws(() => h2loadArgs({ url: 'http://127.0.0.1:1/', clients: 1, streams: 1 }), /exactly one/);
  assert.deepEqual(grpcFrame(Buffer.from('ab')), Buffer.from([0, 0, 0, 0, 2, 0x61, 0x62]));
});

test('h2load bounded by a request count does exactly that many over h2c, and the log has every one', async (t) => {
  let seen = 0;
  const server = http2.createServer((req, res) => {
    seen++;
    res.writeHead(req.url === '/teapot' ? 418 : 200, { 'content-length': '5' }).end('hello');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.after(() => server.close());
  const port = (server.address() as net.AddressInfo).port;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-tools-h2load-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const r = await runH2load({ url: `http://127.0.0.1:${port}/ok`, clients: 2, streams: 10, requests: 300, logFile: path.join(dir, 'log.tsv'), headers: ['authorization: Bearer x'] });
  assert.equal(r.protocol, 'h2c');
  assert.equal(r.requests.done, 300);
  assert.equal(seen, 300);
  assert.equal(r.status['2xx'], 300);
  assert.equal(r.bytes.data, 300 * 5, 'every response body counted once');
  assert.equal(r.latency!.count, 300);
  assert.equal(r.latency!.non2xx, 0);
  const bad = await runH2load({ url: `http://127.0.0.1:${port}/teapot`, clients: 1, streams: 5, requests: 20, logFile: path.join(dir, 'log2.tsv') });
  assert.equal(bad.status['4xx'], 20);
  assert.equal(bad.latency!.non2xx, 20);
});

test('the gRPC peer echoes through a real client, and h2load\'s DATA bytes count its OK answers', async (t) => {
  const group = new ProcessGroup();
  t.after(() => group.close());
  const up = await startGrpcUpstream(group);
  const one = await grpcUnary(up.port, { authorization: 'Bearer x' });
  assert.equal(one.code, 0);
  assert.deepEqual(one.reply, ECHO_MESSAGE);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'bench-tools-grpc-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const body = writeGrpcRequest(path.join(dir, 'req.bin'));
  const headers = ['content-type: application/grpc', 'te: trailers'];
  const r = await runH2load({ url: `http://127.0.0.1:${up.port}${GRPC_PATH}`, clients: 2, streams: 10, requests: 200, dataFile: body, headers });
  assert.equal(r.requests.done, 200);
  assert.equal(r.bytes.data, 200 * ECHO_FRAMED.length, 'one echoed message per call');
  // An unknown method is a trailers-only UNIMPLEMENTED answer: HTTP 200, and no DATA at all.
  const miss = await runH2load({ url: `http://127.0.0.1:${up.port}/bench.Echo/Nope`, clients: 1, streams: 5, requests: 20, dataFile: body, headers });
  assert.equal(miss.status['2xx'], 20);
  assert.equal(miss.bytes.data, 0);
});

test('h2 verdicts: CPU ratio against nginx per repetition; a run that lost requests is not met', () => {
  const sample = (scenario: 'h2c' | 'grpc', target: string, rep: number, cpuUs: number, failed = 0): H2Sample => ({
    scenario, target, rep, requests: 1000, seconds: 1, rps: 1000, p50Ms: 1, p99Ms: 2, meanMs: 1, non2xx: 0, failed, missingBody: 0,
    proxyUserUs: cpuUs * 0.8, proxySysUs: cpuUs * 0.2, upstreamUs: 1, clientUs: 1, foreignCpus: 0, stealCpus: 0, loadAverage1: 0, disturbed: false,
  });
  const targets = (['h2c', 'grpc'] as const).flatMap((scenario) => [
    { id: 'nginx', scenario, label: 'nginx' },
    { id: 'iso0-cordon', scenario, label: 'isomesh' },
  ]);
  const samples = [0, 1, 2].flatMap((rep) => [
    sample('h2c', 'nginx', rep, 20), sample('h2c', 'iso0-cordon', rep, [40, 50, 60][rep]!),
    sample('grpc', 'nginx', rep, 40), sample('grpc', 'iso0-cordon', rep, 80, rep === 1 ? 3 : 0),
  ]);
  const v = h2Verdicts(summarizeH2(targets, samples));
  assert.equal(v.length, 2);
  assert.match(v[0]!.measured, /^2\.50×/);
  assert.equal(v[0]!.met, true, 'h2c: median 2.5× is within ≤ 2.5×');
  assert.equal(v[1]!.met, false, 'gRPC: 2.0× but 3 requests failed');
  assert.match(v[1]!.by!, /3 failed requests/);
});
