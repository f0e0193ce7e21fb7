import { test } from 'node:test';
import assert from 'node:assert/strict';
import { definePlugin } from './index.ts';
import { createTestHost } from './testing.ts';

const plugin = definePlugin<{ header: string }>({
  onRequest(req, ctx) {
    if (!req.headers.get('authorization')) return ctx.respond(401, { body: 'no token' });
    const rl = ctx.rateLimit(`user:${req.headers.get('x-user')}`, { limit: 2, windowMs: 1000 });
    if (!rl.allowed) return ctx.respond(429, { headers: { 'retry-after-ms': String(rl.retryAfterMs) } });
    if (req.headers.get('x-canary') === '1') ctx.route('reviews-v2');
    ctx.log.info('passing', { user: req.headers.get('x-user') });
    req.headers.set(ctx.config.header, `${ctx.tenant}:${ctx.secrets.get('token') ?? '-'}`);
  },
  async onResponse(res) {
    await null;
    res.headers.set('x-served-by', 'isomesh');
    if (res.status === 500) res.status = 503;
  },
});

test('createTestHost runs a plugin through the guest runtime: respond, rate limit, route, config, secrets, logs', async () => {
  let now = 0;
  const host = createTestHost(plugin, { tenant: 'acme', config: { header: 'x-tenant' }, secrets: { token: 's3' }, now: () => now });
  assert.deepEqual(await host.onRequest(), { action: 'respond', status: 401, headers: [], body: 'no token' });
  const auth = { authorization: 'Bearer x', 'x-user': 'u1' };
  assert.deepEqual(await host.onRequest({ headers: auth }), {
    action: 'continue',
    headers: [['authorization', 'Bearer x'], ['x-user', 'u1'], ['x-tenant', 'acme:s3']],
  });
  const routed = await host.onRequest({ headers: { ...auth, 'x-canary': '1' } });
  assert.equal(routed.action === 'continue' && routed.service, 'reviews-v2');
  const limited = await host.onRequest({ headers: auth });
  assert.deepEqual(limited, { action: 'respond', status: 429, headers: [['retry-after-ms', '500']], body: '' });
  now += 500;
  assert.equal((await host.onRequest({ headers: auth })).action, 'continue');
  assert.deepEqual(host.logs[0], { level: 'info', msg: 'passing', fields: { user: 'u1' } });
  assert.deepEqual(await host.onResponse({ status: 500 }), { action: 'continue', status: 503, headers: [['x-served-by', 'isomesh']] });
});

test('createTestHost reports throws (including non-Error values) and unknown services like the host', async () => {
  const thrower = createTestHost({ onRequest() { throw 'nope'; } });
  assert.deepEqual(await thrower.onRequest(), { action: 'error', message: 'plugin threw a non-Error value: nope' });
  const router = createTestHost({ onRequest(_req, ctx) { ctx.route('ghost'); } }, { services: ['real'] });
  assert.equal((await router.onRequest()).action, 'error');
  const badStatus = createTestHost({ onRequest(_req, ctx) { ctx.respond(1000); } });
  const out = await badStatus.onRequest();
  assert.equal(out.action, 'error');
  assert.match(out.action === 'error' ? out.message : '', /status must be an integer/);
});

test('createTestHost performs host capabilities in-process: jwt.verify with a tenant secret, sleep, bounded rounds', async () => {
  const { SignJWT } = await import('jose');
  const secret = 'x'.repeat(32);
  const token = await new SignJWT({ sub: 'alice', aud: 'api' }).setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1m').sign(new TextEncoder().encode(secret));
  const verifier = definePlugin<{ aud: string }>({
    async onRequest(req, ctx) {
      try {
        const { payload } = await ctx.jwt.verify(req.headers.get('x-token') ?? '', { secret: 'jwt', audience: ctx.config.aud });
        await ctx.sleep(5);
        req.headers.set('x-sub', String(payload.sub));
      } catch (e) {
        return ctx.respond(401, { body: `${(e as { code: string }).code}` });
      }
    },
  });
  const host = createTestHost(verifier, { config: { aud: 'api' }, secrets: { jwt: secret } });
  assert.deepEqual(await host.onRequest({ headers: { 'x-token': token } }), { action: 'continue', headers: [['x-token', token], ['x-sub', 'alice']] });
  const wrongAud = createTestHost(verifier, { config: { aud: 'billing' }, secrets: { jwt: secret } });
  assert.deepEqual(await wrongAud.onRequest({ headers: { 'x-token': token } }), { action: 'respond', status: 401, headers: [], body: 'ERR_JWT_CLAIM_INVALID' });
  const noSecret = createTestHost(verifier, { config: { aud: 'api' } });
  assert.deepEqual(await noSecret.onRequest({ headers: { 'x-token': token } }), { action: 'respond', status: 401, headers: [], body: 'ERR_JWT_OPTIONS' });

  const looper = createTestHost({ async onRequest(_req, ctx) { for (;;) await ctx.sleep(0); } });
  const looped = await looper.onRequest();
  assert.equal(looped.action, 'error');
  assert.match(looped.action === 'error' ? looped.message : '', /more than 8 rounds/);
  const stuck = createTestHost({ onRequest: () => new Promise<void>(() => {}) }, { idleTimeoutMs: 30 });
  assert.deepEqual(await stuck.onRequest(), { action: 'error', message: 'async hook did not settle' });
});
