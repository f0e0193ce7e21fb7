// One downstream HTTP/1.1 connection: the socket, the parser, one exchange at a time, and the timers
// that keep slow clients from holding the node (kept as deadlines checked by the listener's sweep, not
// as a timer per request).
//
// Pipelining: the parser stops after every request; the next one is parsed only when the current
// response is complete, so responses go out in order and a malformed pipelined request is answered
// after the responses before it. Bytes that arrive meanwhile stay buffered (the socket is paused).
//
// Response heads are not written at once: head and body chunks are gathered until the end of the
// current tick and written together (one writev for a small response). Until then an exchange may
// retract them — an upstream whose body fails in the same read as its head becomes a 502, not a head
// followed by a cut.

import type { Socket } from 'node:net';
import type { BodySink, DownstreamRequest, DownstreamStream, ResponseFraming } from '../stream.ts';
import { RequestParser, type ParseError, type ParserEvents, type RequestHead } from './parser.ts';
import { sniffPreface } from '../http2/server.ts';

export interface Http1Timeouts {
  /** From the first byte of a request head (or the accept) until the whole head: else 408 and close. */
  headersMs: number;
  /** A keep-alive connection with no request in progress is closed after this long. */
  idleMs: number;
  /** While the request body is being read, the longest wait for the client's next bytes: else 408. */
  bodyMs: number;
}

/** What a connection needs of its listener. */
export interface Http1Owner {
  readonly timeouts: Http1Timeouts;
  /** A request head arrived: start its exchange (synchronously). */
  onRequest(stream: DownstreamStream): void;
  /** The connection is gone. */
  onClosed(conn: Http1Connection): void;
  /** The client opened with the HTTP/2 preface: take the socket over (`initial` = bytes read so far). */
  toHttp2(conn: Http1Connection, initial: Buffer): void;
}

const Phase = { Idle: 0, Head: 1, Active: 2, Tunnel: 3, Closed: 4 } as const;
type PhaseValue = (typeof Phase)[keyof typeof Phase];
const Deadline = { None: 0, Idle: 1, Head: 2, Body: 3, Send: 4 } as const;
type DeadlineValue = (typeof Deadline)[keyof typeof Deadline];

const REASONS: Record<number, string> = {
  100: 'Continue', 101: 'Switching Protocols', 200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content',
  206: 'Partial Content', 301: 'Moved Permanently', 302: 'Found', 303: 'See Other', 304: 'Not Modified',
  307: 'Temporary Redirect', 308: 'Permanent Redirect', 400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden',
  404: 'Not Found', 405: 'Method Not Allowed', 408: 'Request Timeout', 409: 'Conflict', 413: 'Content Too Large',
  417: 'Expectation Failed', 429: 'Too Many Requests', 431: 'Request Header Fields Too Large', 500: 'Internal Server Error',
  501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
};

/** Status line for HTTP/1.1 responses. */
export function statusLine(status: number): string {
  return `HTTP/1.1 ${status} ${REASONS[status] ?? ''}\r\n`;
}

/** A complete small error response (JSON body) for errors the connection answers itself. */
export function errorResponse(status: number, code: string, message: string, close: boolean): string {
  const body = JSON.stringify({ error: { code, message } });
  return `${statusLine(status)}content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nx-isomesh-error: ${code}\r\n${close ? 'connection: close\r\n' : ''}\r\n${body}`;
}

const CRLF = Buffer.from('\r\n');
/** Responses up to this size (head + body gathered in one tick) are written as one buffer. */
const COALESCE_BYTES = 8 * 1024;
/** Unparsed input a connection may hold (pipelined requests) before it stops reading the socket. */
const MAX_BUFFERED = 64 * 1024;
const LAST_CHUNK = '0\r\n\r\n';

