// The `isomesh` dispatcher: `isomesh <noun> <verb> [args] [flags]`. It finds the command words,
// parses the rest with node:util parseArgs (strict), and maps every failure to a documented exit code.
// The runtime adds its own commands (`run`) through `extraCommands`, so the sdk never imports it.
import { parseArgs } from 'node:util';
import { ApiError, CliFailure, EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ServerUnreachableError, UsageError } from './cli-errors.ts';
import { CommandContext, commandHelp, commandUsage, GLOBAL_OPTIONS, type CommandSpec, type FlagValues } from './command.ts';
import { processIo, type CliIo } from './io.ts';
import { pluginBuildCommand } from './commands/plugin-build.ts';
import { pluginInitCommand } from './commands/plugin-init.ts';
import { pluginPublishCommand } from './commands/plugin-publish.ts';
import { pluginTestCommand } from './commands/plugin-test.ts';
import { pluginActivateCommand, pluginRollbackCommand, pluginVersionsCommand } from './commands/plugin-versions.ts';
import { quotaGetCommand, quotaSetCommand } from './commands/quota.ts';
import { rateLimitDeleteCommand, rateLimitGetCommand, rateLimitListCommand, rateLimitSetCommand } from './commands/ratelimit.ts';
import { statusCommand } from './commands/status.ts';
import { tenantCreateCommand, tenantDeleteCommand, tenantListCommand, tenantTokenCommand } from './commands/tenant.ts';

export type ExtraCommandFn = (argv: string[], io: CliIo) => number | void | Promise<number | void>;
/** A command added by the embedding program; it receives argv without its own name and parses it itself. */
export type ExtraCommand = ExtraCommandFn | { summary: string; run: ExtraCommandFn };

export interface MainOptions extends Partial<CliIo> {
  extraCommands?: Record<string, ExtraCommand>;
}

export const COMMANDS: readonly CommandSpec[] = [
  pluginInitCommand, pluginBuildCommand, pluginTestCommand, pluginPublishCommand,
  pluginVersionsCommand, pluginActivateCommand, pluginRollbackCommand,
  tenantCreateCommand, tenantDeleteCommand, tenantListCommand, tenantTokenCommand,
  quotaGetCommand, quotaSetCommand, statusCommand,
  rateLimitSetCommand, rateLimitGetCommand, rateLimitDeleteCommand, rateLimitListCommand,
];

// Global flags that take a value: when looking for the command words, their value is not a word.
const VALUE_FLAGS = new Set(['--server', '--token', '--tenant']);

export async function main(argv: string[], options: MainOptions = {}): Promise<number> {
  const base = processIo();
  const io: CliIo = {
    stdout: options.stdout ?? base.stdout,
    stderr: options.stderr ?? base.stderr,
    env: options.env ?? base.env,
    cwd: options.cwd ?? base.cwd,
  };
  const extra = options.extraCommands ?? {};
  try {
    return await dispatch(argv, io, extra);
  } catch (err) {
    return report(err, io);
  }
}

async function dispatch(argv: string[], io: CliIo, extra: Record<string, ExtraCommand>): Promise<number> {
  const words = findWords(argv, 2);
  const wantsHelp = argv.some((a) => a === '--help' || a === '-h');
  const first = words[0];

  if (!first) {
    if (wantsHelp) return io.stdout(topUsage(extra)), EXIT_OK;
    throw new UsageError('no command given', topUsage(extra).trimEnd());
  }
  if (first.word === 'help') return io.stdout(topUsage(extra)), EXIT_OK;
  if (Object.hasOwn(extra, first.word)) {
    const cmd = extra[first.word]!;
    const fn = typeof cmd === 'function' ? cmd : cmd.run;
    return (await fn(argv.filter((_, i) => i !== first.index), io)) ?? EXIT_OK;
  }

  const nounCommands = COMMANDS.filter((c) => c.words[0] === first.word);
  if (nounCommands.length === 0) throw new UsageError(`unknown command "${first.word}"`, topUsage(extra).trimEnd());

  let spec = nounCommands.find((c) => c.words.length === 1);
  let used = [first.index];
  if (!spec) {
    const second = words[1];
    spec = second && nounCommands.find((c) => c.words[1] === second.word);
    if (!spec) {
      const list = nounUsage(first.word, nounCommands);
      if (!second && wantsHelp) return io.stdout(list), EXIT_OK;
      const why = second ? `unknown command "${first.word} ${second.word}"` : `"${first.word}" needs a subcommand`;
      throw new UsageError(why, list.trimEnd());
    }
    used = [first.index, second!.index];
  }

  const rest = argv.filter((_, i) => !used.includes(i));
  let values: FlagValues;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({
      args: rest, options: { ...GLOBAL_OPTIONS, ...spec.options }, allowPositionals: true, strict: true,
    }) as { values: FlagValues; positionals: string[] });
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code?.startsWith('ERR_PARSE_ARGS')) throw new UsageError((err as Error).message, commandUsage(spec));
    throw err;
  }
  if (values.help) return io.stdout(commandHelp(spec)), EXIT_OK;
  if (positionals.length < spec.args.min) {
    throw new UsageError(`missing argument${spec.args.min - positionals.length > 1 ? 's' : ''}`, commandUsage(spec));
  }
  if (positionals.length > spec.args.max) {
    throw new UsageError(`unexpected argument "${positionals[spec.args.max]}"`, commandUsage(spec));
  }
  return (await spec.run(new CommandContext(io, spec, values, positionals))) ?? EXIT_OK;
}

