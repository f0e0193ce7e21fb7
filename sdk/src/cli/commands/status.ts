// `isomesh status [tenant]`: one screen with the tenant's listener, plugins and quota usage.
import { apiPath } from '../client.ts';
import type { CommandSpec } from '../command.ts';
import { activationOf } from '../plugin-state.ts';
import { renderFields, renderTable } from '../table.ts';

type Json = Record<string, unknown>;

export const statusCommand: CommandSpec = {
  words: ['status'],
  synopsis: '[tenant]',
  summary: "show a tenant's listener, plugins (active/canary/health) and quota usage",
  args: { min: 0, max: 1 },
  async run(ctx) {
    const tenant = ctx.tenant(ctx.positionals[0]);
    const { body } = await ctx.client().get<Json>(apiPath('v1', 'tenants', tenant, 'status'));
    ctx.print(() => formatStatus(tenant, body && typeof body === 'object' ? body : {}), body);
  },
};

export function formatStatus(tenant: string, s: Json): string {
  const out = [`tenant ${tenant}`, renderFields([['listener', formatListener(s.listener ?? s.listenerPort)]], '  '), ''];
  const plugins = pluginRows(s.plugins);
  out.push('plugins:');
  out.push(plugins.length === 0 ? '  (none)' : indent(renderTable(['NAME', 'ACTIVE', 'CANARY', 'HEALTH', 'LAST ERROR'], plugins)));
  const usage = (s.usage ?? s.quotaUsage) as Json | undefined;
  if (usage && typeof usage === 'object') {
    out.push('', 'quota usage:', renderFields(Object.entries(usage).map(([k, v]) => [k, formatUsage(v)]), '  '));
  }
  return out.join('\n');
}

function formatListener(l: unknown): string {
  if (typeof l === 'number' || typeof l === 'string') return String(l);
  if (l && typeof l === 'object') {
    const { address, host, port, bound } = l as Json;
    const where = [address ?? host, port].filter((x) => x !== undefined).join(':');
    return bound === false ? `${where} (not bound)` : where || JSON.stringify(l);
  }
  return 'none';
}

// Health sits on the plugin (`health`, `lastError`) or, as the runtime reports it, on the active
// and canary version objects (`active: {version, health, lastError: {code, message, at}}`).
function pluginRows(plugins: unknown): string[][] {
  const list: Json[] = Array.isArray(plugins)
    ? plugins
    : plugins && typeof plugins === 'object'
      ? Object.entries(plugins as Record<string, Json>).map(([name, p]) => ({ name, ...p }))
      : [];
  return list.map((p) => {
    const a = activationOf(p);
    const activeObj = (p.active && typeof p.active === 'object' ? p.active : {}) as Json;
    const canaryObj = (p.canary && typeof p.canary === 'object' ? p.canary : {}) as Json;
    let health = healthOf(p.health) ?? healthOf(activeObj.health) ?? '-';
    const canaryHealth = healthOf(canaryObj.health);
    if (canaryHealth && canaryHealth !== 'ok') health += `, canary ${canaryHealth}`;
    const lastError = p.lastError ?? (p.health as Json | undefined)?.lastError ?? activeObj.lastError ?? canaryObj.lastError;
    return [
      String(p.name ?? ''),
      a ? String(a.version) : '-',
      a?.canary ? `${a.canary.version} (${a.canary.percent}%)` : '-',
      health,
      formatError(lastError),
    ];
  });
}

function healthOf(h: unknown): string | undefined {
  if (typeof h === 'string') return h;
  if (h && typeof h === 'object') {
    const s = (h as Json).status ?? (h as Json).state;
    return typeof s === 'string' ? s : undefined;
  }
  return undefined;
}

function formatError(e: unknown): string {
  if (e === undefined || e === null) return '';
  if (typeof e === 'object') {
    const { code, message, at } = e as Json;
    if (typeof message === 'string') return `${typeof code === 'string' ? `${code}: ` : ''}${message}${typeof at === 'string' ? ` (${at})` : ''}`;
    return JSON.stringify(e);
  }
  return String(e);
}

// Usage values are numbers, or {used, limit}-style pairs worth showing as "used / limit".
function formatUsage(v: unknown): string {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const o = v as Json;
    const used = o.used ?? o.current ?? o.value;
    const limit = o.limit ?? o.max;
    if (used !== undefined && limit !== undefined) return `${fmt(used)} / ${fmt(limit)}`;
    return Object.entries(o).map(([k, x]) => `${k}=${fmt(x)}`).join(' ');
  }
  return fmt(v);
}

function fmt(v: unknown): string {
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : v.toFixed(2);
  return typeof v === 'object' ? JSON.stringify(v) : String(v);
}

function indent(text: string): string {
  return text.split('\n').map((l) => `  ${l}`).join('\n');
}
