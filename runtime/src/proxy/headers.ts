// Header plumbing for the proxy: hop-by-hop removal (RFC 9110 §7.6.1) in both directions, the
// conversions between flat [name, value, ...] lists and the hosts' HeaderList, `via` (one entry per
// hop, appended to what came in), and the proxy's own error bodies. Everything works on flat arrays so
// a request no plugin touches costs one pass over its headers. Message framing (content-length,
// transfer-encoding, connection) is never copied from a list: the codecs write their own.

import type { HeaderList } from '../host/contract.ts';
import type { ErrorCode } from '../errors.ts';

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'http2-settings',
]);

/** Request headers the proxy answers or replaces itself, never forwarded as received. */
const REQUEST_OWNED = new Set(['expect', 'x-forwarded-for', 'x-forwarded-proto', 'x-request-id', 'host', 'via', 'traceparent']);

const REQUEST_ID_RE = /^[\x21-\x7e]{1,200}$/;

/** The client's x-request-id when it is sane (≤200 visible ASCII characters), else undefined. */
export function saneRequestId(value: string | undefined): string | undefined {
  return value !== undefined && REQUEST_ID_RE.test(value) ? value : undefined;
}

/** Extra hop-by-hop names listed in Connection headers (e.g. "Connection: close, x-foo"). */
function connectionTokens(raw: readonly string[]): Set<string> | undefined {
  let tokens: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length !== 10 || (name !== 'connection' && name !== 'Connection' && name.toLowerCase() !== 'connection')) continue;
    for (const token of raw[i + 1]!.split(',')) {
      const name = token.trim().toLowerCase();
      if (name !== '' && !HOP_BY_HOP.has(name)) (tokens ??= new Set()).add(name);
    }
  }
  return tokens;
}

function isHopByHop(name: string, extra: Set<string> | undefined): boolean {
  return HOP_BY_HOP.has(name) || (extra !== undefined && extra.has(name));
}

/**
 * The end-to-end request headers as plugins see them and the upstream receives them: hop-by-hop
 * headers removed; host set to the request's authority (an absolute-form target's authority replaces
 * Host, RFC 9112 §3.2.2; h2's :authority becomes host); x-forwarded-for appended with the client
 * address; x-forwarded-proto, x-request-id set; our `via` appended to the client's; `traceparent`
 * replaced by ours (the same trace, our span as the parent; tracestate passes through).
 */
export function requestHeaderList(raw: readonly string[], authority: string, clientAddress: string, requestId: string, via: string, traceparent: string): HeaderList {
  const extra = connectionTokens(raw);
  const out: HeaderList = [];
  if (authority !== '') out.push(['host', authority]);
  let forwardedFor = '';
  let viaIn = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (isHopByHop(name, extra)) continue;
    if (REQUEST_OWNED.has(name)) {
      if (name === 'x-forwarded-for') forwardedFor = forwardedFor === '' ? raw[i + 1]! : `${forwardedFor}, ${raw[i + 1]}`;
      else if (name === 'via') viaIn = viaIn === '' ? raw[i + 1]! : `${viaIn}, ${raw[i + 1]}`;
      continue;
    }
    out.push([name, raw[i + 1]!]);
  }
  out.push(['x-forwarded-for', forwardedFor === '' ? clientAddress : `${forwardedFor}, ${clientAddress}`]);
  out.push(['x-forwarded-proto', 'http']);
  out.push(['x-request-id', requestId]);
  out.push(['via', viaIn === '' ? via : `${viaIn}, ${via}`]);
  out.push(['traceparent', traceparent]);
  return out;
}

/**
 * Flatten a (possibly plugin-modified) request HeaderList for the upstream head. Hop-by-hop names are
 * dropped again because a plugin may have added them; Host falls back to the upstream authority.
 * Message framing comes from the downstream request only: a plugin-set content-length is dropped
 * and the downstream's is restored, else a body-less GET with a forged length would desynchronise
 * the pooled upstream connection (request smuggling). `transferEncoding` is the value to send when
 * the body is chunked ("gzip, chunked" keeps the client's codings). An upgrade request keeps its
 * Upgrade field and asks the upstream for the upgrade itself.
 */