/** The first `max` non-flag tokens and where they are, skipping the values of global value flags. */
function findWords(argv: string[], max: number): Array<{ word: string; index: number }> {
  const words: Array<{ word: string; index: number }> = [];
  for (let i = 0; i < argv.length && words.length < max; i++) {
    const a = argv[i]!;
    if (a === '--') break;
    if (a.startsWith('-')) {
      if (VALUE_FLAGS.has(a)) i++;
      continue;
    }
    words.push({ word: a, index: i });
    // A one-word command ("status", an extra command) takes no verb: stop looking.
    if (words.length === 1 && COMMANDS.some((c) => c.words.length === 1 && c.words[0] === a)) break;
  }
  return words;
}

function report(err: unknown, io: CliIo): number {
  if (err instanceof UsageError) {
    io.stderr(`error: ${err.message}\n${err.usage ? `\n${err.usage}\n` : ''}`);
    return err.exitCode;
  }
  if (err instanceof ApiError) {
    io.stderr(`error: ${err.message} (${err.code})\n${formatDiagnostics(err.details)}`);
    return err.exitCode;
  }
  if (err instanceof ServerUnreachableError || err instanceof CliFailure) {
    io.stderr(`error: ${err.message}\n`);
    return err.exitCode;
  }
  io.stderr(`error: unexpected failure: ${(err as Error)?.stack ?? String(err)}\n`);
  return EXIT_FAILURE;
}

// Compile/load errors carry diagnostics (API.md: 400 with line/column) in `details` (an array) or
// `diagnostics`; show them like a compiler, with line and column exactly as the server reports them.
function formatDiagnostics(envelope: unknown): string {
  const e = envelope as { details?: unknown; diagnostics?: unknown } | undefined;
  const nested = (e?.details as { diagnostics?: unknown } | undefined)?.diagnostics;
  const list = [e?.diagnostics, nested, e?.details].find(Array.isArray) as unknown[] | undefined;
  if (!list) return '';
  return list.map((d) => {
    if (typeof d === 'string') return `  ${d}\n`;
    const { file, line, column, message } = (d ?? {}) as { file?: string; line?: number; column?: number; message?: string };
    if (typeof message !== 'string') return '';
    const where = [file ?? 'plugin', line, column].filter((x) => x !== undefined).join(':');
    return `  ${where}: ${message}\n`;
  }).join('');
}

function nounUsage(noun: string, specs: readonly CommandSpec[]): string {
  const lines = specs.map((s) => `  ${commandUsage(s).slice('usage: '.length)}\n      ${s.summary}`);
  return `usage: isomesh ${noun} <command> [flags]\n\n${lines.join('\n')}\n`;
}

function topUsage(extra: Record<string, ExtraCommand>): string {
  const rows: Array<[string, string]> = COMMANDS.map((s) => [s.words.join(' '), s.summary]);
  for (const [name, cmd] of Object.entries(extra)) rows.push([name, typeof cmd === 'function' ? '' : cmd.summary]);
  const width = Math.max(...rows.map((r) => r[0].length));
  return [
    'usage: isomesh <noun> <verb> [args] [flags]',
    '',
    'Commands:',
    ...rows.map(([n, s]) => `  ${n.padEnd(width)}  ${s}`.trimEnd()),
    '',
    'Global flags:',
    '  --server URL   management API (ISOMESH_SERVER, default http://127.0.0.1:7700)',
    '  --token T      bearer token (ISOMESH_TOKEN; else the daemon\'s admin-token file)',
    '  --tenant NAME  tenant to act on (ISOMESH_TENANT)',
    '  --json         machine output: one JSON document on stdout',
    '  --help, -h     help for any command',
    '',
    'Exit codes: 0 ok, 1 failure, 2 cannot reach the server, 64 usage error.',
    '',
  ].join('\n');
}
