// Header plumbing for the proxy: hop-by-hop removal (RFC 9110 §7.6.1) in both directions, the
// conversions between node's flat rawHeaders and the hosts' HeaderList, and the proxy's own error
// responses. Everything works on node's flat [name, value, name, value, ...] arrays so a request
// that no plugin touches costs one pass over its headers.

import type { ServerResponse } from 'node:http';
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
]);

/** Request headers the proxy answers or replaces itself, never forwarded as received. */
const REQUEST_OWNED = new Set(['expect', 'x-forwarded-for', 'x-forwarded-proto', 'x-request-id']);

const REQUEST_ID_RE = /^[\x21-\x7e]{1,200}$/;

/** The client's x-request-id when it is sane (≤200 visible ASCII characters), else undefined. */
export function saneRequestId(value: string | string[] | undefined): string | undefined {
  return typeof value === 'string' && REQUEST_ID_RE.test(value) ? value : undefined;
}

/** Extra hop-by-hop names listed in Connection headers (e.g. "Connection: close, x-foo"). */
function connectionTokens(raw: string[]): Set<string> | undefined {
  let tokens: Set<string> | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i].length !== 10 || raw[i].toLowerCase() !== 'connection') continue;
    for (const token of raw[i + 1].split(',')) {
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
 * headers removed, x-forwarded-for appended with the client address, x-forwarded-proto set, and
 * x-request-id set to the request's id.
 */
export function requestHeaderList(raw: string[], clientAddress: string, requestId: string): HeaderList {
  const extra = connectionTokens(raw);
  const out: HeaderList = [];
  let forwardedFor = '';
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (isHopByHop(name, extra)) continue;
    if (REQUEST_OWNED.has(name)) {
      if (name === 'x-forwarded-for') forwardedFor = forwardedFor === '' ? raw[i + 1] : `${forwardedFor}, ${raw[i + 1]}`;
      continue;
    }
    out.push([name, raw[i + 1]]);
  }
  out.push(['x-forwarded-for', forwardedFor === '' ? clientAddress : `${forwardedFor}, ${clientAddress}`]);
  out.push(['x-forwarded-proto', 'http']);
  out.push(['x-request-id', requestId]);
  return out;
}

/**
 * Flatten a (possibly plugin-modified) request HeaderList for http.request. Hop-by-hop names are
 * dropped again because a plugin may have added them; Host falls back to the upstream authority.
 * Message framing comes from the downstream request only: a plugin-set content-length is dropped
 * and the downstream's is restored, else a body-less GET with a forged length would desynchronise
 * the pooled upstream connection (request smuggling). A chunked downstream body stays chunked.
 */
export function upstreamRequestHeaders(
  list: HeaderList,
  authority: string,
  chunked: boolean,
  contentLength?: string,
): string[] {
  const flat: string[] = [];
  let hasHost = false;
  for (let i = 0; i < list.length; i++) {
    const name = list[i][0];
    if (HOP_BY_HOP.has(name) || name === 'expect' || name === 'content-length') continue;
    if (name === 'host') hasHost = true;
    flat.push(name, list[i][1]);
  }
  if (!hasHost) flat.push('host', authority);
  if (chunked) flat.push('transfer-encoding', 'chunked');
  else if (contentLength !== undefined) flat.push('content-length', contentLength);
  return flat;
}

/** Upstream response headers as a HeaderList for onResponse hooks (hop-by-hop removed, x-request-id ours). */
export function responseHeaderList(raw: string[], requestId: string): HeaderList {
  const extra = connectionTokens(raw);
  const out: HeaderList = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (isHopByHop(name, extra) || name === 'x-request-id') continue;
    out.push([name, raw[i + 1]]);
  }
  out.push(['x-request-id', requestId]);
  return out;
}

/** Same as responseHeaderList, straight to the flat form writeHead takes (no plugin in between). */
export function responseHeadersFlat(raw: string[], requestId: string): string[] {
  const extra = connectionTokens(raw);
  const flat: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i].toLowerCase();
    if (isHopByHop(name, extra) || name === 'x-request-id') continue;
    flat.push(raw[i], raw[i + 1]);
  }
  flat.push('x-request-id', requestId);
  return flat;
}

/** A HeaderList from a plugin, flattened for writeHead; hop-by-hop names dropped, x-request-id forced. */
export function flattenResponseHeaders(list: HeaderList, requestId: string, dropLength: boolean): string[] {
  const flat: string[] = [];
  for (let i = 0; i < list.length; i++) {
    const name = list[i][0].toLowerCase();
    if (HOP_BY_HOP.has(name) || name === 'x-request-id' || (dropLength && name === 'content-length')) continue;
    flat.push(name, list[i][1]);
  }
  flat.push('x-request-id', requestId);
  return flat;
}

/** Answer with the proxy's own error shape: status, x-isomesh-error, JSON {"error":{code,message}}. */
export function writeProxyError(
  res: ServerResponse,
  status: number,
  code: ErrorCode,
  message: string,
  requestId: string,
  retryAfterSec?: number,
): void {
  if (res.headersSent) {
    // Too late to change the status: cut the stream so the client sees a truncated response.
    res.destroy();
    return;
  }
  const body = JSON.stringify({ error: { code, message } });
  const headers = [
    'content-type', 'application/json',
    'content-length', String(Buffer.byteLength(body)),
    'x-isomesh-error', code,
    'x-request-id', requestId,
  ];
  if (retryAfterSec !== undefined) headers.push('retry-after', String(Math.max(0, Math.ceil(retryAfterSec))));
  res.writeHead(status, headers);
  res.end(body);
}
