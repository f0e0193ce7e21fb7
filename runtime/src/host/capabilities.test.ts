import { test } from 'node:test';
import assert from 'node:assert/strict';
import { exportJWK, generateKeyPair, SignJWT, type JWK } from 'jose';
import { createTestHost } from '@isomesh/sdk/testing';
import { definePlugin, type Plugin } from '@isomesh/sdk';
import { HostCapabilities } from './capabilities.ts';
import { compilePlugin } from './compiler.ts';
import type { RequestOutcome } from './contract.ts';
import { newHost, oneRequest, request, tenantConfig } from './fixtures.ts';
import { TenantSandbox, type InvokeOutcome } from './sandbox.ts';

const { host } = newHost();
test.after(() => host.close());

const SECRET = 'a-shared-secret-of-at-least-32-bytes!!';
const OTHER_SECRET = 'another-secret-of-at-least-32-bytes!!!';
const enc = (s: string) => new TextEncoder().encode(s);

async function hs256(claims: Record<string, unknown>, opts: { secret?: string; exp?: number | string; alg?: string } = {}) {
  const jwt = new SignJWT(claims).setProtectedHeader({ alg: opts.alg ?? 'HS256' }).setIssuedAt();
  if (opts.exp !== undefined) jwt.setExpirationTime(opts.exp);
  return jwt.sign(enc(opts.secret ?? SECRET));
}

const rsa = await generateKeyPair('RS256', { extractable: true });
const rsaOther = await generateKeyPair('RS256', { extractable: true });
const publicJwk: JWK = { ...(await exportJWK(rsa.publicKey)), kid: 'k1', alg: 'RS256', use: 'sig' };
const JWKS = { keys: [publicJwk] };
async function rs256(claims: Record<string, unknown>, key = rsa.privateKey, kid = 'k1') {
  return new SignJWT(claims).setProtectedHeader({ alg: 'RS256', kid }).setIssuedAt().setExpirationTime('5m').sign(key);
}

// The plugin an author would write: await the verification, answer 401 with the reason on failure.
const VERIFIER = `import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  async onRequest(req, ctx) {
    const token = (req.headers.get('authorization') ?? '').replace(/^Bearer /, '');
    try {
      const { payload, header } = await ctx.jwt.verify(token, ctx.config.verify);
      req.headers.set('x-sub', String(payload.sub));
      req.headers.set('x-alg', header.alg);
    } catch (e) {
      return ctx.respond(401, {
        headers: { 'www-authenticate': 'Bearer', 'x-error': e.name + ':' + e.code + ':' + (e.claim ?? '') },
        body: e.message,
      });
    }
  },
});`;

function header(out: RequestOutcome, name: string): string | undefined {
  return out.action === 'fail' ? undefined : out.headers.find(([k]) => k === name)?.[1];
}

async function tenant(name: string, verify: Record<string, unknown>, secrets: Record<string, string> = { 'jwt-key': SECRET }, generation = 1) {
  host.configure(await tenantConfig(host, name, [{ name: 'verifier', source: VERIFIER, config: { verify } }], { secrets, generation }));
}

function bearer(token: string) {
  return request({ headers: [['authorization', `Bearer ${token}`]] });
}

await tenant('hs', { secret: 'jwt-key', audience: 'api', issuer: 'https://issuer.test' });

test('a valid HS256 token resolves with its claims and header', async () => {
  const token = await hs256({ sub: 'alice', aud: 'api', iss: 'https://issuer.test' }, { exp: '5m' });
  const out = await oneRequest(host, 'hs', bearer(token));
  assert.equal(out.action, 'continue', JSON.stringify(out));
  assert.equal(header(out, 'x-sub'), 'alice');
  assert.equal(header(out, 'x-alg'), 'HS256');
});

test('an expired token rejects with ERR_JWT_EXPIRED and the plugin answers 401', async () => {
  const token = await hs256({ sub: 'alice', aud: 'api', iss: 'https://issuer.test' }, { exp: Math.floor(Date.now() / 1000) - 60 });
  const out = await oneRequest(host, 'hs', bearer(token));
  assert.equal(out.action, 'respond', JSON.stringify(out));
  assert.equal(out.action === 'respond' && out.status, 401);
  assert.equal(header(out, 'x-error'), 'JwtVerifyError:ERR_JWT_EXPIRED:exp');
  assert.equal(header(out, 'www-authenticate'), 'Bearer');
  assert.match(out.action === 'respond' ? out.body : '', /^jwt\.verify: token expired/);
});

