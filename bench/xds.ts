// `xds`: the control plane at scale — 1,000 tenants × 10 routes × 5 endpoints (10 services per tenant,
// two of them gRPC): 10,000 clusters and assignments, 1,000 listeners and route configurations for
// Envoy, plus 2,000 api_listeners for proxyless clients.
//  - full push: from the first TenantConfig to every one of 10 subscribed Envoy-style SotW clients
//    holding (and having ACKed) all four types — build (translate, validate, encode) included;
//  - single change: one route of one tenant changes → the RouteConfiguration reaches a subscribed
//    client (p50 over repeats, each after the previous was ACKed), for SotW and Delta clients;
//  - memory: the control plane's heap and RSS once everything is pushed.
// The clients run in this process on the same loopback gRPC server the daemon uses; they read only
// each response's header fields (version, nonce, count), as a fast client would, so the numbers are the
// control plane's. Goals (issue "Envoy mode"): full push ≤ 1 s, single change ≤ 50 ms p50, ≤ 200 MB.
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { Registry } from 'prom-client';
import type { Route, Service, TenantConfig } from '../runtime/src/store/model.ts';
import { GrpcServer, TYPE_URLS, XdsControlPlane, envoyProtos } from '../runtime/src/xds/index.ts';
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

/** Top-level fields of a (Delta)DiscoveryResponse, without decoding its resources. */
interface Header {
  version: string;
  typeUrl: string;
  nonce: string;
  count: number;
}

function readHeader(buf: Buffer, delta: boolean): Header {
  const h: Header = { version: '', typeUrl: '', nonce: '', count: 0 };
  let pos = 0;
  const varint = (): number => {
    let n = 0;
    let mul = 1;
    for (;;) {
      const b = buf[pos++]!;
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 128;
    }
  };
  while (pos < buf.length) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      varint();
      continue;
    }
    if (wire !== 2) throw new Error(`unexpected wire type ${wire}`);
    const len = varint();
    const s = (): string => buf.toString('utf8', pos, pos + len);
    if (field === 1) h.version = s();
    else if (field === 2) h.count++;
    else if (field === 4) h.typeUrl = s();
    else if (field === 5) h.nonce = s();
    else if (delta && field === 6) h.count++;
    pos += len;
  }
  return h;
}

const protos = envoyProtos();
const adsDef = protos.service('envoy.service.discovery.v3.AggregatedDiscoveryService');
const light: grpc.ServiceDefinition = {
  StreamAggregatedResources: { ...adsDef.StreamAggregatedResources!, responseDeserialize: (b: Buffer) => readHeader(b, false) },
  DeltaAggregatedResources: { ...adsDef.DeltaAggregatedResources!, responseDeserialize: (b: Buffer) => readHeader(b, true) },
};
const AdsClient = grpc.makeGenericClientConstructor(light, 'ADS');

/** An Envoy-style client: wildcard CDS/LDS, every EDS/RDS name; ACKs each response at once. */
class BenchClient {
  readonly #client: grpc.Client;
  readonly #call: grpc.ClientDuplexStream<object, Header>;
  readonly delta: boolean;
  /** Last version ACKed per type, and when. */
  readonly acked = new Map<string, { version: string; at: number; count: number }>();
  #waiters: Array<() => void> = [];

