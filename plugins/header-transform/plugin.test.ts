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
  assert.deepEqual(await host.onRequest({ headers: { a: 'b' } }), { action: 'continue', headers: [['a', 'b']] });
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
