// ShouldRateLimit driven over gRPC with the descriptors Envoy builds from the translator's rate_limits
// actions, counted in a RateLimitCounters shared with applyRateLimits (the built-in proxy's path).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { Registry } from 'prom-client';
import { applyRateLimits, RateLimitCounters } from '../host/index.ts';
import type { RateLimit } from '../store/model.ts';
import { envoyProtos } from './protos.ts';
import { RateLimitService, type RlsRequest } from './rls.ts';
import { GrpcServer } from './server.ts';

const ADMIN = 'rls-admin-token-0123456789';
const TENANT_TOKEN = 'rls-tenant-token-0123456789';

// Windows are aligned to the unit: the enforcing limits use days so no test straddles a window's end.
const LIMITS: RateLimit[] = [
  { name: 'login-post', descriptors: [{ key: 'method', value: 'POST' }], limit: { requestsPerUnit: 1, unit: 'day' }, shadow: false },
  { name: 'per-method', descriptors: [{ key: 'method' }], limit: { requestsPerUnit: 3, unit: 'day' }, shadow: false },
  { name: 'per-user', descriptors: [{ key: 'header:x-user' }, { key: 'path' }], limit: { requestsPerUnit: 2, unit: 'day' }, shadow: false },
  { name: 'shadow', descriptors: [{ key: 'remote_address' }], limit: { requestsPerUnit: 1, unit: 'second' }, shadow: true },
  { name: 'api-route', descriptors: [{ key: 'route', value: 'api' }], limit: { requestsPerUnit: 100, unit: 'day' }, shadow: false },
];

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-rls-'));
const server = new GrpcServer({
  tcp: { host: '127.0.0.1', port: 0 },
  socketPath: path.join(dir, 'grpc.sock'),
  store: { resolveToken: (t) => (t === TENANT_TOKEN ? { tenant: 'acme' } : undefined) },
  adminToken: ADMIN,
  logger: pino({ level: 'silent' }),
});
const counters = new RateLimitCounters();
const registry = new Registry();
const rls = new RateLimitService({ protos: envoyProtos(), counters, rateLimits: (t) => (t === 'acme' ? LIMITS : undefined), registry, logger: pino({ level: 'silent' }) });
rls.register(server);
await server.start();
test.after(async () => {
  await server.stop(100);
  fs.rmSync(dir, { recursive: true, force: true });
});

const Svc = grpc.makeGenericClientConstructor(envoyProtos().service('envoy.service.ratelimit.v3.RateLimitService'), 'RLS');
function ask(req: RlsRequest, target = `unix:${server.socketPath}`, md = new grpc.Metadata()): Promise<any> {
  const c = new Svc(target, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) =>
    (c as any).ShouldRateLimit(req, md, { deadline: Date.now() + 5000 }, (err: Error | null, res: unknown) => {
      c.close();
      if (err) reject(err);
      else resolve(res);
    }),
  );
}

/** The descriptors Envoy sends for one request under the translator's actions (a missing header skips its descriptor). */
function envoyDescriptors(r: { method: string; path: string; remote: string; route?: string; user?: string }): RlsRequest['descriptors'] {
  const out: NonNullable<RlsRequest['descriptors']> = [];
  for (const rl of LIMITS) {
    if (r.route === undefined && rl.descriptors.some((d) => d.key === 'route')) continue;
    const entries = [];
    let skip = false;
    for (const d of rl.descriptors) {
      const value = d.key === 'method' ? r.method : d.key === 'path' ? r.path : d.key === 'remote_address' ? r.remote : d.key === 'route' ? r.route : r.user;
      if (value === undefined) skip = true;
      entries.push({ key: d.key, value: value ?? '' });
    }
    if (!skip) out.push({ entries });
  }
  return out;
}

