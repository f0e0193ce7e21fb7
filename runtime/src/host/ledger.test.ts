// The node ledger: quotas and rate limits held in shared memory hold for the node — two threads
// admitting at once get the node's budget between them, not each.
import assert from 'node:assert/strict';
import path from 'node:path';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { DEFAULT_QUOTA } from '../store/model.ts';
import { NodeLedger, SharedRateLimitCounters } from './ledger.ts';
import { TenantQuota } from './quota.ts';

const FIXTURE = path.join(import.meta.dirname, 'fixtures/ledger-worker.ts');

function run(buffers: NodeLedger['buffers'], slot: number, rps: number, tries: number, limit: number): Promise<{ admitted: number; limited: number }> {
  return new Promise((resolve, reject) => {
    const w = new Worker(FIXTURE, { workerData: { buffers, slot, rps, tries, limit } });
    w.once('message', resolve);
    w.once('error', reject);
  });
}

test('two threads share one tenant row: the rps bucket and a rate limit hold across both', async () => {
  const ledger = new NodeLedger(undefined, 64);
  const slot = ledger.assign('t');
  // The bucket starts full (rps tokens) and refills at rps/s: over a run far shorter than a second,
  // the two threads together get the burst plus what refilled, not twice it.
  const rps = 500;
  const t0 = Date.now();
  const [a, b] = await Promise.all([run(ledger.buffers, slot, rps, 20_000, 300), run(ledger.buffers, slot, rps, 20_000, 300)]);
  const seconds = (Date.now() - t0) / 1000;
  const admitted = a.admitted + b.admitted;
  assert.ok(admitted >= rps, `at least the burst was admitted (${admitted})`);
  assert.ok(admitted <= rps + Math.ceil(rps * seconds) + 1, `${admitted} admitted in ${seconds.toFixed(2)} s: the node's budget, not one per thread`);
  assert.equal(a.limited + b.limited, 300, 'exactly the rate limit, split between the threads');
});

test('rows are independent; a reassigned row starts clean; the shared rate-limit counters window like the local ones', () => {
  const ledger = new NodeLedger(undefined, 4);
  const a = ledger.assign('a');
  const b = ledger.assign('b');
  assert.notEqual(a, b);
  assert.equal(ledger.assign('a'), a, 'stable');
  const q = new TenantQuota({ ...DEFAULT_QUOTA, maxConcurrentRequests: 1 }, Date.now, ledger.quotaCells(a));
  assert.equal(q.admit().ok, true);
  assert.equal(q.admit().ok, false, 'concurrency 1 held');
  const other = new TenantQuota({ ...DEFAULT_QUOTA, maxConcurrentRequests: 1 }, Date.now, ledger.quotaCells(b));
  assert.equal(other.admit().ok, true, "another tenant's row is its own");
  ledger.unassign('a');
  const c = ledger.assign('c');
  assert.equal(c, a, 'the freed row is reused');
  assert.equal(new TenantQuota({ ...DEFAULT_QUOTA, maxConcurrentRequests: 1 }, Date.now, ledger.quotaCells(c)).admit().ok, true, 'and starts clean');
  assert.throws(() => {
    ledger.assign('d');
    ledger.assign('e');
    ledger.assign('f');
  }, /ledger is full/);

  const rl = new SharedRateLimitCounters(new NodeLedger(undefined, 4));
  const t0 = 1_000_000;
  assert.equal(rl.hit('k', 'v', 2, 'second', 1, t0).over, false);
  assert.equal(rl.hit('k', 'v', 2, 'second', 1, t0 + 10).over, false);
  const third = rl.hit('k', 'v', 2, 'second', 1, t0 + 20);
  assert.equal(third.over, true);
  assert.equal(third.resetSec, 1);
  assert.equal(rl.hit('k', 'w', 2, 'second', 1, t0 + 30).over, false, 'another value, another counter');
  assert.equal(rl.hit('k', 'v', 2, 'second', 1, t0 + 1000).over, false, 'next window');
  assert.equal(rl.hit('k', 'v', 1, 'day', 1, t0).over, false, 'another unit of the same key is its own counter');
});
