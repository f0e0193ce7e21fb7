// Services, routes and secrets: plain keyed documents of a tenant. PUT answers 201 when it created
// the object and 200 when it replaced it; secrets are write-only (their GET lists names only).

import type { FastifyInstance } from 'fastify';
import { IsomeshError } from '../errors.ts';
import type { AdminDeps } from './index.ts';
import { namedParams, routeBody, secretBody, serviceBody, serviceResponse, tenantParams } from './schemas.ts';
import { requireTenant } from './tenants.ts';

type Params = { tenant: string };
type NamedParams = { tenant: string; name: string };

export function registerServiceRoutes(app: FastifyInstance, deps: AdminDeps): void {
  const { store } = deps;
  const tenantOnly = { auth: 'tenant' } as const;

  // ---- services ----
  const svcConfig = { ...tenantOnly, kind: 'service' } as const;
  app.get<{ Params: Params }>(
    '/v1/tenants/:tenant/services',
    { config: tenantOnly, schema: { tags: ['services'], summary: 'List services', params: tenantParams } },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      return { services: store.listServices(req.params.tenant) };
    },
  );
  app.put<{ Params: NamedParams; Body: unknown }>(
    '/v1/tenants/:tenant/services/:name',
    { config: svcConfig, schema: { tags: ['services'], summary: 'Create or replace a service', params: namedParams, body: serviceBody } },
    async (req, reply) => {
      requireTenant(deps, req.params.tenant);
      const { created, service } = store.putService(req.params.tenant, req.params.name, req.body);
      return reply.code(created ? 201 : 200).send(service);
    },
  );
  app.get<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/services/:name',
    {
      config: svcConfig,
      schema: { tags: ['services'], summary: "Read a service, with its endpoints' live state", params: namedParams, response: serviceResponse },
    },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      const s = store.getService(req.params.tenant, req.params.name);
      if (!s) throw new IsomeshError('ISOMESH_ERR_SERVICE_NOT_FOUND', `service "${req.params.name}" does not exist`);
      const endpointStatus = await deps.proxy.endpointStatus?.(req.params.tenant, req.params.name);
      return endpointStatus === undefined ? s : { ...s, endpointStatus };
    },
  );
  app.delete<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/services/:name',
    { config: svcConfig, schema: { tags: ['services'], summary: 'Delete a service (409 while a route uses it)', params: namedParams } },
    async (req, reply) => {
      store.deleteService(req.params.tenant, req.params.name);
      return reply.code(204).send();
    },
  );

  // ---- routes ----
  const routeConfig = { ...tenantOnly, kind: 'route' } as const;
  app.get<{ Params: Params }>(
    '/v1/tenants/:tenant/routes',
    { config: tenantOnly, schema: { tags: ['routes'], summary: 'List routes', params: tenantParams } },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      return { routes: store.listRoutes(req.params.tenant) };
    },
  );
  app.put<{ Params: NamedParams; Body: unknown }>(
    '/v1/tenants/:tenant/routes/:name',
    { config: routeConfig, schema: { tags: ['routes'], summary: 'Create or replace a route', params: namedParams, body: routeBody } },
    async (req, reply) => {
      requireTenant(deps, req.params.tenant);
      const { created, route } = store.putRoute(req.params.tenant, req.params.name, req.body);
      return reply.code(created ? 201 : 200).send(route);
    },
  );
  app.get<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/routes/:name',
    { config: routeConfig, schema: { tags: ['routes'], summary: 'Read a route', params: namedParams } },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      const r = store.getRoute(req.params.tenant, req.params.name);
      if (!r) throw new IsomeshError('ISOMESH_ERR_ROUTE_NOT_FOUND', `route "${req.params.name}" does not exist`);
      return r;
    },
  );
  app.delete<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/routes/:name',
    { config: routeConfig, schema: { tags: ['routes'], summary: 'Delete a route (409 while the chain uses it)', params: namedParams } },
    async (req, reply) => {
      store.deleteRoute(req.params.tenant, req.params.name);
      return reply.code(204).send();
    },
  );

  // ---- secrets (write-only) ----
  const secretConfig = { ...tenantOnly, kind: 'secret' } as const;
  app.get<{ Params: Params }>(
    '/v1/tenants/:tenant/secrets',
    { config: tenantOnly, schema: { tags: ['secrets'], summary: 'List secret names (never values)', params: tenantParams } },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      return { secrets: store.listSecretNames(req.params.tenant) };
    },
  );
  app.put<{ Params: NamedParams; Body: { value: unknown } }>(
    '/v1/tenants/:tenant/secrets/:name',
    { config: secretConfig, schema: { tags: ['secrets'], summary: 'Set a secret', params: namedParams, body: secretBody } },
    async (req, reply) => {
      requireTenant(deps, req.params.tenant);
      const { created } = store.putSecret(req.params.tenant, req.params.name, req.body.value);
      return reply.code(created ? 201 : 200).send({ name: req.params.name });
    },
  );
  app.delete<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/secrets/:name',
    { config: secretConfig, schema: { tags: ['secrets'], summary: 'Delete a secret', params: namedParams } },
    async (req, reply) => {
      store.deleteSecret(req.params.tenant, req.params.name);
      return reply.code(204).send();
    },
  );
}
