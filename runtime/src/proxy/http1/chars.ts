// Character classes of HTTP/1.1 (RFC 9110 §5.6.2, §5.5) as lookup tables by char code: the request
// parser and the upstream response parser check names and values with these instead of regexes.

/** tchar: the characters of a token (field names, methods, codings). */
export const TOKEN = new Uint8Array(256);
for (const c of "!#$%&'*+-.^_`|~") TOKEN[c.charCodeAt(0)] = 1;
for (let c = 48; c <= 57; c++) TOKEN[c] = 1;
for (let c = 65; c <= 90; c++) TOKEN[c] = TOKEN[c + 32] = 1;

/** field-value bytes: HTAB, SP, VCHAR, obs-text (no CR, LF, NUL or other controls). */
export const VALUE = new Uint8Array(256);
VALUE[9] = 1;
for (let c = 32; c <= 126; c++) VALUE[c] = 1;
for (let c = 128; c <= 255; c++) VALUE[c] = 1;

/** s[from, to) is a non-empty token. */
export function isToken(s: string, from = 0, to = s.length): boolean {
  if (to <= from) return false;
  for (let i = from; i < to; i++) if (TOKEN[s.charCodeAt(i)] !== 1) return false;
  return true;
}

/** s[from, to) holds only field-value characters. */
export function isFieldValue(s: string, from = 0, to = s.length): boolean {
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c > 255 || VALUE[c] !== 1) return false;
  }
  return true;
}

/** Ints `scanFields` writes per field line. */
export const FIELD_INTS = 4;

/**
 * The header lines of a head in one pass over its bytes — the fast path of both HTTP/1.1 parsers
 * (validating the latin1 string char by char costs about three times as much). b[from, to) is the
 * field lines joined by CRLF, without the blank line that ends the head. When every line is a
 * non-empty token, a colon and a field value, writes per line, as offsets into b: the line's start,
 * its colon, and its value's start and end with SP/HTAB trimmed (FIELD_INTS ints), and returns the
 * number of lines. Returns -1 when a line is anything else (the caller's own line-by-line checks then
 * name the fault) and -2 when `at` has no room for another line.
 */
export function scanFields(b: Uint8Array, from: number, to: number, at: Int32Array): number {
  let lines = 0;
  let i = from;
  while (i < to) {
    const o = lines * FIELD_INTS;
    if (o + FIELD_INTS > at.length) return -2;
    const start = i;
    while (i < to && TOKEN[b[i]!] === 1) i++;
    if (i === start || i === to || b[i] !== 58 /* : */) return -1;
    at[o] = start;
    at[o + 1] = i;
    i++;
    while (i < to && (b[i] === 32 || b[i] === 9)) i++;
    at[o + 2] = i;
    while (i < to && VALUE[b[i]!] === 1) i++;
    let ve = i;
    while (ve > at[o + 2]! && (b[ve - 1] === 32 || b[ve - 1] === 9)) ve--;
    at[o + 3] = ve;
    lines++;
    if (i === to) break;
    if (b[i] !== 13 || b[i + 1] !== 10) return -1;
    i += 2;
  }
  return lines;
}

/**
 * The first refused line of the field lines text[pos..] (when scanFields returned -1), for the parsers
 * to name the fault: its index, where it starts, and what is wrong with it — no name before a colon
 * on the line, a name that is not a token, or a value with a character a field value cannot hold.
 */
export function fieldFault(text: string, pos: number): { line: number; start: number; fault: 'no-name' | 'name' | 'value' } | undefined {
  for (let line = 0; pos < text.length; line++) {
    let eol = text.indexOf('\r\n', pos);
    if (eol === -1) eol = text.length;
    const colon = text.indexOf(':', pos);
    if (colon === -1 || colon >= eol || colon === pos) return { line, start: pos, fault: 'no-name' };
    if (!isToken(text, pos, colon)) return { line, start: pos, fault: 'name' };
    if (!isFieldValue(text, colon + 1, eol)) return { line, start: pos, fault: 'value' };
    pos = eol + 2;
  }
  return undefined;
}
