import assert from 'node:assert/strict';
import { test } from 'node:test';
import { configSchemaProblem, configValidator } from './config-schema.ts';

test('regression (configSchema-pattern-redos): schema patterns run in RE2, so a tenant schema cannot stall the daemon', () => {
  const v = configValidator({ type: 'object', properties: { a: { type: 'string', pattern: '^(a+)+$' } } });
  // Backtracking would take ~2^40 steps on this value; RE2 answers at once.
  assert.equal(v({ a: `${'a'.repeat(40)}!` }), false);
  assert.equal(v({ a: 'aaa' }), true);
  const search = configValidator({ type: 'object', properties: { h: { type: 'string', pattern: 'x-[a-z]+' } } });
  assert.equal(search({ h: 'prefix x-abc suffix' }), true, 'pattern is an unanchored search, as JSON Schema defines it');
  const props = configValidator({ type: 'object', patternProperties: { '^x-': { type: 'number' } } });
  assert.equal(props({ 'x-a': 1 }), true);
  assert.equal(props({ 'x-a': 'no' }), false);
  assert.match(configSchemaProblem({ type: 'object', properties: { a: { type: 'string', pattern: '(a)\\1' } } }) ?? '', /RE2 syntax/);
});
