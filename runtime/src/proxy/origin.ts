// A lean HTTP/1.1 client for the proxy's upstream side: one pool of keep-alive net.Sockets per
// (tenant, service, endpoint) and a response parser that hands the body to the exchange as the socket's
// own Buffers. It replaces http.request + http.Agent, which cost more CPU per request than the whole
// rest of the proxy (ClientRequest/OutgoingMessage/IncomingMessage, agent bookkeeping, per-request
// socket timers): measured ~2× the requests/s on one core for small bodies.
//
// Parsing is strict (anything odd is an upstream error, as node's llhttp would make it): status line
// "HTTP/1.x NNN ...", CRLF line ends only, no obs-fold, token header names, no control characters in
// values, at most one Content-Length, never both Content-Length and Transfer-Encoding, head ≤ 16 KiB.
// Framing: HEAD / 204 / 304 have no body; chunked; Content-Length; else read until close.
// 1xx interim responses are skipped (a 101 to an upgrade request hands the socket to the exchange).
// A connection is reused only after a complete, keep-alive response to a fully sent request with no
// stray bytes after it, and it goes back to the pool reading (never paused by the last exchange's
// backpressure: a paused pooled socket would hang the next request on it).
// The request body comes from the exchange (sendBody/endBody), framed here (Content-Length as given,
// or chunked with trailers). At most half an endpoint's sockets carry unfinished request bodies: a slow
// uploader cannot take every socket from the requests behind it.

import net from 'node:net';
import type { EndpointState } from './balancer.ts';
import { FIELD_INTS, fieldFault, isFieldValue, isToken, scanFields } from './http1/chars.ts';

/** Sentinel given to abort() when the TCP connect took too long. */
export const CONNECT_TIMEOUT = new Error('upstream connect timeout');

const MAX_HEAD_BYTES = 16 * 1024;
const MAX_LINE_BYTES = 4 * 1024;
const CRLFCRLF = Buffer.from('\r\n\r\n');
const CODING_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
const BAD_PATH_RE = /[^\u0021-\u00ff]/;
const CHUNK_SIZE_RE = /^([0-9a-fA-F]{1,12})[\t ]*(?:;.*)?$/;

function protocolError(message: string): Error {
  return Object.assign(new Error(`upstream sent an invalid response: ${message}`), { code: 'HPE_INVALID' });
}

/** Field offsets of the response head being parsed (scanFields): room for every line a head may hold. */
const FIELDS = new Int32Array((MAX_HEAD_BYTES / 4 + 1) * FIELD_INTS);

const FIELD_FAULTS = { 'no-name': 'header line without a name', name: 'bad header name', value: 'bad header value' } as const;

function hangUp(): Error {
  return Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
}

/** One attempt at an upstream, whatever protocol it speaks (UpstreamCall: HTTP/1.1; H2UpstreamCall). */
export interface UpstreamAttempt {
  readonly sink: CallSink;
  readonly bodyMode: RequestBodyMode;
  readonly upgrade: boolean;
  reusedSocket: boolean;
  headReceived: boolean;
  sentAll: boolean;
  broken: boolean;
  closed: boolean;
  ep: EndpointState | undefined;
  svc: { addActive(delta: number): void } | undefined;
  sendBody(chunk: Buffer): boolean;
  endBody(trailers?: string[]): void;
  stream(target: BodyTarget): void;
  discard(): void;
  abort(err?: Error): void;
}

