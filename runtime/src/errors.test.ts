import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { ERROR_CODES, IsomeshError } from './errors.ts';

test('every error code is well-formed and documented in docs/errors.md', () => {
  const doc = fs.readFileSync(path.join(import.meta.dirname, '../../docs/errors.md'), 'utf8');
  const codes = Object.keys(ERROR_CODES);
  assert.ok(codes.length >= 40, `expected a full table, got ${codes.length}`);
  for (const [code, spec] of Object.entries(ERROR_CODES)) {
    assert.match(code, /^ISOMESH_ERR_[A-Z][A-Z0-9_]*$/);
    assert.ok(spec.status >= 400 && spec.status <= 599, code);
    assert.ok(doc.includes(`\`${code}\` | ${spec.status} |`), `${code} is documented with status ${spec.status} (run node scripts/gen-error-docs.ts)`);
  }
  const documented = doc.match(/`ISOMESH_ERR_[A-Z0-9_]+`/g) ?? [];
  assert.equal(documented.length, codes.length, 'docs list exactly the codes of the table');
});

test('IsomeshError carries code, status and the API error shape', () => {
  const e = new IsomeshError('ISOMESH_ERR_TENANT_NOT_FOUND', 'tenant "x" does not exist');
  assert.equal(e.status, 404);
  assert.equal(e.isUserError, true);
  assert.deepEqual(e.toJSON(), { error: { code: 'ISOMESH_ERR_TENANT_NOT_FOUND', message: 'tenant "x" does not exist' } });
  assert.equal(new IsomeshError('ISOMESH_ERR_INTERNAL').isUserError, false);
});
