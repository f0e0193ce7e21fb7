// `host`: plugin-host costs.
//  - in process, with the real PluginHost: per-request cost of begin → onRequest (→ onResponse) →
//    end for an empty chain, one no-op plugin and the chain of 3, and for the realistic chain's
//    plugins (jwt-auth, rate-limit, header-transform) alone and together; isolate cold start;
//  - through a daemon child process: publish→active latency (PUT active answered → a request on the
//    listener sees the new version) and RSS growth per idle tenant with one plugin.
import http from 'node:http';
import pino from 'pino';
import { Registry } from 'prom-client';
import { PluginHost } from '../runtime/src/host/index.ts';
import type { HookRequest } from '../runtime/src/host/contract.ts';
import { addTaggedTenant, removeStateDir, rssKiB, startDaemon, until, type BenchDaemon } from './lib/daemon.ts';
import { oneRequest, tenantConfig } from './lib/host-requests.ts';
import { get } from './lib/http.ts';
import { CHAIN3, NOOP, realisticChain, versionTag } from './lib/plugins.ts';
import { ProcessGroup, awaitPublishExit, cpuCount, pinSelf, treeRssKiB } from './lib/processes.ts';
import { writeReport, type Table } from './lib/report.ts';
import { fmt, round, roundSummary, summarize, type Summary } from './lib/stats.ts';
import type { BenchContext } from './run.ts';

const GOALS = { noopP50Us: 10, coldStartMs: 5, publishP50Ms: 50, perTenantMiB: 2 };

const REQ: HookRequest = {
  method: 'GET', path: '/api/users', query: 'a=1', host: 'svc', remoteAddress: '127.0.0.1',
  headers: [['host', 'svc'], ['accept', '*/*'], ['user-agent', 'bench'], ['x-request-id', 'abc']],
  route: 'all', service: 'origin',
};

/** The request the realistic plugins see: REQ with the bench's bearer token (jwt-auth verifies it). */
const REALISTIC_REQ: HookRequest = { ...REQ, headers: [...REQ.headers, ['authorization', realisticChain().headers[0]!.slice('authorization: '.length)]] };

async function perRequestUs(host: PluginHost, tenant: string, calls: number, req: HookRequest = REQ): Promise<Summary> {
  for (let i = 0; i < Math.min(5000, calls); i++) await oneRequest(host, tenant, `w${i}`, req);
  const samples = new Float64Array(calls);
  for (let i = 0; i < calls; i++) {
    const t0 = performance.now();
    await oneRequest(host, tenant, `r${i}`, req);
    samples[i] = (performance.now() - t0) * 1000;
  }
  return summarize(samples);
}

type Mode = 'cordon' | 'inline';
type RealisticRow = 'jwt-auth' | 'rate-limit' | 'header-transform' | 'chain';
const REALISTIC_ROWS: RealisticRow[] = ['jwt-auth', 'rate-limit', 'header-transform', 'chain'];
/** What each row's hooks do per request (rate-limit and header-transform hand their response headers over in onRequest). */
const REALISTIC_HOOKS: Record<RealisticRow, string> = {
  'jwt-auth': 'onRequest (awaits ctx.jwt.verify)',
  'rate-limit': 'onRequest (response headers via ctx.responseHeaders)',
  'header-transform': 'onRequest (static response rules via ctx.responseHeaders; onResponse skipped)',
  chain: '3 × onRequest, no response pass',
};

