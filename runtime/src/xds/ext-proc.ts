// envoy.service.ext_proc.v3.ExternalProcessor/Process: Envoy's ext_proc filter opens one stream per
// HTTP request and sends one message per phase it processes; every message gets exactly one answer,
// in order. Each stream runs the tenant's chain through the same PluginHostApi the built-in proxy
// calls — begin (admission), onRequest, onResponse, end exactly once — so both data planes give one
// result (see docs/envoy.md for the mapping).
//
// Per stream, one phase at a time (Envoy sends the next message only after our answer):
//   Start ─request_headers─▶ (admission; the chain runs now, or after the body when a plugin declared
//          one: the headers answer asks Envoy for the buffered body with mode_override)
//   RequestBody ─request_body─▶ chain with the body; results in the BodyResponse
//   Upstream ─response_headers─▶ response chain now, or after the buffered response body
//   ResponseBody ─response_body─▶ response chain with the body
//   Done: an ImmediateResponse was sent (Envoy closes the stream) or the response was processed.
// A message the phase does not expect is answered with an ImmediateResponse 500 — never skipped:
// Envoy treats a wrong answer type as "spurious" and lets the request through unprocessed.
//
// Streams are authorized by the unix socket or the admin token only (API.md); the tenant comes from
// the stream's initial metadata (`x-isomesh-tenant`, set by the translator, like the route and service).

import * as grpc from '@grpc/grpc-js';
import type pino from 'pino';
import type { ChainRun, HeaderList, HookRequest, HookResponse, PluginHostApi, RequestOutcome, ResponseOutcome } from '../host/contract.ts';
import { headerMutation } from '../host/index.ts';
import type { ErrorCode } from '../errors.ts';
import type { EnvoyProtos } from './protos.ts';
import { grpcError, type GrpcServer, type Transport } from './server.ts';
import { ROUTE_METADATA, SERVICE_METADATA, TENANT_METADATA, UPSTREAM_HEADER } from './translate.ts';
import {
  BodyMode,
  HeaderMode,
  ResponseStatus,
  addressIp,
  attribute,
  codec,
  forEnvoy,
  grpcStatusFor,
  immediateResponse,
  invalidHeader,
  invalidMutation,
  isGrpc,
  readHeaders,
  wireMutation,
  type WireRequest,
} from './ext-proc-wire.ts';

export const EXT_PROC_SERVICE = 'envoy.service.ext_proc.v3.ExternalProcessor';
/** Streams open at once on the node (each is one HTTP request in Envoy); more are refused with 503. */
export const DEFAULT_MAX_STREAMS = 16_384;
/** Messages one stream may send: six phases at most, with room for trailers Envoy may add. */
const MAX_MESSAGES = 8;
const REQUEST_ID_RE = /^[\x21-\x7e]{1,200}$/;

export interface ExtProcOptions {
  host: PluginHostApi;
  protos: EnvoyProtos;
  logger: pino.Logger;
  maxStreams?: number;
}

const Phase = { Start: 0, RequestBody: 1, Upstream: 2, ResponseBody: 3, Done: 4 } as const;
type Phase = (typeof Phase)[keyof typeof Phase];

type Call = grpc.ServerDuplexStream<WireRequest, unknown>;

export class ExtProcServer {
  readonly #opts: ExtProcOptions;
  readonly #streams = new Set<ExtProcStream>();
  readonly #max: number;

  constructor(opts: ExtProcOptions) {
    this.#opts = opts;
    this.#max = opts.maxStreams ?? DEFAULT_MAX_STREAMS;
  }

  get activeStreams(): number {
    return this.#streams.size;
  }

