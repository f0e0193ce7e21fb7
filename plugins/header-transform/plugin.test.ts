import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTestHost } from '@isomesh/sdk/testing';
import plugin, { parseConfig } from './src/index.ts';

test('request: remove, rename, set and add with templates, in that order', async () => {
  const host = createTestHost(plugin, {
    tenant: 'acme',
    config: {
      request: {
        remove: ['x-debug'],
        rename: { 'x-old-user': 'x-user' },
        set: { 'x-forwarded-tenant': '{tenant}', 'x-trace': '{requestId}/{method} {path}', 'x-user-copy': '{header:x-old-user}' },
        add: { via: 'isomesh {{{tenant}}}' },
      },
    },
  });
  const out = await host.onRequest({
    method: 'POST',
    path: '/orders',
    requestId: 'req-9',
    headers: [['x-debug', '1'], ['x-old-user', 'u1'], ['via', '1.1 edge'], ['x-forwarded-tenant', 'spoofed']],
  });
  assert.deepEqual(out, {
    action: 'continue',
    headers: [
      ['via', '1.1 edge'],
      ['x-forwarded-tenant', 'acme'],
      ['x-user', 'u1'],
      ['x-trace', 'req-9/POST /orders'],
      ['x-user-copy', 'u1'],
      ['via', 'isomesh {acme}'],
    ],
    // No response operations: nothing for onResponse to do for this request.
    skipResponse: true,
  });
});

test('response: {status} and {header:x} read the response; set-cookie values survive a rename one by one', async () => {
  const host = createTestHost(plugin, {
    config: { response: { rename: { 'set-cookie': 'x-upstream-cookie' }, set: { 'x-status': 'upstream said {status}', 'x-server': '{header:server}' }, remove: ['server'] } },
  });
  const out = await host.onResponse({ status: 503, headers: [['server', 'nginx'], ['set-cookie', 'a=1'], ['set-cookie', 'b=2']] });
  assert.deepEqual(out, {
    action: 'continue',
    status: 503,
    headers: [['x-upstream-cookie', 'a=1'], ['x-upstream-cookie', 'b=2'], ['x-status', 'upstream said 503'], ['x-server', 'nginx']],
  });
});

test('an empty expansion writes nothing; a header-only template is not invented from a missing header', async () => {
  const host = createTestHost(plugin, { config: { request: { set: { 'x-user': '{header:x-auth-user}' }, add: { 'x-k': '{header:nope}' } } } });
  assert.deepEqual(await host.onRequest({ headers: { a: 'b' } }), { action: 'continue', headers: [['a', 'b']], skipResponse: true });
});

test('config is validated with clear errors: placeholders, names, framing headers', () => {
  assert.throws(() => parseConfig({ request: { set: { 'x-a': '{status}' } } }), /unknown placeholder \{status\}/);
  assert.throws(() => parseConfig({ response: { set: { 'x-a': '{path}' } } }), /unknown placeholder \{path\}/);
  assert.throws(() => parseConfig({ request: { set: { 'x-a': '{tenant' } } }), /unclosed "\{"/);
  assert.throws(() => parseConfig({ request: { set: { 'X-A': 'v' } } }), /not a lower-case header name/);
  assert.throws(() => parseConfig({ request: { remove: ['content-length'] } }), /controls message framing/);
  assert.throws(() => parseConfig({ request: { set: { 'transfer-encoding': 'chunked' } } }), /controls message framing/);
  assert.throws(() => parseConfig({ request: { append: {} } }), /unknown operation "append"/);
  assert.throws(() => parseConfig({ request: { set: { 'x-a': 'a\r\nb' } } }), /CR, LF or NUL/);
  assert.deepEqual(parseConfig({ request: { set: { 'x-a': 'a{{b}}' } } }).request.set, [['x-a', ['a{b}']]]);
});

test('a config error fails the call (the chain entry failure policy decides)', async () => {
  const out = await createTestHost(plugin, { config: { request: { set: { 'x-a': '{nope}' } } } }).onRequest();
  assert.equal(out.action, 'error');
  assert.match(out.action === 'error' ? out.message : '', /header-transform config: request\.set\.x-a: unknown placeholder \{nope\}/);
});

test('static response operations go to the host from onRequest (ctx.responseHeaders) and onResponse is skipped', async () => {
  const host = createTestHost(plugin, {
    tenant: 'acme',
    config: { response: { remove: ['server'], set: { 'x-served-by': 'isomesh/{tenant}', 'x-empty': '' }, add: { 'x-trace': '{requestId}' } } },
  });
  const out = await host.onRequest({ requestId: 'q1' });
  assert.deepEqual(out, {
    action: 'continue',
    headers: [],
    responseHeaders: [['delete', 'server'], ['set', 'x-served-by', 'isomesh/acme'], ['append', 'x-trace', 'q1']],
    skipResponse: true,
  });
  // The response of that request: edited as the host does, in that order, without an onResponse call.
  const res = await host.onResponse({ requestId: 'q1', headers: [['server', 'nginx'], ['x-trace', 'up'], ['content-type', 'text/plain']] });
  assert.deepEqual(res, { action: 'continue', headers: [['x-trace', 'up'], ['content-type', 'text/plain'], ['x-served-by', 'isomesh/acme'], ['x-trace', 'q1']] });
});

test('response operations that read the response keep onResponse: {status}, {header:…}, rename', async () => {
  for (const response of [{ set: { 'x-s': '{status}' } }, { set: { 'x-c': '{header:content-type}' } }, { rename: { server: 'x-origin-server' } }]) {
    const host = createTestHost(plugin, { config: { response } });
    const out = await host.onRequest({ requestId: 'q2' });
    assert.deepEqual(out, { action: 'continue', headers: [] }, JSON.stringify(response));
    const res = await host.onResponse({ requestId: 'q2', status: 201, headers: [['server', 'nginx'], ['content-type', 'text/plain']] });
    assert.equal(res.action, 'continue');
    assert.ok(res.action === 'continue' && res.headers.length >= 2, JSON.stringify(res));
  }
});
