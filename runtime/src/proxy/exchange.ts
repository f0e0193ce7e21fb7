// One request through the built-in proxy, over a DownstreamStream (HTTP/1.1 or HTTP/2), in stages:
//   path normalization → admission (tenant quota) → route → upgrade check → rate limits
//   → [request body buffered, when a plugin declared it] → request chain (onRequest)
//   → 100 Continue → router (endpoint, attempts, retries, timeouts, circuit breaker)
//   → [response chain (onResponse), response body buffered when declared] → deliver.
// `state` says which stage the exchange is in; host.end(run) is called exactly once per admitted
// request, when the downstream stream closes and no hook call is pending.
//
// Retries: a request is retried only when its body can be replayed — no body, or a body the proxy
// buffered for a plugin. A connect failure is retried for any such request (the upstream never saw it);
// a 5xx or a reset only for idempotent methods (GET HEAD OPTIONS TRACE PUT DELETE). `retries.attempts`
// is the number of retries after the first attempt. Independently of the policy, an idempotent
// replayable request whose *reused* keep-alive socket turns out to be dead is retried once.
//
// Timeouts: connectTimeoutMs bounds the TCP connect; timeoutMs (route.timeoutMs ?? service.timeoutMs,
// 0 = none) bounds the wait for the response head, counted from when the request body has been sent
// (the downstream codec bounds a slow client's body with its own idle timeout). Streamed response
// bodies are not bounded (long polls, downloads).

import type { Socket } from 'node:net';
import type pino from 'pino';
import type { ChainRun, HeaderList, PluginHostApi, RequestOutcome, ResponseOutcome } from '../host/contract.ts';
import { applyRateLimits, type RateLimitStore } from '../host/index.ts';
import type { ErrorCode } from '../errors.ts';
import type { UpstreamErrorKind } from './metrics.ts';
import { isIdempotent, type UpstreamService } from './upstream.ts';
import type { TenantRuntime, TenantSnapshot } from './tenant.ts';
import { stripPort, type RouteChoice } from './route-table.ts';
import { CONNECT_TIMEOUT, RequestBody, requestHead, UpstreamCall, type CallSink, type RequestBodyMode, type UpstreamAttempt } from './origin.ts';
import { H2UpstreamCall } from './origin-h2.ts';
import { grpcStatusFor, grpcTimeoutMs, grpcTrailersOnly, isGrpc } from './grpc.ts';
import { normalizePath } from './path.ts';
import { epochMs, type Telemetry, type TraceContext } from '../telemetry/index.ts';
import type { ParseError } from './http1/parser.ts';
import type { BodySink, DownstreamStream } from './stream.ts';
import {
  flattenResponseHeaders,
  requestHeaderList,
  responseHeaderList,
  responseHeadersFlat,
  saneRequestId,
  upstreamRequestHeaders,
  errorBody,
  h2RequestHeaders,
  upstreamHeadFromRaw,
  headerOf,
} from './headers.ts';

export interface ProxyContext {
  readonly host: PluginHostApi;
  readonly logger: pino.Logger;
  readonly rateLimits: RateLimitStore;
  readonly telemetry: Telemetry;
  originalDestination(socket: Socket | undefined): string | undefined;
}

/** A plugin's ctx.fetch: straight to `service`, no routing, rate limits or chain. */
export interface DirectTarget {
  service: string;
  timeoutMs: number;
}

// Sentinel passed to UpstreamCall.abort() so onError can tell our head timeout apart.
const HEAD_TIMEOUT = new Error('upstream response timeout');
const RETRY_BASE_MS = 25;
const RETRY_MAX_MS = 250;
/** Methods sent without a Content-Length when there is no body; others get "0". */
const NO_LENGTH_METHODS = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT']);

function classify(err: Error): UpstreamErrorKind | 'protocol' {
  if (err === CONNECT_TIMEOUT) return 'connect_timeout';
  if (err === HEAD_TIMEOUT) return 'timeout';
  switch ((err as NodeJS.ErrnoException).code) {
    case 'ECONNREFUSED':
      return 'refused';
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'ETIMEDOUT':
      return 'connect_failure';
    case 'HPE_INVALID':
      return 'protocol';
    default:
      return 'reset';
  }
}

const FAILURE: Record<'refused' | 'connect_failure' | 'connect_timeout' | 'reset' | 'timeout' | 'protocol', [number, ErrorCode]> = {
  refused: [502, 'ISOMESH_ERR_PROXY_UPSTREAM_REFUSED'],
  connect_failure: [502, 'ISOMESH_ERR_PROXY_UPSTREAM_REFUSED'],
  connect_timeout: [504, 'ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT'],
  reset: [502, 'ISOMESH_ERR_PROXY_UPSTREAM_RESET'],
  timeout: [504, 'ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT'],
  protocol: [502, 'ISOMESH_ERR_UPSTREAM_BAD_RESPONSE'],
};

