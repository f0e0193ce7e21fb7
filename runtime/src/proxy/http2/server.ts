// HTTP/2 cleartext with prior knowledge (h2c) on the tenant port: the HTTP/1.1 connection hands its
// socket over when the first bytes are the HTTP/2 connection preface, and node:http2 (nghttp2) owns
// framing, HPACK and flow control from there. Each stream becomes a DownstreamStream for the same
// exchange the HTTP/1.1 codec feeds.
//
// As in the HTTP/1.1 codec, the response head is gathered with the body until the end of the tick,
// so an exchange may still retract it and answer an error instead (a body that fails before its
// first byte went out).

import http2 from 'node:http2';
import type { Socket } from 'node:net';
import { validAuthority, type ParseError } from '../http1/parser.ts';
import type { BodySink, DownstreamRequest, DownstreamStream, ResponseFraming } from '../stream.ts';
import type { Http1Timeouts } from '../http1/connection.ts';

export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** Limits of a downstream HTTP/2 session (header block ≈ 16 KiB and 100 fields, as HTTP/1.1). */
const SETTINGS: http2.Settings = {
  maxConcurrentStreams: 256,
  maxHeaderListSize: 16 * 1024 + 1024,
  initialWindowSize: 1024 * 1024,
  enablePush: false,
};

const { NGHTTP2_INTERNAL_ERROR, NGHTTP2_CANCEL } = http2.constants;

/** 'yes' = the preface; 'maybe' = a prefix of it so far (wait for more); 'no' = HTTP/1.x. */
export function sniffPreface(buf: Buffer): 'yes' | 'maybe' | 'no' {
  const n = Math.min(buf.length, H2_PREFACE.length);
  if (buf.compare(H2_PREFACE, 0, n, 0, n) !== 0) return 'no';
  return buf.length >= H2_PREFACE.length ? 'yes' : 'maybe';
}

export interface Http2Owner {
  readonly timeouts: Http1Timeouts;
  onRequest(stream: DownstreamStream): void;
  /** The session (its TCP connection) is gone. */
  onSessionClosed(socket: Socket): void;
}

class Http2DownstreamStream implements DownstreamStream {
  readonly req: DownstreamRequest;
  readonly #s: http2.ServerHttp2Stream;
  status = 0;
  bytesOut = 0;
  headSent = false;
  closed = false;
  #headWritten = false;
  #pendingHead: http2.OutgoingHttpHeaders | undefined;
  #pendingOptions: http2.ServerStreamResponseOptions | undefined;
  #pendingBody: Buffer[] | undefined;
  #ended = false;
  #wantTrailers = false;
  #endTrailers: string[] | undefined;
  #flushScheduled = false;
  #sink: BodySink | undefined;
  #bodyDone = false;
  #trailers: string[] | undefined;
  #closeFns: Array<() => void> | undefined;
  #bodyTimer: NodeJS.Timeout | undefined;
  readonly #bodyMs: number;

