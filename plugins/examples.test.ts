// Every example plugin is publishable exactly as the management API would take it: its src/index.ts
// goes through the real host compile (esbuild + trial load in an isolate), its README's example chain
// entry is valid config, and that entry runs one real request through PluginHost — the production
// path, isolates and host capabilities included.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import pino from 'pino';
import { Registry } from 'prom-client';
import { SignJWT } from 'jose';
import { PluginHost } from '../runtime/src/host/index.ts';
import type { HookRequest, RequestOutcome } from '../runtime/src/host/contract.ts';
import { DEFAULT_QUOTA, DEFAULT_TENANT_SETTINGS, type ChainEntry, type TenantConfig } from '../runtime/src/store/model.ts';

const ROOT = import.meta.dirname;
const FILES = ['src/index.ts', 'config.schema.json', 'README.md', 'plugin.test.ts', 'metadata.json'];
const POSTURES = ['robust_to_untrusted_downstream', 'robust_to_untrusted_downstream_and_upstream', 'requires_trusted_downstream_and_upstream', 'unknown'];
const SECRET = 'examples-test-hmac-secret-0123456789';

const plugins = readdirSync(ROOT, { withFileTypes: true })
  .filter((d) => d.isDirectory() && existsSync(join(ROOT, d.name, 'metadata.json')))
  .map((d) => d.name)
  .sort();

// ctx.fetch answered by a fake data plane: json-enricher's lookup service.
const host = new PluginHost({
  logger: pino({ level: 'silent' }),
  registry: new Registry(),
  fetch: async (_tenant, req) =>
    req.service === 'customers'
      ? { status: 200, headers: [['content-type', 'application/json']], body: new TextEncoder().encode('{"tier":"gold"}') }
      : { status: 404, headers: [], body: new Uint8Array(0) },
});
test.after(() => host.close());

function request(over: Partial<HookRequest> = {}): HookRequest {
  return { method: 'GET', path: '/', query: '', host: 'svc', headers: [], remoteAddress: '127.0.0.1', ...over };
}

/** One request per plugin through the real host with the README's config, and what must come out. */
const PROBES: Record<string, { req: () => Promise<HookRequest>; check(out: RequestOutcome): void }> = {
  'jwt-auth': {
    req: async () => {
      const token = await new SignJWT({ sub: 'u-1', aud: 'orders', iss: 'https://id.example.com' })
        .setProtectedHeader({ alg: 'HS256' }).setExpirationTime('1m').sign(new TextEncoder().encode(SECRET));
      return request({ headers: [['authorization', `Bearer ${token}`], ['x-user-id', 'spoofed']] });
    },
    check: (out) => assert.deepEqual(out.action === 'continue' && out.headers.find(([k]) => k === 'x-user-id'), ['x-user-id', 'u-1'], JSON.stringify(out)),
  },
  'rate-limit': {
    req: async () => request({ headers: [['x-api-key', 'k']] }),
    check: (out) => assert.equal(out.action, 'continue', JSON.stringify(out)),
  },
  'canary-router': {
    req: async () => request({ headers: [['x-canary', '1']] }),
    check: (out) => assert.equal(out.action === 'continue' && out.service, 'reviews-v2', JSON.stringify(out)),
  },
  'header-transform': {
    req: async () => request({ headers: [['x-debug', '1']] }),
    check: (out) => assert.deepEqual(out.action === 'continue' && out.headers.map(([k]) => k), ['x-tenant', 'x-request-id'], JSON.stringify(out)),
  },
  'fault-injection': {
    req: async () => request({ headers: [['x-fault-test', '1']] }),
    check: (out) => assert.ok(out.action === 'continue' || (out.action === 'respond' && out.status === 503), JSON.stringify(out)),
  },
  'json-enricher': {
    req: async () => request({ method: 'POST', headers: [['content-type', 'application/json']], body: new TextEncoder().encode('{"customerId":"c-7"}') }),
    check: (out) =>
      assert.deepEqual(out.action === 'continue' && JSON.parse(new TextDecoder().decode(out.body)), { customerId: 'c-7', customer: { tier: 'gold' } }, JSON.stringify(out)),
  },
  cors: {
    req: async () => request({ method: 'OPTIONS', headers: [['origin', 'https://a.example.com'], ['access-control-request-method', 'POST']] }),
    check: (out) => assert.equal(out.action === 'respond' && out.status, 204, JSON.stringify(out)),
  },
};

