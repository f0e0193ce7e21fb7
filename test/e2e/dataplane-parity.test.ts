// One table of plugin cases, run against both data planes of one real daemon: the built-in proxy
// through the tenant listener, and Envoy's path — the rate-limit service, then an ext_proc stream, then
// the router — through the daemon's gRPC unix socket, with a client that drives both services exactly
// as Envoy's ratelimit and ext_proc filters do (runtime/src/xds/ext-proc-client.ts). Each case must
// give the same client-visible result and the same upstream request on both.
import assert from 'node:assert/strict';
import http from 'node:http';
import type net from 'node:net';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { processRequest, extProcClient, type UpstreamSeen } from '../../runtime/src/xds/ext-proc-client.ts';
import { envoyProtos } from '../../runtime/src/xds/index.ts';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';
import { request } from '../support/http.ts';

interface Case {
  name: string;
  plugins: Array<{ name: string; source: string; failurePolicy?: 'closed' | 'open' }>;
  rateLimit?: unknown;
  /** Requests sent in order; the last one's result is compared. */
  requests: number;
  method?: string;
  headers?: Record<string, string>;
  body?: string;
  /** Request headers compared at the upstream, response headers compared at the client. */
  upstreamHeaders: string[];
  responseHeaders: string[];
  expect: (r: Result) => void;
}

interface Result {
  status: number;
  headers: Record<string, string | undefined>;
  /** The upstream's view (service, compared headers, body), or the isomesh/plugin answer's body. */
  upstream?: { service: string; headers: Record<string, string | undefined>; body: string };
  body?: string;
}

const P = (name: string, source: string, failurePolicy?: 'closed' | 'open') => ({ name, source, ...(failurePolicy ? { failurePolicy } : {}) });

