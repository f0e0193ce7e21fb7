// scanFields (the byte scan both HTTP/1.1 parsers take for field lines) against the line-by-line
// string checks it replaced: the same lines accepted, the same offsets, on every mutated input.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FIELD_INTS, isFieldValue, isToken, scanFields } from './chars.ts';

/** The string checks: per line [start, colon, value start, value end] (SP/HTAB trimmed), or 'bad'. */
function reference(text: string): number[] | 'bad' {
  const out: number[] = [];
  let pos = 0;
  while (pos < text.length) {
    let eol = text.indexOf('\r\n', pos);
    if (eol === -1) eol = text.length;
    const colon = text.indexOf(':', pos);
    if (colon === -1 || colon >= eol || colon === pos || !isToken(text, pos, colon)) return 'bad';
    let vs = colon + 1;
    let ve = eol;
    while (vs < ve && (text.charCodeAt(vs) === 32 || text.charCodeAt(vs) === 9)) vs++;
    while (ve > vs && (text.charCodeAt(ve - 1) === 32 || text.charCodeAt(ve - 1) === 9)) ve--;
    if (!isFieldValue(text, vs, ve)) return 'bad';
    out.push(pos, colon, vs, ve);
    pos = eol + 2;
  }
  return out;
}

function scan(text: string, room = 64): number[] | 'bad' | 'full' {
  const at = new Int32Array(room * FIELD_INTS);
  // Offset into a larger buffer, as the parsers call it (the head after the request or status line).
  const prefix = 'GET / HTTP/1.1\r\n';
  const n = scanFields(Buffer.from(prefix + text + '\r\n\r\n', 'latin1'), prefix.length, prefix.length + text.length, at);
  if (n === -1) return 'bad';
  if (n === -2) return 'full';
  return Array.from(at.subarray(0, n * FIELD_INTS), (x) => x - prefix.length);
}

test('scanFields accepts exactly what the line-by-line checks accept, with the same offsets', () => {
  assert.deepEqual(scan('Host: a\r\nX-Y:\t b c \t\r\nE:'), [0, 4, 6, 7, 9, 12, 15, 18, 22, 23, 24, 24]);
  assert.deepEqual(scan(''), []);
  for (const bad of [' X: fold', 'X : y', ': v', 'X', 'X: a\rb', 'X: a\nb', 'X: a\u0000', 'X: \u007f', 'A: 1\r\n\r\nB: 2', 'A: 1\n']) {
    assert.equal(scan(bad), 'bad', JSON.stringify(bad));
    assert.equal(reference(bad), 'bad', JSON.stringify(bad));
  }
  assert.deepEqual(scan('V: caf\u00e9'), [0, 1, 3, 7], 'obs-text is a field value');
  const pieces = ['a', 'Z', '-', '!', ':', ':', ' ', '\t', '\r', '\n', '\r\n', '\r\n', '\u0000', '\u007f', '\u00ff', '(', '"', 'x1'];
  let seed = 7;
  const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    let text = '';
    for (let k = 0, n = rand(24); k < n; k++) text += pieces[rand(pieces.length)];
    const want = reference(text);
    assert.deepEqual(scan(text), want, JSON.stringify(text));
    if (want !== 'bad') accepted++;
  }
  assert.ok(accepted > 500, `the fuzz reached the accepting path (${accepted} accepted)`);
});

test('scanFields says when the offsets have no room for another line', () => {
  const lines = Array.from({ length: 5 }, (_, i) => `X-${i}: v`).join('\r\n');
  assert.equal(scan(lines, 4), 'full');
  assert.equal((scan(lines, 5) as number[]).length, 5 * FIELD_INTS);
});