/** What the exchange hears from one upstream call. Nothing is called after onDone. */
export interface CallSink {
  /** A connection took the call: its request body (if any) may flow now (sendBody). */
  onAssigned(call: UpstreamAttempt): void;
  /** sendBody returned false earlier; the socket can take more. */
  onBodyDrain(call: UpstreamAttempt): void;
  /**
   * The final response head (interim 1xx skipped); raw = [name, value, ...]; `codings` = transfer
   * codings before the final chunked ("" when none).
   */
  onHead(call: UpstreamAttempt, status: number, raw: string[], codings: string): void;
  /** The upstream accepted an upgrade (101): the socket is the exchange's now (rest = bytes after the head). */
  onUpgrade(call: UpstreamAttempt, raw: string[], socket: net.Socket, rest: Buffer | undefined): void;
  /** The request (head and body) has been handed to the socket. */
  onSent(call: UpstreamAttempt): void;
  /** Failure before the head, or while streaming the body (the client then gets a truncated response). */
  onError(call: UpstreamAttempt, err: Error): void;
  /** The whole response body went to the target; trailers [name, value, ...] of a chunked body. */
  onEnd(call: UpstreamAttempt, trailers: string[] | undefined): void;
  /** Exactly once, when the call is over however it ended. */
  onDone(call: UpstreamAttempt): void;
}

/** How the request body is framed toward the upstream. */
export const RequestBody = { None: 0, Length: 1, Chunked: 2 } as const;
export type RequestBodyMode = (typeof RequestBody)[keyof typeof RequestBody];

/** The downstream side a response body streams to. */
export interface BodyTarget {
  write(chunk: Buffer): boolean;
  onDrain(fn: () => void): void;
}

/** Build the request head; throws (message like node's) on a header name/value HTTP/1.1 cannot carry. */
export function requestHead(method: string, path: string, headers: string[], validate: boolean): string {
  if (BAD_PATH_RE.test(path)) throw new TypeError('Request path contains unescaped characters');
  let head = `${method} ${path} HTTP/1.1\r\n`;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const value = headers[i + 1]!;
    if (validate) {
      if (!isToken(name)) throw new TypeError(`Header name must be a valid HTTP token ["${name}"]`);
      if (!isFieldValue(value)) throw new TypeError(`Invalid character in header content ["${name}"]`);
    }
    head += `${name}: ${value}\r\n`;
  }
  return head + '\r\n';
}

// Parser states as plain numbers (type stripping has no enums).
const Body = { None: 0, Length: 1, Chunked: 2, UntilClose: 3 } as const;
const Chunk = { Size: 0, Data: 1, DataEnd: 2, Trailers: 3 } as const;
const State = { Idle: 0, Head: 1, Body: 2, Done: 3 } as const;
type Num<T> = T[keyof T];

/** One request/response on a pooled connection. */
export class UpstreamCall implements UpstreamAttempt {
  readonly sink: CallSink;
  readonly head: string;
  readonly isHead: boolean;
  /** How the exchange's request body is framed (RequestBody). */
  readonly bodyMode: RequestBodyMode;
  readonly connectTimeoutMs: number;
  /** An upgrade request: a 101 hands the socket over; any other answer is a normal response. */
  readonly upgrade: boolean;
  conn: UpstreamConnection | undefined;
  /** The connection had served an earlier request (a dead one shows up as a reset: retry-worthy). */
  reusedSocket = false;
  headReceived = false;
  sentAll = false;
  /** The connection failed after the head, before stream() was called. */
  broken = false;
  closed = false;
  /** Response body: undefined = hold it (the exchange has not decided yet), null = discard. */
  target: BodyTarget | null | undefined;
  /** Body bytes that arrived before stream()/discard(). */
  held: Buffer[] | undefined;
  /** Trailers of a held body (delivered with onEnd). */
  trailers: string[] | undefined;
  /** The caller's bookkeeping: which endpoint and service this attempt counts against. */
  ep: EndpointState | undefined;
  svc: { addActive(delta: number): void } | undefined;
  pool: EndpointPool | undefined;

  constructor(sink: CallSink, head: string, isHead: boolean, bodyMode: RequestBodyMode, connectTimeoutMs: number, upgrade = false) {
    this.sink = sink;
    this.head = head;
    this.isHead = isHead;
    this.bodyMode = bodyMode;
    this.connectTimeoutMs = connectTimeoutMs;
    this.upgrade = upgrade;
    if (bodyMode === RequestBody.None) this.sentAll = false;
  }