const St = {
  Start: 0,
  RequestBody: 1,
  RequestChain: 2,
  Upstream: 3,
  ResponseChain: 4,
  ResponseBody: 5,
  Delivering: 6,
  Tunnel: 7,
  Done: 8,
} as const;
type State = (typeof St)[keyof typeof St];

export function startExchange(ctx: ProxyContext, tenant: TenantRuntime, stream: DownstreamStream, direct?: DirectTarget): void {
  new Exchange(ctx, tenant, stream, direct).start();
}

class Exchange implements CallSink, BodySink {
  readonly ctx: ProxyContext;
  readonly tenant: TenantRuntime;
  readonly snapshot: TenantSnapshot;
  readonly stream: DownstreamStream;
  readonly requestId: string;
  readonly startedAt = performance.now();
  state: State = St.Start;
  run: ChainRun | undefined;
  ended = false;
  hookPending = false;
  clientGone = false;
  choice: RouteChoice | undefined;
  service: UpstreamService | undefined;
  timeoutMs = 0;
  path = '/';
  /** Normalized path + query, as sent upstream. */
  upstreamTarget = '/';
  /** The request head sent upstream, built once (retries reuse it). */
  upstreamHead: string | undefined;
  requestHeaders: HeaderList | undefined;
  /** No plugin changed the headers: their values need no re-validation. */
  headersUntouched = false;
  /** Request body buffered for a plugin (or replaced by one): sent from memory, replayable. */
  body: Buffer | undefined;
  bodyChunks: Buffer[] | undefined;
  bodyBytes = 0;
  bodyLimit = 0;
  /** The request body streams from the client into the current call. */
  streaming = false;
  attempts = 0;
  staleRetried = false;
  call: UpstreamAttempt | undefined;
  /** The current call's response head was accepted (body streaming, or a response hook running). */
  responding = false;
  /** Response body buffered for a plugin. */
  resStatus = 0;
  resHeaders: HeaderList | undefined;
  resCodings = '';
  /** The upstream's Content-Length (-1 none): the response body's framing, whatever plugins say. */
  resLength = -1;
  resChunks: Buffer[] | undefined;
  resBytes = 0;
  resLimit = 0;
  resTrailers: string[] | undefined;
  headTimer: NodeJS.Timeout | undefined;
  retryTimer: NodeJS.Timeout | undefined;
  // telemetry
  trace!: TraceContext;
  bytesIn = 0;
  /** performance.now() of the first upstream attempt; upstreamMs once its head (or failure) came. */
  upstreamStart = 0;
  upstreamMs: number | undefined;
  pluginMs = 0;
  hookStart = 0;
  /** The isomesh code of an answer isomesh made. */
  errorCode: string | undefined;
  lastEndpoint: string | undefined;

  readonly direct: DirectTarget | undefined;
  /** The client speaks gRPC (HTTP/2, content-type application/grpc*): isomesh's own errors are gRPC statuses. */
  grpc = false;
  /** gRPC status of the answer (from the upstream's trailers or head, or isomesh's own). */
  grpcStatus: number | undefined;

  constructor(ctx: ProxyContext, tenant: TenantRuntime, stream: DownstreamStream, direct?: DirectTarget) {
    this.ctx = ctx;
    this.tenant = tenant;
    this.snapshot = tenant.snapshot;
    this.stream = stream;
    this.direct = direct;
    this.requestId = saneRequestId(headerOf(stream.req.raw, 'x-request-id')) ?? ctx.telemetry.requestId();
  }