/** One request/response on the connection: the exchange's view (DownstreamStream). */
class Http1Stream implements DownstreamStream {
  readonly conn: Http1Connection;
  readonly req: DownstreamRequest;
  readonly head: RequestHead;
  sink: BodySink | undefined;
  /** Response state. */
  status = 0;
  bytesOut = 0;
  headSent = false;
  headWritten = false;
  chunked = false;
  bodyless = false;
  ended = false;
  closed = false;
  detached = false;
  /** Gathered output not yet written (head string + body buffers), flushed at the end of the tick. */
  pending: Array<string | Buffer> | undefined;
  pendingBytes = 0;
  flushScheduled = false;
  closeFn: (() => void) | undefined;
  closeFns: Array<() => void> | undefined;

  constructor(conn: Http1Connection, head: RequestHead) {
    this.conn = conn;
    this.head = head;
    const socket = conn.socket;
    this.req = {
      protocol: head.minor === 1 ? 'http/1.1' : 'http/1.0',
      method: head.method,
      target: head.target,
      authority: head.authority,
      raw: head.raw,
      contentLength: head.contentLength,
      hasBody: head.chunked || head.contentLength > 0,
      codings: head.codings,
      upgrade: head.upgrade,
      expectContinue: head.expectContinue,
      remoteAddress: socket.remoteAddress ?? '',
      socket,
    };
  }

  readBody(sink: BodySink): void {
    if (this.detached) return;
    this.sink = sink;
    this.conn.readBody(this);
  }

  resumeBody(): void {
    if (!this.detached && this.sink !== undefined) this.conn.readBody(this);
  }

  discardBody(): void {
    this.sink = undefined;
    this.conn.stopBody(this);
  }

  sendContinue(): void {
    if (this.detached || this.headWritten || !this.req.expectContinue) return;
    this.conn.socket.write('HTTP/1.1 100 Continue\r\n\r\n', 'latin1');
  }

