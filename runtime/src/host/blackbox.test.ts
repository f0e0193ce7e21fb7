// The blackbox a cordon keeps: what it recorded last is what the daemon reads after the process was
// killed outright (SIGKILL: no exit handler, no flush), and a file it cannot map still works.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { openBlackbox } from './blackbox.ts';

function read(file: string): [number, number] {
  const b = fs.readFileSync(file);
  return [b.readDoubleLE(0), b.readDoubleLE(8)];
}

test('a mapped blackbox keeps the last record of a process killed with SIGKILL', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-blackbox-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'c.blackbox');
  fs.writeFileSync(file, Buffer.from(new Float64Array([-1, -1]).buffer));
  const child = `
    const { openBlackbox } = await import(${JSON.stringify(new URL('./blackbox.ts', import.meta.url).href)});
    const box = openBlackbox(${JSON.stringify(file)});
    for (let i = 0; i < 1000; i++) box.record(i, i % 3);
    box.record(-1, -1);
    box.record(1234, 2);
    process.stdout.write(box.kind);
    process.kill(process.pid, 'SIGKILL');
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', child], { encoding: 'utf8', timeout: 30_000 });
  assert.equal(r.signal, 'SIGKILL', r.stderr);
  assert.equal(r.stdout, 'mapped', 'this platform maps the file');
  assert.deepEqual(read(file), [1234, 2]);
});

test('record order: a cleared box reads as nothing running; a file too short to map falls back to pwrite', (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-blackbox-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const mapped = path.join(dir, 'm.blackbox');
  fs.writeFileSync(mapped, Buffer.alloc(16));
  const m = openBlackbox(mapped);
  m.record(9, 1);
  assert.deepEqual(read(mapped), [9, 1]);
  m.record(-1, -1);
  assert.deepEqual(read(mapped), [-1, -1]);
  const short = path.join(dir, 's.blackbox');
  fs.writeFileSync(short, '');
  const p = openBlackbox(short);
  assert.equal(p.kind, 'pwrite');
  p.record(5, 0);
  assert.deepEqual(read(short), [5, 0]);
});
