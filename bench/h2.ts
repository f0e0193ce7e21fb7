// `h2`: CPU per request for HTTP/2 cleartext and gRPC unary, side by side in one run — the h2 half of
// the hot-path referee (cpu.ts is the HTTP/1.1 half, and this file follows its method).
//   h2c:  h2load (`-c 4 -m 100`, small GET with a bearer token) → the proxy → the upstream nginx over
//         HTTP/1.1 keep-alive: nginx `listen … http2` + `proxy_pass` (which cannot speak h2 upstream),
//         isomesh's tenant port (h2c by preface) → a `protocol: http1` service; direct = h2load → the
//         upstream nginx's own h2c listener.
//   gRPC: h2load POSTing one length-prefixed protobuf message (content-type application/grpc,
//         te: trailers) → the proxy → a @grpc/grpc-js echo server over h2c: nginx `grpc_pass`, isomesh
//         a `protocol: grpc` service; direct = h2load → the gRPC server.
// isomesh runs without plugins and with the realistic chain (jwt-auth + rate-limit + header-transform),
// default host mode, ISOMESH_WORKERS=1. CPU per request = user + system time of the proxy's process
// tree ÷ requests; each run is bounded by a request count (h2load's accounting is exact then), sized
// from a warm-up so every run lasts about `durationSec`; repetitions interleaved round-robin; a run
// with more than 0.1 CPU of other work on the machine is flagged disturbed.
//
// Layout on 2 CPUs: the proxy under test on CPU 0; h2load, the upstreams and this harness on CPU 1.
import fs from 'node:fs';
import http2 from 'node:http2';
import os from 'node:os';
import path from 'node:path';
import { DISTURBED_CPUS, selectTargets, type Verdict } from './cpu.ts';
import { cpuWindow } from './lib/cpuacct.ts';
import { removeStateDir, setupTenant, startDaemon, type BenchDaemon } from './lib/daemon.ts';
import { ECHO_FRAMED, ECHO_MESSAGE, GRPC_PATH, grpcUnary, startGrpcUpstream, writeGrpcRequest } from './lib/grpc-upstream.ts';
import { runH2load, type H2loadResult } from './lib/h2load.ts';
import { SMALL_BODY, SMALL_PATH, startNginxProxy, startNginxUpstream, type Peer } from './lib/peers.ts';
import { realisticChain } from './lib/plugins.ts';
import { ProcessGroup, cpuCount, pinSelf } from './lib/processes.ts';
import { loadSpread, type LoadSpread } from './lib/stats.ts';
import type { BenchContext } from './run.ts';

export const H2_GOALS = { h2cCpuVsNginx: 2.5, grpcCpuVsNginx: 2.5 };
export type H2Scenario = 'h2c' | 'grpc';

export interface H2Target {
  id: string;
  scenario: H2Scenario;
  label: string;
  port: number;
  /** Root PIDs whose trees are the proxy. */
  proxyPids: number[];
  plugins?: 'none' | 'chain3';
  mode?: 'cordon' | 'inline';
}

export interface H2Sample {
  scenario: H2Scenario;
  target: string;
  rep: number;
  requests: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  meanMs: number;
  /** Responses with a status other than 2xx. */
  non2xx: number;
  /** Requests that got no response: h2load's "errored" (resets, timeouts), or never done. */
  failed: number;
  /** 2xx responses without the expected body (gRPC: trailers-only, i.e. a grpc-status other than OK). */
  missingBody: number;
  proxyUserUs: number;
  proxySysUs: number;
  upstreamUs: number;
  clientUs: number;
  foreignCpus: number;
  stealCpus: number;
  loadAverage1: number;
  disturbed: boolean;
}

export interface H2Summary extends LoadSpread {
  scenario: H2Scenario;
  target: string;
  label: string;
  errors: number;
}

const CLIENTS = 4;
const STREAMS = 100;