  writeHead(status: number, headers: string[], framing: ResponseFraming): void {
    if (this.detached || this.headWritten) return;
    this.headWritten = true;
    this.status = status;
    const conn = this.conn;
    this.bodyless = this.req.method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200);
    let head = statusLine(status);
    for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    if (status !== 204 && status !== 304) {
      if (framing.length >= 0) head += `content-length: ${framing.length}\r\n`;
      else if (!this.bodyless) {
        if (this.head.minor === 1) {
          this.chunked = true;
          head += framing.codings ? `transfer-encoding: ${framing.codings}, chunked\r\n` : 'transfer-encoding: chunked\r\n';
        } else conn.closeAfter = true; // HTTP/1.0: the body ends when the connection does
      }
    }
    // A response that goes out before the request body was read to its end: the connection cannot be
    // reused (what is left of the body would be read as the next request).
    if (!conn.requestComplete && this.sink === undefined) conn.closeAfter = true;
    if (!this.head.keepAlive || conn.closeAfter) {
      conn.closeAfter = true;
      head += 'connection: close\r\n';
    } else if (this.head.minor === 0) head += 'connection: keep-alive\r\n';
    this.#gather(head + '\r\n');
  }

  write(chunk: Buffer): boolean {
    if (this.detached || this.ended || this.bodyless || chunk.length === 0) return true;
    this.bytesOut += chunk.length;
    if (this.chunked) {
      this.#gather(`${chunk.length.toString(16)}\r\n`);
      this.#gather(chunk);
      this.#gather(CRLF);
    } else this.#gather(chunk);
    if (this.pendingBytes > 65536) this.flush();
    return this.pending === undefined ? !this.conn.socket.writableNeedDrain : true;
  }

  onDrain(fn: () => void): void {
    if (this.detached) return;
    this.flush();
    const socket = this.conn.socket;
    if (!socket.writableNeedDrain) {
      queueMicrotask(fn);
      return;
    }
    this.conn.waitDrain(fn);
  }

  end(trailers?: string[]): void {
    if (this.detached || this.ended) return;
    this.ended = true;
    if (this.chunked) {
      if (trailers !== undefined && trailers.length > 0) {
        let t = '0\r\n';
        for (let i = 0; i < trailers.length; i += 2) t += `${trailers[i]}: ${trailers[i + 1]}\r\n`;
        this.#gather(`${t}\r\n`);
      } else this.#gather(LAST_CHUNK);
    }
    if (this.pending === undefined) this.conn.responseDone(this);
    // else: flush() completes it
  }

  retract(): boolean {
    if (this.headSent || this.detached) return false;
    this.pending = undefined;
    this.pendingBytes = 0;
    this.#gathered = 0;
    this.headWritten = false;
    this.chunked = false;
    this.ended = false;
    return true;
  }

  abort(): void {
    if (this.detached) return;
    this.pending = undefined;
    this.conn.destroy();
  }

  onClose(fn: () => void): void {
    if (this.closed || this.detached) {
      queueMicrotask(fn);
      return;
    }
    // Nearly always exactly one listener (the exchange): no array for it.
    if (this.closeFn === undefined) this.closeFn = fn;
    else (this.closeFns ??= []).push(fn);
  }

  tunnel(status: number, headers: string[], upstream: Socket, upstreamRest: Buffer | undefined): void {
    if (this.detached) {
      upstream.destroy();
      return;
    }
    let head = statusLine(status);
    for (let i = 0; i < headers.length; i += 2) head += `${headers[i]}: ${headers[i + 1]}\r\n`;
    this.headWritten = this.headSent = true;
    this.status = status;
    this.conn.tunnel(this, `${head}\r\n`, upstream, upstreamRest);
  }

  /** Bytes gathered since the last flush (pendingBytes resets on forced flushes the same way). */
  #gathered = 0;

  #gather(part: string | Buffer): void {
    (this.pending ??= []).push(part);
    this.pendingBytes += part.length;
    this.#gathered += part.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(this.#scheduledFlush);
    }
  }

  readonly #scheduledFlush = (): void => {
    this.flushScheduled = false;
    this.flush();
  };

  flush(): void {
    const parts = this.pending;
    if (parts === undefined || this.detached) return;
    this.pending = undefined;
    this.pendingBytes = 0;
    const socket = this.conn.socket;
    if (socket.destroyed) return;
    this.headSent = true;
    const total = this.#gathered;
    this.#gathered = 0;
    if (parts.length === 1) {
      const p = parts[0]!;
      if (typeof p === 'string') socket.write(p, 'latin1');
      else socket.write(p);
    } else if (total <= COALESCE_BYTES) {
      // A small response (head and body) as one buffer: one write, no writev bookkeeping.
      const out = Buffer.allocUnsafe(total);
      let at = 0;
      for (const p of parts) at += typeof p === 'string' ? out.write(p, at, 'latin1') : p.copy(out, at);
      socket.write(out);
    } else {
      socket.cork();
      for (const p of parts) {
        if (typeof p === 'string') socket.write(p, 'latin1');
        else socket.write(p);
      }
      socket.uncork();
    }
    if (this.ended) this.conn.responseDone(this);
  }

  /** The connection is done with this exchange (response complete, or the connection closed). */
  detach(closed: boolean): void {
    if (this.detached) return;
    this.detached = true;
    this.closed = closed || this.closed;
    const fn = this.closeFn;
    const fns = this.closeFns;
    this.closeFn = undefined;
    this.closeFns = undefined;
    if (fn !== undefined) fn();
    if (fns !== undefined) for (const f of fns) f();
  }
}

export class Http1Connection implements ParserEvents {
  readonly socket: Socket;
  readonly owner: Http1Owner;
  readonly parser: RequestParser;
  phase: PhaseValue = Phase.Idle;
  /** Absolute time (performance.now) the current deadline expires; 0 = none. */
  deadline = 0;
  deadlineKind: DeadlineValue = Deadline.None;
  stream: Http1Stream | undefined;
  requestComplete = false;
  responseComplete = false;
  closeAfter = false;
  /** Unconsumed input and where it starts (kept while the parser is paused). */
  #buf: Buffer | undefined;
  #bufAt = 0;
  #reading = false;
  #drainFns: Array<() => void> | undefined;
  /** Set by the listener: the tenant this connection is counted against. */
  tenant = '';

