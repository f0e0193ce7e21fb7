// The single-pass upstream head (upstreamHeadFromRaw) must say exactly what the general path says
// (requestHeaderList → upstreamRequestHeaders → requestHead) for any client fields.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { requestHeaderList, upstreamHeadFromRaw, upstreamRequestHeaders } from './headers.ts';
import { requestHead } from './origin.ts';

const NAMES = ['Host', 'host', 'Connection', 'connection', 'Keep-Alive', 'TE', 'Trailer', 'Transfer-Encoding', 'Upgrade', 'Proxy-Connection', 'HTTP2-Settings',
  'Expect', 'X-Forwarded-For', 'x-forwarded-proto', 'X-Request-Id', 'Via', 'Traceparent', 'Tracestate', 'Content-Length', 'Content-Type', 'Accept',
  'X-Custom', 'X-Drop-Me', 'Authorization', 'Cookie', 'User-Agent', 'ab', 'abc', 'abcdefghij'];
const VALUES = ['1', 'close, X-Drop-Me', 'keep-alive', 'trailers', 'a, b', '10.0.0.1', '1.1 edge', 'text/plain', ''];

function normalize(head: string): string[] {
  return head.split('\r\n').map((line, i) => {
    if (i === 0) return line;
    const colon = line.indexOf(':');
    return colon === -1 ? line : `${line.slice(0, colon).toLowerCase()}${line.slice(colon)}`;
  });
}

test('upstreamHeadFromRaw equals the general path for random client fields (bounded)', () => {
  let seed = 11;
  const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  for (let i = 0; i < 3000; i++) {
    const raw: string[] = [];
    for (let k = 0, n = rand(12); k < n; k++) raw.push(NAMES[rand(NAMES.length)]!, VALUES[rand(VALUES.length)]!);
    const authority = rand(4) === 0 ? '' : 'app.example:8080';
    const te = rand(3) === 0 ? 'gzip, chunked' : undefined;
    const cl = te === undefined && rand(2) === 0 ? String(rand(100)) : undefined;
    const upgrade = rand(5) === 0 ? 'websocket' : undefined;
    const general = requestHead('POST', '/p?q', upstreamRequestHeaders(requestHeaderList(raw, authority, '127.0.0.9', 'rid', '1.1 isomesh', '00-t-s-01'), '10.1.1.1:80', te, cl, upgrade), false);
    const fast = upstreamHeadFromRaw('POST', '/p?q', raw, authority, '127.0.0.9', 'rid', '1.1 isomesh', '00-t-s-01', te, cl, upgrade, '10.1.1.1:80');
    assert.deepEqual(normalize(fast), normalize(general), JSON.stringify({ raw, authority, te, cl, upgrade }));
  }
});

test('responseHeadersFlat drops hop-by-hop, framing and Connection-listed fields whatever their case, and appends via', async () => {
  const { responseHeadersFlat } = await import('./headers.ts');
  const raw = ['Content-Type', 'text/plain', 'Content-Length', '5', 'Connection', 'keep-alive, X-Secret', 'X-Secret', 'drop', 'Keep-Alive', 'timeout=5',
    'Transfer-Encoding', 'chunked', 'Via', '1.1 origin', 'X-Request-Id', 'theirs', 'Set-Cookie', 'a=1', 'Upgrade', 'h2c', 'TE', 'x'];
  assert.deepEqual(responseHeadersFlat(raw, 'rid', '1.1 isomesh'), ['Content-Type', 'text/plain', 'Set-Cookie', 'a=1', 'x-request-id', 'rid', 'via', '1.1 origin, 1.1 isomesh']);
  assert.deepEqual(responseHeadersFlat(['Connection', 'Upgrade', 'Upgrade', 'websocket', 'Sec-WebSocket-Accept', 'k'], 'r', '1.1 isomesh', true),
    ['Connection', 'Upgrade', 'Upgrade', 'websocket', 'Sec-WebSocket-Accept', 'k', 'x-request-id', 'r', 'via', '1.1 isomesh']);
});