  constructor(s: http2.ServerHttp2Stream, req: DownstreamRequest, bodyMs: number) {
    this.#s = s;
    this.req = req;
    this.#bodyMs = bodyMs;
    this.#bodyDone = !req.hasBody;
    s.pause();
    s.on('data', this.#onData);
    s.on('trailers', (headers: http2.IncomingHttpHeaders) => {
      this.#trailers = flatten(headers);
    });
    s.on('end', this.#onEnd);
    s.on('error', () => {});
    s.on('close', this.#onClose);
    s.on('wantTrailers', () => {
      const t = this.#endTrailers;
      this.#endTrailers = undefined;
      s.sendTrailers(t !== undefined && t.length > 0 ? toObject(t) : {});
    });
  }

  readBody(sink: BodySink): void {
    this.#sink = sink;
    if (this.#bodyDone) {
      queueMicrotask(() => this.#endSink());
      return;
    }
    this.#armBody();
    this.#s.resume();
  }

  resumeBody(): void {
    if (this.#sink === undefined || this.#bodyDone) return;
    this.#armBody();
    this.#s.resume();
  }

  discardBody(): void {
    this.#sink = undefined;
    clearTimeout(this.#bodyTimer);
    // Read and drop what is left so flow control keeps the session moving.
    if (!this.#bodyDone) this.#s.resume();
  }

  sendContinue(): void {
    if (this.#headWritten || !this.req.expectContinue || this.#s.closed) return;
    this.#s.additionalHeaders({ ':status': 100 });
  }

  writeHead(status: number, headers: string[], framing: ResponseFraming): void {
    if (this.#headWritten || this.closed) return;
    this.#headWritten = true;
    this.status = status;
    const out: http2.OutgoingHttpHeaders = { ':status': status };
    for (let i = 0; i < headers.length; i += 2) {
      const name = headers[i]!.toLowerCase();
      const prev = out[name];
      out[name] = prev === undefined ? headers[i + 1]! : Array.isArray(prev) ? [...prev, headers[i + 1]!] : [String(prev), headers[i + 1]!];
    }
    if (framing.length >= 0 && status !== 204 && status !== 304) out['content-length'] = String(framing.length);
    const bodyless = this.req.method === 'HEAD' || status === 204 || status === 304 || (framing.length === 0 && framing.trailers !== true);
    this.#pendingHead = out;
    this.#wantTrailers = framing.trailers === true && !bodyless;
    this.#pendingOptions = bodyless ? { endStream: true } : this.#wantTrailers ? { waitForTrailers: true } : {};
    this.#schedule();
  }

  write(chunk: Buffer): boolean {
    if (this.closed || this.#ended || chunk.length === 0) return true;
    this.bytesOut += chunk.length;
    if (!this.headSent) {
      (this.#pendingBody ??= []).push(chunk);
      return true;
    }
    return this.#s.write(chunk);
  }

  onDrain(fn: () => void): void {
    this.#flush();
    if (!this.#s.writableNeedDrain) {
      queueMicrotask(fn);
      return;
    }
    this.#s.once('drain', fn);
  }

  end(trailers?: string[]): void {
    if (this.closed || this.#ended) return;
    this.#ended = true;
    this.#endTrailers = trailers;
    if (!this.headSent) return; // the flush ends it
    this.#s.end();
  }

  retract(): boolean {
    if (this.headSent || this.closed) return false;
    this.#headWritten = false;
    this.#pendingHead = undefined;
    this.#pendingBody = undefined;
    this.#ended = false;
    this.#endTrailers = undefined;
    return true;
  }

  abort(): void {
    if (this.#s.closed) return;
    this.#s.close(NGHTTP2_INTERNAL_ERROR);
  }

  onClose(fn: () => void): void {
    if (this.closed) {
      queueMicrotask(fn);
      return;
    }
    (this.#closeFns ??= []).push(fn);
  }

  #schedule(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    queueMicrotask(() => {
      this.#flushScheduled = false;
      this.#flush();
    });
  }

  #flush(): void {
    const head = this.#pendingHead;
    if (head === undefined || this.closed) return;
    this.#pendingHead = undefined;
    const s = this.#s;
    const options = this.#pendingOptions!;
    this.headSent = true;
    try {
      s.respond(head, options);
    } catch {
      s.close(NGHTTP2_INTERNAL_ERROR);
      return;
    }
    if (options.endStream) return;
    const body = this.#pendingBody;
    this.#pendingBody = undefined;
    if (body !== undefined) for (const b of body) s.write(b);
    if (this.#ended) s.end();
  }

  #armBody(): void {
    if (this.#bodyMs <= 0) return;
    clearTimeout(this.#bodyTimer);
    this.#bodyTimer = setTimeout(this.#bodyTimeout, this.#bodyMs);
  }

  readonly #bodyTimeout = (): void => {
    const sink = this.#sink;
    this.#sink = undefined;
    if (sink !== undefined && !this.#bodyDone) {
      sink.error({ status: 408, code: 'ISOMESH_ERR_PROXY_REQUEST_TIMEOUT', message: `no request body bytes for ${this.#bodyMs} ms` } satisfies ParseError);
    }
  };

  readonly #onData = (chunk: Buffer): void => {
    const sink = this.#sink;
    if (sink === undefined) return; // discarded
    this.#armBody();
    if (!sink.data(chunk)) {
      clearTimeout(this.#bodyTimer);
      this.#s.pause();
    }
  };

  readonly #onEnd = (): void => {
    this.#bodyDone = true;
    clearTimeout(this.#bodyTimer);
    this.#endSink();
  };

  #endSink(): void {
    const sink = this.#sink;
    this.#sink = undefined;
    sink?.end(this.#trailers);
  }

  readonly #onClose = (): void => {
    clearTimeout(this.#bodyTimer);
    this.closed = true;
    const sink = this.#sink;
    this.#sink = undefined;
    if (sink !== undefined && !this.#bodyDone) sink.error({ status: 400, code: 'ISOMESH_ERR_PROXY_BAD_REQUEST', message: 'client reset the stream during the request body' });
    const fns = this.#closeFns;
    this.#closeFns = undefined;
    if (fns !== undefined) for (const fn of fns) fn();
  };
}

function flatten(headers: http2.IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (name.charCodeAt(0) === 58 /* : */ || value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, String(value));
  }
  return out;
}

function toObject(flat: string[]): http2.OutgoingHttpHeaders {
  const out: http2.OutgoingHttpHeaders = {};
  for (let i = 0; i < flat.length; i += 2) {
    const name = flat[i]!.toLowerCase();
    const prev = out[name];
    out[name] = prev === undefined ? flat[i + 1]! : Array.isArray(prev) ? [...prev, flat[i + 1]!] : [String(prev), flat[i + 1]!];
  }
  return out;
}

/** Refuses a stream the proxy cannot take (bad pseudo-headers) with a plain HTTP/2 error response. */
function refuse(s: http2.ServerHttp2Stream, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  try {
    s.respond({ ':status': status, 'content-type': 'application/json', 'x-isomesh-error': code, 'content-length': String(Buffer.byteLength(body)) });
    s.end(body);
  } catch {
    s.close(NGHTTP2_CANCEL);
  }
}

/** The HTTP/2 side of one tenant server: sessions handed over by sniffed connections. */
export class Http2Sessions {
  readonly #owner: Http2Owner;
  readonly #server: http2.Http2Server;
  readonly sessions = new Set<http2.ServerHttp2Session>();

  constructor(owner: Http2Owner) {
    this.#owner = owner;
    this.#server = http2.createServer({ settings: SETTINGS, maxSessionMemory: 64, maxHeaderListPairs: 128, unknownProtocolTimeout: 1000 });
    this.#server.on('session', (session) => {
      this.sessions.add(session);
      const socket = (session as unknown as { socket: Socket }).socket;
      session.setTimeout(owner.timeouts.idleMs, () => session.close());
      session.on('error', () => {});
      session.on('close', () => {
        this.sessions.delete(session);
        owner.onSessionClosed(socket);
      });
    });
    this.#server.on('stream', this.#onStream);
  }

  /** Takes over a socket whose first bytes (already read: `initial`) are the HTTP/2 preface. */
  adopt(socket: Socket, initial: Buffer): void {
    socket.pause();
    socket.unshift(initial);
    this.#server.emit('connection', socket);
  }

  readonly #onStream = (s: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number, rawHeaders: string[]): void => {
    const method = headers[':method'];
    const path = headers[':path'];
    const authority = headers[':authority'] ?? headers.host;
    if (typeof method !== 'string' || method === 'CONNECT') {
      refuse(s, 501, 'ISOMESH_ERR_PROXY_NOT_IMPLEMENTED', 'CONNECT is not supported');
      return;
    }
    if (typeof path !== 'string' || path.charCodeAt(0) !== 47 || path.indexOf('#') !== -1) {
      refuse(s, 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST', 'missing or invalid :path');
      return;
    }
    for (let i = 0; i < path.length; i++) {
      const c = path.charCodeAt(i);
      if (c < 0x21 || c > 0x7e) {
        refuse(s, 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST', ':path holds a character outside visible ASCII');
        return;
      }
    }
    if (typeof authority !== 'string' || !validAuthority(authority)) {
      refuse(s, 400, 'ISOMESH_ERR_PROXY_BAD_HOST', 'missing or invalid :authority');
      return;
    }
    const raw: string[] = [];
    for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.charCodeAt(0) !== 58) raw.push(rawHeaders[i]!, rawHeaders[i + 1]!);
    const cl = headers['content-length'];
    const contentLength = typeof cl === 'string' && /^\d{1,15}$/.test(cl) ? Number(cl) : -1;
    const socket = (s.session as unknown as { socket: Socket }).socket;
    const expect = headers.expect;
    const req: DownstreamRequest = {
      protocol: 'h2',
      method,
      target: path,
      authority,
      raw,
      contentLength,
      hasBody: (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) === 0,
      codings: '',
      upgrade: undefined,
      expectContinue: typeof expect === 'string' && expect.toLowerCase() === '100-continue',
      remoteAddress: socket?.remoteAddress ?? '',
      socket,
    };
    this.#owner.onRequest(new Http2DownstreamStream(s, req, this.#owner.timeouts.bodyMs));
  };

  /** Graceful: GOAWAY to every session; streams in flight finish. */
  close(): void {
    for (const s of this.sessions) s.close();
  }

  destroy(): void {
    for (const s of this.sessions) s.destroy();
  }
}
