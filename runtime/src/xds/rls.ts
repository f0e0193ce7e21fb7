// envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit: Envoy's ratelimit filter asks before
// ext_proc (API.md "Rate limits in Envoy"). The domain is the tenant; each descriptor is one of the
// tenant's rate limits, its entries keyed by the API's keys (header:<n>, path, method, remote_address,
// route). Counting is the built-in proxy's: the same RateLimitCounters instance (the daemon owns one),
// the same limitKey/descriptor-value keys, the same isomesh_ratelimit_total series.
//
// Descriptor → rate limit: the translator emits one descriptor per rate limit in the tenant's order
// and Envoy keeps that order, skipping a descriptor whose header is absent (and with it every rate
// limit of the same keys). So each descriptor belongs to the first rate limit not yet matched whose
// keys are the descriptor's keys, in order. A fixed `value` that differs means the limit does not
// apply (as in the built-in proxy); the `path` value is compared without its query (Envoy's :path
// carries it, the built-in proxy's path does not).

import * as grpc from '@grpc/grpc-js';
import type pino from 'pino';
import prom from 'prom-client';
import { limitKey, type RateLimitStore } from '../host/index.ts';
import type { RateLimit } from '../store/model.ts';
import { duration, type EnvoyProtos } from './protos.ts';
import { grpcError, type GrpcServer, type Transport } from './server.ts';
import { TENANT_METADATA } from './translate.ts';

export const RLS_SERVICE = 'envoy.service.ratelimit.v3.RateLimitService';
const MAX_DESCRIPTORS = 64;
const MAX_ENTRIES = 16;
const MAX_HITS = 1_000_000;

const Code = { OK: 1, OVER_LIMIT: 2 } as const;
const UNIT = { second: 1, minute: 2, hour: 3, day: 4 } as const;

export interface RlsDescriptor {
  entries?: Array<{ key?: string; value?: string }>;
}

export interface RlsRequest {
  domain?: string;
  descriptors?: RlsDescriptor[];
  hits_addend?: number;
}

export interface RateLimitServiceOptions {
  protos: EnvoyProtos;
  counters: RateLimitStore;
  /** The tenant's rate limits from its current TenantConfig; undefined for an unknown tenant. */
  rateLimits: (tenant: string) => readonly RateLimit[] | undefined;
  registry: prom.Registry;
  logger: pino.Logger;
}

function ratelimitCounter(registry: prom.Registry): prom.Counter<'tenant' | 'ratelimit' | 'result'> {
  // The built-in proxy registers the same series (proxy/metrics.ts); whichever comes first makes it.
  const existing = registry.getSingleMetric('isomesh_ratelimit_total') as prom.Counter<'tenant' | 'ratelimit' | 'result'> | undefined;
  return existing ?? new prom.Counter({
    name: 'isomesh_ratelimit_total',
    help: 'Requests counted by a tenant rate limit, by result (over = refused with 429; shadow_over = over a shadow limit, let through).',
    labelNames: ['tenant', 'ratelimit', 'result'] as const,
    registers: [registry],
  });
}

export class RateLimitService {
  readonly #opts: RateLimitServiceOptions;
  readonly #metric: prom.Counter<'tenant' | 'ratelimit' | 'result'>;

  constructor(opts: RateLimitServiceOptions) {
    this.#opts = opts;
    this.#metric = ratelimitCounter(opts.registry);
  }

