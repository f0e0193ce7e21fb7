// ext_proc round trip for a 3-plugin chain, as Envoy pays it per request: open the stream, send
// request_headers, wait for the HeadersResponse (header mutations), close — on loopback, over the
// gRPC unix socket. The server (gRPC server + ExtProcServer + PluginHost) runs in a child process, as
// isomesh does beside Envoy; the client is grpc-js in this process, so the figures include a
// JavaScript gRPC client's cost that Envoy's C++ client does not have (an upper bound for Envoy).
// Also: the same chain called on the host directly (what the built-in proxy pays), and a
// request+response run (response_headers too, a plugin with onResponse).
// Run: node bench/ext-proc.ts   (BENCH_CALLS=n; writes bench/results/ext-proc.json and .md)

import { fork } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { Registry } from 'prom-client';
import { PluginHost, type HostMode } from '../runtime/src/host/index.ts';
import { DEFAULT_QUOTA, DEFAULT_TENANT_SETTINGS, type TenantConfig } from '../runtime/src/store/model.ts';
import { ExtProcServer, GrpcServer, envoyProtos } from '../runtime/src/xds/index.ts';

const CALLS = Number(process.env.BENCH_CALLS ?? 5000);
const WARMUP = 1000;
const CONC = 16;

const PLUGINS = {
  stamp: `export default { onRequest(req, ctx) { req.headers.set('x-tenant', ctx.tenant); } };`,
  auth: `export default { onRequest(req, ctx) { if (!req.headers.get('authorization')) return ctx.respond(401, { body: 'no token' }); } };`,
  tag: `export default { onRequest(req, ctx) { req.headers.append('x-tags', String(ctx.config.tag)); }, onResponse(res) { res.headers.set('x-served-by', 'isomesh'); } };`,
};

async function tenantConfig(host: PluginHost, name: string, withResponse: boolean): Promise<TenantConfig> {
  const plugins: TenantConfig['plugins'] = {};
  const chain: TenantConfig['chain'] = [];
  for (const [p, source] of Object.entries(PLUGINS)) {
    const src = !withResponse && p === 'tag' ? source.replace(/, onResponse\(res\) \{[^}]*\}/, '') : source;
    const c = await host.compile({ source: src, language: 'typescript', maxBundleBytes: 1 << 20 });
    plugins[p] = { name: p, active: { version: 1, digest: c.digest, code: c.code } };
    chain.push({ plugin: p, config: { tag: 'bench' }, failurePolicy: 'closed' });
  }
  return {
    name, listenerPort: 17000, quota: { ...DEFAULT_QUOTA, cpuMsPerRequest: 1000, cpuMsPerSecond: 0, requestsPerSecond: 0, maxConcurrentRequests: 0 },
    services: [], routes: [], chain, plugins, secrets: {}, settings: { ...DEFAULT_TENANT_SETTINGS }, rateLimits: [], generation: 1,
  };
}

// ---- the server process ------------------------------------------------------------------------

async function serve(mode: HostMode): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-bench-extproc-'));
  const logger = pino({ level: 'silent' });
  const host = new PluginHost({ logger, registry: new Registry(), mode });
  host.configure(await tenantConfig(host, 'req', false));
  host.configure(await tenantConfig(host, 'both', true));
  const server = new GrpcServer({ tcp: { host: '127.0.0.1', port: 0 }, socketPath: path.join(dir, 'grpc.sock'), store: { resolveToken: () => undefined }, adminToken: 'bench-admin-token-0123456789', logger });
  new ExtProcServer({ host, protos: envoyProtos(), logger }).register(server);
  await server.start();
  // the direct-host baseline runs here, in the server's process, where the host lives
  const direct = await directHost(host);
  process.send!({ socket: server.socketPath, direct });
  let cpu = process.cpuUsage();
  process.on('message', async (m) => {
    if (m === 'cpu-start') return void (cpu = process.cpuUsage());
    if (m === 'cpu-stop') {
      const d = process.cpuUsage(cpu);
      return void process.send!({ cpuMs: (d.user + d.system) / 1000 });
    }
    await server.stop(100);
    await host.close();
    fs.rmSync(dir, { recursive: true, force: true });
    process.exit(0);
  });
}

const HEADERS: Array<[string, string]> = [['accept', '*/*'], ['user-agent', 'bench'], ['authorization', 'Bearer t'], ['x-forwarded-for', '127.0.0.1'], ['x-forwarded-proto', 'http']];

async function directHost(host: PluginHost): Promise<Stats> {
  const req = { method: 'GET', path: '/api/users', query: '', host: 'svc', headers: HEADERS, remoteAddress: '127.0.0.1' };
  const one = async (i: number) => {
    const a = host.begin('req', `d${i}`);
    if (!a.ok) throw new Error(a.code);
    const out = await host.onRequest(a.run, req);
    host.end(a.run);
    if (out.action !== 'continue') throw new Error(JSON.stringify(out));
  };
  for (let i = 0; i < WARMUP; i++) await one(i);
  const lat: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    const t0 = performance.now();
    await one(i);
    lat.push(performance.now() - t0);
  }
  return stats(lat);
}

// ---- the client (Envoy's side) -----------------------------------------------------------------

interface Stats { p50: number; p90: number; p99: number; mean: number }

