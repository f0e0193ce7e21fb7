// Telemetry through the real daemon (API.md "Telemetry"): W3C trace context toward the upstream, the
// per-tenant access log on stdout, and spans exported over OTLP/HTTP protobuf to a loopback collector
// (decoded with the OTLP protos) — the request span's id is the parent the upstream saw.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import protobuf from 'protobufjs';
import { ROOT, startDaemon, type TestDaemon } from '../support/daemon.ts';
import { echoed, request, startEcho, type EchoUpstream } from '../support/http.ts';

const root = new protobuf.Root();
root.resolvePath = (_o, target) => path.join(ROOT, 'test/support/opentelemetry-proto', target);
root.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto');
const ExportRequest = root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest');

interface Span { traceId: string; spanId: string; parentSpanId: string; name: string; attributes: Record<string, unknown> }

let d: TestDaemon;
let echo: EchoUpstream;
let port: number;
let collector: http.Server;
const spans: Span[] = [];

const TAG = `
import { definePlugin } from '@isomesh/sdk';
export default definePlugin({ onRequest(req) { req.headers.set('x-tagged', '1'); } });`;

before(async () => {
  collector = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const msg = ExportRequest.toObject(ExportRequest.decode(Buffer.concat(chunks)), { defaults: true, bytes: String }) as {
        resourceSpans: Array<{ scopeSpans: Array<{ spans: Array<{ traceId: string; spanId: string; parentSpanId: string; name: string; attributes: Array<{ key: string; value: Record<string, unknown> }> }> }> }>;
      };
      const hex = (b64: string): string => Buffer.from(b64, 'base64').toString('hex');
      for (const rs of msg.resourceSpans) for (const ss of rs.scopeSpans) for (const s of ss.spans) {
        spans.push({
          traceId: hex(s.traceId),
          spanId: hex(s.spanId),
          parentSpanId: hex(s.parentSpanId),
          name: s.name,
          attributes: Object.fromEntries(s.attributes.map((a) => [a.key, Object.values(a.value).find((v) => v !== undefined && v !== null && v !== '')])),
        });
      }
      res.writeHead(200, { 'content-type': 'application/x-protobuf' }).end();
    });
  });
  await new Promise<void>((r) => collector.listen(0, '127.0.0.1', r));
  echo = await startEcho('echo');
  d = await startDaemon({
    env: {
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(collector.address() as AddressInfo).port}`,
      OTEL_SERVICE_NAME: 'isomesh-test',
      OTEL_BSP_SCHEDULE_DELAY: '100',
      ISOMESH_LOG_LEVEL: 'warn',
    },
  });
  const t = await d.api('PUT', '/v1/tenants/shop', { accessLog: { enabled: true, sample: 1 } });
  assert.equal(t.status, 201, JSON.stringify(t.body));
  port = t.body.listenerPort;
  await d.api('PUT', '/v1/tenants/shop/services/echo', { endpoints: [{ address: '127.0.0.1', port: echo.port }] });
  await d.api('PUT', '/v1/tenants/shop/routes/all', { match: { pathPrefix: '/' }, to: { service: 'echo' } });
  const p = await d.api('POST', '/v1/tenants/shop/plugins/tag/versions', { source: TAG, language: 'typescript' });
  await d.api('PUT', '/v1/tenants/shop/plugins/tag/active', { version: p.body.version });
  await d.api('PUT', '/v1/tenants/shop/chain', [{ plugin: 'tag' }]);
  for (let i = 0; i < 100 && echoed(await request(port, '/warm')).headers['x-tagged'] !== '1'; i++) await sleep(20);
});

after(async () => {
  await d?.stop();
  await echo?.close();
  collector?.closeAllConnections();
  collector?.close();
});

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';
const PARENT = '00f067aa0ba902b7';

test('trace context continues toward the upstream; tracestate passes through; a new trace starts when absent', async () => {
  const res = await request(port, '/traced?x=1', { headers: { traceparent: `00-${TRACE}-${PARENT}-01`, tracestate: 'vendor=abc' } });
  const seen = echoed(res);
  const m = /^00-([0-9a-f]{32})-([0-9a-f]{16})-01$/.exec(seen.headers.traceparent ?? '');
  assert.ok(m, `upstream traceparent ${seen.headers.traceparent}`);
  assert.equal(m[1], TRACE, 'same trace');
  assert.notEqual(m[2], PARENT, 'our span is the upstream’s parent');
  assert.equal(seen.headers.tracestate, 'vendor=abc');
  const fresh = echoed(await request(port, '/untraced'));
  assert.match(fresh.headers.traceparent ?? '', /^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/);
  assert.notEqual(fresh.headers.traceparent?.slice(3, 35), TRACE);

  // Spans: the request span carries the id the upstream saw as its parent; the plugin call is its child.
  const deadline = Date.now() + 10_000;
  let req: Span | undefined;
  while (Date.now() < deadline) {
    req = spans.find((s) => s.traceId === TRACE && s.parentSpanId === PARENT);
    if (req !== undefined && spans.some((s) => s.parentSpanId === req!.spanId)) break;
    await sleep(50);
  }
  assert.ok(req, `request span exported (got ${spans.length} spans)`);
  assert.equal(req.spanId, m[2]);
  assert.equal(req.attributes['isomesh.tenant'], 'shop');
  assert.equal(req.attributes['http.request.method'], 'GET');
  assert.equal(req.attributes['url.path'], '/traced');
  const plugin = spans.find((s) => s.parentSpanId === req!.spanId);
  assert.ok(plugin, 'a plugin span');
  assert.equal(plugin.attributes['isomesh.plugin'], 'tag');
  assert.equal(plugin.traceId, TRACE);

  // The access log line of the traced request.
  const line = d.logs().split('\n').map((l) => { try { return JSON.parse(l); } catch { return undefined; } })
    .find((o) => o?.msg === 'access' && o.traceId === TRACE);
  assert.ok(line, 'access line written');
  for (const k of ['tenant', 'route', 'service', 'endpoint', 'method', 'path', 'protocol', 'status', 'bytesIn', 'bytesOut', 'durationMs', 'upstreamMs', 'pluginMs', 'retries', 'traceId', 'requestId']) {
    assert.ok(k in line, `access line has ${k}`);
  }
  assert.equal(line.tenant, 'shop');
  assert.equal(line.route, 'all');
  assert.equal(line.status, 200);
  assert.equal(line.path, '/traced');
  assert.equal(line.requestId, res.headers['x-request-id']);
  assert.ok(line.bytesOut > 0);
  assert.ok(line.pluginMs > 0);
});

test('access logging follows the tenant setting: off means no line', async () => {
  assert.equal((await d.api('PUT', '/v1/tenants/shop', { accessLog: { enabled: false } })).status, 200);
  await sleep(300);
  const id = `quiet-${Date.now()}`;
  await request(port, '/quiet', { headers: { 'x-request-id': id } });
  await sleep(200);
  assert.equal(d.logs().includes(id), false);
});
