// The `isomesh` executable: `run` belongs to the runtime, every other command to the SDK's CLI.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';

const MAIN = path.join(import.meta.dirname, 'main.ts');
const isomesh = (...args: string[]) => spawnSync(process.execPath, [MAIN, ...args], { encoding: 'utf8', timeout: 30_000 });

test('isomesh --help lists the CLI commands and run', () => {
  const r = isomesh('--help');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /plugin publish/);
  assert.match(r.stdout, /^\s+run\s+start the daemon/m);
});

test('isomesh run: --help exits 0, a bad flag is a usage error (64), a bad setting fails the start clearly (1)', () => {
  const help = isomesh('run', '--help');
  assert.equal(help.status, 0);
  assert.match(help.stdout, /ISOMESH_ADMIN_ADDR/);
  const bad = isomesh('run', '--no-such-flag');
  assert.equal(bad.status, 64);
  assert.match(bad.stderr, /no-such-flag/);
  const range = isomesh('run', '--listener-ports', '9000-100');
  assert.equal(range.status, 1);
  assert.match(range.stderr, /ISOMESH_LISTENER_PORTS must be "min-max"/);
});