function stats(ms: number[]): Stats {
  const s = [...ms].sort((a, b) => a - b);
  const at = (p: number) => Number(s[Math.min(s.length - 1, Math.floor(p * s.length))]!.toFixed(4));
  return { p50: at(0.5), p90: at(0.9), p99: at(0.99), mean: Number((s.reduce((x, y) => x + y, 0) / s.length).toFixed(4)) };
}

const p = envoyProtos();
const Process = p.service('envoy.service.ext_proc.v3.ExternalProcessor').Process!;
const Client = grpc.makeGenericClientConstructor({ Process }, 'ExternalProcessor');
const headersMsg = (list: Array<[string, string]>) => ({ headers: list.map(([key, v]) => ({ key, raw_value: Buffer.from(v) })) });
const REQUEST = { request_headers: { headers: headersMsg([[':authority', 'svc'], [':path', '/api/users'], [':method', 'GET'], [':scheme', 'http'], ...HEADERS]), end_of_stream: true } };
const RESPONSE = { response_headers: { headers: headersMsg([[':status', '200'], ['content-type', 'text/plain'], ['content-length', '5']]), end_of_stream: false } };

function oneStream(client: grpc.Client, tenant: string, withResponse: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const md = new grpc.Metadata();
    md.set('x-isomesh-tenant', tenant);
    const call = (client as any).Process(md) as grpc.ClientDuplexStream<any, any>;
    let n = 0;
    call.on('data', (a: any) => {
      n++;
      if (a.immediate_response) return reject(new Error(JSON.stringify(a.immediate_response)));
      if (withResponse && n === 1) return void call.write(RESPONSE);
      call.end();
    });
    call.on('error', reject);
    call.on('end', () => (n === (withResponse ? 2 : 1) ? resolve() : reject(new Error(`stream ended after ${n} answers`))));
    call.write(REQUEST);
  });
}

async function sequential(client: grpc.Client, tenant: string, withResponse: boolean, warm = true): Promise<Stats> {
  if (warm) for (let i = 0; i < WARMUP; i++) await oneStream(client, tenant, withResponse);
  const lat: number[] = [];
  for (let i = 0; i < CALLS; i++) {
    const t0 = performance.now();
    await oneStream(client, tenant, withResponse);
    lat.push(performance.now() - t0);
  }
  return stats(lat);
}

async function concurrent(client: grpc.Client): Promise<{ concurrency: number; requestsPerSecond: number }> {
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: CONC }, async () => {
    while (next++ < CALLS) await oneStream(client, 'req', false);
  }));
  return { concurrency: CONC, requestsPerSecond: Math.round(CALLS / ((performance.now() - t0) / 1000)) };
}

async function run(mode: HostMode) {
  const child = fork(import.meta.filename, ['serve', mode], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const ready = await new Promise<{ socket: string; direct: Stats }>((r) => child.once('message', (m) => r(m as never)));
  const client = new Client(`unix:${ready.socket}`, grpc.credentials.createInsecure());
  const cpuOf = async (fn: () => Promise<unknown>): Promise<number> => {
    child.send('cpu-start');
    await fn();
    child.send('cpu-stop');
    const { cpuMs } = await new Promise<{ cpuMs: number }>((r) => child.once('message', (m) => r(m as never)));
    return Number(((cpuMs * 1000) / CALLS).toFixed(1));
  };
  let requestOnly!: Stats;
  // The server's CPU per request (gRPC stream + ext_proc + chain), apart from the client's.
  for (let i = 0; i < WARMUP; i++) await oneStream(client, 'req', false);
  const serverCpuUsPerRequest = await cpuOf(async () => (requestOnly = await sequential(client, 'req', false, false)));
  const requestAndResponse = await sequential(client, 'both', true);
  const throughput = await concurrent(client);
  client.close();
  child.send('stop');
  await new Promise((r) => child.once('exit', r));
  return { hostMode: mode, directHost: ready.direct, extProcRequestHeaders: requestOnly, serverCpuUsPerRequest, extProcRequestAndResponseHeaders: requestAndResponse, throughput };
}

if (process.argv[2] === 'serve') {
  await serve(process.argv[3] as HostMode);
} else {
  const results = { date: new Date().toISOString(), calls: CALLS, cpus: os.cpus().length, node: process.version, chain: Object.keys(PLUGINS), runs: [await run('inline'), await run('cordon')] };
  const out = path.join(import.meta.dirname, 'results');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'ext-proc.json'), `${JSON.stringify(results, null, 2)}\n`);
  const ms = (s: Stats) => `${s.p50.toFixed(3)} / ${s.p99.toFixed(3)}`;
  const md = [
    `# ext_proc round trip, 3-plugin chain (${results.date.slice(0, 10)}, ${results.cpus} CPUs, ${CALLS} calls, loopback unix socket, load ${os.loadavg()[0]!.toFixed(1)})`,
    '',
    '| host mode | host direct p50 / p99 ms | ext_proc request headers p50 / p99 ms | server CPU µs / request | ext_proc request + response headers p50 / p99 ms | ext_proc streams/s (16 in flight) |',
    '|---|---|---|---|---|---|',
    ...results.runs.map((r) => `| ${r.hostMode} | ${ms(r.directHost)} | ${ms(r.extProcRequestHeaders)} | ${r.serverCpuUsPerRequest} | ${ms(r.extProcRequestAndResponseHeaders)} | ${r.throughput.requestsPerSecond} |`),
    '',
  ].join('\n');
  fs.writeFileSync(path.join(out, 'ext-proc.md'), md);
  process.stdout.write(md);
}