  constructor(target: string, id: string, delta: boolean, names: { eds: string[]; rds: string[] }) {
    this.delta = delta;
    // Envoy's defaults: no practical message size limit, 256 MiB HTTP/2 stream and connection windows
    this.#client = new AdsClient(target, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': 512 * 1024 * 1024, 'grpc-node.flow_control_window': 256 * 1024 * 1024 });
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${ADMIN}`);
    const method = delta ? 'DeltaAggregatedResources' : 'StreamAggregatedResources';
    this.#call = (this.#client as unknown as Record<string, (m: grpc.Metadata) => grpc.ClientDuplexStream<object, Header>>)[method]!(md);
    const node = { id, user_agent_name: 'envoy' };
    const subs: Record<string, string[]> = { [CDS]: ['*'], [EDS]: names.eds, [LDS]: ['*'], [RDS]: names.rds };
    this.#call.on('data', (h: Header) => {
      this.#call.write(delta ? { type_url: h.typeUrl, response_nonce: h.nonce } : { type_url: h.typeUrl, response_nonce: h.nonce, version_info: h.version, resource_names: subs[h.typeUrl] });
      this.acked.set(h.typeUrl, { version: h.version, at: performance.now(), count: h.count });
      for (const w of this.#waiters.splice(0)) w();
    });
    this.#call.on('error', () => {});
    for (const [typeUrl, names_] of Object.entries(subs)) {
      this.#call.write(delta ? { node, type_url: typeUrl, resource_names_subscribe: names_ } : { node, type_url: typeUrl, resource_names: names_ });
    }
  }

  /** Resolves when `pred` holds (checked after every response), rejecting after `timeoutMs`. */
  until(pred: () => boolean, timeoutMs: number): Promise<void> {
    if (pred()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('bench client: condition not reached in time')), timeoutMs);
      const check = () => {
        if (pred()) {
          clearTimeout(timer);
          resolve();
        } else this.#waiters.push(check);
      };
      this.#waiters.push(check);
    });
  }

  close(): void {
    this.#call.cancel();
    this.#client.close();
  }
}

const mib = (b: number) => round(b / 2 ** 20, 1);

export async function xdsBench(ctx: BenchContext): Promise<void> {
  const tenants = ctx.quick ? 200 : 1000;
  const repeats = ctx.quick ? 20 : 50;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-xds-'));
  const logger = pino({ level: 'silent' });
  const server = new GrpcServer({ tcp: { host: '127.0.0.1', port: 0 }, socketPath: path.join(dir, 'grpc.sock'), store: { resolveToken: () => undefined }, adminToken: ADMIN, logger });
  const cp = new XdsControlPlane({ grpc: server, logger, registry: new Registry(), listenAddresses: () => ['127.0.0.1'] });
  await server.start();
  const clients: BenchClient[] = [];
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
    for (let i = 0; i < 10; i++) clients.push(new BenchClient(target, `envoy-${i}`, false, names));
    await Promise.all(clients.map((c) => c.until(() => c.acked.size === 4, 10_000)));

    const t0 = performance.now();
    for (const cfg of configs) cp.apply(cfg);
    const built = performance.now();
    const snap = cp.snapshot('envoy', '*');
    const want = { [CDS]: snap.version('cluster'), [EDS]: snap.version('endpoint'), [LDS]: snap.version('listener'), [RDS]: snap.version('route') };
    const counts = { clusters: snap.count('cluster'), endpoints: snap.count('endpoint'), listeners: snap.count('listener'), routes: snap.count('route') };
    const done = (c: BenchClient) => Object.entries(want).every(([t, v]) => c.acked.get(t)?.version === v);
    await Promise.all(clients.map((c) => c.until(() => done(c), 120_000)));
    const pushed = Math.max(...clients.map((c) => Math.max(...[...c.acked.values()].map((a) => a.at))));
    const fullPushMs = pushed - t0;
    const buildMs = built - t0;
    if (snap.consistent().length > 0) throw new Error('snapshot not consistent');
    global.gc?.();
    const mem = process.memoryUsage();

    // single change: one route of one tenant; time until a client has the new RouteConfiguration
    const delta = new BenchClient(target, 'envoy-delta', true, names);
    clients.push(delta);
    await delta.until(() => [CDS, EDS, LDS, RDS].every((t) => delta.acked.has(t)) && delta.acked.get(RDS)!.count > 0, 120_000);
    const sotwLat: number[] = [];
    const deltaLat: number[] = [];
    const deltaCounts: number[] = [];
    for (let r = 1; r <= repeats; r++) {
      const i = (r * 37) % tenants;
      const before = { s: clients[0]!.acked.get(RDS)!.at, d: delta.acked.get(RDS)!.at };
      const start = performance.now();
      cp.apply(tenantConfig(i, r + 1, r));
      const v = cp.snapshot('envoy', '*').version('route');
      await clients[0]!.until(() => clients[0]!.acked.get(RDS)!.version === v && clients[0]!.acked.get(RDS)!.at > before.s, 10_000);
      await delta.until(() => delta.acked.get(RDS)!.version === v && delta.acked.get(RDS)!.at > before.d, 10_000);
      sotwLat.push(clients[0]!.acked.get(RDS)!.at - start);
      deltaLat.push(delta.acked.get(RDS)!.at - start);
      deltaCounts.push(delta.acked.get(RDS)!.count);
    }
    const s = roundSummary(summarize(sotwLat));
    const d = roundSummary(summarize(deltaLat));
    const ok = (v: number, goal: number) => (v <= goal ? 'ok' : 'MISSED');
    const heapMiB = mib(mem.heapUsed - base.heapUsed);
    const rssMiB = mib(mem.rss - base.rss);
    const json = {
      tenants, perTenant: { routes: 10, services: 10, endpointsPerService: 5 }, clients: 10, counts,
      buildMs: round(buildMs), fullPushMs: round(fullPushMs), change: { sotw: s, delta: d, resourcesPerDeltaPush: Math.max(...deltaCounts) },
      memory: { heapMiB, rssMiB, heapTotalMiB: mib(mem.heapUsed), rssTotalMiB: mib(mem.rss) }, goals: GOALS, meta: ctx.meta,
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
            ['build (translate + validate + encode, both flavors)', `${fmt(buildMs, 0)} ms`, '', ''],
            ['full push: first config → all 10 clients ACKed all 4 types', `${fmt(fullPushMs, 0)} ms`, `≤ ${GOALS.fullPushMs} ms`, ok(fullPushMs, GOALS.fullPushMs)],
            ['one route change → client has it (SotW, p50)', `${fmt(s.p50)} ms`, `≤ ${GOALS.changeP50Ms} ms`, ok(s.p50, GOALS.changeP50Ms)],
            ['one route change → client has it (Delta, p50)', `${fmt(d.p50)} ms`, `≤ ${GOALS.changeP50Ms} ms`, ok(d.p50, GOALS.changeP50Ms)],
            ['control-plane heap after the push (growth / total)', `${heapMiB} / ${mib(mem.heapUsed)} MiB`, `≤ ${GOALS.memoryMiB} MB`, ok(mib(mem.heapUsed), GOALS.memoryMiB)],
            ['process RSS after the push (growth / total)', `${rssMiB} / ${mib(mem.rss)} MiB`, '', ''],
          ],
          notes: [`A Delta push for one route change carried ${Math.max(...deltaCounts)} resource(s). Clients run in the same process (reading response headers only).`],
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
    for (const c of clients) c.close();
    cp.close();
    await server.stop(500);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
