// Generates docs/benchmarks.md (and its SVG charts in bench/results/) from bench/results/*.json.
// Every number in the doc comes from those files; the prose around them carries none of its own.
// Also prints the compact tables run.ts shows after each benchmark (and a before/after comparison).
import fs from 'node:fs';
import path from 'node:path';
import { cpuVerdicts, type CpuSummary, type Verdict } from './cpu.ts';
import { h2Verdicts, type H2Scenario, type H2Summary } from './h2.ts';
import type { OpenLoopSummary } from './openloop.ts';
import type { ProfileResult } from './profile.ts';
import { hbarChartSvg, markdownTable, type Table } from './lib/report.ts';
import { fmt, fmtSpread, spread, type Spread } from './lib/stats.ts';

const ROOT = path.resolve(import.meta.dirname, '..');
const DOC = path.join(ROOT, 'docs', 'benchmarks.md');
type Json = any;

function read(dir: string, name: string): Json | undefined {
  const f = path.join(dir, `${name}.json`);
  return fs.existsSync(f) ? JSON.parse(fs.readFileSync(f, 'utf8')) : undefined;
}

const ratio = (s: Spread | undefined): string => (s === undefined || s.n === 0 ? '—' : `${fmtSpread(s, 2)}×`);
const pct = (s: Spread | undefined): string => (s === undefined || s.n === 0 ? '—' : `${Math.round(s.median * 100)} %`);

/** How busy the machine was with other work during a set of runs (from each run's /proc/stat window). */
function disturbance(samples: Json[]): string {
  if (samples.length === 0) return '';
  const foreign = spread(samples.map((x) => x.foreignCpus), 2);
  const load = spread(samples.map((x) => x.loadAverage1 ?? NaN), 2);
  const n = samples.filter((x) => x.disturbed).length;
  return `Other work on the machine during these ${samples.length} runs: median ${fmt(foreign.median, 2)} CPUs (max ${fmt(foreign.max, 2)}); ${load.n > 0 ? `1-minute load average ${fmt(load.min, 2)}–${fmt(load.max, 2)}; ` : ''}${n} of ${samples.length} runs disturbed (> 0.1 CPU of other work).`;
}

function cpuTable(cpu: Json, body: string): Table {
  const rows = (cpu.summaries as CpuSummary[]).filter((s) => s.body === body);
  return {
    title: `Closed loop, GET ${body === 'small' ? '12-byte' : '16 KiB'} body, ${cpu.connections} connections, ${cpu.reps} × ${cpu.durationSec} s per target`,
    columns: ['target', 'CPU µs/request', 'user µs', 'kernel µs', 'CPU × nginx', 'req/s', 'req/s vs nginx', 'p50 ms', 'p99 ms', 'errors', 'disturbed'],
    rows: rows.map((s) => [
      s.label, s.target === 'direct' ? '—' : fmtSpread(s.cpuUs), s.target === 'direct' ? '—' : fmt(s.userUs.median, 1), s.target === 'direct' ? '—' : fmt(s.sysUs.median, 1), ratio(s.cpuVsNginx), fmtSpread(s.rps, 0), pct(s.rpsVsNginx),
      fmt(s.p50Ms.median, 3), fmtSpread(s.p99Ms, 2), String(s.errors), s.disturbedReps ? `${s.disturbedReps}/${s.cpuUs.n}` : '—',
    ]),
    notes: [disturbance(cpu.samples.filter((x: Json) => x.body === body)), 'Values: median (min–max) over the repetitions. CPU = user + kernel time of the proxy\'s processes (for isomesh the daemon and its cordon workers; for the sidecar pattern both nginx) ÷ requests served; "× nginx" and "vs nginx" are per repetition against nginx in the same repetition. "direct" has no proxy.'],
  };
}

const H2_TITLE: Record<H2Scenario, string> = { h2c: 'h2c GET, 12-byte body', grpc: 'gRPC unary, 13-byte message echoed' };

function h2Table(h2: Json, scenario: H2Scenario): Table {
  const rows = (h2.summaries as H2Summary[]).filter((s) => s.scenario === scenario);
  const none = (s: H2Summary, x: string): string => (s.target === 'direct' ? '—' : x);
  return {
    title: `${H2_TITLE[scenario]}: h2load -c ${h2.clients} -m ${h2.streams}, ${h2.reps} × ~${h2.durationSec} s per target`,
    columns: ['target', 'CPU µs/request', 'user µs', 'kernel µs', 'CPU × nginx', 'req/s', 'req/s vs nginx', 'p50 ms', 'p99 ms', 'errors', 'disturbed'],
    rows: rows.map((s) => [
      s.label, none(s, fmtSpread(s.cpuUs)), none(s, fmt(s.userUs.median, 1)), none(s, fmt(s.sysUs.median, 1)), ratio(s.cpuVsNginx), fmtSpread(s.rps, 0), pct(s.rpsVsNginx),
      fmt(s.p50Ms.median, 2), fmtSpread(s.p99Ms, 1), String(s.errors), s.disturbedReps ? `${s.disturbedReps}/${s.cpuUs.n}` : '—',
    ]),
    notes: [
      disturbance((h2.samples as Json[]).filter((x) => x.scenario === scenario)),
      `Values: median (min–max) over the repetitions; each run is a fixed number of requests (${Object.entries(h2.requestsPerRun as Record<string, number>).filter(([k]) => k.startsWith(`${scenario}/`)).map(([k, n]) => `${k.slice(scenario.length + 1)} ${n.toLocaleString('en-US')}`).join(', ')}), sized from a warm-up to last about ${h2.durationSec} s. Percentiles from h2load's per-request log. Errors = non-2xx answers + requests without an answer + 2xx answers without the expected body${scenario === 'grpc' ? ' (a trailers-only answer: grpc-status other than 0)' : ''}.`,
    ],
  };
}

