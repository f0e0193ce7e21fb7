// Plugins (publish, list, activate, delete) and the chain. Publishing compiles through the plugin host
// and stores an immutable, content-addressed version: re-publishing code whose digest equals an
// existing version of the same plugin returns that version with 200 instead of creating a new one.

import type { FastifyInstance, FastifyRequest } from 'fastify';
import { IsomeshError } from '../errors.ts';
import { QUOTA_BOUNDS, checkName } from '../store/index.ts';
import type { Quota } from '../store/model.ts';
import type { AdminDeps } from './index.ts';
import { activationBody, chainBody, namedParams, pluginSourceBody, tenantParams, versionParams } from './schemas.ts';
import { requireTenant } from './tenants.ts';

type Params = { tenant: string };
type NamedParams = { tenant: string; name: string };

/**
 * Upload limit for a publish request. A bundle is the code itself, so it is bounded by maxBundleBytes;
 * a TypeScript/JavaScript source (types, comments) may shrink when compiled, so its JSON body gets
 * twice that plus room for the envelope. host.compile() enforces maxBundleBytes on the result.
 */
export function uploadLimit(quota: Quota, bundle: boolean): number {
  return bundle ? quota.maxBundleBytes : quota.maxBundleBytes * 2 + 64 * 1024;
}
const ROUTE_BODY_LIMIT = uploadLimit({ maxBundleBytes: QUOTA_BOUNDS.maxBundleBytes.max } as Quota, false);

function isJavaScript(req: FastifyRequest): boolean {
  return /^(application|text)\/javascript\b/i.test(req.headers['content-type'] ?? '');
}

function tooLarge(what: string, bytes: number, limit: number, quota: Quota): IsomeshError {
  return new IsomeshError(
    'ISOMESH_ERR_PLUGIN_TOO_LARGE',
    `${what} is ${bytes} bytes; the limit is ${limit} bytes (maxBundleBytes ${quota.maxBundleBytes})`,
  );
}

