// One request through the built-in proxy:
//   begin (admission) → route match (or VIP default) → onRequest chain → upstream attempt(s)
//   → onResponse chain (only when the tenant has response hooks) → stream the body → end.
// host.end(run) is called exactly once per admitted request, when the downstream response closes
// (finished or aborted) and no hook call is still pending — so a plugin's admission slot is held
// for as long as its code may still be running.
//
// Retry rule: a request is retried only if it has no body (no Content-Length > 0, no
// Transfer-Encoding), since a streamed body cannot be replayed. A connect failure is retried for
// any such request (the upstream never saw it); a 5xx or a reset is retried only for idempotent
// methods (GET HEAD OPTIONS TRACE PUT DELETE), because a POST that reached the upstream may have
// taken effect. `retries.attempts` is the number of retries after the first attempt. Independently
// of the policy, an idempotent bodyless request whose *reused* keep-alive socket turns out to be
// dead is retried once on a fresh connection (the upstream closed it while idle).
//
// Timeouts: connectTimeoutMs bounds the TCP connect; timeoutMs (route.timeoutMs ?? service.timeoutMs,
// 0 = none) bounds the wait for the upstream response head, counted from when the request (and
// its body) has been sent — a slow upload is not the upstream's fault. A streamed response body is
// not bounded (long polls, downloads).

import type http from 'node:http';
import type { Socket } from 'node:net';
import type pino from 'pino';
import type { ChainRun, HeaderList, PluginHostApi, RequestOutcome, ResponseOutcome } from '../host/contract.ts';
import type { ErrorCode } from '../errors.ts';
import type { UpstreamErrorKind } from './metrics.ts';
import { isIdempotent, type UpstreamService } from './upstream.ts';
import type { TenantRuntime, TenantSnapshot } from './tenant.ts';
import { stripPort } from './route-table.ts';
import { CONNECT_TIMEOUT, requestHead, UpstreamCall, type CallSink } from './origin.ts';
import {
  flattenResponseHeaders,
  requestHeaderList,
  responseHeaderList,
  responseHeadersFlat,
  saneRequestId,
  upstreamRequestHeaders,
  writeProxyError,
} from './headers.ts';

export interface ProxyContext {
  readonly host: PluginHostApi;
  readonly logger: pino.Logger;
  originalDestination(socket: Socket): string | undefined;
}

// Sentinel passed to UpstreamCall.abort() so onError can tell our head timeout apart.
const HEAD_TIMEOUT = new Error('upstream response timeout');
const RETRY_BASE_MS = 25;
const RETRY_MAX_MS = 250;
/** Methods node's client sends without a Content-Length when there is no body; others get "0". */
const NO_LENGTH_METHODS = new Set(['GET', 'HEAD', 'DELETE', 'OPTIONS', 'TRACE', 'CONNECT']);

function classify(err: Error): UpstreamErrorKind {
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
    default:
      return 'reset';
  }
}

const FAILURE: Record<'refused' | 'connect_failure' | 'connect_timeout' | 'reset' | 'timeout', [number, ErrorCode]> = {
  refused: [502, 'ISOMESH_ERR_PROXY_UPSTREAM_REFUSED'],
  connect_failure: [502, 'ISOMESH_ERR_PROXY_UPSTREAM_REFUSED'],
  connect_timeout: [504, 'ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT'],
  reset: [502, 'ISOMESH_ERR_PROXY_UPSTREAM_RESET'],
  timeout: [504, 'ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT'],
};

export function handleExchange(ctx: ProxyContext, tenant: TenantRuntime, req: http.IncomingMessage, res: http.ServerResponse): void {
  new Exchange(ctx, tenant, req, res).start();
}

