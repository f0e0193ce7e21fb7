// gRPC through a tenant listener (API.md "Protocols"): a @grpc/grpc-js client and server on loopback,
// isomesh in between speaking h2c both ways. Unary, server streaming, metadata and trailers, deadline
// (grpc-timeout honoured by the proxy), and isomesh's own errors answered as gRPC statuses.
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import * as grpc from '@grpc/grpc-js';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';

const raw = (b: Buffer): Buffer => b;
const methods = {
  unary: { path: '/test.Echo/Unary', requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  stream: { path: '/test.Echo/Stream', requestStream: false, responseStream: true, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
  fail: { path: '/test.Echo/Fail', requestStream: false, responseStream: false, requestSerialize: raw, requestDeserialize: raw, responseSerialize: raw, responseDeserialize: raw },
} satisfies grpc.ServiceDefinition;
const Client = grpc.makeGenericClientConstructor(methods, 'Echo');

let d: TestDaemon;
let server: grpc.Server;
let port: number;
let bare: number;
let client: InstanceType<typeof Client>;
// A backend that never answers and does not enforce deadlines itself (grpc-js's server would answer
// DEADLINE_EXCEEDED at the same instant as the proxy, and the test could not tell who did).
let mute: http2.Http2Server;
const muteSaw: (string | undefined)[] = [];

const DENY = `
import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  onRequest(req, ctx) {
    const who = req.headers.get('x-who');
    if (who === 'anon') return ctx.respond(401, { body: 'who are you' });
    if (who === 'guest') return ctx.respond(403, { body: 'not for guests' });
    if (who === 'boom') throw new Error('plugin broke');
    req.headers.set('x-plugin', 'seen');
  },
});`;

before(async () => {
  server = new grpc.Server();
  server.addService(methods, {
    unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      call.sendMetadata(new grpc.Metadata());
      const md = call.metadata;
      cb(null, Buffer.from(JSON.stringify({ got: call.request.toString(), plugin: md.get('x-plugin')[0] ?? null, via: md.get('via')[0] ?? null })));
    },
    stream: (call: grpc.ServerWritableStream<Buffer, Buffer>) => {
      const n = Number(call.request.toString());
      for (let i = 0; i < n; i++) call.write(Buffer.from(`msg-${i}`));
      const trailer = new grpc.Metadata();
      trailer.set('x-count', String(n));
      call.end(trailer);
    },
    fail: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      const md = new grpc.Metadata();
      md.set('x-detail', 'bad input');
      cb({ code: grpc.status.INVALID_ARGUMENT, details: 'the backend refused', metadata: md });
    },
  });
  const backend = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  mute = http2.createServer();
  mute.on('stream', (stream, headers) => {
    muteSaw.push(headers['grpc-timeout'] as string | undefined);
    stream.on('error', () => {});
  });
  const mutePort = await new Promise<number>((resolve) => mute.listen(0, '127.0.0.1', () => resolve((mute.address() as { port: number }).port)));
  d = await startDaemon();
  port = (await d.api('PUT', '/v1/tenants/rpc', {})).body.listenerPort;
  bare = (await d.api('PUT', '/v1/tenants/bare', {})).body.listenerPort;
  assert.equal((await d.api('PUT', '/v1/tenants/rpc/services/echo', { protocol: 'grpc', endpoints: [{ address: '127.0.0.1', port: backend }] })).status, 201);
  assert.equal((await d.api('PUT', '/v1/tenants/rpc/routes/all', { match: { pathPrefix: '/test.Echo/' }, to: { service: 'echo' } })).status, 201);
  assert.equal((await d.api('PUT', '/v1/tenants/rpc/services/mute', { protocol: 'grpc', endpoints: [{ address: '127.0.0.1', port: mutePort }] })).status, 201);
  assert.equal((await d.api('PUT', '/v1/tenants/rpc/routes/mute', { match: { pathPrefix: '/test.Mute/' }, to: { service: 'mute' } })).status, 201);
  const p = await d.api('POST', '/v1/tenants/rpc/plugins/deny/versions', { source: DENY, language: 'typescript' });
  assert.equal(p.status, 201, JSON.stringify(p.body));
  await d.api('PUT', '/v1/tenants/rpc/plugins/deny/active', { version: p.body.version });
  assert.equal((await d.api('PUT', '/v1/tenants/rpc/chain', [{ plugin: 'deny' }])).status, 200);
  client = new Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  // The chain applies asynchronously after the commit.
  for (let i = 0; i < 100; i++) {
    const r = await unary(Buffer.from('warm')).catch(() => undefined);
    if (r !== undefined && JSON.parse(r.toString()).plugin === 'seen') break;
    await sleep(20);
  }
});

after(async () => {
  client?.close();
  await d?.stop();
  server?.forceShutdown();
  await new Promise((resolve) => (mute ? mute.close(resolve) : resolve(undefined)));
});

function unary(body: Buffer, md = new grpc.Metadata(), method: 'unary' | 'fail' = 'unary', deadlineMs = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    (client as unknown as Record<string, Function>)[method]!(body, md, { deadline: Date.now() + deadlineMs }, (err: grpc.ServiceError | null, res: Buffer) => (err ? reject(err) : resolve(res)));
  });
}

