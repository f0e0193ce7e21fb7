// Request path normalization before routing, plugins and the upstream see the path (API.md, tenant
// field `pathNormalization`):
//   base          RFC 3986 §6.2.2: percent-encoded unreserved characters decoded, other percent-
//                 encodings upper-cased, dot segments removed; a path that would climb above "/", or
//                 that holds an encoded slash or backslash (%2F, %5C) or a raw backslash, is refused —
//                 the upstream could read any of them as a separator the route never saw;
//   merge_slashes base, and runs of "/" collapsed to one;
//   none          the path as received.
// The query string is never touched. Paths without "%", "\", "/." (and "//" for merge_slashes) — nearly
// all of them — are returned as they are without allocating.

import type { PathNormalization } from '../store/model.ts';

export type NormalizedPath = { ok: true; path: string } | { ok: false; message: string };

const HEX = new Int8Array(128).fill(-1);
for (let c = 0; c < 10; c++) HEX[48 + c] = c;
for (let c = 0; c < 6; c++) HEX[65 + c] = HEX[97 + c] = 10 + c;

function unreserved(c: number): boolean {
  return (c >= 65 && c <= 90) || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95 || c === 126;
}

/** Normalizes the path part of an origin-form target (no query). */
export function normalizePath(path: string, mode: PathNormalization): NormalizedPath {
  if (mode === 'none') return { ok: true, path };
  const merge = mode === 'merge_slashes';
  if (path.indexOf('%') === -1 && path.indexOf('\\') === -1 && path.indexOf('/.') === -1 && (!merge || path.indexOf('//') === -1)) {
    return { ok: true, path };
  }
  if (path.indexOf('\\') !== -1) return { ok: false, message: 'path holds a backslash' };
  // 1. percent-encodings
  let decoded = path;
  if (path.indexOf('%') !== -1) {
    let out = '';
    for (let i = 0; i < path.length; i++) {
      const ch = path.charCodeAt(i);
      if (ch !== 37 /* % */) {
        out += path[i];
        continue;
      }
      const h = HEX[path.charCodeAt(i + 1)] ?? -1;
      const l = HEX[path.charCodeAt(i + 2)] ?? -1;
      if (h < 0 || l < 0) return { ok: false, message: 'path holds a malformed percent-encoding' };
      const byte = h * 16 + l;
      if (byte === 0x2f || byte === 0x5c) return { ok: false, message: 'path holds an encoded slash or backslash (%2F, %5C)' };
      if (unreserved(byte)) out += String.fromCharCode(byte);
      else out += `%${path[i + 1]!.toUpperCase()}${path[i + 2]!.toUpperCase()}`;
      i += 2;
    }
    decoded = out;
  }
  // 2. dot segments (RFC 3986 §5.2.4), refusing to climb above the root; 3. merge slashes.
  const segments = decoded.slice(1).split('/');
  const out: string[] = [];
  let trailing = false;
  for (let i = 0; i < segments.length; i++) {
    const seg = segments[i]!;
    const last = i === segments.length - 1;
    if (seg === '.') {
      trailing = last;
      continue;
    }
    if (seg === '..') {
      if (out.length === 0) return { ok: false, message: 'path climbs above the root' };
      out.pop();
      trailing = last;
      continue;
    }
    if (seg === '' && merge && !last) continue;
    out.push(seg);
    trailing = false;
  }
  let result = `/${out.join('/')}`;
  if (trailing && !result.endsWith('/')) result += '/';
  if (merge) result = result.replace(/\/{2,}/g, '/');
  return { ok: true, path: result };
}