class Exchange implements CallSink {
  readonly ctx: ProxyContext;
  readonly tenant: TenantRuntime;
  readonly snapshot: TenantSnapshot;
  readonly req: http.IncomingMessage;
  readonly res: http.ServerResponse;
  readonly requestId: string;
  readonly startedAt = performance.now();
  readonly hasBody: boolean;
  run: ChainRun | undefined;
  ended = false;
  hookPending = false;
  clientGone = false;
  service: UpstreamService | undefined;
  timeoutMs = 0;
  upstreamPath = '/';
  authority = '';
  /** The request head sent upstream, built once (retries reuse it). */
  upstreamHead: string | undefined;
  /** The HeaderList given to onRequest, then the one the chain returned. */
  requestHeaders: HeaderList | undefined;
  /** The chain returned the proxy's own list (no plugin changed it): its values need no re-validation. */
  headersUntouched = false;
  attempts = 0;
  staleRetried = false;
  /** The current upstream attempt; undefined between a failed attempt and its retry. */
  call: UpstreamCall | undefined;
  /** The current call's response head was accepted (body streaming, or waiting for onResponse). */
  responding = false;
  headTimer: NodeJS.Timeout | undefined;
  retryTimer: NodeJS.Timeout | undefined;

  constructor(ctx: ProxyContext, tenant: TenantRuntime, req: http.IncomingMessage, res: http.ServerResponse) {
    this.ctx = ctx;
    this.tenant = tenant;
    this.snapshot = tenant.snapshot;
    this.req = req;
    this.res = res;
    this.requestId = saneRequestId(req.headers['x-request-id']) ?? crypto.randomUUID();
    const te = req.headers['transfer-encoding'];
    const cl = req.headers['content-length'];
    this.hasBody = te !== undefined || (cl !== undefined && cl !== '0');
  }

  start(): void {
    const { ctx, tenant, req, res } = this;
    tenant.requests++;
    tenant.inFlight++;
    tenant.series.inFlight.inc();
    res.once('close', this.onClose);

    try {
      const admission = ctx.host.begin(tenant.name, this.requestId);
      if (!admission.ok) {
        this.fail(admission.status, admission.code, admission.message, admission.retryAfterSec);
        return;
      }
      this.run = admission.run;
    } catch (err) {
      this.internalError('plugin host begin() threw', err);
      return;
    }

    // Origin-form ("/p?q") normally; absolute-form ("http://h/p?q") from explicit HTTP proxy clients.
    let target = req.url ?? '/';
    let authority = req.headers.host ?? '';
    if (target.charCodeAt(0) !== 47 /* / */ && /^https?:\/\//i.test(target)) {
      const slash = target.indexOf('/', target.indexOf('//') + 2);
      authority = target.slice(target.indexOf('//') + 2, slash === -1 ? undefined : slash);
      target = slash === -1 ? '/' : target.slice(slash);
    }
    this.upstreamPath = target;
    this.authority = authority;
    const q = target.indexOf('?');
    const path = q === -1 ? target : target.slice(0, q);
    const method = req.method ?? 'GET';
    const originalDestination = ctx.originalDestination(req.socket);

    const table = this.snapshot.table;
    const choice = table.size > 0 ? table.match({ host: stripPort(authority.toLowerCase()), path, method, headers: req.headers }) : undefined;
    const serviceName = choice?.service ?? table.serviceByVip(originalDestination) ?? table.serviceByVip(authority);
    if (serviceName === undefined) {
      this.fail(404, 'ISOMESH_ERR_PROXY_NO_ROUTE', `no route matches ${method} ${authority}${path}`);
      return;
    }
    this.service = this.snapshot.services.get(serviceName);
    if (this.service === undefined) {
      this.unknownService(serviceName);
      return;
    }
    this.timeoutMs = choice?.timeoutMs ?? this.service.service.timeoutMs;

    this.requestHeaders = requestHeaderList(req.rawHeaders, req.socket.remoteAddress ?? '', this.requestId);
    this.hookPending = true;
    ctx.host
      .onRequest(this.run, {
        method,
        path,
        query: q === -1 ? '' : target.slice(q + 1),
        host: authority,
        headers: this.requestHeaders,
        remoteAddress: req.socket.remoteAddress ?? '',
        originalDestination,
        route: choice?.route,
        service: serviceName,
      })
      .then(this.onRequestOutcome, this.onHookError);
  }