test('unary gRPC through the proxy: the chain ran, via is set, the answer comes back', async () => {
  const res = JSON.parse((await unary(Buffer.from('ping'))).toString());
  assert.deepEqual(res, { got: 'ping', plugin: 'seen', via: '2 isomesh' });
});

test('server streaming: every message and the trailing metadata arrive', async () => {
  const call = (client as unknown as Record<string, Function>).stream!(Buffer.from('5')) as grpc.ClientReadableStream<Buffer>;
  const got: string[] = [];
  let trailer: grpc.Metadata | undefined;
  call.on('metadata', () => {});
  call.on('status', (s: grpc.StatusObject) => (trailer = s.metadata));
  await new Promise<void>((resolve, reject) => {
    call.on('data', (b: Buffer) => got.push(b.toString()));
    call.on('end', resolve);
    call.on('error', reject);
  });
  await sleep(10);
  assert.deepEqual(got, ['msg-0', 'msg-1', 'msg-2', 'msg-3', 'msg-4']);
  assert.equal(trailer?.get('x-count')[0], '5', 'trailers pass through');
});

test('an upstream error status and its trailing metadata pass through unchanged', async () => {
  const err = (await unary(Buffer.from('x'), new grpc.Metadata(), 'fail').catch((e) => e)) as grpc.ServiceError;
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.equal(err.details, 'the backend refused');
  assert.equal(err.metadata.get('x-detail')[0], 'bad input');
});

test('plugin answers and failures become gRPC statuses (401 → UNAUTHENTICATED, 403 → PERMISSION_DENIED, closed failure → UNAVAILABLE)', async () => {
  const call = async (who: string) => {
    const md = new grpc.Metadata();
    md.set('x-who', who);
    return (await unary(Buffer.from('x'), md).catch((e) => e)) as grpc.ServiceError;
  };
  assert.equal((await call('anon')).code, grpc.status.UNAUTHENTICATED);
  assert.equal((await call('anon')).details, 'who are you');
  assert.equal((await call('guest')).code, grpc.status.PERMISSION_DENIED);
  const boom = await call('boom');
  assert.equal(boom.code, grpc.status.UNAVAILABLE);
  assert.match(boom.details, /^ISOMESH_ERR_PLUGIN_THREW: /, 'the isomesh code travels in grpc-message');
});

/** A raw h2 gRPC request (to set grpc-timeout or hit a tenant without routes). */
async function rawGrpc(p: number, path: string, extra: Record<string, string> = {}): Promise<{ status: number; headers: http2.IncomingHttpHeaders }> {
  const session = http2.connect(`http://127.0.0.1:${p}`);
  try {
    return await new Promise((resolve, reject) => {
      const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers', ...extra });
      let headers: http2.IncomingHttpHeaders = {};
      req.on('response', (h) => (headers = h));
      req.on('trailers', (t) => (headers = { ...headers, ...t }));
      req.on('error', reject);
      req.on('close', () => resolve({ status: Number(headers[':status']), headers }));
      req.on('data', () => {});
      req.end(Buffer.from([0, 0, 0, 0, 0]));
    });
  } finally {
    session.close();
  }
}

test('grpc-timeout is honoured: a backend that never answers is DEADLINE_EXCEEDED from the proxy', async () => {
  const started = performance.now();
  const r = await rawGrpc(port, '/test.Mute/Wait', { 'grpc-timeout': '200m' });
  const took = performance.now() - started;
  assert.equal(r.status, 200);
  assert.equal(r.headers['grpc-status'], String(grpc.status.DEADLINE_EXCEEDED));
  const message = decodeURIComponent(String(r.headers['grpc-message']));
  assert.match(message, /^ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT: .* after 200 ms/, 'the deadline, not the service timeout, ended the wait');
  assert.ok(took >= 190, `answered after ${took.toFixed(0)} ms, before the 200 ms deadline`);
  assert.deepEqual(muteSaw, ['200m'], 'the backend got the request with its deadline');
});

test('no route is UNAVAILABLE (14) as a trailers-only answer; quota exhaustion is RESOURCE_EXHAUSTED (8)', async () => {
  const r = await rawGrpc(bare, '/test.Echo/Unary');
  assert.equal(r.status, 200);
  assert.equal(r.headers['grpc-status'], '14');
  assert.match(String(r.headers['grpc-message']), /^ISOMESH_ERR_PROXY_NO_ROUTE/);
  assert.equal((await d.api('PUT', '/v1/tenants/rpc/quota', { requestsPerSecond: 1 })).status, 200);
  try {
    await sleep(200);
    const codes: number[] = [];
    for (let i = 0; i < 5; i++) codes.push(((await unary(Buffer.from('x')).catch((e) => e)) as grpc.ServiceError).code ?? 0);
    assert.ok(codes.includes(grpc.status.RESOURCE_EXHAUSTED), `got ${codes}`);
  } finally {
    await d.api('PUT', '/v1/tenants/rpc/quota', { requestsPerSecond: 0 });
  }
});