  start(): void {
    const { ctx, tenant, stream } = this;
    const req = stream.req;
    tenant.requests++;
    tenant.inFlight++;
    tenant.series.inFlight++;
    stream.onClose(this.onClose);
    if (req.protocol === 'h2') this.grpc = isGrpc(headerOf(req.raw, 'content-type'));
    this.trace = ctx.telemetry.trace(headerOf(req.raw, 'traceparent'), headerOf(req.raw, 'tracestate'));

    const target = req.target;
    const q = target.indexOf('?');
    const norm = normalizePath(q === -1 ? target : target.slice(0, q), this.snapshot.settings.pathNormalization);
    if (!norm.ok) {
      this.fail(400, 'ISOMESH_ERR_PROXY_BAD_PATH', norm.message);
      return;
    }
    this.path = norm.path;
    const query = q === -1 ? '' : target.slice(q + 1);
    this.upstreamTarget = q === -1 ? norm.path : `${norm.path}?${query}`;

    try {
      const admission = ctx.host.begin(tenant.name, this.requestId);
      if (!admission.ok) {
        this.fail(admission.status, admission.code, admission.message, admission.retryAfterSec);
        return;
      }
      this.run = admission.run;
      if (this.trace.sampled && ctx.telemetry.exporting) ctx.host.recordCalls?.(admission.run);
    } catch (err) {
      this.internalError('plugin host begin() threw', err);
      return;
    }

    const authority = req.authority;
    const method = req.method;
    if (this.direct !== undefined) {
      this.startDirect(this.direct);
      return;
    }
    const originalDestination = ctx.originalDestination(req.socket);
    const table = this.snapshot.table;
    const host = stripPort(authority.toLowerCase());
    const choice = table.size > 0 ? table.match({ host, path: this.path, method, raw: req.raw }) : undefined;
    this.choice = choice;
    const serviceName = choice?.service ?? table.serviceByVip(originalDestination) ?? table.serviceByVip(authority);
    if (serviceName === undefined) {
      this.fail(404, 'ISOMESH_ERR_PROXY_NO_ROUTE', `no route matches ${method} ${authority}${this.path}`);
      return;
    }
    this.service = this.snapshot.services.get(serviceName);
    if (this.service === undefined) {
      this.unknownService(serviceName);
      return;
    }
    this.timeoutMs = choice?.timeoutMs ?? this.service.service.timeoutMs;
    if (this.grpc) {
      const deadline = grpcTimeoutMs(headerOf(req.raw, 'grpc-timeout'));
      if (deadline !== undefined) this.timeoutMs = this.timeoutMs > 0 ? Math.min(this.timeoutMs, deadline) : deadline;
    }

    if (req.upgrade !== undefined) {
      const allowed = choice?.upgrades ?? ['websocket'];
      const wanted = req.upgrade.split(',')[0]!.trim().toLowerCase();
      if (!allowed.includes(wanted)) {
        this.fail(403, 'ISOMESH_ERR_PROXY_UPGRADE_REFUSED', `route ${choice?.route ?? '(VIP default)'} does not allow upgrades to ${JSON.stringify(wanted)}`);
        return;
      }
    }

    const limits = this.snapshot.rateLimits;
    if (limits.length > 0) {
      const raw = req.raw;
      const decision = applyRateLimits(tenant.name, limits, {
        remoteAddress: req.remoteAddress,
        path: this.path,
        method,
        route: choice?.route,
        header: (name) => headerOf(raw, name),
      }, ctx.rateLimits);
      for (const r of decision.results) tenant.series.rateLimit(r.rateLimit.name, r.result);
      if (decision.over !== undefined) {
        const { rateLimit, verdict } = decision.over;
        this.fail(429, 'ISOMESH_ERR_RATELIMIT_OVER', `rate limit ${rateLimit.name} (${verdict.limit} per ${rateLimit.limit.unit}) is exceeded`, verdict.resetSec);
        return;
      }
    }

    if (ctx.host.hasRequestHooks?.(this.run!, choice?.route) === false) {
      // No plugin runs on this request: straight to the router (the upstream head is built from the
      // client's fields in one pass, no HeaderList).
      this.state = St.Upstream;
      this.stream.sendContinue();
      this.attempt();
      return;
    }
    this.requestHeaders = this.headerList();
    if (req.hasBody) {
      this.bodyLimit = ctx.host.bodyLimit(this.run, 'request', choice?.route);
      if (this.bodyLimit > 0) {
        if (req.contentLength > this.bodyLimit) {
          this.bodyTooLarge();
          return;
        }
        // The plugin needs the body before onRequest: the client must be told to send it.
        this.state = St.RequestBody;
        this.bodyChunks = [];
        stream.sendContinue();
        stream.readBody(this);
        return;
      }
    }
    this.requestChain();
  }

  /** ctx.fetch: the named service, the plugin's timeout, no chain. */
  startDirect(direct: DirectTarget): void {
    const req = this.stream.req;
    this.service = this.snapshot.services.get(direct.service);
    if (this.service === undefined) {
      this.unknownService(direct.service);
      return;
    }
    const own = this.service.service.timeoutMs;
    this.timeoutMs = own > 0 ? Math.min(own, direct.timeoutMs) : direct.timeoutMs;
    this.requestHeaders = requestHeaderList(req.raw, req.authority, req.remoteAddress, this.requestId, viaOf(req.protocol), this.trace.traceparent);
    this.headersUntouched = false;
    this.state = St.Upstream;
    this.attempt();
  }

  requestChain(): void {
    this.state = St.RequestChain;
    const req = this.stream.req;
    const target = req.target;
    const q = target.indexOf('?');
    this.hookPending = true;
    this.hookStart = performance.now();
    this.ctx.host
      .onRequest(this.run!, {
        method: req.method,
        path: this.path,
        query: q === -1 ? '' : target.slice(q + 1),
        host: req.authority,
        headers: this.requestHeaders!,
        remoteAddress: req.remoteAddress,
        originalDestination: this.ctx.originalDestination(req.socket),
        route: this.choice?.route,
        service: this.service!.name,
        ...(this.body !== undefined ? { body: this.body } : {}),
      })
      .then((o) => this.onRequestOutcome(o), (e: unknown) => this.onHookError(e));
  }

  // ---- request body (BodySink) ---------------------------------------------------------------

  data(chunk: Buffer): boolean {
    this.bytesIn += chunk.length;
    if (this.state === St.RequestBody) {
      this.bodyBytes += chunk.length;
      if (this.bodyBytes > this.bodyLimit) {
        this.stream.discardBody();
        this.bodyTooLarge();
        return false;
      }
      this.bodyChunks!.push(chunk);
      return true;
    }
    const call = this.call;
    if (call === undefined || !this.streaming) return true;
    return call.sendBody(chunk);
  }

