import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FairScheduler } from './scheduler.ts';

/** Runs `rounds` picks, charging each call `cost(tenant)` ms; returns CPU served per tenant. */
function serve(s: FairScheduler<number>, rounds: number, cost: (t: string) => number, refill?: (t: string) => void): Map<string, number> {
  const cpu = new Map<string, number>();
  for (let i = 0; i < rounds; i++) {
    const next = s.next();
    if (next === undefined) break;
    const ms = cost(next.tenant);
    cpu.set(next.tenant, (cpu.get(next.tenant) ?? 0) + ms);
    s.complete(next.tenant, ms);
    refill?.(next.tenant);
  }
  return cpu;
}

test('weights 1 and 3, both saturating: CPU splits 1:3 whatever the per-call cost', () => {
  const s = new FairScheduler<number>({ queueLimit: 1000 });
  s.setWeight('a', 1);
  s.setWeight('b', 3);
  for (let i = 0; i < 500; i++) {
    s.enqueue('a', i);
    s.enqueue('b', i);
  }
  // a's calls cost 2 ms, b's 1 ms: by call count b would get 6x, by CPU it must get 3x.
  const cpu = serve(s, 400, (t) => (t === 'a' ? 2 : 1));
  const ratio = (cpu.get('b') ?? 0) / (cpu.get('a') ?? 1);
  assert.ok(ratio > 2.8 && ratio < 3.2, `b/a CPU ratio ${ratio}`);
});

test('a flooding tenant does not delay a light tenant beyond one call', () => {
  const s = new FairScheduler<number>({ queueLimit: 10_000 });
  for (let i = 0; i < 5000; i++) s.enqueue('flood', i);
  // The light tenant arrives late with one call at a time (a sequential client).
  serve(s, 100, () => 1);
  let waited = 0;
  let lightServed = 0;
  for (let round = 0; round < 50; round++) {
    s.enqueue('light', round);
    for (let picks = 0; ; picks++) {
      const next = s.next();
      assert.ok(next !== undefined);
      s.complete(next.tenant, 1);
      if (next.tenant === 'light') {
        waited = Math.max(waited, picks);
        lightServed++;
        break;
      }
    }
  }
  assert.equal(lightServed, 50);
  assert.ok(waited <= 1, `light waited behind ${waited} flood calls`);
});

test('the queue per tenant is bounded; other tenants still enqueue', () => {
  const s = new FairScheduler<number>({ queueLimit: 3 });
  assert.deepEqual([1, 2, 3, 4].map((i) => s.enqueue('a', i)), [true, true, true, false]);
  assert.equal(s.queued('a'), 3);
  assert.equal(s.enqueue('b', 1), true);
});

test('one call per tenant at a time: a busy tenant is skipped until it completes', () => {
  const s = new FairScheduler<number>({ queueLimit: 10 });
  s.enqueue('a', 1);
  s.enqueue('a', 2);
  s.enqueue('b', 1);
  const first = s.next();
  const second = s.next();
  assert.deepEqual(new Set([first?.tenant, second?.tenant]), new Set(['a', 'b']));
  assert.equal(s.next(), undefined, 'a is busy: its second call must wait');
  s.complete('a', 1);
  assert.deepEqual(s.next(), { tenant: 'a', task: 2 });
});

test('an idle tenant gets no credit for the time it was idle', () => {
  const s = new FairScheduler<number>({ queueLimit: 1000 });
  for (let i = 0; i < 100; i++) s.enqueue('busy', i);
  serve(s, 100, () => 5);
  // 'late' must not now monopolise the cordon for 500 ms worth of catch-up.
  for (let i = 0; i < 100; i++) {
    s.enqueue('late', i);
    s.enqueue('busy', i);
  }
  const cpu = serve(s, 20, () => 5);
  assert.ok(Math.abs((cpu.get('late') ?? 0) - (cpu.get('busy') ?? 0)) <= 10, JSON.stringify([...cpu]));
});

test('drop returns the queued calls so they can be failed', () => {
  const s = new FairScheduler<number>({ queueLimit: 10 });
  s.enqueue('a', 1);
  s.enqueue('a', 2);
  assert.deepEqual(s.drop('a'), [1, 2]);
  assert.equal(s.next(), undefined);
});
