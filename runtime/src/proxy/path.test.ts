import assert from 'node:assert/strict';
import { test } from 'node:test';
import { normalizePath } from './path.ts';

test('base normalization: unreserved decoded, dot segments removed, encodings upper-cased', () => {
  const cases: Array<[string, string]> = [
    ['/a/b', '/a/b'],
    ['/pre/../admin', '/admin'],
    ['/a/./b/', '/a/b/'],
    ['/a/.', '/a/'],
    ['/a/b/..', '/a/'],
    ['/%7Euser/%41%62c', '/~user/Abc'],
    ['/a/%2e%2e/b', '/b'],
    ['/a/%2E/b', '/a/b'],
    ['/x%3ay', '/x%3Ay'],
    ['/.well-known/x', '/.well-known/x'],
    ['//double//slash', '//double//slash'],
    ['/', '/'],
  ];
  for (const [input, want] of cases) assert.deepEqual(normalizePath(input, 'base'), { ok: true, path: want }, input);
});

test('merge_slashes also collapses runs of "/"; none leaves the path as received', () => {
  assert.deepEqual(normalizePath('//a///b/../c//', 'merge_slashes'), { ok: true, path: '/a/c/' });
  assert.deepEqual(normalizePath('/pre/../admin', 'none'), { ok: true, path: '/pre/../admin' });
});

test('refused: climbing above the root, encoded slash or backslash, raw backslash, bad encodings', () => {
  for (const bad of ['/..', '/a/../../b', '/%2e%2e/x', '/a%2Fb', '/a%2fb', '/a%5Cb', '/a\\b', '/a%zz', '/a%4']) {
    const r = normalizePath(bad, 'base');
    assert.equal(r.ok, false, bad);
  }
  assert.equal(normalizePath('/a%2Fb', 'merge_slashes').ok, false);
});
