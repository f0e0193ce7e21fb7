// `xds`: the control plane at scale — 1,000 tenants × 10 routes × 5 endpoints (10 services per tenant,
// two of them gRPC): 10,000 clusters and assignments, 1,000 listeners and route configurations for
// Envoy, plus 2,000 api_listeners for proxyless clients.
//  - full push: from the first TenantConfig to every one of 10 subscribed Envoy-style SotW clients
//    holding (and having ACKed) all four types — build (translate, validate, encode) included;
//  - single change: one route of one tenant changes → the RouteConfiguration reaches a subscribed
//    client (p50 over repeats, each after the previous was ACKed), for SotW and Delta clients;
//  - memory: the control plane's heap and RSS once everything is pushed.
// The clients run in a child process (bench/lib/xds-clients.ts), as Envoys are other processes; they
// read only each response's header fields (version, nonce, count), as a fast client would.
// Goals (issue "Envoy mode"): full push ≤ 1 s, single change ≤ 50 ms p50, ≤ 200 MB.
import { fork, type ChildProcess } from 'node:child_process';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { Route, Service, TenantConfig } from '../runtime/src/store/model.ts';
import { GrpcServer, TYPE_URLS, XdsControlPlane } from '../runtime/src/xds/index.ts';
import { route, service, tenant } from '../runtime/src/xds/fixtures.ts';
import { writeReport } from './lib/report.ts';
import { fmt, round, roundSummary, summarize, type Summary } from './lib/stats.ts';
import type { BenchContext } from './run.ts';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const GOALS = { fullPushMs: 1000, changeP50Ms: 50, memoryMiB: 200 };
const ADMIN = 'bench-admin-token-0123456789';
const { listener: LDS, route: RDS, cluster: CDS, endpoint: EDS } = TYPE_URLS;

function tenantConfig(i: number, generation = 1, variant = 0): TenantConfig {
  const name = `t${String(i).padStart(4, '0')}`;
  const services: Service[] = [];
  const routes: Route[] = [];
  for (let s = 0; s < 10; s++) {
    services.push(service(`s${s}`, {
      protocol: s < 2 ? 'grpc' : 'http1',
      lb: s === 3 ? 'ring_hash' : s === 4 ? 'least_request' : 'round_robin',
      ...(s === 3 ? { hashOn: { header: 'x-user' } } : {}),
      vip: `10.${100 + Math.floor(i / 250)}.${i % 250}.${s + 1}:80`,
      endpoints: Array.from({ length: 5 }, (_, e) => ({ address: `10.${(i >> 8) & 255}.${i & 255}.${s * 10 + e + 1}`, port: 8000 + s, weight: e + 1 })),
      ...(s % 3 === 0 ? { retries: { attempts: 2, on: ['5xx', 'connect-failure'] as Array<'5xx' | 'connect-failure'> } } : {}),
      ...(s % 4 === 0 ? { circuitBreaker: { maxConnections: 1000, maxPending: 100, consecutive5xx: 5, ejectionMs: 30_000 } } : {}),
    }));
    routes.push(route(`r${s}`, {
      match: { pathPrefix: `/api/v${variant}/s${s}/`, ...(s % 5 === 0 ? { host: `s${s}.${name}.example.com` } : {}), ...(s === 7 ? { headers: [{ name: 'x-canary', exact: '1' }] } : {}) },
      to: s === 9 ? { weighted: [{ service: 's8', weight: 90 }, { service: 's9', weight: 10 }] } : { service: `s${s}` },
    }));
  }
  return tenant(name, { listenerPort: 20000 + i, services, routes, generation });
}

interface Ack {
  client: string;
  type: string;
  version: string;
  count: number;
  at: number;
}

/** The client processes (bench/lib/xds-clients.ts) and the ACKs they report. */
class Clients {
  readonly #proc: ChildProcess;
  /** Last ACK per client and type. */
  readonly acked = new Map<string, Map<string, Ack>>();
  #waiters: Array<() => void> = [];