test('the example set is the documented one', () => {
  assert.deepEqual(plugins, ['canary-router', 'cors', 'fault-injection', 'header-transform', 'json-enricher', 'jwt-auth', 'rate-limit']);
  const table = readFileSync(join(ROOT, 'README.md'), 'utf8');
  for (const name of plugins) assert.match(table, new RegExp(`\\| \\[${name}\\]\\(${name}/\\)`), `plugins/README.md lists ${name}`);
});

for (const name of plugins) {
  test(`${name}: self-contained unit, publishes through the host compile, README example runs in the host`, async () => {
    const dir = join(ROOT, name);
    for (const f of FILES) assert.ok(existsSync(join(dir, f)), `${name}/${f} exists`);

    const meta = JSON.parse(readFileSync(join(dir, 'metadata.json'), 'utf8')) as Record<string, unknown>;
    assert.equal(meta.name, name);
    assert.ok(meta.status === 'stable' || meta.status === 'alpha', `status ${String(meta.status)}`);
    assert.ok(POSTURES.includes(String(meta.securityPosture)), `securityPosture ${String(meta.securityPosture)}`);
    assert.ok(typeof meta.description === 'string' && meta.description.length > 20);

    const compiled = await host.compile({ source: readFileSync(join(dir, 'src/index.ts'), 'utf8'), language: 'typescript', maxBundleBytes: DEFAULT_QUOTA.maxBundleBytes });
    assert.deepEqual(compiled.hooks, meta.hooks, 'hooks found by the trial load match metadata.json');
    // A plugin that declares its schema declares config.schema.json (PUT …/chain enforces it).
    if (compiled.declarations.configSchema !== undefined) {
      assert.deepEqual(compiled.declarations.configSchema, JSON.parse(readFileSync(join(dir, 'config.schema.json'), 'utf8')));
    }
    assert.match(compiled.digest, /^sha256:[0-9a-f]{64}$/);

    const readme = readFileSync(join(dir, 'README.md'), 'utf8');
    for (const section of ['## Config', '## Example chain entry', '## Security notes']) assert.ok(readme.includes(section), `README has ${section}`);
    const block = /```json\n([\s\S]*?)\n```/.exec(readme);
    assert.ok(block, 'README has a JSON example');
    const entry = JSON.parse(block[1] as string) as ChainEntry;
    assert.equal(entry.plugin, name);

    // The example config is valid for the plugin's own parser and for its schema's top-level fields.
    const mod = (await import(join(dir, 'src/index.ts'))) as { parseConfig(raw: unknown): unknown };
    assert.doesNotThrow(() => mod.parseConfig(entry.config));
    assert.throws(() => mod.parseConfig({ ...entry.config, notAField: 1 }), /unknown field "notAField"/);
    const schema = JSON.parse(readFileSync(join(dir, 'config.schema.json'), 'utf8')) as { additionalProperties: boolean; properties: Record<string, unknown>; required?: string[] };
    assert.equal(schema.additionalProperties, false);
    for (const key of Object.keys(entry.config)) assert.ok(key in schema.properties, `schema documents "${key}"`);
    for (const key of schema.required ?? []) assert.ok(key in entry.config, `example sets required "${key}"`);

    const tenant = `ex-${name}`;
    const config: TenantConfig = {
      name: tenant,
      listenerPort: 17000,
      quota: { ...DEFAULT_QUOTA },
      services: ['reviews', 'reviews-v2', 'customers'].map((s) => ({ name: s, endpoints: [], lb: 'round_robin' as const, connectTimeoutMs: 1000, timeoutMs: 1000 })),
      routes: [],
      chain: [{ plugin: name, config: entry.config, failurePolicy: 'closed' }],
      plugins: { [name]: { name, active: { version: 1, digest: compiled.digest, code: compiled.code, meta: compiled.declarations } } },
      secrets: { 'jwt-hmac': SECRET },
      settings: { ...DEFAULT_TENANT_SETTINGS },
      rateLimits: [],
      generation: 1,
    };
    host.configure(config);
    const probe = PROBES[name];
    assert.ok(probe, `a probe request for ${name}`);
    const adm = host.begin(tenant, `probe-${name}`);
    assert.ok(adm.ok);
    try {
      const out = await host.onRequest(adm.run, await probe.req());
      assert.notEqual(out.action, 'fail', JSON.stringify(out));
      probe.check(out);
      if (out.action === 'continue' && meta.hooks instanceof Array && meta.hooks.includes('onResponse')) {
        const res = await host.onResponse(adm.run, { status: 200, headers: [] });
        assert.equal(res.action, 'continue', JSON.stringify(res));
      }
    } finally {
      host.end(adm.run);
    }
  });
}
