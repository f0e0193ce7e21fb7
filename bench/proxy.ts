// `proxy`: the same GET (small body, and 16 KiB) through every data plane side by side, in one run:
// direct to the upstream, nginx, haproxy, and isomesh's built-in proxy with no plugin, one no-op
// plugin and a chain of 3 plugins. wrk (closed loop, fixed connections, fixed duration) measures
// requests/s and p50/p99 latency. Upstream: nginx serving static files, so it is not the bottleneck.
//
// CPU layout on 2 cores: the proxy under test on CPU 0; wrk and the upstream nginx on CPU 1.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setupTenant, startDaemon, removeStateDir, type BenchDaemon } from './lib/daemon.ts';
import { LARGE_BYTES, LARGE_PATH, SMALL_BODY, SMALL_PATH, startHaproxy, startNginxProxy, startNginxUpstream } from './lib/peers.ts';
import { CHAIN3, NOOP } from './lib/plugins.ts';
import { ProcessGroup, cpuCount } from './lib/processes.ts';
import { writeReport, type BarGroup, type Table } from './lib/report.ts';
import { fmt, round } from './lib/stats.ts';
import { runWrk, type WrkResult } from './lib/wrk.ts';
import type { BenchContext } from './run.ts';

interface Target {
  name: string;
  port: number;
  /** Header the response must carry (proves the chain really ran). */
  expectHeader?: string;
}

export interface ProxyRun {
  target: string;
  body: 'small' | '16KiB';
  connections: number;
  durationSec: number;
  rps: number;
  p50Ms: number;
  p90Ms: number;
  p99Ms: number;
  requests: number;
  errors: number;
}

async function check(t: Target, p: string, bytes: number): Promise<void> {
  const res = await fetch(`http://127.0.0.1:${t.port}${p}`);
  const body = Buffer.from(await res.arrayBuffer());
  if (res.status !== 200 || body.length !== bytes) throw new Error(`${t.name} ${p}: status ${res.status}, ${body.length} bytes (want 200, ${bytes})`);
  if (t.expectHeader !== undefined && res.headers.get(t.expectHeader) === null) throw new Error(`${t.name}: response lacks ${t.expectHeader} — the chain did not run`);
}