test('a token for another audience rejects with ERR_JWT_CLAIM_INVALID on "aud"', async () => {
  const token = await hs256({ sub: 'alice', aud: 'billing', iss: 'https://issuer.test' }, { exp: '5m' });
  const out = await oneRequest(host, 'hs', bearer(token));
  assert.equal(header(out, 'x-error'), 'JwtVerifyError:ERR_JWT_CLAIM_INVALID:aud');
});

test('a token signed with another key rejects with ERR_JWT_SIGNATURE_INVALID; garbage is ERR_JWT_MALFORMED', async () => {
  const forged = await hs256({ sub: 'mallory', aud: 'api', iss: 'https://issuer.test' }, { exp: '5m', secret: OTHER_SECRET });
  assert.equal(header(await oneRequest(host, 'hs', bearer(forged)), 'x-error'), 'JwtVerifyError:ERR_JWT_SIGNATURE_INVALID:');
  const [h, p] = forged.split('.');
  const tampered = `${h}.${Buffer.from(JSON.stringify({ sub: 'root', aud: 'api', iss: 'https://issuer.test' })).toString('base64url')}.${forged.split('.')[2]}`;
  assert.equal(header(await oneRequest(host, 'hs', bearer(tampered)), 'x-error'), 'JwtVerifyError:ERR_JWT_SIGNATURE_INVALID:');
  assert.ok(p);
  assert.equal(header(await oneRequest(host, 'hs', bearer('not-a-jwt')), 'x-error'), 'JwtVerifyError:ERR_JWT_MALFORMED:');
});

test('RS256 through an inline JWKS; unknown kid, foreign key and HS256-against-JWKS (alg confusion) are refused', async () => {
  await tenant('rs', { jwks: JWKS, audience: 'api' }, {});
  const ok = await oneRequest(host, 'rs', bearer(await rs256({ sub: 'bob', aud: 'api' })));
  assert.equal(header(ok, 'x-sub'), 'bob', JSON.stringify(ok));
  assert.equal(header(ok, 'x-alg'), 'RS256');
  const unknownKid = await oneRequest(host, 'rs', bearer(await rs256({ sub: 'bob', aud: 'api' }, rsaOther.privateKey, 'k2')));
  assert.equal(header(unknownKid, 'x-error'), 'JwtVerifyError:ERR_JWT_NO_MATCHING_KEY:');
  const foreign = await oneRequest(host, 'rs', bearer(await rs256({ sub: 'bob', aud: 'api' }, rsaOther.privateKey, 'k1')));
  assert.equal(header(foreign, 'x-error'), 'JwtVerifyError:ERR_JWT_SIGNATURE_INVALID:');
  // An attacker signs HS256 with the *public* key as the HMAC secret: must never verify.
  const confused = await new SignJWT({ sub: 'root', aud: 'api' })
    .setProtectedHeader({ alg: 'HS256', kid: 'k1' })
    .sign(enc(JSON.stringify(publicJwk)));
  assert.equal(header(await oneRequest(host, 'rs', bearer(confused)), 'x-error'), 'JwtVerifyError:ERR_JWT_ALG_NOT_ALLOWED:');
});

test("a tenant cannot verify with another tenant's secret: the name resolves only among its own", async () => {
  await tenant('owner', { secret: 'jwt-key', audience: 'api' }, { 'jwt-key': SECRET });
  await tenant('thief', { secret: 'jwt-key', audience: 'api' }, {});
  const token = await hs256({ sub: 'alice', aud: 'api' }, { exp: '5m' });
  assert.equal(header(await oneRequest(host, 'owner', bearer(token)), 'x-sub'), 'alice');
  const stolen = await oneRequest(host, 'thief', bearer(token));
  assert.equal(header(stolen, 'x-error'), 'JwtVerifyError:ERR_JWT_OPTIONS:');
  assert.match(stolen.action === 'respond' ? stolen.body : '', /"jwt-key" is not a secret of this tenant/);
  // Once the thief tenant has its own secret of that name, its own value (not the owner's) is used.
  await tenant('thief', { secret: 'jwt-key', audience: 'api' }, { 'jwt-key': OTHER_SECRET }, 2);
  assert.equal(header(await oneRequest(host, 'thief', bearer(token)), 'x-error'), 'JwtVerifyError:ERR_JWT_SIGNATURE_INVALID:');
});