  /** Request body bytes (after onAssigned); false = wait for onBodyDrain. */
  sendBody(chunk: Buffer): boolean {
    const conn = this.conn;
    if (conn === undefined || this.closed || this.sentAll || chunk.length === 0) return true;
    return conn.sendBody(this, chunk);
  }

  /** The request body is complete (trailers only for a chunked body). */
  endBody(trailers?: string[]): void {
    const conn = this.conn;
    if (conn === undefined || this.closed || this.sentAll) return;
    conn.endBody(this, trailers);
  }

  /** Stream the response body to `target` (backpressure: the upstream socket pauses while it is full). */
  stream(target: BodyTarget): void {
    if (this.closed || this.target !== undefined) return;
    this.target = target;
    this.#flushHeld();
  }

  /** Read and drop the response body so the connection can go back to the pool. */
  discard(): void {
    if (this.closed || this.target !== undefined) return;
    this.target = null;
    this.#flushHeld();
  }

  #flushHeld(): void {
    const conn = this.conn;
    const held = this.held;
    this.held = undefined;
    if (held !== undefined && this.target) for (const b of held) this.write(b);
    if (conn === undefined) return;
    conn.socket.resume(); // paused in #head while the exchange decided
    if (conn.state === State.Done) conn.finish();
  }

  write(chunk: Buffer): void {
    const t = this.target;
    if (t === undefined) {
      (this.held ??= []).push(chunk);
      return;
    }
    if (t === null || t.write(chunk)) return;
    const conn = this.conn;
    if (conn === undefined) return;
    conn.socket.pause();
    t.onDrain(() => {
      if (this.conn === conn) conn.socket.resume();
    });
  }

  /** End the call now; the connection is closed. `err` (e.g. a timeout sentinel) goes to onError. */
  abort(err?: Error): void {
    if (this.closed) return;
    const conn = this.conn;
    if (conn !== undefined) conn.drop();
    else this.pool?.unqueue(this);
    if (err !== undefined) this.sink.onError(this, err);
    this.close();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.conn = undefined;
    this.sink.onDone(this);
  }
}

export class UpstreamConnection {
  readonly pool: EndpointPool;
  readonly socket: net.Socket;
  call: UpstreamCall | undefined;
  state: Num<typeof State> = State.Idle;
  idleSince = 0;
  served = 0;
  #connectTimer: NodeJS.Timeout | undefined;
  // response parser state
  #headBuf: Buffer | undefined;
  #body: Num<typeof Body> = Body.None;
  #remaining = 0;
  #chunk: Num<typeof Chunk> = Chunk.Size;
  #line = '';
  #trailerBytes = 0;
  #trailers: string[] | undefined;
  #codings = '';
  #keepAlive = false;
  #dirty = false;