const CASES: Case[] = [
  {
    name: 'header set / append / remove',
    plugins: [P('hdr', `export default { onRequest(req) { req.headers.set('x-set', 'one'); req.headers.append('accept', 'text/html'); req.headers.delete('x-remove'); },
      onResponse(res) { res.headers.set('x-served-by', 'isomesh'); } };`)],
    requests: 1,
    headers: { accept: 'application/json', 'x-remove': 'gone' },
    upstreamHeaders: ['x-set', 'accept', 'x-remove'],
    responseHeaders: ['x-served-by', 'x-isomesh-error'],
    expect: (r) => {
      assert.equal(r.status, 200);
      assert.equal(r.upstream?.service, 'web');
      assert.deepEqual(r.upstream?.headers, { 'x-set': 'one', accept: 'application/json, text/html', 'x-remove': undefined });
      assert.equal(r.headers['x-served-by'], 'isomesh');
    },
  },
  {
    name: 'response header edits from onRequest (ctx.responseHeaders), onResponse skipped',
    plugins: [
      P('edits', `export default { onRequest(req, ctx) { ctx.responseHeaders.set('x-limit', '10'); ctx.responseHeaders.append('x-trace', ctx.requestId.length > 0 ? 'a' : ''); ctx.skipOnResponse(); },
        onResponse(res) { res.headers.set('x-skipped', 'no'); } };`),
      P('reader', `export default { onResponse(res) { res.headers.set('x-seen', res.headers.get('x-limit') ?? 'none'); } };`),
    ],
    requests: 1,
    upstreamHeaders: ['x-limit'],
    responseHeaders: ['x-limit', 'x-trace', 'x-skipped', 'x-seen', 'x-isomesh-error'],
    expect: (r) => {
      assert.equal(r.status, 200);
      assert.equal(r.upstream?.headers['x-limit'], undefined, 'edits are for the response only');
      assert.equal(r.headers['x-limit'], '10');
      assert.equal(r.headers['x-trace'], 'a');
      assert.equal(r.headers['x-skipped'], undefined);
      assert.equal(r.headers['x-seen'], '10', 'onResponse hooks left see the edited response');
    },
  },
  {
    name: 'respond 401',
    plugins: [P('auth', `export default { onRequest(req, ctx) { if (!req.headers.get('authorization')) return ctx.respond(401, { headers: { 'www-authenticate': 'Bearer' }, body: 'no token' }); } };`)],
    requests: 1,
    upstreamHeaders: [],
    responseHeaders: ['www-authenticate', 'x-isomesh-error'],
    expect: (r) => {
      assert.equal(r.status, 401);
      assert.equal(r.body, 'no token');
      assert.equal(r.headers['www-authenticate'], 'Bearer');
      assert.equal(r.upstream, undefined);
    },
  },
  {
    name: 'respond 403',
    plugins: [P('deny', `export default { onRequest(req, ctx) { return ctx.respond(403, { body: 'blocked' }); } };`)],
    requests: 1,
    upstreamHeaders: [],
    responseHeaders: ['x-isomesh-error'],
    expect: (r) => {
      assert.equal(r.status, 403);
      assert.equal(r.body, 'blocked');
    },
  },
  {
    name: 'route to another service',
    plugins: [P('router', `export default { onRequest(req, ctx) { if (req.headers.get('x-canary') === '1') ctx.route('canary'); } };`)],
    requests: 1,
    headers: { 'x-canary': '1' },
    upstreamHeaders: ['x-canary', 'x-isomesh-upstream'],
    responseHeaders: ['x-isomesh-error'],
    expect: (r) => {
      assert.equal(r.status, 200);
      assert.equal(r.upstream?.service, 'canary');
      assert.deepEqual(r.upstream?.headers, { 'x-canary': '1', 'x-isomesh-upstream': undefined }, 'the routing header never reaches the upstream');
    },
  },
  {
    name: 'body replace',
    plugins: [P('body', `import { definePlugin } from '@isomesh/sdk';
      export default definePlugin({ body: { request: 1024 }, async onRequest(req) { req.setBody('[' + (await req.text()) + ']'); } });`)],
    requests: 1,
    method: 'POST',
    body: 'hello',
    headers: { 'content-type': 'text/plain' },
    upstreamHeaders: ['content-length'],
    responseHeaders: ['x-isomesh-error'],
    expect: (r) => {
      assert.equal(r.status, 200);
      assert.equal(r.upstream?.body, '[hello]');
      assert.equal(r.upstream?.headers['content-length'], '7');
    },
  },
  {
    name: 'failure, closed policy',
    plugins: [P('bad', `export default { onRequest() { throw new Error('kaboom'); } };`, 'closed'), P('tag', `export default { onRequest(req) { req.headers.set('x-tag', '1'); } };`)],
    requests: 1,
    upstreamHeaders: [],
    responseHeaders: ['x-isomesh-error', 'content-type'],
    expect: (r) => {
      assert.equal(r.status, 503);
      assert.equal(r.headers['x-isomesh-error'], 'ISOMESH_ERR_PLUGIN_THREW');
      assert.equal(r.headers['content-type'], 'application/json');
      assert.equal(JSON.parse(r.body!).error.code, 'ISOMESH_ERR_PLUGIN_THREW');
    },
  },
  {
    name: 'failure, open policy',
    plugins: [P('bad', `export default { onRequest() { throw new Error('kaboom'); } };`, 'open'), P('tag', `export default { onRequest(req) { req.headers.set('x-tag', '1'); } };`)],
    requests: 1,
    upstreamHeaders: ['x-tag'],
    responseHeaders: ['x-isomesh-error'],
    expect: (r) => {
      assert.equal(r.status, 200);
      assert.deepEqual(r.upstream?.headers, { 'x-tag': '1' });
    },
  },
  {
    name: 'rate limit over',
    plugins: [P('tag', `export default { onRequest(req) { req.headers.set('x-tag', '1'); } };`)],
    // a day's window: no test run straddles its end
    rateLimit: { descriptors: [{ key: 'header:x-user' }], limit: { requestsPerUnit: 1, unit: 'day' } },
    requests: 2,
    upstreamHeaders: [],
    responseHeaders: ['x-isomesh-error', 'content-type'],
    expect: (r) => {
      assert.equal(r.status, 429);
      assert.equal(r.headers['x-isomesh-error'], 'ISOMESH_ERR_RATELIMIT_OVER');
      assert.equal(JSON.parse(r.body!).error.code, 'ISOMESH_ERR_RATELIMIT_OVER');
    },
  },
];