test('bad options reject with ERR_JWT_OPTIONS naming the problem (short secret, private JWKS, foreign alg)', async () => {
  await tenant('opts-short', { secret: 'short' }, { short: 'too-short' });
  const short = await oneRequest(host, 'opts-short', bearer(await hs256({ sub: 'a' })));
  assert.match(short.action === 'respond' ? short.body : '', /shorter than 32 bytes/);
  const privateJwk = { ...(await exportJWK(rsa.privateKey)), kid: 'k1' };
  await tenant('opts-private', { jwks: { keys: [privateJwk] } }, {});
  const priv = await oneRequest(host, 'opts-private', bearer(await rs256({ sub: 'a' })));
  assert.match(priv.action === 'respond' ? priv.body : '', /private key material/);
  await tenant('opts-alg', { secret: 'jwt-key', algorithms: ['RS256'] });
  const alg = await oneRequest(host, 'opts-alg', bearer(await hs256({ sub: 'a' })));
  assert.match(alg.action === 'respond' ? alg.body : '', /RS256 cannot be used with a shared secret/);
});

test('a verified token is answered inside the isolate afterwards; its exp passing, or a new secret value, sends it to the host again', async (t) => {
  const { host: inline } = newHost({ mode: 'inline' });
  t.after(() => inline.close());
  // Count the verifications the host answers (inline mode: in this process): at once when the token
  // is good (performSyncJson gives the answer), else through jose (perform) for the exact error.
  let performed = 0;
  const proto = HostCapabilities.prototype;
  const { performSyncJson, perform } = proto;
  proto.performSyncJson = function (...args) {
    const answer = performSyncJson.apply(this, args);
    if (answer !== undefined) performed++;
    return answer;
  };
  proto.perform = function (...args) {
    performed++;
    return perform.apply(this, args);
  };
  t.after(() => Object.assign(proto, { performSyncJson, perform }));
  const configure = async (secret: string, generation: number) =>
    inline.configure(await tenantConfig(inline, 'kept', [{ name: 'verifier', source: VERIFIER, config: { verify: { secret: 'jwt-key', audience: 'api' } } }], { secrets: { 'jwt-key': secret }, generation }));
  await configure(SECRET, 1);
  const token = await hs256({ sub: 'alice', aud: 'api' }, { exp: '5m' });
  for (let i = 0; i < 5; i++) assert.equal(header(await oneRequest(inline, 'kept', bearer(token), `k-${i}`), 'x-sub'), 'alice');
  assert.equal(performed, 1, 'five requests with one token: the host verified it once');

  // A token about to expire is kept only until its exp: then the host is asked and refuses it.
  const exp = Math.floor(Date.now() / 1000) + 2;
  const soon = await hs256({ sub: 'bob', aud: 'api' }, { exp });
  assert.equal(header(await oneRequest(inline, 'kept', bearer(soon), 's-1'), 'x-sub'), 'bob');
  assert.equal(header(await oneRequest(inline, 'kept', bearer(soon), 's-2'), 'x-sub'), 'bob');
  assert.equal(performed, 2);
  while (Date.now() / 1000 < exp) await new Promise((r) => setTimeout(r, 50));
  assert.equal(header(await oneRequest(inline, 'kept', bearer(soon), 's-3'), 'x-error'), 'JwtVerifyError:ERR_JWT_EXPIRED:exp');
  assert.equal(performed, 3, 'the expired token went to the host');

  // The tenant's secret changes value: the token signed with the old one is checked again, and fails.
  await configure(OTHER_SECRET, 2);
  assert.equal(header(await oneRequest(inline, 'kept', bearer(token), 'r-1'), 'x-error'), 'JwtVerifyError:ERR_JWT_SIGNATURE_INVALID:');
  assert.equal(performed, 4);
});

