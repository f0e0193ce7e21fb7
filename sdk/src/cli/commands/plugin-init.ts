// `isomesh plugin init <dir> [--name N]`: scaffold a plugin project; never overwrites anything.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CliFailure, UsageError } from '../cli-errors.ts';
import { commandUsage, type CommandSpec } from '../command.ts';
import { pluginScaffold } from '../scaffold.ts';

/** Plugin names share the tenant name grammar (API.md). */
export const PLUGIN_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;

export const pluginInitCommand: CommandSpec = {
  words: ['plugin', 'init'],
  synopsis: '<dir> [--name N]',
  summary: 'scaffold a plugin project (source, config schema, test, README)',
  details: '  --name N   plugin name (default: the directory name); lower-case letters, digits and "-"',
  options: { name: { type: 'string' } },
  args: { min: 1, max: 1 },
  async run(ctx) {
    const dir = ctx.resolvePath(ctx.positionals[0]);
    const name = ctx.string('name') ?? path.basename(dir);
    if (!PLUGIN_NAME_RE.test(name)) {
      throw new UsageError(`invalid plugin name "${name}": use 1-63 lower-case letters, digits and "-" ` +
        '(not at either end); pass --name', commandUsage(ctx.spec));
    }
    if (fs.existsSync(dir)) {
      if (!fs.statSync(dir).isDirectory()) throw new CliFailure(`${dir} exists and is not a directory`);
      if (fs.readdirSync(dir).length > 0) throw new CliFailure(`refusing to overwrite ${dir}: the directory is not empty`);
    }
    const files = pluginScaffold(name, fileURLToPath(new URL('../../../', import.meta.url)).replace(/\/$/, ''));
    for (const f of files) {
      const abs = path.join(dir, f.path);
      fs.mkdirSync(path.dirname(abs), { recursive: true });
      fs.writeFileSync(abs, f.content, { flag: 'wx' });
    }
    const rel = path.relative(ctx.io.cwd, dir) || '.';
    ctx.print(() => [
      `created plugin "${name}" in ${rel}`,
      ...files.map((f) => `  ${f.path}`),
      '',
      'next:',
      `  cd ${rel}`,
      '  isomesh plugin test',
      '  isomesh plugin build',
      `  isomesh plugin publish --name ${name} --activate`,
    ].join('\n'), { name, dir, files: files.map((f) => f.path) });
  },
};
