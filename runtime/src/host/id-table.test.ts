import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IdTable } from './id-table.ts';

test('records by id: set, get, take, size, entries', () => {
  const t = new IdTable<string>(4);
  for (let id = 1; id <= 3; id++) t.set(id, `v${id}`);
  assert.equal(t.size, 3);
  assert.equal(t.get(2), 'v2');
  assert.equal(t.get(7), undefined, 'an id never set');
  assert.equal(t.take(2), 'v2');
  assert.equal(t.take(2), undefined, 'taken once');
  assert.equal(t.get(2), undefined);
  assert.equal(t.size, 2);
  t.set(3, 'v3b');
  assert.equal(t.get(3), 'v3b', 'set again replaces');
  assert.equal(t.size, 2);
  assert.deepEqual(new Map(t.entries()), new Map([[1, 'v1'], [3, 'v3b']]));
  // -1 marks an empty slot inside: as an id it is simply absent (a cordon asks for "no call running").
  const e = new IdTable<string>(4);
  e.set(1, 'a');
  assert.equal(e.get(-1), undefined);
  assert.equal(e.take(-1), undefined);
  assert.equal(e.size, 1);
  assert.equal(e.get(1), 'a');
  t.clear();
  assert.equal(t.size, 0);
  assert.equal(t.get(1), undefined);
});

test('an id whose slot holds a live older record grows the table; nothing is lost or mixed up', () => {
  const t = new IdTable<number>(4);
  // Id 1 stays in flight while ids 2..100 come and go (slot of 5, 9, … is 1's at small sizes).
  t.set(1, 1);
  for (let id = 2; id <= 100; id++) {
    t.set(id, id);
    if (id % 3 !== 0) assert.equal(t.take(id), id);
  }
  assert.equal(t.get(1), 1);
  for (let id = 2; id <= 100; id++) assert.equal(t.get(id), id % 3 === 0 ? id : undefined, `id ${id}`);
  assert.equal(t.size, 1 + 33);
});

test('past 4,096 slots a much older record moves aside and is still found, taken and listed', () => {
  const t = new IdTable<string>();
  t.set(1, 'long stream');
  // 10,000 calls later (each finished), the old one is still there.
  for (let id = 2; id <= 10_000; id++) {
    t.set(id, `c${id}`);
    assert.equal(t.take(id), `c${id}`);
  }
  t.set(4097, 'x'); // taken before: a fresh record at 1's slot (4097 & 4095 = 1)
  assert.equal(t.get(1), 'long stream');
  assert.equal(t.get(4097), 'x');
  assert.equal(t.size, 2);
  assert.deepEqual(new Map(t.entries()), new Map([[4097, 'x'], [1, 'long stream']]));
  assert.equal(t.take(1), 'long stream');
  assert.equal(t.get(1), undefined);
  assert.equal(t.size, 1);
});

test('many records in flight at once (more than the slots) are all kept', () => {
  const t = new IdTable<number>();
  for (let id = 1; id <= 9000; id++) t.set(id, id * 2);
  assert.equal(t.size, 9000);
  for (let id = 1; id <= 9000; id += 7) assert.equal(t.get(id), id * 2);
  let n = 0;
  for (const [id, v] of t.entries()) {
    assert.equal(v, id * 2);
    n++;
  }
  assert.equal(n, 9000);
  for (let id = 9000; id >= 1; id--) assert.equal(t.take(id), id * 2);
  assert.equal(t.size, 0);
});