  end(trailers: string[] | undefined): void {
    if (this.state === St.RequestBody) {
      this.body = Buffer.concat(this.bodyChunks!);
      this.bodyChunks = undefined;
      this.requestChain();
      return;
    }
    if (this.streaming && this.call !== undefined) {
      this.streaming = false;
      this.call.endBody(trailers);
    }
  }

  error(err: ParseError): void {
    // The client broke its body: malformed, too slow, or gone.
    this.clearTimers();
    this.streaming = false;
    this.call?.abort();
    this.call = undefined;
    if (this.clientGone) return;
    this.fail(err.status, err.code, err.message);
  }

  bodyTooLarge(): void {
    this.fail(413, 'ISOMESH_ERR_PROXY_BODY_TOO_LARGE', `request body is larger than ${this.bodyLimit} bytes, the limit a plugin of the chain declared`);
  }

  // ---- request chain -------------------------------------------------------------------------

  onRequestOutcome(outcome: RequestOutcome): void {
    this.hookPending = false;
    this.pluginMs += performance.now() - this.hookStart;
    if (this.clientGone) {
      this.endRun();
      return;
    }
    switch (outcome.action) {
      case 'respond':
        this.stream.discardBody();
        this.respond(outcome.status, outcome.headers, outcome.body);
        return;
      case 'fail':
        this.stream.discardBody();
        this.fail(outcome.status, outcome.code, outcome.message);
        return;
      case 'continue':
        break;
      default:
        this.internalError('plugin host returned an unknown request outcome', outcome);
        return;
    }
    if (outcome.service !== undefined && outcome.service !== this.service!.name) {
      const chosen = this.snapshot.services.get(outcome.service);
      if (chosen === undefined) {
        this.unknownService(outcome.service);
        return;
      }
      this.service = chosen;
    }
    if (outcome.body !== undefined) this.body = Buffer.from(outcome.body.buffer, outcome.body.byteOffset, outcome.body.byteLength);
    this.headersUntouched = outcome.headers === this.requestHeaders;
    this.requestHeaders = outcome.headers;
    this.state = St.Upstream;
    // The chain accepted the request: now the client may send its body.
    if (this.body === undefined) this.stream.sendContinue();
    this.attempt();
  };

  onHookError(err: unknown): void {
    this.hookPending = false;
    this.call?.discard();
    if (this.clientGone) {
      this.endRun();
      return;
    }
    this.internalError('plugin host hook rejected', err);
  };

  // ---- router --------------------------------------------------------------------------------

  bodyMode(): RequestBodyMode {
    const req = this.stream.req;
    if (this.body !== undefined) return this.body.length > 0 || !NO_LENGTH_METHODS.has(req.method) ? RequestBody.Length : RequestBody.None;
    if (!req.hasBody) return RequestBody.None;
    return req.contentLength >= 0 ? RequestBody.Length : RequestBody.Chunked;
  }

  /** The upstream head of a request no plugin touched: one pass over the client's fields. */
  headFromRaw(authority: string): string {
    const req = this.stream.req;
    const mode = this.bodyMode();
    const length = mode === RequestBody.Length ? String(req.contentLength) : mode === RequestBody.None && !NO_LENGTH_METHODS.has(req.method) ? '0' : undefined;
    const chunked = mode === RequestBody.Chunked ? (req.codings !== '' ? `${req.codings}, chunked` : 'chunked') : undefined;
    return upstreamHeadFromRaw(req.method, this.upstreamTarget, req.raw, req.authority, req.remoteAddress, this.requestId, viaOf(req.protocol), this.trace.traceparent, chunked, length, req.upgrade, authority);
  }

  /** The upstream request head; throws when a (plugin-set) header cannot be sent. */
  buildHead(authority: string): string {
    const req = this.stream.req;
    const mode = this.bodyMode();
    let length: string | undefined;
    if (this.body !== undefined) length = mode === RequestBody.Length ? String(this.body.length) : undefined;
    else if (mode === RequestBody.Length) length = String(req.contentLength);
    else if (mode === RequestBody.None && !NO_LENGTH_METHODS.has(req.method)) length = '0';
    const chunked = mode === RequestBody.Chunked ? (req.codings !== '' ? `${req.codings}, chunked` : 'chunked') : undefined;
    const flat = upstreamRequestHeaders(this.requestHeaders!, authority, chunked, length, req.upgrade);
    // Headers straight from the downstream parser are valid HTTP already; plugin output is checked.
    return requestHead(req.method, this.upstreamTarget, flat, !this.headersUntouched);
  }

  replayable(): boolean {
    return !this.stream.req.hasBody || this.body !== undefined;
  }