// ---- upstreams: echo the request (service, headers, body) ---------------------------------------

interface Echo {
  port: number;
  close(): Promise<void>;
}

async function echo(service: string): Promise<Echo> {
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = JSON.stringify({ service, headers: req.headers, body: Buffer.concat(chunks).toString() });
      res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': service }).end(body);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))),
  };
}

let d: TestDaemon;
const upstreams: Record<string, Echo> = {};
let client: grpc.Client;
let rls: grpc.Client;
const ports: Record<string, number> = {};

before(async () => {
  upstreams.web = await echo('web');
  upstreams.canary = await echo('canary');
  d = await startDaemon();
  const socket = `unix:${path.join(d.stateDir, 'grpc.sock')}`;
  client = extProcClient(socket);
  const Rls = grpc.makeGenericClientConstructor(envoyProtos().service('envoy.service.ratelimit.v3.RateLimitService'), 'RLS');
  rls = new Rls(socket, grpc.credentials.createInsecure());
  for (const [i, c] of CASES.entries()) {
    const t = `parity-${i}`;
    const put = async (p: string, body: unknown, status = [200, 201]) => {
      const r = await d.api('PUT', `/v1/tenants/${t}${p}`, body);
      assert.ok(status.includes(r.status), `${p}: ${r.status} ${JSON.stringify(r.body)}`);
      return r.body;
    };
    ports[t] = (await put('', {})).listenerPort;
    for (const s of ['web', 'canary']) await put(`/services/${s}`, { endpoints: [{ address: '127.0.0.1', port: upstreams[s]!.port }] });
    await put('/routes/api', { match: { pathPrefix: '/' }, to: { service: 'web' } });
    if (c.rateLimit) await put('/ratelimits/per-user', c.rateLimit);
    for (const p of c.plugins) {
      const pub = await d.api('POST', `/v1/tenants/${t}/plugins/${p.name}/versions`, { source: p.source, language: 'typescript' });
      assert.equal(pub.status, 201, JSON.stringify(pub.body));
      await put(`/plugins/${p.name}/active`, { version: pub.body.version });
    }
    await put('/chain', c.plugins.map((p) => ({ plugin: p.name, failurePolicy: p.failurePolicy ?? 'closed' })));
    await settled(t);
  }
});

after(async () => {
  client?.close();
  rls?.close();
  await d?.stop();
  for (const u of Object.values(upstreams)) await u.close();
});

/** The daemon applies a commit right after it (xDS and the plugin host in one step): wait for it. */
async function settled(tenant: string): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const want = (await d.api('GET', `/v1/tenants/${tenant}`)).body.generation;
    const xds = (await d.api('GET', '/v1/xds')).body;
    if (xds.tenants?.[tenant]?.generation === want) return;
    await sleep(10);
  }
  throw new Error(`tenant ${tenant} was not applied`);
}

const pick = (get: (n: string) => string | undefined, names: string[]) => Object.fromEntries(names.map((n) => [n, get(n)]));

function fromUpstreamBody(body: string, c: Case): Result['upstream'] {
  const seen = JSON.parse(body) as { service: string; headers: Record<string, string>; body: string };
  return { service: seen.service, headers: pick((n) => seen.headers[n], c.upstreamHeaders), body: seen.body };
}

function userFor(plane: string): Record<string, string> {
  return { 'x-user': `user-${plane}` }; // the planes share the counters: each counts its own user
}

async function viaBuiltin(t: string, c: Case): Promise<Result> {
  let res!: Awaited<ReturnType<typeof request>>;
  for (let i = 0; i < c.requests; i++) {
    res = await request(ports[t]!, '/api/x', { method: c.method ?? 'GET', headers: { ...c.headers, ...userFor('builtin') }, ...(c.body ? { body: c.body } : {}) });
  }
  const get = (n: string) => {
    const v = res.headers[n];
    return Array.isArray(v) ? v.join(', ') : v;
  };
  const out: Result = { status: res.status, headers: pick(get, c.responseHeaders) };
  if (res.headers['x-upstream'] !== undefined) out.upstream = fromUpstreamBody(res.body, c);
  else out.body = res.body;
  return out;
}

