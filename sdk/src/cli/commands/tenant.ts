// `tenant create|delete|list|token`: the admin's tenant lifecycle.
import { apiPath } from '../client.ts';
import { UsageError } from '../cli-errors.ts';
import { commandUsage, type CommandSpec } from '../command.ts';
import { renderTable } from '../table.ts';

interface TenantView {
  name?: string;
  listenerPort?: number;
  [key: string]: unknown;
}

export const tenantCreateCommand: CommandSpec = {
  words: ['tenant', 'create'],
  synopsis: '<name> [--port N]',
  summary: 'create a tenant (or update its listener port)',
  details: '  --port N   listener port to bind (default: a free one from ISOMESH_LISTENER_PORTS)',
  options: { port: { type: 'string' } },
  args: { min: 1, max: 1 },
  async run(ctx) {
    const name = ctx.positionals[0]!;
    const body: { listenerPort?: number } = {};
    const port = ctx.string('port');
    if (port !== undefined) {
      if (!/^\d+$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
        throw new UsageError(`--port must be a whole number from 1 to 65535 (got "${port}")`, commandUsage(ctx.spec));
      }
      body.listenerPort = Number(port);
    }
    const { status, body: tenant } = await ctx.client().put<TenantView>(apiPath('v1', 'tenants', name), body);
    const verb = status === 201 ? 'created' : 'updated';
    ctx.print(`tenant ${name} ${verb} (listener port ${tenant?.listenerPort ?? 'unknown'})`,
      { ...(typeof tenant === 'object' ? tenant : {}), name, created: status === 201 });
  },
};

export const tenantDeleteCommand: CommandSpec = {
  words: ['tenant', 'delete'],
  synopsis: '<name>',
  summary: 'delete a tenant and everything it owns',
  args: { min: 1, max: 1 },
  async run(ctx) {
    const name = ctx.positionals[0]!;
    await ctx.client().delete(apiPath('v1', 'tenants', name));
    ctx.print(`tenant ${name} deleted`, { name, deleted: true });
  },
};

export const tenantListCommand: CommandSpec = {
  words: ['tenant', 'list'],
  synopsis: '',
  summary: 'list tenants (admin)',
  args: { min: 0, max: 0 },
  async run(ctx) {
    const { body } = await ctx.client().get(apiPath('v1', 'tenants'));
    const tenants: TenantView[] = Array.isArray(body) ? body : ((body as { tenants?: TenantView[] })?.tenants ?? []);
    ctx.print(() => tenants.length === 0 ? 'no tenants' : renderTable(['NAME', 'LISTENER PORT'],
      tenants.map((t) => [String(t.name ?? ''), t.listenerPort === undefined ? '' : String(t.listenerPort)])), tenants);
  },
};

export const tenantTokenCommand: CommandSpec = {
  words: ['tenant', 'token'],
  synopsis: '<name>',
  summary: "mint an API token for a tenant (admin); prints only the token",
  args: { min: 1, max: 1 },
  async run(ctx) {
    const name = ctx.positionals[0]!;
    const { body } = await ctx.client().post<{ token?: string }>(apiPath('v1', 'tenants', name, 'tokens'));
    const token = body?.token ?? '';
    ctx.print(token, { tenant: name, token });
  },
};