  readonly onRequestOutcome = (outcome: RequestOutcome): void => {
    this.hookPending = false;
    if (this.clientGone) {
      this.endRun();
      return;
    }
    switch (outcome.action) {
      case 'respond':
        this.respond(outcome.status, outcome.headers, outcome.body);
        return;
      case 'fail':
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
    this.headersUntouched = outcome.headers === this.requestHeaders;
    this.requestHeaders = outcome.headers;
    this.attempt();
  };

  readonly onHookError = (err: unknown): void => {
    this.hookPending = false;
    this.call?.discard();
    if (this.clientGone) {
      this.endRun();
      return;
    }
    this.internalError('plugin host hook rejected', err);
  };

  /** The upstream request head; throws when a (plugin-set) header cannot be sent. */
  buildHead(authority: string): string {
    const req = this.req;
    const method = req.method ?? 'GET';
    const chunked = req.headers['transfer-encoding'] !== undefined;
    const length = req.headers['content-length'] ?? (chunked || NO_LENGTH_METHODS.has(method) ? undefined : '0');
    const flat = upstreamRequestHeaders(this.requestHeaders!, authority, chunked, length);
    // Headers straight from the downstream parser are valid HTTP already; plugin output is checked.
    return requestHead(method, this.upstreamPath, flat, !this.headersUntouched);
  }

  attempt(): void {
    const svc = this.service!;
    this.attempts++;
    if (svc.active >= svc.maxActive) {
      this.tenant.series.upstreamError(svc.name, 'overflow');
      this.fail(503, 'ISOMESH_ERR_PROXY_CIRCUIT_OPEN', `service ${svc.name} has ${svc.active} requests pending (limit ${svc.maxActive})`);
      return;
    }
    const ep = svc.picker.pick(this.req.socket.remoteAddress ?? this.requestId, performance.now());
    if (ep === undefined) {
      this.tenant.series.upstreamError(svc.name, 'no_endpoint');
      this.fail(503, 'ISOMESH_ERR_PROXY_NO_ENDPOINT', `service ${svc.name} has no endpoint`);
      return;
    }
    let head = this.upstreamHead;
    if (head === undefined) {
      try {
        head = this.upstreamHead = this.buildHead(ep.authority);
      } catch (err) {
        // Invalid header names/values (most likely set by a plugin) cannot go on the wire.
        this.fail(502, 'ISOMESH_ERR_PLUGIN_BAD_RESULT', `request headers rejected: ${(err as Error).message}`);
        return;
      }
    }
    const req = this.req;
    const call = new UpstreamCall(this, head, req.method === 'HEAD', this.hasBody ? req : undefined, req.headers['transfer-encoding'] !== undefined, svc.service.connectTimeoutMs);
    call.ep = ep;
    call.svc = svc;
    this.call = call;
    this.responding = false;
    svc.active++;
    ep.inFlight++;
    this.tenant.pool.endpoint(svc, ep).dispatch(call);
    if (!this.hasBody) this.armHeadTimer(call);
  }

  onSent(call: UpstreamCall): void {
    this.armHeadTimer(call);
  }

  armHeadTimer(call: UpstreamCall): void {
    if (!(this.timeoutMs > 0) || call !== this.call || this.responding) return;
    clearTimeout(this.headTimer);
    this.headTimer = setTimeout(() => {
      if (call === this.call && !this.responding) call.abort(HEAD_TIMEOUT);
    }, this.timeoutMs);
  }

  onHead(call: UpstreamCall, status: number, rawHeaders: string[]): void {
    if (call !== this.call || this.clientGone) {
      call.discard();
      return;
    }
    this.clearTimers();
    const svc = this.service!;
    svc.picker.report(call.ep!, status < 500, performance.now());
    if (status >= 500 && this.mayRetry('5xx')) {
      call.discard();
      this.retryLater();
      return;
    }
    this.responding = true;
    const run = this.run!;
    if (this.ctx.host.hasResponseHooks(run)) {
      this.hookPending = true;
      this.ctx.host
        .onResponse(run, { status, headers: responseHeaderList(rawHeaders, this.requestId) })
        .then(this.onResponseOutcome, this.onHookError);
    } else {
      this.deliver(status, responseHeadersFlat(rawHeaders, this.requestId));
    }
  }

  readonly onResponseOutcome = (outcome: ResponseOutcome): void => {
    this.hookPending = false;
    if (this.clientGone) {
      this.endRun();
      return;
    }
    if (outcome.action === 'continue') {
      this.deliver(outcome.status, flattenResponseHeaders(outcome.headers, this.requestId, false));
    } else {
      this.call?.discard(); // drain so the upstream socket returns to the pool
      this.fail(outcome.status, outcome.code, outcome.message);
    }
  };

  deliver(status: number, headers: string[]): void {
    const call = this.call!;
    if (call.broken) {
      this.fail(502, 'ISOMESH_ERR_PROXY_UPSTREAM_RESET', 'upstream closed the connection while sending the response');
      return;
    }
    try {
      this.res.writeHead(status, headers);
    } catch (err) {
      call.discard();
      this.fail(502, 'ISOMESH_ERR_PLUGIN_BAD_RESULT', `response head rejected: ${(err as Error).message}`);
      return;
    }
    call.stream(this.res);
  }

  onEnd(call: UpstreamCall): void {
    if (call === this.call && !this.clientGone) this.res.end();
  }

  onDone(call: UpstreamCall): void {
    call.svc!.active--;
    call.ep!.inFlight--;
  }

  onError(call: UpstreamCall, err: Error): void {
    if (call !== this.call || this.clientGone) return;
    if (this.responding) {
      // Cut short after the head: the client must see a truncated response, not a clean end.
      this.res.destroy();
      return;
    }
    this.clearTimers();
    const svc = this.service!;
    const ep = call.ep!;
    const kind = classify(err);
    this.tenant.series.upstreamError(svc.name, kind);
    svc.picker.report(ep, false, performance.now());
    const on = kind === 'reset' ? 'reset' : kind === 'timeout' ? undefined : 'connect-failure';
    if (on !== undefined && this.mayRetry(on)) {
      this.retryLater();
      return;
    }
    if (kind === 'reset' && call.reusedSocket && !this.staleRetried && !this.hasBody && isIdempotent(this.req.method ?? 'GET')) {
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
    if (policy === undefined || this.attempts > policy.attempts || !policy.on.includes(on) || this.hasBody) return false;
    return on === 'connect-failure' || isIdempotent(this.req.method ?? 'GET');
  }

  retryLater(): void {
    this.call = undefined;
    const delay = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** (this.attempts - 1)) * (0.5 + Math.random());
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.clientGone) this.attempt();
    }, delay);
  }

  respond(status: number, headers: HeaderList, body: string): void {
    try {
      const flat = flattenResponseHeaders(headers, this.requestId, true);
      flat.push('content-length', String(Buffer.byteLength(body)));
      this.res.writeHead(status, flat);
    } catch (err) {
      this.fail(502, 'ISOMESH_ERR_PLUGIN_BAD_RESULT', `plugin response rejected: ${(err as Error).message}`);
      return;
    }
    this.res.end(body);
  }

  fail(status: number, code: ErrorCode, message: string, retryAfterSec?: number): void {
    writeProxyError(this.res, status, code, message, this.requestId, retryAfterSec);
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
    this.clientGone = true;
    this.clearTimers();
    const res = this.res;
    if (!res.writableFinished) this.call?.abort();
    const status = res.headersSent ? res.statusCode : 0;
    const series = this.tenant.series;
    series.byClass[status >= 100 && status < 600 ? (status / 100) | 0 : 0].inc();
    series.duration.observe((performance.now() - this.startedAt) / 1000);
    series.inFlight.dec();
    this.tenant.inFlight--;
    if (!this.hookPending) this.endRun();
  };
}