/** Envoy's ratelimit filter: descriptors from the route's rate_limits actions; OVER_LIMIT → local 429. */
async function envoyRateLimit(t: string, c: Case, headers: Record<string, string>): Promise<Result | undefined> {
  if (!c.rateLimit) return undefined;
  const user = headers['x-user'];
  if (user === undefined) return undefined;
  const res: any = await new Promise((resolve, reject) =>
    (rls as any).ShouldRateLimit({ domain: t, descriptors: [{ entries: [{ key: 'header:x-user', value: user }] }] }, (err: Error | null, r: unknown) => (err ? reject(err) : resolve(r))),
  );
  if (res.overall_code !== 'OVER_LIMIT') return undefined;
  const added = Object.fromEntries((res.response_headers_to_add ?? []).map((h: any) => [h.key, h.value]));
  return { status: 429, headers: pick((n) => added[n], c.responseHeaders), body: Buffer.from(res.raw_body ?? []).toString() };
}

/** The router: the request ext_proc let through, to the chosen service's endpoint. */
function route(seen: UpstreamSeen): Promise<{ status: number; headers: Array<[string, string]>; body: Buffer }> {
  const service = seen.cluster === 'route' ? 'web' : seen.cluster.upstream;
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = {};
    for (const [n, v] of seen.headers) headers[n] = headers[n] === undefined ? v : `${headers[n]}, ${v}`;
    const req = http.request({ host: '127.0.0.1', port: upstreams[service]!.port, method: seen.method, path: seen.path, headers: { ...headers, host: seen.authority }, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (b: Buffer) => chunks.push(b));
      res.on('end', () => {
        const hs: Array<[string, string]> = [];
        for (let i = 0; i < res.rawHeaders.length; i += 2) hs.push([res.rawHeaders[i]!.toLowerCase(), res.rawHeaders[i + 1]!]);
        resolve({ status: res.statusCode ?? 0, headers: hs, body: Buffer.concat(chunks) });
      });
    });
    req.on('error', reject);
    req.end(seen.body);
  });
}

async function viaEnvoy(t: string, c: Case): Promise<Result> {
  const headers: Record<string, string> = { ...c.headers, ...userFor('envoy') };
  let last!: Result;
  for (let i = 0; i < c.requests; i++) {
    const limited = await envoyRateLimit(t, c, headers);
    if (limited) {
      last = limited;
      continue;
    }
    // what Envoy's HCM forwards to its filters: the client's headers plus x-forwarded-*, x-request-id
    const list: Array<[string, string]> = [...Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v] as [string, string]),
      ['x-forwarded-for', '127.0.0.1'], ['x-forwarded-proto', 'http'], ['x-request-id', crypto.randomUUID()]];
    if (c.body) list.push(['content-length', String(Buffer.byteLength(c.body))]);
    const out = await processRequest(client, { method: c.method ?? 'GET', path: '/api/x', authority: `127.0.0.1:${ports[t]}`, headers: list, ...(c.body ? { body: Buffer.from(c.body) } : {}) }, {
      tenant: t,
      route: 'api',
      service: 'web',
      mode: { responseHeaders: true },
      allowModeOverride: true,
      upstream: route,
    });
    if (out.kind === 'error') throw new Error(`ext_proc failed: ${out.message}`);
    const r = out.response;
    const get = (n: string) => {
      const vs = r.headers.filter(([k]) => k === n).map(([, v]) => v);
      return vs.length === 0 ? undefined : vs.join(', ');
    };
    last = { status: r.status, headers: pick(get, c.responseHeaders) };
    if (out.kind === 'proxied' && get('x-upstream') !== undefined) last.upstream = fromUpstreamBody(r.body.toString(), c);
    else last.body = r.body.toString();
  }
  return last;
}

for (const [i, c] of CASES.entries()) {
  test(`parity: ${c.name} — the built-in proxy and Envoy (RLS + ext_proc) give the same result`, async () => {
    const t = `parity-${i}`;
    const builtin = await viaBuiltin(t, c);
    const envoy = await viaEnvoy(t, c);
    c.expect(builtin);
    assert.deepEqual(envoy, builtin);
  });
}