export function registerPluginRoutes(app: FastifyInstance, deps: AdminDeps): void {
  const { store, host } = deps;
  const pluginConfig = { auth: 'tenant', kind: 'plugin' } as const;

  app.post<{ Params: NamedParams; Body: string | { source: string; language?: 'typescript' | 'javascript' } }>(
    '/v1/tenants/:tenant/plugins/:name/versions',
    {
      bodyLimit: ROUTE_BODY_LIMIT,
      config: { ...pluginConfig, javascript: true, tooLargeCode: 'ISOMESH_ERR_PLUGIN_TOO_LARGE' },
      schema: {
        tags: ['plugins'],
        summary: 'Publish a new immutable version (201), or get the existing one with the same digest (200)',
        params: namedParams,
        body: {
          content: {
            'application/json': { schema: pluginSourceBody },
            'application/javascript': { schema: { type: 'string', minLength: 1, description: 'a bundle from `isomesh plugin build`' } },
          },
        },
      },
      // Reject an oversized upload from its Content-Length before reading it.
      preParsing: async (req) => {
        const quota = store.getQuota(req.params.tenant);
        const length = Number(req.headers['content-length']);
        if (!quota || !Number.isFinite(length)) return;
        const limit = uploadLimit(quota, isJavaScript(req));
        if (length > limit) throw tooLarge('the upload', length, limit, quota);
      },
    },
    async (req, reply) => {
      const { tenant, name } = req.params;
      const quota = requireTenant(deps, tenant).quota;
      checkName('plugin', name);
      // No body at all (no content-type, nothing parsed): a 400 that says what to send, not a TypeError.
      if (typeof req.body !== 'string' && (typeof req.body !== 'object' || req.body === null)) {
        throw new IsomeshError(
          'ISOMESH_ERR_API_BAD_REQUEST',
          'publishing needs a body: application/json {"source": "...", "language": "typescript"|"javascript"} or an application/javascript bundle',
        );
      }
      const bundle = typeof req.body === 'string';
      const source = typeof req.body === 'string' ? req.body : req.body.source;
      const language = typeof req.body === 'string' ? 'bundle' : (req.body.language ?? 'typescript');
      const bytes = Buffer.byteLength(source);
      const limit = uploadLimit(quota, bundle);
      if (bytes > limit) throw tooLarge(bundle ? 'the bundle' : 'the source', bytes, limit, quota);
      // Fail fast on maxPlugins before spending a compile; the store re-checks inside its transaction.
      if (!store.getPlugin(tenant, name) && store.listPlugins(tenant).length >= quota.maxPlugins) {
        throw new IsomeshError('ISOMESH_ERR_QUOTA_MAX_PLUGINS', `tenant "${tenant}" already has ${quota.maxPlugins} plugin(s), its maxPlugins`);
      }
      const compiled = await host.compile({ source, language, maxBundleBytes: quota.maxBundleBytes });
      if (compiled.size > quota.maxBundleBytes) throw tooLarge('the compiled plugin', compiled.size, quota.maxBundleBytes, quota);
      const res = store.publishPluginVersion(tenant, name, { code: compiled.code, language, source, meta: compiled.declarations });
      return reply
        .code(res.created ? 201 : 200)
        .send({ version: res.version, digest: res.digest, size: res.size, created: res.created, meta: compiled.declarations });
    },
  );

  app.get<{ Params: Params }>(
    '/v1/tenants/:tenant/plugins',
    { config: { auth: 'tenant' }, schema: { tags: ['plugins'], summary: 'List plugins', params: tenantParams } },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      return {
        plugins: store.listPlugins(req.params.tenant).map((p) => ({
          name: p.name,
          createdAt: p.createdAt,
          latestVersion: p.latestVersion,
          versions: p.versions.length,
          active: p.active?.version ?? null,
          canary: p.active?.canary ?? null,
        })),
      };
    },
  );

  const requirePlugin = (tenant: string, name: string) => {
    requireTenant(deps, tenant);
    const p = store.getPlugin(tenant, name);
    if (!p) throw new IsomeshError('ISOMESH_ERR_PLUGIN_NOT_FOUND', `plugin "${name}" does not exist`);
    return p;
  };

  app.get<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/plugins/:name',
    { config: pluginConfig, schema: { tags: ['plugins'], summary: 'Versions, active and canary of a plugin', params: namedParams } },
    async (req) => {
      const p = requirePlugin(req.params.tenant, req.params.name);
      return { ...p, active: p.active?.version ?? null, canary: p.active?.canary ?? null };
    },
  );

  app.get<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/plugins/:name/versions',
    { config: pluginConfig, schema: { tags: ['plugins'], summary: 'List versions', params: namedParams } },
    async (req) => ({ versions: requirePlugin(req.params.tenant, req.params.name).versions }),
  );

  app.get<{ Params: NamedParams & { version: string } }>(
    '/v1/tenants/:tenant/plugins/:name/versions/:version',
    { config: pluginConfig, schema: { tags: ['plugins'], summary: 'One version with its code and source', params: versionParams } },
    async (req) => {
      requirePlugin(req.params.tenant, req.params.name);
      const v = store.getPluginVersion(req.params.tenant, req.params.name, Number(req.params.version));
      if (!v) throw new IsomeshError('ISOMESH_ERR_PLUGIN_VERSION_NOT_FOUND', `plugin "${req.params.name}" has no version ${req.params.version}`);
      return v;
    },
  );

  app.put<{ Params: NamedParams; Body: unknown }>(
    '/v1/tenants/:tenant/plugins/:name/active',
    {
      config: pluginConfig,
      schema: { tags: ['plugins'], summary: 'Activate a version, optionally with a canary', params: namedParams, body: activationBody },
    },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      const a = store.setActivation(req.params.tenant, req.params.name, req.body);
      return { active: a.version, canary: a.canary ?? null };
    },
  );

  app.delete<{ Params: NamedParams }>(
    '/v1/tenants/:tenant/plugins/:name',
    { config: pluginConfig, schema: { tags: ['plugins'], summary: 'Delete a plugin and its versions (409 while in the chain)', params: namedParams } },
    async (req, reply) => {
      store.deletePlugin(req.params.tenant, req.params.name);
      return reply.code(204).send();
    },
  );

  // ---- chain ----
  app.get<{ Params: Params }>(
    '/v1/tenants/:tenant/chain',
    { config: { auth: 'tenant' }, schema: { tags: ['chain'], summary: 'Read the chain', params: tenantParams } },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      return store.getChain(req.params.tenant);
    },
  );

  app.put<{ Params: Params; Body: unknown }>(
    '/v1/tenants/:tenant/chain',
    { config: { auth: 'tenant' }, schema: { tags: ['chain'], summary: 'Replace the ordered chain', params: tenantParams, body: chainBody } },
    async (req) => {
      requireTenant(deps, req.params.tenant);
      return store.putChain(req.params.tenant, req.body);
    },
  );
}