/** The body every successful response carries, for counting the ones that came back without it. */
const OK_BODY_BYTES: Record<H2Scenario, number> = { h2c: Buffer.byteLength(SMALL_BODY), grpc: ECHO_FRAMED.length };

function headerMap(lines: string[]): Record<string, string> {
  return Object.fromEntries(lines.map((h) => [h.slice(0, h.indexOf(':')).toLowerCase(), h.slice(h.indexOf(':') + 1).trim()]));
}

/** One h2c GET (node:http2, prior knowledge): status, body and response headers. */
export function h2Get(port: number, p: string, headers: Record<string, string>): Promise<{ status: number; body: Buffer; headers: http2.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    session.once('error', reject);
    session.setTimeout(5000, () => session.destroy(new Error(`h2c GET ${p} on ${port} timed out`)));
    const req = session.request({ ':path': p, ...headers });
    const chunks: Buffer[] = [];
    let head: http2.IncomingHttpHeaders = {};
    req.on('response', (h) => (head = h));
    req.on('data', (c: Buffer) => chunks.push(c));
    req.once('error', reject);
    req.once('end', () => {
      session.close();
      resolve({ status: Number(head[':status']), body: Buffer.concat(chunks), headers: head });
    });
  });
}

/** A real response through the target; for the chain, proof it ran and that jwt-auth refuses a request without the token. */
async function check(t: H2Target, auth: Record<string, string>, proofHeader: string): Promise<void> {
  const chain = t.plugins === 'chain3';
  if (t.scenario === 'h2c') {
    const r = await h2Get(t.port, SMALL_PATH, auth);
    if (r.status !== 200 || !r.body.equals(Buffer.from(SMALL_BODY))) throw new Error(`${t.scenario}/${t.id}: status ${r.status}, ${r.body.length} bytes (want 200, ${SMALL_BODY.length})`);
    if (chain && r.headers[proofHeader] === undefined) throw new Error(`${t.scenario}/${t.id}: response lacks ${proofHeader} — the chain did not run`);
    if (chain) {
      const anon = await h2Get(t.port, SMALL_PATH, {});
      if (anon.status !== 401) throw new Error(`${t.scenario}/${t.id}: a request without a token got ${anon.status}, want 401 from jwt-auth`);
    }
    return;
  }
  const r = await grpcUnary(t.port, auth);
  if (r.code !== 0 || r.reply === undefined || !r.reply.equals(ECHO_MESSAGE)) throw new Error(`${t.scenario}/${t.id}: grpc-status ${r.code} ${r.details}, reply ${r.reply?.toString('hex') ?? 'none'} (want 0 and the echo)`);
  if (chain && r.headers[proofHeader] === undefined) throw new Error(`${t.scenario}/${t.id}: response metadata lacks ${proofHeader} — the chain did not run`);
  if (chain) {
    const anon = await grpcUnary(t.port, {});
    if (anon.code !== 16) throw new Error(`${t.scenario}/${t.id}: a call without a token got grpc-status ${anon.code} (${anon.details}), want 16 UNAUTHENTICATED from jwt-auth`);
  }
}

