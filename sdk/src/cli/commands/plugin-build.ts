// `isomesh plugin build [dir] [--out file]`: bundle the plugin into one CommonJS file.
import path from 'node:path';
import { buildPluginBundle, DEFAULT_BUNDLE_OUT, type PluginBundle } from '../bundle.ts';
import type { CommandContext, CommandSpec } from '../command.ts';

export const pluginBuildCommand: CommandSpec = {
  words: ['plugin', 'build'],
  synopsis: '[dir] [--out file]',
  summary: 'bundle the plugin into one self-contained JS file',
  details: [
    `  --out file   where to write the bundle, relative to dir (default ${DEFAULT_BUNDLE_OUT})`,
    '  The entry is package.json "isomesh.entry", else "main", else src/index.ts. The bundle is',
    '  CommonJS (platform neutral, es2023); @isomesh/sdk is left external because the host provides it.',
  ].join('\n'),
  options: { out: { type: 'string' } },
  args: { min: 0, max: 1 },
  async run(ctx) {
    const bundle = await buildPluginBundle(ctx.resolvePath(ctx.positionals[0]), ctx.string('out'));
    reportBuild(ctx, bundle);
  },
};

export function describeBundle(ctx: CommandContext, bundle: PluginBundle): string {
  return `built ${path.relative(ctx.io.cwd, bundle.out) || bundle.out} (${bundle.size} bytes, ${bundle.digest})`;
}

function reportBuild(ctx: CommandContext, bundle: PluginBundle): void {
  for (const w of bundle.warnings) ctx.io.stderr(`warning: ${w.trimStart()}\n`);
  ctx.print(describeBundle(ctx, bundle), {
    entry: bundle.entry, out: bundle.out, size: bundle.size, sha256: bundle.digest.slice('sha256:'.length), digest: bundle.digest,
  });
}
