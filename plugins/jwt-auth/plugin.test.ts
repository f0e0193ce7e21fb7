import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exportJWK, generateKeyPair, SignJWT } from 'jose';
import { createTestHost, type TestOutcome } from '@isomesh/sdk/testing';
import plugin, { parseConfig } from './src/index.ts';

const SECRET = 'jwt-auth-test-secret-0123456789abcdef';
const key = new TextEncoder().encode(SECRET);
const CONFIG = { secret: 'jwt-hmac', audience: 'orders', issuer: 'https://id.example', cookie: 'session', forwardClaims: { sub: 'x-user-id', scope: 'x-user-scope' } };

function sign(claims: Record<string, unknown>, exp: string | number = '5m', k: Uint8Array = key) {
  return new SignJWT(claims).setProtectedHeader({ alg: 'HS256' }).setIssuedAt().setExpirationTime(exp).sign(k);
}
const get = (out: TestOutcome, name: string) => (out.action === 'error' ? undefined : out.headers.find(([k]) => k === name)?.[1]);
const host = (config: Record<string, unknown> = CONFIG) => createTestHost(plugin, { tenant: 'shop', config, secrets: { 'jwt-hmac': SECRET } });

test('a valid bearer token passes and its claims reach the upstream as headers', async () => {
  const token = await sign({ sub: 'u-42', aud: 'orders', iss: 'https://id.example', scope: ['read', 'write'] });
  const out = await host().onRequest({ headers: { authorization: `Bearer ${token}` } });
  assert.equal(out.action, 'continue', JSON.stringify(out));
  assert.equal(get(out, 'x-user-id'), 'u-42');
  assert.equal(get(out, 'x-user-scope'), 'read,write');
  assert.equal(get(out, 'authorization'), `Bearer ${token}`);
});

test('a client cannot spoof the forwarded identity headers, even on skipped paths', async () => {
  const token = await sign({ aud: 'orders', iss: 'https://id.example' });
  const h = host({ ...CONFIG, skipPaths: ['/healthz'] });
  const out = await h.onRequest({ headers: { authorization: `Bearer ${token}`, 'x-user-id': 'admin' } });
  assert.equal(out.action, 'continue');
  assert.equal(get(out, 'x-user-id'), undefined);
  const skipped = await h.onRequest({ path: '/healthz', headers: { 'x-user-id': 'admin' } });
  assert.deepEqual(skipped, { action: 'continue', headers: [] });
  assert.equal((await h.onRequest({ path: '/healthzz' })).action, 'respond');
});

test('the token is also read from the configured cookie; stripToken removes the Authorization header', async () => {
  const token = await sign({ sub: 'c-1', aud: 'orders', iss: 'https://id.example' });
  const out = await host().onRequest({ headers: { cookie: `theme=dark; session=${token}` } });
  assert.equal(get(out, 'x-user-id'), 'c-1');
  const stripped = await host({ ...CONFIG, stripToken: true }).onRequest({ headers: { authorization: `Bearer ${token}` } });
  assert.equal(get(stripped, 'authorization'), undefined);
  assert.equal(get(stripped, 'x-user-id'), 'c-1');
});

test('missing, expired, forged and wrong-audience tokens get 401 with an RFC 6750 challenge', async () => {
  const missing = await host().onRequest();
  assert.equal(missing.action === 'respond' && missing.status, 401);
  assert.equal(get(missing, 'www-authenticate'), 'Bearer realm="shop"');
  const cases: Array<[string, string]> = [
    [await sign({ aud: 'orders', iss: 'https://id.example' }, Math.floor(Date.now() / 1000) - 600), 'token expired'],
    [await sign({ aud: 'orders', iss: 'https://id.example' }, '5m', new TextEncoder().encode('x'.repeat(40))), 'invalid token'],
    [await sign({ aud: 'billing', iss: 'https://id.example' }), 'invalid token'],
    ['Basic dXNlcjpwYXNz', 'missing'],
  ];
  for (const [token, description] of cases) {
    const out = await host().onRequest({ headers: { authorization: token.startsWith('Basic') ? token : `Bearer ${token}` } });
    assert.equal(out.action === 'respond' && out.status, 401, description);
    const expected = description === 'missing' ? 'Bearer realm="shop"' : `Bearer realm="shop", error="invalid_token", error_description="${description}"`;
    assert.equal(get(out, 'www-authenticate'), expected);
  }
});

test('RS256 tokens verify against an inline JWKS', async () => {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  const jwks = { keys: [{ ...(await exportJWK(publicKey)), kid: 'main', alg: 'RS256' }] };
  const token = await new SignJWT({ sub: 'rs-user' }).setProtectedHeader({ alg: 'RS256', kid: 'main' }).setExpirationTime('5m').sign(privateKey);
  const out = await createTestHost(plugin, { config: { jwks, forwardClaims: { sub: 'x-user-id' } } }).onRequest({ headers: { authorization: `Bearer ${token}` } });
  assert.equal(get(out, 'x-user-id'), 'rs-user');
});

test('operator mistakes fail the call (failure policy) instead of answering 401', async () => {
  const token = await sign({ aud: 'orders' });
  const noSecret = await createTestHost(plugin, { config: CONFIG }).onRequest({ headers: { authorization: `Bearer ${token}` } });
  assert.equal(noSecret.action, 'error');
  assert.match(noSecret.action === 'error' ? noSecret.message : '', /"jwt-hmac" is not a secret of this tenant/);
});

test('config is validated with clear errors', () => {
  assert.throws(() => parseConfig({}), /exactly one of "secret".*or "jwks"/);
  assert.throws(() => parseConfig({ secret: 's', jwks: { keys: [] } }), /exactly one/);
  assert.throws(() => parseConfig({ secret: 's', forwardClaims: { sub: 'X User' } }), /forwardClaims\.sub must be a lower-case header name/);
  assert.throws(() => parseConfig({ secret: 's', forwardClaims: { sub: 'authorization' } }), /may not write "authorization"/);
  assert.throws(() => parseConfig({ secret: 's', algorithms: ['none'] }), /unknown algorithm "none"/);
  assert.throws(() => parseConfig({ secret: 's', audiences: 'x' }), /unknown field "audiences"/);
  assert.deepEqual(parseConfig({ secret: 's', audience: 'a' }).verify, { secret: 's', audience: ['a'] });
});
