// The built-in proxy's backend for ctx.fetch (host/contract.ts PluginFetch): a plugin's request to one
// of its own tenant's services goes through the same exchange as a client's — admission (it counts in
// the tenant's requestsPerSecond and maxConcurrentRequests), path normalization, load balancing,
// timeouts, retries, circuit breaking — but straight to the named service, without route matching,
// rate limits or the plugin chain (a plugin calling through its own chain could loop). The "client"
// is an in-memory stream that collects the response.

import type { HeaderList, PluginFetch } from '../host/contract.ts';
import type { BodySink, DownstreamRequest, DownstreamStream, ResponseFraming } from './stream.ts';

/** A fetch answer larger than this is cut (the host refuses over 1 MiB anyway). */
const MAX_BODY = 1024 * 1024 + 1;

export interface FetchResult {
  status: number;
  headers: HeaderList;
  body: Uint8Array;
}

export interface FetchRequest {
  service: string;
  method: string;
  path: string;
  headers: HeaderList;
  body?: Uint8Array;
  timeoutMs: number;
}

/** A DownstreamStream whose client is a plugin: the request is given, the response collected. */
export class MemoryStream implements DownstreamStream {
  readonly req: DownstreamRequest;
  readonly service: string;
  readonly timeoutMs: number;
  status = 0;
  bytesOut = 0;
  headSent = false;
  closed = false;
  #headers: string[] = [];
  #chunks: Buffer[] = [];
  #bytes = 0;
  #body: Buffer | undefined;
  #closeFns: Array<() => void> = [];
  #done = false;
  readonly #resolve: (r: FetchResult) => void;
  readonly #reject: (e: Error) => void;

  constructor(req: FetchRequest, authority: string, resolve: (r: FetchResult) => void, reject: (e: Error) => void) {
    const raw: string[] = [];
    for (const [n, v] of req.headers) raw.push(n, v);
    this.#body = req.body !== undefined && req.body.byteLength > 0 ? Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength) : undefined;
    this.service = req.service;
    this.timeoutMs = req.timeoutMs;
    this.req = {
      protocol: 'http/1.1',
      method: req.method,
      target: req.path.charCodeAt(0) === 47 ? req.path : `/${req.path}`,
      authority,
      raw,
      contentLength: this.#body?.length ?? -1,
      hasBody: this.#body !== undefined,
      codings: '',
      upgrade: undefined,
      expectContinue: false,
      remoteAddress: '127.0.0.1',
      socket: undefined,
    };
    this.#resolve = resolve;
    this.#reject = reject;
  }

  readBody(sink: BodySink): void {
    const body = this.#body;
    this.#body = undefined;
    queueMicrotask(() => {
      if (body !== undefined) sink.data(body);
      sink.end(undefined);
    });
  }

  resumeBody(): void {}
  discardBody(): void {}
  sendContinue(): void {}

  writeHead(status: number, headers: string[], _framing: ResponseFraming): void {
    this.status = status;
    this.#headers = headers;
  }

  write(chunk: Buffer): boolean {
    this.#bytes += chunk.length;
    this.bytesOut += chunk.length;
    if (this.#bytes > MAX_BODY) {
      this.abort();
      return true;
    }
    this.#chunks.push(chunk);
    return true;
  }

  onDrain(fn: () => void): void {
    queueMicrotask(fn);
  }

  end(_trailers?: string[]): void {
    if (this.#done) return;
    this.#done = true;
    this.headSent = true;
    const headers: HeaderList = [];
    for (let i = 0; i < this.#headers.length; i += 2) headers.push([this.#headers[i]!.toLowerCase(), this.#headers[i + 1]!]);
    this.#resolve({ status: this.status, headers, body: Buffer.concat(this.#chunks) });
    this.#close();
  }

  retract(): boolean {
    if (this.#done) return false;
    this.status = 0;
    this.#headers = [];
    this.#chunks = [];
    this.#bytes = 0;
    return true;
  }

  abort(): void {
    if (this.#done) return;
    this.#done = true;
    this.#reject(new Error(this.#bytes > MAX_BODY ? 'response body over 1 MiB' : `the request to service ${this.service} was cut`));
    this.#close();
  }

  onClose(fn: () => void): void {
    if (this.closed) queueMicrotask(fn);
    else this.#closeFns.push(fn);
  }

  #close(): void {
    this.closed = true;
    const fns = this.#closeFns;
    this.#closeFns = [];
    for (const fn of fns) queueMicrotask(fn);
  }
}

export type { PluginFetch };