  constructor(socket: Socket, owner: Http1Owner, initial?: Buffer) {
    this.socket = socket;
    this.owner = owner;
    this.parser = new RequestParser(this);
    socket.setNoDelay(true);
    socket.on('data', this.#onData);
    socket.on('error', this.#onError);
    socket.on('close', this.#onClose);
    socket.on('drain', this.#onDrain);
    this.#arm(Deadline.Head, owner.timeouts.headersMs);
    if (initial !== undefined) this.#onData(initial);
  }

  // ---- deadlines (checked by the listener's sweep) ------------------------------------------

  #arm(kind: DeadlineValue, ms: number): void {
    this.deadlineKind = kind;
    this.deadline = ms > 0 ? performance.now() + ms : 0;
  }

  #disarm(): void {
    this.deadlineKind = Deadline.None;
    this.deadline = 0;
  }

  /** Called by the sweep when `deadline` has passed. */
  expire(): void {
    const kind = this.deadlineKind;
    this.#disarm();
    switch (kind) {
      case Deadline.Idle:
        this.destroy();
        return;
      case Deadline.Head:
        if (this.parser.inHead) this.#reject(408, 'ISOMESH_ERR_PROXY_REQUEST_TIMEOUT', `request head not complete within ${this.owner.timeouts.headersMs} ms`);
        else this.destroy();
        return;
      case Deadline.Body: {
        const sink = this.stream?.sink;
        if (sink !== undefined) {
          this.stream!.sink = undefined;
          sink.error({ status: 408, code: 'ISOMESH_ERR_PROXY_REQUEST_TIMEOUT', message: `no request body bytes for ${this.owner.timeouts.bodyMs} ms` });
        } else this.destroy();
        return;
      }
      case Deadline.Send:
        this.destroy();
        return;
      default:
    }
  }

  // ---- input ---------------------------------------------------------------------------------

  /** Until the first bytes tell HTTP/1.x from the HTTP/2 preface. */
  #sniffing = true;

  readonly #onData = (chunk: Buffer): void => {
    if (this.phase === Phase.Tunnel || this.phase === Phase.Closed) return;
    if (this.#buf !== undefined && this.#bufAt < this.#buf.length) {
      this.#buf = Buffer.concat([this.#buf.subarray(this.#bufAt), chunk]);
    } else this.#buf = chunk;
    this.#bufAt = 0;
    if (this.#sniffing) {
      const kind = sniffPreface(this.#buf);
      if (kind === 'maybe') return; // a prefix of the preface so far: wait for more
      this.#sniffing = false;
      if (kind === 'yes') {
        const initial = this.#buf;
        this.#buf = undefined;
        this.phase = Phase.Closed;
        this.#disarm();
        this.socket.off('data', this.#onData);
        this.socket.off('error', this.#onError);
        this.socket.off('close', this.#onClose);
        this.socket.off('drain', this.#onDrain);
        this.owner.toHttp2(this, initial);
        return;
      }
    }
    if (this.phase === Phase.Idle) {
      this.phase = Phase.Head;
      this.#arm(Deadline.Head, this.owner.timeouts.headersMs);
    }
    this.#drive();
  };

  /** Runs the parser over buffered input while it may consume; pauses the socket when it may not. */
  #drive(): void {
    if (this.#reading) return; // re-entered from an event handler: the outer loop goes on
    this.#reading = true;
    try {
      while (this.#buf !== undefined && this.phase !== Phase.Closed && this.phase !== Phase.Tunnel) {
        if (!this.#mayParse()) break;
        const buf = this.#buf;
        const at = this.parser.execute(buf, this.#bufAt);
        if (at < 0) {
          this.#parseError(this.parser.error!);
          return;
        }
        this.#bufAt = at;
        if (at >= buf.length) {
          this.#buf = undefined;
          this.#bufAt = 0;
          break;
        }
        if (at === this.#bufAt && !this.#mayParse()) break;
      }
    } finally {
      this.#reading = false;
    }
    if (this.phase === Phase.Closed || this.phase === Phase.Tunnel) return;
    // Backpressure toward the client: stop reading when the body is held back by the upstream, or when
    // what waits unparsed (pipelined requests) grows past a bound; otherwise keep the socket flowing —
    // pausing and resuming it for every request costs more than the few bytes it would hold back.
    const buffered = this.#buf === undefined ? 0 : this.#buf.length - this.#bufAt;
    if (this.#bodyPaused || buffered > MAX_BUFFERED) {
      if (!this.#socketPaused) {
        this.#socketPaused = true;
        this.socket.pause();
      }
    } else if (this.#socketPaused) {
      this.#socketPaused = false;
      this.socket.resume();
    }
  }

  #socketPaused = false;

  /** The parser may go on: a head is awaited, or the body is wanted and not paused. */
  #mayParse(): boolean {
    const s = this.stream;
    if (s === undefined) return !this.parser.done;
    if (this.requestComplete) return false; // next request waits for this response
    return s.sink !== undefined && !this.#bodyPaused;
  }

  #bodyPaused = false;

  onHead(head: RequestHead): void {
    const stream = new Http1Stream(this, head);
    this.stream = stream;
    this.phase = Phase.Active;
    this.requestComplete = false;
    this.responseComplete = false;
    this.#bodyPaused = false;
    this.#disarm();
    // The body (if any) waits until the exchange asks for it.
    this.parser.pause();
    this.owner.onRequest(stream);
  }

  onBody(chunk: Buffer): void {
    const s = this.stream;
    const sink = s?.sink;
    if (sink === undefined) {
      // Body no one wants any more (an early response): dropped; the connection closes after it.
      return;
    }
    if (this.owner.timeouts.bodyMs > 0) this.#arm(Deadline.Body, this.owner.timeouts.bodyMs);
    if (!sink.data(chunk)) {
      this.#bodyPaused = true;
      this.#disarm();
      this.parser.pause();
    }
  }

  onEnd(trailers: string[] | undefined): void {
    this.requestComplete = true;
    if (this.deadlineKind === Deadline.Body) this.#disarm();
    const s = this.stream;
    const sink = s?.sink;
    if (s !== undefined) s.sink = undefined;
    sink?.end(trailers);
    if (s !== undefined && this.responseComplete) this.#finish(s);
  }

  /** The exchange wants the body (again): deliver what is buffered, then read on. */
  readBody(s: Http1Stream): void {
    if (s !== this.stream) return;
    this.#bodyPaused = false;
    if (!this.requestComplete && this.owner.timeouts.bodyMs > 0) this.#arm(Deadline.Body, this.owner.timeouts.bodyMs);
    if (this.requestComplete) {
      // Bodyless request (or already complete): end at once.
      const sink = s.sink;
      s.sink = undefined;
      if (sink !== undefined) queueMicrotask(() => sink.end(undefined));
      return;
    }
    this.#drive();
  }

  stopBody(s: Http1Stream): void {
    if (s !== this.stream) return;
    if (this.deadlineKind === Deadline.Body) this.#disarm();
    if (!this.requestComplete) this.closeAfter = true;
  }

  // ---- output --------------------------------------------------------------------------------

  waitDrain(fn: () => void): void {
    (this.#drainFns ??= []).push(fn);
    if (this.owner.timeouts.idleMs > 0 && this.deadlineKind === Deadline.None) this.#arm(Deadline.Send, this.owner.timeouts.idleMs);
  }

  readonly #onDrain = (): void => {
    if (this.deadlineKind === Deadline.Send) this.#disarm();
    const fns = this.#drainFns;
    if (fns === undefined) return;
    this.#drainFns = undefined;
    for (const fn of fns) fn();
  };

  /** The response is fully handed to the socket. */
  responseDone(s: Http1Stream): void {
    if (s !== this.stream) return;
    this.responseComplete = true;
    if (this.requestComplete || this.closeAfter) this.#finish(s);
  }

  #finish(s: Http1Stream): void {
    if (this.stream !== s) return;
    this.stream = undefined;
    s.detach(false);
    if (this.closeAfter || !s.head.keepAlive || !this.requestComplete) {
      this.phase = Phase.Closed;
      this.#disarm();
      this.socket.end();
      return;
    }
    this.parser.reset();
    this.phase = this.#buf !== undefined ? Phase.Head : Phase.Idle;
    if (this.phase === Phase.Head) this.#arm(Deadline.Head, this.owner.timeouts.headersMs);
    else this.#arm(Deadline.Idle, this.owner.timeouts.idleMs);
    this.#drive();
  }

  tunnel(s: Http1Stream, head: string, upstream: Socket, rest: Buffer | undefined): void {
    if (s !== this.stream) {
      upstream.destroy();
      return;
    }
    this.phase = Phase.Tunnel;
    this.#disarm();
    const socket = this.socket;
    socket.write(head, 'latin1');
    if (rest !== undefined && rest.length > 0) socket.write(rest);
    // Client bytes that arrived after the upgrade request belong to the new protocol.
    const early = this.#buf !== undefined ? this.#buf.subarray(this.#bufAt) : undefined;
    this.#buf = undefined;
    if (early !== undefined && early.length > 0) upstream.write(early);
    socket.off('data', this.#onData);
    upstream.on('error', () => socket.destroy());
    upstream.on('close', () => socket.destroy());
    socket.on('close', () => upstream.destroy());
    socket.pipe(upstream);
    upstream.pipe(socket);
    socket.resume();
    upstream.resume();
  }

  // ---- errors and teardown -------------------------------------------------------------------

  #parseError(err: ParseError): void {
    const s = this.stream;
    if (s !== undefined && !this.requestComplete) {
      // A broken body: the exchange decides (400 if nothing was sent yet, else a cut).
      const sink = s.sink;
      s.sink = undefined;
      this.closeAfter = true;
      if (sink !== undefined) sink.error(err);
      else this.destroy();
      return;
    }
    this.#reject(err.status, err.code, err.message);
  }

  /** Answers an error the connection itself found (bad head, timeout) and closes. */
  #reject(status: number, code: string, message: string): void {
    this.phase = Phase.Closed;
    this.#disarm();
    this.#buf = undefined;
    if (!this.socket.writable) {
      this.socket.destroy();
      return;
    }
    this.socket.end(errorResponse(status, code, message, true), 'latin1');
    // Do not wait forever for a client that does not read its error.
    setTimeout(() => this.socket.destroy(), 1000).unref();
  }

  destroy(): void {
    if (this.phase === Phase.Closed && this.socket.destroyed) return;
    this.phase = Phase.Closed;
    this.#disarm();
    this.socket.destroy();
  }

  readonly #onError = (): void => {
    // 'close' follows; the exchange learns it there.
  };

  readonly #onClose = (): void => {
    this.phase = Phase.Closed;
    this.#disarm();
    this.#buf = undefined;
    const s = this.stream;
    this.stream = undefined;
    if (s !== undefined) {
      const sink = s.sink;
      s.sink = undefined;
      if (sink !== undefined && !this.requestComplete) sink.error({ status: 400, code: 'ISOMESH_ERR_PROXY_BAD_REQUEST', message: 'client closed the connection during the request body' });
      s.closed = true;
      s.detach(true);
    }
    const fns = this.#drainFns;
    this.#drainFns = undefined;
    if (fns !== undefined) for (const fn of fns) fn();
    this.owner.onClosed(this);
  };
}
