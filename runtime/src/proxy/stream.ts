// The downstream stream: what the request path (exchange.ts) needs of one client request, whatever the
// codec (HTTP/1.1 connection, HTTP/2 stream). The exchange reads the request head and body through it
// and writes the response; the codec owns framing, flow control, timeouts and the socket.

import type { Socket } from 'node:net';
import type { ParseError } from './http1/parser.ts';

export type DownstreamProtocol = 'http/1.0' | 'http/1.1' | 'h2';

export interface DownstreamRequest {
  readonly protocol: DownstreamProtocol;
  readonly method: string;
  /** Origin-form target "/p?q" as received (absolute-form already reduced to it). */
  readonly target: string;
  /** Validated authority (absolute-form, Host, or :authority); "" when none. */
  readonly authority: string;
  /** Header fields [name, value, ...] (HTTP/1.1: original case; h2: lower case, no pseudo-headers). */
  readonly raw: readonly string[];
  /** Content-Length, -1 when unknown. */
  readonly contentLength: number;
  /** A body follows the head. */
  readonly hasBody: boolean;
  /** HTTP/1.1 transfer codings before the final chunked ("" when none). */
  readonly codings: string;
  /** The Upgrade field of an HTTP/1.1 upgrade request. */
  readonly upgrade: string | undefined;
  readonly expectContinue: boolean;
  readonly remoteAddress: string;
  /** The client connection (undefined for a plugin's ctx.fetch, which has none). */
  readonly socket: Socket | undefined;
}

/** Where the request body goes once the exchange asks for it. */
export interface BodySink {
  /** false: stop until resumeBody(). */
  data(chunk: Buffer): boolean;
  /** The whole body arrived; trailers as [name, value, ...] when there were any. */
  end(trailers: string[] | undefined): void;
  /** The client broke the body (malformed, too slow, gone). */
  error(err: ParseError): void;
}

export interface ResponseFraming {
  /** Content-Length of the response body, -1 when unknown (chunked on HTTP/1.1, close-delimited on 1.0). */
  length: number;
  /** Transfer codings other than chunked to declare (HTTP/1.1 only), "" when none. */
  codings?: string;
  /** Trailers will follow the body (end(trailers)). */
  trailers?: boolean;
}

export interface DownstreamStream {
  readonly req: DownstreamRequest;
  /** The response head has gone to the wire (after that, only cutting the stream can signal an error). */
  readonly headSent: boolean;
  /** The client is gone or the stream was reset. */
  readonly closed: boolean;
  /** The response status written (0 before writeHead). */
  readonly status: number;
  /** Response body bytes written so far. */
  readonly bytesOut: number;
  /** Start (or keep) delivering the request body to `sink`. */
  readBody(sink: BodySink): void;
  resumeBody(): void;
  /** Stop reading the body: the exchange no longer wants it (an early response). */
  discardBody(): void;
  /** Interim 100 Continue (only when the client asked for it and no final response was sent). */
  sendContinue(): void;
  /** Response head: status and end-to-end headers [name, value, ...] (no framing or hop-by-hop fields). */
  writeHead(status: number, headers: string[], framing: ResponseFraming): void;
  /** A body chunk; false when the client's buffer is full (wait for onDrain). */
  write(chunk: Buffer): boolean;
  onDrain(fn: () => void): void;
  /** Ends the response (with trailers when framing said so). */
  end(trailers?: string[]): void;
  /**
   * Drops a response head and body that have not gone to the wire yet; false when it is too late.
   * Lets the exchange answer an error instead of a response whose body failed before its first byte.
   */
  retract(): boolean;
  /** Cuts the stream: the client sees a truncated response or a reset. */
  abort(): void;
  /** When the stream ends, however it ends (after the response completed, or the client went away). */
  onClose(fn: () => void): void;
  /**
   * HTTP/1.1 only: answer the upgrade with the upstream's 101 head and join the two connections;
   * bytes then flow both ways until either side closes. `upstreamRest` = bytes the upstream sent after
   * its 101 head.
   */
  tunnel?(status: number, headers: string[], upstream: Socket, upstreamRest: Buffer | undefined): void;
}
