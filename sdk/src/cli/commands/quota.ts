// `quota get|set [tenant]`: a tenant's resource limits. `set` is a partial update; values are checked
// here first so a typo is explained before anything is sent.
import { apiPath } from '../client.ts';
import { UsageError } from '../cli-errors.ts';
import { commandUsage, type CommandSpec } from '../command.ts';
import { renderFields } from '../table.ts';

interface QuotaFlag {
  flag: string;
  field: string;
  min: number;
  meaning: string;
}

/** Flag → API field, with the smallest value that makes sense for each. */
export const QUOTA_FLAGS: readonly QuotaFlag[] = [
  { flag: 'memory-mb', field: 'memoryMb', min: 1, meaning: 'heap limit of the tenant isolate(s), MiB' },
  { flag: 'cpu-ms-per-request', field: 'cpuMsPerRequest', min: 1, meaning: 'plugin CPU per request, ms' },
  { flag: 'cpu-ms-per-second', field: 'cpuMsPerSecond', min: 1, meaning: 'sustained plugin CPU, ms per second' },
  { flag: 'max-concurrent', field: 'maxConcurrentRequests', min: 1, meaning: 'in-flight requests on the listener' },
  { flag: 'rps', field: 'requestsPerSecond', min: 0, meaning: 'admission rate, requests/s (0 = unlimited)' },
  { flag: 'max-plugins', field: 'maxPlugins', min: 0, meaning: 'plugins the tenant may own' },
  { flag: 'max-bundle-bytes', field: 'maxBundleBytes', min: 1, meaning: 'largest plugin bundle, bytes' },
  { flag: 'weight', field: 'weight', min: 1, meaning: 'share of contended plugin CPU' },
];

export const quotaGetCommand: CommandSpec = {
  words: ['quota', 'get'],
  synopsis: '[tenant]',
  summary: "show a tenant's quota",
  args: { min: 0, max: 1 },
  async run(ctx) {
    const tenant = ctx.tenant(ctx.positionals[0]);
    const { body } = await ctx.client().get<Record<string, unknown>>(apiPath('v1', 'tenants', tenant, 'quota'));
    ctx.print(() => formatQuota(tenant, body), body);
  },
};

export const quotaSetCommand: CommandSpec = {
  words: ['quota', 'set'],
  synopsis: '[tenant] ' + QUOTA_FLAGS.map((q) => `[--${q.flag} N]`).join(' '),
  summary: "change some of a tenant's quota fields (admin)",
  details: QUOTA_FLAGS.map((q) => `  --${q.flag.padEnd(20)} ${q.meaning} (whole number >= ${q.min})`).join('\n'),
  options: Object.fromEntries(QUOTA_FLAGS.map((q) => [q.flag, { type: 'string' as const }])),
  args: { min: 0, max: 1 },
  async run(ctx) {
    const update = parseQuotaFlags(ctx.values, commandUsage(ctx.spec));
    const tenant = ctx.tenant(ctx.positionals[0]);
    const { body } = await ctx.client().put<Record<string, unknown>>(apiPath('v1', 'tenants', tenant, 'quota'), update);
    const shown = body && typeof body === 'object' ? body : update;
    ctx.print(() => `quota of ${tenant} updated\n${formatQuota(tenant, shown).split('\n').slice(1).join('\n')}`, shown);
  },
};

/** The partial quota update the flags ask for; every bad value is reported at once. */
export function parseQuotaFlags(values: Record<string, string | boolean | undefined>, usage: string): Record<string, number> {
  const update: Record<string, number> = {};
  const problems: string[] = [];
  for (const q of QUOTA_FLAGS) {
    const raw = values[q.flag];
    if (typeof raw !== 'string') continue;
    const n = Number(raw);
    if (!/^\s*\d+\s*$/.test(raw) || !Number.isSafeInteger(n)) problems.push(`--${q.flag} must be a whole number (got "${raw}")`);
    else if (n < q.min) problems.push(`--${q.flag} must be at least ${q.min} (got ${n})`);
    else update[q.field] = n;
  }
  if (problems.length > 0) throw new UsageError(problems.join('\n       '), usage);
  if (Object.keys(update).length === 0) {
    throw new UsageError('nothing to set: give at least one of ' + QUOTA_FLAGS.map((q) => `--${q.flag}`).join(', '), usage);
  }
  return update;
}

function formatQuota(tenant: string, quota: Record<string, unknown>): string {
  const known = QUOTA_FLAGS.filter((q) => q.field in quota).map((q): [string, string] => [q.field, String(quota[q.field])]);
  const extra = Object.keys(quota).filter((k) => !QUOTA_FLAGS.some((q) => q.field === k))
    .map((k): [string, string] => [k, typeof quota[k] === 'object' ? JSON.stringify(quota[k]) : String(quota[k])]);
  return `quota of ${tenant}\n${renderFields([...known, ...extra], '  ')}`;
}