  constructor() {
    this.#proc = fork(path.join(import.meta.dirname, 'lib/xds-clients.ts'), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    this.#proc.on('message', (m: { ack?: Ack }) => {
      if (!m.ack) return;
      let per = this.acked.get(m.ack.client);
      if (!per) this.acked.set(m.ack.client, (per = new Map()));
      per.set(m.ack.type, m.ack);
      for (const w of this.#waiters.splice(0)) w();
    });
  }

  open(target: string, names: { eds: string[]; rds: string[] }, clients: Array<{ id: string; delta: boolean }>): void {
    this.#proc.send({ op: 'open', target, token: ADMIN, names, clients });
  }

  ack(client: string, type: string): Ack | undefined {
    return this.acked.get(client)?.get(type);
  }

  /** Resolves when `pred` holds (checked after every ACK), rejecting after `timeoutMs`. */
  until(pred: () => boolean, timeoutMs: number): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('bench clients: condition not reached in time')), timeoutMs);
      const check = () => {
        if (!pred()) return void this.#waiters.push(check);
        clearTimeout(timer);
        resolve();
      };
      this.#waiters.push(check);
    });
  }

  async close(): Promise<void> {
    if (this.#proc.exitCode !== null) return;
    const exited = new Promise<void>((r) => this.#proc.once('exit', () => r()));
    this.#proc.send({ op: 'exit' });
    const timer = setTimeout(() => this.#proc.kill('SIGKILL'), 5000);
    await exited;
    clearTimeout(timer);
  }
}

const epochNow = () => performance.timeOrigin + performance.now();
const mib = (b: number) => round(b / 2 ** 20, 1);

export async function xdsBench(ctx: BenchContext): Promise<void> {
  const tenants = ctx.quick ? 200 : 1000;
  const repeats = ctx.quick ? 20 : 50;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-xds-'));
  const logger = pino({ level: 'silent' });
  const server = new GrpcServer({ tcp: { host: '127.0.0.1', port: 0 }, socketPath: path.join(dir, 'grpc.sock'), store: { resolveToken: () => undefined }, adminToken: ADMIN, logger });
  const cp = new XdsControlPlane({ grpc: server, logger, registry: new Registry(), listenAddresses: () => ['127.0.0.1'] });
  await server.start();
  const clients = new Clients();
  try {
    const target = `127.0.0.1:${server.tcpAddress.port}`;
    const configs = Array.from({ length: tenants }, (_, i) => tenantConfig(i));
    const names = {
      eds: configs.flatMap((c) => c.services.map((s) => `${c.name}/${s.name}`)),
      rds: configs.map((c) => `isomesh.${c.name}`),
    };
    global.gc?.();
    const base = process.memoryUsage();
    // 10 Envoy-style SotW clients, subscribed before anything exists
    const sotw = Array.from({ length: 10 }, (_, i) => `envoy-${i}`);
    clients.open(target, names, sotw.map((id) => ({ id, delta: false })));
    await clients.until(() => sotw.every((id) => clients.acked.get(id)?.size === 4), 20_000);

    const t0 = epochNow();
    const c0 = process.cpuUsage();
    for (const cfg of configs) cp.apply(cfg);
    const built = epochNow();
    const buildCpu = process.cpuUsage(c0);
    const snap = cp.snapshot('envoy', '*');
    const want: Record<string, string> = { [CDS]: snap.version('cluster'), [EDS]: snap.version('endpoint'), [LDS]: snap.version('listener'), [RDS]: snap.version('route') };
    const counts = { clusters: snap.count('cluster'), endpoints: snap.count('endpoint'), listeners: snap.count('listener'), routes: snap.count('route') };
    const done = (id: string) => Object.entries(want).every(([t, v]) => clients.ack(id, t)?.version === v);
    await clients.until(() => sotw.every(done), 300_000);
    const pushCpu = process.cpuUsage(c0);
    const pushed = Math.max(...sotw.flatMap((id) => [...clients.acked.get(id)!.values()].map((a) => a.at)));
    const fullPushMs = pushed - t0;
    const buildMs = built - t0;
    if (snap.consistent().length > 0) throw new Error('snapshot not consistent');
    global.gc?.();
    const mem = process.memoryUsage();

    // single change: one route of one tenant; time until a client holds the new RouteConfiguration
    clients.open(target, names, [{ id: 'envoy-delta', delta: true }]);
    await clients.until(() => [CDS, EDS, LDS, RDS].every((t) => clients.ack('envoy-delta', t)?.version === want[t]), 300_000);
    const sotwLat: number[] = [];
    const deltaLat: number[] = [];
    const deltaCounts: number[] = [];
    for (let r = 1; r <= repeats; r++) {
      const i = (r * 37) % tenants;
      const start = epochNow();
      cp.apply(tenantConfig(i, r + 1, r));
      const v = cp.snapshot('envoy', '*').version('route');
      const has = (id: string) => clients.ack(id, RDS)?.version === v;
      await clients.until(() => has('envoy-0') && has('envoy-delta'), 20_000);
      sotwLat.push(clients.ack('envoy-0', RDS)!.at - start);
      deltaLat.push(clients.ack('envoy-delta', RDS)!.at - start);
      deltaCounts.push(clients.ack('envoy-delta', RDS)!.count);
    }
    const s = roundSummary(summarize(sotwLat));
    const d = roundSummary(summarize(deltaLat));
    const ok = (v: number, goal: number) => (v <= goal ? 'ok' : 'MISSED');
    const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;
    const heapMiB = mib(mem.heapUsed - base.heapUsed);
    const dataMiB = mib(mem.heapUsed + mem.arrayBuffers - base.heapUsed - base.arrayBuffers);
    const rssMiB = mib(mem.rss - base.rss);
    const json = {
      tenants, perTenant: { routes: 10, services: 10, endpointsPerService: 5 }, clients: 10, counts,
      buildMs: round(buildMs), buildCpuMs: round(cpuMs(buildCpu)), fullPushMs: round(fullPushMs), fullPushCpuMs: round(cpuMs(pushCpu)),
      change: { sotw: s, delta: d, resourcesPerDeltaPush: Math.max(...deltaCounts) },
      memory: { heapGrowthMiB: heapMiB, heapAndBuffersMiB: mib(mem.heapUsed + mem.arrayBuffers), heapAndBuffersGrowthMiB: dataMiB, rssGrowthMiB: rssMiB, heapMiB: mib(mem.heapUsed), rssMiB: mib(mem.rss) }, goals: GOALS, meta: ctx.meta,
    };
    const row = (label: string, x: Summary) => [label, fmt(x.p50), fmt(x.p90), fmt(x.p99), fmt(x.max), String(x.count)];
    writeReport({
      name: 'xds',
      json,
      tables: [
        {
          title: `xDS control plane: ${tenants} tenants × 10 routes × 5 endpoints, 10 SotW clients`,
          columns: ['measure', 'value', 'goal', ''],
          rows: [
            ['resources (Envoy view)', `${counts.listeners} LDS, ${counts.routes} RDS, ${counts.clusters} CDS, ${counts.endpoints} EDS`, '', ''],
            ['build: translate + validate + encode (wall / control-plane CPU)', `${fmt(buildMs, 0)} / ${fmt(cpuMs(buildCpu), 0)} ms`, '', ''],
            ['full push: first config → all 10 clients ACKed all 4 types (wall / CPU)', `${fmt(fullPushMs, 0)} / ${fmt(cpuMs(pushCpu), 0)} ms`, `≤ ${GOALS.fullPushMs} ms`, ok(fullPushMs, GOALS.fullPushMs)],
            ['one route change → client has it (SotW, p50)', `${fmt(s.p50)} ms`, `≤ ${GOALS.changeP50Ms} ms`, ok(s.p50, GOALS.changeP50Ms)],
            ['one route change → client has it (Delta, p50)', `${fmt(d.p50)} ms`, `≤ ${GOALS.changeP50Ms} ms`, ok(d.p50, GOALS.changeP50Ms)],
            ['control-plane memory: JS heap + buffers after the push (total / growth)', `${mib(mem.heapUsed + mem.arrayBuffers)} / ${dataMiB} MiB`, `≤ ${GOALS.memoryMiB} MB`, ok(mib(mem.heapUsed + mem.arrayBuffers), GOALS.memoryMiB)],
            ['process RSS after the push (total / growth)', `${mib(mem.rss)} / ${rssMiB} MiB`, '', ''],
          ],
          notes: [
            `A Delta push for one route change carried ${Math.max(...deltaCounts)} resource(s). The clients run in a child process (bench/lib/xds-clients.ts).`,
            `Busy CPUs (other work) when the run started: ${ctx.meta.quietCheck?.busyCpus ?? 'not measured'} of ${os.cpus().length}.`,
          ],
        },
        { title: 'single route change → RouteConfiguration ACKed (ms)', columns: ['client', 'p50', 'p90', 'p99', 'max', 'n'], rows: [row('SotW', s), row('Delta', d)] },
      ],
      chart: {
        title: 'xDS: one route change reaches a client (ms)',
        unit: 'ms',
        groups: [{ label: 'SotW', bars: [{ series: 'p50', value: s.p50 }, { series: 'p99', value: s.p99 }] }, { label: 'Delta', bars: [{ series: 'p50', value: d.p50 }, { series: 'p99', value: d.p99 }] }],
        goal: { value: GOALS.changeP50Ms, label: 'goal p50' },
      },
    });
  } finally {
    await clients.close();
    cp.close();
    await server.stop(500);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
