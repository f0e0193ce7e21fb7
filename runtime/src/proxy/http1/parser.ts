// A strict HTTP/1.1 request parser (RFC 9112): bytes in, events out, no socket. It can be fuzzed alone
// and it is the only place request framing is decided, so everything that could desynchronise a
// pooled upstream connection (request smuggling) is refused here, before routing:
//   - request line `METHOD SP target SP HTTP/1.x CRLF`, token method, visible-ASCII target;
//   - CRLF line ends only (bare LF or CR refused), no obs-fold, no whitespace before the colon,
//     token field names, field values without control characters;
//   - Content-Length: digits only, repeated only with the same value; never with Transfer-Encoding;
//   - Transfer-Encoding only on HTTP/1.1 and only ending in `chunked` (the codings before it are
//     kept to be forwarded); chunk sizes are hex within 2^53, chunk lines and trailers bounded;
//   - exactly one valid Host on HTTP/1.1; an absolute-form target's authority replaces it (§3.2.2);
//   - head (request line + fields) ≤ 16 KiB and ≤ 100 fields, else 431.
// The parser pauses after every message: the connection decides when the next one may start, which
// keeps pipelined responses in order. Body bytes are handed on as slices of the input (no copies).

import type { ErrorCode } from '../../errors.ts';
import { FIELD_INTS, fieldFault, scanFields, TOKEN, VALUE } from './chars.ts';

export const MAX_HEAD_BYTES = 16 * 1024;
export const MAX_FIELDS = 100;
const MAX_CHUNK_LINE = 4096;
const MAX_LEADING_CRLF = 8;

/** What the parser tells about one request head. */
export interface RequestHead {
  method: string;
  /** The request-target in origin form ("/p?q"), also for an absolute-form target. */
  target: string;
  /** HTTP/1.<minor>. */
  minor: 0 | 1;
  /** Fields as received: [name, value, name, value, ...] (names in their original case). */
  raw: string[];
  /** The validated authority (from an absolute-form target, else Host); "" when there is none (HTTP/1.0). */
  authority: string;
  /** The target was in absolute form (an explicit proxy client). */
  absolute: boolean;
  /** Content-Length, or -1 when absent. */
  contentLength: number;
  chunked: boolean;
  /** Transfer codings before the final `chunked` ("gzip" for "gzip, chunked"), "" when none. */
  codings: string;
  /** The connection may carry another request after this one. */
  keepAlive: boolean;
  /** The Upgrade field when the request asks for one (Connection: upgrade), else undefined. */
  upgrade: string | undefined;
  expectContinue: boolean;
}

export interface ParseError {
  status: number;
  code: ErrorCode;
  message: string;
}

export interface ParserEvents {
  onHead(head: RequestHead): void;
  onBody(chunk: Buffer): void;
  /** The message is complete; trailers as [name, value, ...] when a chunked body had any. */
  onEnd(trailers: string[] | undefined): void;
}

/** Field offsets of the head being parsed (scanFields); one more line than allowed, to see the excess. */
const FIELDS = new Int32Array((MAX_FIELDS + 1) * FIELD_INTS);
const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[48 + c] = c;
for (let c = 0; c < 6; c++) HEX[65 + c] = HEX[97 + c] = 10 + c;

/** uri-host [":" port] (RFC 9110 §7.2): IP-literal or reg-name (no userinfo, path, spaces). */
const AUTHORITY_RE = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~!$&'()*+,;=%]+)(?::[0-9]{0,5})?$/;

export function validAuthority(a: string): boolean {
  return a.length <= 255 && AUTHORITY_RE.test(a);
}

const State = { Head: 0, Body: 1, ChunkSize: 2, ChunkData: 3, ChunkDataEnd: 4, Trailers: 5, Done: 6, Error: 7 } as const;
type StateValue = (typeof State)[keyof typeof State];

function fail(status: number, code: ErrorCode, message: string): ParseError {
  return { status, code, message };
}

const bad = (message: string): ParseError => fail(400, 'ISOMESH_ERR_PROXY_BAD_REQUEST', message);

const FIELD_FAULTS = {
  'no-name': 'header line without a field name',
  name: 'header field name is not a token (no whitespace before the colon)',
  value: 'header field value holds a control character',
} as const;

