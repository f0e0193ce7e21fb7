// ext_proc messages as isomesh reads and writes them. Requests are decoded straight into protobufjs
// message objects and responses encoded from plain objects (numbers for enums) — no toObject/fromObject
// conversion on a path that runs for every request. What Envoy expects of each response is pinned here:
//   - header values travel in `raw_value` (Envoy reads only raw_value since send_header_raw_value;
//     setting both value and raw_value is an error); incoming values are read from raw_value, else value;
//   - a set is `append: false`, an append `append: true` (the BoolValue every Envoy version reads;
//     append_action's default APPEND_IF_EXISTS_OR_ADD = 0 is indistinguishable from "unset" and then
//     falls back to `append`, default false = overwrite);
//   - Envoy ignores mutations of :method/:scheme/host unless the filter allows routing headers, and
//     x-envoy-* unless it allows those (HeaderMutationRules defaults); isomesh never sends pseudo-headers
//     other than :authority (a plugin's `host`).

import type protobuf from 'protobufjs';
import type { HeaderList, HeaderMutation } from '../host/contract.ts';
import type { ErrorCode } from '../errors.ts';

/** Names a chain's result never changes through ext_proc: message framing belongs to the data plane. */
const FRAMING = new Set(['content-length', 'transfer-encoding', 'connection', 'keep-alive', 'proxy-connection', 'te', 'upgrade', 'http2-settings']);

export const BodyMode = Object.freeze({ NONE: 0, STREAMED: 1, BUFFERED: 2 });
export const HeaderMode = Object.freeze({ DEFAULT: 0, SEND: 1, SKIP: 2 });
export const ResponseStatus = Object.freeze({ CONTINUE: 0, CONTINUE_AND_REPLACE: 1 });

/** The attribute names isomesh asks Envoy for (ExternalProcessor.request_attributes). */
export const REQUEST_ATTRIBUTES: readonly string[] = ['source.address', 'xds.cluster_name'];
const ATTRIBUTES_KEY = 'envoy.filters.http.ext_proc';

export interface WireHeaderValue {
  key: string;
  value?: string;
  raw_value?: Uint8Array;
}

/** A decoded ProcessingRequest (protobufjs message; unset fields read as their defaults). */
export interface WireRequest {
  request?: 'request_headers' | 'response_headers' | 'request_body' | 'response_body' | 'request_trailers' | 'response_trailers';
  request_headers?: WireHeaders;
  response_headers?: WireHeaders;
  request_body?: WireBody;
  response_body?: WireBody;
  attributes?: Record<string, { fields?: Record<string, { stringValue?: string }> }>;
  observability_mode?: boolean;
}
export interface WireHeaders {
  headers?: { headers?: WireHeaderValue[] };
  end_of_stream?: boolean;
}
export interface WireBody {
  body?: Uint8Array;
  end_of_stream?: boolean;
}

/** Headers of a headers message: pseudo-headers apart, the rest in order (names lower case). */
export interface ReadHeaders {
  pseudo: Map<string, string>;
  list: HeaderList;
}

export function readHeaders(h: WireHeaders | undefined): ReadHeaders {
  const pseudo = new Map<string, string>();
  const list: HeaderList = [];
  for (const hv of h?.headers?.headers ?? []) {
    const raw = hv.raw_value;
    // Header values are octets; latin1 keeps every byte as one character, as the built-in parser does.
    const value = raw !== undefined && raw.length > 0 ? Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('latin1') : (hv.value ?? '');
    const key = hv.key.toLowerCase();
    if (key.startsWith(':')) pseudo.set(key, value);
    else list.push([key, value]);
  }
  return { pseudo, list };
}

/** A string attribute Envoy sent for request_attributes, if any. */
export function attribute(req: WireRequest, name: string): string | undefined {
  const v = req.attributes?.[ATTRIBUTES_KEY]?.fields?.[name]?.stringValue;
  return typeof v === 'string' && v !== '' ? v : undefined;
}

/** The IP of Envoy's `source.address` ("1.2.3.4:5", "[::1]:5"). */
export function addressIp(address: string): string {
  if (address.startsWith('[')) return address.slice(1, address.indexOf(']'));
  const colon = address.lastIndexOf(':');
  return colon > 0 && address.indexOf(':') === colon ? address.slice(0, colon) : address;
}

const TOKEN_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
// RFC 9110 field values: no CR, LF or NUL (Envoy's headerValueIsValid).
const BAD_VALUE_RE = /[\0\r\n]/;

/** Why Envoy would refuse this header, or undefined. */
export function invalidHeader(name: string, value: string): string | undefined {
  if (!TOKEN_RE.test(name)) return `invalid header name ${JSON.stringify(name)}`;
  if (BAD_VALUE_RE.test(value)) return `invalid value for header ${name}`;
  if (value.length > 16384) return `header ${name} is longer than 16384 bytes`;
  return undefined;
}