  constructor(pool: EndpointPool) {
    this.pool = pool;
    this.socket = net.connect({ host: pool.host, port: pool.port, noDelay: true, keepAlive: true, keepAliveInitialDelay: 1000 });
    this.socket.on('data', this.#onData);
    this.socket.on('error', this.#onError);
    this.socket.on('close', this.#onClose);
    this.socket.on('drain', this.#onDrain);
  }

  assign(call: UpstreamCall): void {
    this.call = call;
    call.conn = this;
    call.reusedSocket = this.served > 0;
    this.served++;
    this.state = State.Head;
    this.#headBuf = undefined;
    this.#keepAlive = false;
    this.#dirty = false;
    this.#codings = '';
    this.#trailers = undefined;
    const socket = this.socket;
    if (socket.connecting && call.connectTimeoutMs > 0) {
      const timer = setTimeout(() => {
        if (this.call === call && socket.connecting) call.abort(CONNECT_TIMEOUT);
      }, call.connectTimeoutMs);
      this.#connectTimer = timer;
      socket.once('connect', () => clearTimeout(timer));
    }
    socket.write(call.head, 'latin1');
    if (call.bodyMode === RequestBody.None) {
      call.sentAll = true;
      call.sink.onAssigned(call);
      return;
    }
    this.pool.uploading++;
    this.#uploading = true;
    call.sink.onAssigned(call);
  }

  #uploading = false;

  sendBody(call: UpstreamCall, chunk: Buffer): boolean {
    if (this.call !== call) return true;
    const socket = this.socket;
    if (call.bodyMode !== RequestBody.Chunked) return socket.write(chunk);
    socket.cork();
    socket.write(`${chunk.length.toString(16)}\r\n`, 'latin1');
    socket.write(chunk);
    const ok = socket.write('\r\n', 'latin1');
    socket.uncork();
    return ok;
  }

  endBody(call: UpstreamCall, trailers: string[] | undefined): void {
    if (this.call !== call) return;
    if (call.bodyMode === RequestBody.Chunked) {
      let last = '0\r\n';
      if (trailers !== undefined) for (let i = 0; i < trailers.length; i += 2) last += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
      this.socket.write(`${last}\r\n`, 'latin1');
    }
    this.#uploadDone();
    call.sentAll = true;
    call.sink.onSent(call);
  }

  #uploadDone(): void {
    if (!this.#uploading) return;
    this.#uploading = false;
    this.pool.uploading--;
    if (this.call !== undefined) queueMicrotask(() => this.pool.pump());
  }

  readonly #onDrain = (): void => {
    const call = this.call;
    if (call !== undefined && !call.sentAll && call.bodyMode !== RequestBody.None) call.sink.onBodyDrain(call);
  };

  /** The response is complete and the exchange has taken (or dropped) the body: end the call. */
  finish(): void {
    const call = this.call!;
    const reusable = this.#keepAlive && call.sentAll && !this.#dirty && !call.upgrade;
    const trailers = this.#trailers;
    this.#detach();
    if (call.target) call.sink.onEnd(call, trailers);
    call.close();
    this.pool.release(this, reusable);
  }

  /** Close the connection because its call was abandoned. */
  drop(): void {
    this.#detach();
    this.pool.release(this, false);
  }

  /** Hand the socket to an upgraded exchange: it leaves the pool without being closed. */
  #handOver(call: UpstreamCall, raw: string[], rest: Buffer | undefined): void {
    this.#detach();
    this.socket.off('data', this.#onData);
    this.socket.off('error', this.#onError);
    this.socket.off('close', this.#onClose);
    this.socket.off('drain', this.#onDrain);
    this.pool.forget(this);
    call.headReceived = true;
    call.sink.onUpgrade(call, raw, this.socket, rest);
    call.close();
  }

  #detach(): void {
    this.#uploadDone();
    clearTimeout(this.#connectTimer);
    this.#connectTimer = undefined;
    this.call = undefined;
    this.state = State.Idle;
    this.#headBuf = undefined;
  }

  readonly #onError = (err: Error): void => {
    this.#fail(err);
  };

  readonly #onClose = (): void => {
    const call = this.call;
    if (call !== undefined && this.state === State.Body && this.#body === Body.UntilClose) {
      this.#keepAlive = false;
      this.state = State.Done;
      if (call.target !== undefined) this.finish();
      return;
    }
    this.#fail(hangUp());
  };

  #fail(err: Error): void {
    const call = this.call;
    if (call !== undefined && this.state === State.Done) {
      // The response was complete (held for the exchange) before the socket went away: not a failure.
      this.#keepAlive = false;
      return;
    }
    this.#detach();
    this.pool.release(this, false);
    if (call === undefined || call.closed) return;
    if (!call.headReceived) call.sink.onError(call, err);
    else if (call.target === undefined) call.broken = true;
    else if (call.target !== null) call.sink.onError(call, err);
    call.close();
  }

  readonly #onData = (buf: Buffer): void => {
    const call = this.call;
    if (call === undefined || this.state === State.Done) {
      // Bytes nobody asked for (after a complete response, or on an idle socket): never reuse it.
      this.#dirty = true;
      if (call === undefined) this.socket.destroy();
      return;
    }
    let at = 0;
    if (this.state === State.Head) {
      at = this.#parseHead(call, buf);
      if (at < 0 || this.call !== call) return;
    }
    if (at < buf.length) this.#parseBody(call, at === 0 ? buf : buf.subarray(at));
    if ((this.state as number) === State.Done && this.call === call && call.target !== undefined) this.finish();
  };

  /** Returns the offset of the first body byte in buf, or -1 when the head is incomplete or the call ended. */
  #parseHead(call: UpstreamCall, buf: Buffer): number {
    for (;;) {
      let data = buf;
      let prior = 0;
      if (this.#headBuf !== undefined) {
        prior = this.#headBuf.length;
        data = Buffer.concat([this.#headBuf, buf]);
      }
      const end = data.indexOf(CRLFCRLF, Math.max(0, prior - 3));
      if (end === -1) {
        if (data.length > MAX_HEAD_BYTES) this.#fail(protocolError('response head too large'));
        else this.#headBuf = data === buf ? Buffer.from(buf) : data;
        return -1;
      }
      this.#headBuf = undefined;
      const consumed = end + 4 - prior;
      if (end > MAX_HEAD_BYTES) {
        this.#fail(protocolError('response head too large'));
        return -1;
      }
      const status = this.#head(call, data, end, consumed < buf.length);
      if (status < 0) return -1;
      if (status === 101) {
        this.#handOver(call, this.#upgradeRaw!, consumed < buf.length ? Buffer.from(buf.subarray(consumed)) : undefined);
        return -1;
      }
      if (status >= 100 && status < 200) {
        // Interim response: skip it, parse what follows.
        if (consumed >= buf.length) return -1;
        buf = buf.subarray(consumed);
        continue;
      }
      return consumed;
    }
  }

  /** Parse a head; deliver it unless interim. Returns the status, or -1 after a protocol error. */
  #head(call: UpstreamCall, data: Buffer, end: number, more: boolean): number {
    // Scanned by index (no split, no regex per line). A bare LF, CR or NUL ends up inside a name (not
    // a token), a value (not a field value) or the status line: each is rejected below.
    const text = data.toString('latin1', 0, end);
    let eol = text.indexOf('\r\n');
    if (eol === -1) eol = text.length;
    // "HTTP/1.x NNN[ reason]"
    if (eol < 12 || !text.startsWith('HTTP/1.') || text.charCodeAt(8) !== 32 || (eol > 12 && text.charCodeAt(12) !== 32)) return this.#badHead('bad status line');
    const minor = text.charCodeAt(7);
    const d0 = text.charCodeAt(9) - 48;
    const d1 = text.charCodeAt(10) - 48;
    const d2 = text.charCodeAt(11) - 48;
    if ((minor !== 48 && minor !== 49) || d0 < 1 || d0 > 9 || d1 < 0 || d1 > 9 || d2 < 0 || d2 > 9) return this.#badHead('bad status line');
    for (let i = 13; i < eol; i++) {
      const c = text.charCodeAt(i);
      if (c < 32 && c !== 9) return this.#badHead('bad status line');
    }
    const status = d0 * 100 + d1 * 10 + d2;
    if (status === 101 && !call.upgrade) return this.#badHead('unexpected 101');
    const raw: string[] = [];
    let length = -1;
    let te: string | undefined;
    let connection = '';
    const fieldsAt = eol + 2;
    const lines = scanFields(data, fieldsAt, end, FIELDS);
    if (lines < 0) {
      const f = fieldFault(text, fieldsAt);
      return this.#badHead(f === undefined ? 'malformed header field' : FIELD_FAULTS[f.fault]);
    }
    for (let k = 0, o = 0; k < lines; k++, o += FIELD_INTS) {
      const name = text.slice(FIELDS[o], FIELDS[o + 1]);
      const value = text.slice(FIELDS[o + 2], FIELDS[o + 3]);
      raw.push(name, value);
      const n = name.length;
      if (n === 14 || n === 17 || n === 10) {
        const lower = name.toLowerCase();
        if (lower === 'content-length') {
          if (length !== -1 || !/^\d{1,15}$/.test(value)) return this.#badHead('bad or repeated content-length');
          length = Number(value);
        } else if (lower === 'transfer-encoding') {
          te = te === undefined ? value : `${te}, ${value}`;
        } else if (lower === 'connection') {
          connection = connection === '' ? value : `${connection}, ${value}`;
        }
      }
    }
    const http11 = minor === 49;
    if (status === 101) {
      this.#upgradeRaw = raw;
      return status;
    }
    if (status < 200) return status;
    const tokens = connection === '' ? '' : `,${connection.toLowerCase().replace(/[ \t]/g, '')},`;
    this.#keepAlive = http11 ? tokens.indexOf(',close,') === -1 : tokens.indexOf(',keep-alive,') !== -1;
    if (call.isHead || status === 204 || status === 304) {
      this.#body = Body.None;
    } else if (te !== undefined) {
      if (length !== -1) return this.#badHead('both content-length and transfer-encoding');
      const codings = te.toLowerCase().split(',').map((c) => c.trim());
      for (const c of codings) if (!CODING_RE.test(c)) return this.#badHead('bad transfer-encoding');
      const chunkedAt = codings.indexOf('chunked');
      if (chunkedAt !== -1 && chunkedAt !== codings.length - 1) return this.#badHead('chunked is not the final transfer coding');
      if (chunkedAt === codings.length - 1) {
        this.#body = Body.Chunked;
        this.#chunk = Chunk.Size;
        this.#line = '';
        this.#trailerBytes = 0;
        this.#codings = codings.slice(0, -1).join(', ');
      } else {
        this.#body = Body.UntilClose;
        this.#codings = codings.join(', ');
      }
    } else if (length !== -1) {
      this.#body = length === 0 ? Body.None : Body.Length;
      this.#remaining = length;
    } else {
      this.#body = Body.UntilClose;
    }
    if (this.#body === Body.UntilClose) this.#keepAlive = false;
    this.state = this.#body === Body.None ? State.Done : State.Body;
    if (this.state === State.Done && more) this.#dirty = true; // bytes after a body-less response
    call.headReceived = true;
    call.sink.onHead(call, status, raw, this.#codings);
    // The exchange has not decided what to do with the body yet (a response hook is running): hold it.
    if (this.call === call && call.target === undefined && this.state === State.Body) this.socket.pause();
    return status;
  }

  #upgradeRaw: string[] | undefined;

  #badHead(why: string): number {
    this.#fail(protocolError(why));
    return -1;
  }

  #parseBody(call: UpstreamCall, buf: Buffer): void {
    if (this.state !== State.Body) {
      this.#dirty = true; // bytes after a complete response
      return;
    }
    switch (this.#body) {
      case Body.Length: {
        if (buf.length <= this.#remaining) {
          this.#remaining -= buf.length;
          call.write(buf);
        } else {
          call.write(buf.subarray(0, this.#remaining));
          this.#remaining = 0;
          this.#dirty = true;
        }
        if (this.#remaining === 0) this.state = State.Done;
        return;
      }
      case Body.UntilClose:
        call.write(buf);
        return;
      case Body.Chunked:
        this.#parseChunks(call, buf);
        return;
      default:
        this.#dirty = true;
    }
  }

  #parseChunks(call: UpstreamCall, buf: Buffer): void {
    let i = 0;
    while (i < buf.length) {
      switch (this.#chunk) {
        case Chunk.Data: {
          const n = Math.min(this.#remaining, buf.length - i);
          call.write(buf.subarray(i, i + n));
          i += n;
          this.#remaining -= n;
          if (this.#remaining === 0) {
            this.#chunk = Chunk.DataEnd;
            this.#line = '';
          }
          break;
        }
        case Chunk.Size:
        case Chunk.DataEnd:
        case Chunk.Trailers: {
          const lf = buf.indexOf(10, i);
          const stop = lf === -1 ? buf.length : lf + 1;
          this.#line += buf.toString('latin1', i, stop);
          i = stop;
          if (this.#line.length > MAX_LINE_BYTES) {
            this.#fail(protocolError('chunk line too long'));
            return;
          }
          if (lf === -1) return;
          const line = this.#line;
          this.#line = '';
          if (!line.endsWith('\r\n')) {
            this.#fail(protocolError('bare LF in chunked body'));
            return;
          }
          const text = line.slice(0, -2);
          if (this.#chunk === Chunk.DataEnd) {
            if (text !== '') {
              this.#fail(protocolError('chunk data longer than its size'));
              return;
            }
            this.#chunk = Chunk.Size;
          } else if (this.#chunk === Chunk.Size) {
            const m = CHUNK_SIZE_RE.exec(text);
            if (m === null) {
              this.#fail(protocolError('bad chunk size'));
              return;
            }
            const size = parseInt(m[1]!, 16);
            if (size === 0) {
              this.#chunk = Chunk.Trailers;
            } else {
              this.#chunk = Chunk.Data;
              this.#remaining = size;
            }
          } else {
            // Trailer fields (checked like header fields) until the empty line ends the message.
            this.#trailerBytes += line.length;
            if (this.#trailerBytes > MAX_HEAD_BYTES) {
              this.#fail(protocolError('trailers too large'));
              return;
            }
            if (text === '') {
              this.state = State.Done;
              if (i < buf.length) this.#dirty = true;
              return;
            }
            const colon = text.indexOf(':');
            const name = colon > 0 ? text.slice(0, colon) : '';
            const value = text.slice(colon + 1).trim();
            if (!isToken(name) || !isFieldValue(value)) {
              this.#fail(protocolError('bad trailer field'));
              return;
            }
            (this.#trailers ??= []).push(name, value);
          }
          break;
        }
      }
    }
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** Keep-alive connections to one endpoint: LIFO reuse, at most maxSockets open, the rest queued. */
export class EndpointPool {
  readonly host: string;
  readonly port: number;
  readonly maxSockets: number;
  readonly idleTimeoutMs: number;
  readonly #idle: UpstreamConnection[] = [];
  readonly #all = new Set<UpstreamConnection>();
  readonly #queue: UpstreamCall[] = [];
  /** Calls with a request body waiting because `maxUploads` sockets already carry unfinished bodies. */
  readonly #uploadQueue: UpstreamCall[] = [];
  #sweep: NodeJS.Timeout | undefined;
  retired = false;
  /** Sockets whose call is still sending its request body. */
  uploading = 0;
  readonly maxUploads: number;

  constructor(host: string, port: number, maxSockets: number, idleTimeoutMs: number) {
    this.host = host;
    this.port = port;
    this.maxSockets = maxSockets;
    this.idleTimeoutMs = idleTimeoutMs;
    this.maxUploads = Math.max(1, Math.floor(maxSockets / 2));
  }

  get openSockets(): number {
    return this.#all.size;
  }

  /** Start `call` on an idle connection, a new one, or queue it until one frees up. */
  dispatch(call: UpstreamCall): void {
    call.pool = this;
    if (call.bodyMode !== RequestBody.None) {
      // Uploads queue apart, so bodyless requests never wait behind them for a socket.
      if (this.uploading >= this.maxUploads || !this.#start(call)) this.#uploadQueue.push(call);
      return;
    }
    if (!this.#start(call)) this.#queue.push(call);
  }

  /** Starts the call on an idle connection or a new one; false when every socket is taken. */
  #start(call: UpstreamCall): boolean {
    let idle = this.#idle.pop();
    while (idle !== undefined && idle.socket.destroyed) {
      this.#all.delete(idle);
      idle = this.#idle.pop();
    }
    if (idle !== undefined) {
      idle.assign(call);
      return true;
    }
    if (this.#all.size < this.maxSockets) {
      this.#open().assign(call);
      return true;
    }
    return false;
  }

  /** An upload finished sending: a queued upload may start if a socket is free. */
  pump(): void {
    while (this.#uploadQueue.length > 0 && this.uploading < this.maxUploads && !this.retired) {
      const call = this.#uploadQueue[0]!;
      if (!this.#start(call)) return;
      this.#uploadQueue.shift();
    }
  }

  unqueue(call: UpstreamCall): void {
    let i = this.#queue.indexOf(call);
    if (i !== -1) this.#queue.splice(i, 1);
    i = this.#uploadQueue.indexOf(call);
    if (i !== -1) this.#uploadQueue.splice(i, 1);
  }

  /** The next queued call a freed socket may take: bodyless first; uploads only under the cap. */
  #next(): UpstreamCall | undefined {
    const q = this.#queue.shift();
    if (q !== undefined) return q;
    if (this.uploading < this.maxUploads) return this.#uploadQueue.shift();
    return undefined;
  }

  /** A connection handed to an upgraded exchange: no longer ours to pool or count. */
  forget(conn: UpstreamConnection): void {
    this.#all.delete(conn);
    const next = this.#next();
    if (next !== undefined) {
      if (this.retired) next.abort(hangUp());
      else this.#open().assign(next);
    }
  }

  #open(): UpstreamConnection {
    const conn = new UpstreamConnection(this);
    this.#all.add(conn);
    return conn;
  }

  release(conn: UpstreamConnection, reusable: boolean): void {
    if (!this.#all.has(conn)) return;
    const next = this.#next();
    // The last exchange may have paused the socket (its client was slow): a pooled socket reads again.
    if (reusable && conn.socket.isPaused()) conn.socket.resume();
    if (reusable && !this.retired) {
      if (next !== undefined) {
        conn.assign(next);
        return;
      }
      // Kept whatever the idle count (bounded by maxSockets): an HTTP/2 client's burst of hundreds of
      // streams frees that many sockets at once, and closing the surplus meant reconnecting it on the
      // next burst. The idle timeout closes what a burst leaves behind.
      conn.idleSince = performance.now();
      this.#idle.push(conn);
      this.#armSweep();
      return;
    }
    this.#all.delete(conn);
    const i = this.#idle.indexOf(conn);
    if (i !== -1) this.#idle.splice(i, 1);
    conn.destroy();
    if (next !== undefined) {
      if (this.retired) next.abort(hangUp());
      else this.#open().assign(next);
    }
  }

  /** Idle connections are closed after idleTimeoutMs (before a typical 5 s server keep-alive does). */
  #armSweep(): void {
    if (this.#sweep !== undefined) return;
    this.#sweep = setInterval(() => {
      const cutoff = performance.now() - this.idleTimeoutMs;
      while (this.#idle.length > 0 && this.#idle[0]!.idleSince <= cutoff) {
        const conn = this.#idle.shift()!;
        this.#all.delete(conn);
        conn.destroy();
      }
      if (this.#idle.length === 0) {
        clearInterval(this.#sweep);
        this.#sweep = undefined;
      }
    }, Math.max(100, this.idleTimeoutMs / 4));
    this.#sweep.unref();
  }

  /** Stop pooling: idle connections close now, busy ones when their call ends. */
  retire(): void {
    this.retired = true;
    for (const conn of this.#idle.splice(0)) {
      this.#all.delete(conn);
      conn.destroy();
    }
    clearInterval(this.#sweep);
    this.#sweep = undefined;
  }

  /** Hard stop: every connection closed, queued calls fail. */
  destroy(): void {
    this.retire();
    for (const call of this.#queue.splice(0)) call.abort(hangUp());
    for (const call of this.#uploadQueue.splice(0)) call.abort(hangUp());
    for (const conn of [...this.#all]) {
      this.#all.delete(conn);
      conn.destroy();
    }
  }
}