test('concurrent verifications in one isolate each get their own result', async () => {
  const tokens = await Promise.all(['u1', 'u2', 'u3', 'u4', 'u5'].map((sub) => hs256({ sub, aud: 'api', iss: 'https://issuer.test' }, { exp: '5m' })));
  const outs = await Promise.all(tokens.map((t, i) => oneRequest(host, 'hs', bearer(t), `c-${i}`)));
  assert.deepEqual(outs.map((o) => header(o, 'x-sub')), ['u1', 'u2', 'u3', 'u4', 'u5']);
});

test('a never-ending chain of capability calls is bounded (rounds), fails only that call, and the tenant keeps working', async () => {
  const loop = `export default { async onRequest(req, ctx) {
    for (let i = 0; ; i++) { try { await ctx.jwt.verify('x.y.z', { secret: 'jwt-key' }); } catch {} }
  } };`;
  const loopSleep = `export default { async onRequest(req, ctx) { for (;;) await ctx.sleep(0); } };`;
  host.configure(await tenantConfig(host, 'looper', [{ name: 'loop', source: loop }], { secrets: { 'jwt-key': SECRET }, quota: { cpuMsPerRequest: 200 } }));
  const t0 = performance.now();
  const out = await oneRequest(host, 'looper');
  assert.equal(out.action, 'fail');
  assert.equal(out.action === 'fail' && out.code, 'ISOMESH_ERR_PLUGIN_TIMEOUT');
  assert.match(out.action === 'fail' ? out.message : '', /more than 8 rounds of capability calls/);
  assert.ok(performance.now() - t0 < 2000);
  host.configure(await tenantConfig(host, 'looper', [{ name: 'loop', source: loopSleep }], { quota: { cpuMsPerRequest: 200 }, generation: 2 }));
  const slept = await oneRequest(host, 'looper');
  assert.match(slept.action === 'fail' ? slept.message : '', /rounds of capability calls/);
  host.configure(await tenantConfig(host, 'looper', [{ name: 'ok', source: VERIFIER, config: { verify: { secret: 'jwt-key' } } }], { secrets: { 'jwt-key': SECRET }, generation: 3 }));
  assert.equal(header(await oneRequest(host, 'looper', bearer(await hs256({ sub: 'z' }))), 'x-sub'), 'z');
});

test('capability time counts against wall time, not the tenant CPU: a 120 ms sleep passes a 20 ms CPU limit', async () => {
  const sandbox = new TenantSandbox({ tenant: 'sleepy', memoryMb: 32, events: { onLoadError() {}, onIsolateLost() {}, onIsolateRebuilt() {} } });
  try {
    const c = await compilePlugin({ source: `export default { async onRequest(req, ctx) { await ctx.sleep(120); req.headers.set('x-slept', '1'); } };`, language: 'typescript', maxBundleBytes: 1 << 20 });
    sandbox.retain({ key: 's@1#d', plugin: 's', version: 1, digest: 'd', code: c.code });
    const input = { hook: 'onRequest', requestId: 'r1', now: Date.now(), configId: 1, req: request() };
    const t0 = performance.now();
    const out = (await sandbox.invoke('s@1#d', input, {}, 20)) as InvokeOutcome;
    const wall = performance.now() - t0;
    assert.equal(out.ok, true, JSON.stringify(out));
    assert.ok(wall >= 115, `slept ${wall} ms`);
    assert.ok(out.cpuNs < 20e6, `cpu ${out.cpuNs} ns`);
    // Past the capability wall budget the sleep is refused up front rather than timing out.
    const short = (await sandbox.invoke('s@1#d', { ...input, requestId: 'r2', configId: 2 }, {}, 20, { capabilityWallMs: 50 })) as InvokeOutcome;
    assert.equal(short.ok, true);
    assert.match(short.ok ? short.result : '', /ctx\.sleep\(120\) exceeds the 50 ms of capability wall time/);
  } finally {
    sandbox.dispose();
  }
});

test('disposing a sandbox ends pending sleeps at once', async () => {
  const caps = new HostCapabilities();
  const pending = caps.perform([{ id: 1, name: 'timer.sleep', args: { ms: 60_000 } }], { secrets: {}, now: Date.now(), wallLeftMs: 60_000 });
  caps.dispose();
  const [r] = await pending;
  assert.deepEqual(r, { id: 1, ok: false, error: { code: 'ERR_CAPABILITY_FAILED', message: 'ctx.sleep: the tenant sandbox is shutting down' } });
});

