// The upstream HTTP/2 client for services with protocol "http2" or "grpc": h2c with prior knowledge
// (node:http2), many streams per connection. One pool per (tenant, service, endpoint): a request takes
// the least busy session that has room under the peer's SETTINGS_MAX_CONCURRENT_STREAMS, a new session
// when all are full (up to maxSessions), else it waits. Flow control is nghttp2's; backpressure is
// carried both ways (stream write returns false → the exchange pauses the client's body; a slow client
// pauses the upstream stream).
//
// Calls have the same surface as the HTTP/1.1 UpstreamCall (origin.ts), so the exchange does not care
// which protocol a service speaks.

import http2 from 'node:http2';
import type { BodyTarget, CallSink, RequestBodyMode, UpstreamAttempt } from './origin.ts';
import { CONNECT_TIMEOUT, RequestBody } from './origin.ts';
import type { EndpointState } from './balancer.ts';

const { NGHTTP2_CANCEL } = http2.constants;
const DEFAULT_MAX_STREAMS = 100;

const SETTINGS: http2.Settings = { enablePush: false, initialWindowSize: 1024 * 1024 };

function resetError(code: number | undefined): Error {
  return Object.assign(new Error(`upstream reset the stream (HTTP/2 error ${code ?? 'unknown'})`), { code: 'ECONNRESET' });
}

function flatten(headers: http2.IncomingHttpHeaders): string[] {
  const out: string[] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (name.charCodeAt(0) === 58 || value === undefined) continue;
    if (Array.isArray(value)) for (const v of value) out.push(name, v);
    else out.push(name, String(value));
  }
  return out;
}

/** One request/response on an HTTP/2 session. */
export class H2UpstreamCall implements UpstreamAttempt {
  readonly sink: CallSink;
  readonly headers: http2.OutgoingHttpHeaders;
  readonly isHead: boolean;
  readonly bodyMode: RequestBodyMode;
  readonly connectTimeoutMs: number;
  readonly upgrade = false;
  reusedSocket = false;
  headReceived = false;
  sentAll = false;
  broken = false;
  closed = false;
  ep: EndpointState | undefined;
  svc: { addActive(delta: number): void } | undefined;
  pool: H2EndpointPool | undefined;
  h2: http2.ClientHttp2Stream | undefined;
  session: H2Session | undefined;
  #target: BodyTarget | null | undefined;
  #held: Buffer[] | undefined;
  #ended = false;
  #trailers: string[] | undefined;
  #requestTrailers: string[] | undefined;
  #endAfterHead = false;

  constructor(sink: CallSink, headers: http2.OutgoingHttpHeaders, isHead: boolean, bodyMode: RequestBodyMode, connectTimeoutMs: number) {
    this.sink = sink;
    this.headers = headers;
    this.isHead = isHead;
    this.bodyMode = bodyMode;
    this.connectTimeoutMs = connectTimeoutMs;
  }

  /** The response ended with its head (no body): HTTP/2 "trailers-only" when it carries grpc-status. */
  get endAfterHead(): boolean {
    return this.#endAfterHead;
  }

