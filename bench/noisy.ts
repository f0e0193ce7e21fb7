// `noisy`: noisy neighbour. Tenant A's plugin burns ~5 ms of CPU per request and A is offered
// 10× its cpuMsPerSecond; tenant B runs a light plugin at a steady open-loop 200 req/s. B's latency
// alone vs. with A present (goal ≤ 1.5×, 0 errors), A's 429s — and, as a control, with A's CPU
// quota lifted, which shows what the quota (not luck) buys B.
// CPU layout on 2 cores: the daemon on CPU 0; both clients (this process) and the upstream on CPU 1.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeStateDir, setupTenant, startDaemon, until, type BenchDaemon } from './lib/daemon.ts';
import { get } from './lib/http.ts';
import { openLoop, type OpenLoopResult } from './lib/openloop.ts';
import { SMALL_PATH, startNginxUpstream } from './lib/peers.ts';
import { LIGHT, burner } from './lib/plugins.ts';
import { ProcessGroup, cpuCount, pinSelf } from './lib/processes.ts';
import { writeReport, type Table } from './lib/report.ts';
import { fmt, round, roundSummary, summarize, type Summary } from './lib/stats.ts';
import type { BenchContext } from './run.ts';
import http from 'node:http';

const B_RATE = 200;
const A_BURN_MS = 5;
const A_CPU_MS_PER_SEC = 50;
/** Offered CPU demand of A = rate × burn = 10 × its quota. */
const A_RATE = (10 * A_CPU_MS_PER_SEC) / A_BURN_MS;
const GOAL_RATIO = 1.5;

interface Phase {
  name: string;
  b: OpenLoopResult;
  a?: OpenLoopResult;
  bLatency: Summary;
  aStatus?: unknown;
}

function errorsOf(r: OpenLoopResult): number {
  let n = r.errors + r.skipped;
  for (const [status, count] of Object.entries(r.statuses)) if (Number(status) < 200 || Number(status) > 299) n += count;
  return n;
}