test('guest code still reaches no host reference while a capability is in flight or after it', async () => {
  const probe = `export default { async onRequest(req, ctx) {
    const seen = [];
    const visit = new Set();
    const walk = (obj, path, depth) => {
      if (obj === null || (typeof obj !== 'object' && typeof obj !== 'function') || visit.has(obj) || depth > 4) return;
      visit.add(obj);
      for (const k of Reflect.ownKeys(obj)) {
        let v; try { v = obj[k]; } catch { continue; }
        const ctor = v && v.constructor && v.constructor.name;
        if (/^(Reference|ExternalCopy|Callback|NativeModule|Isolate|Context)$/.test(String(ctor))) seen.push(path + '.' + String(k));
        if (typeof v === 'string' && v.includes('${SECRET}')) seen.push('secret:' + path + '.' + String(k));
        walk(v, path + '.' + String(k), depth + 1);
      }
    };
    const p = ctx.jwt.verify(req.headers.get('x-token'), { secret: 'jwt-key' });
    walk(globalThis, 'globalThis', 0); walk(ctx, 'ctx', 0); walk(p, 'promise', 0);
    const r = await p;
    walk(r, 'result', 0); walk(globalThis, 'globalThis', 0);
    req.headers.set('x-found', seen.join(',') || 'none');
    req.headers.set('x-sub', r.payload.sub);
  } };`;
  host.configure(await tenantConfig(host, 'probe-caps', [{ name: 'probe', source: probe }], { secrets: { 'jwt-key': SECRET }, quota: { cpuMsPerRequest: 500 } }));
  const out = await oneRequest(host, 'probe-caps', request({ headers: [['x-token', await hs256({ sub: 'p' })]] }));
  assert.equal(header(out, 'x-sub'), 'p', JSON.stringify(out));
  assert.equal(header(out, 'x-found'), 'none');
});

// createTestHost performs the same capabilities in-process: one matrix through both must agree.
test('createTestHost and the production sandbox agree on every verification outcome', async () => {
  const now = Math.floor(Date.now() / 1000);
  const cases: Array<[string, string, Record<string, unknown>]> = [
    ['valid', await hs256({ sub: 's', aud: 'api' }, { exp: '5m' }), { secret: 'jwt-key', audience: 'api' }],
    ['expired', await hs256({ sub: 's' }, { exp: now - 120 }), { secret: 'jwt-key' }],
    ['tolerated', await hs256({ sub: 's' }, { exp: now - 5 }), { secret: 'jwt-key', clockTolerance: 60 }],
    ['aud', await hs256({ sub: 's', aud: 'x' }), { secret: 'jwt-key', audience: 'api' }],
    ['iss', await hs256({ sub: 's', iss: 'evil' }), { secret: 'jwt-key', issuer: ['good'] }],
    ['required', await hs256({ sub: 's' }), { secret: 'jwt-key', requiredClaims: ['email'] }],
    ['signature', await hs256({ sub: 's' }, { secret: OTHER_SECRET }), { secret: 'jwt-key' }],
    ['hs512', await hs256({ sub: 's' }, { alg: 'HS512' }), { secret: 'jwt-key', algorithms: ['HS256'] }],
    ['missing-secret', await hs256({ sub: 's' }), { secret: 'nope' }],
    ['both', await hs256({ sub: 's' }), { secret: 'jwt-key', jwks: JWKS }],
    ['rs256', await rs256({ sub: 's' }), { jwks: JWKS }],
    ['kid', await rs256({ sub: 's' }, rsaOther.privateKey, 'k9'), { jwks: JWKS }],
    ['malformed', 'a.b', { secret: 'jwt-key' }],
  ];
  const compiled = await compilePlugin({ source: VERIFIER, language: 'typescript', maxBundleBytes: 1 << 20 });
  const sandbox = new TenantSandbox({ tenant: 'parity', memoryMb: 32, events: { onLoadError() {}, onIsolateLost() {}, onIsolateRebuilt() {} } });
  sandbox.setSecrets({ 'jwt-key': SECRET });
  sandbox.retain({ key: 'v@1#d', plugin: 'v', version: 1, digest: 'd', code: compiled.code });
  // The same plugin, loaded in-process the way the CLI's test runner does it.
  const mod = { exports: {} as Record<string, unknown> };
  new Function('module', 'exports', 'require', compiled.code)(mod, mod.exports, () => ({ definePlugin }));
  const plugin = (mod.exports.default ?? mod.exports) as Plugin;
  try {
    for (const [i, [name, token, verify]] of cases.entries()) {
      const req = { ...request(), headers: [['authorization', `Bearer ${token}`]] as Array<[string, string]> };
      const prod = (await sandbox.invoke('v@1#d', { hook: 'onRequest', requestId: name, now: Date.now(), configId: i + 1, req }, { verify }, 200)) as InvokeOutcome;
      assert.equal(prod.ok, true, `${name}: ${JSON.stringify(prod)}`);
      const p = JSON.parse(prod.ok ? prod.result : '{}') as { action: string; status?: number; headers?: Array<[string, string]>; body?: string };
      const local = await createTestHost(plugin, { config: { verify }, secrets: { 'jwt-key': SECRET } }).onRequest({ headers: req.headers });
      const pick = (o: { action: string; headers?: Array<[string, string]>; body?: string }) => ({
        action: o.action,
        error: o.headers?.find(([k]) => k === 'x-error')?.[1],
        sub: o.headers?.find(([k]) => k === 'x-sub')?.[1],
        body: o.body,
      });
      assert.deepEqual(pick(local as never), pick(p), name);
      assert.equal(local.action, name === 'valid' || name === 'tolerated' || name === 'rs256' ? 'continue' : 'respond', name);
    }
  } finally {
    sandbox.dispose();
  }
});

