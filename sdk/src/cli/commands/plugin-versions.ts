// `plugin versions`, `plugin activate`, `plugin rollback`: inspect and move a plugin's activation.
import { UsageError } from '../cli-errors.ts';
import { commandUsage, type CommandSpec } from '../command.ts';
import { renderTable } from '../table.ts';
import {
  activationOf, fetchActivation, parsePercent, parseVersion, pluginPath, previousVersion, setActivation,
  versionsOf, type Activation,
} from '../plugin-state.ts';
import { CliFailure } from '../cli-errors.ts';

export const pluginVersionsCommand: CommandSpec = {
  words: ['plugin', 'versions'],
  synopsis: '<name>',
  summary: "list a plugin's versions and which one is active",
  args: { min: 1, max: 1 },
  async run(ctx) {
    const name = ctx.positionals[0]!;
    const tenant = ctx.tenant();
    const client = ctx.client();
    const [{ body: list }, { body: plugin }] = await Promise.all([
      client.get(pluginPath(tenant, name, 'versions')),
      client.get(pluginPath(tenant, name)),
    ]);
    const versions = versionsOf(list);
    const active = activationOf(plugin);
    ctx.print(() => {
      if (versions.length === 0) return `plugin ${name} has no versions`;
      return renderTable(['VERSION', 'STATE', 'SIZE', 'DIGEST', 'CREATED'], versions.map((v) => [
        String(v.version), stateOf(v.version, active), v.size === undefined ? '' : String(v.size),
        v.digest ?? '', v.createdAt ?? '',
      ]));
    }, { tenant, plugin: name, active: active ?? null, versions });
  },
};

function stateOf(version: number, active: Activation | undefined): string {
  if (active?.version === version) return 'active';
  if (active?.canary?.version === version) return `canary ${active.canary.percent}%`;
  return '';
}

export const pluginActivateCommand: CommandSpec = {
  words: ['plugin', 'activate'],
  synopsis: '<name> <version> [--canary-version V --percent P]',
  summary: 'make a version active, optionally with a canary version on P% of requests',
  details: [
    '  --canary-version V   a second version that receives --percent of new requests',
    '  --percent P          0-100; required with --canary-version',
  ].join('\n'),
  options: { 'canary-version': { type: 'string' }, percent: { type: 'string' } },
  args: { min: 2, max: 2 },
  async run(ctx) {
    const usage = commandUsage(ctx.spec);
    const [name, versionRaw] = ctx.positionals as [string, string];
    const activation: Activation = { version: parseVersion(versionRaw, 'version', usage) };
    const canaryRaw = ctx.string('canary-version');
    const percentRaw = ctx.string('percent');
    if ((canaryRaw === undefined) !== (percentRaw === undefined)) {
      throw new UsageError('--canary-version and --percent go together', usage);
    }
    if (canaryRaw !== undefined && percentRaw !== undefined) {
      activation.canary = {
        version: parseVersion(canaryRaw, '--canary-version', usage),
        percent: parsePercent(percentRaw, '--percent', usage),
      };
    }
    const tenant = ctx.tenant();
    await setActivation(ctx.client(), tenant, name, activation);
    ctx.print(() => describeActivation(name, activation), { tenant, plugin: name, active: activation });
  },
};

export const pluginRollbackCommand: CommandSpec = {
  words: ['plugin', 'rollback'],
  synopsis: '<name>',
  summary: 'end a running canary (the active version stays); otherwise activate the highest version below the active one',
  args: { min: 1, max: 1 },
  async run(ctx) {
    const name = ctx.positionals[0]!;
    const tenant = ctx.tenant();
    const client = ctx.client();
    const current = await fetchActivation(client, tenant, name);
    if (!current) throw new CliFailure(`plugin "${name}" has no active version to roll back from`);
    if (current.canary) {
      // A canary is the change being tried: rolling back ends it, the active version serves everything.
      const activation: Activation = { version: current.version };
      await setActivation(client, tenant, name, activation);
      ctx.print(`rolled back ${name}: ended the canary of version ${current.canary.version}; version ${current.version} serves all requests`,
        { tenant, plugin: name, from: current, endedCanary: current.canary.version, active: activation });
      return;
    }
    const { body } = await client.get(pluginPath(tenant, name, 'versions'));
    const target = previousVersion(versionsOf(body), current.version);
    const activation: Activation = { version: target };
    await setActivation(client, tenant, name, activation);
    ctx.print(`rolled back ${name}: version ${current.version} -> ${target}`,
      { tenant, plugin: name, from: current.version, active: activation });
  },
};

function describeActivation(name: string, a: Activation): string {
  const base = `${name}: version ${a.version} is active`;
  return a.canary ? `${base}, canary version ${a.canary.version} on ${a.canary.percent}% of requests` : base;
}
