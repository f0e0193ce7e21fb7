// The HTTP/1.1 request parser alone: framing, strictness (smuggling vectors), limits, and that the
// events do not depend on how the bytes are split into reads.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_FIELDS, MAX_HEAD_BYTES, RequestParser, type RequestHead } from './parser.ts';

interface Parsed {
  heads: RequestHead[];
  bodies: string[];
  trailers: Array<string[] | undefined>;
  error?: { status: number; code: string; message: string };
}

/** Feeds `input` in the given pieces, resetting after every message (as the connection does). */
function parse(input: string | Buffer, pieces: number[] = []): Parsed {
  const out: Parsed = { heads: [], bodies: [], trailers: [] };
  let body = '';
  const parser = new RequestParser({
    onHead: (h) => out.heads.push(h),
    onBody: (c) => (body += c.toString('latin1')),
    onEnd: (t) => {
      out.bodies.push(body);
      out.trailers.push(t);
      body = '';
    },
  });
  const buf = Buffer.isBuffer(input) ? input : Buffer.from(input, 'latin1');
  const cuts = [...pieces, buf.length].filter((c) => c > 0 && c <= buf.length).sort((a, b) => a - b);
  let from = 0;
  for (const cut of cuts) {
    const chunk = buf.subarray(from, cut);
    from = cut;
    let at = 0;
    while (at < chunk.length) {
      const next = parser.execute(chunk, at);
      if (next < 0) {
        out.error = parser.error;
        return out;
      }
      if (parser.done) parser.reset();
      if (next === at && !parser.done) break;
      at = next;
    }
  }
  return out;
}

const GET = 'GET /a?b=1 HTTP/1.1\r\nHost: app.example\r\nX-One: 1\r\n\r\n';

test('a simple request: method, origin-form target, fields in order, authority from Host', () => {
  const p = parse(GET);
  assert.equal(p.error, undefined);
  const h = p.heads[0]!;
  assert.equal(h.method, 'GET');
  assert.equal(h.target, '/a?b=1');
  assert.equal(h.authority, 'app.example');
  assert.deepEqual(h.raw, ['Host', 'app.example', 'X-One', '1']);
  assert.equal(h.keepAlive, true);
  assert.equal(h.contentLength, -1);
  assert.deepEqual(p.bodies, ['']);
});

test('pipelined requests with bodies parse the same however the bytes are split', () => {
  const input =
    'POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello' +
    'POST /2 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n' +
    GET;
  const whole = parse(input);
  assert.equal(whole.error, undefined);
  assert.deepEqual(whole.heads.map((h) => h.target), ['/1', '/2', '/a?b=1']);
  assert.deepEqual(whole.bodies, ['hello', 'abcde', '']);
  assert.deepEqual(whole.trailers, [undefined, ['X-T', '1'], undefined]);
  // Every split point, and a few random multi-splits (bounded).
  for (let cut = 1; cut < input.length; cut++) {
    const p = parse(input, [cut]);
    assert.deepEqual([p.heads.map((h) => h.target), p.bodies, p.trailers, p.error], [whole.heads.map((h) => h.target), whole.bodies, whole.trailers, undefined], `split at ${cut}`);
  }
  let seed = 7;
  const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  for (let i = 0; i < 200; i++) {
    const cuts = Array.from({ length: 1 + rand(6) }, () => 1 + rand(input.length - 1));
    const p = parse(input, cuts);
    assert.deepEqual(p.bodies, whole.bodies, `cuts ${cuts}`);
  }
});

test('absolute-form: the target authority replaces Host; the target becomes origin-form', () => {
  const h = parse('GET http://Public.Example:8080/x?y HTTP/1.1\r\nHost: admin.internal\r\n\r\n').heads[0]!;
  assert.equal(h.authority, 'Public.Example:8080');
  assert.equal(h.target, '/x?y');
  assert.equal(h.absolute, true);
  assert.equal(parse('GET http://a.example HTTP/1.1\r\nHost: x\r\n\r\n').heads[0]!.target, '/');
  assert.equal(parse('GET http://a.example?q HTTP/1.1\r\nHost: x\r\n\r\n').heads[0]!.target, '/?q');
});

test('transfer codings before chunked are kept; Expect and Upgrade are recognised', () => {
  const h = parse('POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n').heads[0]!;
  assert.equal(h.chunked, true);
  assert.equal(h.codings, 'gzip');
  const e = parse('POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\nx').heads[0]!;
  assert.equal(e.expectContinue, true);
  const u = parse('GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n').heads[0]!;
  assert.equal(u.upgrade, 'websocket');
  assert.equal(parse('GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n').heads[0]!.upgrade, undefined, 'Upgrade without Connection: upgrade is not an upgrade');
  assert.equal(parse('GET / HTTP/1.0\r\n\r\n').heads[0]!.keepAlive, false);
  assert.equal(parse('GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n').heads[0]!.keepAlive, true);
  assert.equal(parse('GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n').heads[0]!.keepAlive, false);
});