  register(server: GrpcServer): void {
    server.addService(this.#opts.protos.service(RLS_SERVICE), (transport) => ({
      ShouldRateLimit: (call: grpc.ServerUnaryCall<RlsRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => this.#call(server, transport, call, cb),
    }));
  }

  #call(server: GrpcServer, transport: Transport, call: grpc.ServerUnaryCall<RlsRequest, unknown>, cb: grpc.sendUnaryData<unknown>): void {
    const { principal, invalid } = server.authorize(transport, call.metadata);
    if (principal?.kind !== 'admin') {
      const err = principal === undefined
        ? grpcError(grpc.status.UNAUTHENTICATED, invalid ? 'invalid bearer token' : 'the rate-limit service needs the unix socket or the admin token')
        : grpcError(grpc.status.PERMISSION_DENIED, 'the rate-limit service accepts only the unix socket or the admin token');
      return cb(err);
    }
    const req = call.request;
    const tenant = req.domain ?? '';
    const meta = call.metadata.get(TENANT_METADATA)[0];
    if (typeof meta === 'string' && meta !== '' && meta !== tenant) {
      return cb(grpcError(grpc.status.INVALID_ARGUMENT, `domain ${JSON.stringify(tenant)} is not the stream's tenant ${JSON.stringify(meta)}`));
    }
    const bad = invalidRequest(req);
    if (bad !== undefined) return cb(grpcError(grpc.status.INVALID_ARGUMENT, bad));
    try {
      cb(null, this.decide(req));
    } catch (err) {
      this.#opts.logger.error({ err, tenant }, 'rate-limit decision failed');
      cb(grpcError(grpc.status.INTERNAL, 'rate-limit decision failed'));
    }
  }

  /** The RateLimitResponse for a (valid) request, counting its hits. */
  decide(req: RlsRequest, nowMs = Date.now()): Record<string, unknown> {
    const tenant = req.domain ?? '';
    const limits = this.#opts.rateLimits(tenant) ?? [];
    const hits = req.hits_addend !== undefined && req.hits_addend > 0 ? req.hits_addend : 1;
    const used = new Set<number>();
    const statuses: Array<Record<string, unknown>> = [];
    let over: { rl: RateLimit; resetSec: number; limit: number } | undefined;
    let retryAfter = 0;
    for (const d of req.descriptors ?? []) {
      const entries = d.entries ?? [];
      const i = limits.findIndex((rl, j) => !used.has(j) && sameKeys(rl, entries));
      if (i === -1) {
        statuses.push({ code: Code.OK });
        continue;
      }
      used.add(i);
      const rl = limits[i]!;
      const values = valuesOf(rl, entries);
      if (values === undefined) {
        statuses.push({ code: Code.OK });
        continue;
      }
      const { requestsPerUnit, unit } = rl.limit;
      const v = this.#opts.counters.hit(limitKey(tenant, rl.name), values, requestsPerUnit, unit, hits, nowMs);
      const result = !v.over ? 'ok' : rl.shadow ? 'shadow_over' : 'over';
      this.#metric.labels(tenant, rl.name, result).inc();
      const enforced = result === 'over';
      if (enforced) {
        over ??= { rl, resetSec: v.resetSec, limit: v.limit };
        retryAfter = Math.max(retryAfter, v.resetSec);
      }
      statuses.push({
        code: enforced ? Code.OVER_LIMIT : Code.OK,
        current_limit: { name: rl.name, requests_per_unit: requestsPerUnit, unit: UNIT[unit] },
        limit_remaining: v.remaining,
        duration_until_reset: duration(v.resetSec * 1000),
      });
    }
    if (over === undefined) return { overall_code: Code.OK, statuses };
    // Envoy's local reply for OVER_LIMIT carries these, so the client sees what the built-in proxy sends.
    const message = `rate limit ${over.rl.name} (${over.limit} per ${over.rl.limit.unit}) is exceeded`;
    return {
      overall_code: Code.OVER_LIMIT,
      statuses,
      response_headers_to_add: [
        { key: 'content-type', value: 'application/json' },
        { key: 'x-isomesh-error', value: 'ISOMESH_ERR_RATELIMIT_OVER' },
        { key: 'retry-after', value: String(retryAfter) },
      ],
      raw_body: Buffer.from(JSON.stringify({ error: { code: 'ISOMESH_ERR_RATELIMIT_OVER', message } })),
    };
  }
}

function invalidRequest(req: RlsRequest): string | undefined {
  if (typeof req.domain !== 'string' || req.domain === '') return 'domain (the tenant) is required';
  const ds = req.descriptors ?? [];
  if (ds.length > MAX_DESCRIPTORS) return `at most ${MAX_DESCRIPTORS} descriptors`;
  for (const [i, d] of ds.entries()) {
    const es = d.entries ?? [];
    if (es.length === 0 || es.length > MAX_ENTRIES) return `descriptors[${i}] must have 1..${MAX_ENTRIES} entries`;
    for (const e of es) if (!e.key || typeof e.value !== 'string') return `descriptors[${i}]: every entry needs a key and a value`;
  }
  if (req.hits_addend !== undefined && !(req.hits_addend >= 0 && req.hits_addend <= MAX_HITS)) return `hits_addend must be 0..${MAX_HITS}`;
  return undefined;
}

function sameKeys(rl: RateLimit, entries: ReadonlyArray<{ key?: string }>): boolean {
  if (rl.descriptors.length !== entries.length) return false;
  for (let i = 0; i < entries.length; i++) if (rl.descriptors[i]!.key !== entries[i]!.key) return false;
  return true;
}

/** The counter key (as descriptorValues builds it), or undefined when a fixed value differs. */
function valuesOf(rl: RateLimit, entries: ReadonlyArray<{ key?: string; value?: string }>): string | undefined {
  let out = '';
  for (let i = 0; i < entries.length; i++) {
    const d = rl.descriptors[i]!;
    let v = entries[i]!.value!;
    if (d.key === 'path') {
      const q = v.indexOf('?');
      if (q !== -1) v = v.slice(0, q);
    }
    if (d.value !== undefined && v !== d.value) return undefined;
    out += `${v}\u0000`;
  }
  return out;
}