  start(session: H2Session): void {
    this.session = session;
    this.reusedSocket = session.streams > 0 || session.served > 0;
    session.streams++;
    session.served++;
    const body = this.bodyMode !== RequestBody.None;
    let s: http2.ClientHttp2Stream;
    try {
      s = session.session.request(this.headers, body ? { endStream: false, waitForTrailers: true } : { endStream: true });
    } catch (err) {
      session.streams--;
      this.#fail(err as Error);
      return;
    }
    this.h2 = s;
    s.on('response', (headers, flags: number) => {
      if (this.closed) return;
      const status = Number(headers[':status']);
      if (status >= 100 && status < 200) return;
      this.headReceived = true;
      // END_STREAM on the HEADERS frame (endAfterHeaders is not set yet when 'response' fires).
      this.#endAfterHead = (flags & http2.constants.NGHTTP2_FLAG_END_STREAM) !== 0;
      this.sink.onHead(this, status, flatten(headers), '');
      if (this.#target === undefined && !this.closed) s.pause();
    });
    s.on('data', (chunk: Buffer) => this.#write(chunk));
    s.on('trailers', (headers) => {
      this.#trailers = flatten(headers);
    });
    s.on('end', () => {
      this.#ended = true;
      if (this.#target !== undefined) this.#finish();
    });
    s.on('wantTrailers', () => {
      const t = this.#requestTrailers;
      const out: http2.OutgoingHttpHeaders = {};
      if (t !== undefined) for (let i = 0; i < t.length; i += 2) out[t[i]!.toLowerCase()] = t[i + 1]!;
      s.sendTrailers(out);
    });
    s.on('drain', () => {
      if (!this.sentAll && !this.closed) this.sink.onBodyDrain(this);
    });
    s.on('error', () => {});
    s.on('close', () => {
      session.streams--;
      session.pool.next(session);
      if (this.closed) return;
      if (this.#ended && this.#target !== undefined) return; // finished
      if (this.#ended) return; // complete, held for the exchange
      this.#fail(resetError(s.rstCode));
    });
    this.sink.onAssigned(this);
  }

  sendBody(chunk: Buffer): boolean {
    const s = this.h2;
    if (s === undefined || this.closed || this.sentAll || chunk.length === 0) return true;
    return s.write(chunk);
  }

  endBody(trailers?: string[]): void {
    const s = this.h2;
    if (s === undefined || this.closed || this.sentAll) return;
    this.#requestTrailers = trailers;
    this.sentAll = true;
    s.end();
    this.sink.onSent(this);
  }

  /** Stream the response body to `target`. */
  stream(target: BodyTarget): void {
    if (this.closed || this.#target !== undefined) return;
    this.#target = target;
    const held = this.#held;
    this.#held = undefined;
    if (held !== undefined) for (const b of held) this.#write(b);
    if (this.#ended) this.#finish();
    else this.h2?.resume();
  }

  discard(): void {
    if (this.closed || this.#target !== undefined) return;
    this.#target = null;
    this.#held = undefined;
    // The rest of the response is not wanted: cancel the stream rather than read it.
    if (!this.#ended) this.h2?.close(NGHTTP2_CANCEL);
    this.#close();
  }

  #write(chunk: Buffer): void {
    const t = this.#target;
    if (t === undefined) {
      (this.#held ??= []).push(chunk);
      return;
    }
    if (t === null || t.write(chunk)) return;
    const s = this.h2;
    if (s === undefined) return;
    s.pause();
    t.onDrain(() => {
      if (!this.closed) s.resume();
    });
  }

  #finish(): void {
    if (this.closed) return;
    if (this.#target) this.sink.onEnd(this, this.#trailers);
    this.#close();
  }

  abort(err?: Error): void {
    if (this.closed) return;
    if (this.h2 !== undefined && !this.h2.closed) this.h2.close(NGHTTP2_CANCEL);
    else this.pool?.unqueue(this);
    if (err !== undefined) this.sink.onError(this, err);
    this.#close();
  }

  #fail(err: Error): void {
    if (this.closed) return;
    if (!this.headReceived) this.sink.onError(this, err);
    else if (this.#target === undefined) this.broken = true;
    else if (this.#target !== null) this.sink.onError(this, err);
    this.#close();
  }

  #close(): void {
    if (this.closed) return;
    this.closed = true;
    this.sink.onDone(this);
  }

  /** The session could not be opened (refused, timed out) before the call started. */
  failBeforeStart(err: Error): void {
    this.#fail(err);
  }
}

export interface H2Session {
  readonly pool: H2EndpointPool;
  readonly session: http2.ClientHttp2Session;
  streams: number;
  served: number;
  ready: boolean;
}

/** HTTP/2 sessions to one endpoint. */
export class H2EndpointPool {
  readonly host: string;
  readonly port: number;
  readonly maxSessions: number;
  readonly #sessions: H2Session[] = [];
  readonly #queue: H2UpstreamCall[] = [];
  retired = false;

  constructor(host: string, port: number, maxSessions: number) {
    this.host = host;
    this.port = port;
    this.maxSessions = maxSessions;
  }

  get openSockets(): number {
    return this.#sessions.length;
  }

  dispatch(call: H2UpstreamCall): void {
    call.pool = this;
    const s = this.#pick();
    if (s !== undefined) {
      if (s.ready) call.start(s);
      else this.#queue.push(call);
      return;
    }
    if (this.#sessions.length < this.maxSessions) {
      this.#open(call.connectTimeoutMs);
    }
    this.#queue.push(call);
  }

  unqueue(call: H2UpstreamCall): void {
    const i = this.#queue.indexOf(call);
    if (i !== -1) this.#queue.splice(i, 1);
  }

  #limit(s: H2Session): number {
    return s.session.remoteSettings?.maxConcurrentStreams ?? DEFAULT_MAX_STREAMS;
  }

  #pick(): H2Session | undefined {
    let best: H2Session | undefined;
    for (const s of this.#sessions) {
      if (s.session.closed || s.session.destroyed) continue;
      if (s.ready && s.streams >= this.#limit(s)) continue;
      if (best === undefined || s.streams < best.streams) best = s;
    }
    return best;
  }

  #open(connectTimeoutMs: number): void {
    const authority = this.host.includes(':') ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`;
    const session = http2.connect(`http://${authority}`, { settings: SETTINGS, maxSessionMemory: 64 });
    const s: H2Session = { pool: this, session, streams: 0, served: 0, ready: false };
    this.#sessions.push(s);
    let timer: NodeJS.Timeout | undefined;
    if (connectTimeoutMs > 0) {
      timer = setTimeout(() => {
        if (!s.ready) this.#lost(s, CONNECT_TIMEOUT);
      }, connectTimeoutMs);
    }
    session.once('connect', () => {
      clearTimeout(timer);
      s.ready = true;
      this.next(s);
    });
    session.on('remoteSettings', () => this.next(s));
    session.on('error', (err) => {
      clearTimeout(timer);
      this.#lost(s, err);
    });
    session.on('close', () => {
      clearTimeout(timer);
      this.#lost(s, Object.assign(new Error('upstream closed the HTTP/2 connection'), { code: 'ECONNRESET' }));
    });
    session.on('goaway', () => {
      // No new streams on it; the ones running finish.
      const i = this.#sessions.indexOf(s);
      if (i !== -1) this.#sessions.splice(i, 1);
      this.#drainQueue();
    });
    session.setTimeout(30_000, () => {
      if (s.streams === 0) session.close();
    });
  }

  /** A session has room again (a stream ended, settings arrived): start queued calls on it. */
  next(s: H2Session): void {
    if (!s.ready || s.session.closed) return;
    while (this.#queue.length > 0 && s.streams < this.#limit(s)) this.#queue.shift()!.start(s);
  }

  #drainQueue(): void {
    if (this.#queue.length === 0) return;
    const s = this.#pick();
    if (s !== undefined && s.ready) this.next(s);
    else if (this.#sessions.length < this.maxSessions && !this.retired) this.#open(this.#queue[0]!.connectTimeoutMs);
  }

  #lost(s: H2Session, err: Error): void {
    const i = this.#sessions.indexOf(s);
    if (i === -1) return;
    this.#sessions.splice(i, 1);
    if (!s.session.destroyed) s.session.destroy();
    // Calls waiting for a session that never came up fail with its error (retry-worthy: connect failure).
    if (!s.ready && this.#sessions.every((o) => !o.ready)) {
      for (const call of this.#queue.splice(0)) call.failBeforeStart(err);
      return;
    }
    this.#drainQueue();
  }

  retire(): void {
    this.retired = true;
    for (const s of this.#sessions) if (s.streams === 0) s.session.close();
  }

  destroy(): void {
    this.retired = true;
    for (const call of this.#queue.splice(0)) call.abort(Object.assign(new Error('pool closed'), { code: 'ECONNRESET' }));
    for (const s of this.#sessions.splice(0)) s.session.destroy();
  }
}
