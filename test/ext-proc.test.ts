// ext_proc driven over gRPC as Envoy's filter drives it (ext-proc-client.ts), against the real plugin
// host (chains, quotas, failure policies, a cordon crash) and against a scripted host for what the
// host cannot do yet on this branch (buffered bodies) and for the stream's own rules.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import type { Admission, ChainRun, HookRequest, HookResponse, PluginHostApi, RequestOutcome, ResponseOutcome } from '../runtime/src/host/contract.ts';
import { newHost, tenantConfig } from '../runtime/src/host/fixtures.ts';
import { processRequest, extProcClient, type EnvoyRequest, type Outcome } from '../runtime/src/xds/ext-proc-client.ts';
import { ExtProcServer } from '../runtime/src/xds/ext-proc.ts';
import { envoyProtos } from '../runtime/src/xds/protos.ts';
import { GrpcServer } from '../runtime/src/xds/server.ts';

const ADMIN = 'ext-proc-admin-token-0123456789';
const TENANT_TOKEN = 'tenant-token-0123456789abcdef';

async function startServer(host: PluginHostApi, maxStreams?: number) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-extproc-'));
  const server = new GrpcServer({
    tcp: { host: '127.0.0.1', port: 0 },
    socketPath: path.join(dir, 'grpc.sock'),
    store: { resolveToken: (t) => (t === TENANT_TOKEN ? { tenant: 'acme' } : undefined) },
    adminToken: ADMIN,
    logger: pino({ level: 'silent' }),
  });
  const ext = new ExtProcServer({ host, protos: envoyProtos(), logger: pino({ level: 'silent' }), ...(maxStreams ? { maxStreams } : {}) });
  ext.register(server);
  await server.start();
  const client = extProcClient(`unix:${server.socketPath}`);
  return {
    server,
    ext,
    client,
    async close() {
      client.close();
      await server.stop(100);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const GET: EnvoyRequest = { method: 'GET', path: '/api/x?q=1', authority: 'shop.local', headers: [['accept', '*/*'], ['x-request-id', 'rid-1'], ['x-forwarded-for', '127.0.0.9']] };
const echo = () => ({ status: 200, headers: [['content-type', 'text/plain'], ['x-up', '1']] as Array<[string, string]>, body: Buffer.from('hello') });

function header(list: Array<[string, string]>, name: string): string | undefined {
  return list.find(([n]) => n === name)?.[1];
}

// ---- the real plugin host ------------------------------------------------------------------------

const { host } = newHost();
const srv = await startServer(host);
test.after(async () => {
  await srv.close();
  await host.close();
});

async function configure(tenant: string, plugins: Parameters<typeof tenantConfig>[2], extra: Parameters<typeof tenantConfig>[3] = {}) {
  host.configure(await tenantConfig(host, tenant, plugins, { services: ['web', 'canary'], ...extra }));
}

test('ext_proc: header set/append/remove and the request facts the plugin sees (pseudo-headers, attributes, metadata)', async () => {
  await configure('hdr', [{
    name: 'h',
    source: `export default { onRequest(req, ctx) {
      req.headers.set('x-facts', [req.method, req.path, req.query, req.host, req.remoteAddress, req.route, req.service, ctx.requestId].join('|'));
      req.headers.append('accept', 'text/html');
      req.headers.delete('x-forwarded-for');
    } };`,
  }]);
  const out = await processRequest(srv.client, GET, { tenant: 'hdr', route: 'api', service: 'web', upstream: echo });
  assert.equal(out.kind, 'proxied', JSON.stringify(out));
  const seen = out.kind === 'proxied' ? out.upstream : undefined!;
  assert.equal(header(seen.headers, 'x-facts'), 'GET|/api/x|q=1|shop.local|127.0.0.1|api|web|rid-1');
  assert.deepEqual(seen.headers.filter(([n]) => n === 'accept').map(([, v]) => v), ['*/*', 'text/html']);
  assert.equal(header(seen.headers, 'x-forwarded-for'), undefined);
  assert.equal(seen.authority, 'shop.local');
  assert.equal(seen.cluster, 'route', 'no route choice: the route cache is kept');
});

test('ext_proc: ctx.route(service) sets the isomesh upstream header and clears the route cache; host changes go to :authority', async () => {
  await configure('rt', [{ name: 'r', source: `export default { onRequest(req, ctx) { if (req.headers.get('x-canary')) ctx.route('canary'); req.headers.set('host', 'rewritten.local'); } };` }]);
  const out = await processRequest(srv.client, { ...GET, headers: [...GET.headers, ['x-canary', '1']] }, { tenant: 'rt', service: 'web', upstream: echo });
  assert.equal(out.kind, 'proxied');
  assert.deepEqual(out.kind === 'proxied' && out.upstream.cluster, { upstream: 'canary' });
  assert.equal(out.kind === 'proxied' && out.upstream.authority, 'rewritten.local');
  const same = await processRequest(srv.client, GET, { tenant: 'rt', service: 'web', upstream: echo });
  assert.equal(same.kind === 'proxied' && same.upstream.cluster, 'route');
});

test('ext_proc: respond 401 → ImmediateResponse with the plugin headers and body; a gRPC request gets grpc_status 16', async () => {
  await configure('auth', [{ name: 'a', source: `export default { onRequest(req, ctx) { if (!req.headers.get('authorization')) return ctx.respond(401, { headers: { 'www-authenticate': 'Bearer' }, body: 'no token' }); } };` }]);
  const out = await processRequest(srv.client, GET, { tenant: 'auth', upstream: echo });
  assert.equal(out.kind, 'immediate');
  const r = out.kind === 'immediate' ? out.response : undefined!;
  assert.equal(r.status, 401);
  assert.equal(header(r.headers, 'www-authenticate'), 'Bearer');
  assert.equal(r.body.toString(), 'no token');
  assert.equal(r.grpcStatus, undefined);
  const g = await processRequest(srv.client, { ...GET, method: 'POST', headers: [['content-type', 'application/grpc']] }, { tenant: 'auth', upstream: echo });
  assert.equal(g.kind === 'immediate' && g.response.grpcStatus, 16);
  const ok = await processRequest(srv.client, { ...GET, headers: [['authorization', 'Bearer x']] }, { tenant: 'auth', upstream: echo });
  assert.equal(ok.kind, 'proxied');
});

test('ext_proc: a failing entry — closed → 503 x-isomesh-error (gRPC: 14 with the code in grpc-message), open → skipped', async () => {
  const THROW = `export default { onRequest() { throw new Error('kaboom'); } };`;
  const TAG = `export default { onRequest(req) { req.headers.set('x-after', '1'); } };`;
  await configure('fail-closed', [{ name: 'bad', source: THROW, failurePolicy: 'closed' }, { name: 'tag', source: TAG }]);
  await configure('fail-open', [{ name: 'bad', source: THROW, failurePolicy: 'open' }, { name: 'tag', source: TAG }]);
  const c = await processRequest(srv.client, GET, { tenant: 'fail-closed', upstream: echo });
  assert.equal(c.kind, 'immediate');
  const r = c.kind === 'immediate' ? c.response : undefined!;
  assert.equal(r.status, 503);
  assert.equal(header(r.headers, 'x-isomesh-error'), 'ISOMESH_ERR_PLUGIN_THREW');
  assert.equal(JSON.parse(r.body.toString()).error.code, 'ISOMESH_ERR_PLUGIN_THREW');
  const g = await processRequest(srv.client, { ...GET, headers: [['content-type', 'application/grpc+proto']] }, { tenant: 'fail-closed', upstream: echo });
  assert.equal(g.kind === 'immediate' && g.response.grpcStatus, 14);
  assert.match(g.kind === 'immediate' ? g.response.body.toString() : '', /^ISOMESH_ERR_PLUGIN_THREW: /);
  const o = await processRequest(srv.client, GET, { tenant: 'fail-open', upstream: echo });
  assert.equal(o.kind === 'proxied' && header(o.upstream.headers, 'x-after'), '1');
});

test('ext_proc: onResponse hooks — response headers and status changed; without response hooks mode_override skips the response', async () => {
  await configure('resp', [{ name: 'r', source: `export default { onResponse(res) { res.headers.set('x-served-by', 'isomesh'); res.headers.delete('x-up'); } };` }]);
  const out = await processRequest(srv.client, GET, { tenant: 'resp', mode: { responseHeaders: true }, upstream: echo });
  assert.equal(out.kind, 'proxied');
  const res = out.kind === 'proxied' ? out.response : undefined!;
  assert.equal(header(res.headers, 'x-served-by'), 'isomesh');
  assert.equal(header(res.headers, 'x-up'), undefined);
  assert.equal(res.body.toString(), 'hello');
  // a request-only chain asks Envoy not to send the response at all
  await configure('req-only', [{ name: 'q', source: `export default { onRequest(req) { req.headers.set('x-q', '1'); } };` }]);
  const skip = await processRequest(srv.client, GET, { tenant: 'req-only', mode: { responseHeaders: true }, allowModeOverride: true, upstream: () => ({ status: 200, headers: [['x-up', '1']], body: Buffer.alloc(0) }) });
  assert.equal(skip.kind === 'proxied' && header(skip.response.headers, 'x-up'), '1');
});

test('ext_proc: quota exhaustion answers 429 with retry-after; a stream holds its admission until it closes', async () => {
  await configure('rps', [{ name: 'q', source: `export default { onRequest() {} };` }], { quota: { requestsPerSecond: 1 } });
  const results: Outcome[] = [];
  for (let i = 0; i < 3; i++) results.push(await processRequest(srv.client, GET, { tenant: 'rps', upstream: echo }));
  const limited = results.filter((r) => r.kind === 'immediate' && r.response.status === 429);
  assert.ok(limited.length >= 1, 'a 1 rps bucket cannot admit three requests in a row');
  const r = limited[0]!.kind === 'immediate' ? limited[0]!.response : undefined!;
  assert.equal(header(r.headers, 'x-isomesh-error'), 'ISOMESH_ERR_QUOTA_RPS');
  assert.ok(Number(header(r.headers, 'retry-after')) >= 1);

  await configure('conc', [{ name: 'q', source: `export default { onRequest() {} };` }], { quota: { maxConcurrentRequests: 1 } });
  let release!: () => void;
  const held = new Promise<void>((r) => (release = r));
  // the first request waits in its upstream: its stream (and admission) stays open
  const first = processRequest(srv.client, GET, { tenant: 'conc', upstream: async () => (await held, echo()) });
  for (let i = 0; i < 100 && host.status('conc').usage.inFlight === 0; i++) await sleep(10);
  const second = await processRequest(srv.client, GET, { tenant: 'conc', upstream: echo });
  assert.equal(second.kind === 'immediate' && header(second.response.headers, 'x-isomesh-error'), 'ISOMESH_ERR_QUOTA_CONCURRENCY');
  release();
  assert.equal((await first).kind, 'proxied');
  for (let i = 0; i < 200 && host.status('conc').usage.inFlight > 0; i++) await sleep(10);
  assert.equal(host.status('conc').usage.inFlight, 0, 'end(run) ran when the stream closed');
  assert.equal((await processRequest(srv.client, GET, { tenant: 'conc', upstream: echo })).kind, 'proxied');
});

test('ext_proc: the cordon running the plugin crashes mid-call — closed → 503 ISOMESH_ERR_PLUGIN_CRASHED, open → the request continues', { skip: host.mode !== 'cordon' }, async () => {
  const LOOP = `export default { onRequest() { const end = Date.now() + 3000; while (Date.now() < end) {} } };`;
  for (const policy of ['closed', 'open'] as const) {
    const tenant = `crash-${policy}`;
    await configure(tenant, [{ name: 'spin', source: LOOP, failurePolicy: policy }], { quota: { cpuMsPerRequest: 10_000 } });
    const pending = processRequest(srv.client, GET, { tenant, upstream: echo });
    for (let i = 0; i < 300 && (host.status(tenant).usage.queuedCalls ?? 0) === 0; i++) await sleep(10);
    const pid = host.status(tenant).usage.placement?.pid;
    assert.ok(typeof pid === 'number' && pid > 0, 'the tenant runs in a cordon process');
    process.kill(pid, 'SIGKILL'); // a cordon this test's host started
    const out = await pending;
    // the cordon comes back (with back-off) before the next test uses the host
    for (let i = 0; i < 500 && host.cordons().some((c) => c.state !== 'up'); i++) await sleep(10);
    if (policy === 'closed') {
      assert.equal(out.kind, 'immediate', JSON.stringify(out));
      assert.equal(out.kind === 'immediate' && header(out.response.headers, 'x-isomesh-error'), 'ISOMESH_ERR_PLUGIN_CRASHED');
    } else {
      assert.equal(out.kind, 'proxied', JSON.stringify(out));
    }
  }
});

test('ext_proc: only the unix socket or the admin token; the tenant comes from the initial metadata', async () => {
  const tcp = `127.0.0.1:${srv.server.tcpAddress.port}`;
  await configure('who', [{ name: 'q', source: `export default { onRequest() {} };` }]);
  const call = async (metadata: Record<string, string>, tenant = 'who'): Promise<Outcome> => {
    const c = extProcClient(tcp);
    try {
      return await processRequest(c, GET, { tenant, metadata, upstream: echo });
    } finally {
      c.close();
    }
  };
  assert.match(JSON.stringify(await call({})), /UNAUTHENTICATED|unix socket or the admin token/);
  assert.match(JSON.stringify(await call({ authorization: `Bearer ${TENANT_TOKEN}` })), /PERMISSION_DENIED|only the unix socket/);
  assert.match(JSON.stringify(await call({ authorization: 'Bearer nope-nope-nope-nope' })), /invalid bearer token/);
  const admin = await call({ authorization: `Bearer ${ADMIN}` });
  assert.equal(admin.kind, 'proxied', JSON.stringify(admin));
  const unknown = await call({ authorization: `Bearer ${ADMIN}` }, 'nobody');
  assert.equal(unknown.kind === 'immediate' && header(unknown.response.headers, 'x-isomesh-error'), 'ISOMESH_ERR_PLUGIN_UNAVAILABLE');
});

// ---- a scripted host: bodies, ordering, bounds ---------------------------------------------------

class ScriptedHost implements PluginHostApi {
  begins = 0;
  ends = 0;
  requests: HookRequest[] = [];
  responses: HookResponse[] = [];
  reqLimit = 0;
  resLimit = 0;
  onReq: (req: HookRequest) => RequestOutcome | Promise<RequestOutcome> = (req) => ({ action: 'continue', headers: req.headers });
  onRes: (res: HookResponse) => ResponseOutcome | Promise<ResponseOutcome> = (res) => ({ action: 'continue', status: res.status, headers: res.headers });
  configure(): void {}
  removeTenant(): void {}
  begin(tenant: string, requestId: string): Admission {
    this.begins++;
    return { ok: true, run: { tenant, requestId } };
  }
  onRequest(_run: ChainRun, req: HookRequest): Promise<RequestOutcome> {
    this.requests.push(req);
    return Promise.resolve(this.onReq(req));
  }
  onResponse(_run: ChainRun, res: HookResponse): Promise<ResponseOutcome> {
    this.responses.push(res);
    return Promise.resolve(this.onRes(res));
  }
  end(): void {
    this.ends++;
  }
  hasResponseHooks(): boolean {
    return true;
  }
  bodyLimit(_run: ChainRun, phase: 'request' | 'response'): number {
    return phase === 'request' ? this.reqLimit : this.resLimit;
  }
  async close(): Promise<void> {}
}

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 500 && !cond(); i++) await sleep(5);
}

