// Fetch-shaped headers over an ordered list of [lower-case name, value] pairs — the wire shape the
// host hands in and takes back. Runs inside the isolate: no Node APIs, no imports beyond types.

import type { PluginHeaders } from '../types.ts';
import { flattenHeaders, unflattenHeaders } from './protocol.ts';

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// RFC 9110 field-value: HTAB, SP, VCHAR, obs-text — exactly what Node's HTTP stack will send.
const BAD_VALUE_RE = /[^\t\x20-\x7e\x80-\xff]/;
export const MAX_HEADER_NAME = 256;
export const MAX_HEADER_VALUE = 16 * 1024;

export function checkName(name: unknown): string {
  const n = String(name);
  if (n.length === 0 || n.length > MAX_HEADER_NAME || !TOKEN_RE.test(n)) {
    throw new TypeError(`invalid header name: ${JSON.stringify(n.slice(0, 64))}`);
  }
  return n.toLowerCase();
}

export function checkValue(value: unknown): string {
  // Fetch trims leading/trailing HTTP whitespace.
  // Template conversion (WebIDL ToString) throws a TypeError for a Symbol, as Fetch's Headers does.
  const v = `${value as string}`.replace(/^[\t ]+|[\t ]+$/g, '');
  if (v.length > MAX_HEADER_VALUE || BAD_VALUE_RE.test(v)) throw new TypeError('invalid header value');
  return v;
}

export class GuestHeaders implements PluginHeaders {
  #list: Array<[string, string]> | undefined;
  /** The list as the runner passed it (flat, see protocol.ts), split on first use (a hook that reads no header pays nothing). */
  #flat: string | undefined;
  /** True once the plugin changed anything: the host then takes the list back. */
  dirty = false;

  constructor(list: Array<[string, string]> = [], flat?: string) {
    if (flat === undefined) this.#list = list;
    else this.#flat = flat;
  }

  #l(): Array<[string, string]> {
    if (this.#list === undefined) {
      this.#list = unflattenHeaders(this.#flat as string);
      this.#flat = undefined;
    }
    return this.#list;
  }

  get(name: string): string | null {
    const n = checkName(name);
    let out: string | null = null;
    for (const [k, v] of this.#l()) {
      if (k !== n) continue;
      // Fetch joins repeated values with ", " (set-cookie is read with getSetCookie()).
      out = out === null ? v : `${out}, ${v}`;
    }
    return out;
  }

  getSetCookie(): string[] {
    return this.#l().filter(([k]) => k === 'set-cookie').map(([, v]) => v);
  }

  has(name: string): boolean {
    const n = checkName(name);
    return this.#l().some(([k]) => k === n);
  }

  set(name: string, value: string): void {
    const n = checkName(name);
    const v = checkValue(value);
    const list = this.#l();
    const i = list.findIndex(([k]) => k === n);
    if (i < 0) list.push([n, v]);
    else {
      list[i] = [n, v];
      this.#list = list.filter(([k], j) => j <= i || k !== n);
    }
    this.dirty = true;
  }

  append(name: string, value: string): void {
    this.#l().push([checkName(name), checkValue(value)]);
    this.dirty = true;
  }

  delete(name: string): void {
    const n = checkName(name);
    const list = this.#l();
    if (!list.some(([k]) => k === n)) return;
    this.#list = list.filter(([k]) => k !== n);
    this.dirty = true;
  }

  forEach(callback: (value: string, name: string, headers: PluginHeaders) => void): void {
    for (const [k, v] of this.#l().slice()) callback(v, k, this);
  }

  *entries(): IterableIterator<[string, string]> {
    for (const [k, v] of this.#l().slice()) yield [k, v];
  }

  *keys(): IterableIterator<string> {
    for (const [k] of this.#l().slice()) yield k;
  }

  *values(): IterableIterator<string> {
    for (const [, v] of this.#l().slice()) yield v;
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.entries();
  }

  /** The list in the runner's flat form. */
  toFlat(): string {
    return this.#flat ?? flattenHeaders(this.#l());
  }

  /** The wire list (copies, so later edits by the plugin cannot change what was handed back). */
  toList(): Array<[string, string]> {
    return this.#l().map(([k, v]) => [k, v]);
  }
}

/** Headers from anything RespondInit accepts. */
export function headersFrom(init: unknown): GuestHeaders {
  const h = new GuestHeaders();
  if (init == null) return h;
  if (init instanceof GuestHeaders) return new GuestHeaders(init.toList());
  if (Array.isArray(init)) {
    for (const pair of init) {
      if (!Array.isArray(pair) || pair.length !== 2) throw new TypeError('headers must be [name, value] pairs');
      h.append(pair[0], pair[1]);
    }
    return h;
  }
  if (typeof init === 'object') {
    for (const [k, v] of Object.entries(init as Record<string, unknown>)) h.append(k, String(v));
    return h;
  }
  throw new TypeError('headers must be an object, an array of pairs or a Headers');
}
