// A test double of Envoy's ext_proc filter (source/extensions/filters/http/ext_proc), for tests and the
// benchmark: it drives one ExternalProcessor stream per request exactly as the filter does — headers,
// wait for the answer, the buffered body only when the (possibly overridden) mode says so, the upstream,
// response headers/body — and applies answers with Envoy's rules: removes before sets, `append` BoolValue,
// raw_value, :authority/:status, CONTINUE_AND_REPLACE, content-length must match a replaced buffered body,
// clear_route_cache honoured only with a header mutation, ImmediateResponse ends processing, a spurious
// answer makes the filter ignore the server (reported as `spurious`, which a test treats as a failure).

import * as grpc from '@grpc/grpc-js';
import type { HeaderList } from '../host/contract.ts';
import { envoyProtos } from './protos.ts';
import { ROUTE_METADATA, SERVICE_METADATA, TENANT_METADATA, UPSTREAM_HEADER } from './translate.ts';

export interface EnvoyRequest {
  method: string;
  path: string;
  authority: string;
  /** Regular headers (lower case), as Envoy forwards them after the HCM's own (x-request-id, x-forwarded-*). */
  headers: HeaderList;
  body?: Buffer;
  remoteAddress?: string;
}

export interface EnvoyResponse {
  status: number;
  headers: HeaderList;
  body: Buffer;
}

/** What the upstream (the router) received. */
export interface UpstreamSeen {
  cluster: 'route' | { upstream: string };
  method: string;
  path: string;
  authority: string;
  headers: HeaderList;
  body: Buffer;
}

export type Outcome =
  | { kind: 'immediate'; response: EnvoyResponse & { grpcStatus?: number; details: string }; upstream?: UpstreamSeen }
  | { kind: 'proxied'; upstream: UpstreamSeen; response: EnvoyResponse }
  | { kind: 'error'; status: number; message: string };

export interface ExtProcCallOptions {
  tenant: string;
  route?: string;
  service?: string;
  /** The filter's static processing mode (the translator's); default: request headers only. */
  mode?: { responseHeaders?: boolean; requestBody?: boolean; responseBody?: boolean };
  allowModeOverride?: boolean;
  /** Answers the request the filter let through. */
  upstream: (seen: UpstreamSeen) => EnvoyResponse | Promise<EnvoyResponse>;
  metadata?: Record<string, string>;
  timeoutMs?: number;
}

const p = envoyProtos();
const Process = p.service('envoy.service.ext_proc.v3.ExternalProcessor').Process!;
const Client = grpc.makeGenericClientConstructor({ Process }, 'ExternalProcessor');
const STATUS_CODES = p.root.lookupEnum('envoy.type.v3.StatusCode').values;
const statusCode = (code: unknown): number => (typeof code === 'number' ? code : code === undefined ? 200 : (STATUS_CODES[String(code)] ?? Number(code)));

export function extProcClient(target: string): grpc.Client {
  return new Client(target, grpc.credentials.createInsecure());
}

const hv = (key: string, value: string) => ({ key, raw_value: Buffer.from(value, 'latin1') });
const value = (h: { value?: string; raw_value?: Uint8Array }) => (h.raw_value && h.raw_value.length > 0 ? Buffer.from(h.raw_value).toString('latin1') : (h.value ?? ''));

/** Applies an ext_proc HeaderMutation to a header list the way Envoy's MutationUtils does. */
export function applyWireMutation(list: HeaderList, m: any): HeaderList {
  if (!m) return list;
  let out = list;
  for (const name of m.remove_headers ?? []) out = out.filter(([n]) => n !== name.toLowerCase());
  for (const sh of m.set_headers ?? []) {
    const name = String(sh.header.key).toLowerCase();
    const v = value(sh.header);
    const action = sh.append_action ?? 'APPEND_IF_EXISTS_OR_ADD';
    const append = action === 'APPEND_IF_EXISTS_OR_ADD' || action === 0 ? sh.append?.value === true : action === 'APPEND_IF_EXISTS_OR_ADD';
    if (append) out = [...out, [name, v]];
    else {
      // current Envoy: remove every value, then add
      out = [...out.filter(([n]) => n !== name), [name, v]];
    }
  }
  return out;
}

