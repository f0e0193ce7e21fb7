// The README's quick-start command, run as a user would: it must come up and the curl it prints
// must show the plugin acting.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { freePort, freePortRange, ROOT } from './support/daemon.ts';

const exec = promisify(execFile);

test('scripts/demo.sh starts the runtime and the printed curl shows the plugin acting', async (t) => {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-demo-'));
  const ports = await freePortRange(5);
  const proc = spawn('bash', [path.join(ROOT, 'scripts/demo.sh')], {
    cwd: ROOT,
    env: {
      ...process.env,
      ISOMESH_STATE_DIR: stateDir,
      ISOMESH_ADMIN_ADDR: `127.0.0.1:${await freePort()}`,
      ISOMESH_GRPC_ADDR: `127.0.0.1:${await freePort()}`,
      ISOMESH_LISTENER_PORTS: `${ports.min}-${ports.max}`,
      ISOMESH_DATAPATH: 'off',
      DEMO_UPSTREAM_PORT: String(await freePort()),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  let err = '';
  proc.stdout.on('data', (c) => (out += c));
  proc.stderr.on('data', (c) => (err += c));
  t.after(async () => {
    if (proc.exitCode === null) {
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    }
    fs.rmSync(stateDir, { recursive: true, force: true });
  });

  const deadline = Date.now() + 120_000;
  while (!/Press Ctrl-C to stop/.test(out)) {
    assert.equal(proc.exitCode, null, `demo exited early:\n${out}\n${err}`);
    assert.ok(Date.now() < deadline, `demo did not finish setting up in time:\n${out}\n${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const curls = out.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('curl '));
  assert.equal(curls.length, 2, out);

  // Run the printed commands exactly as printed.
  const hello = await exec('sh', ['-c', curls[0]!]);
  assert.match(hello.stdout, /^HTTP\/1\.1 200/);
  assert.match(hello.stdout, /x-isomesh-plugin: greeter/i);
  assert.match(hello.stdout, /"x-greeting": ?"hello from isomesh \(tenant demo\)"/);
  const admin = await exec('sh', ['-c', curls[1]!]);
  assert.match(admin.stdout, /^HTTP\/1\.1 403/);
  assert.match(admin.stdout, /blocked by the greeter plugin of tenant demo/);
});
