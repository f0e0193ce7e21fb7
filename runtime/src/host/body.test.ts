// Buffered body access through the host, in the host mode of this run (ISOMESH_HOST_MODE, default
// cordon) and inline: bodyLimit per run (route filter, canary choice, smallest declared limit), the
// body handed only to entries that declared it, replacements carried through the chain and back in
// the outcome.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { hashRequestId } from './chain.ts';
import { newHost, request, tenantConfig } from './fixtures.ts';
import { parseVerdict, BadResult } from './validate.ts';

const reader = (limit: number, tag: string) => `import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  body: { request: ${limit} },
  async onRequest(req) {
    const text = await req.text();
    req.headers.append('x-seen', '${tag}:' + text);
    req.setBody(text + '+${tag}');
  },
});`;

const blind = `import { definePlugin } from '@isomesh/sdk';
export default definePlugin({
  async onRequest(req) {
    const e = await req.text().then(() => 'read', (err) => err.message);
    req.headers.append('x-blind', e.includes('did not declare body access') ? 'refused' : e);
  },
});`;

/** A request id that lands on (or off) a canary of `percent`. */
function idFor(canary: boolean, percent: number): string {
  for (let i = 0; i < 10_000; i++) if ((hashRequestId(`id-${i}`) % 100 < percent) === canary) return `id-${i}`;
  throw new Error('no id');
}

for (const mode of [undefined, 'inline'] as const) {
  const label = mode ?? 'env mode';
  test(`[${label}] bodyLimit: smallest declared limit among applicable entries; 0 when none declared`, async (t) => {
    const { host } = newHost(mode === undefined ? {} : { mode });
    t.after(() => host.close());
    host.configure(await tenantConfig(host, 'acme', [
      { name: 'big', source: reader(4096, 'big') },
      { name: 'small', source: reader(100, 'small'), routes: ['upload'] },
      { name: 'flip', source: blind, canary: { source: reader(50, 'canary'), version: 2, percent: 30 } },
    ]));
    const limit = (route: string | undefined, id: string) => {
      const adm = host.begin('acme', id);
      assert.ok(adm.ok);
      try {
        return [host.bodyLimit(adm.run, 'request', route), host.bodyLimit(adm.run, 'response', route)];
      } finally {
        host.end(adm.run);
      }
    };
    assert.deepEqual(limit(undefined, idFor(false, 30)), [4096, 0], 'route filter: "small" does not apply');
    assert.deepEqual(limit('upload', idFor(false, 30)), [100, 0], 'the smallest applicable limit');
    assert.deepEqual(limit('upload', idFor(true, 30)), [50, 0], 'the canary version the run is pinned to declares 50');
    host.configure(await tenantConfig(host, 'plain', [{ name: 'p', source: blind }]));
    const adm = host.begin('plain', 'x');
    assert.ok(adm.ok);
    assert.equal(host.bodyLimit(adm.run, 'request', 'any'), 0);
    host.end(adm.run);
  });

  test(`[${label}] the body reaches only declaring entries; replacements flow to the next entry and the outcome`, async (t) => {
    const { host } = newHost(mode === undefined ? {} : { mode });
    t.after(() => host.close());
    host.configure(await tenantConfig(host, 'acme', [
      { name: 'one', source: reader(1024, 'one') },
      { name: 'blind', source: blind },
      { name: 'two', source: reader(1024, 'two') },
    ]));
    const adm = host.begin('acme', 'r1');
    assert.ok(adm.ok);
    const out = await host.onRequest(adm.run, request({ method: 'POST', body: new TextEncoder().encode('héllo') }));
    host.end(adm.run);
    assert.ok(out.action === 'continue', JSON.stringify(out));
    assert.deepEqual(out.headers, [['x-seen', 'one:héllo'], ['x-blind', 'refused'], ['x-seen', 'two:héllo+one']]);
    assert.equal(new TextDecoder().decode(out.body), 'héllo+one+two');
  });

  test(`[${label}] response bodies, binary-safe; no body field when nobody replaced it`, async (t) => {
    const { host } = newHost(mode === undefined ? {} : { mode });
    t.after(() => host.close());
    host.configure(await tenantConfig(host, 'acme', [{
      name: 'inv',
      source: `import { definePlugin } from '@isomesh/sdk';
        export default definePlugin({
          body: { response: 64 },
          async onResponse(res) {
            const b = new Uint8Array(await res.arrayBuffer());
            if (b.length > 0) res.setBody(b.map((x) => 255 - x));
            res.headers.set('x-len', String(b.length));
          },
        });`,
    }]));
    const adm = host.begin('acme', 'r2');
    assert.ok(adm.ok);
    await host.onRequest(adm.run, request());
    const out = await host.onResponse(adm.run, { status: 200, headers: [], body: new Uint8Array([0, 1, 254, 255]) });
    assert.ok(out.action === 'continue', JSON.stringify(out));
    assert.deepEqual([...(out.body ?? [])], [255, 254, 1, 0]);
    const empty = await host.onResponse(adm.run, { status: 204, headers: [] });
    host.end(adm.run);
    assert.ok(empty.action === 'continue');
    assert.equal(empty.body, undefined);
    assert.deepEqual(empty.headers, [['x-len', '0']]);
  });
}

test('parseVerdict refuses a body the entry did not declare or that exceeds its limit', () => {
  const none = { has: () => false };
  const body = Buffer.from('12345').toString('base64');
  assert.throws(() => parseVerdict(JSON.stringify({ action: 'continue', body }), 'onRequest', none, 0), (e) => e instanceof BadResult && /without a declared body limit/.test(e.message));
  assert.throws(() => parseVerdict(JSON.stringify({ action: 'continue', body }), 'onRequest', none, 4), /5 bytes, over the declared limit of 4/);
  assert.throws(() => parseVerdict(JSON.stringify({ action: 'continue', body: 'a$==' }), 'onRequest', none, 4), /base64/);
  assert.equal(parseVerdict(JSON.stringify({ action: 'continue', body }), 'onRequest', none, 5).action, 'continue');
});
