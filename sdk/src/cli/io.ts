// Where a CLI run reads and writes. Injected so tests (and the repo's root bin) can drive main()
// without touching the real process streams, environment or working directory.

export interface CliIo {
  stdout(text: string): void;
  stderr(text: string): void;
  env: Record<string, string | undefined>;
  cwd: string;
}

export function processIo(): CliIo {
  return {
    stdout: (text) => void process.stdout.write(text),
    stderr: (text) => void process.stderr.write(text),
    env: process.env,
    cwd: process.cwd(),
  };
}

/** An io that records output in memory; handy for tests and for embedding the CLI. */
export interface CapturedIo extends CliIo {
  out: string[];
  err: string[];
}

export function capturedIo(env: Record<string, string | undefined> = {}, cwd = process.cwd()): CapturedIo {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, env, cwd, stdout: (t) => void out.push(t), stderr: (t) => void err.push(t) };
}