export function upstreamRequestHeaders(
  list: HeaderList,
  authority: string,
  transferEncoding: string | undefined,
  contentLength: string | undefined,
  upgrade?: string,
): string[] {
  const flat: string[] = [];
  let hasHost = false;
  for (let i = 0; i < list.length; i++) {
    const name = list[i]![0];
    if (HOP_BY_HOP.has(name) || name === 'expect' || name === 'content-length') continue;
    if (name === 'host') hasHost = true;
    flat.push(name, list[i]![1]);
  }
  if (!hasHost) flat.push('host', authority);
  if (transferEncoding !== undefined) flat.push('transfer-encoding', transferEncoding);
  else if (contentLength !== undefined) flat.push('content-length', contentLength);
  if (upgrade !== undefined) flat.push('connection', 'upgrade', 'upgrade', upgrade);
  return flat;
}

/** Upstream response headers as a HeaderList for onResponse hooks (hop-by-hop removed, x-request-id ours). */
export function responseHeaderList(raw: readonly string[], requestId: string): HeaderList {
  const extra = connectionTokens(raw);
  const out: HeaderList = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!.toLowerCase();
    if (isHopByHop(name, extra) || name === 'x-request-id') continue;
    out.push([name, raw[i + 1]!]);
  }
  out.push(['x-request-id', requestId]);
  return out;
}

/**
 * Upstream response headers straight to the flat form the codec writes (no plugin in between):
 * hop-by-hop and framing fields removed, x-request-id ours, our `via` appended. For a 101 the
 * Connection/Upgrade pair is kept (it is the answer to the upgrade).
 */
export function responseHeadersFlat(raw: readonly string[], requestId: string, via: string, upgrade = false): string[] {
  const extra = connectionTokens(raw);
  const flat: string[] = [];
  let viaIn = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const n = name.length;
    // Only these lengths can be hop-by-hop, framing, via or x-request-id: the rest need no lower-casing.
    if (extra !== undefined || n === 2 || n === 3 || n === 7 || n === 10 || n === 12 || n === 14 || n === 16 || n === 17) {
      const lower = name.toLowerCase();
      if (upgrade && (lower === 'connection' || lower === 'upgrade')) {
        flat.push(name, raw[i + 1]!);
        continue;
      }
      if (isHopByHop(lower, extra) || lower === 'x-request-id' || lower === 'content-length') continue;
      if (lower === 'via') {
        viaIn = viaIn === '' ? raw[i + 1]! : `${viaIn}, ${raw[i + 1]}`;
        continue;
      }
    }
    flat.push(name, raw[i + 1]!);
  }
  flat.push('x-request-id', requestId, 'via', viaIn === '' ? via : `${viaIn}, ${via}`);
  return flat;
}

/**
 * A HeaderList from a plugin, flattened for the codec; hop-by-hop and framing names dropped (the body's
 * length comes from the upstream or the proxy, never from a plugin), x-request-id forced.
 */
export function flattenResponseHeaders(list: HeaderList, requestId: string, via: string): string[] {
  const flat: string[] = [];
  let viaIn = '';
  for (let i = 0; i < list.length; i++) {
    const name = list[i]![0].toLowerCase();
    if (HOP_BY_HOP.has(name) || name === 'x-request-id' || name === 'content-length') continue;
    if (name === 'via') {
      viaIn = viaIn === '' ? list[i]![1] : `${viaIn}, ${list[i]![1]}`;
      continue;
    }
    flat.push(name, list[i]![1]);
  }
  flat.push('x-request-id', requestId, 'via', viaIn === '' ? via : `${viaIn}, ${via}`);
  return flat;
}

/** The JSON body of a proxy-made error: {"error":{"code","message"}}. */
export function errorBody(code: ErrorCode, message: string): Buffer {
  return Buffer.from(JSON.stringify({ error: { code, message } }));
}

/** The value of a header (lower-case name) in a flat raw list; repeated fields joined with ", ". */
export function headerOf(raw: readonly string[], name: string): string | undefined {
  let out: string | undefined;
  const n = name.length;
  for (let i = 0; i < raw.length; i += 2) {
    const k = raw[i]!;
    if (k.length === n && (k === name || k.toLowerCase() === name)) out = out === undefined ? raw[i + 1] : `${out}, ${raw[i + 1]}`;
  }
  return out;
}

