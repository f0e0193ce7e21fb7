// `isomesh plugin test [dir]`: run the project's tests with node's own test runner. The CLI provides
// @isomesh/sdk to the project (sdk-resolve.ts), so a project needs no install and no network.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import { CliFailure } from '../cli-errors.ts';
import type { CommandSpec } from '../command.ts';

export const TEST_GLOB = 'test/**/*.test.ts';

export const pluginTestCommand: CommandSpec = {
  words: ['plugin', 'test'],
  synopsis: '[dir]',
  summary: `run the plugin's tests (node --test ${TEST_GLOB}); exits with their status`,
  details: '  With --json the test output goes to stderr and stdout gets {"ok", "exitCode"}.',
  args: { min: 0, max: 1 },
  async run(ctx) {
    const dir = ctx.resolvePath(ctx.positionals[0]);
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new CliFailure(`${dir} is not a directory`);
    // The same node that runs the CLI (Node 24 strips TypeScript natively).
    const env = { ...process.env, ...ctx.io.env };
    // Set when we ourselves run under `node --test`; it would make the child speak the runner's
    // internal protocol instead of printing a report.
    delete env.NODE_TEST_CONTEXT;
    // Through NODE_OPTIONS, so the runner's child process per test file gets it too.
    const preload = `--import=${new URL('../sdk-resolve.ts', import.meta.url).href}`;
    env.NODE_OPTIONS = env.NODE_OPTIONS ? `${env.NODE_OPTIONS} ${preload}` : preload;
    const child = spawn(process.execPath, ['--test', TEST_GLOB], {
      cwd: dir,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const toStdout = ctx.globals.json ? ctx.io.stderr : ctx.io.stdout;
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => toStdout(chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => ctx.io.stderr(chunk));
    const exitCode = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (code, signal) => resolve(code ?? (signal ? 128 + signalNumber(signal) : 1)));
    });
    ctx.print('', { ok: exitCode === 0, exitCode });
    return exitCode;
  },
};

function signalNumber(signal: NodeJS.Signals): number {
  return ({ SIGINT: 2, SIGKILL: 9, SIGTERM: 15 } as Record<string, number>)[signal] ?? 1;
}
