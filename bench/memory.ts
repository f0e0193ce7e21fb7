// `memory`: the seeds' memory model (seed 000: 500 nodes × 30 pods) recomputed from figures measured
// here. Sidecar side: the idle RSS of one nginx and one haproxy configured as in the cpu benchmark
// (each is one process), times one per pod; Envoy's 70 MB per proxy is seed 000's own figure.
// isomesh side: one daemon per node; its RSS with 30 tenants (each pod its own tenant with one plugin,
// the worst case) and the marginal cost per tenant, both from bench/results/host.json (host bench).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { removeStateDir, startDaemon, type BenchDaemon } from './lib/daemon.ts';
import { startHaproxy, startNginxProxy, startNginxUpstream } from './lib/peers.ts';
import { ProcessGroup, treeRssKiB } from './lib/processes.ts';
import type { BenchContext } from './run.ts';

const NODES = 500;
const PODS_PER_NODE = 30;
/** Seed 000 (Isovalent, "How eBPF will solve Service Mesh"): "每个代理消耗 70MB 内存". */
const ENVOY_SEED_MB = 70;
const ENVOY_SEED_MIB = Math.round((ENVOY_SEED_MB * 1e6) / 2 ** 20 * 10) / 10;

interface HostPoint { tenants: number; rssKiB: number; perTenantMiB: number }
interface HostMemory { mode: string; baseKiB: number; points: HostPoint[] }

export async function memoryBench(ctx: BenchContext): Promise<Record<string, unknown>> {
  const group = new ProcessGroup();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-memory-'));
  let d: BenchDaemon | undefined;
  const idle: Record<string, { rssMiB: number; processes: number }> = {};
  try {
    const upstream = await startNginxUpstream(group, root);
    const nginx = await startNginxProxy(group, root, upstream.port);
    const haproxy = await startHaproxy(group, root, upstream.port);
    d = await startDaemon(group, {});
    // One request through each proxy, so buffers and pools exist as in a serving sidecar; then settle.
    for (const port of [nginx.port, haproxy.port]) await (await fetch(`http://127.0.0.1:${port}/small.txt`)).arrayBuffer();
    await sleep(ctx.quick ? 1000 : 3000);
    for (const [name, pid] of [['nginx', nginx.proc.pid], ['haproxy', haproxy.proc.pid], ['isomesh (no tenants)', d.proc.pid]] as const) {
      const t = treeRssKiB(pid);
      idle[name] = { rssMiB: Math.round((t.totalKiB / 1024) * 10) / 10, processes: t.processes };
    }
  } finally {
    await group.close();
    removeStateDir(d);
    fs.rmSync(root, { recursive: true, force: true });
  }
  const hostFile = path.join(import.meta.dirname, 'results', 'host.json');
  const host = fs.existsSync(hostFile) ? (JSON.parse(fs.readFileSync(hostFile, 'utf8')) as { date: string; memory: HostMemory[]; machine: { model: string } }) : undefined;
  const proxies = NODES * PODS_PER_NODE;
  const gib = (mib: number): number => Math.round((mib / 1024) * 10) / 10;
  const rows: Array<{ model: string; perUnitMiB: number; units: number; clusterGiB: number; source: string }> = [];
  for (const [name, v] of Object.entries(idle)) {
    if (name.startsWith('isomesh')) continue;
    rows.push({ model: `sidecar: ${name} per pod`, perUnitMiB: v.rssMiB, units: proxies, clusterGiB: gib(v.rssMiB * proxies), source: 'measured here (idle RSS after one request)' });
  }
  rows.push({ model: 'sidecar: Envoy per pod', perUnitMiB: ENVOY_SEED_MIB, units: proxies, clusterGiB: gib(ENVOY_SEED_MIB * proxies), source: `seed 000: 70 MB per proxy (the seed states 1.5 TB for 15,000 proxies; 15,000 × 70 MB is ${(proxies * ENVOY_SEED_MB / 1e6).toFixed(2)} TB)` });
  rows.push({ model: 'per-node Envoy', perUnitMiB: ENVOY_SEED_MIB, units: NODES, clusterGiB: gib(ENVOY_SEED_MIB * NODES), source: 'seed 000: 500 proxies × 70 MB, "no more than 34 GB"' });
  const modes = (host?.memory ?? []).map((m) => {
    const at30 = m.points.find((p) => p.tenants === PODS_PER_NODE);
    const [a, b] = m.points.slice(-2);
    const marginalMiB = a && b ? (b.rssKiB - a.rssKiB) / 1024 / (b.tenants - a.tenants) : undefined;
    const modelMiB = marginalMiB === undefined ? undefined : m.baseKiB / 1024 + PODS_PER_NODE * marginalMiB;
    if (at30) rows.push({ model: `isomesh per node, 30 tenants [${m.mode}]`, perUnitMiB: Math.round(at30.rssKiB / 1024), units: NODES, clusterGiB: gib((at30.rssKiB / 1024) * NODES), source: 'host bench: RSS of the daemon and its children with 30 idle tenants, one plugin each (after the publish-time processes exited)' });
    if (modelMiB !== undefined) rows.push({ model: `isomesh per node, idle + 30 × marginal tenant [${m.mode}]`, perUnitMiB: Math.round(modelMiB), units: NODES, clusterGiB: gib(modelMiB * NODES), source: `host bench: ${Math.round(m.baseKiB / 1024)} MiB idle + 30 × ${marginalMiB!.toFixed(2)} MiB (slope ${a!.tenants}→${b!.tenants} tenants)` });
    return { mode: m.mode, baseMiB: Math.round(m.baseKiB / 1024), at30MiB: at30 ? Math.round(at30.rssKiB / 1024) : undefined, marginalMiB: marginalMiB === undefined ? undefined : Math.round(marginalMiB * 1000) / 1000 };
  });
  return {
    model: { nodes: NODES, podsPerNode: PODS_PER_NODE, proxiesWithSidecars: proxies },
    idle,
    host: host ? { date: host.date, machine: host.machine.model, modes } : { missing: 'bench/results/host.json not found: run the host benchmark first (npm run bench does)' },
    rows,
  };
}
