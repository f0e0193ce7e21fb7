// `ratelimit set|get|delete|list`: a tenant's self-service rate limits (a tenant token is enough).
// `set` replaces the whole rate limit (PUT semantics): descriptors from --key, the limit from
// --limit N/UNIT, --shadow to count only. The shape is checked here; the server checks the values.
import { apiPath } from '../client.ts';
import { UsageError } from '../cli-errors.ts';
import { commandUsage, type CommandSpec } from '../command.ts';
import { renderFields, renderTable } from '../table.ts';

const UNITS = ['second', 'minute', 'hour', 'day'] as const;

interface Descriptor {
  key: string;
  value?: string;
}

interface RateLimitView {
  name?: string;
  descriptors?: Descriptor[];
  limit?: { requestsPerUnit?: number; unit?: string };
  shadow?: boolean;
}

/** "header:x-user" → {key}; "route=login" → {key: "route", value: "login"} (split at the first "="). */
export function parseKeyFlag(raw: string): Descriptor {
  const eq = raw.indexOf('=');
  if (eq === -1) return { key: raw };
  return { key: raw.slice(0, eq), value: raw.slice(eq + 1) };
}

/** "100/minute" → {requestsPerUnit: 100, unit: "minute"}; undefined when malformed. */
export function parseLimitFlag(raw: string): { requestsPerUnit: number; unit: string } | undefined {
  const m = /^\s*(\d+)\s*\/\s*([a-z]+)\s*$/.exec(raw);
  if (!m || !(UNITS as readonly string[]).includes(m[2]!) || !Number.isSafeInteger(Number(m[1]))) return undefined;
  return { requestsPerUnit: Number(m[1]), unit: m[2]! };
}

const describe = (d: Descriptor) => (d.value === undefined ? d.key : `${d.key}=${d.value}`);
const limitText = (rl: RateLimitView) => `${rl.limit?.requestsPerUnit ?? '?'}/${rl.limit?.unit ?? '?'}`;

export const rateLimitSetCommand: CommandSpec = {
  words: ['ratelimit', 'set'],
  synopsis: '<name> --key KEY[=VALUE]... --limit N/UNIT [--shadow]',
  summary: "create or replace one of a tenant's rate limits",
  details: [
    '  --key KEY[=VALUE]  a descriptor (repeatable): remote_address, path, method, route or header:<name>;',
    '                     with =VALUE only requests with exactly that value count, without it each value',
    '                     gets its own counter (e.g. --key header:x-user --key route=login)',
    '  --limit N/UNIT     requests per second, minute, hour or day (e.g. 100/minute)',
    '  --shadow           count only: over-limit requests pass (isomesh_ratelimit_total result="shadow_over")',
  ].join('\n'),
  options: { key: { type: 'string', multiple: true }, limit: { type: 'string' }, shadow: { type: 'boolean' } },
  args: { min: 1, max: 1 },
  async run(ctx) {
    const usage = commandUsage(ctx.spec);
    const keys = (ctx.values.key as unknown as string[] | undefined) ?? [];
    const rawLimit = ctx.string('limit');
    const problems: string[] = [];
    if (keys.length === 0) problems.push('give at least one --key (e.g. --key remote_address)');
    const limit = rawLimit === undefined ? undefined : parseLimitFlag(rawLimit);
    if (rawLimit === undefined) problems.push('--limit N/UNIT is required (e.g. --limit 100/minute)');
    else if (!limit) problems.push(`--limit must be N/UNIT with UNIT one of ${UNITS.join(', ')} (got "${rawLimit}")`);
    if (problems.length > 0) throw new UsageError(problems.join('\n       '), usage);
    const name = ctx.positionals[0]!;
    const tenant = ctx.tenant();
    const body = { descriptors: keys.map(parseKeyFlag), limit: limit!, shadow: ctx.flag('shadow') };
    const { status, body: stored } = await ctx.client().put<RateLimitView>(apiPath('v1', 'tenants', tenant, 'ratelimits', name), body);
    const shown: RateLimitView = stored && typeof stored === 'object' ? stored : { name, ...body };
    const verb = status === 201 ? 'created' : 'replaced';
    ctx.print(
      () => `rate limit ${name} of ${tenant} ${verb}: ${limitText(shown)} by ${(shown.descriptors ?? []).map(describe).join(', ')}${shown.shadow ? ' (shadow)' : ''}`,
      { tenant, ...shown, created: status === 201 },
    );
  },
};

export const rateLimitGetCommand: CommandSpec = {
  words: ['ratelimit', 'get'],
  synopsis: '<name>',
  summary: 'show one rate limit',
  args: { min: 1, max: 1 },
  async run(ctx) {
    const name = ctx.positionals[0]!;
    const tenant = ctx.tenant();
    const { body } = await ctx.client().get<RateLimitView>(apiPath('v1', 'tenants', tenant, 'ratelimits', name));
    ctx.print(() => `rate limit ${name} of ${tenant}\n${renderFields([
      ['limit', limitText(body)],
      ['descriptors', (body.descriptors ?? []).map(describe).join(', ')],
      ['shadow', String(body.shadow ?? false)],
    ], '  ')}`, body);
  },
};

export const rateLimitDeleteCommand: CommandSpec = {
  words: ['ratelimit', 'delete'],
  synopsis: '<name>',
  summary: 'delete a rate limit',
  args: { min: 1, max: 1 },
  async run(ctx) {
    const name = ctx.positionals[0]!;
    const tenant = ctx.tenant();
    await ctx.client().delete(apiPath('v1', 'tenants', tenant, 'ratelimits', name));
    ctx.print(`rate limit ${name} of ${tenant} deleted`, { tenant, name, deleted: true });
  },
};

export const rateLimitListCommand: CommandSpec = {
  words: ['ratelimit', 'list'],
  synopsis: '',
  summary: "list a tenant's rate limits",
  args: { min: 0, max: 0 },
  async run(ctx) {
    const tenant = ctx.tenant();
    const { body } = await ctx.client().get<{ rateLimits?: RateLimitView[] }>(apiPath('v1', 'tenants', tenant, 'ratelimits'));
    const list = body?.rateLimits ?? [];
    ctx.print(() => list.length === 0 ? `no rate limits in ${tenant}` : renderTable(['NAME', 'LIMIT', 'SHADOW', 'DESCRIPTORS'],
      list.map((rl) => [String(rl.name ?? ''), limitText(rl), rl.shadow ? 'yes' : 'no', (rl.descriptors ?? []).map(describe).join(', ')])), list);
  },
};