  attempt(): void {
    const svc = this.service!;
    this.attempts++;
    // Take the breaker's slot first, then judge: exact when several workers share the count.
    const before = svc.live.addActive(1);
    if (before >= svc.maxActive) {
      svc.live.addActive(-1);
      this.tenant.series.upstreamError(svc.name, 'overflow');
      this.tenant.series.overflow(svc.name);
      this.fail(503, 'ISOMESH_ERR_PROXY_CIRCUIT_OPEN', `service ${svc.name} has ${before} requests pending (limit ${svc.maxActive})`);
      return;
    }
    const req = this.stream.req;
    const ep = svc.picker.pick(this.hashKey(), performance.now());
    if (ep === undefined) {
      svc.live.addActive(-1);
      this.tenant.series.upstreamError(svc.name, 'no_endpoint');
      this.fail(503, 'ISOMESH_ERR_PROXY_NO_ENDPOINT', `service ${svc.name} has no endpoint`);
      return;
    }
    const protocol = svc.service.protocol ?? 'http1';
    let call: UpstreamAttempt;
    try {
      call = protocol === 'http1' ? this.h1Call(ep.authority) : this.h2Call(ep.authority, protocol === 'grpc');
    } catch (err) {
      svc.live.addActive(-1);
      // Invalid header names/values (most likely set by a plugin) cannot go on the wire.
      this.fail(502, 'ISOMESH_ERR_PLUGIN_BAD_RESULT', `request headers rejected: ${(err as Error).message}`);
      return;
    }
    call.ep = ep;
    call.svc = svc.live;
    this.lastEndpoint = ep.authority;
    this.call = call;
    this.responding = false;
    ep.addInFlight(1);
    if (this.upstreamStart === 0) this.upstreamStart = performance.now();
    if (call instanceof UpstreamCall) this.tenant.pool.endpoint(svc, ep).dispatch(call);
    else this.tenant.pool.h2Endpoint(svc, ep).dispatch(call as H2UpstreamCall);
  }

  /** What ring_hash hashes (service hashOn): a header, a cookie, or the client address (default). */
  hashKey(): string {
    const req = this.stream.req;
    const on = this.service!.service.hashOn;
    if (on !== undefined && on !== 'sourceIp' && this.service!.service.lb === 'ring_hash') {
      if ('header' in on) {
        const v = headerOf(req.raw, on.header);
        if (v !== undefined) return v;
      } else {
        const v = cookieOf(headerOf(req.raw, 'cookie'), on.cookie);
        if (v !== undefined) return v;
      }
    }
    return req.remoteAddress || this.requestId;
  }

  /** The request fields as plugins and the HTTP/2 client see them. */
  headerList(): HeaderList {
    const req = this.stream.req;
    return requestHeaderList(req.raw, req.authority, req.remoteAddress, this.requestId, viaOf(req.protocol), this.trace.traceparent);
  }

  h1Call(authority: string): UpstreamCall {
    const req = this.stream.req;
    const head = (this.upstreamHead ??= this.requestHeaders === undefined ? this.headFromRaw(authority) : this.buildHead(authority));
    return new UpstreamCall(this, head, req.method === 'HEAD', this.bodyMode(), this.service!.service.connectTimeoutMs, req.upgrade !== undefined);
  }

  h2Call(authority: string, grpc: boolean): H2UpstreamCall {
    const req = this.stream.req;
    const mode = this.bodyMode();
    let length: number | undefined;
    if (this.body !== undefined) length = this.body.length;
    else if (mode === RequestBody.Length) length = req.contentLength;
    const headers = h2RequestHeaders((this.requestHeaders ??= this.headerList()), req.method, this.upstreamTarget, authority, length, grpc);
    return new H2UpstreamCall(this, headers, req.method === 'HEAD', mode, this.service!.service.connectTimeoutMs);
  }

  onAssigned(call: UpstreamAttempt): void {
    if (call !== this.call) return;
    if (call.bodyMode === RequestBody.None) {
      this.armHeadTimer(call);
      return;
    }
    if (this.body !== undefined) {
      call.sendBody(this.body);
      call.endBody();
      return;
    }
    // Stream the client's body into this call.
    this.streaming = true;
    this.stream.readBody(this);
  }

  onBodyDrain(call: UpstreamAttempt): void {
    if (call === this.call && this.streaming) this.stream.resumeBody();
  }

  onSent(call: UpstreamAttempt): void {
    this.armHeadTimer(call);
  }

  armHeadTimer(call: UpstreamAttempt): void {
    if (!(this.timeoutMs > 0) || call !== this.call || this.responding) return;
    clearTimeout(this.headTimer);
    this.headTimer = setTimeout(() => {
      if (call === this.call && !this.responding) call.abort(HEAD_TIMEOUT);
    }, this.timeoutMs);
  }

