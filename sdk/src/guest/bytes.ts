// Bytes inside the isolate: a bare V8 context has no TextEncoder, atob or Buffer, so bodies (which
// cross the isolate boundary as base64 strings, never as host references) are decoded here in plain
// JavaScript. Runs in the isolate and in createTestHost(): no Node APIs.

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/';
const DECODE = new Int16Array(128).fill(-1);
for (let i = 0; i < ALPHABET.length; i++) DECODE[ALPHABET.charCodeAt(i)] = i;

export function base64Encode(bytes: Uint8Array): string {
  const parts: string[] = [];
  let chunk = '';
  const n = bytes.length;
  let i = 0;
  for (; i + 2 < n; i += 3) {
    const v = ((bytes[i] as number) << 16) | ((bytes[i + 1] as number) << 8) | (bytes[i + 2] as number);
    chunk += ALPHABET[v >> 18]! + ALPHABET[(v >> 12) & 63]! + ALPHABET[(v >> 6) & 63]! + ALPHABET[v & 63]!;
    if (chunk.length >= 8192) {
      parts.push(chunk);
      chunk = '';
    }
  }
  if (i < n) {
    const a = bytes[i] as number;
    const b = i + 1 < n ? (bytes[i + 1] as number) : 0;
    const v = (a << 16) | (b << 8);
    chunk += ALPHABET[v >> 18]! + ALPHABET[(v >> 12) & 63]! + (i + 1 < n ? ALPHABET[(v >> 6) & 63]! : '=') + '=';
  }
  parts.push(chunk);
  return parts.join('');
}

/** Decodes standard base64 (padding optional); throws TypeError on any other character. */
export function base64Decode(text: string): Uint8Array {
  let len = text.length;
  while (len > 0 && text.charCodeAt(len - 1) === 61) len--; // '='
  if (len % 4 === 1) throw new TypeError('invalid base64');
  const out = new Uint8Array(Math.floor((len * 3) / 4));
  let o = 0;
  let acc = 0;
  let bits = 0;
  for (let i = 0; i < len; i++) {
    const c = text.charCodeAt(i);
    const v = c < 128 ? (DECODE[c] as number) : -1;
    if (v < 0) throw new TypeError('invalid base64');
    acc = (acc << 6) | v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[o++] = (acc >> bits) & 0xff;
    }
  }
  return out;
}

/** Bytes of a base64 string of `chars` characters (padding included) without decoding it. */
export function base64Length(text: string): number {
  let len = text.length;
  while (len > 0 && text.charCodeAt(len - 1) === 61) len--;
  return Math.floor((len * 3) / 4);
}

export function utf8Encode(text: string): Uint8Array {
  const out = new Uint8Array(text.length * 3);
  let o = 0;
  for (let i = 0; i < text.length; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      out[o++] = c;
      continue;
    }
    if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1);
      if (d >= 0xdc00 && d <= 0xdfff) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
        out[o++] = 0xf0 | (c >> 18);
        out[o++] = 0x80 | ((c >> 12) & 63);
        out[o++] = 0x80 | ((c >> 6) & 63);
        out[o++] = 0x80 | (c & 63);
        continue;
      }
    }
    if (c >= 0xd800 && c <= 0xdfff) c = 0xfffd; // a lone surrogate, as TextEncoder does
    if (c < 0x800) {
      out[o++] = 0xc0 | (c >> 6);
      out[o++] = 0x80 | (c & 63);
    } else {
      out[o++] = 0xe0 | (c >> 12);
      out[o++] = 0x80 | ((c >> 6) & 63);
      out[o++] = 0x80 | (c & 63);
    }
  }
  return out.slice(0, o);
}

/** UTF-8 → string; malformed sequences become U+FFFD (TextDecoder's default, non-fatal). */
export function utf8Decode(bytes: Uint8Array): string {
  const parts: string[] = [];
  let codes: number[] = [];
  const n = bytes.length;
  let i = 0;
  while (i < n) {
    const b = bytes[i] as number;
    let c = 0xfffd;
    let need = 0;
    let min = 0;
    if (b < 0x80) {
      c = b;
    } else if (b >= 0xc2 && b <= 0xdf) {
      need = 1;
      c = b & 0x1f;
      min = 0x80;
    } else if (b >= 0xe0 && b <= 0xef) {
      need = 2;
      c = b & 0x0f;
      min = 0x800;
    } else if (b >= 0xf0 && b <= 0xf4) {
      need = 3;
      c = b & 0x07;
      min = 0x10000;
    }
    i++;
    if (need > 0) {
      let ok = i + need <= n;
      for (let k = 0; ok && k < need; k++) {
        const x = bytes[i + k] as number;
        if ((x & 0xc0) !== 0x80) ok = false;
        else c = (c << 6) | (x & 63);
      }
      if (ok && c >= min && c <= 0x10ffff && !(c >= 0xd800 && c <= 0xdfff)) i += need;
      else c = 0xfffd;
    }
    if (c > 0xffff) {
      c -= 0x10000;
      codes.push(0xd800 + (c >> 10), 0xdc00 + (c & 0x3ff));
    } else codes.push(c);
    if (codes.length >= 4096) {
      parts.push(String.fromCharCode.apply(null, codes));
      codes = [];
    }
  }
  if (codes.length > 0) parts.push(String.fromCharCode.apply(null, codes));
  return parts.join('');
}

/** What setBody() accepts, as bytes (a copy: later changes by the plugin do not leak in). */
export function bodyBytes(value: unknown, what: string): Uint8Array {
  if (typeof value === 'string') return utf8Encode(value);
  if (value instanceof Uint8Array) return value.slice();
  if (value instanceof ArrayBuffer) return new Uint8Array(value.slice(0));
  if (ArrayBuffer.isView(value)) return new Uint8Array(value.buffer.slice(value.byteOffset, value.byteOffset + value.byteLength));
  throw new TypeError(`${what}: body must be a string, Uint8Array or ArrayBuffer`);
}