test('RLS: per-descriptor statuses, OVER_LIMIT with duration_until_reset and the headers/body the built-in proxy sends; shadow counts as OK', async () => {
  const req = { method: 'POST', path: '/login?next=/', remote: '127.0.0.1', route: 'api', user: 'u1' };
  const first = await ask({ domain: 'acme', descriptors: envoyDescriptors(req) });
  assert.equal(first.overall_code, 'OK');
  assert.equal(first.statuses.length, 5);
  assert.deepEqual(first.statuses.map((s: any) => s.current_limit?.name), ['login-post', 'per-method', 'per-user', 'shadow', 'api-route']);
  assert.deepEqual(first.statuses[0].current_limit, { name: 'login-post', requests_per_unit: 1, unit: 'DAY' });
  assert.equal(first.statuses[1].limit_remaining, 2);

  const second = await ask({ domain: 'acme', descriptors: envoyDescriptors(req) });
  assert.equal(second.overall_code, 'OVER_LIMIT');
  assert.deepEqual(second.statuses.map((s: any) => s.code), ['OVER_LIMIT', 'OK', 'OK', 'OK', 'OK'], 'shadow over is OK');
  assert.ok(Number(second.statuses[0].duration_until_reset.seconds) >= 1 && Number(second.statuses[0].duration_until_reset.seconds) <= 86_400);
  const headers = Object.fromEntries(second.response_headers_to_add.map((h: any) => [h.key, h.value]));
  assert.equal(headers['x-isomesh-error'], 'ISOMESH_ERR_RATELIMIT_OVER');
  assert.ok(Number(headers['retry-after']) >= 1);
  assert.equal(JSON.parse(Buffer.from(second.raw_body).toString()).error.code, 'ISOMESH_ERR_RATELIMIT_OVER');

  // a GET: the POST-only limit does not apply (its descriptor still comes: Envoy cannot filter by value)
  const get = await ask({ domain: 'acme', descriptors: envoyDescriptors({ ...req, method: 'GET' }) });
  assert.equal(get.statuses[0].code, 'OK');
  assert.equal(get.statuses[0].current_limit, undefined, 'not applicable: not counted');
  assert.equal(get.statuses[1].current_limit.name, 'per-method', 'the second [method] descriptor is per-method, not login-post again');

  const metric = await registry.getSingleMetricAsString('isomesh_ratelimit_total');
  assert.match(metric, /ratelimit="login-post",result="over"\} 1/);
  assert.match(metric, /ratelimit="shadow",result="shadow_over"\} [12]/);
});

test('RLS: one counter with the built-in proxy — hits through applyRateLimits and ShouldRateLimit add up; the path is counted without its query', async () => {
  const facts = { remoteAddress: '127.0.0.2', path: '/cart', method: 'PUT', route: undefined, header: (n: string) => (n === 'x-user' ? 'shared' : undefined) };
  applyRateLimits('acme', LIMITS, facts, counters);
  const viaEnvoy = await ask({ domain: 'acme', descriptors: envoyDescriptors({ method: 'PUT', path: '/cart?x=1', remote: '127.0.0.2', user: 'shared' }) });
  assert.equal(viaEnvoy.overall_code, 'OK');
  const perUser = viaEnvoy.statuses.find((s: any) => s.current_limit?.name === 'per-user');
  assert.equal(perUser.limit_remaining, 0, 'the proxy hit and this one share the per-user counter');
  const over = applyRateLimits('acme', LIMITS, facts, counters);
  assert.equal(over.over?.rateLimit.name, 'per-user', 'and the proxy sees the RLS hit');
  // a missing header: Envoy leaves that descriptor out; the rest still map to their own limits
  const noUser = await ask({ domain: 'acme', descriptors: envoyDescriptors({ method: 'PATCH', path: '/x', remote: '127.0.0.3' }) });
  assert.deepEqual(noUser.statuses.map((s: any) => s.current_limit?.name), [undefined, 'per-method', 'shadow']);
  // hits_addend
  const many = await ask({ domain: 'acme', hits_addend: 5, descriptors: [{ entries: [{ key: 'method', value: 'DELETE' }] }, { entries: [{ key: 'method', value: 'DELETE' }] }] });
  assert.equal(many.overall_code, 'OVER_LIMIT', '5 hits against 3 per day');
});

test('RLS: unknown tenants and descriptors are OK; bad requests are INVALID_ARGUMENT; only the unix socket or the admin token', async () => {
  const unknown = await ask({ domain: 'nobody', descriptors: [{ entries: [{ key: 'method', value: 'GET' }] }] });
  assert.equal(unknown.overall_code, 'OK');
  const odd = await ask({ domain: 'acme', descriptors: [{ entries: [{ key: 'generic_key', value: 'x' }] }] });
  assert.deepEqual(odd.statuses, [{ code: 'OK' }]);
  await assert.rejects(ask({ domain: '', descriptors: [] }), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT);
  await assert.rejects(ask({ domain: 'acme', descriptors: [{ entries: [] }] }), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT);
  const md = new grpc.Metadata();
  md.set('x-isomesh-tenant', 'other');
  await assert.rejects(ask({ domain: 'acme', descriptors: [] }, undefined, md), (e: grpc.ServiceError) => e.code === grpc.status.INVALID_ARGUMENT);
  const tcp = `127.0.0.1:${server.tcpAddress.port}`;
  await assert.rejects(ask({ domain: 'acme' }, tcp), (e: grpc.ServiceError) => e.code === grpc.status.UNAUTHENTICATED);
  const tenant = new grpc.Metadata();
  tenant.set('authorization', `Bearer ${TENANT_TOKEN}`);
  await assert.rejects(ask({ domain: 'acme' }, tcp, tenant), (e: grpc.ServiceError) => e.code === grpc.status.PERMISSION_DENIED);
  const admin = new grpc.Metadata();
  admin.set('authorization', `Bearer ${ADMIN}`);
  assert.equal((await ask({ domain: 'acme', descriptors: [] }, tcp, admin)).overall_code, 'OK');
});