  onHead(call: UpstreamAttempt, status: number, raw: string[], codings: string): void {
    if (call !== this.call || this.clientGone) {
      call.discard();
      return;
    }
    this.clearTimers();
    const svc = this.service!;
    const now = performance.now();
    this.upstreamMs = now - this.upstreamStart;
    svc.picker.report(call.ep!, status < 500, now);
    if (status >= 500 && this.mayRetry('5xx')) {
      call.discard();
      this.retryLater();
      return;
    }
    this.responding = true;
    this.resCodings = codings;
    this.resLength = contentLengthOf(raw);
    const run = this.run!;
    if (this.direct !== undefined) {
      this.deliver(status, responseHeadersFlat(raw, this.requestId, viaOf(this.stream.req.protocol)), this.resLength);
      return;
    }
    this.resLimit = this.ctx.host.bodyLimit(run, 'response', this.choice?.route);
    if (this.resLimit > 0 && !this.bodylessResponse(status)) {
      const length = contentLengthOf(raw);
      if (length > this.resLimit) {
        call.discard();
        this.responseTooLarge();
        return;
      }
      this.state = St.ResponseBody;
      this.resStatus = status;
      this.resHeaders = responseHeaderList(raw, this.requestId);
      this.resChunks = [];
      call.stream(this.bufferTarget());
      return;
    }
    if (this.ctx.host.hasResponseHooks(run)) {
      this.state = St.ResponseChain;
      this.hookPending = true;
      this.hookStart = performance.now();
      this.ctx.host
        .onResponse(run, { status, headers: responseHeaderList(raw, this.requestId) })
        .then((o) => this.onResponseOutcome(o), (e: unknown) => this.onHookError(e));
    } else {
      this.deliver(status, responseHeadersFlat(raw, this.requestId, viaOf(this.stream.req.protocol)), contentLengthOf(raw));
    }
  }

  bodylessResponse(status: number): boolean {
    return this.stream.req.method === 'HEAD' || status === 204 || status === 304;
  }

  /** Collects the response body for a plugin that declared it. */
  bufferTarget(): { write(chunk: Buffer): boolean; onDrain(fn: () => void): void } {
    return {
      write: (chunk: Buffer): boolean => {
        if (this.state !== St.ResponseBody) return true;
        this.resBytes += chunk.length;
        if (this.resBytes > this.resLimit) {
          this.state = St.Done;
          this.call?.abort();
          this.responseTooLarge();
          return true;
        }
        this.resChunks!.push(chunk);
        return true;
      },
      onDrain: (fn: () => void): void => queueMicrotask(fn),
    };
  }

  responseTooLarge(): void {
    this.fail(502, 'ISOMESH_ERR_UPSTREAM_BODY_TOO_LARGE', `response body is larger than ${this.resLimit} bytes, the limit a plugin of the chain declared`);
  }

  onUpgrade(call: UpstreamAttempt, raw: string[], socket: Socket, rest: Buffer | undefined): void {
    if (call !== this.call || this.clientGone || this.stream.tunnel === undefined) {
      socket.destroy();
      return;
    }
    this.clearTimers();
    this.state = St.Tunnel;
    this.call = undefined;
    const headers = responseHeadersFlat(raw, this.requestId, viaOf(this.stream.req.protocol), true);
    this.stream.tunnel(101, headers, socket, rest);
    // The plugin chain's work for this request is over; the tunnel holds no admission slot.
    this.endRun();
  }

  onResponseOutcome(outcome: ResponseOutcome): void {
    this.hookPending = false;
    this.pluginMs += performance.now() - this.hookStart;
    if (this.clientGone) {
      this.endRun();
      return;
    }
    if (outcome.action !== 'continue') {
      this.call?.discard(); // drain so the upstream socket returns to the pool
      this.fail(outcome.status, outcome.code, outcome.message);
      return;
    }
    const flat = flattenResponseHeaders(outcome.headers, this.requestId, viaOf(this.stream.req.protocol));
    if (outcome.body !== undefined) {
      const body = Buffer.from(outcome.body.buffer, outcome.body.byteOffset, outcome.body.byteLength);
      this.call?.discard();
      this.sendWhole(outcome.status, flat, body, this.resTrailers);
      return;
    }
    if (this.state === St.ResponseBody || this.resChunks !== undefined) {
      const body = Buffer.concat(this.resChunks ?? []);
      this.resChunks = undefined;
      this.sendWhole(outcome.status, flat, body, this.resTrailers);
      return;
    }
    this.deliver(outcome.status, flat, this.resLength);
  };

  deliver(status: number, headers: string[], length: number): void {
    const call = this.call!;
    if (call.broken) {
      this.fail(502, 'ISOMESH_ERR_PROXY_UPSTREAM_RESET', 'upstream closed the connection while sending the response');
      return;
    }
    this.state = St.Delivering;
    const h2 = call instanceof H2UpstreamCall;
    const trailersOnly = h2 && call.endAfterHead;
    if (trailersOnly) length = 0; // e.g. a gRPC error: keep it one HEADERS frame with END_STREAM
    if (this.grpc && trailersOnly) this.grpcStatus = Number(headerOf(headers, 'grpc-status') ?? 0);
    this.stream.writeHead(status, headers, { length, codings: this.resCodings, trailers: (h2 && !trailersOnly) || length < 0 });
    call.stream(this.stream);
  }