/** One request through an ext_proc stream, as Envoy's filter would run it. */
export async function processRequest(client: grpc.Client, req: EnvoyRequest, opts: ExtProcCallOptions): Promise<Outcome> {
  const md = new grpc.Metadata();
  md.set(TENANT_METADATA, opts.tenant);
  if (opts.route !== undefined) md.set(ROUTE_METADATA, opts.route);
  if (opts.service !== undefined) md.set(SERVICE_METADATA, opts.service);
  for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
  const call = (client as any).Process(md, { deadline: Date.now() + (opts.timeoutMs ?? 10_000) }) as grpc.ClientDuplexStream<any, any>;
  const answers: any[] = [];
  const waiters: Array<(a: any) => void> = [];
  let failure: Error | undefined;
  call.on('data', (a) => (waiters.length > 0 ? waiters.shift()!(a) : answers.push(a)));
  call.on('error', (err) => {
    failure = err;
    for (const w of waiters.splice(0)) w(undefined);
  });
  call.on('end', () => {
    for (const w of waiters.splice(0)) w(undefined);
  });
  const ask = (msg: object): Promise<any> => {
    call.write(msg);
    if (answers.length > 0) return Promise.resolve(answers.shift());
    if (failure) return Promise.resolve(undefined);
    return new Promise((r) => waiters.push(r));
  };
  const done = (): void => {
    call.end();
  };
  const grpcFailure = (): Outcome => {
    done();
    // failure_mode_allow: false — Envoy answers 500 (message timeout: 504)
    return { kind: 'error', status: 500, message: failure?.message ?? 'stream closed without an answer' };
  };
  const immediate = (a: any, upstream?: UpstreamSeen): Outcome => {
    done();
    const ir = a.immediate_response;
    // Envoy's local reply starts with content-type: text/plain when it has a body (not for gRPC)
    const grpcReply = ir.grpc_status !== undefined;
    const start: HeaderList = !grpcReply && ir.body && ir.body.length > 0 ? [['content-type', 'text/plain']] : [];
    const headers = applyWireMutation(start, ir.headers);
    const grpcStatus = ir.grpc_status?.status;
    const out: Outcome = {
      kind: 'immediate',
      response: { status: statusCode(ir.status?.code), headers, body: Buffer.from(ir.body ?? []), details: ir.details ?? '', ...(grpcStatus !== undefined ? { grpcStatus } : {}) },
    };
    if (upstream) out.upstream = upstream;
    return out;
  };

  let mode = { responseHeaders: opts.mode?.responseHeaders ?? false, requestBody: opts.mode?.requestBody ?? false, responseBody: opts.mode?.responseBody ?? false };
  const override = (a: any): void => {
    const m = a.mode_override;
    if (!m || opts.allowModeOverride === false) return;
    mode = { responseHeaders: m.response_header_mode !== 'SKIP', requestBody: m.request_body_mode === 'BUFFERED', responseBody: m.response_body_mode === 'BUFFERED' };
  };

  // ---- request headers
  let headers: HeaderList = [[':authority', req.authority], [':path', req.path], [':method', req.method], [':scheme', 'http'], ...req.headers];
  let body = req.body ?? Buffer.alloc(0);
  const hasBody = req.body !== undefined && req.body.length > 0;
  let clearRoute = false;
  const attrs = { 'envoy.filters.http.ext_proc': { fields: { 'source.address': { stringValue: `${req.remoteAddress ?? '127.0.0.1'}:40000` } } } };
  let a = await ask({ request_headers: { headers: { headers: headers.map(([k, v]) => hv(k, v)) }, end_of_stream: !hasBody }, attributes: attrs });
  if (!a) return grpcFailure();
  if (a.immediate_response) return immediate(a);
  if (!a.request_headers) return { kind: 'error', status: 0, message: `spurious answer ${a.response} to request_headers` };
  override(a);
  const applyCommon = (c: any, phase: 'request' | 'response', bodyMessage: boolean): string | undefined => {
    if (!c) return undefined;
    if (c.header_mutation) {
      headers = applyWireMutation(headers, c.header_mutation);
      if (phase === 'request' && c.clear_route_cache) clearRoute = true;
    }
    if (c.body_mutation) {
      const nb = c.body_mutation.body !== undefined ? Buffer.from(c.body_mutation.body) : c.body_mutation.clear_body ? Buffer.alloc(0) : body;
      if (c.status === 'CONTINUE_AND_REPLACE') headers = headers.filter(([n]) => n !== 'content-length');
      else if (bodyMessage) {
        const cl = headers.find(([n]) => n === 'content-length')?.[1];
        if (cl !== undefined && Number(cl) !== nb.length) return 'mismatch between content length and the length of the mutated body';
      }
      body = nb;
    }
    return undefined;
  };
  let err = applyCommon(a.request_headers.response, 'request', false);
  if (err) return (done(), { kind: 'error', status: 500, message: err });
  if (mode.requestBody && hasBody && a.request_headers.response?.status !== 'CONTINUE_AND_REPLACE') {
    a = await ask({ request_body: { body, end_of_stream: true } });
    if (!a) return grpcFailure();
    if (a.immediate_response) return immediate(a);
    if (!a.request_body) return { kind: 'error', status: 0, message: `spurious answer ${a.response} to request_body` };
    err = applyCommon(a.request_body.response, 'request', true);
    if (err) return (done(), { kind: 'error', status: 500, message: err });
  }

  // ---- the router
  const pseudo = (n: string) => headers.find(([k]) => k === n)?.[1] ?? '';
  const upstreamHeader = headers.find(([n]) => n === UPSTREAM_HEADER)?.[1];
  const seen: UpstreamSeen = {
    cluster: clearRoute && upstreamHeader !== undefined ? { upstream: upstreamHeader } : 'route',
    method: pseudo(':method'),
    path: pseudo(':path'),
    authority: pseudo(':authority'),
    // the upstream route's request_headers_to_remove
    headers: headers.filter(([n]) => !n.startsWith(':') && n !== UPSTREAM_HEADER),
    body,
  };
  const up = await opts.upstream(seen);

  // ---- response
  headers = [[':status', String(up.status)], ...up.headers];
  body = up.body;
  const resHasBody = up.body.length > 0;
  if (mode.responseHeaders) {
    a = await ask({ response_headers: { headers: { headers: headers.map(([k, v]) => hv(k, v)) }, end_of_stream: !resHasBody } });
    if (!a) return grpcFailure();
    if (a.immediate_response) return immediate(a, seen);
    if (!a.response_headers) return { kind: 'error', status: 0, message: `spurious answer ${a.response} to response_headers` };
    override(a);
    err = applyCommon(a.response_headers.response, 'response', false);
    if (err) return (done(), { kind: 'error', status: 500, message: err });
    if (mode.responseBody && resHasBody && a.response_headers.response?.status !== 'CONTINUE_AND_REPLACE') {
      a = await ask({ response_body: { body, end_of_stream: true } });
      if (!a) return grpcFailure();
      if (a.immediate_response) return immediate(a, seen);
      if (!a.response_body) return { kind: 'error', status: 0, message: `spurious answer ${a.response} to response_body` };
      err = applyCommon(a.response_body.response, 'response', true);
      if (err) return (done(), { kind: 'error', status: 500, message: err });
    }
  }
  done();
  return {
    kind: 'proxied',
    upstream: seen,
    response: { status: Number(pseudo(':status')), headers: headers.filter(([n]) => !n.startsWith(':')), body },
  };
}
