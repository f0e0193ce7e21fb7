// The synchronous HMAC path may only ever say "valid" where jose says valid, with the same payload
// and header; everything else it leaves to jose. Checked on a corpus of tokens and options built to
// hit every claim rule, header shape and encoding edge (differential: jose is the reference).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac, createSecretKey } from 'node:crypto';
import { jwtVerify } from 'jose';
import { HostCapabilities } from './host-capabilities.ts';
import { SignedTokens, signedToken, verifyHmacJwt, type HmacVerifyOptions } from './jwt-hmac.ts';

const SECRET = 'differential-test-secret-0123456789abcdef';
const OTHER = 'another-secret-entirely-0123456789abcdef!';
const key = createSecretKey(Buffer.from(SECRET));
const NOW = 1_800_000_000;

const b64 = (x: string | Buffer) => Buffer.from(x).toString('base64url');
function token(header: unknown, payload: unknown, opts: { secret?: string; alg?: string; sig?: (s: string) => string; raw?: [string, string] } = {}): string {
  const h = opts.raw?.[0] ?? b64(JSON.stringify(header));
  const p = opts.raw?.[1] ?? b64(typeof payload === 'string' ? payload : JSON.stringify(payload));
  const alg = ({ HS256: 'sha256', HS384: 'sha384', HS512: 'sha512' } as Record<string, string>)[opts.alg ?? 'HS256'] ?? 'sha256';
  const sig = createHmac(alg, opts.secret ?? SECRET).update(`${h}.${p}`).digest('base64url');
  return `${h}.${p}.${opts.sig ? opts.sig(sig) : sig}`;
}

const claims = { sub: 'u1', iss: 'https://id', aud: 'api', iat: NOW - 10, exp: NOW + 600 };
const tokens: Array<[string, string]> = [
  ['valid', token({ alg: 'HS256', typ: 'JWT' }, claims)],
  ['valid-no-typ', token({ alg: 'HS256' }, claims)],
  ['valid-kid', token({ alg: 'HS256', kid: 'k1', extra: [1, { a: 2 }] }, claims)],
  ['hs384', token({ alg: 'HS384' }, claims, { alg: 'HS384' })],
  ['hs512', token({ alg: 'HS512' }, claims, { alg: 'HS512' })],
  ['alg-none', token({ alg: 'none' }, claims)],
  ['alg-rs256', token({ alg: 'RS256' }, claims)],
  ['alg-missing', token({ typ: 'JWT' }, claims)],
  ['alg-number', token({ alg: 256 }, claims)],
  ['header-mismatch-alg', token({ alg: 'HS384' }, claims)],
  ['other-secret', token({ alg: 'HS256' }, claims, { secret: OTHER })],
  ['sig-truncated', token({ alg: 'HS256' }, claims, { sig: (s) => s.slice(0, -2) })],
  ['sig-flipped', token({ alg: 'HS256' }, claims, { sig: (s) => (s[0] === 'A' ? 'B' : 'A') + s.slice(1) })],
  ['sig-empty', token({ alg: 'HS256' }, claims, { sig: () => '' })],
  ['sig-padded', token({ alg: 'HS256' }, claims, { sig: (s) => `${s}=` })],
  ['sig-std-alphabet', token({ alg: 'HS256' }, claims, { sig: (s) => s.replace(/-/g, '+').replace(/_/g, '/') })],
  ['crit-b64', token({ alg: 'HS256', crit: ['b64'], b64: false }, claims)],
  ['crit-unknown', token({ alg: 'HS256', crit: ['x'] }, claims)],
  ['b64-false-no-crit', token({ alg: 'HS256', b64: false }, claims)],
  ['expired', token({ alg: 'HS256' }, { ...claims, exp: NOW - 5 })],
  ['exp-now', token({ alg: 'HS256' }, { ...claims, exp: NOW })],
  ['exp-string', token({ alg: 'HS256' }, { ...claims, exp: String(NOW + 60) })],
  ['nbf-future', token({ alg: 'HS256' }, { ...claims, nbf: NOW + 30 })],
  ['nbf-past', token({ alg: 'HS256' }, { ...claims, nbf: NOW - 30 })],
  ['iat-string', token({ alg: 'HS256' }, { ...claims, iat: 'yesterday' })],
  ['iat-future', token({ alg: 'HS256' }, { ...claims, iat: NOW + 3600 })],
  ['no-exp', token({ alg: 'HS256' }, { sub: 'u1', iss: 'https://id', aud: 'api' })],
  ['aud-array', token({ alg: 'HS256' }, { ...claims, aud: ['x', 'api'] })],
  ['aud-other', token({ alg: 'HS256' }, { ...claims, aud: 'other' })],
  ['aud-number', token({ alg: 'HS256' }, { ...claims, aud: 7 })],
  ['iss-other', token({ alg: 'HS256' }, { ...claims, iss: 'https://evil' })],
  ['no-iss', token({ alg: 'HS256' }, { sub: 'u1', aud: 'api', exp: NOW + 60 })],
  ['sub-other', token({ alg: 'HS256' }, { ...claims, sub: 'u2' })],
  ['proto-claims', token({ alg: 'HS256' }, '{"__proto__":{"iss":"https://id"},"aud":"api","sub":"u1","exp":1800000600}')],
  ['payload-array', token({ alg: 'HS256' }, [1, 2])],
  ['payload-string', token({ alg: 'HS256' }, '"just a string"')],
  ['payload-not-json', token({ alg: 'HS256' }, 'not json')],
  ['payload-bad-utf8', token({ alg: 'HS256' }, '', { raw: [b64(JSON.stringify({ alg: 'HS256' })), Buffer.from([0x7b, 0x22, 0xff, 0x22, 0x3a, 0x31, 0x7d]).toString('base64url')] })],
  ['header-array', token([{ alg: 'HS256' }], claims)],
  ['header-not-json', token({}, claims, { raw: [b64('nope'), b64(JSON.stringify(claims))] })],
  ['unicode-claims', token({ alg: 'HS256' }, { ...claims, name: 'Zoë 🚀', sub: 'u1' })],
  ['len-mod-4-is-1', token({ alg: 'HS256' }, claims, { raw: [b64(JSON.stringify({ alg: 'HS256' })), `${b64(JSON.stringify(claims))}x`] })],
  ['two-parts', `${b64('{"alg":"HS256"}')}.${b64(JSON.stringify(claims))}`],
  ['four-parts', `${token({ alg: 'HS256' }, claims)}.x`],
  ['garbage', 'a.b.c'],
];