// Each vector: [request, status, code]. Smuggling vectors (framing ambiguities) and malformed heads.
const BAD: Array<[string, number, string]> = [
  ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nContent-Length : 5\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n', 0, ''], // HTAB is OWS: fine
  ['GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\n X-Fold: x\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n\tfolded\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\nHost: a\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\nX-Bare: lf\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nX-Bad: a\rb\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nX-Nul: a\u0000b\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET  / HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1 \r\nHost: a\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['G@T / HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET /\u00e9 HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/2.0\r\nHost: a\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\nHost: a\r\n: novalue\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET /#frag HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['GET / HTTP/1.1\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_HOST'],
  ['GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_HOST'],
  ['GET / HTTP/1.1\r\nHost: user@a\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_HOST'],
  ['GET / HTTP/1.1\r\nHost: a/b\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_HOST'],
  ['GET / HTTP/1.1\r\nHost: a b\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_HOST'],
  ['GET / HTTP/1.1\r\nHost: \r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_HOST'],
  ['GET http://u@a/ HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_HOST'],
  ['GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n', 400, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
  ['CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n', 501, 'ISOMESH_ERR_PROXY_NOT_IMPLEMENTED'],
  ['OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n', 501, 'ISOMESH_ERR_PROXY_NOT_IMPLEMENTED'],
  ['GET / HTTP/1.1\r\nHost: a\r\nExpect: something-else\r\n\r\n', 417, 'ISOMESH_ERR_PROXY_BAD_REQUEST'],
];

test('malformed requests and smuggling vectors are refused with the right status and code', () => {
  for (const [input, status, code] of BAD) {
    const p = parse(input);
    if (status === 0) {
      assert.equal(p.error, undefined, JSON.stringify(input));
      continue;
    }
    assert.equal(p.error?.status, status, JSON.stringify(input));
    assert.equal(p.error?.code, code, JSON.stringify(input));
  }
});

test('limits: a head over 16 KiB or over 100 fields is 431', () => {
  const big = `GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${'x'.repeat(MAX_HEAD_BYTES)}\r\n\r\n`;
  assert.equal(parse(big).error?.status, 431);
  assert.equal(parse(big, [100, 5000, 9000]).error?.status, 431, 'also when it arrives in pieces');
  const many = `GET / HTTP/1.1\r\nHost: a\r\n${Array.from({ length: MAX_FIELDS }, (_, i) => `X-${i}: v\r\n`).join('')}\r\n`;
  assert.equal(parse(many).error?.status, 431);
  const ok = `GET / HTTP/1.1\r\nHost: a\r\n${Array.from({ length: MAX_FIELDS - 1 }, (_, i) => `X-${i}: v\r\n`).join('')}\r\n`;
  assert.equal(parse(ok).error, undefined);
  // A head that never ends is refused as soon as it passes the limit, not buffered forever.
  const endless = parse(`GET / HTTP/1.1\r\nHost: a\r\nX: ${'y'.repeat(MAX_HEAD_BYTES + 10)}`);
  assert.equal(endless.error?.status, 431);
});

test('mutated requests never throw: each either parses or fails with a status (bounded fuzz)', () => {
  const base = Buffer.from('POST /p HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n5\r\nhello\r\n0\r\nT: 1\r\n\r\n', 'latin1');
  let seed = 42;
  const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
  const special = [0, 9, 10, 13, 32, 58, 127, 255, 48, 102];
  for (let i = 0; i < 3000; i++) {
    const buf = Buffer.from(base);
    for (let k = 0, n = 1 + rand(3); k < n; k++) buf[rand(buf.length)] = special[rand(special.length)]!;
    const p = parse(buf, [1 + rand(buf.length - 1)]);
    if (p.error !== undefined) assert.ok(p.error.status >= 400 && p.error.status < 600);
  }
});

test('a refused field line is named: folding, no name, a name that is not a token, a control character', () => {
  const msg = (fields: string): string | undefined => parse(`GET / HTTP/1.1\r\nHost: a\r\n${fields}\r\n\r\n`).error?.message;
  assert.equal(msg(' X: fold'), 'obsolete line folding in a header field');
  assert.equal(msg('X-A: 1\r\nno colon here'), 'header line without a field name');
  assert.equal(msg('X-A : 1'), 'header field name is not a token (no whitespace before the colon)');
  assert.equal(msg('X-A: 1\u0000'), 'header field value holds a control character');
  assert.equal(msg('X-A: 1\nX-B: 2'), 'header field value holds a control character', 'a bare LF is inside the value');
  // The first fault in reading order wins, also when the fast scan stopped at a later line.
  assert.equal(msg(`${Array.from({ length: 120 }, (_, i) => `X-${i}: v`).join('\r\n')}\r\nbad line`), `request has more than 100 header fields`);
});
