import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { HeaderList, HeaderMutation } from './contract.ts';
import { applyHeaderMutation, headerMutation, isEmptyMutation } from './header-mutation.ts';

/** Per name (lower case), the values in order: what a HeaderMutation can promise to reproduce. */
function byName(list: HeaderList): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const [n, v] of list) (out[n.toLowerCase()] ??= []).push(v);
  return out;
}

/** Older Envoy: set replaces the first value in place and keeps the others. */
function applyReplaceFirst(before: HeaderList, m: HeaderMutation): HeaderList {
  const removed = new Set(m.remove);
  const out: HeaderList = before.filter(([n]) => !removed.has(n.toLowerCase())).map(([n, v]) => [n.toLowerCase(), v]);
  for (const [name, value] of m.set) {
    const i = out.findIndex(([n]) => n === name);
    if (i === -1) out.push([name, value]);
    else out[i] = [name, value];
  }
  for (const [name, value] of m.append) out.push([name, value]);
  return out;
}

/** Every list of up to `max` entries over the names and values given. */
function* lists(names: string[], values: string[], max: number): Generator<HeaderList> {
  const entries: Array<[string, string]> = names.flatMap((n) => values.map((v) => [n, v] as [string, string]));
  function* rec(prefix: HeaderList): Generator<HeaderList> {
    yield prefix;
    if (prefix.length === max) return;
    for (const e of entries) yield* rec([...prefix, e]);
  }
  yield* rec([]);
}

test('headerMutation: exhaustive — applied either way Envoy applies set, every name ends with exactly the values of after, in order', () => {
  // names include a case variant: "X" and "x" are one header
  const all = [...lists(['x', 'X', 'y'], ['1', '2'], 3)];
  let pairs = 0;
  for (const before of all) {
    for (const after of all) {
      const m = headerMutation(before, after);
      const want = byName(after);
      assert.deepEqual(byName(applyHeaderMutation(before, m)), want, `${JSON.stringify(before)} → ${JSON.stringify(after)}: ${JSON.stringify(m)}`);
      assert.deepEqual(byName(applyReplaceFirst(before, m)), want, `replace-first ${JSON.stringify(before)} → ${JSON.stringify(after)}`);
      // names appear once in remove and never both set and appended
      assert.equal(new Set(m.remove).size, m.remove.length);
      const setNames = new Set(m.set.map(([n]) => n));
      assert.equal(setNames.size, m.set.length);
      for (const [n] of m.append) assert.ok(!setNames.has(n));
      // set is used only where Envoy's two set semantics agree: one value before
      for (const [n] of m.set) assert.equal(before.filter(([b]) => b.toLowerCase() === n).length, 1);
      if (JSON.stringify(byName(before)) === JSON.stringify(want)) assert.ok(isEmptyMutation(m), 'no change → empty mutation');
      pairs++;
    }
  }
  assert.equal(pairs, all.length ** 2);
  assert.ok(pairs > 20_000);
});

test('headerMutation: the smallest change per name', () => {
  const before: HeaderList = [['host', 'a'], ['accept', '*/*'], ['x-multi', '1'], ['x-multi', '2'], ['x-gone', 'v']];
  const same = headerMutation(before, before);
  assert.ok(isEmptyMutation(same));
  assert.ok(isEmptyMutation(headerMutation(before, [...before.map(([n, v]) => [n, v] as [string, string])])), 'a copy is no change');

  assert.deepEqual(headerMutation(before, [['host', 'a'], ['accept', 'json'], ['x-multi', '1'], ['x-multi', '2'], ['x-gone', 'v']]), {
    set: [['accept', 'json']], append: [], remove: [],
  });
  assert.deepEqual(headerMutation(before, [...before, ['x-new', 'n'], ['x-multi', '3']]), {
    set: [], append: [['x-multi', '3'], ['x-new', 'n']], remove: [],
  }, 'values added after the old ones are appended');
  assert.deepEqual(headerMutation(before, [['host', 'a'], ['accept', '*/*'], ['x-multi', '2'], ['x-multi', '1'], ['x-gone', 'v']]), {
    set: [], append: [['x-multi', '2'], ['x-multi', '1']], remove: ['x-multi'],
  }, 'reordered values: remove and append');
  assert.deepEqual(headerMutation(before, [['host', 'a'], ['accept', '*/*'], ['x-multi', 'one']]), {
    set: [], append: [['x-multi', 'one']], remove: ['x-gone', 'x-multi'],
  }, 'two values to one: never a set (older Envoy would keep the second)');
  assert.deepEqual(headerMutation([['X-Up', 'a']], [['x-up', 'a']]), { set: [], append: [], remove: [] }, 'names are case-insensitive');
  assert.deepEqual(headerMutation([['X-Up', 'a']], [['x-up', 'b']]), { set: [['x-up', 'b']], append: [], remove: [] });
  assert.deepEqual(headerMutation([], [['a', '1'], ['b', '2'], ['a', '3']]), { set: [], append: [['a', '1'], ['a', '3'], ['b', '2']], remove: [] });
  assert.deepEqual(headerMutation([['a', '1'], ['b', '2']], []), { set: [], append: [], remove: ['a', 'b'] });
});
