// Outbox: what is pushed in one event-loop turn is posted once, in order; nothing is posted for an
// empty turn.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setImmediate as turn } from 'node:timers/promises';
import { Outbox } from './outbox.ts';

test('messages pushed in one turn are posted together, in order, once the turn is over', async () => {
  const posted: number[][] = [];
  const out = new Outbox<number>((batch) => posted.push(batch));
  out.push(1);
  out.push(2);
  await Promise.resolve();
  out.push(3); // a microtask of the same turn (a resolved plugin call) joins the batch
  assert.deepEqual(posted, [], 'nothing is posted before the turn ends');
  await turn();
  assert.deepEqual(posted, [[1, 2, 3]]);
  out.push(4);
  await turn();
  assert.deepEqual(posted, [[1, 2, 3], [4]], 'the next turn is the next batch');
  await turn();
  assert.equal(posted.length, 2, 'an empty turn posts nothing');
});