function option(name: string, value: string, append: boolean): Record<string, unknown> {
  return { header: { key: name, raw_value: Buffer.from(value, 'latin1') }, append: { value: append } };
}

/** Drops what the data plane owns (framing); `host` becomes `:authority`. */
export function forEnvoy(m: HeaderMutation): HeaderMutation {
  const name = (n: string) => (n === 'host' ? ':authority' : n);
  return {
    set: m.set.filter(([n]) => !FRAMING.has(n)).map(([n, v]) => [name(n), v]),
    append: m.append.filter(([n]) => !FRAMING.has(n)).map(([n, v]) => [name(n), v]),
    // :authority cannot be removed from a request; the built-in proxy falls back to the upstream's.
    remove: m.remove.filter((n) => !FRAMING.has(n) && n !== 'host'),
  };
}

/** The first header Envoy would refuse in a mutation, or undefined. */
export function invalidMutation(m: HeaderMutation): string | undefined {
  for (const [n, v] of m.set) {
    const bad = n === ':authority' ? (BAD_VALUE_RE.test(v) ? 'invalid host' : undefined) : invalidHeader(n, v);
    if (bad) return bad;
  }
  for (const [n, v] of m.append) {
    const bad = n === ':authority' ? 'host cannot be repeated' : invalidHeader(n, v);
    if (bad) return bad;
  }
  for (const n of m.remove) if (!TOKEN_RE.test(n)) return `invalid header name ${JSON.stringify(n)}`;
  return undefined;
}

/** envoy.service.ext_proc.v3.HeaderMutation (undefined when empty). */
export function wireMutation(m: HeaderMutation): Record<string, unknown> | undefined {
  if (m.set.length === 0 && m.append.length === 0 && m.remove.length === 0) return undefined;
  const set_headers: Array<Record<string, unknown>> = [];
  for (const [n, v] of m.set) set_headers.push(option(n, v, false));
  for (const [n, v] of m.append) set_headers.push(option(n, v, true));
  const out: Record<string, unknown> = { set_headers };
  if (m.remove.length > 0) out.remove_headers = m.remove;
  return out;
}

/**
 * HTTP → gRPC status for an answer isomesh makes to a gRPC request (API.md "Protocols"), the built-in
 * proxy's table (proxy/grpc.ts): timeouts → DEADLINE_EXCEEDED, 429 and 413 → RESOURCE_EXHAUSTED,
 * 401 → UNAUTHENTICATED, 403 → PERMISSION_DENIED, 404/502/503 (a closed chain failure) → UNAVAILABLE,
 * 400/431 → INTERNAL, 501 → UNIMPLEMENTED.
 */
export function grpcStatusFor(status: number, code?: ErrorCode): number {
  if (code === 'ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT' || status === 504 || status === 408) return 4;
  if (status === 429 || status === 413) return 8;
  if (status === 401) return 16;
  if (status === 403) return 7;
  if (status === 404 || status === 502 || status === 503) return 14;
  if (status === 400 || status === 431) return 13;
  if (status === 501) return 12;
  if (status >= 200 && status < 300) return 0;
  return 2;
}

export function isGrpc(list: HeaderList): boolean {
  for (const [n, v] of list) if (n === 'content-type') return v.startsWith('application/grpc');
  return false;
}

export interface Immediate {
  status: number;
  headers: HeaderList;
  body: Buffer;
  /** Set for gRPC requests: Envoy answers HTTP 200 with grpc-status, and grpc-message = body. */
  grpcStatus?: number;
  details: string;
}

export function immediateResponse(r: Immediate): Record<string, unknown> {
  const out: Record<string, unknown> = {
    // Envoy answers 200 for anything below 200; a plugin's status is validated by the host.
    status: { code: r.status },
    body: r.body,
    details: r.details,
  };
  if (r.headers.length > 0) {
    // The first value of a name replaces what Envoy's local reply has (its default content-type:
    // text/plain); further values of the name are appended (set-cookie twice stays twice).
    const seen = new Set<string>();
    out.headers = { set_headers: r.headers.map(([n, v]) => option(n, v, seen.has(n) || !seen.add(n))) };
  }
  if (r.grpcStatus !== undefined) out.grpc_status = { status: r.grpcStatus };
  return { immediate_response: out };
}

/** A fast service definition for ExternalProcessor/Process: decode to messages, encode from plain objects. */
export function codec(req: protobuf.Type, res: protobuf.Type): {
  decode: (b: Buffer) => WireRequest;
  encode: (v: unknown) => Buffer;
} {
  return {
    decode: (b) => req.decode(b) as unknown as WireRequest,
    encode: (v) => {
      const bytes = res.encode(v as Record<string, unknown>).finish();
      return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    },
  };
}
