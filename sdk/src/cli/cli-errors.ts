// The CLI's failure kinds, each mapped to one documented exit code (docs/cli.md):
// 0 ok, 1 failure / user error, 2 cannot reach the server, 64 usage (EX_USAGE from sysexits.h).

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_UNREACHABLE = 2;
export const EXIT_USAGE = 64;

/** The command line itself is wrong: unknown command/flag, missing or malformed argument. */
export class UsageError extends Error {
  readonly exitCode = EXIT_USAGE;
  /** Usage text of the command the user was reaching for, printed after the message. */
  usage: string | undefined;
  constructor(message: string, usage?: string) {
    super(message);
    this.name = 'UsageError';
    this.usage = usage;
  }
}

/** Something failed locally (build error, refusing to overwrite, no such version, ...). */
export class CliFailure extends Error {
  readonly exitCode = EXIT_FAILURE;
  constructor(message: string) {
    super(message);
    this.name = 'CliFailure';
  }
}

/** The server answered with an error document `{"error": {"code", "message"}}` (or a bare status). */
export class ApiError extends Error {
  readonly exitCode = EXIT_FAILURE;
  readonly status: number;
  readonly code: string;
  readonly details: unknown;
  constructor(status: number, code: string, message: string, details?: unknown) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** No HTTP answer at all: refused, unresolvable, timed out. */
export class ServerUnreachableError extends Error {
  readonly exitCode = EXIT_UNREACHABLE;
  readonly server: string;
  constructor(server: string, reason: string) {
    super(`cannot reach the isomesh server at ${server} (${reason}); is the daemon running? ` +
      'Point the CLI at it with --server URL or ISOMESH_SERVER.');
    this.name = 'ServerUnreachableError';
    this.server = server;
  }
}