function h2Chart(h2: Json, scenario: H2Scenario, file: string): void {
  const rows = (h2.summaries as H2Summary[]).filter((s) => s.scenario === scenario && s.target !== 'direct');
  const nginx = rows.find((s) => s.target === 'nginx');
  fs.writeFileSync(file, hbarChartSvg({
    title: `CPU per request, ${H2_TITLE[scenario]} (median, min–max; lower is better)`,
    unit: 'µs of CPU per request (proxy processes)',
    rows: rows.map((s) => ({ label: s.label, segments: [{ name: 'user', value: s.userUs.median }, { name: 'kernel', value: s.sysUs.median }], min: s.cpuUs.min, max: s.cpuUs.max, note: `${fmt(s.cpuUs.median, 1)} µs${s.errors ? `, ${s.errors} errors` : ''}` })),
    ...(nginx ? { goal: { value: nginx.cpuUs.median * 2.5, label: '2.5× nginx' } } : {}),
  }));
}

function h2Section(h2: Json, dir: string): string[] {
  const L: string[] = ['## HTTP/2 and gRPC (closed loop, h2load)', ''];
  L.push(`From \`bench/h2.ts\`, run ${String(h2.date).slice(0, 16).replace('T', ' ')} UTC, code at \`${h2.revision ?? 'unknown'}\`. Same layout and accounting as the HTTP/1.1 table (${h2.layout}). h2load keeps ${h2.clients} h2c connections with ${h2.streams} streams in flight on each. **h2c**: ${h2.request.h2c}; nginx listens with \`http2\` and \`proxy_pass\`es over HTTP/1.1 keep-alive (it cannot speak h2 upstream), isomesh sniffs the preface on the tenant port and sends to a \`protocol: http1\` service; *direct* is h2load against the upstream nginx's own h2c listener. **gRPC**: ${h2.request.grpc}; nginx \`grpc_pass\`es (one upstream h2 connection per stream in flight, kept alive), isomesh sends to a \`protocol: grpc\` service (streams multiplexed on h2c sessions). Before and after the load every target answers a real request (h2c: status and body through node:http2; gRPC: a @grpc/grpc-js client call with grpc-status 0 and the echoed message); the chain targets must also refuse a request without the token (401 / grpc-status 16 UNAUTHENTICATED from jwt-auth) and carry header-transform's response header.`, '');
  for (const scenario of ['h2c', 'grpc'] as const) {
    if (!(h2.summaries as H2Summary[]).some((s) => s.scenario === scenario)) continue;
    h2Chart(h2, scenario, path.join(dir, `h2-${scenario}.svg`));
    L.push(markdownTable(h2Table(h2, scenario)), `![CPU per request, ${scenario}](../bench/results/h2-${scenario}.svg)`, '');
  }
  const chain = (h2.summaries as H2Summary[]).filter((s) => s.target.startsWith('chain3') && s.errors > 0);
  if (chain.length > 0) {
    const requests = (sc: string, id: string): number => (h2.samples as Json[]).filter((x) => x.scenario === sc && x.target === id).reduce((a, x) => a + x.requests, 0);
    L.push(`The chain rows are not comparable figures: ${chain.map((s) => `${s.scenario} lost ${s.errors.toLocaleString('en-US')} of ${requests(s.scenario, s.target).toLocaleString('en-US')} requests`).join(', ')} (a status other than 2xx, a failed stream or a missing body; h2load does not say which) — their CPU per request mixes served requests with cheap refusals. The chain tenants' CPU quota is set out of reach (bench/lib/plugins.ts), so a refusal here is a defect to look into, not a quota.`, '');
  }
  return L;
}

/** Could not keep up: under 97 % of the rate, arrivals dropped, or a standing queue (median p50 over 100 ms). */
function saturated(s: OpenLoopSummary): boolean {
  return s.saturated || s.skipped > 0 || s.p50Us.median > 100_000;
}

/** How long each open-loop scenario waited for an idle machine (results before the wait existed have none). */
function settleNote(samples: Json[]): string[] {
  const waits = samples.map((x) => x.settledMs).filter((x): x is number => typeof x === 'number');
  if (waits.length === 0) return [];
  const late = waits.filter((ms) => ms >= 15_000).length;
  return [`Each scenario started once the machine was idle (under 0.1 CPU busy): the wait for the previous scenario's backlog was at most ${fmt(Math.max(...waits) / 1000, 1)} s${late > 0 ? `; ${late} of ${waits.length} gave up at 15 s` : ''}.`];
}

