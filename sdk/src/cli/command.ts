// What a command is, and the context the dispatcher hands it: parsed flags, the resolved global
// settings, a lazily-built management client and an output helper that honours --json.
import fs from 'node:fs';
import path from 'node:path';
import type { ParseArgsOptionsConfig } from 'node:util';
import { ManagementClient } from './client.ts';
import { UsageError } from './cli-errors.ts';
import type { CliIo } from './io.ts';

export const DEFAULT_SERVER = 'http://127.0.0.1:7700';

/** Flags every command accepts, before or after the command words. */
export const GLOBAL_OPTIONS = {
  server: { type: 'string' },
  token: { type: 'string' },
  tenant: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsOptionsConfig;

export type FlagValues = Record<string, string | boolean | undefined>;

export interface GlobalSettings {
  server: string;
  /** --tenant / ISOMESH_TENANT, if given. */
  tenant: string | undefined;
  json: boolean;
}

export interface CommandSpec {
  /** The command words: ['plugin', 'build'] or ['status']. */
  words: readonly string[];
  /** Positional arguments and command flags as shown in usage, e.g. "<name> [--port N]". */
  synopsis: string;
  summary: string;
  /** Extra help lines (flag descriptions, examples). */
  details?: string;
  options?: ParseArgsOptionsConfig;
  args: { min: number; max: number };
  run(ctx: CommandContext): Promise<number | void>;
}

export function commandUsage(spec: CommandSpec): string {
  return `usage: isomesh ${spec.words.join(' ')} ${spec.synopsis}`.trimEnd();
}

export function commandHelp(spec: CommandSpec): string {
  const lines = [commandUsage(spec), '', spec.summary];
  if (spec.details) lines.push('', spec.details.trimEnd());
  lines.push('', 'Global flags: --server URL (ISOMESH_SERVER), --token T (ISOMESH_TOKEN), --tenant NAME (ISOMESH_TENANT), --json, --help');
  return lines.join('\n') + '\n';
}

export class CommandContext {
  readonly io: CliIo;
  readonly spec: CommandSpec;
  readonly values: FlagValues;
  readonly positionals: string[];
  readonly globals: GlobalSettings;
  #client: ManagementClient | undefined;
  readonly #tokenFlag: string | undefined;

  constructor(io: CliIo, spec: CommandSpec, values: FlagValues, positionals: string[]) {
    this.io = io;
    this.spec = spec;
    this.values = values;
    this.positionals = positionals;
    this.#tokenFlag = str(values.token);
    this.globals = {
      server: str(values.server) ?? nonEmpty(io.env.ISOMESH_SERVER) ?? DEFAULT_SERVER,
      tenant: str(values.tenant) ?? nonEmpty(io.env.ISOMESH_TENANT),
      json: values.json === true,
    };
  }

  client(): ManagementClient {
    this.#client ??= new ManagementClient(this.globals.server, this.#resolveToken());
    return this.#client;
  }

  /** The tenant a command acts on: an explicit positional wins over --tenant / ISOMESH_TENANT. */
  tenant(positional?: string): string {
    const tenant = positional ?? this.globals.tenant;
    if (!tenant) throw new UsageError('no tenant given: pass --tenant NAME or set ISOMESH_TENANT', commandUsage(this.spec));
    return tenant;
  }

  string(flag: string): string | undefined {
    return str(this.values[flag]);
  }

  flag(flag: string): boolean {
    return this.values[flag] === true;
  }

  /** Human text normally; with --json exactly one JSON document on stdout. */
  print(human: string | (() => string), json: unknown): void {
    if (this.globals.json) this.io.stdout(JSON.stringify(json, null, 2) + '\n');
    else {
      const text = typeof human === 'function' ? human() : human;
      if (text) this.io.stdout(text.endsWith('\n') ? text : text + '\n');
    }
  }

  /** Resolve a path given on the command line against the invocation's working directory. */
  resolvePath(p: string | undefined, fallback = '.'): string {
    return path.resolve(this.io.cwd, p ?? fallback);
  }

  // --token, ISOMESH_TOKEN, ISOMESH_ADMIN_TOKEN, then the admin-token file the daemon keeps in its
  // state dir (so an operator on the node needs no configuration).
  #resolveToken(): string | undefined {
    const env = this.io.env;
    const direct = this.#tokenFlag ?? nonEmpty(env.ISOMESH_TOKEN) ?? nonEmpty(env.ISOMESH_ADMIN_TOKEN);
    if (direct) return direct;
    const stateDir = path.resolve(this.io.cwd, nonEmpty(env.ISOMESH_STATE_DIR) ?? '.isomesh');
    try {
      return nonEmpty(fs.readFileSync(path.join(stateDir, 'admin-token'), 'utf8').trim());
    } catch {
      return undefined;
    }
  }
}

function str(v: string | boolean | undefined): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

function nonEmpty(v: string | undefined): string | undefined {
  return v ? v : undefined;
}
