// Self-service rate limits: a tenant token manages its own tenant's, the admin token any tenant's.
// Same document semantics as services and routes (PUT 201 created / 200 replaced, DELETE 204).

import type { FastifyInstance } from 'fastify';
import { IsomeshError } from '../errors.ts';
import type { AdminDeps } from './index.ts';
import { namedParams, rateLimitBody, rateLimitListResponse, rateLimitResponse, tenantParams } from './schemas.ts';
import { requireTenant } from './tenants.ts';

type Params = { tenant: string };
type NamedParams = { tenant: string; name: string };

export function registerRateLimitRoutes(app: FastifyInstance, deps: AdminDeps): void {
  const { store } = deps;
  const config = { auth: 'tenant', kind: 'ratelimit', invalidBody: { code: 'ISOMESH_ERR_RATELIMIT_INVALID' } } as const;
  const tags = ['ratelimits'];

  app.get<{ Params: Params }>(
    '/v1/tenants/:tenant/ratelimits',
    { config: { auth: 'tenant' }, schema: { tags, summary: 'List rate limits', params: tenantParams, response: rateLimitListResponse } },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      return { rateLimits: store.listRateLimits(req.params.tenant) };
    },
  );
  app.put<{ Params: NamedParams; Body: unknown }>(
    '/v1/tenants/:tenant/ratelimits/:name',
    {
      config,
      schema: { tags, summary: 'Create or replace a rate limit (applied before the chain)', params: namedParams, body: rateLimitBody, response: rateLimitResponse },
    },
    async (req, reply) => {
      requireTenant(deps, req.params.tenant);
      const { created, rateLimit } = store.putRateLimit(req.params.tenant, req.params.name, req.body);
      return reply.code(created ? 201 : 200).send(rateLimit);
    },
  );
  app.get<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/ratelimits/:name',
    { config, schema: { tags, summary: 'Read a rate limit', params: namedParams, response: rateLimitResponse } },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      const rl = store.getRateLimit(req.params.tenant, req.params.name);
      if (!rl) throw new IsomeshError('ISOMESH_ERR_RATELIMIT_NOT_FOUND', `rate limit "${req.params.name}" does not exist`);
      return rl;
    },
  );
  app.delete<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/ratelimits/:name',
    { config, schema: { tags, summary: 'Delete a rate limit', params: namedParams } },
    async (req, reply) => {
      store.deleteRateLimit(req.params.tenant, req.params.name);
      return reply.code(204).send();
    },
  );
}