function openLoopTable(ol: Json, rate: number): Table {
  const rows = (ol.summaries as OpenLoopSummary[]).filter((s) => s.rate === rate);
  const direct = rows.find((s) => s.target === 'direct');
  const added = (s: OpenLoopSummary, k: 'p50Us' | 'p99Us' | 'meanUs'): string => (direct === undefined || s.target === 'direct' ? '—' : fmt(s[k].median - direct[k].median, 0));
  return {
    title: `Open loop, ${rate.toLocaleString('en-US')} req/s over ${ol.connections} connections, ${ol.reps} × ${ol.durationSec} s`,
    notes: [disturbance((ol.samples as Json[]).filter((x) => x.rate === rate)), ...settleNote((ol.samples as Json[]).filter((x) => x.rate === rate)), 'Latency from each request\'s due time; median (min–max) over the repetitions.'],
    columns: ['target', 'achieved req/s', 'mean µs', 'p50 µs', 'p99 µs', 'added mean / p50 / p99 µs vs direct', 'mesh CPU µs/req', 'client µs/req', 'upstream µs/req', 'errors', 'disturbed'],
    rows: rows.map((s) => [
      s.label + (saturated(s) ? ' **(saturated)**' : ''), fmtSpread(s.achievedRps, 0), fmtSpread(s.meanUs, 0), fmtSpread(s.p50Us, 0), fmtSpread(s.p99Us, 0),
      `${added(s, 'meanUs')} / ${added(s, 'p50Us')} / ${added(s, 'p99Us')}`, s.target === 'direct' ? '—' : fmt(s.meshCpuUs.median, 1),
      fmt(s.cpuUs.client?.median, 1), fmt(s.cpuUs.upstream?.median, 1), `${s.errors}${s.skipped ? ` (+${s.skipped} never sent)` : ''}`, s.disturbedReps ? `${s.disturbedReps}/${s.p50Us.n}` : '—',
    ]),
  };
}

/**
 * CPU per request of the same request at fixed rates (open loop) and at saturation (the cpu
 * benchmark's closed loop, small body): what a request costs when it arrives alone.
 */
function sparseCostTable(ol: Json, cpu: Json | undefined): Table | undefined {
  if (cpu === undefined) return undefined;
  const closed = new Map((cpu.summaries as CpuSummary[]).filter((s) => s.body === 'small').map((s) => [s.target, s]));
  const pairs: Array<[string, string]> = [['nginx', 'nginx'], ['sidecar', 'sidecar'], ['iso0', 'iso0-cordon'], ['chain3', 'chain3-cordon']];
  const rates = ol.rates as number[];
  const rows: string[][] = [];
  let lowest: { label: string; ratio: number } | undefined;
  let highest: { label: string; ratio: number } | undefined;
  for (const [open, shut] of pairs) {
    const c = closed.get(shut);
    const at = rates.map((r) => (ol.summaries as OpenLoopSummary[]).find((s) => s.target === open && s.rate === r));
    if (c === undefined || at[0] === undefined) continue;
    const first = at[0];
    const ratio = first.meshCpuUs.median / c.cpuUs.median;
    if (lowest === undefined || ratio < lowest.ratio) lowest = { label: first.label, ratio };
    if (highest === undefined || ratio > highest.ratio) highest = { label: first.label, ratio };
    rows.push([first.label, ...at.map((s) => (s === undefined ? '—' : `${fmt(s.meshCpuUs.median, 1)}${saturated(s) ? ' (saturated)' : ''}`)), `${fmt(c.cpuUs.median, 1)} at ${fmt(c.rps.median, 0)} req/s`, `${fmt(ratio, 1)}×`]);
  }
  if (rows.length === 0 || lowest === undefined || highest === undefined) return undefined;
  const chainAt = (ol.summaries as OpenLoopSummary[]).find((s) => s.target === 'chain3' && s.rate === (rates.includes(2000) ? 2000 : rates[0]));
  return {
    title: 'CPU per request: at a fixed rate and at saturation',
    columns: ['target', ...rates.map((r) => `µs/req at ${r.toLocaleString('en-US')}/s`), 'µs/req at saturation (cpu benchmark, small body)', `${rates[0]!.toLocaleString('en-US')}/s ÷ saturation`],
    rows,
    notes: [
      `The same request costs every proxy more when it arrives alone than in a stream: at ${rates[0]!.toLocaleString('en-US')} req/s from ${fmt(lowest.ratio, 1)}× (${lowest.label}) to ${fmt(highest.ratio, 1)}× (${highest.label}) its CPU per request at saturation. Under a saturating load a process wakes once for many requests and runs them with warm caches; at a fixed, sparse rate each request wakes the processes on its path from idle (in this VM a halted vCPU) and runs through code and data evicted since the last one. A path of more processes and more code pays it more often and for more: with the chain, isomesh wakes the daemon three times per request (the client, the cordon\'s answer, the upstream) and a cordon once (the onRequest pass; the chain\'s response work is header edits the daemon applies itself, docs/host.md), with a V8 isolate of four contexts between them. That is why the chain, at ${fmt(closed.get('chain3-cordon')?.cpuUs.median, 1)} µs per request at saturation (about ${fmt(1e6 / (closed.get('chain3-cordon')?.cpuUs.median ?? 1), 0)} req/s of one core), needs ${chainAt === undefined ? 'most of a core' : `${fmt((chainAt.rate * chainAt.meshCpuUs.median) / 1e6, 2)} of a core (${fmt(chainAt.meshCpuUs.median, 1)} µs per request)`} at ${(chainAt?.rate ?? 2000).toLocaleString('en-US')} req/s open loop.`,
    ],
  };
}

/** Verdicts recomputed from the summaries, so a fix to a goal's rule applies to stored results too. */
function cpuGoals(cpu: Json): Verdict[] {
  const workers = 'workersReported' in cpu ? cpu.workersReported : (cpu.notes as string[]).some((n) => /not implemented/.test(n)) ? undefined : 2;
  return cpuVerdicts(cpu.summaries, workers);
}