test('onIdle tells a scheduler when a call waits (so the tenant can run another); CPU stays per call', async () => {
  const sandbox = new TenantSandbox({ tenant: 'idle', memoryMb: 32, events: { onLoadError() {}, onIsolateLost() {}, onIsolateRebuilt() {} } });
  try {
    const c = await compilePlugin({
      source: `export default { async onRequest(req, ctx) { if (req.path === '/slow') await ctx.sleep(50); req.headers.set('x-path', req.path); } };`,
      language: 'typescript',
      maxBundleBytes: 1 << 20,
    });
    sandbox.retain({ key: 'i@1#d', plugin: 'i', version: 1, digest: 'd', code: c.code });
    let idle = 0;
    const input = (path: string) => ({ hook: 'onRequest', requestId: path, now: Date.now(), configId: 1, req: request({ path }) });
    const slow = sandbox.invoke('i@1#d', input('/slow'), {}, 50, { onIdle: () => idle++ });
    assert.ok(slow instanceof Promise);
    assert.equal(idle, 1);
    // While the slow call sleeps, another call of the tenant runs to completion synchronously.
    const fast = sandbox.invoke('i@1#d', input('/fast'), {}, 50, { onIdle: () => idle++ });
    assert.ok(!(fast instanceof Promise));
    assert.match(fast.ok ? fast.result : '', /"x-path","\/fast"/);
    const done = await slow;
    assert.match(done.ok ? done.result : '', /"x-path","\/slow"/);
    assert.equal(idle, 1);
  } finally {
    sandbox.dispose();
  }
});

test('the CPU limit still applies after a capability: a loop after await ctx.sleep times out and is cleaned up', async () => {
  const spin = `export default { async onRequest(req, ctx) { await ctx.sleep(1); for (;;) {} } };`;
  host.configure(await tenantConfig(host, 'spinner', [{ name: 'spin', source: spin }], { quota: { cpuMsPerRequest: 30 } }));
  const out = await oneRequest(host, 'spinner');
  assert.equal(out.action === 'fail' && out.code, 'ISOMESH_ERR_PLUGIN_TIMEOUT', JSON.stringify(out));
  host.configure(await tenantConfig(host, 'spinner', [{ name: 'ok', source: VERIFIER, config: { verify: { secret: 'jwt-key' } } }], { secrets: { 'jwt-key': SECRET }, generation: 2 }));
  assert.equal(header(await oneRequest(host, 'spinner', bearer(await hs256({ sub: 'after' }))), 'x-sub'), 'after');
});