async function inProcess(quick: boolean, mode: Mode) {
  const calls = quick ? 5000 : 20_000;
  const host = new PluginHost({ logger: pino({ level: 'silent' }), registry: new Registry(), mode });
  try {
    host.configure(await tenantConfig(host, 'empty', []));
    host.configure(await tenantConfig(host, 'noop', [['noop', NOOP]]));
    host.configure(await tenantConfig(host, 'chain3', CHAIN3));
    const empty = await perRequestUs(host, 'empty', calls);
    const noop = await perRequestUs(host, 'noop', calls);
    const chain3 = await perRequestUs(host, 'chain3', calls);
    // The realistic chain's plugins (bench/lib/plugins.ts, as the cpu benchmark runs them), each
    // alone and together: what each costs on top of a no-op plugin, without sockets or a proxy.
    const real = realisticChain();
    const realistic: Record<RealisticRow, Summary> = {} as Record<RealisticRow, Summary>;
    const sets: Record<RealisticRow, Array<[string, string, Record<string, unknown>]>> = {
      'jwt-auth': [real.plugins[0]!], 'rate-limit': [real.plugins[1]!], 'header-transform': [real.plugins[2]!], chain: real.plugins,
    };
    for (const [row, plugins] of Object.entries(sets) as Array<[RealisticRow, typeof real.plugins]>) {
      host.configure(await tenantConfig(host, `real-${row}`, plugins, real.secrets));
      realistic[row] = await perRequestUs(host, `real-${row}`, calls, REALISTIC_REQ);
    }
    // Cold start: configure a brand-new tenant (isolate + guest runtime + plugin context) → first call done.
    const coldRuns = quick ? 10 : 40;
    const proto = await tenantConfig(host, 'cold', [['noop', NOOP]]);
    const cold = new Float64Array(coldRuns);
    for (let i = 0; i < coldRuns; i++) {
      const name = `cold-${i}`;
      const t0 = performance.now();
      host.configure({ ...proto, name });
      await oneRequest(host, name, 'first', REQ);
      cold[i] = performance.now() - t0;
      host.removeTenant(name);
    }
    const compileMs = new Float64Array(quick ? 5 : 20);
    for (let i = 0; i < compileMs.length; i++) {
      const t0 = performance.now();
      await host.compile({ source: `export default { onRequest(req) { req.headers.set('x-n', '${i}'); } };`, language: 'typescript', maxBundleBytes: 1 << 20 });
      compileMs[i] = performance.now() - t0;
    }
    return { mode, calls, empty, noop, chain3, realistic, cold: summarize(cold), compile: summarize(compileMs) };
  } finally {
    await host.close();
  }
}

async function publishToActive(group: ProcessGroup, daemonCpu: string | undefined, quick: boolean, mode: Mode | undefined) {
  let d: BenchDaemon | undefined;
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  try {
    d = await startDaemon(group, { hostMode: mode, ...(daemonCpu === undefined ? {} : { cpus: daemonCpu }) });
    const t = await d.must('PUT', '/v1/tenants/flip', {});
    const port = t.listenerPort as number;
    // The plugin answers early, so the (unreachable) upstream is never contacted.
    await d.must('PUT', '/v1/tenants/flip/services/origin', { endpoints: [{ address: '127.0.0.1', port: 9 }] });
    await d.must('PUT', '/v1/tenants/flip/routes/all', { match: { pathPrefix: '/' }, to: { service: 'origin' } });
    const v1 = (await d.must('POST', '/v1/tenants/flip/plugins/tag/versions', { source: versionTag('v1'), language: 'typescript' })).version as number;
    const v2 = (await d.must('POST', '/v1/tenants/flip/plugins/tag/versions', { source: versionTag('v2'), language: 'typescript' })).version as number;
    await d.must('PUT', '/v1/tenants/flip/plugins/tag/active', { version: v1 });
    await d.must('PUT', '/v1/tenants/flip/chain', [{ plugin: 'tag' }]);
    if (!(await until(async () => (await get(agent, port, '/')).body === 'v1', 10_000))) throw new Error('v1 never became active');
    const flips = quick ? 10 : 40;
    const visible = new Float64Array(flips);
    const putMs = new Float64Array(flips);
    let polls = 0;
    for (let i = 0; i < flips; i++) {
      const [version, tag] = i % 2 === 0 ? [v2, 'v2'] : [v1, 'v1'];
      const t0 = performance.now();
      await d.must('PUT', '/v1/tenants/flip/plugins/tag/active', { version });
      const answered = performance.now();
      putMs[i] = answered - t0;
      let seen = false;
      while (performance.now() - answered < 2000) {
        polls++;
        if ((await get(agent, port, '/')).body === tag) {
          seen = true;
          break;
        }
      }
      if (!seen) throw new Error(`${tag} not visible 2 s after PUT active`);
      visible[i] = performance.now() - answered;
      await new Promise((r) => setTimeout(r, 20));
    }
    return { flips, polls, visibleMs: summarize(visible), putMs: summarize(putMs) };
  } finally {
    agent.destroy();
    if (d !== undefined) await group.stop(d.proc);
    removeStateDir(d);
  }
}