function verdictRows(v: Verdict[]): string[][] {
  return v.map((x) => [x.goal, x.measured, x.met === undefined ? 'not judged' : x.met ? 'met' : `**missed**${x.by ? ` (${x.by})` : ''}`]);
}

function openLoopVerdict(ol: Json): string[][] {
  const g = ol.goal;
  if (g === undefined) return [];
  const iso = (ol.summaries as OpenLoopSummary[]).find((s) => s.target === 'chain3' && s.rate === 2000);
  if (iso !== undefined && saturated(iso)) g.saturated = true;
  const m = `isomesh + 3 plugins adds ${fmt(g.addedP50Us.isomesh, 0)} µs p50 / ${fmt(g.addedP99Us.isomesh, 0)} µs p99; the sidecar pattern ${fmt(g.addedP50Us.sidecar, 0)} / ${fmt(g.addedP99Us.sidecar, 0)} µs${g.saturated ? ' (isomesh could not sustain the rate)' : ''}`;
  const by = g.met ? undefined : `${fmt(g.addedP50Us.isomesh - g.addedP50Us.sidecar, 0)} µs p50, ${fmt(g.addedP99Us.isomesh - g.addedP99Us.sidecar, 0)} µs p99`;
  return [[g.goal, m, g.met ? 'met' : `**missed** (isomesh adds ${by} more)`]];
}

function cpuChart(cpu: Json, body: string, file: string): void {
  const rows = (cpu.summaries as CpuSummary[]).filter((s) => s.body === body && s.target !== 'direct');
  const nginx = rows.find((s) => s.target === 'nginx');
  fs.writeFileSync(file, hbarChartSvg({
    title: `CPU per request, ${body} body (median, min–max; lower is better)`,
    unit: 'µs of CPU per request (proxy processes)',
    rows: rows.map((s) => ({ label: s.label, segments: [{ name: 'user', value: s.userUs.median }, { name: 'kernel', value: s.sysUs.median }], min: s.cpuUs.min, max: s.cpuUs.max, note: `${fmt(s.cpuUs.median, 1)} µs` })),
    ...(nginx ? { goal: { value: nginx.cpuUs.median * 2, label: '2× nginx' } } : {}),
  }));
}

function openLoopChart(ol: Json, rate: number, file: string): void {
  const rows = (ol.summaries as OpenLoopSummary[]).filter((s) => s.rate === rate);
  const sidecar = rows.find((s) => s.target === 'sidecar');
  fs.writeFileSync(file, hbarChartSvg({
    title: `Open loop ${rate} req/s: p50 and p99 latency (lower is better)`,
    unit: 'µs (bar: p50, then up to p99)',
    clip: Math.max(2000, (sidecar?.p99Us.median ?? 0) * 3),
    rows: rows.map((s) => ({ label: s.label, segments: [{ name: 'p50', value: s.p50Us.median }, { name: 'p50 → p99', value: Math.max(0, s.p99Us.median - s.p50Us.median) }], note: `${fmt(s.p50Us.median, 0)} / ${fmt(s.p99Us.median, 0)} µs${saturated(s) ? ' saturated' : ''}` })),
  }));
}

function idleTable(idle: Json): Table {
  return {
    title: `An idle node: ${idle.seconds} s without a request, every thread of the proxy's processes`,
    columns: ['target', 'processes', 'wake-ups/s', 'CPU ms/s', '% of a core', 'by thread (wake-ups/s, CPU ms/s)'],
    rows: (idle.targets as Json[]).map((t) => [t.label, t.processes, fmt(t.wakeupsPerSec, 1), fmt(t.cpuMsPerSec, 2), `${fmt(t.corePct, 2)} %`,
      (t.byThread as Json[]).filter((x) => x.wakeupsPerSec >= 0.2 || x.cpuMsPerSec >= 0.05).map((x) => `${x.thread}${x.threads > 1 ? ` ×${x.threads}` : ''} ${fmt(x.wakeupsPerSec, 1)} / ${fmt(x.cpuMsPerSec, 2)}`).join('; ') || '—']),
    notes: [
      'CPU from each thread\'s `/proc/<pid>/task/<tid>/schedstat` (on-CPU ns), wake-ups = voluntary context switches (each one a sleep that ends in a wake-up); each daemon measured once the publish-time processes (trial load, esbuild) had exited. A wake-up of a thread that has been idle costs about 0.03–0.3 ms of CPU on this VM, more the longer it slept: an idle daemon\'s cost is its timers.',
    ],
  };
}

function machineLine(m: Json): string {
  const t = m.tools ?? {};
  const short = (s: string | undefined): string => (s ?? 'unknown').replace(/^nginx version: /, '').replace(/ Copyright.*$/, '').replace(/ - https.*$/, '');
  return `${m.machine.cpus} × ${m.machine.model}, ${m.machine.memGiB} GiB, kernel ${m.machine.kernel}; Node ${t.node}, ${short(t.nginx)}, ${short(t.haproxy)}, ${short(t.wrk)}, ${short(t.h2load)}, ${short(t.cc)}, ${short(t.strace)}`;
}

