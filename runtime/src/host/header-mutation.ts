// A chain's header result as ext_proc's HeaderMutation: the data plane that cannot take a whole new
// header list (Envoy) gets the change from the list it sent (`before`) to the chain's (`after`).
//
// Applied the way Envoy applies a HeaderMutation — every `remove` first, then each `set`
// (OVERWRITE_IF_EXISTS_OR_ADD) and `append` (APPEND_IF_EXISTS_OR_ADD) in order — the result has, for
// every name, exactly the values of `after` in `after`'s order. Order *across* names is not kept (new
// names land at the end; HTTP gives it no meaning, RFC 9110 §5.3). Per name, the smallest safe change:
//   unchanged values               → nothing
//   no values left                 → remove
//   one value before, one after    → set (unambiguous: Envoy's set replaces the first value in older
//                                    versions and all values in newer ones; with one value both agree)
//   the old values, then new ones  → append the new ones
//   anything else                  → remove, then append every value of `after`
// Names compare case-insensitively; the mutation carries them lower case.

import type { HeaderList, HeaderMutation } from './contract.ts';

function group(list: HeaderList): Map<string, string[]> {
  const m = new Map<string, string[]>();
  for (const [name, value] of list) {
    const key = name.toLowerCase();
    const values = m.get(key);
    if (values === undefined) m.set(key, [value]);
    else values.push(value);
  }
  return m;
}

function startsWith(values: readonly string[], prefix: readonly string[]): boolean {
  if (prefix.length > values.length) return false;
  for (let i = 0; i < prefix.length; i++) if (values[i] !== prefix[i]) return false;
  return true;
}

/** The mutation that turns `before` into `after` (see above); empty lists when nothing changed. */
export function headerMutation(before: HeaderList, after: HeaderList): HeaderMutation {
  const out: HeaderMutation = { set: [], append: [], remove: [] };
  if (before === after) return out;
  const was = group(before);
  const now = group(after);
  for (const name of was.keys()) if (!now.has(name)) out.remove.push(name);
  for (const [name, values] of now) {
    const old = was.get(name);
    if (old === undefined) {
      for (const v of values) out.append.push([name, v]);
      continue;
    }
    if (old.length === values.length && startsWith(values, old)) continue;
    if (old.length === 1 && values.length === 1) {
      out.set.push([name, values[0]!]);
    } else if (startsWith(values, old)) {
      for (let i = old.length; i < values.length; i++) out.append.push([name, values[i]!]);
    } else {
      out.remove.push(name);
      for (const v of values) out.append.push([name, v]);
    }
  }
  return out;
}

/** True when the mutation changes nothing. */
export function isEmptyMutation(m: HeaderMutation): boolean {
  return m.set.length === 0 && m.append.length === 0 && m.remove.length === 0;
}

/**
 * Applies a mutation as Envoy does (removes, then sets, then appends; set = the name's values replaced
 * by one at the end). The reference model the tests and the ext_proc test client use.
 */
export function applyHeaderMutation(before: HeaderList, m: HeaderMutation): HeaderList {
  const removed = new Set(m.remove.map((n) => n.toLowerCase()));
  let out: HeaderList = before.filter(([n]) => !removed.has(n.toLowerCase()));
  for (const [name, value] of m.set) {
    const key = name.toLowerCase();
    out = out.filter(([n]) => n.toLowerCase() !== key);
    out.push([key, value]);
  }
  for (const [name, value] of m.append) out.push([name.toLowerCase(), value]);
  return out;
}