async function memory(group: ProcessGroup, daemonCpu: string | undefined, quick: boolean, mode: Mode) {
  // 30 = the pods per node of seed 000's model (500 nodes × 30 pods), each pod its own tenant.
  const steps = quick ? [30, 100, 300] : [30, 100, 1000];
  const max = steps[steps.length - 1]!;
  let d: BenchDaemon | undefined;
  const agent = new http.Agent({ keepAlive: false });
  try {
    d = await startDaemon(group, { hostMode: mode, ...(daemonCpu === undefined ? {} : { cpus: daemonCpu }), listenerPorts: max + 20 });
    const pid = d.proc.pid;
    await new Promise((r) => setTimeout(r, 2000));
    // The daemon and its descendants: in cordon mode the isolates live in worker processes.
    const base = treeRssKiB(pid);
    const baseKiB = base.totalKiB;
    const points: Array<{
      tenants: number; rssKiB: number; daemonRssKiB: number; processes: number; perTenantMiB: number; createSec: number;
      /** RSS by process kind (daemon, cordon, …) once the publish-time processes exited. */
      byKindMiB: Record<string, number>;
      /** The tree's RSS 3 s after the last publish, with the trial-load process and esbuild still up. */
      whilePublishingMiB: number;
      publishingByKindMiB: Record<string, number>;
      idleAfterSec: number;
    }> = [];
    let created = 0;
    const create = (i: number): Promise<void> => addTaggedTenant(d!, agent, `t${i}`);
    const t0 = performance.now();
    for (const target of steps) {
      const PAR = 4;
      while (created < target) {
        const batch: Promise<void>[] = [];
        for (let k = 0; k < PAR && created < target; k++) batch.push(create(created++));
        await Promise.all(batch);
      }
      await new Promise((r) => setTimeout(r, 3000));
      // The publish-time processes (the trial-load process, esbuild's service) exit on their own
      // after 30 s without a publish: an idle node's footprint is measured once they are gone.
      const publishing = treeRssKiB(pid);
      const idleFrom = performance.now();
      const left = await awaitPublishExit(pid, PUBLISH_IDLE_WAIT_MS);
      if (left.length > 0) process.stderr.write(`host [${mode}]: ${left.join(' and ')} still running ${PUBLISH_IDLE_WAIT_MS / 1000} s after the last publish\n`);
      const tree = treeRssKiB(pid);
      const rss = tree.totalKiB;
      points.push({
        tenants: target, rssKiB: rss, daemonRssKiB: rssKiB(pid), processes: tree.processes, perTenantMiB: round((rss - baseKiB) / 1024 / target, 3), createSec: round((idleFrom - t0) / 1000, 1),
        byKindMiB: mibByKind(tree),
        whilePublishingMiB: round(publishing.totalKiB / 1024, 1),
        publishingByKindMiB: mibByKind(publishing),
        idleAfterSec: round((performance.now() - idleFrom) / 1000, 1),
      });
      process.stderr.write(`host [${mode}]: ${target} tenants → RSS ${(rss / 1024).toFixed(0)} MiB over ${tree.processes} processes (${points.at(-1)!.perTenantMiB} MiB/tenant; ${(publishing.totalKiB / 1024).toFixed(0)} MiB while publishing)\n`);
    }
    return { mode, baseKiB, baseProcesses: base.processes, points };
  } finally {
    agent.destroy();
    if (d !== undefined) await group.stop(d.proc);
    removeStateDir(d);
  }
}

/** How long the memory points wait for the trial-load process and esbuild to exit (their idle time is 30 s). */
const PUBLISH_IDLE_WAIT_MS = 45_000;