export async function noisyBench(ctx: BenchContext): Promise<void> {
  const durationSec = ctx.quick ? 4 : 15;
  const pinned = cpuCount() >= 2;
  const group = new ProcessGroup();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-noisy-'));
  let d: BenchDaemon | undefined;
  const phases: Phase[] = [];
  try {
    if (pinned) pinSelf('1');
    const upstream = await startNginxUpstream(group, root, pinned ? '1' : undefined);
    d = await startDaemon(group, { hostMode: ctx.hostMode, ...(pinned ? { cpus: '0' } : {}) });
    const bPort = await setupTenant(d, 'tenant-b', { upstreamPort: upstream.port, plugins: [['light', LIGHT]] });
    const aPort = await setupTenant(d, 'tenant-a', {
      upstreamPort: upstream.port,
      plugins: [['burner', burner(A_BURN_MS)]],
      quota: { cpuMsPerSecond: A_CPU_MS_PER_SEC, cpuMsPerRequest: 50 },
    });
    const agent = new http.Agent({ keepAlive: false });
    for (const p of [aPort, bPort]) {
      if (!(await until(async () => (await get(agent, p, SMALL_PATH)).status === 200, 10_000))) throw new Error(`listener ${p} never served`);
    }
    agent.destroy();
    // Warm B's path (JIT, pools) before measuring anything.
    await openLoop({ port: bPort, path: SMALL_PATH, rate: B_RATE, durationSec: ctx.quick ? 1 : 3 });
    await sleep(1000); // let A's CPU window from the readiness probe drain

    const measure = async (name: string, withA: boolean): Promise<void> => {
      let aRun: Promise<OpenLoopResult> | undefined;
      if (withA) {
        aRun = openLoop({ port: aPort, path: SMALL_PATH, rate: A_RATE, durationSec: durationSec + 1 });
        await sleep(1000); // A reaches its steady state (quota window full) before B is measured
      }
      const b = await openLoop({ port: bPort, path: SMALL_PATH, rate: B_RATE, durationSec });
      const a = aRun === undefined ? undefined : await aRun;
      const phase: Phase = { name, b, bLatency: summarize(b.okLatencyMs) };
      if (a !== undefined) {
        phase.a = a;
        phase.aStatus = (await d!.must('GET', '/v1/tenants/tenant-a/status')).usage;
      }
      phases.push(phase);
      process.stderr.write(`noisy: ${name}: B p50 ${phase.bLatency.p50.toFixed(2)} ms p99 ${phase.bLatency.p99.toFixed(2)} ms, B errors ${errorsOf(b)}${a ? `, A statuses ${JSON.stringify(a.statuses)}` : ''}\n`);
      await sleep(1500);
    };

    await measure('B alone', false);
    await measure(`B + A (A quota ${A_CPU_MS_PER_SEC} ms/s)`, true);
    await d.must('PUT', '/v1/tenants/tenant-a/quota', { cpuMsPerSecond: 1_000_000 });
    await sleep(200);
    await measure('B + A (A quota lifted: control)', true);
  } finally {
    await group.stopAll();
    removeStateDir(d);
    fs.rmSync(root, { recursive: true, force: true });
    if (pinned) pinSelf(`0-${cpuCount() - 1}`);
  }

  const alone = phases[0]!.bLatency;
  const rows = phases.map((p) => {
    const a = p.a;
    const a2xx = a === undefined ? 0 : Object.entries(a.statuses).filter(([s]) => s.startsWith('2')).reduce((n, [, c]) => n + c, 0);
    return [
      p.name,
      fmt(p.bLatency.p50, 2),
      fmt(p.bLatency.p99, 2),
      p === phases[0] ? '—' : `${fmt(p.bLatency.p50 / alone.p50)}× / ${fmt(p.bLatency.p99 / alone.p99)}×`,
      String(errorsOf(p.b)),
      a === undefined ? '—' : String(a.sent),
      a === undefined ? '—' : String(a2xx),
      a === undefined ? '—' : String(a.statuses['429'] ?? 0),
      a === undefined ? '—' : String(errorsOf(a) - (a.statuses['429'] ?? 0)),
    ];
  });
  const withA = phases[1]!;
  const ratio = Math.max(withA.bLatency.p50 / alone.p50, withA.bLatency.p99 / alone.p99);
  const ok = ratio <= GOAL_RATIO && errorsOf(withA.b) === 0;
  const tables: Table[] = [
    {
      title: `Noisy neighbour: B at ${B_RATE} req/s open loop, A at ${A_RATE} req/s × ${A_BURN_MS} ms CPU (= 10× its ${A_CPU_MS_PER_SEC} ms/s quota), ${durationSec} s per phase`,
      columns: ['phase', 'B p50 ms', 'B p99 ms', 'B vs alone (p50 / p99)', 'B errors', 'A sent', 'A 2xx', 'A 429', 'A other'],
      rows,
      notes: [
        `Goal: B's p50 and p99 with A present ≤ ${GOAL_RATIO}× alone, B errors 0 — **${ok ? 'meets' : 'misses'}** (worst ratio ${fmt(ratio)}×).`,
        'Open loop: requests are sent on schedule regardless of answers; latency from each request\'s send (JSON also has it from its due time).',
      ],
    },
  ];
  writeReport({
    name: 'noisy',
    json: {
      ...ctx.meta,
      layout: pinned ? 'daemon (and its cordon workers) on CPU 0; clients and upstream nginx on CPU 1' : 'unpinned',
      hostMode: ctx.hostMode ?? 'default',
      durationSec,
      bRate: B_RATE,
      aRate: A_RATE,
      aBurnMs: A_BURN_MS,
      aCpuMsPerSecond: A_CPU_MS_PER_SEC,
      goalRatio: GOAL_RATIO,
      meetsGoal: ok,
      phases: phases.map((p) => ({
        name: p.name,
        b: { sent: p.b.sent, statuses: p.b.statuses, errors: p.b.errors, skipped: p.b.skipped, latencyMs: roundSummary(p.bLatency, 3), scheduledLatencyMs: roundSummary(summarize(p.b.okScheduledLatencyMs), 3) },
        ...(p.a === undefined ? {} : { a: { sent: p.a.sent, statuses: p.a.statuses, errors: p.a.errors, skipped: p.a.skipped, latencyMs: roundSummary(summarize(p.a.okLatencyMs), 3), hostUsage: p.aStatus } }),
      })),
    },
    tables,
    chart: {
      title: "Tenant B's latency with a noisy neighbour (ms, lower is better)",
      unit: 'ms',
      groups: phases.map((p) => ({ label: p.name.replace(/ \(.*\)/, (m) => (m.includes('lifted') ? ' (no quota)' : ' (quota)')), bars: [{ series: 'B p50', value: round(p.bLatency.p50, 3) }, { series: 'B p99', value: round(p.bLatency.p99, 3) }] })),
    },
  });
}