/** Fields HTTP/2 forbids (RFC 9113 §8.2.2) besides the hop-by-hop set. */
const H2_FORBIDDEN = new Set(['host', 'content-length', 'expect']);

/**
 * A request HeaderList as HTTP/2 request headers toward an upstream: pseudo-headers from the request,
 * :authority from its host field, connection-specific fields dropped, framing (content-length) from
 * the downstream only; `te: trailers` for gRPC (its servers require it).
 */
export function h2RequestHeaders(
  list: HeaderList,
  method: string,
  path: string,
  fallbackAuthority: string,
  contentLength: number | undefined,
  grpc: boolean,
): Record<string, string | string[]> {
  let authority = fallbackAuthority;
  const out: Record<string, string | string[]> = { ':method': method, ':scheme': 'http', ':path': path };
  for (let i = 0; i < list.length; i++) {
    const [name, value] = list[i]!;
    if (name === 'host') {
      authority = value;
      continue;
    }
    if (HOP_BY_HOP.has(name) || H2_FORBIDDEN.has(name) || name.charCodeAt(0) === 58) continue;
    const prev = out[name];
    if (prev === undefined) out[name] = value;
    else if (name === 'cookie') out[name] = `${prev as string}; ${value}`;
    else out[name] = Array.isArray(prev) ? [...prev, value] : [prev, value];
  }
  out[':authority'] = authority;
  if (contentLength !== undefined && contentLength >= 0) out['content-length'] = String(contentLength);
  if (grpc) out.te = 'trailers';
  return out;
}

/**
 * The upstream HTTP/1.1 request head straight from the downstream fields, for a request no plugin
 * touches: the same result as requestHeaderList → upstreamRequestHeaders → requestHead (a test holds
 * them equal), in one pass without a HeaderList. Field names keep the client's case (the general path
 * lower-cases them; HTTP field names are case-insensitive).
 */
export function upstreamHeadFromRaw(
  method: string,
  target: string,
  raw: readonly string[],
  authority: string,
  clientAddress: string,
  requestId: string,
  via: string,
  traceparent: string,
  transferEncoding: string | undefined,
  contentLength: string | undefined,
  upgrade: string | undefined,
  upstreamAuthority: string,
): string {
  const extra = connectionTokens(raw);
  let head = `${method} ${target} HTTP/1.1\r\n`;
  if (authority !== '') head += `host: ${authority}\r\n`;
  let forwardedFor = '';
  let viaIn = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const value = raw[i + 1]!;
    const n = name.length;
    // Only these lengths can be a hop-by-hop, owned or framing name: the rest need no lower-casing.
    if (n === 2 || n === 3 || n === 4 || n === 6 || n === 7 || n === 10 || n === 11 || n === 12 || n === 14 || n === 15 || n === 16 || n === 17 || (extra !== undefined)) {
      const lower = name.toLowerCase();
      if (isHopByHop(lower, extra) || lower === 'content-length') continue;
      if (REQUEST_OWNED.has(lower)) {
        if (lower === 'x-forwarded-for') forwardedFor = forwardedFor === '' ? value : `${forwardedFor}, ${value}`;
        else if (lower === 'via') viaIn = viaIn === '' ? value : `${viaIn}, ${value}`;
        continue;
      }
    }
    head += `${name}: ${value}\r\n`;
  }
  head += `x-forwarded-for: ${forwardedFor === '' ? clientAddress : `${forwardedFor}, ${clientAddress}`}\r\nx-forwarded-proto: http\r\nx-request-id: ${requestId}\r\nvia: ${viaIn === '' ? via : `${viaIn}, ${via}`}\r\ntraceparent: ${traceparent}\r\n`;
  if (authority === '') head += `host: ${upstreamAuthority}\r\n`;
  if (transferEncoding !== undefined) head += `transfer-encoding: ${transferEncoding}\r\n`;
  else if (contentLength !== undefined) head += `content-length: ${contentLength}\r\n`;
  if (upgrade !== undefined) head += `connection: upgrade\r\nupgrade: ${upgrade}\r\n`;
  return `${head}\r\n`;
}