/** Locations recorded by older profile.json files kept the worktree's folder name ("bench/runtime/…"). */
function repoPath(loc: string): string {
  return loc.replace(/^bench\/(runtime|sdk|node_modules|plugins)\//, '$1/');
}

const PROFILE_TITLE: Record<string, string> = {
  iso0: 'isomesh without plugins',
  chain3: 'isomesh + jwt-auth + rate-limit + header-transform',
  h2c: 'isomesh without plugins, h2c (h2load -c 4 -m 100) → HTTP/1.1 upstream',
  grpc: 'isomesh without plugins, gRPC unary (h2load -c 4 -m 100) → grpc-js over h2c',
};

function profileSection(pr: Json): string[] {
  const out: string[] = [];
  for (const r of pr.runs as ProfileResult[]) {
    const o = r.options;
    out.push(`#### ${PROFILE_TITLE[o.scenario] ?? o.scenario} [${o.mode}]${o.scenario === 'grpc' ? '' : `, ${o.body} body`}`);
    out.push('');
    const per = (ms: number): string => fmt((ms * 1000) / Math.max(1, r.profiled.requests), 1);
    for (const p of r.profiled.processes.slice(0, 2)) {
      out.push(`- **${p.role}** (V8 CPU profile, ${per(p.selfMs)} µs of samples per request${r.profiled.windowed ? '' : ', whole run'}): ${p.categories.map((c) => `${c.name} ${c.pct} %`).join(', ')}.`);
      out.push(`  Top self time: ${p.top.slice(0, 8).map((f) => `\`${f.name}\` ${f.pct} % (${repoPath(f.location)})`).join(', ')}.`);
    }
    if (!('skipped' in r.perf)) {
      out.push(`- **perf** on the proxy CPU (it also sees the cordon workers, which exit without writing a V8 profile): ${r.perf.byProcess.filter((x) => x.pct >= 0.5).map((x) => `${x.process} ${x.pct} % (kernel ${x.kernelPct} %)`).join(', ')}; top symbols: ${r.perf.top.filter((s) => s.thread !== 'swapper').slice(0, 6).map((s) => `\`${s.kernel ? '[k] ' : ''}${s.symbol.length > 60 ? `${s.symbol.slice(0, 57)}…` : s.symbol}\` ${s.pct} %`).join(', ')}.`);
    } else out.push(`- perf: ${r.perf.skipped}`);
    if (!('skipped' in r.strace)) {
      for (const p of r.strace.processes.filter((x) => x.totalPerRequest >= 0.01)) out.push(`- **syscalls per request**, ${p.process}: ${p.totalPerRequest} — ${p.syscalls.filter((s) => s.perRequest >= 0.05).slice(0, 8).map((s) => `${s.name} ${s.perRequest}`).join(', ')}.`);
    } else out.push(`- strace: ${r.strace.skipped}`);
    out.push('');
  }
  return out;
}

function embedded(dir: string, name: string, title: string, ref: Json): string[] {
  const j = read(dir, name);
  const md = path.join(dir, `${name}.md`);
  if (j === undefined || !fs.existsSync(md)) return [`### ${title}`, '', `Not run yet (\`node bench/run.ts --only ${name}\`).`, ''];
  const other = ref !== undefined && j.machine?.model !== ref.machine?.model ? ` — **on another machine (${j.machine?.model})**` : '';
  const text = fs.readFileSync(md, 'utf8').replace(/^#### /gm, '#### ').replace(/\(\.\.\/bench\/results\//g, '(../bench/results/');
  return [`### ${title}`, '', `From \`bench/${name}.ts\`, run ${String(j.date).slice(0, 16).replace('T', ' ')} UTC${other}.`, '', text, `![${name}](../bench/results/${name}.svg)`, ''];
}

export function writeDoc(dir: string): string {
  const cpu = read(dir, 'cpu');
  const ol = read(dir, 'openloop');
  const mem = read(dir, 'memory');
  const pr = read(dir, 'profile');
  const h2 = read(dir, 'h2');
  const idle = read(dir, 'idle');
  const ref = cpu ?? ol ?? mem;
  const L: string[] = [];
  L.push('# Benchmarks', '', '<!-- generated by bench/doc.ts from bench/results/*.json — do not edit; regenerate with `npm run bench` -->', '');
  L.push('`npm run bench` (= `node bench/run.ts`) runs every benchmark below and rewrites this file from the results in `bench/results/*.json`. For before/after checks of one change: `node bench/run.ts --only cpu --quick [--targets nginx,iso0-cordon,chain3-cordon] [--bodies small] [--compare bench/results/cpu.json]` — a quick or partial run prints its tables and saves to `bench/results/scratch/`, never touching the committed results or this file. HTTP/2: `node bench/run.ts --only h2 [--quick] [--targets iso0]`. Profiling: `node bench/profile.ts --scenario chain3 --mode cordon` (scenarios iso0, iso1, iso3noop, chain3, h2c, grpc). Older entries: `--only proxy` (req/s at 16 and 64 connections), `--only datapath-proxy`, `--only datapath-redirect` (root).', '');
  if (ref !== undefined) {
    L.push('## Machine and method', '');
    L.push(`- Run: ${String(ref.date).slice(0, 16).replace('T', ' ')} UTC, code at \`${ref.revision ?? 'unknown'}\`. Machine: ${machineLine(ref)}.`);
    L.push('- Everything on loopback (or, for the eBPF rows, inside a network namespace the benchmark creates). The proxy under test is pinned to **CPU 0** (`taskset`; the daemon\'s cordon workers inherit it); the load generator, the upstream nginx (serving a 12-byte and a 16 KiB file from memory) and the harness are pinned to **CPU 1**. nginx runs one worker (`master_process off`), haproxy one thread; the sidecar pattern is two such nginx in a row. isomesh is started as `node runtime/src/main.ts run` and configured only through its API, so the harness measures whatever the proxy code is.');
    L.push('- **CPU per request** = user + kernel time of every process of the proxy (read from `/proc/<pid>/stat` of the process tree before and after each run: utime/stime of the live processes and cutime/cstime of reaped ones) ÷ requests served. The kernel splits the exact runtime into user and kernel by tick samples, so the split is statistical and the sum exact to a clock tick per process. Each run also reads `/proc/stat`: machine-wide busy time (wall time × CPUs minus idle and steal time — not the sum of its user/system columns, whose tick counts on this VM\'s tickless kernel disagree with the processes\' own times in both directions) minus all the processes accounted for is **other work**; a repetition with more than 0.1 CPU of other work is counted as *disturbed* in the tables. Targets are run round-robin, repetition by repetition, so drift hits all of them alike; tables give the median and the min–max range.');
    L.push('- Closed loop: wrk, 1 thread, 16 keep-alive connections, HTTP/1.1 GET with a bearer token (sent to every target, so the request is the same; jwt-auth verifies it). Open loop: `bench/loadgen/openloop.c`, built by the harness — evenly spaced arrivals at a fixed rate over 64 keep-alive connections, each request sent on the first idle connection, latency measured from the time the request was due (so a slow server shows up as latency instead of a lower offered load). Chosen because `h2load --rps` starts every connection\'s requests at the same instant (64 connections → a burst of 64 every 1/rps s: it measures burst queueing, not the seed\'s steady rate), Debian has no `wrk2`, and Node\'s timers have a 1 ms granularity — more than the latencies measured.');
    L.push('- isomesh targets: no plugins; 1 and 3 no-op plugins; the **realistic chain** — the example plugins `jwt-auth` (HS256, key from a tenant secret, claim forwarded as a header), `rate-limit` (per client IP, limit never reached) and `header-transform` (two request headers set, one removed; a response header set and one removed) — each in the two host modes: `cordon` (default: plugin isolates in supervised worker processes) and `inline` (isolates in the daemon). Each target is checked before and after the load (status, body length; the chain\'s response header; a request without the token must get 401 from jwt-auth).');
    L.push('');
  }
  if (cpu !== undefined || ol !== undefined) {
    L.push('## Goals vs results', '');
    L.push(markdownTable({ title: 'Issue "The hot path at near-nginx cost"', columns: ['goal', 'measured (median)', 'verdict'], rows: [...verdictRows(cpu ? cpuGoals(cpu) : []), ...(ol ? openLoopVerdict(ol) : [])] }));
    for (const n of cpu?.notes ?? []) L.push(`- ${n}`);
    L.push('');
  }
  if (h2 !== undefined) L.push(markdownTable({ title: 'Issue 9: HTTP/2 and gRPC', columns: ['goal', 'measured (median)', 'verdict'], rows: verdictRows(h2Verdicts(h2.summaries)), notes: ['The 3-plugin rows of the HTTP/2 table are reported, not judged.'] }), '');
  if (cpu !== undefined) {
    L.push('## CPU per request (closed loop)', '');
    cpuChart(cpu, 'small', path.join(dir, 'cpu-small.svg'));
    L.push(markdownTable(cpuTable(cpu, 'small')), '![CPU per request, small body](../bench/results/cpu-small.svg)', '');
    if ((cpu.summaries as CpuSummary[]).some((s) => s.body === '16KiB')) {
      cpuChart(cpu, '16KiB', path.join(dir, 'cpu-16KiB.svg'));
      L.push(markdownTable(cpuTable(cpu, '16KiB')), '![CPU per request, 16 KiB body](../bench/results/cpu-16KiB.svg)', '');
    }
  }
  if (h2 !== undefined) L.push(...h2Section(h2, dir));
  if (ol !== undefined) {
    L.push('## The seeds\' experiment: fixed rate, open loop (seed 000)', '');
    L.push(`Seed 000 measured the mean latency of a steady 10K req/s between two pods with and without sidecars; here the same shape at ${(ol.rates as number[]).map((r) => r.toLocaleString('en-US')).join(', ')} req/s on one machine, with the CPU of every process on the path. "Mesh CPU" is the proxies' CPU per request (both nginx for the sidecar pattern; the daemon and its cordon workers for isomesh); "client" is the generator (the sk_msg redirect moves kernel work into the sender). A target marked *saturated* could not keep up with the offered rate (served under 97 % of it, dropped arrivals, or a median latency over 100 ms: a standing queue): its latency is then queueing time, bounded by the generator (one second of backlog, then requests are not sent).`, '');
    if (ol.ebpf?.ran === false) L.push(`The eBPF rows did not run: ${String(ol.ebpf.reason).split('\n')[0]}`, '');
    else L.push('eBPF rows: a network namespace with the real daemon (datapath on, in its own proxy cgroup), an upstream nginx, and a workload cgroup whose connects to the tenant\'s VIP are redirected to the tenant listener on 127.0.0.1 (cgroup/connect4); "explicit" dials the listener directly from the same namespace (the control), "sk_msg" adds the sockops/sk_msg short-circuit of the app↔proxy hop.', '');
    for (const rate of ol.rates as number[]) {
      L.push(markdownTable(openLoopTable(ol, rate)));
      openLoopChart(ol, rate, path.join(dir, `openloop-${rate}.svg`));
      L.push(`![open loop ${rate}](../bench/results/openloop-${rate}.svg)`, '');
    }
    const sparse = sparseCostTable(ol, cpu);
    if (sparse !== undefined) L.push(markdownTable(sparse));
  }
  if (mem !== undefined) {
    L.push('## Memory: 500 nodes × 30 pods (seed 000\'s model)', '');
    L.push(markdownTable({
      title: `${mem.model.nodes} nodes × ${mem.model.podsPerNode} pods`,
      columns: ['model', 'MiB each', 'count', 'per node (MiB)', 'cluster (GiB)', 'source'],
      rows: (mem.rows as Json[]).map((r) => [r.model, fmt(r.perUnitMiB, 1), r.units.toLocaleString('en-US'), fmt((r.perUnitMiB * r.units) / mem.model.nodes, 0), fmt(r.clusterGiB, 1), r.source]),
      notes: [
        `Idle RSS measured here: ${Object.entries(mem.idle as Record<string, Json>).map(([k, v]) => `${k} ${fmt(v.rssMiB, 1)} MiB (${v.processes} process${v.processes > 1 ? 'es' : ''})`).join(', ')}.`,
        mem.host?.missing ? mem.host.missing : `isomesh rows from the host benchmark of ${String(mem.host.date).slice(0, 10)} (${mem.host.machine}): the daemon and its child processes, each tenant with a service, a route and one active plugin that has served a request. "30 tenants" treats every pod as its own tenant — the worst case; tenants sharing a namespace share one isolate.`,
      ],
    }));
    L.push('');
  }
  if (idle !== undefined) {
    L.push('## An idle node', '');
    L.push('The daemon runs on every node all the time; what it spends while no request arrives, it spends on every node (`bench/idle.ts`). Its remaining wake-ups are the event-loop lag metric\'s sampling timer (every 100 ms, `isomesh_process_eventloop_lag_*`) and the plugin host\'s once-a-second quota-confinement check; the data-plane workers\' deadline sweep runs only while connections are open, a cordon\'s stats timer only after calls.', '');
    L.push(markdownTable(idleTable(idle)), '');
  }
  if (pr !== undefined) {
    L.push('## Where the µs go', '');
    L.push('From `bench/profile.ts` (default host mode, 16 connections, small body): the V8 CPU profile of the daemon restricted to the load window, `perf record -e cpu-clock` on the proxy\'s CPU (kernel and native symbols, cordon workers included) and `strace -c -f` per process (which slows the daemon; the counts per request are what matter).', '');
    L.push(...profileSection(pr));
    for (const ref of [pr.nginx, pr.nginxH2?.h2c, pr.nginxH2?.grpc]) {
      if (ref === undefined || 'skipped' in ref) continue;
      for (const p of ref.processes) L.push(`Reference, same load through ${p.process}: ${p.totalPerRequest} syscalls per request — ${p.syscalls.filter((s: Json) => s.perRequest >= 0.05).slice(0, 8).map((s: Json) => `${s.name} ${s.perRequest}`).join(', ')}.`, '');
    }
    L.push(`Reading it (an interpretation written for the code at \`${pr.revision ?? 'unknown'}\`; the figures above are regenerated, this paragraph is not): without plugins the cost is node's HTTP server path and the kernel's loopback TCP — the response \`writev\`, the upstream \`write\` and the \`read\`s listed above (compare nginx's reference line) — while isomesh's own JavaScript is a minor share. With the chain in the default host mode the cordon worker is the larger consumer: each chain phase is a message to the worker and back (JSON serialisation and parsing on both sides, pipe writes, futex wake-ups between the worker's threads and the isolate's thread), and jwt-auth's verification is an asynchronous host capability, one more thread hand-off per request.`, '');
    if ((pr.runs as ProfileResult[]).some((r) => r.options.scenario === 'h2c' || r.options.scenario === 'grpc')) {
      L.push(`HTTP/2 (same caveat, written for \`${pr.revision ?? 'unknown'}\`): isomesh's kernel share is *smaller* than nginx's — node:http2 coalesces the frames of many streams into few \`write\`s and \`read\`s (compare the syscalls per request of the h2c and gRPC runs with nginx's h2c and grpc_pass lines) — so the whole gap is user time in the daemon, and most of it is not isomesh's code: node's HTTP/2 layer (an \`Http2Stream\` object per request — a full Duplex stream with its listeners —, header lists turned into objects and back on every hop, \`respond\`, \`toHeaderObject\`, \`buildNgHeaderString\`) and the garbage those objects leave (GC is an eighth to a fifth of the samples, against a few per cent for HTTP/1.1). gRPC pays that twice, once for the client's stream and once for the upstream stream (\`requestOnConnect\` is node's client-side stream set-up), plus trailers in both directions. isomesh's own code (exchange, routing, header rules, the HTTP/1.1 pool for h2c) is a seventh to a fifth of the samples. Closing the gap to 2.5× nginx needs a cheaper HTTP/2 codec path than one node:http2 stream object per request (e.g. nghttp2 driven through the session's raw callbacks, or reusing header arrays instead of objects), not a local fix.`, '');
      const grpcRef = pr.nginxH2?.grpc;
      const connect = grpcRef === undefined || 'skipped' in grpcRef ? undefined : grpcRef.processes[0]?.syscalls.find((x: Json) => x.name === 'connect');
      if (connect !== undefined) L.push(`nginx's gRPC row includes upstream reconnects: under grpc_pass it made ${connect.perRequest} \`connect\`s per call (keepalive 512 configured), i.e. a new upstream connection for about ${Math.round(connect.perRequest * 100)} % of the calls — which makes nginx's CPU per gRPC call, and so the ratio's denominator, larger than a pure reuse figure.`, '');
    }
  }
  L.push('## Plugin host, noisy neighbour, eBPF hop', '');
  L.push(...embedded(dir, 'host', 'Plugin host (`host`)', ref));
  L.push(...embedded(dir, 'noisy', 'Noisy neighbour (`noisy`)', ref));
  fs.mkdirSync(path.dirname(DOC), { recursive: true });
  fs.writeFileSync(DOC, `${L.join('\n').replace(/\n{3,}/g, '\n\n').trim()}\n`);
  return DOC;
}

/** Rewrites README.md's summary block (between the bench-summary markers) from the same results. */
export function writeReadmeSummary(dir: string): boolean {
  const readme = path.join(ROOT, 'README.md');
  const text = fs.readFileSync(readme, 'utf8');
  const start = '<!-- bench-summary:start -->';
  const end = '<!-- bench-summary:end -->';
  const a = text.indexOf(start);
  const b = text.indexOf(end);
  if (a < 0 || b < a) return false;
  const cpu = read(dir, 'cpu');
  const ol = read(dir, 'openloop');
  const mem = read(dir, 'memory');
  const h2 = read(dir, 'h2');
  const rows = [...verdictRows(cpu ? cpuGoals(cpu) : []), ...(ol ? openLoopVerdict(ol) : []), ...verdictRows(h2 ? h2Verdicts(h2.summaries) : [])];
  const lines = [start, `Generated from bench/results/*.json by \`npm run bench\`${cpu ? ` (${String(cpu.date).slice(0, 10)}, ${cpu.machine.cpus} × ${cpu.machine.model})` : ''}:`, ''];
  lines.push('| goal | measured | verdict |', '|---|---|---|', ...rows.map((r) => `| ${r.join(' | ')} |`));
  const node = (mem?.rows as Json[] | undefined)?.find((r) => String(r.model).startsWith('isomesh per node, 30 tenants [cordon]'));
  const envoy = (mem?.rows as Json[] | undefined)?.find((r) => r.model === 'sidecar: Envoy per pod');
  const ngx = (mem?.rows as Json[] | undefined)?.find((r) => r.model === 'sidecar: nginx per pod');
  if (node && envoy) lines.push('', `Memory for 500 nodes × 30 pods: isomesh ${fmt(node.clusterGiB, 1)} GiB (one daemon per node, every pod its own tenant); sidecars ${ngx ? `${fmt(ngx.clusterGiB, 1)} GiB as idle nginx, ` : ''}${fmt(envoy.clusterGiB, 1)} GiB as Envoy at seed 000's 70 MB each.`);
  lines.push(end);
  fs.writeFileSync(readme, text.slice(0, a) + lines.join('\n') + text.slice(b + end.length));
  return true;
}

/** The compact tables run.ts prints after a benchmark; with `compare`, before → after for cpu. */
export function printSummary(name: string, r: Json, compare?: string): string {
  if (name === 'cpu') {
    const out = [...new Set((r.summaries as CpuSummary[]).map((s) => s.body))].map((b) => markdownTable(cpuTable(r, b)));
    out.push(markdownTable({ title: 'Goals', columns: ['goal', 'measured', 'verdict'], rows: verdictRows(cpuGoals(r)) }));
    if (compare !== undefined) {
      const before = JSON.parse(fs.readFileSync(compare, 'utf8')) as Json;
      const rows = (r.summaries as CpuSummary[]).map((s) => {
        const b = (before.summaries as CpuSummary[] | undefined)?.find((x) => x.target === s.target && x.body === s.body);
        const proxied = s.target !== 'direct';
        const d = b === undefined || !proxied ? '—' : `${(((s.cpuUs.median - b.cpuUs.median) / b.cpuUs.median) * 100).toFixed(1)} %`;
        return [`${s.label} [${s.body}]`, b && proxied ? fmtSpread(b.cpuUs) : '—', proxied ? fmtSpread(s.cpuUs) : '—', d, b ? fmt(b.rps.median, 0) : '—', fmt(s.rps.median, 0)];
      });
      out.push(markdownTable({ title: `Before (${compare}, ${String(before.date).slice(0, 16)}) → now`, columns: ['target', 'CPU µs before', 'CPU µs now', 'Δ CPU', 'req/s before', 'req/s now'], rows }));
    }
    return `\n${out.join('\n')}\n`;
  }
  if (name === 'h2') {
    const out = (['h2c', 'grpc'] as const).filter((sc) => (r.summaries as H2Summary[]).some((s) => s.scenario === sc)).map((sc) => markdownTable(h2Table(r, sc)));
    out.push(markdownTable({ title: 'Goals', columns: ['goal', 'measured', 'verdict'], rows: verdictRows(h2Verdicts(r.summaries)) }));
    return `\n${out.join('\n')}\n`;
  }
  if (name === 'openloop') return `\n${(r.rates as number[]).map((rate) => markdownTable(openLoopTable(r, rate))).join('\n')}\n${markdownTable({ title: 'Goal', columns: ['goal', 'measured', 'verdict'], rows: openLoopVerdict(r) })}\n`;
  if (name === 'idle') return `\n${markdownTable(idleTable(r))}\n`;
  if (name === 'memory') return `\n${(r.rows as Json[]).map((x) => `${x.model}: ${x.perUnitMiB} MiB × ${x.units} = ${x.clusterGiB} GiB`).join('\n')}\n`;
  return '';
}