const base = { algorithms: ['HS256', 'HS384', 'HS512'], currentDate: new Date(NOW * 1000) };
const optionSets: Array<[string, HmacVerifyOptions]> = [
  ['plain', base],
  ['hs256-only', { ...base, algorithms: ['HS256'] }],
  ['aud', { ...base, audience: ['api'] }],
  ['aud-other', { ...base, audience: ['zzz', 'yyy'] }],
  ['iss', { ...base, issuer: ['https://id'] }],
  ['iss-list', { ...base, issuer: ['https://a', 'https://id'] }],
  ['sub', { ...base, subject: 'u1' }],
  ['required', { ...base, requiredClaims: ['exp', 'iat'] }],
  ['required-name', { ...base, requiredClaims: ['name'] }],
  ['tolerance', { ...base, clockTolerance: 60 }],
  ['all', { ...base, audience: ['api'], issuer: ['https://id'], subject: 'u1', requiredClaims: ['iat'], clockTolerance: 5 }],
];

test('verifyHmacJwt agrees with jose: valid only where jose is, with the same payload and header', async () => {
  let fast = 0;
  for (const [tname, t] of tokens) {
    for (const [oname, o] of optionSets) {
      const mine = verifyHmacJwt(t, key, o);
      let jose: { payload: unknown; protectedHeader: unknown } | undefined;
      try {
        jose = await jwtVerify(t, new TextEncoder().encode(SECRET), { ...o, algorithms: [...o.algorithms] } as never);
      } catch {
        jose = undefined;
      }
      if (mine === undefined) continue; // jose decides (and produces the error the plugin sees)
      fast++;
      assert.ok(jose !== undefined, `${tname} × ${oname}: the fast path accepted a token jose refuses`);
      assert.deepEqual(mine.payload, jose.payload, `${tname} × ${oname}: payload`);
      assert.deepEqual(mine.protectedHeader, jose.protectedHeader, `${tname} × ${oname}: header`);
    }
  }
  // The corpus exercises the fast path, not only its refusals.
  assert.ok(fast >= 40, `fast path accepted ${fast} cases`);
});

test('a cached signature is reused only for its key and an allowed algorithm; claims are checked on every call', async () => {
  const caps = new HostCapabilities();
  const env = (now: number) => ({ secrets: { k: SECRET, other: OTHER }, now: now * 1000, wallLeftMs: 1000 });
  const t = token({ alg: 'HS256' }, { ...claims, exp: NOW + 60 });
  const call = (options: Record<string, unknown>, now = NOW) => caps.performSync([{ id: 1, name: 'jwt.verify', args: { token: t, options } }], env(now));
  assert.equal(call({ secret: 'k' })?.[0]?.ok, true);
  // Cached now; the same token after its expiry is not answered by the fast path (jose says expired).
  assert.equal(call({ secret: 'k' }, NOW + 120), undefined);
  const [late] = await caps.perform([{ id: 2, name: 'jwt.verify', args: { token: t, options: { secret: 'k' } } }], env(NOW + 120));
  assert.equal(late?.ok === false && late.error.code, 'ERR_JWT_EXPIRED');
  // Another key, or an algorithm list that excludes HS256: not from the cache.
  assert.equal(call({ secret: 'other' }), undefined);
  assert.equal(call({ secret: 'k', algorithms: ['HS512'] }), undefined);
  const [alg] = await caps.perform([{ id: 3, name: 'jwt.verify', args: { token: t, options: { secret: 'k', algorithms: ['HS512'] } } }], env(NOW));
  assert.equal(alg?.ok === false && alg.error.code, 'ERR_JWT_ALG_NOT_ALLOWED');
  // A claim option that fails is checked against the cached claims too.
  assert.equal(call({ secret: 'k', audience: 'zzz' }), undefined);
  // performSyncJson hands the guest the same value as performSync.
  const json = caps.performSyncJson([{ id: 4, name: 'jwt.verify', args: { token: t, options: { secret: 'k' } } }], env(NOW));
  assert.deepEqual(JSON.parse(json ?? 'null'), [{ id: 4, ok: true, value: { payload: { ...claims, exp: NOW + 60 }, header: { alg: 'HS256' } } }]);
  caps.dispose();
});

test('the token cache is bounded and keyed by key identity', () => {
  const cache = new SignedTokens();
  const t = token({ alg: 'HS256' }, claims);
  const entry = signedToken(t, key, ['HS256']);
  assert.ok(entry !== undefined);
  cache.add(t, entry);
  assert.equal(cache.get(t, key), entry);
  assert.equal(cache.get(t, createSecretKey(Buffer.from(SECRET))), undefined, 'an equal but different KeyObject is not trusted');
  for (let i = 0; i < 1100; i++) cache.add(`${t}${i}`, entry);
  assert.equal(cache.get(t, key), undefined, 'the oldest entries go when it is full');
  assert.ok(Object.isFrozen(entry.claims) && Object.isFrozen(entry.header));
});