test('ext_proc, buffered bodies: the headers answer asks for the body; results (headers, body, content-length) come in the BodyResponse; over the limit → 413 / 502', async (t) => {
  const sh = new ScriptedHost();
  const s = await startServer(sh);
  t.after(() => s.close());
  sh.reqLimit = 64;
  sh.resLimit = 64;
  sh.onReq = (req) => ({ action: 'continue', headers: [...req.headers, ['x-len', String(req.body?.length)]], body: Buffer.from(`[${Buffer.from(req.body!).toString()}]`) });
  sh.onRes = (res) => ({ action: 'continue', status: 201, headers: res.headers, body: Buffer.from(Buffer.from(res.body!).toString().toUpperCase()) });
  const post: EnvoyRequest = { method: 'POST', path: '/p', authority: 'a', headers: [['content-length', '5']], body: Buffer.from('hello') };
  // the filter's static mode sends no bodies: only mode_override can ask for them
  const out = await processRequest(s.client, post, { tenant: 't', allowModeOverride: true, mode: { responseHeaders: true }, upstream: (seen) => ({ status: 200, headers: [['content-length', String(seen.body.length)]], body: seen.body }) });
  assert.equal(out.kind, 'proxied', JSON.stringify(out));
  if (out.kind !== 'proxied') return;
  assert.equal(out.upstream.body.toString(), '[hello]');
  assert.equal(header(out.upstream.headers, 'content-length'), '7');
  assert.equal(header(out.upstream.headers, 'x-len'), '5');
  assert.equal(out.response.status, 201);
  assert.equal(out.response.body.toString(), '[HELLO]');
  assert.equal(header(out.response.headers, 'content-length'), '7');

  const big: EnvoyRequest = { ...post, headers: [], body: Buffer.alloc(65, 'x') };
  const tooBig = await processRequest(s.client, big, { tenant: 't', allowModeOverride: true, upstream: echo });
  assert.equal(tooBig.kind === 'immediate' && tooBig.response.status, 413);
  assert.equal(tooBig.kind === 'immediate' && header(tooBig.response.headers, 'x-isomesh-error'), 'ISOMESH_ERR_PROXY_BODY_TOO_LARGE');
  const byLength = await processRequest(s.client, { ...post, headers: [['content-length', '999']] }, { tenant: 't', allowModeOverride: true, upstream: echo });
  assert.equal(byLength.kind === 'immediate' && byLength.response.status, 413, 'refused from content-length before the body is read');
  sh.onReq = (req) => ({ action: 'continue', headers: req.headers });
  const resBig = await processRequest(s.client, post, { tenant: 't', allowModeOverride: true, mode: { responseHeaders: true }, upstream: () => ({ status: 200, headers: [], body: Buffer.alloc(100) }) });
  assert.equal(resBig.kind === 'immediate' && resBig.response.status, 502);
  assert.equal(resBig.kind === 'immediate' && header(resBig.response.headers, 'x-isomesh-error'), 'ISOMESH_ERR_UPSTREAM_BODY_TOO_LARGE');
  await waitFor(() => sh.ends === sh.begins);
  assert.equal(sh.ends, sh.begins, 'end once per admitted stream');
});

