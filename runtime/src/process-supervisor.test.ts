import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import { defaultDelay, ProcessSupervisor, type ExitInfo } from './process-supervisor.ts';

/** A node child running `code` (each test's processes end by themselves within 20 s at the latest). */
const node = (code: string) => () => spawn(process.execPath, ['-e', `setTimeout(() => process.exit(9), 20000); ${code}`], { stdio: 'ignore' });

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await sleep(10);
  assert.ok(cond(), what);
}

test('default back-off: the first restart at once, then 100 ms doubling, capped at 10 s', () => {
  assert.deepEqual([1, 2, 3, 4, 5].map(defaultDelay), [0, 100, 200, 400, 800]);
  assert.equal(defaultDelay(40), 10_000);
});

test('restarts after each exit with the delay of its streak; stop() ends it for good', async () => {
  const streaks: number[] = [];
  const exits: ExitInfo[] = [];
  let starts = 0;
  const sup = new ProcessSupervisor({
    spawn: node('process.exit(3)'),
    onStart: () => starts++,
    onExit: (info) => void exits.push(info),
    delay: (streak) => (streaks.push(streak), 10),
  });
  sup.start();
  await until(() => starts >= 4, 'restarted three times');
  await sup.stop();
  assert.equal(sup.state, 'stopped');
  assert.deepEqual(streaks.slice(0, 3), [1, 2, 3], 'quick exits make one growing streak');
  assert.ok(exits.every((e) => e.code === 3 && e.signal === null));
  assert.equal(sup.restarts, starts - 1);
  const n = starts;
  await sleep(50);
  assert.equal(starts, n, 'no restart after stop');
  sup.start();
  assert.equal(starts, n, 'a stopped supervisor stays stopped');
});

test('onExit returning false leaves it idle; wanted() false at the end of the back-off too; start() brings it back', async () => {
  let starts = 0;
  const a = new ProcessSupervisor({ spawn: node('process.exit(1)'), onStart: () => starts++, onExit: () => false });
  a.start();
  await until(() => a.state === 'idle', 'idle after the exit');
  assert.equal(starts, 1);
  a.start();
  await until(() => starts === 2 && a.state === 'idle', 'start() spawned again');

  let wanted = false;
  const b = new ProcessSupervisor({ spawn: node('process.exit(1)'), wanted: () => wanted, delay: () => 0 });
  b.start();
  await until(() => b.state === 'idle', 'not wanted: idle');
  assert.equal(b.restarts, 0);
  wanted = true;
  b.start();
  await until(() => b.restarts > 0, 'wanted again: restarts');
  b.kill();
  assert.equal(b.state, 'stopped');
});

test('stop(): SIGTERM, SIGKILL after the grace when the process ignores it; prelude runs first and an exit meanwhile is no crash', async () => {
  let ready!: Promise<void>;
  const stubborn = new ProcessSupervisor({
    spawn: () => spawn(process.execPath, ['-e', `process.on('SIGTERM', () => {}); setTimeout(() => process.exit(9), 20000); process.stdout.write('ready');`], { stdio: ['ignore', 'pipe', 'ignore'] }),
    onStart: (child) => (ready = new Promise((r) => child.stdout!.once('data', () => r()))),
  });
  stubborn.start();
  await ready; // its SIGTERM handler is in place
  await stubborn.stop({ graceMs: 100 });
  assert.equal(stubborn.lastExit?.signal, 'SIGKILL');
  assert.equal(stubborn.state, 'stopped');

  let onExit = 0;
  const polite = new ProcessSupervisor({ spawn: node(`setInterval(() => {}, 1000);`), onExit: () => void onExit++ });
  polite.start();
  const order: string[] = [];
  await polite.stop({
    prelude: async (child, exited) => {
      order.push('prelude');
      child.kill('SIGINT'); // it leaves during the prelude (as Envoy does after a drain)
      await exited;
      order.push('exited');
    },
  });
  assert.deepEqual(order, ['prelude', 'exited']);
  assert.equal(polite.lastExit?.signal, 'SIGINT');
  assert.equal(onExit, 0, 'an exit while stopping is not reported as a crash');
  assert.equal(polite.restarts, 0);
});

test('a spawn that fails (no such executable) counts as an exit and is retried with back-off', async () => {
  const exits: ExitInfo[] = [];
  const sup = new ProcessSupervisor({ spawn: () => spawn('/nonexistent/isomesh-test-binary', [], { stdio: 'ignore' }), onExit: (e) => void exits.push(e), delay: () => 5 });
  sup.start();
  await until(() => exits.length >= 2, 'two failed spawns');
  sup.kill();
  assert.ok(exits[0]!.code !== null && exits[0]!.code < 0, 'the errno as a negative code');
});
