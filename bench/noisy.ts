// `noisy`: noisy neighbour. Tenant A's plugin burns ~5 ms of CPU per request and A is offered
// 10× its cpuMsPerSecond; tenant B runs a light plugin at a steady open-loop 200 req/s. B's latency
// alone vs. with A present (goal ≤ 1.5×, 0 errors), A's 429s — and, as a control, with A's CPU
// quota lifted, which shows what the quota (not luck) buys B; and B next to a polite neighbour (A's
// rate, a light plugin), which shows what any neighbour's traffic costs B on this machine. B shares
// A's home cordon; held to its quota, A is confined to a cordon of its own (CordonPool.confine).
// Phases: B alone, + polite neighbour, + A without quota (the control, before A is ever refused),
// + A at its quota, B alone again.
// CPU layout on 2 cores: the daemon on CPU 0; both clients (B in this process, A in a child process
// of its own) and the upstream on CPU 1.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeStateDir, setupTenant, startDaemon, until, type BenchDaemon } from './lib/daemon.ts';
import { get } from './lib/http.ts';
import { openLoop, openLoopInChild, type OpenLoopResult } from './lib/openloop.ts';
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
const B_TENANT = 'tenant-b1';
/** Chart labels: the phase names without their figures. */
const CHART_LABEL: Record<PhaseKind, (name: string) => string> = {
  alone: (name) => name,
  polite: () => 'B + polite neighbour',
  control: () => 'B + A (no quota)',
  quota: () => 'B + A (quota)',
};
/** Placement of a tenant as the daemon reports it (GET …/status usage.placement). */
interface Placement { cordon?: string; confined?: boolean }

/** alone: B only; polite: B + the polite neighbour; control: B + A without its quota; quota: B + A at its quota. */
type PhaseKind = 'alone' | 'polite' | 'control' | 'quota';

interface Phase {
  name: string;
  kind: PhaseKind;
  b: OpenLoopResult;
  a?: OpenLoopResult;
  bLatency: Summary;
  aStatus?: unknown;
  /** Where A and B ran at the end of the phase (A's phases). */
  placement?: { a: Placement; b: Placement };
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
    // B's name puts it in A's home cordon (the daemon's default 2 shared cordons, by the stable hash
    // of the name): the unlucky placement, where A's long calls would queue in front of B's unless A
    // is confined to a cordon of its own while it is held to its quota.
    const bPort = await setupTenant(d, B_TENANT, { upstreamPort: upstream.port, plugins: [['light', LIGHT]] });
    // A starts without its quota (the control phase comes first, before A was ever refused).
    const aPort = await setupTenant(d, 'tenant-a', {
      upstreamPort: upstream.port,
      plugins: [['burner', burner(A_BURN_MS)]],
      quota: { cpuMsPerSecond: 1_000_000, cpuMsPerRequest: 50 },
    });
    // A polite neighbour: A's request rate with a light plugin like B's. B's latency next to it is
    // what any neighbour's traffic costs B on this 2-CPU box; next to A, what A's misbehaviour adds.
    const politePort = await setupTenant(d, 'tenant-polite', { upstreamPort: upstream.port, plugins: [['light', LIGHT]] });
    const agent = new http.Agent({ keepAlive: false });
    for (const p of [aPort, bPort, politePort]) {
      if (!(await until(async () => (await get(agent, p, SMALL_PATH)).status === 200, 10_000))) throw new Error(`listener ${p} never served`);
    }
    agent.destroy();
    // Warm both paths (JIT, pools) until the daemon is past what setting up left behind:
    // with a 1 s warm-up, the first phase after set-up had 25–35 ms stalls (in a traced run, during
    // the daemon's first major GC after the plugins were published, with incremental-marking steps
    // of up to 13 ms) — in "B alone" as often as in the others, which is what made this benchmark's
    // ratio swing from 0.5× to 4.9× between runs of the same code.
    const warmSec = ctx.quick ? 6 : 10;
    // A's client runs in a process of its own on the clients' CPU, at the lowest priority: with both
    // clients in this process, A's answers delayed B's timers and callbacks, and B's p99 "with A"
    // measured this harness's event loop, not the daemon; at equal priority the two clients still
    // take turns on the one CPU they share. (A's offered rate does not depend on its client's speed:
    // it is an open loop, and its latencies are not judged.)
    const aClient = { ...(pinned ? { cpus: '1' } : {}), nice: 19 };
    await Promise.all([
      openLoop({ port: bPort, path: SMALL_PATH, rate: B_RATE, durationSec: warmSec }),
      openLoopInChild({ port: aPort, path: SMALL_PATH, rate: A_RATE, durationSec: warmSec }, aClient),
    ]);
    await sleep(1500); // let A's CPU window drain