/** Why the field lines text[pos..] are refused, in the order a reader of the head meets the faults. */
function refusedField(text: string, pos: number): ParseError {
  const f = fieldFault(text, pos);
  if (f === undefined) return bad('malformed header field');
  if (f.line >= MAX_FIELDS) return fail(431, 'ISOMESH_ERR_PROXY_HEADERS_TOO_LARGE', `request has more than ${MAX_FIELDS} header fields`);
  const first = text.charCodeAt(f.start);
  if (first === 32 || first === 9) return bad('obsolete line folding in a header field');
  return bad(FIELD_FAULTS[f.fault]);
}

export class RequestParser {
  readonly #events: ParserEvents;
  #state: StateValue = State.Head;
  /** Head bytes kept across reads until the blank line arrives. */
  #pending: Buffer | undefined;
  #remaining = 0;
  #chunkLine = '';
  #trailerText = '';
  #paused = false;
  error: ParseError | undefined;
  /** Messages completed so far. */
  messages = 0;

  constructor(events: ParserEvents) {
    this.#events = events;
  }

  /** Stop consuming after the current event (execute returns where it stopped). */
  pause(): void {
    this.#paused = true;
  }

  /** After a message ended, accept the next one. */
  reset(): void {
    this.#state = State.Head;
    this.#paused = false;
  }

  get idle(): boolean {
    return this.#state === State.Head && this.#pending === undefined;
  }

  /** Between messages, or waiting for reset(). */
  get done(): boolean {
    return this.#state === State.Done;
  }

  /** Started a head but has not got all of it. */
  get inHead(): boolean {
    return this.#state === State.Head && this.#pending !== undefined;
  }

