// Tenants, tokens, quotas and /status. Tenant create/move/delete touch the proxy (a listener) and the
// store; they run one at a time and bind before committing, so a failed bind commits nothing and a
// failed commit is undone on the proxy side.

import type { FastifyInstance } from 'fastify';
import { IsomeshError } from '../errors.ts';
import { checkName, validateTenantSettingsPatch } from '../store/index.ts';
import type { TenantRecord, TenantSettingsPatch } from '../store/index.ts';
import type { AdminDeps } from './index.ts';
import { TENANT_SETTINGS_FIELDS, quotaBody, tenantBody, tenantListResponse, tenantParams, tenantResponse } from './schemas.ts';

/** Runs async operations one after another (tenant lifecycle: port allocation + bind + commit). */
export class SerialQueue {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.tail.then(fn);
    this.tail = next.catch(() => undefined);
    return next;
  }
}

/** Attempts at auto-allocated ports taken by something outside isomesh before giving up. */
const MAX_BIND_ATTEMPTS = 32;

type Params = { tenant: string };

/** A tenant as the API shows it: the settings as top-level fields, as PUT takes them. */
function tenantView(t: TenantRecord): Record<string, unknown> {
  return {
    name: t.name,
    listenerPort: t.listenerPort,
    pathNormalization: t.settings.pathNormalization,
    accessLog: t.settings.accessLog,
    quota: t.quota,
    generation: t.generation,
    createdAt: t.createdAt,
    updatedAt: t.updatedAt,
  };
}

function isPortInUse(err: unknown): boolean {
  const e = err as { code?: string };
  return e.code === 'EADDRINUSE' || e.code === 'EACCES' || e.code === 'ISOMESH_ERR_TENANT_PORT_IN_USE';
}

export function requireTenant(deps: AdminDeps, name: string): TenantRecord {
  const t = deps.store.getTenant(name);
  if (!t) throw new IsomeshError('ISOMESH_ERR_TENANT_NOT_FOUND', `tenant "${name}" does not exist`);
  return t;
}

export function registerTenantRoutes(app: FastifyInstance, deps: AdminDeps, lifecycle: SerialQueue): void {
  const { store, proxy, listenerPorts } = deps;

  async function bindAndCommit(
    name: string,
    requested: number | undefined,
    settings: TenantSettingsPatch,
  ): Promise<{ created: boolean; tenant: TenantRecord }> {
    checkName('tenant', name);
    const existing = store.getTenant(name);
    if (requested !== undefined) {
      if (requested < listenerPorts.min || requested > listenerPorts.max) {
        throw new IsomeshError(
          'ISOMESH_ERR_TENANT_PORT_OUT_OF_RANGE',
          `listenerPort ${requested} is outside the configured range ${listenerPorts.min}-${listenerPorts.max}`,
        );
      }
      const owner = store.portOwner(requested);
      if (owner !== undefined && owner !== name) {
        throw new IsomeshError('ISOMESH_ERR_TENANT_PORT_IN_USE', `listenerPort ${requested} is already in use`);
      }
    }
    // Same port: only the settings can change, and no listener is touched.
    if (existing && (requested === undefined || requested === existing.listenerPort)) return store.putTenant(name, existing.listenerPort, settings);

    const skip = new Set<number>();
    for (let attempt = 0; attempt < MAX_BIND_ATTEMPTS; attempt++) {
      const port = requested ?? store.freeListenerPort(skip, listenerPorts);
      if (port === undefined) break;
      let bound: number;
      try {
        bound = await proxy.bind(name, port);
      } catch (err) {
        if (!isPortInUse(err)) throw err;
        if (requested !== undefined) {
          throw new IsomeshError('ISOMESH_ERR_TENANT_PORT_IN_USE', `listenerPort ${requested} is already in use on this node`);
        }
        skip.add(port);
        continue;
      }
      try {
        return store.putTenant(name, bound, settings);
      } catch (err) {
        // Undo the proxy side so nothing is half-done: back to the old port, or no listener at all.
        try {
          if (existing) await proxy.bind(name, existing.listenerPort);
          else await proxy.removeTenant(name);
        } catch (undoErr) {
          deps.logger.error({ err: undoErr, tenant: name }, 'failed to undo listener bind after a failed commit');
        }
        throw err;
      }
    }
    throw new IsomeshError(
      'ISOMESH_ERR_TENANT_NO_FREE_PORT',
      `no free listener port in ${listenerPorts.min}-${listenerPorts.max}`,
    );
  }

  app.get('/v1/tenants', { config: { auth: 'admin' }, schema: { tags: ['tenants'], summary: 'List tenants', response: tenantListResponse } }, async () => ({
    tenants: store.listTenants().map(tenantView),
  }));

  app.put<{ Params: Params; Body: { listenerPort?: number } | null }>(
    '/v1/tenants/:tenant',
    {
      config: { auth: 'admin', invalidBody: { code: 'ISOMESH_ERR_TENANT_INVALID', fields: TENANT_SETTINGS_FIELDS } },
      schema: {
        tags: ['tenants'],
        summary: 'Create a tenant, move its listener, change its settings',
        params: tenantParams,
        body: tenantBody,
        response: tenantResponse,
      },
    },
    async (req, reply) => {
      checkName('tenant', req.params.tenant);
      const settings = validateTenantSettingsPatch(req.body); // before any listener is bound
      const { created, tenant } = await lifecycle.run(() => bindAndCommit(req.params.tenant, req.body?.listenerPort, settings));
      return reply.code(created ? 201 : 200).send(tenantView(tenant));
    },
  );

  app.get<{ Params: Params }>(
    '/v1/tenants/:tenant',
    { config: { auth: 'tenant' }, schema: { tags: ['tenants'], summary: 'Read a tenant', params: tenantParams, response: tenantResponse } },
    async (req) => tenantView(requireTenant(deps, req.params.tenant)),
  );

  app.delete<{ Params: Params }>(
    '/v1/tenants/:tenant',
    { config: { auth: 'admin' }, schema: { tags: ['tenants'], summary: 'Delete a tenant and all it owns', params: tenantParams } },
    async (req, reply) => {
      await lifecycle.run(async () => {
        const t = requireTenant(deps, req.params.tenant);
        await proxy.removeTenant(t.name);
        try {
          store.deleteTenant(t.name);
        } catch (err) {
          await proxy.bind(t.name, t.listenerPort).catch((bindErr: unknown) => {
            deps.logger.error({ err: bindErr, tenant: t.name }, 'failed to rebind listener after a failed delete');
          });
          throw err;
        }
      });
      return reply.code(204).send();
    },
  );

  app.post<{ Params: Params }>(
    '/v1/tenants/:tenant/tokens',
    { config: { auth: 'admin' }, schema: { tags: ['tenants'], summary: 'Mint a tenant token (shown once)', params: tenantParams } },
    async (req, reply) => {
      requireTenant(deps, req.params.tenant);
      return reply.code(201).send({ tenant: req.params.tenant, token: store.mintToken(req.params.tenant) });
    },
  );

  app.get<{ Params: Params }>(
    '/v1/tenants/:tenant/quota',
    { config: { auth: 'tenant' }, schema: { tags: ['tenants'], summary: 'Read the quota', params: tenantParams } },
    async (req) => requireTenant(deps, req.params.tenant).quota,
  );

  app.put<{ Params: Params; Body: Record<string, unknown> }>(
    '/v1/tenants/:tenant/quota',
    {
      config: { auth: 'admin' },
      schema: { tags: ['tenants'], summary: 'Update the quota (partial)', params: tenantParams, body: quotaBody },
    },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      return store.updateQuota(req.params.tenant, req.body);
    },
  );

  app.get<{ Params: Params }>(
    '/v1/tenants/:tenant/status',
    { config: { auth: 'tenant' }, schema: { tags: ['tenants'], summary: 'Listener, plugin health, quota usage', params: tenantParams } },
    async (req) => tenantStatus(deps, requireTenant(deps, req.params.tenant)),
  );
}