  /** A response whose body the proxy holds whole (buffered for, or replaced by, a plugin). */
  sendWhole(status: number, headers: string[], body: Buffer, trailers: string[] | undefined): void {
    this.state = St.Delivering;
    const stream = this.stream;
    stream.writeHead(status, headers, { length: this.bodylessResponse(status) ? -1 : body.length });
    if (body.length > 0) stream.write(body);
    stream.end(trailers);
  }

  onEnd(call: UpstreamAttempt, trailers: string[] | undefined): void {
    if (call !== this.call || this.clientGone) return;
    if (this.state === St.ResponseBody) {
      // The whole body is here: the response chain sees it.
      this.resTrailers = trailers;
      this.state = St.ResponseChain;
      const body = Buffer.concat(this.resChunks!);
      this.resChunks = [body];
      this.hookPending = true;
      this.hookStart = performance.now();
      this.ctx.host
        .onResponse(this.run!, { status: this.resStatus, headers: this.resHeaders!, body })
        .then((o) => this.onResponseOutcome(o), (e: unknown) => this.onHookError(e));
      return;
    }
    this.state = St.Done;
    if (this.grpc && trailers !== undefined) {
      const g = headerOf(trailers, 'grpc-status');
      if (g !== undefined) this.grpcStatus = Number(g);
    }
    this.stream.end(trailers);
  }

  onDone(call: UpstreamAttempt): void {
    call.svc!.addActive(-1);
    call.ep!.addInFlight(-1);
  }

  onError(call: UpstreamAttempt, err: Error): void {
    if (call !== this.call || this.clientGone) return;
    const kind = classify(err);
    if (this.responding) {
      // Failed after the head: an error response if nothing went to the client yet, else a cut.
      if (this.stream.retract()) {
        const [status, code] = kind === 'protocol' ? FAILURE.protocol : FAILURE.reset;
        this.tenant.series.upstreamError(this.service!.name, kind === 'protocol' ? 'reset' : kind);
        this.fail(status, code, `service ${this.service!.name} endpoint ${call.ep!.authority}: ${err.message}`);
      } else this.stream.abort();
      return;
    }
    this.clearTimers();
    const svc = this.service!;
    const ep = call.ep!;
    this.tenant.series.upstreamError(svc.name, kind === 'protocol' ? 'reset' : kind);
    svc.picker.report(ep, false, performance.now());
    const on = kind === 'reset' || kind === 'protocol' ? 'reset' : kind === 'timeout' ? undefined : 'connect-failure';
    if (on !== undefined && this.mayRetry(on)) {
      this.retryLater();
      return;
    }
    if (kind === 'reset' && call.reusedSocket && !this.staleRetried && this.replayable() && isIdempotent(this.stream.req.method)) {
      this.staleRetried = true;
      this.attempts--;
      this.call = undefined;
      this.attempt();
      return;
    }
    const [status, code] = FAILURE[kind as keyof typeof FAILURE];
    const detail = kind === 'timeout' ? ` after ${this.timeoutMs} ms` : kind === 'connect_timeout' ? ` after ${svc.service.connectTimeoutMs} ms` : `: ${err.message}`;
    this.fail(status, code, `service ${svc.name} endpoint ${ep.authority}${detail}`);
  }

  mayRetry(on: '5xx' | 'reset' | 'connect-failure'): boolean {
    const policy = this.service!.service.retries;
    if (policy === undefined || this.attempts > policy.attempts || !policy.on.includes(on) || !this.replayable()) return false;
    return on === 'connect-failure' || isIdempotent(this.stream.req.method);
  }