function mibByKind(tree: ReturnType<typeof treeRssKiB>): Record<string, number> {
  return Object.fromEntries(Object.entries(tree.byKind).map(([k, v]) => [k, round(v.kib / 1024, 1)]));
}

export async function hostBench(ctx: BenchContext): Promise<void> {
  const pinned = cpuCount() >= 2;
  const modes: Mode[] = ctx.hostMode === undefined ? ['cordon', 'inline'] : [ctx.hostMode];
  const group = new ProcessGroup();
  const inproc: Array<Awaited<ReturnType<typeof inProcess>>> = [];
  const mems: Array<Awaited<ReturnType<typeof memory>>> = [];
  let flip: Awaited<ReturnType<typeof publishToActive>>;
  try {
    // In process: this process (and the cordon workers it forks) on CPU 0.
    if (pinned) pinSelf('0');
    for (const mode of modes) inproc.push(await inProcess(ctx.quick, mode));
    if (pinned) pinSelf('1'); // from here on this process is the client; the daemon gets CPU 0
    flip = await publishToActive(group, pinned ? '0' : undefined, ctx.quick, ctx.hostMode);
    for (const mode of modes) mems.push(await memory(group, pinned ? '0' : undefined, ctx.quick, mode));
  } finally {
    await group.stopAll();
    if (pinned) pinSelf(`0-${cpuCount() - 1}`);
  }
  const verdict = (ok: boolean) => (ok ? 'meets' : 'misses');
  const label = { empty: 'empty chain (admission only)', noop: '1 no-op plugin', chain3: 'chain of 3 (2× onRequest + onResponse)' };
  const perCallRows = inproc.flatMap((m) =>
    (['empty', 'noop', 'chain3'] as const).map((k) => [`${label[k]} [${m.mode}]`, fmt(m[k].p50), fmt(m[k].p90), fmt(m[k].p99), fmt(m[k].mean)]),
  );
  const tables: Table[] = [
    {
      title: `Plugin host per request, in process (${inproc[0]!.calls.toLocaleString('en-US')} calls each, µs)`,
      columns: ['chain [host mode]', 'p50 µs', 'p90 µs', 'p99 µs', 'mean µs'],
      rows: perCallRows,
      notes: ['Each sample is begin → onRequest (→ onResponse when the chain has one) → end, as the built-in proxy calls it.'],
    },
    {
      title: `Realistic plugins per request, in process (${inproc[0]!.calls.toLocaleString('en-US')} calls each, µs)`,
      columns: ['plugin(s) [host mode]', 'hooks', 'p50 µs', 'mean µs', 'mean over 1 no-op µs'],
      rows: inproc.flatMap((m) =>
        REALISTIC_ROWS.map((k) => [
          `${k === 'chain' ? 'jwt-auth + rate-limit + header-transform' : k} [${m.mode}]`,
          REALISTIC_HOOKS[k],
          fmt(m.realistic[k].p50),
          fmt(m.realistic[k].mean),
          fmt(m.realistic[k].mean - m.noop.mean),
        ]),
      ),
      notes: ['The cpu benchmark\'s chain, each plugin alone and together, with its configs and a valid HS256 token, begin → onRequest → onResponse → end as above. What a plugin adds over a no-op is mostly the host ↔ isolate mechanics its hooks set off (a second pass for an onResponse hook, a capability round for an awaited ctx.jwt.verify, headers flattened, checked in the runner and again in the host), not its own code: docs/host.md, "Where a chain\'s µs go".'],
    },
    {
      title: 'Goals',
      columns: ['measure', 'p50', 'p99', 'goal', 'result'],
      rows: [
        ...inproc.map((m) => [`no-op onRequest per request [${m.mode}]`, `${fmt(m.noop.p50)} µs`, `${fmt(m.noop.p99)} µs`, `≤ ${GOALS.noopP50Us} µs p50`, verdict(m.noop.p50 <= GOALS.noopP50Us)]),
        ...inproc.map((m) => [`isolate cold start → first call [${m.mode}]`, `${fmt(m.cold.p50)} ms`, `${fmt(m.cold.p99)} ms`, `≤ ${GOALS.coldStartMs} ms`, verdict(m.cold.p50 <= GOALS.coldStartMs)]),
        [`publish→active (PUT answered → request sees it) [${ctx.hostMode ?? 'default'}]`, `${fmt(flip.visibleMs.p50)} ms`, `${fmt(flip.visibleMs.p99)} ms`, `≤ ${GOALS.publishP50Ms} ms p50`, verdict(flip.visibleMs.p50 <= GOALS.publishP50Ms)],
        ...mems.flatMap((m) =>
          m.points.map((p) => [`RSS growth per idle tenant, ${p.tenants} tenants [${m.mode}]`, `${fmt(p.perTenantMiB, 3)} MiB`, '—', `≤ ${GOALS.perTenantMiB} MiB`, verdict(p.perTenantMiB <= GOALS.perTenantMiB)]),
        ),
      ],
      notes: [
        `PUT …/active round trip: p50 ${fmt(flip.putMs.p50)} ms, p99 ${fmt(flip.putMs.p99)} ms; ${flip.flips} flips needed ${flip.polls} polling requests in all (= the first request after the PUT answer already saw the new version when equal). Compile at publish (not part of cold start): p50 ${fmt(inproc[0]!.compile.p50)} ms.`,
        ...mems.map((m) => {
          const last = m.points[m.points.length - 1]!;
          const kinds = (k: Record<string, number>): string => Object.entries(k).map(([name, mib]) => `${name} ${fmt(mib, 0)}`).join(', ');
          const first = m.points[0]!;
          return `Memory [${m.mode}]: VmRSS of the daemon and its child processes: ${fmt(m.baseKiB / 1024, 0)} MiB with no tenants (${m.baseProcesses} processes), ${fmt(last.rssKiB / 1024, 0)} MiB with ${last.tenants} (${last.processes} processes; daemon alone ${fmt(last.daemonRssKiB / 1024, 0)} MiB). Each tenant: service, route, one published + active plugin, served one request, then idle; each point is taken once the publish-time processes (trial-load process, esbuild's service) have exited, ${fmt(first.idleAfterSec, 0)} s after the last publish at ${first.tenants} tenants (MiB by process: ${kinds(first.byKindMiB)}; 3 s after the last publish ${fmt(first.whilePublishingMiB, 0)} MiB: ${kinds(first.publishingByKindMiB)}).`;
        }),
      ],
    },
  ];
  const us = (x: Summary) => roundSummary(x, 2);
  writeReport({
    name: 'host',
    json: {
      ...ctx.meta,
      layout: pinned ? 'in-process part (and its cordon workers) pinned to CPU 0; daemon (and its cordons) on CPU 0, client on CPU 1' : 'unpinned',
      goals: GOALS,
      perRequestUs: inproc.map((m) => ({ mode: m.mode, calls: m.calls, empty: us(m.empty), noop: us(m.noop), chain3: us(m.chain3), noopOverheadP50: round(m.noop.p50 - m.empty.p50), realistic: Object.fromEntries(REALISTIC_ROWS.map((k) => [k, us(m.realistic[k])])) })),
      coldStartMs: inproc.map((m) => ({ mode: m.mode, ...us(m.cold) })),
      compileMs: us(inproc[0]!.compile),
      publishToActiveMs: { mode: ctx.hostMode ?? 'default', flips: flip.flips, polls: flip.polls, visible: us(flip.visibleMs), putRoundTrip: us(flip.putMs) },
      memory: mems,
    },
    tables,
    chart: {
      title: 'Plugin host cost per request (µs, lower is better)',
      unit: 'µs',
      goal: { value: GOALS.noopP50Us, label: `goal ${GOALS.noopP50Us} µs p50 (no-op)` },
      groups: inproc.flatMap((m) =>
        (['noop', 'chain3'] as const).map((k) => ({
          label: `${k === 'chain3' ? 'chain of 3' : '1 no-op'} [${m.mode}]`,
          bars: [{ series: 'p50', value: round(m[k].p50) }, { series: 'p99', value: round(m[k].p99) }],
        })),
      ),
    },
  });
}