  /**
   * Consumes bytes from `buf` starting at `from`; returns the offset it stopped at (paused, message done,
   * or buf.length), or -1 on a protocol error (then `error` says what).
   */
  execute(buf: Buffer, from = 0): number {
    this.#paused = false;
    let at = from;
    while (at < buf.length) {
      switch (this.#state) {
        case State.Head: {
          const next = this.#head(buf, at);
          if (next < 0) return next === -2 ? buf.length : -1;
          at = next;
          break;
        }
        case State.Body: {
          const n = Math.min(this.#remaining, buf.length - at);
          this.#remaining -= n;
          const chunk = buf.subarray(at, at + n);
          at += n;
          if (this.#remaining === 0) {
            this.#state = State.Done;
            this.messages++;
            this.#events.onBody(chunk);
            this.#events.onEnd(undefined);
            return at;
          }
          this.#events.onBody(chunk);
          break;
        }
        case State.ChunkSize:
        case State.ChunkDataEnd: {
          const next = this.#chunkLineAt(buf, at);
          if (next < 0) return next === -2 ? buf.length : -1;
          at = next;
          break;
        }
        case State.ChunkData: {
          const n = Math.min(this.#remaining, buf.length - at);
          this.#remaining -= n;
          const chunk = buf.subarray(at, at + n);
          at += n;
          if (this.#remaining === 0) this.#state = State.ChunkDataEnd;
          this.#events.onBody(chunk);
          break;
        }
        case State.Trailers: {
          const next = this.#trailers(buf, at);
          if (next < 0) return next === -2 ? buf.length : -1;
          return next;
        }
        default:
          return at; // Done (waiting for reset) or Error
      }
      if (this.#paused || (this.#state as StateValue) === State.Error) return (this.#state as StateValue) === State.Error ? -1 : at;
    }
    return at;
  }

  #error(e: ParseError): number {
    this.error = e;
    this.#state = State.Error;
    return -1;
  }

  /** Parses a complete head if buf (with what was pending) holds one. -2 = need more, -1 = error. */
  #head(buf: Buffer, at: number): number {
    let data = buf;
    let start = at;
    let prior = 0;
    if (this.#pending !== undefined) {
      prior = this.#pending.length;
      data = Buffer.concat([this.#pending, buf.subarray(at)]);
      start = 0;
    } else {
      // RFC 9112 §2.2: ignore a few empty lines before the request line.
      let skipped = 0;
      while (start + 1 < data.length && data[start] === 13 && data[start + 1] === 10 && skipped < MAX_LEADING_CRLF) {
        start += 2;
        skipped++;
      }
      if (start >= data.length) return -2;
    }
    const end = data.indexOf('\r\n\r\n', Math.max(start, start + prior - 3), 'latin1');
    if (end === -1 || end - start > MAX_HEAD_BYTES) {
      if (data.length - start > MAX_HEAD_BYTES) return this.#error(fail(431, 'ISOMESH_ERR_PROXY_HEADERS_TOO_LARGE', `request head is larger than ${MAX_HEAD_BYTES} bytes`));
      this.#pending = Buffer.from(data.subarray(start));
      return -2;
    }
    this.#pending = undefined;
    const consumed = prior > 0 ? at + (end + 4 - prior) : end + 4;
    const head = this.#parseHead(data, start, end);
    if (head === undefined) return -1;
    if (head.chunked) {
      this.#state = State.ChunkSize;
      this.#chunkLine = '';
      this.#trailerText = '';
    } else if (head.contentLength > 0) {
      this.#state = State.Body;
      this.#remaining = head.contentLength;
    } else {
      this.#state = State.Done;
    }
    this.#events.onHead(head);
    if (this.#state === State.Done) {
      this.messages++;
      this.#events.onEnd(undefined);
      this.#paused = true;
    }
    return consumed;
  }

  #parseHead(data: Buffer, start: number, end: number): RequestHead | undefined {
    // Any bare CR or LF left inside the head (the blank line ends it) is refused.
    const text = data.toString('latin1', start, end);
    const lineEnd = text.indexOf('\r\n');
    const requestLine = lineEnd === -1 ? text : text.slice(0, lineEnd);
    const sp1 = requestLine.indexOf(' ');
    const sp2 = sp1 === -1 ? -1 : requestLine.indexOf(' ', sp1 + 1);
    if (sp1 <= 0 || sp2 === -1 || requestLine.indexOf(' ', sp2 + 1) !== -1) {
      this.#error(bad('malformed request line'));
      return undefined;
    }
    const method = requestLine.slice(0, sp1);
    for (let i = 0; i < method.length; i++) {
      if (TOKEN[method.charCodeAt(i)] === 0) {
        this.#error(bad('request method is not a token'));
        return undefined;
      }
    }
    let target = requestLine.slice(sp1 + 1, sp2);
    const version = requestLine.slice(sp2 + 1);
    if (version !== 'HTTP/1.1' && version !== 'HTTP/1.0') {
      this.#error(bad(`unsupported protocol version ${JSON.stringify(version.slice(0, 16))}`));
      return undefined;
    }
    const minor = version === 'HTTP/1.1' ? 1 : 0;
    if (target.length === 0) {
      this.#error(bad('empty request target'));
      return undefined;
    }
    for (let i = 0; i < target.length; i++) {
      const c = target.charCodeAt(i);
      if (c < 0x21 || c > 0x7e) {
        this.#error(bad('request target holds a character outside visible ASCII'));
        return undefined;
      }
    }

    const raw: string[] = [];
    let contentLength = -1;
    let te: string | undefined;
    let host: string | undefined;
    let hosts = 0;
    let connection = '';
    let upgrade: string | undefined;
    let expect: string | undefined;
    const fieldsAt = lineEnd === -1 ? text.length : lineEnd + 2;
    const lines = scanFields(data, start + fieldsAt, end, FIELDS);
    if (lines < 0 || lines > MAX_FIELDS) {
      this.#error(lines === -1 ? refusedField(text, fieldsAt) : fail(431, 'ISOMESH_ERR_PROXY_HEADERS_TOO_LARGE', `request has more than ${MAX_FIELDS} header fields`));
      return undefined;
    }
    for (let k = 0, o = 0; k < lines; k++, o += FIELD_INTS) {
      const name = text.slice(FIELDS[o]! - start, FIELDS[o + 1]! - start);
      const value = text.slice(FIELDS[o + 2]! - start, FIELDS[o + 3]! - start);
      raw.push(name, value);
      // Framing and routing fields, recognised by length first (cheap), then by name.
      switch (name.length) {
        case 4:
          if (name.toLowerCase() === 'host') {
            hosts++;
            host = value;
          }
          break;
        case 6:
          if (name.toLowerCase() === 'expect') expect = expect === undefined ? value : `${expect}, ${value}`;
          break;
        case 7:
          if (name.toLowerCase() === 'upgrade') upgrade = upgrade === undefined ? value : `${upgrade}, ${value}`;
          break;
        case 10:
          if (name.toLowerCase() === 'connection') connection = connection === '' ? value : `${connection}, ${value}`;
          break;
        case 14:
          if (name.toLowerCase() === 'content-length') {
            if (!/^[0-9]{1,15}$/.test(value)) {
              this.#error(bad('content-length is not a number'));
              return undefined;
            }
            const n = Number(value);
            if (contentLength !== -1 && contentLength !== n) {
              this.#error(bad('repeated content-length with different values'));
              return undefined;
            }
            contentLength = n;
          }
          break;
        case 17:
          if (name.toLowerCase() === 'transfer-encoding') te = te === undefined ? value : `${te}, ${value}`;
          break;
      }
    }

    let chunked = false;
    let codings = '';
    if (te !== undefined) {
      if (minor === 0) {
        this.#error(bad('transfer-encoding in an HTTP/1.0 request'));
        return undefined;
      }
      if (contentLength !== -1) {
        this.#error(bad('both content-length and transfer-encoding'));
        return undefined;
      }
      const list = te.split(',').map((c) => c.trim().toLowerCase());
      for (const c of list) {
        if (c === '' || !/^[!#$%&'*+\-.^_`|~0-9a-z]+$/.test(c)) {
          this.#error(bad('transfer-encoding is not a list of codings'));
          return undefined;
        }
      }
      if (list[list.length - 1] !== 'chunked' || list.indexOf('chunked') !== list.length - 1) {
        this.#error(bad('transfer-encoding must end with chunked, once (the body length is otherwise unknown)'));
        return undefined;
      }
      chunked = true;
      codings = list.slice(0, -1).join(', ');
    }

    // Target form (RFC 9112 §3.2) and authority.
    let authority = '';
    let absolute = false;
    const c0 = target.charCodeAt(0);
    if (c0 === 47 /* / */) {
      if (hosts > 1 || (hosts === 0 && minor === 1)) {
        this.#error(fail(400, 'ISOMESH_ERR_PROXY_BAD_HOST', hosts > 1 ? 'more than one Host header' : 'HTTP/1.1 request without a Host header'));
        return undefined;
      }
      if (host !== undefined) {
        if (!validAuthority(host)) {
          this.#error(fail(400, 'ISOMESH_ERR_PROXY_BAD_HOST', 'Host is not a valid authority (host[:port])'));
          return undefined;
        }
        authority = host;
      }
    } else if (c0 === 104 || c0 === 72 /* h H */) {
      const m = /^https?:\/\/([^/?#]*)(.*)$/i.exec(target);
      if (m === null) {
        this.#error(bad('request target is neither origin-form nor an http(s) absolute-form URI'));
        return undefined;
      }
      if (hosts > 1 || (hosts === 0 && minor === 1) || !validAuthority(m[1]!)) {
        this.#error(fail(400, 'ISOMESH_ERR_PROXY_BAD_HOST', 'absolute-form target with an invalid authority, or a missing or repeated Host'));
        return undefined;
      }
      authority = m[1]!;
      absolute = true;
      const rest = m[2]!;
      if (rest.charCodeAt(0) === 35 /* # */) {
        this.#error(bad('request target holds a fragment'));
        return undefined;
      }
      target = rest === '' ? '/' : rest.charCodeAt(0) === 63 /* ? */ ? `/${rest}` : rest;
    } else if (method !== 'CONNECT' && /^[a-z][a-z0-9+.-]*:\/\//i.test(target)) {
      this.#error(bad('absolute-form target with a scheme other than http(s)'));
      return undefined;
    } else {
      // asterisk-form (OPTIONS *) and authority-form (CONNECT) are not proxied.
      this.#error(fail(501, 'ISOMESH_ERR_PROXY_NOT_IMPLEMENTED', method === 'CONNECT' ? 'CONNECT is not supported' : 'only origin-form and absolute-form request targets are supported'));
      return undefined;
    }
    if (method === 'CONNECT') {
      this.#error(fail(501, 'ISOMESH_ERR_PROXY_NOT_IMPLEMENTED', 'CONNECT is not supported'));
      return undefined;
    }
    if (target.indexOf('#') !== -1) {
      this.#error(bad('request target holds a fragment'));
      return undefined;
    }

    const tokens = connection === '' ? '' : `,${connection.toLowerCase().replace(/[ \t]/g, '')},`;
    const keepAlive = minor === 1 ? tokens.indexOf(',close,') === -1 : tokens.indexOf(',keep-alive,') !== -1;
    let expectContinue = false;
    if (expect !== undefined) {
      if (expect.trim().toLowerCase() !== '100-continue') {
        this.#error(fail(417, 'ISOMESH_ERR_PROXY_BAD_REQUEST', 'only "Expect: 100-continue" is supported'));
        return undefined;
      }
      expectContinue = minor === 1;
    }
    return {
      method,
      target,
      minor,
      raw,
      authority,
      absolute,
      contentLength,
      chunked,
      codings,
      keepAlive,
      upgrade: upgrade !== undefined && tokens.indexOf(',upgrade,') !== -1 ? upgrade : undefined,
      expectContinue,
    };
  }

  /** A chunk-size line (ChunkSize) or the CRLF after chunk data (ChunkDataEnd). */
  #chunkLineAt(buf: Buffer, at: number): number {
    const lf = buf.indexOf(10, at);
    const stop = lf === -1 ? buf.length : lf + 1;
    this.#chunkLine += buf.toString('latin1', at, stop);
    if (this.#chunkLine.length > MAX_CHUNK_LINE) return this.#error(bad('chunk line too long'));
    if (lf === -1) return -2;
    const line = this.#chunkLine;
    this.#chunkLine = '';
    if (line.length < 2 || line.charCodeAt(line.length - 2) !== 13) return this.#error(bad('bare LF in chunked body'));
    if (this.#state === State.ChunkDataEnd) {
      if (line.length !== 2) return this.#error(bad('chunk data longer than its size'));
      this.#state = State.ChunkSize;
      return stop;
    }
    let size = 0;
    let i = 0;
    const n = line.length - 2;
    for (; i < n; i++) {
      const h = HEX[line.charCodeAt(i)]!;
      if (h < 0) break;
      size = size * 16 + h;
      if (i >= 13) return this.#error(bad('chunk size too large'));
    }
    if (i === 0) return this.#error(bad('chunk size is not hexadecimal'));
    // Optional chunk extensions: BWS ";" ... (visible characters, bounded by the line limit).
    if (i < n) {
      let j = i;
      while (j < n && (line.charCodeAt(j) === 32 || line.charCodeAt(j) === 9)) j++;
      if (line.charCodeAt(j) !== 59 /* ; */) return this.#error(bad('chunk size is not hexadecimal'));
      for (; j < n; j++) {
        const c = line.charCodeAt(j);
        if (c !== 9 && (c < 32 || c === 127)) return this.#error(bad('control character in a chunk extension'));
      }
    }
    if (size === 0) {
      this.#state = State.Trailers;
      return stop;
    }
    this.#remaining = size;
    this.#state = State.ChunkData;
    return stop;
  }

  /** Trailer fields after the last chunk, up to the empty line. */
  #trailers(buf: Buffer, at: number): number {
    const prior = this.#trailerText.length;
    this.#trailerText += buf.toString('latin1', at, buf.length);
    const text = this.#trailerText;
    let end: number;
    if (text.startsWith('\r\n')) end = 0;
    else {
      const i = text.indexOf('\r\n\r\n');
      end = i === -1 ? -1 : i + 2;
    }
    if (end === -1) {
      if (text.length > MAX_HEAD_BYTES) return this.#error(fail(431, 'ISOMESH_ERR_PROXY_HEADERS_TOO_LARGE', 'trailers are too large'));
      return -2;
    }
    const consumed = at + (end + 2 - prior);
    this.#trailerText = '';
    const trailers: string[] = [];
    if (end > 0) {
      for (const line of text.slice(0, end - 2).split('\r\n')) {
        const colon = line.indexOf(':');
        if (colon <= 0) return this.#error(bad('trailer line without a field name'));
        const name = line.slice(0, colon);
        for (let i = 0; i < name.length; i++) if (TOKEN[name.charCodeAt(i)] === 0) return this.#error(bad('trailer field name is not a token'));
        const value = line.slice(colon + 1).trim();
        for (let i = 0; i < value.length; i++) if (VALUE[value.charCodeAt(i)] === 0) return this.#error(bad('trailer value holds a control character'));
        trailers.push(name, value);
        if (trailers.length > MAX_FIELDS * 2) return this.#error(fail(431, 'ISOMESH_ERR_PROXY_HEADERS_TOO_LARGE', 'too many trailer fields'));
      }
    }
    this.#state = State.Done;
    this.messages++;
    this.#events.onEnd(trailers.length > 0 ? trailers : undefined);
    return consumed;
  }
}
