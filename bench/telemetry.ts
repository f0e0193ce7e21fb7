// Cost of telemetry on the request path: trace() (new trace / continued traceparent) and finish()
// with export off (access log off / on) and on (a sampled request with two plugin calls, exported to a
// loopback OTLP collector that discards the bodies). For finish() with export on, both the synchronous
// cost the request path pays and the whole CPU per request (batching, protobuf encoding, HTTP to the
// collector, the collector's receive) are reported. All figures are CPU time, not wall time.
// Run: node bench/telemetry.ts  (writes bench/results/telemetry.json; BENCH_N sets the iterations)

import { mkdirSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import pino from 'pino';
import prom from 'prom-client';
import { exchangeRecord } from '../runtime/src/telemetry/fixtures.ts';
import { Telemetry } from '../runtime/src/telemetry/index.ts';
import { RESULTS_DIR } from './lib/report.ts';

const N = Number(process.env.BENCH_N ?? 200_000);
const ROUNDS = 5;
const PARENT = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01';
const nullLogger = pino({ level: 'info' }, { write() {} });

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

/** CPU time of this process in ns (user + system): unlike wall time, not inflated while other
 *  processes hold the cores (the project's machines run several benchmarks at once). */
function cpuNs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) * 1000;
}

/** CPU ns per call, median of ROUNDS rounds of n calls (after one warm-up round). */
function perCall(n: number, f: (i: number) => void): number {
  const rounds: number[] = [];
  for (let r = 0; r <= ROUNDS; r++) {
    const t0 = cpuNs();
    for (let i = 0; i < n; i++) f(i);
    const ns = (cpuNs() - t0) / n;
    if (r > 0) rounds.push(ns);
  }
  return median(rounds);
}

async function collector(): Promise<{ url: string; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeHead(200, { 'content-type': 'application/x-protobuf' });
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((r) => {
      server.closeAllConnections();
      server.close(() => r());
    }),
  };
}

async function exportOn(): Promise<{ syncNs: number; cpuNs: number; spans: number; dropped: number }> {
  const c = await collector();
  const registry = new prom.Registry();
  const t = Telemetry.fromEnv({ OTEL_EXPORTER_OTLP_ENDPOINT: c.url, OTEL_BSP_SCHEDULE_DELAY: '50' }, nullLogger, { registry });
  const counted = async (): Promise<number> => (await registry.getSingleMetric('isomesh_trace_spans_total')!.get()).values.reduce((a, v) => a + v.value, 0);
  const n = Math.min(N, 50_000);
  const chunk = 600; // 1800 spans: under the default queue of 2048, so nothing is dropped
  const records = Array.from({ length: chunk }, () => exchangeRecord(t.trace(PARENT, undefined)));
  let syncNs = 0;
  const cpu0 = cpuNs();
  const wall0 = process.hrtime.bigint();
  for (let done = 0; done < n; done += chunk) {
    const t0 = cpuNs();
    for (const r of records) t.finish(r, { enabled: false, sample: 1 });
    syncNs += cpuNs() - t0;
    const expected = (done + chunk) * 3;
    for (let i = 0; i < 1000 && (await counted()) < expected; i++) await new Promise((r) => setTimeout(r, 5));
  }
  const cpu = cpuNs() - cpu0;
  const wallMs = Number(process.hrtime.bigint() - wall0) / 1e6;
  await t.shutdown();
  await c.close();
  const m = (await registry.getSingleMetric('isomesh_trace_spans_total')!.get()).values;
  const total = Math.ceil(n / chunk) * chunk;
  console.error(`export on: ${total} requests in ${wallMs.toFixed(0)} ms`);
  return {
    syncNs: syncNs / total,
    cpuNs: cpu / total,
    spans: m.find((v) => v.labels.result === 'exported')?.value ?? 0,
    dropped: m.find((v) => v.labels.result === 'dropped')?.value ?? 0,
  };
}

const off = Telemetry.fromEnv({}, nullLogger);
let sink = 0;
const results = {
  date: new Date().toISOString(),
  node: process.version,
  iterations: N,
  traceNewNs: perCall(N, () => {
    sink += off.trace(undefined, undefined).traceparent.length;
  }),
  traceContinuedNs: perCall(N, () => {
    sink += off.trace(PARENT, 'rojo=00f067aa0ba902b7').traceparent.length;
  }),
  finishOffNoLogNs: 0,
  finishOffAccessLogNs: 0,
  exportOn: { syncNs: 0, cpuNs: 0, spans: 0, dropped: 0 },
};
const rec = exchangeRecord(off.trace(PARENT, undefined));
results.finishOffNoLogNs = perCall(N, () => off.finish(rec, { enabled: false, sample: 1 }));
results.finishOffAccessLogNs = perCall(Math.min(N, 50_000), () => off.finish(rec, { enabled: true, sample: 1 }));
results.exportOn = await exportOn();
if (sink === 0) throw new Error('unreachable: keeps the calls observable');

const us = (ns: number): string => (ns / 1000).toFixed(2);
const rows = [
  ['trace(), no traceparent (new trace)', us(results.traceNewNs)],
  ['trace(), valid traceparent + tracestate', us(results.traceContinuedNs)],
  ['finish(), export off, access log off', us(results.finishOffNoLogNs)],
  ['finish(), export off, access log on (pino to a null stream)', us(results.finishOffAccessLogNs)],
  ['finish(), export on, sampled, 2 plugin calls: on the request path', us(results.exportOn.syncNs)],
  ['… the same: all CPU per request (batching, protobuf, HTTP to a loopback collector)', us(results.exportOn.cpuNs)],
];
const md = `| operation | µs CPU per call |\n| --- | ---: |\n${rows.map((r) => `| ${r[0]} | ${r[1]} |`).join('\n')}\n`;
console.log(md);
console.log(`exported ${results.exportOn.spans} spans, dropped ${results.exportOn.dropped}`);
mkdirSync(RESULTS_DIR, { recursive: true });
writeFileSync(path.join(RESULTS_DIR, 'telemetry.json'), `${JSON.stringify(results, null, 2)}\n`);
writeFileSync(path.join(RESULTS_DIR, 'telemetry.md'), md);