    const usage = async (tenant: string): Promise<{ placement?: Placement } | undefined> => (await d!.must('GET', `/v1/tenants/${tenant}/status`)).usage;
    const measure = async (name: string, kind: PhaseKind): Promise<void> => {
      const isA = kind === 'control' || kind === 'quota';
      let aRun: Promise<OpenLoopResult> | undefined;
      if (kind !== 'alone') {
        aRun = openLoopInChild({ port: isA ? aPort : politePort, path: SMALL_PATH, rate: A_RATE, durationSec: durationSec + 1 }, aClient);
        // A reaches its steady state before B is measured: its quota window full and, held to its
        // quota, confined to a cordon of its own. The move waits for a moment with none of A's
        // requests in flight, and starting the new cordon process (on the proxy's core here) stalls
        // its neighbours once; that one-time cost is not what this phase measures, so B starts a
        // second after it (docs/host.md, "Confinement").
        await sleep(isA ? 2500 : 1000);
        if (kind === 'quota') {
          const deadline = Date.now() + 15_000;
          while ((await usage('tenant-a'))?.placement?.confined !== true && Date.now() < deadline) await sleep(100);
          await sleep(1000);
        }
      }
      const b = await openLoop({ port: bPort, path: SMALL_PATH, rate: B_RATE, durationSec });
      const a = aRun === undefined ? undefined : await aRun;
      const phase: Phase = { name, kind, b, bLatency: summarize(b.okLatencyMs) };
      if (a !== undefined) {
        phase.a = a;
        const aUsage = await usage(isA ? 'tenant-a' : 'tenant-polite');
        phase.aStatus = aUsage;
        if (isA) phase.placement = { a: aUsage?.placement ?? {}, b: (await usage(B_TENANT))?.placement ?? {} };
      }
      phases.push(phase);
      process.stderr.write(`noisy: ${name}: B p50 ${phase.bLatency.p50.toFixed(2)} ms p99 ${phase.bLatency.p99.toFixed(2)} ms, B errors ${errorsOf(b)}${a ? `, A statuses ${JSON.stringify(a.statuses)}` : ''}\n`);
      await sleep(1500);
    };