  register(server: GrpcServer): void {
    const protos = this.#opts.protos;
    const base = protos.service(EXT_PROC_SERVICE).Process!;
    const c = codec(protos.type('envoy.service.ext_proc.v3.ProcessingRequest'), protos.type('envoy.service.ext_proc.v3.ProcessingResponse'));
    const definition = { Process: { ...base, requestDeserialize: c.decode, responseSerialize: c.encode } } as grpc.ServiceDefinition;
    server.addService(definition, (transport) => ({ Process: (call: Call) => this.#open(server, transport, call) }));
  }

  #open(server: GrpcServer, transport: Transport, call: Call): void {
    const { principal, invalid } = server.authorize(transport, call.metadata);
    if (principal?.kind !== 'admin') {
      const err = principal === undefined
        ? grpcError(grpc.status.UNAUTHENTICATED, invalid ? 'invalid bearer token' : 'ext_proc needs the unix socket or the admin token')
        : grpcError(grpc.status.PERMISSION_DENIED, 'ext_proc accepts only the unix socket or the admin token');
      call.emit('error', err);
      return;
    }
    const tenant = metadataString(call.metadata, TENANT_METADATA);
    if (tenant === undefined) {
      call.emit('error', grpcError(grpc.status.INVALID_ARGUMENT, `initial metadata ${TENANT_METADATA} is required`));
      return;
    }
    const stream = new ExtProcStream(this.#opts, call, tenant, () => this.#streams.delete(stream), this.#streams.size >= this.#max);
    this.#streams.add(stream);
  }

  /** Ends every open stream with UNAVAILABLE (Envoy then fails the request closed, never open). */
  closeAll(): void {
    for (const s of [...this.#streams]) s.abort('isomesh is shutting down');
  }
}

function metadataString(md: grpc.Metadata, key: string): string | undefined {
  const v = md.get(key)[0];
  return typeof v === 'string' && v !== '' ? v : undefined;
}

function errorBody(code: ErrorCode, message: string): Buffer {
  return Buffer.from(JSON.stringify({ error: { code, message } }));
}

class ExtProcStream {
  readonly #opts: ExtProcOptions;
  readonly #call: Call;
  readonly #tenant: string;
  readonly #route: string | undefined;
  readonly #service: string | undefined;
  readonly #onClose: () => void;
  #phase: Phase = Phase.Start;
  #run: ChainRun | undefined;
  #requestId = '';
  #grpc = false;
  #messages = 0;
  #busy = false;
  #queue: WireRequest[] = [];
  #closed = false;
  /** The request as the chain will see it, kept while its body is awaited. */
  #req: HookRequest | undefined;
  #reqHeaders: HeaderList = [];
  #reqLength = -1;
  #bodyLimit = 0;
  #res: HookResponse | undefined;
  #resLength = -1;

  constructor(opts: ExtProcOptions, call: Call, tenant: string, onClose: () => void, overloaded: boolean) {
    this.#opts = opts;
    this.#call = call;
    this.#tenant = tenant;
    this.#route = metadataString(call.metadata, ROUTE_METADATA);
    this.#service = metadataString(call.metadata, SERVICE_METADATA);
    this.#onClose = onClose;
    call.on('data', (msg: WireRequest) => this.#receive(msg, overloaded));
    call.on('end', () => {
      if (!call.writableEnded && !call.destroyed) call.end();
      this.#close();
    });
    call.on('error', () => this.#close());
    call.on('cancelled', () => this.#close());
  }

  abort(message: string): void {
    if (!this.#closed) this.#call.emit('error', grpcError(grpc.status.UNAVAILABLE, message));
    this.#close();
  }

  #receive(msg: WireRequest, overloaded: boolean): void {
    if (this.#closed) return;
    if (++this.#messages > MAX_MESSAGES) {
      this.#call.emit('error', grpcError(grpc.status.RESOURCE_EXHAUSTED, `more than ${MAX_MESSAGES} messages on one ext_proc stream`));
      this.#close();
      return;
    }
    if (overloaded && this.#phase === Phase.Start) {
      this.#send(this.#failure(503, 'ISOMESH_ERR_EXTPROC_OVERLOADED', 'too many ext_proc streams open on this node'));
      return;
    }
    if (this.#busy) {
      this.#queue.push(msg);
      return;
    }
    this.#process(msg);
  }

  #process(msg: WireRequest): void {
    this.#busy = true;
    let answer: unknown;
    try {
      answer = this.#handle(msg);
    } catch (err) {
      answer = this.#internal(err);
    }
    if (answer instanceof Promise) answer.then((a) => this.#answered(a), (err) => this.#answered(this.#internal(err)));
    else this.#answered(answer);
  }

  #answered(answer: unknown): void {
    this.#busy = false;
    if (this.#closed) return this.#release();
    this.#send(answer);
    const next = this.#queue.shift();
    if (next !== undefined) this.#process(next);
  }

  #send(answer: unknown): void {
    if (this.#closed || this.#call.destroyed || this.#call.writableEnded) return;
    this.#call.write(answer);
  }

  #handle(msg: WireRequest): unknown {
    if (msg.observability_mode === true) return this.#protocol('observability mode is not supported');
    switch (msg.request) {
      case 'request_headers':
        return this.#phase === Phase.Start ? this.#requestHeaders(msg) : this.#protocol('request_headers out of order');
      case 'request_body':
        if (this.#phase === Phase.RequestBody) return this.#requestBody(msg);
        // Envoy may buffer a body the chain turned out not to need (mode_override not permitted).
        if (this.#phase === Phase.Upstream || this.#phase === Phase.Done) return { request_body: {} };
        return this.#protocol('request_body out of order');
      case 'request_trailers':
        return this.#phase === Phase.Upstream || this.#phase === Phase.Done ? { request_trailers: {} } : this.#protocol('request trailers before the request was processed');
      case 'response_headers':
        return this.#phase === Phase.Upstream ? this.#responseHeaders(msg) : this.#protocol('response_headers out of order');
      case 'response_body':
        if (this.#phase === Phase.ResponseBody) return this.#responseBody(msg);
        if (this.#phase === Phase.Done) return { response_body: {} };
        return this.#protocol('response_body out of order');
      case 'response_trailers':
        return this.#phase === Phase.Done ? { response_trailers: {} } : this.#protocol('response trailers before the response was processed');
      default:
        return this.#protocol('empty ProcessingRequest');
    }
  }

  // ---- request -------------------------------------------------------------------------------

  #requestHeaders(msg: WireRequest): unknown {
    const h = msg.request_headers!;
    const { pseudo, list } = readHeaders(h);
    this.#grpc = isGrpc(list);
    const rid = list.find(([n]) => n === 'x-request-id')?.[1];
    this.#requestId = rid !== undefined && REQUEST_ID_RE.test(rid) ? rid : crypto.randomUUID();
    const admission = this.#opts.host.begin(this.#tenant, this.#requestId);
    if (!admission.ok) return this.#failure(admission.status, admission.code, admission.message, admission.retryAfterSec);
    this.#run = admission.run;

    const target = pseudo.get(':path') ?? '/';
    const q = target.indexOf('?');
    const authority = pseudo.get(':authority') ?? '';
    // The built-in proxy's view: `host` first, then the request's own headers.
    const headers: HeaderList = authority === '' ? list : [['host', authority], ...list];
    this.#reqHeaders = headers;
    const cl = list.find(([n]) => n === 'content-length')?.[1];
    this.#reqLength = cl !== undefined && /^\d{1,15}$/.test(cl) ? Number(cl) : -1;
    const req: HookRequest = {
      method: pseudo.get(':method') ?? 'GET',
      path: q === -1 ? target : target.slice(0, q),
      query: q === -1 ? '' : target.slice(q + 1),
      host: authority,
      headers,
      remoteAddress: remoteAddress(msg, list),
    };
    if (this.#route !== undefined) req.route = this.#route;
    const service = this.#service ?? clusterService(attribute(msg, 'xds.cluster_name'), this.#tenant);
    if (service !== undefined) req.service = service;
    this.#req = req;

    const limit = h.end_of_stream === true ? 0 : this.#opts.host.bodyLimit(this.#run, 'request', this.#route);
    if (limit > 0) {
      if (this.#reqLength > limit) return this.#tooLarge('request', limit);
      this.#bodyLimit = limit;
      this.#phase = Phase.RequestBody;
      // The chain runs once the body is here: the headers continue unchanged for now, held by Envoy.
      return { request_headers: {}, mode_override: this.#mode(BodyMode.BUFFERED) };
    }
    return this.#requestChain(req, 'request_headers');
  }

  #requestBody(msg: WireRequest): unknown {
    const body = msg.request_body?.body ?? new Uint8Array(0);
    if (body.length > this.#bodyLimit) return this.#tooLarge('request', this.#bodyLimit);
    const req = this.#req!;
    req.body = body;
    return this.#requestChain(req, 'request_body');
  }

  #requestChain(req: HookRequest, kind: 'request_headers' | 'request_body'): unknown {
    const done = this.#opts.host.onRequest(this.#run!, req);
    return done.then((outcome) => this.#requestOutcome(outcome, kind));
  }

  #requestOutcome(outcome: RequestOutcome, kind: 'request_headers' | 'request_body'): unknown {
    this.#req = undefined;
    if (outcome.action === 'respond') return this.#respond(outcome.status, outcome.headers, outcome.body);
    if (outcome.action === 'fail') return this.#failure(outcome.status, outcome.code, outcome.message);
    const mutation = forEnvoy(headerMutation(this.#reqHeaders, outcome.headers));
    const bad = invalidMutation(mutation);
    if (bad !== undefined) return this.#failure(502, 'ISOMESH_ERR_PLUGIN_BAD_RESULT', `request headers rejected: ${bad}`);
    let clearRouteCache = false;
    if (outcome.service !== undefined && outcome.service !== this.#service) {
      // The route's upstream is chosen again: the translator's `x-isomesh-upstream: <service>` route.
      mutation.set.push([UPSTREAM_HEADER, outcome.service]);
      clearRouteCache = true;
    }
    const common: Record<string, unknown> = {};
    if (outcome.body !== undefined) {
      common.body_mutation = { body: outcome.body };
      // Envoy refuses a replaced body whose content-length differs (buffered mode keeps the header).
      if (this.#reqLength >= 0 || kind === 'request_headers') mutation.set.push(['content-length', String(outcome.body.length)]);
      if (kind === 'request_headers') common.status = ResponseStatus.CONTINUE_AND_REPLACE;
    }
    const wire = wireMutation(mutation);
    if (wire !== undefined) common.header_mutation = wire;
    if (clearRouteCache) common.clear_route_cache = true;
    this.#phase = Phase.Upstream;
    const answer: Record<string, unknown> = { [kind]: { response: common } };
    // Say exactly which response phases this run needs (honoured when the filter allows mode_override).
    if (kind === 'request_headers') answer.mode_override = this.#mode(BodyMode.NONE);
    return answer;
  }

  // ---- response ------------------------------------------------------------------------------

  #responseHeaders(msg: WireRequest): unknown {
    const h = msg.response_headers!;
    const run = this.#run!;
    const { pseudo, list } = readHeaders(h);
    const status = Number(pseudo.get(':status') ?? '200');
    const limit = h.end_of_stream === true ? 0 : this.#opts.host.bodyLimit(run, 'response', this.#route);
    if (limit === 0 && !this.#opts.host.hasResponseHooks(run)) {
      this.#phase = Phase.Done;
      return { response_headers: {} };
    }
    const cl = list.find(([n]) => n === 'content-length')?.[1];
    this.#resLength = cl !== undefined && /^\d{1,15}$/.test(cl) ? Number(cl) : -1;
    const res: HookResponse = { status, headers: list };
    if (limit > 0) {
      if (this.#resLength > limit) return this.#tooLarge('response', limit);
      this.#bodyLimit = limit;
      this.#res = res;
      this.#phase = Phase.ResponseBody;
      return { response_headers: {}, mode_override: { ...this.#mode(BodyMode.NONE), response_body_mode: BodyMode.BUFFERED } };
    }
    return this.#responseChain(res, 'response_headers');
  }

  #responseBody(msg: WireRequest): unknown {
    const body = msg.response_body?.body ?? new Uint8Array(0);
    if (body.length > this.#bodyLimit) return this.#tooLarge('response', this.#bodyLimit);
    const res = this.#res!;
    res.body = body;
    return this.#responseChain(res, 'response_body');
  }

  #responseChain(res: HookResponse, kind: 'response_headers' | 'response_body'): unknown {
    return this.#opts.host.onResponse(this.#run!, res).then((outcome) => this.#responseOutcome(res, outcome, kind));
  }

  #responseOutcome(res: HookResponse, outcome: ResponseOutcome, kind: 'response_headers' | 'response_body'): unknown {
    this.#res = undefined;
    this.#phase = Phase.Done;
    if (outcome.action === 'fail') return this.#failure(outcome.status, outcome.code, outcome.message);
    const mutation = forEnvoy(headerMutation(res.headers, outcome.headers));
    const bad = invalidMutation(mutation);
    if (bad !== undefined) return this.#failure(502, 'ISOMESH_ERR_PLUGIN_BAD_RESULT', `response headers rejected: ${bad}`);
    if (outcome.status !== res.status) mutation.set.push([':status', String(outcome.status)]);
    const common: Record<string, unknown> = {};
    if (outcome.body !== undefined) {
      common.body_mutation = { body: outcome.body };
      if (this.#resLength >= 0 || kind === 'response_headers') mutation.set.push(['content-length', String(outcome.body.length)]);
      if (kind === 'response_headers') common.status = ResponseStatus.CONTINUE_AND_REPLACE;
    }
    const wire = wireMutation(mutation);
    if (wire !== undefined) common.header_mutation = wire;
    return { [kind]: { response: common } };
  }

  // ---- answers -------------------------------------------------------------------------------

  /** The processing modes this run needs from here on; `requestBody` for the request body. */
  #mode(requestBody: number): Record<string, number> {
    const run = this.#run!;
    const wantsResponse = this.#opts.host.hasResponseHooks(run) || this.#opts.host.bodyLimit(run, 'response', this.#route) > 0;
    return {
      request_header_mode: HeaderMode.SEND,
      request_body_mode: requestBody,
      request_trailer_mode: HeaderMode.SKIP,
      response_header_mode: wantsResponse ? HeaderMode.SEND : HeaderMode.SKIP,
      response_body_mode: BodyMode.NONE,
      response_trailer_mode: HeaderMode.SKIP,
    };
  }

  #respond(status: number, headers: HeaderList, body: string): unknown {
    this.#phase = Phase.Done;
    const out: HeaderList = [];
    for (const [n, v] of headers) {
      if (n === 'content-length' || n === 'transfer-encoding' || n === 'connection') continue;
      const bad = invalidHeader(n, v);
      if (bad !== undefined) return this.#failure(502, 'ISOMESH_ERR_PLUGIN_BAD_RESULT', `plugin response rejected: ${bad}`);
      out.push([n, v]);
    }
    if (!out.some(([n]) => n === 'x-request-id')) out.push(['x-request-id', this.#requestId]);
    const r = { status, headers: out, body: Buffer.from(body), details: `isomesh_plugin_${status}` };
    if (!this.#grpc || status === 200) return immediateResponse(r);
    // As the built-in proxy: the plugin's status as gRPC's, its body (or a default) as grpc-message.
    return immediateResponse({ ...r, body: Buffer.from(body !== '' ? body : `plugin answered ${status}`), grpcStatus: grpcStatusFor(status) });
  }

  /** An isomesh-made error: `x-isomesh-error`, the JSON error body (or grpc-status/-message for gRPC). */
  #failure(status: number, code: ErrorCode, message: string, retryAfterSec?: number): unknown {
    this.#phase = Phase.Done;
    const headers: HeaderList = [['x-isomesh-error', code]];
    if (retryAfterSec !== undefined) headers.push(['retry-after', String(Math.max(0, Math.ceil(retryAfterSec)))]);
    if (this.#requestId !== '') headers.push(['x-request-id', this.#requestId]);
    if (this.#grpc) {
      return immediateResponse({ status, headers, body: Buffer.from(`${code}: ${message}`), grpcStatus: grpcStatusFor(status, code), details: code });
    }
    headers.unshift(['content-type', 'application/json']);
    return immediateResponse({ status, headers, body: errorBody(code, message), details: code });
  }

  #tooLarge(phase: 'request' | 'response', limit: number): unknown {
    return phase === 'request'
      ? this.#failure(413, 'ISOMESH_ERR_PROXY_BODY_TOO_LARGE', `request body is larger than ${limit} bytes, the limit a plugin of the chain declared`)
      : this.#failure(502, 'ISOMESH_ERR_UPSTREAM_BODY_TOO_LARGE', `response body is larger than ${limit} bytes, the limit a plugin of the chain declared`);
  }

  #protocol(message: string): unknown {
    this.#opts.logger.warn({ tenant: this.#tenant, requestId: this.#requestId || undefined }, `ext_proc: ${message}`);
    return this.#failure(500, 'ISOMESH_ERR_EXTPROC_PROTOCOL', message);
  }

  #internal(err: unknown): unknown {
    this.#opts.logger.error({ err, tenant: this.#tenant }, 'ext_proc: plugin host call failed');
    return this.#failure(500, 'ISOMESH_ERR_INTERNAL', 'plugin host call failed');
  }

  // ---- end -----------------------------------------------------------------------------------

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#queue = [];
    this.#onClose();
    if (!this.#busy) this.#release();
  }

  /** host.end(run) once, when the stream is over and no hook call is pending. */
  #release(): void {
    const run = this.#run;
    if (run === undefined) return;
    this.#run = undefined;
    this.#opts.host.end(run);
  }
}

function remoteAddress(msg: WireRequest, list: HeaderList): string {
  const source = attribute(msg, 'source.address');
  if (source !== undefined) return addressIp(source);
  // Without the attribute: Envoy (use_remote_address) appended the peer to x-forwarded-for.
  for (let i = list.length - 1; i >= 0; i--) {
    if (list[i]![0] === 'x-forwarded-for') return list[i]![1].split(',').at(-1)!.trim();
  }
  return '';
}

/** "<tenant>/<service>" (xds.cluster_name) → service, for routes whose service the metadata cannot name (weighted). */
function clusterService(cluster: string | undefined, tenant: string): string | undefined {
  if (cluster === undefined || !cluster.startsWith(`${tenant}/`)) return undefined;
  return cluster.slice(tenant.length + 1);
}