async function untilHealthy(t: H2Target, auth: Record<string, string>, proofHeader: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  for (;;) {
    try {
      return await check(t, auth, proofHeader);
    } catch (e) {
      if (Date.now() > deadline) throw e;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

export async function h2Bench(ctx: BenchContext): Promise<Record<string, unknown>> {
  const reps = ctx.quick ? 3 : 5;
  const durationSec = ctx.quick ? 2 : 5;
  const warmSec = ctx.quick ? 1 : 2;
  const pinned = cpuCount() >= 2;
  const proxyCpu = pinned ? '0' : undefined;
  const loadCpu = pinned ? '1' : undefined;
  const mode = ctx.hostMode ?? 'cordon';
  const chain = realisticChain();
  const auth = headerMap(chain.headers);
  const group = new ProcessGroup();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-h2-'));
  const grpcBody = writeGrpcRequest(path.join(root, 'grpc-request.bin'));
  let daemon: BenchDaemon | undefined;
  const samples: H2Sample[] = [];
  let targets: H2Target[] = [];
  const requestsPerRun: Record<string, number> = {};
  try {
    if (pinned) pinSelf(loadCpu!);
    const upstream = await startNginxUpstream(group, root, loadCpu, { h2c: true });
    const grpcUp = await startGrpcUpstream(group, loadCpu);
    const nginxH2c = await startNginxProxy(group, root, upstream.port, proxyCpu, { name: 'nginx-h2c', h2c: true });
    const nginxGrpc = await startNginxProxy(group, root, grpcUp.port, proxyCpu, { name: 'nginx-grpc', grpc: true });
    daemon = await startDaemon(group, { hostMode: mode, ...(proxyCpu === undefined ? {} : { cpus: proxyCpu }), env: { ISOMESH_WORKERS: '1' } });
    const iso = async (scenario: H2Scenario, kind: 'none' | 'chain3'): Promise<H2Target> => {
      const port = await setupTenant(daemon!, `${scenario}-${kind}`, {
        upstreamPort: scenario === 'h2c' ? upstream.port : grpcUp.port,
        protocol: scenario === 'h2c' ? 'http1' : 'grpc',
        ...(kind === 'chain3' ? { plugins: chain.plugins, secrets: chain.secrets, quota: chain.quota } : {}),
      });
      const what = kind === 'none' ? 'no plugins' : 'jwt-auth + rate-limit + header-transform';
      return { id: `${kind === 'none' ? 'iso0' : 'chain3'}-${mode}`, scenario, label: `isomesh, ${what} [${mode}]`, port, proxyPids: [daemon!.proc.pid], plugins: kind, mode };
    };
    const all: H2Target[] = [
      { id: 'direct', scenario: 'h2c', label: 'direct (h2load → nginx h2c)', port: upstream.h2cPort!, proxyPids: [] },
      { id: 'nginx', scenario: 'h2c', label: 'nginx, one hop (http2 listener → HTTP/1.1)', port: nginxH2c.port, proxyPids: [nginxH2c.proc.pid] },
      await iso('h2c', 'none'),
      await iso('h2c', 'chain3'),
      { id: 'direct', scenario: 'grpc', label: 'direct (h2load → grpc-js)', port: grpcUp.port, proxyPids: [] },
      { id: 'nginx', scenario: 'grpc', label: 'nginx, one hop (grpc_pass)', port: nginxGrpc.port, proxyPids: [nginxGrpc.proc.pid] },
      await iso('grpc', 'none'),
      await iso('grpc', 'chain3'),
    ];
    // --targets picks ids (both scenarios alike); direct and nginx always run.
    const ids = new Set(selectTargets([...new Map(all.map((t) => [t.id, t])).values()], ctx.targets).map((t) => t.id));
    targets = all.filter((t) => ids.has(t.id));
    for (const t of targets) await untilHealthy(t, auth, chain.proofHeader);

    const load = (t: H2Target, bound: { requests: number } | { durationSec: number }, logFile?: string): Promise<H2loadResult & { latency?: { p50Ms: number; p99Ms: number; count: number; non2xx: number } }> =>
      runH2load({
        url: `http://127.0.0.1:${t.port}${t.scenario === 'h2c' ? SMALL_PATH : GRPC_PATH}`,
        clients: CLIENTS,
        streams: STREAMS,
        ...bound,
        headers: t.scenario === 'h2c' ? chain.headers : [...chain.headers, 'content-type: application/grpc', 'te: trailers'],
        ...(t.scenario === 'grpc' ? { dataFile: grpcBody } : {}),
        ...(logFile === undefined ? {} : { logFile }),
        ...(loadCpu ? { cpus: loadCpu } : {}),
      });
    // Warm-up, and the request count that makes a run last about durationSec for this target.
    for (const t of targets) {
      const w = await load(t, { durationSec: warmSec });
      if (w.protocol !== 'h2c') throw new Error(`${t.scenario}/${t.id}: h2load negotiated ${w.protocol}, not h2c`);
      requestsPerRun[`${t.scenario}/${t.id}`] = Math.max(CLIENTS * STREAMS * 4, Math.round((w.rps * durationSec) / 1000) * 1000);
    }
    process.stderr.write(`h2: ${targets.length} targets × ${reps} reps × ~${durationSec} s (${CLIENTS} connections × ${STREAMS} streams)\n`);
    const everyone: Peer[] = [upstream, grpcUp, nginxH2c, nginxGrpc];
    for (let rep = 0; rep < reps; rep++) {
      for (const t of targets) {
        const up = t.scenario === 'h2c' ? upstream : grpcUp;
        // Everything else this benchmark started: counted, so it is not mistaken for other work.
        const mine = new Set([...t.proxyPids, up.proc.pid]);
        const roles: Record<string, number> = { upstream: up.proc.pid };
        for (const p of [...everyone.map((x) => x.proc.pid), daemon.proc.pid]) if (!mine.has(p)) roles[`idle:${p}`] = p;
        t.proxyPids.forEach((p, i) => (roles[`proxy${i}`] = p));
        const n = requestsPerRun[`${t.scenario}/${t.id}`]!;
        const w = cpuWindow(roles, 'h2load');
        const r = await load(t, { requests: n }, path.join(root, `h2load-${rep}-${t.scenario}-${t.id}.tsv`));
        const cpu = w.stop();
        const done = r.requests.done;
        const per = (sec: number): number => (done > 0 ? (sec * 1e6) / done : NaN);
        const proxy = Object.entries(cpu.roles).filter(([k]) => k.startsWith('proxy')).map(([, v]) => v);
        const sample: H2Sample = {
          scenario: t.scenario,
          target: t.id,
          rep,
          requests: done,
          seconds: r.seconds,
          rps: Math.round(r.rps),
          p50Ms: r.latency!.p50Ms,
          p99Ms: r.latency!.p99Ms,
          meanMs: r.latencyMs.mean,
          non2xx: r.status['3xx'] + r.status['4xx'] + r.status['5xx'],
          // h2load's "failed" also counts the non-2xx answers; "errored" (which includes timeouts) does not.
          failed: Math.max(r.requests.errored, n - done),
          missingBody: Math.max(0, r.status['2xx'] - Math.floor(r.bytes.data / OK_BODY_BYTES[t.scenario])),
          proxyUserUs: per(proxy.reduce((a, v) => a + v.userSec, 0)),
          proxySysUs: per(proxy.reduce((a, v) => a + v.sysSec, 0)),
          upstreamUs: per(cpu.roles.upstream!.userSec + cpu.roles.upstream!.sysSec),
          clientUs: per(cpu.roles.h2load!.userSec + cpu.roles.h2load!.sysSec),
          foreignCpus: cpu.foreignCpus,
          stealCpus: cpu.stealCpus,
          loadAverage1: cpu.loadAverage[0]!,
          disturbed: cpu.foreignCpus > DISTURBED_CPUS,
        };
        samples.push(sample);
        const errs = sample.non2xx + sample.failed + sample.missingBody;
        process.stderr.write(`h2: rep ${rep + 1}/${reps} ${t.scenario} ${t.id}: ${sample.rps} req/s, ${(sample.proxyUserUs + sample.proxySysUs).toFixed(1)} µs CPU/req (${sample.proxyUserUs.toFixed(1)} user + ${sample.proxySysUs.toFixed(1)} sys), p50 ${sample.p50Ms} ms, p99 ${sample.p99Ms} ms${errs ? `, ${errs} ERRORS (non-2xx ${sample.non2xx}, failed ${sample.failed}, without body ${sample.missingBody})` : ''}${sample.disturbed ? `, DISTURBED (${sample.foreignCpus} CPUs of other work)` : ''}\n`);
      }
    }
    for (const t of targets) await untilHealthy(t, auth, chain.proofHeader); // still serving correctly after the load
    for (const p of everyone) if (p.proc.proc.exitCode !== null) throw new Error(`${p.name} died during the run`);
  } finally {
    await group.close();
    removeStateDir(daemon);
    fs.rmSync(root, { recursive: true, force: true });
    if (pinned) pinSelf(`0-${cpuCount() - 1}`);
  }
  const summaries = summarizeH2(targets, samples);
  return {
    reps,
    durationSec,
    warmSec,
    clients: CLIENTS,
    streams: STREAMS,
    requestsPerRun,
    layout: pinned ? 'proxy under test on CPU 0 (cordon workers inherit it); h2load (1 thread), the upstream nginx, the grpc-js server and the harness on CPU 1' : 'unpinned (fewer than 2 CPUs)',
    request: {
      h2c: `GET ${SMALL_PATH} (${Buffer.byteLength(SMALL_BODY)}-byte body), h2c prior knowledge, header ${chain.headers.map((h) => h.slice(0, h.indexOf(':'))).join(', ')} (an HS256 JWT); upstream hop HTTP/1.1 keep-alive`,
      grpc: `unary ${GRPC_PATH}, a ${ECHO_MESSAGE.length}-byte protobuf message echoed by a @grpc/grpc-js server; headers content-type: application/grpc, te: trailers, authorization (the same JWT); upstream hop h2c`,
    },
    disturbedThresholdCpus: DISTURBED_CPUS,
    targets: targets.map(({ proxyPids: _p, port: _port, ...t }) => t),
    goals: H2_GOALS,
    samples,
    summaries,
    verdicts: h2Verdicts(summaries),
  };
}

export function summarizeH2(targets: Array<Pick<H2Target, 'id' | 'scenario' | 'label'>>, samples: H2Sample[]): H2Summary[] {
  const out: H2Summary[] = [];
  for (const t of targets) {
    const mine = samples.filter((s) => s.scenario === t.scenario && s.target === t.id);
    if (mine.length === 0) continue;
    const ref = samples.filter((s) => s.scenario === t.scenario && s.target === 'nginx');
    out.push({
      scenario: t.scenario,
      target: t.id,
      label: t.label,
      ...loadSpread(mine, t.id === 'direct' ? undefined : ref, 2),
      errors: mine.reduce((a, s) => a + s.non2xx + s.failed + s.missingBody, 0),
    });
  }
  return out;
}

/** The issue's goals: isomesh without plugins ≤ 2.5× nginx CPU/request, for h2c and for gRPC unary (default host mode). */
export function h2Verdicts(sum: H2Summary[]): Verdict[] {
  const out: Verdict[] = [];
  for (const [scenario, what, max] of [['h2c', 'h2c', H2_GOALS.h2cCpuVsNginx], ['grpc', 'gRPC unary', H2_GOALS.grpcCpuVsNginx]] as const) {
    const iso = sum.find((s) => s.scenario === scenario && s.target.startsWith('iso0-'));
    const nginx = sum.find((s) => s.scenario === scenario && s.target === 'nginx');
    if (iso?.cpuVsNginx === undefined || nginx === undefined || iso.cpuVsNginx.n === 0) continue;
    const r = iso.cpuVsNginx.median;
    const errors = iso.errors > 0 ? `; ${iso.errors} errors` : '';
    out.push({
      goal: `${what} without plugins: CPU/request ≤ ${max}× nginx (h2load -c ${CLIENTS} -m ${STREAMS}, one core)`,
      measured: `${r.toFixed(2)}× (${iso.cpuUs.median} vs ${nginx.cpuUs.median} µs; ${iso.rps.median} vs ${nginx.rps.median} req/s${errors})`,
      // A run that lost requests is not a result to be judged on its CPU figure.
      met: iso.errors > 0 ? false : r <= max,
      ...(r > max ? { by: `${((r / max - 1) * 100).toFixed(0)} % over the goal` } : iso.errors > 0 ? { by: `${iso.errors} failed requests` } : {}),
    });
  }
  return out;
}
