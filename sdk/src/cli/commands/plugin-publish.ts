// `isomesh plugin publish [dir] --name N [--activate] [--canary PERCENT]`: build, upload the bundle
// as a new immutable version, then optionally make it active or send a share of traffic to it.
import { buildPluginBundle } from '../bundle.ts';
import { CliFailure, UsageError } from '../cli-errors.ts';
import { commandUsage, type CommandSpec } from '../command.ts';
import { fetchActivation, parsePercent, pluginPath, setActivation, type Activation } from '../plugin-state.ts';
import { describeBundle } from './plugin-build.ts';

interface PublishedVersion {
  version: number;
  digest?: string;
  size?: number;
}

export const pluginPublishCommand: CommandSpec = {
  words: ['plugin', 'publish'],
  synopsis: '[dir] --name N [--activate | --canary PERCENT] [--out file]',
  summary: 'build and upload a new plugin version; optionally activate it or canary it',
  details: [
    '  --name N           plugin name on the server (required)',
    '  --activate         make the new version active for all traffic',
    '  --canary PERCENT   keep the current active version, send PERCENT (0-100) of requests to the new one',
    '  --out file         where the bundle is written (default dist/plugin.js)',
  ].join('\n'),
  options: { name: { type: 'string' }, activate: { type: 'boolean' }, canary: { type: 'string' }, out: { type: 'string' } },
  args: { min: 0, max: 1 },
  async run(ctx) {
    const usage = commandUsage(ctx.spec);
    const name = ctx.string('name');
    if (!name) throw new UsageError('--name is required', usage);
    const canaryRaw = ctx.string('canary');
    if (canaryRaw !== undefined && ctx.flag('activate')) throw new UsageError('--activate and --canary exclude each other', usage);
    const percent = canaryRaw === undefined ? undefined : parsePercent(canaryRaw, '--canary', usage);
    const tenant = ctx.tenant();
    const client = ctx.client();

    // Check the canary's precondition before creating a version we could not route to.
    let current: Activation | undefined;
    if (percent !== undefined) {
      current = await fetchActivation(client, tenant, name);
      if (!current) throw new CliFailure(`plugin "${name}" has no active version to canary against; publish with --activate first`);
    }

    const bundle = await buildPluginBundle(ctx.resolvePath(ctx.positionals[0]), ctx.string('out'));
    if (!ctx.globals.json) ctx.io.stderr(describeBundle(ctx, bundle) + '\n');
    const { body: published } = await client.post<PublishedVersion>(pluginPath(tenant, name, 'versions'), {
      body: bundle.code, contentType: 'application/javascript',
    });
    if (typeof published?.version !== 'number') throw new CliFailure('the server did not report the new version number');

    let activation: Activation | undefined;
    if (ctx.flag('activate')) activation = { version: published.version };
    else if (current && percent !== undefined) {
      activation = { version: current.version, canary: { version: published.version, percent } };
    }
    if (activation) await setActivation(client, tenant, name, activation);

    ctx.print(() => {
      const lines = [`published ${name} version ${published.version} (${published.size ?? bundle.size} bytes, ${published.digest ?? bundle.digest})`];
      if (activation?.canary) lines.push(`canary: ${activation.canary.percent}% of requests to version ${published.version}, the rest to version ${activation.version}`);
      else if (activation) lines.push(`version ${activation.version} is now active`);
      return lines.join('\n');
    }, {
      tenant, plugin: name, version: published.version, digest: published.digest ?? bundle.digest,
      size: published.size ?? bundle.size, ...(activation ? { active: activation } : {}),
    });
  },
};