test('ext_proc, stream rules: out-of-order messages fail closed; the stream cap; end() once even when Envoy cancels mid-hook', async (t) => {
  const sh = new ScriptedHost();
  const s = await startServer(sh, 2);
  t.after(() => s.close());
  const P = envoyProtos().service('envoy.service.ext_proc.v3.ExternalProcessor').Process!;
  const open = () => {
    const md = new grpc.Metadata();
    md.set('x-isomesh-tenant', 't');
    const call = (s.client as any).Process(md) as grpc.ClientDuplexStream<any, any>;
    const answers: any[] = [];
    call.on('data', (a) => answers.push(a));
    call.on('error', () => {});
    return { call, answers };
  };
  assert.ok(P.requestStream);
  // response headers before the request → ImmediateResponse 500, never a pass-through
  const a = open();
  a.call.write({ response_headers: { headers: { headers: [{ key: ':status', raw_value: Buffer.from('200') }] } } });
  await waitFor(() => a.answers.length > 0);
  assert.equal(a.answers[0].immediate_response?.status?.code, 'InternalServerError', 'HTTP 500');
  assert.match(a.answers[0].immediate_response.details, /EXTPROC_PROTOCOL/);
  a.call.end();

  // a hook that never settles until released; Envoy gives up (cancels) meanwhile
  const pending: Array<() => void> = [];
  const release = () => pending.splice(0).forEach((r) => r());
  sh.onReq = (req) => new Promise((r) => pending.push(() => r({ action: 'continue', headers: req.headers })));
  const b = open();
  b.call.write({ request_headers: { headers: { headers: [{ key: ':path', raw_value: Buffer.from('/') }] }, end_of_stream: true } });
  await waitFor(() => sh.requests.length > 0);
  // the cap is 2: b is open, c fits, d is refused
  const c = open();
  const d = open();
  for (const x of [c, d]) x.call.write({ request_headers: { headers: { headers: [{ key: ':path', raw_value: Buffer.from('/') }] }, end_of_stream: true } });
  await waitFor(() => d.answers.length > 0);
  assert.match(d.answers[0].immediate_response?.details ?? '', /EXTPROC_OVERLOADED/);
  const endsBefore = sh.ends;
  b.call.cancel();
  await sleep(50);
  assert.equal(sh.ends, endsBefore, 'no end() while the hook is pending');
  release();
  await waitFor(() => sh.ends > endsBefore);
  assert.equal(sh.ends, endsBefore + 1, 'the cancelled stream ended its run once the hook settled');
  await waitFor(() => c.answers.length > 0);
  assert.ok(c.answers[0].request_headers, 'the stream under the cap was served');
  for (const x of [c, d]) x.call.end();
  await waitFor(() => s.ext.activeStreams === 0);
  assert.equal(s.ext.activeStreams, 0);
  assert.equal(sh.ends, sh.begins);
});
