import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTestHost, type TestOutcome } from '@isomesh/sdk/testing';
import plugin, { allowedOrigin, parseConfig } from './src/index.ts';

const CONFIG = {
  allowOrigins: ['https://app.example.com', 'https://*.example.org', 'http://localhost:3000'],
  allowHeaders: ['content-type', 'x-api-key'],
  exposeHeaders: ['x-request-id'],
  allowCredentials: true,
  maxAgeSec: 300,
};
const headers = (out: TestOutcome) => (out.action === 'error' ? {} : Object.fromEntries(out.headers));

function preflight(origin: string, method = 'PUT', requestHeaders?: string) {
  const h: Record<string, string> = { origin, 'access-control-request-method': method };
  if (requestHeaders !== undefined) h['access-control-request-headers'] = requestHeaders;
  return { method: 'OPTIONS', headers: h };
}

test('preflight from an allowed origin: 204 with the allow-* headers, max-age, credentials and Vary', async () => {
  const host = createTestHost(plugin, { config: CONFIG });
  const out = await host.onRequest(preflight('https://app.example.com', 'PUT', 'Content-Type, X-Api-Key'));
  assert.equal(out.action === 'respond' && out.status, 204);
  assert.deepEqual(headers(out), {
    'access-control-allow-origin': 'https://app.example.com',
    'access-control-allow-methods': 'GET, HEAD, POST, PUT, PATCH, DELETE',
    'access-control-max-age': '300',
    'access-control-allow-headers': 'content-type, x-api-key',
    'access-control-allow-credentials': 'true',
    vary: 'Origin, Access-Control-Request-Method, Access-Control-Request-Headers',
  });
});

test('preflight refused (origin, method or header not allowed): 403 without CORS headers', async () => {
  const host = createTestHost(plugin, { config: CONFIG });
  for (const req of [preflight('https://evil.com'), preflight('https://app.example.com', 'TRACE'), preflight('https://app.example.com', 'GET', 'x-secret')]) {
    const out = await host.onRequest(req);
    assert.equal(out.action === 'respond' && out.status, 403);
    assert.equal(headers(out)['access-control-allow-origin'], undefined);
  }
});

test('wildcard subdomains match only real subdomains with the same scheme and port; "null" never matches', () => {
  const s = parseConfig(CONFIG);
  assert.equal(allowedOrigin(s, 'https://a.example.org'), 'https://a.example.org');
  assert.equal(allowedOrigin(s, 'https://a.b.example.org'), 'https://a.b.example.org');
  for (const bad of ['https://example.org', 'https://evilexample.org', 'http://a.example.org', 'https://a.example.org:8443', 'https://app.example.com.evil.com', 'null', 'http://localhost:3001', 'https://*.example.org']) {
    assert.equal(allowedOrigin(s, bad), undefined, bad);
  }
  assert.equal(allowedOrigin(s, 'http://localhost:3000'), 'http://localhost:3000');
});

test('actual request: the response echoes the allowed origin, with credentials, exposed headers and Vary: Origin', async () => {
  const host = createTestHost(plugin, { config: CONFIG });
  assert.equal((await host.onRequest({ requestId: 'r1', headers: { origin: 'https://shop.example.org' } })).action, 'continue');
  const res = await host.onResponse({ requestId: 'r1', headers: { vary: 'Accept-Encoding', 'access-control-allow-origin': '*' } });
  assert.deepEqual(headers(res), {
    vary: 'Accept-Encoding, Origin',
    'access-control-allow-origin': 'https://shop.example.org',
    'access-control-allow-credentials': 'true',
    'access-control-expose-headers': 'x-request-id',
  });
  // A disallowed origin gets no CORS headers — including the upstream's permissive ones — but still Vary.
  await host.onRequest({ requestId: 'r2', headers: { origin: 'https://evil.com' } });
  assert.deepEqual(headers(await host.onResponse({ requestId: 'r2', headers: { 'access-control-allow-origin': '*' } })), { vary: 'Origin' });
});

test('allowOrigins ["*"] answers "*" without Vary; credentials with "*" are refused at config time', async () => {
  const host = createTestHost(plugin, { config: { allowOrigins: ['*'] } });
  const out = await host.onRequest(preflight('https://anything.test', 'GET'));
  assert.equal(headers(out)['access-control-allow-origin'], '*');
  assert.equal(headers(out).vary, undefined);
  assert.throws(() => parseConfig({ allowOrigins: ['*'], allowCredentials: true }), /allowCredentials cannot be used with allowOrigins \["\*"\]/);
});

test('config is validated with clear errors', () => {
  assert.throws(() => parseConfig({}), /allowOrigins must be a non-empty array/);
  assert.throws(() => parseConfig({ allowOrigins: ['https://app.example.com/'] }), /is not an origin like/);
  assert.throws(() => parseConfig({ allowOrigins: ['https://*.com'] }), /every subdomain of a top-level domain/);
  assert.throws(() => parseConfig({ allowOrigins: ['*', 'https://a.b'] }), /cannot be combined/);
  assert.throws(() => parseConfig({ allowOrigins: ['https://a.b'], maxAgeSec: -1 }), /maxAgeSec must be/);
  assert.throws(() => parseConfig({ allowOrigins: ['https://a.b'], origins: [] }), /unknown field "origins"/);
});