  retryLater(): void {
    this.call = undefined;
    this.tenant.series.retry(this.service!.name);
    const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (this.attempts - 1)) * (0.5 + Math.random());
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.clientGone) this.attempt();
    }, delay);
  }

  // ---- answers made here ---------------------------------------------------------------------

  respond(status: number, headers: HeaderList, body: string): void {
    if (this.grpc && status !== 200) {
      // A plugin's answer to a gRPC client: its status as gRPC's (401 → UNAUTHENTICATED, 403 → PERMISSION_DENIED, ...).
      this.grpcAnswer(grpcStatusFor(status), body !== '' ? body : `plugin answered ${status}`, []);
      return;
    }
    let flat: string[];
    try {
      flat = flattenResponseHeaders(headers, this.requestId, viaOf(this.stream.req.protocol));
    } catch (err) {
      this.fail(502, 'ISOMESH_ERR_PLUGIN_BAD_RESULT', `plugin response rejected: ${(err as Error).message}`);
      return;
    }
    this.sendWhole(status, flat, Buffer.from(body), undefined);
  }

  /** A trailers-only gRPC answer made by isomesh (HTTP 200, grpc-status, grpc-message). */
  grpcAnswer(grpcStatus: number, message: string, extra: string[]): void {
    const stream = this.stream;
    this.state = St.Done;
    this.grpcStatus = grpcStatus;
    stream.discardBody();
    stream.writeHead(200, grpcTrailersOnly(grpcStatus, message, [...extra, 'x-request-id', this.requestId, 'via', viaOf(stream.req.protocol)]), { length: 0 });
    stream.end();
  }

  fail(status: number, code: ErrorCode, message: string, retryAfterSec?: number): void {
    const stream = this.stream;
    if (stream.closed) return;
    if (stream.headSent && !stream.retract()) {
      // Too late to change the status: cut the stream so the client sees a truncated response.
      stream.abort();
      return;
    }
    this.errorCode = code;
    if (this.grpc) {
      const extra = ['x-isomesh-error', code];
      if (retryAfterSec !== undefined) extra.push('retry-after', String(Math.max(0, Math.ceil(retryAfterSec))));
      this.grpcAnswer(grpcStatusFor(status, code), `${code}: ${message}`, extra);
      return;
    }
    this.state = St.Done;
    stream.discardBody();
    const body = errorBody(code, message);
    const headers = ['content-type', 'application/json', 'x-isomesh-error', code, 'x-request-id', this.requestId];
    if (retryAfterSec !== undefined) headers.push('retry-after', String(Math.max(0, Math.ceil(retryAfterSec))));
    headers.push('via', viaOf(stream.req.protocol));
    stream.writeHead(status, headers, { length: body.length });
    stream.write(body);
    stream.end();
  }

  unknownService(name: string): void {
    this.tenant.series.upstreamError(name, 'unknown_service');
    this.fail(503, 'ISOMESH_ERR_PROXY_UNKNOWN_SERVICE', `tenant ${this.tenant.name} has no service ${name}`);
  }

  internalError(what: string, err: unknown): void {
    this.ctx.logger.error({ err, tenant: this.tenant.name, requestId: this.requestId }, what);
    this.fail(500, 'ISOMESH_ERR_INTERNAL', 'internal error');
  }

  clearTimers(): void {
    if (this.headTimer !== undefined) clearTimeout(this.headTimer);
    if (this.retryTimer !== undefined) clearTimeout(this.retryTimer);
    this.headTimer = this.retryTimer = undefined;
  }

  endRun(): void {
    if (this.run === undefined || this.ended) return;
    this.ended = true;
    try {
      this.ctx.host.end(this.run);
    } catch (err) {
      this.ctx.logger.error({ err, tenant: this.tenant.name, requestId: this.requestId }, 'plugin host end() threw');
    }
  }

  readonly onClose = (): void => {
    this.clientGone = this.state !== St.Done || this.stream.closed;
    this.clearTimers();
    const call = this.call;
    if (call !== undefined && !call.closed) call.abort();
    const status = this.stream.headSent ? this.stream.status : 0;
    const series = this.tenant.series;
    series.finished(status, (performance.now() - this.startedAt) / 1000, this.choice?.route ?? '', this.service?.name ?? '');
    if (this.grpc && this.grpcStatus !== undefined) series.grpc(this.service?.name ?? '', this.grpcStatus);
    series.inFlight--;
    this.tenant.inFlight--;
    this.state = St.Done;
    this.report(status);
    if (!this.hookPending) this.endRun();
  };

  /** The access log line and spans of the finished exchange (built only when something wants them). */
  report(status: number): void {
    const telemetry = this.ctx.telemetry;
    const accessLog = this.snapshot.settings.accessLog;
    if (!accessLog.enabled && !(this.trace.sampled && telemetry.exporting)) return;
    const req = this.stream.req;
    const q = req.target.indexOf('?');
    telemetry.finish({
      tenant: this.tenant.name,
      route: this.choice?.route,
      service: this.service?.name,
      endpoint: this.lastEndpoint,
      method: req.method,
      path: this.path,
      query: q === -1 ? '' : req.target.slice(q + 1),
      authority: req.authority,
      protocol: req.protocol,
      status,
      grpcStatus: this.grpcStatus,
      error: this.errorCode,
      bytesIn: this.bytesIn,
      bytesOut: this.stream.bytesOut,
      startMs: epochMs(this.startedAt),
      durationMs: performance.now() - this.startedAt,
      upstreamMs: this.upstreamMs ?? (this.upstreamStart > 0 ? performance.now() - this.upstreamStart : undefined),
      pluginMs: this.pluginMs,
      retries: Math.max(0, this.attempts - 1),
      requestId: this.requestId,
      remoteAddress: req.remoteAddress,
      userAgent: headerOf(req.raw, 'user-agent'),
      trace: this.trace,
      pluginCalls: this.run !== undefined ? this.ctx.host.calls?.(this.run) : undefined,
    }, accessLog);
  }
}

function viaOf(protocol: string): string {
  return protocol === 'h2' ? '2 isomesh' : protocol === 'http/1.0' ? '1.0 isomesh' : '1.1 isomesh';
}

/** A cookie's value from a Cookie header ("a=1; b=2"). */
function cookieOf(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq !== -1 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

function contentLengthOf(raw: readonly string[]): number {
  const v = headerOf(raw, 'content-length');
  return v === undefined ? -1 : Number(v);
}

