#!/usr/bin/env node
// The `isomesh` executable: `isomesh run` starts the daemon; every other command is the SDK's CLI
// (plugin authoring and operator commands), which talks to a running daemon over the management API.
import { parseArgs } from 'node:util';
import { configFromEnv } from './config.ts';
import { Daemon } from './daemon.ts';
import { IsomeshError } from './errors.ts';

const RUN_USAGE = `usage: isomesh run [--admin-addr HOST:PORT] [--grpc-addr HOST:PORT] [--state-dir DIR]
                   [--listener-ports MIN-MAX] [--datapath auto|on|off] [--log-level LEVEL]
Starts the isomesh daemon in the foreground. Each flag mirrors an environment variable
(ISOMESH_ADMIN_ADDR, ISOMESH_GRPC_ADDR, ISOMESH_STATE_DIR, ISOMESH_LISTENER_PORTS, ISOMESH_DATAPATH,
ISOMESH_LOG_LEVEL); ISOMESH_ADMIN_TOKEN sets the admin token. Also read from the environment:
ISOMESH_LISTEN_ADDRESS (tenant listeners, default 127.0.0.1), ISOMESH_BPF_PIN_DIR (default /sys/fs/bpf/isomesh),
ISOMESH_PROXY_CGROUP (cgroup v2 dir the daemon moves into when the datapath is on), ISOMESH_HOST_MODE
(cordon|inline) and ISOMESH_CORDONS (plugin worker processes); tenant listener limits:
ISOMESH_HEADERS_TIMEOUT_MS (whole request head, default 10000), ISOMESH_IDLE_TIMEOUT_MS (keep-alive
idle, default 60000), ISOMESH_BODY_TIMEOUT_MS (gap in a request body, default 30000), ISOMESH_MAX_CONNECTIONS
(client connections on the node, default half the descriptor limit; per tenant: quota maxConnections).
SIGTERM drains and exits 0.`;

export async function run(argv: string[]): Promise<number> {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        'admin-addr': { type: 'string' },
        'grpc-addr': { type: 'string' },
        'state-dir': { type: 'string' },
        'listener-ports': { type: 'string' },
        datapath: { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${RUN_USAGE}\n`);
    return 64;
  }
  if (values.help) {
    process.stdout.write(`${RUN_USAGE}\n`);
    return 0;
  }
  const overrides: Record<string, string> = {};
  const flagToEnv: Record<string, string> = {
    'admin-addr': 'ISOMESH_ADMIN_ADDR',
    'grpc-addr': 'ISOMESH_GRPC_ADDR',
    'state-dir': 'ISOMESH_STATE_DIR',
    'listener-ports': 'ISOMESH_LISTENER_PORTS',
    datapath: 'ISOMESH_DATAPATH',
    'log-level': 'ISOMESH_LOG_LEVEL',
  };
  for (const [flag, name] of Object.entries(flagToEnv)) {
    const v = values[flag];
    if (typeof v === 'string') overrides[name] = v;
  }
  let daemon: Daemon;
  try {
    daemon = await Daemon.start(configFromEnv(process.env, overrides));
  } catch (err) {
    const msg = err instanceof IsomeshError ? `${err.message} (${err.code})` : (err as Error).stack ?? String(err);
    process.stderr.write(`isomesh: cannot start: ${msg}\n`);
    return 1;
  }
  return await new Promise<number>((resolve) => {
    let stopping = false;
    const stop = (signal: string): void => {
      if (stopping) return;
      stopping = true;
      daemon.logger.info({ signal }, 'draining');
      daemon.stop().then(
        () => resolve(0),
        (err: unknown) => {
          daemon.logger.error({ err }, 'error while stopping');
          resolve(1);
        },
      );
    };
    process.once('SIGTERM', () => stop('SIGTERM'));
    process.once('SIGINT', () => stop('SIGINT'));
  });
}

async function main(argv: string[]): Promise<number> {
  if (argv[0] === 'run') return run(argv.slice(1));
  const { main: cli } = await import('@isomesh/sdk/cli');
  return cli(argv, { extraCommands: { run: { summary: 'start the daemon in the foreground (isomesh run --help)', run: (args: string[]) => run(args) } } });
}

if (import.meta.main) {
  main(process.argv.slice(2)).then((code) => process.exit(code));
}
