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
