import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { Store } from '../store/index.ts';
import { GrpcServer, grpcError, type GrpcPrincipal } from './server.ts';

// A one-method JSON service: answers with the principal the server resolved for the call.
const whoami: grpc.ServiceDefinition = {
  WhoAmI: {
    path: '/isomesh.test.Who/WhoAmI',
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
    requestDeserialize: (b: Buffer) => JSON.parse(b.toString()),
    responseSerialize: (v: unknown) => Buffer.from(JSON.stringify(v)),
    responseDeserialize: (b: Buffer) => JSON.parse(b.toString()),
  },
};
const WhoClient = grpc.makeGenericClientConstructor(whoami, 'Who');

function call(target: string, token?: string): Promise<{ transport: string; principal: GrpcPrincipal }> {
  const client = new WhoClient(target, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  if (token !== undefined) md.set('authorization', `Bearer ${token}`);
  return new Promise((resolve, reject) => {
    (client as unknown as { WhoAmI: Function }).WhoAmI({}, md, { deadline: Date.now() + 5000 }, (err: Error | null, res: any) => {
      client.close();
      if (err) reject(err);
      else resolve(res);
    });
  });
}

test('gRPC server: TCP and a 0600 unix socket; unix sees all, else a bearer token (admin or tenant), else UNAUTHENTICATED', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-grpc-'));
  const store = Store.open({ dir });
  t.after(() => {
    store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  store.putTenant('acme', 20001);
  const tenantToken = store.mintToken('acme');
  const storeAdmin = store.mintToken(null);
  const adminToken = 'admin-token-0123456789';
  const socketPath = path.join(dir, 'grpc.sock');
  // a stale socket file from an earlier run must not stop the bind
  const stale = (await import('node:net')).createServer();
  await new Promise<void>((r) => stale.listen(socketPath, () => r()));
  await new Promise<void>((r) => stale.close(() => r()));

  const server = new GrpcServer({ tcp: { host: '127.0.0.1', port: 0 }, socketPath, store, adminToken, logger: pino({ level: 'silent' }) });
  server.addService(whoami, (transport) => ({
    WhoAmI: (c: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      const { principal, invalid } = server.authorize(transport, c.metadata);
      if (!principal) return cb(grpcError(grpc.status.UNAUTHENTICATED, invalid ? 'invalid token' : 'no token'));
      cb(null, { transport, principal });
    },
  }));
  await server.start();
  t.after(() => server.stop(100));

  assert.equal(fs.statSync(socketPath).mode & 0o777, 0o600);
  assert.ok(server.tcpAddress.port > 0);
  const tcp = `127.0.0.1:${server.tcpAddress.port}`;

  assert.deepEqual(await call(`unix:${socketPath}`), { transport: 'unix', principal: { kind: 'admin', via: 'unix' } });
  assert.deepEqual(await call(tcp, adminToken), { transport: 'tcp', principal: { kind: 'admin', via: 'token' } });
  assert.deepEqual(await call(tcp, storeAdmin), { transport: 'tcp', principal: { kind: 'admin', via: 'token' } });
  assert.deepEqual(await call(tcp, tenantToken), { transport: 'tcp', principal: { kind: 'tenant', tenant: 'acme' } });
  await assert.rejects(call(tcp), (err: grpc.ServiceError) => err.code === grpc.status.UNAUTHENTICATED && /no token/.test(err.details));
  await assert.rejects(call(tcp, 'nope-nope-nope'), (err: grpc.ServiceError) => err.code === grpc.status.UNAUTHENTICATED && /invalid/.test(err.details));

  assert.equal(server.identify(''), undefined);
  assert.deepEqual(server.identify(tenantToken), { kind: 'tenant', tenant: 'acme' });

  await server.stop(100);
  assert.equal(fs.existsSync(socketPath), false, 'the socket file is removed at stop');
});

test('gRPC server refuses to replace a non-socket file at the socket path', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-grpc-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const socketPath = path.join(dir, 'grpc.sock');
  fs.writeFileSync(socketPath, 'not a socket');
  const server = new GrpcServer({
    tcp: { host: '127.0.0.1', port: 0 },
    socketPath,
    store: { resolveToken: () => undefined },
    adminToken: 'admin-token-0123456789',
    logger: pino({ level: 'silent' }),
  });
  await assert.rejects(server.start(), /not a socket/);
  await server.stop(100);
  assert.equal(fs.readFileSync(socketPath, 'utf8'), 'not a socket');
});

test('gRPC server: a TCP address in use and an over-long socket path fail the start with a clear reason', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-grpc-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const opts = { store: { resolveToken: () => undefined }, adminToken: 'admin-token-0123456789', logger: pino({ level: 'silent' }) };
  const first = new GrpcServer({ ...opts, tcp: { host: '127.0.0.1', port: 0 }, socketPath: path.join(dir, 'a.sock') });
  await first.start();
  t.after(() => first.stop(100));
  const clash = new GrpcServer({ ...opts, tcp: { host: '127.0.0.1', port: first.tcpAddress.port }, socketPath: path.join(dir, 'b.sock') });
  await assert.rejects(clash.start(), /cannot listen on 127\.0\.0\.1:\d+ \(ISOMESH_GRPC_ADDR\)/);
  await clash.stop(100);
  const long = new GrpcServer({ ...opts, tcp: { host: '127.0.0.1', port: 0 }, socketPath: path.join(dir, 'x'.repeat(120), 'grpc.sock') });
  await assert.rejects(long.start(), /longer than a unix socket path may be/);
  await long.stop(100);
});