export async function proxyBench(ctx: BenchContext): Promise<void> {
  const durationSec = ctx.quick ? 2 : 10;
  const warmSec = ctx.quick ? 1 : 3;
  const connections = [16, 64];
  const modes: Array<'cordon' | 'inline'> = ctx.hostMode === undefined ? ['cordon', 'inline'] : [ctx.hostMode];
  const pinned = cpuCount() >= 2;
  const proxyCpu = pinned ? '0' : undefined;
  const loadCpu = pinned ? '1' : undefined;
  const group = new ProcessGroup();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-proxy-'));
  const daemons: BenchDaemon[] = [];
  const runs: ProxyRun[] = [];
  try {
    const upstream = await startNginxUpstream(group, root, loadCpu);
    const nginx = await startNginxProxy(group, root, upstream.port, proxyCpu);
    const haproxy = await startHaproxy(group, root, upstream.port, proxyCpu);
    const targets: Target[] = [
      { name: 'direct', port: upstream.port },
      { name: 'nginx', port: nginx.port },
      { name: 'haproxy', port: haproxy.port },
    ];
    // One daemon per plugin-host mode (isolates in cordon worker processes, or inline in the daemon);
    // the plugin-less tenant never calls an isolate, so it is measured once.
    for (const mode of modes) {
      const d = await startDaemon(group, { hostMode: mode, ...(proxyCpu === undefined ? {} : { cpus: proxyCpu }) });
      daemons.push(d);
      if (targets.length === 3) targets.push({ name: 'isomesh', port: await setupTenant(d, 'plain', { upstreamPort: upstream.port }) });
      const tag = modes.length > 1 || ctx.hostMode !== undefined ? ` [${mode}]` : '';
      targets.push({ name: `isomesh+noop${tag}`, port: await setupTenant(d, 'noop', { upstreamPort: upstream.port, plugins: [['noop', NOOP]] }) });
      targets.push({ name: `isomesh+3 plugins${tag}`, port: await setupTenant(d, 'chain3', { upstreamPort: upstream.port, plugins: CHAIN3 }), expectHeader: 'x-served-by' });
    }
    const sizes = [
      { body: 'small' as const, path: SMALL_PATH, bytes: Buffer.byteLength(SMALL_BODY) },
      { body: '16KiB' as const, path: LARGE_PATH, bytes: LARGE_BYTES },
    ];
    // Configuration reaches the data plane asynchronously: wait (bounded) until every target answers.
    for (const t of targets) {
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          for (const s of sizes) await check(t, s.path, s.bytes);
          break;
        } catch (e) {
          if (Date.now() > deadline) throw e;
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    }
    for (const t of targets) {
      for (const s of sizes) {
        await runWrk({ url: `http://127.0.0.1:${t.port}${s.path}`, connections: 64, durationSec: warmSec, ...(loadCpu ? { cpus: loadCpu } : {}) });
      }
    }
    for (const s of sizes) {
      for (const c of connections) {
        for (const t of targets) {
          const r: WrkResult = await runWrk({ url: `http://127.0.0.1:${t.port}${s.path}`, connections: c, durationSec, ...(loadCpu ? { cpus: loadCpu } : {}) });
          const e = r.socketErrors;
          const run: ProxyRun = {
            target: t.name,
            body: s.body,
            connections: c,
            durationSec,
            rps: round(r.rps, 0),
            p50Ms: round(r.latencyMs.p50, 3),
            p90Ms: round(r.latencyMs.p90, 3),
            p99Ms: round(r.latencyMs.p99, 3),
            requests: r.requests,
            errors: r.non2xx + e.connect + e.read + e.write + e.timeout,
          };
          runs.push(run);
          process.stderr.write(`proxy: ${s.body} c=${c} ${t.name}: ${run.rps} req/s p50 ${run.p50Ms} ms p99 ${run.p99Ms} ms errors ${run.errors}\n`);
        }
        for (const t of targets) await check(t, s.path, s.bytes); // still healthy after the load
      }
    }
    for (const p of [upstream, nginx, haproxy]) if (p.proc.proc.exitCode !== null) throw new Error(`${p.name} died during the run`);
  } finally {
    await group.stopAll();
    for (const d of daemons) removeStateDir(d);
    fs.rmSync(root, { recursive: true, force: true });
  }

  const tables: Table[] = [];
  const groups: BarGroup[] = [];
  const latency: BarGroup[] = [];
  for (const body of ['small', '16KiB'] as const) {
    for (const c of connections) {
      const rows = runs.filter((r) => r.body === body && r.connections === c);
      const direct = rows.find((r) => r.target === 'direct');
      tables.push({
        title: `GET ${body} body, ${c} connections, ${durationSec} s each`,
        columns: ['target', 'req/s', 'p50 ms', 'p99 ms', 'added p50 ms vs direct', 'errors'],
        rows: rows.map((r) => [
          r.target,
          fmt(r.rps, 0),
          fmt(r.p50Ms, 3),
          fmt(r.p99Ms, 3),
          r.target === 'direct' || direct === undefined ? '—' : fmt(r.p50Ms - direct.p50Ms, 3),
          String(r.errors),
        ]),
      });
      groups.push({ label: `${body} c${c}`, bars: rows.map((r) => ({ series: r.target, value: r.rps })) });
      latency.push({ label: `${body} c${c}`, bars: rows.map((r) => ({ series: r.target, value: r.p99Ms })) });
    }
  }
  const layout = pinned ? 'proxy under test pinned to CPU 0; wrk (1 thread) and the upstream nginx pinned to CPU 1' : 'unpinned (fewer than 2 CPUs)';
  tables[tables.length - 1]!.notes = [
    `Layout: ${layout}; isomesh's cordon worker processes inherit CPU 0. "direct" = wrk → upstream nginx (both on CPU 1).`,
    '[cordon] = plugin isolates in supervised worker processes (the default host mode); [inline] = isolates in the daemon.',
  ];
  writeReport({
    name: 'proxy',
    json: { ...ctx.meta, durationSec, connections, layout, hostModes: modes, runs },
    tables,
    chart: { title: 'Requests/s through each proxy (higher is better)', unit: 'requests/s', groups },
    extraCharts: { p99: { title: 'p99 latency (lower is better)', unit: 'ms', groups: latency } },
  });
}