    await measure('B alone', 'alone');
    await measure(`B + polite neighbour (${A_RATE} req/s, light plugin)`, 'polite');
    await measure('B + A (A quota lifted: control)', 'control');
    await d.must('PUT', '/v1/tenants/tenant-a/quota', { cpuMsPerSecond: A_CPU_MS_PER_SEC, cpuMsPerRequest: 50 });
    await sleep(200);
    await measure(`B + A (A quota ${A_CPU_MS_PER_SEC} ms/s)`, 'quota');
    // B alone once more: a stall or drift of the machine between the phases shows as two different
    // "alone" figures, and the goal is judged against the better of them (the stricter reference).
    await measure('B alone (again)', 'alone');
  } finally {
    await group.stopAll();
    removeStateDir(d);
    fs.rmSync(root, { recursive: true, force: true });
    if (pinned) pinSelf(`0-${cpuCount() - 1}`);
  }

  const alones = phases.filter((p) => p.kind === 'alone');
  const alone = { p50: Math.min(...alones.map((p) => p.bLatency.p50)), p99: Math.min(...alones.map((p) => p.bLatency.p99)) };
  const rows = phases.map((p) => {
    const a = p.a;
    const a2xx = a === undefined ? 0 : Object.entries(a.statuses).filter(([s]) => s.startsWith('2')).reduce((n, [, c]) => n + c, 0);
    return [
      p.name,
      fmt(p.bLatency.p50, 2),
      fmt(p.bLatency.p99, 2),
      p.kind === 'alone' ? '—' : `${fmt(p.bLatency.p50 / alone.p50)}× / ${fmt(p.bLatency.p99 / alone.p99)}×`,
      String(errorsOf(p.b)),
      a === undefined ? '—' : String(a.sent),
      a === undefined ? '—' : String(a2xx),
      a === undefined ? '—' : String(a.statuses['429'] ?? 0),
      a === undefined ? '—' : String(errorsOf(a) - (a.statuses['429'] ?? 0)),
    ];
  });
  const withA = phases.find((p) => p.kind === 'quota')!;
  const control = phases.find((p) => p.kind === 'control')!;
  const placed = (p: Phase): string => (p.placement === undefined ? '?' : `A in ${p.placement.a.cordon ?? '?'}${p.placement.a.confined ? ' (confined)' : ''}, B in ${p.placement.b.cordon ?? '?'}`);
  const polite = phases.find((p) => p.kind === 'polite')!;
  const ratio = Math.max(withA.bLatency.p50 / alone.p50, withA.bLatency.p99 / alone.p99);
  const ok = ratio <= GOAL_RATIO && errorsOf(withA.b) === 0;
  const tables: Table[] = [
    {
      title: `Noisy neighbour: B at ${B_RATE} req/s open loop, A at ${A_RATE} req/s × ${A_BURN_MS} ms CPU (= 10× its ${A_CPU_MS_PER_SEC} ms/s quota), ${durationSec} s per phase`,
      columns: ['phase', 'B p50 ms', 'B p99 ms', 'B vs alone (p50 / p99)', 'B errors', 'A sent', 'A 2xx', 'A 429', 'A other'],
      rows,
      notes: [
        `Goal: B's p50 and p99 with A present ≤ ${GOAL_RATIO}× alone, B errors 0 — **${ok ? 'meets' : 'misses'}** (worst ratio ${fmt(ratio)}×). "Alone" is the lower p50 and the lower p99 of the two "B alone" phases (before and after A), the stricter reference; ratios are against it.`,
        `Next to the polite neighbour (the same ${A_RATE} req/s with a light plugin) B's p99 is ${fmt(polite.bLatency.p99 / alone.p99)}× alone: what any neighbour's traffic costs B on this 2-CPU machine (the daemon, both cordons and the neighbour's client share its cores). Next to A under its quota B's p99 is ${fmt(withA.bLatency.p99 / polite.bLatency.p99)}× what it is next to the polite neighbour: what A's 5 ms plugin and 10× overload add. Columns "A …" are the neighbour's.`,
        `Placement: B's name puts it in A's home cordon. Control phase (first, A never refused): ${placed(control)}; quota phase: ${placed(withA)} — a tenant refused for its CPU quota runs in a cordon of its own while that lasts (docs/host.md, "Confinement").`,
        'Open loop: requests are sent on schedule regardless of answers; latency from each request\'s send (JSON also has it from its due time). B\'s client runs in this harness, the neighbour\'s in a process of its own at nice 19 (both on the clients\' CPU).',
      ],
    },
  ];
  writeReport({
    name: 'noisy',
    json: {
      ...ctx.meta,
      layout: pinned ? "daemon (and its cordon workers) on CPU 0; clients (the neighbour's in its own process at nice 19) and upstream nginx on CPU 1" : 'unpinned',
      hostMode: ctx.hostMode ?? 'default',
      durationSec,
      bRate: B_RATE,
      aRate: A_RATE,
      aBurnMs: A_BURN_MS,
      aCpuMsPerSecond: A_CPU_MS_PER_SEC,
      goalRatio: GOAL_RATIO,
      meetsGoal: ok,
      aloneReference: alone,
      bTenant: B_TENANT,
      withAVsPoliteP99: round(withA.bLatency.p99 / polite.bLatency.p99, 3),
      phases: phases.map((p) => ({
        name: p.name,
        b: { sent: p.b.sent, statuses: p.b.statuses, errors: p.b.errors, skipped: p.b.skipped, latencyMs: roundSummary(p.bLatency, 3), scheduledLatencyMs: roundSummary(summarize(p.b.okScheduledLatencyMs), 3) },
        ...(p.a === undefined ? {} : { a: { sent: p.a.sent, statuses: p.a.statuses, errors: p.a.errors, skipped: p.a.skipped, latencyMs: roundSummary(summarize(p.a.okLatencyMs), 3), hostUsage: p.aStatus } }),
        ...(p.placement === undefined ? {} : { placement: p.placement }),
      })),
    },
    tables,
    chart: {
      title: "Tenant B's latency with a noisy neighbour (ms, lower is better)",
      unit: 'ms',
      groups: phases.map((p) => ({ label: CHART_LABEL[p.kind](p.name), bars: [{ series: 'B p50', value: round(p.bLatency.p50, 3) }, { series: 'B p99', value: round(p.bLatency.p99, 3) }] })),
    },
  });
}