function tenantStatus(deps: AdminDeps, t: TenantRecord): Record<string, unknown> {
  const proxy = deps.proxy.status(t.name);
  let host: ReturnType<AdminDeps['host']['status']> | undefined;
  try {
    host = deps.host.status(t.name);
  } catch (err) {
    deps.logger.warn({ err, tenant: t.name }, 'plugin host status unavailable');
  }
  const health = (plugin: string, version: number): Record<string, unknown> => {
    const h = host?.plugins[`${plugin}@${version}`];
    if (!h) return { version, loaded: false, health: 'ok', invocations: 0, failures: 0, restarts: 0 };
    return { version, loaded: true, ...h };
  };
  const plugins = deps.store.listPlugins(t.name).map((p) => {
    const out: Record<string, unknown> = { name: p.name, latestVersion: p.latestVersion };
    if (p.active) {
      out.active = health(p.name, p.active.version);
      if (p.active.canary) out.canary = { ...health(p.name, p.active.canary.version), percent: p.active.canary.percent };
    }
    return out;
  });
  const usage = host?.usage;
  return {
    tenant: t.name,
    generation: t.generation,
    listener: proxy?.listener ?? null,
    listenerPort: t.listenerPort,
    requests: proxy?.requests ?? 0,
    plugins,
    quota: t.quota,
    // Usage next to the quota it is measured against, as the plugin host reports it (cordon placement,
    // queue, rates), with the proxy's view of in-flight requests.
    usage: {
      ...usage,
      cpuMsPerSecond: usage?.cpuMsPerSecond ?? 0,
      memoryBytes: usage?.memoryBytes ?? 0,
      memoryMb: Math.round(((usage?.memoryBytes ?? 0) / (1024 * 1024)) * 100) / 100,
      inFlight: proxy?.inFlight ?? usage?.inFlight ?? 0,
      pluginInFlight: usage?.inFlight ?? 0,
      rejections: { rps: 0, concurrency: 0, cpu: 0, queue: 0, ...usage?.rejections },
    },
  };
}
