// The files `isomesh plugin init` writes: a working plugin, its config schema, a test against the
// local test host, and the project files to build and test it with the CLI.

export interface ScaffoldFile {
  path: string;
  content: string;
}

/**
 * `sdkDir`: the CLI's own SDK (absolute). The project's tsconfig maps @isomesh/sdk there for editors
 * and tsc; `isomesh plugin test` provides it to Node; `isomesh plugin build` leaves it external.
 */
export function pluginScaffold(name: string, sdkDir: string): ScaffoldFile[] {
  return [
    { path: 'package.json', content: json(packageJson(name)) },
    { path: 'tsconfig.json', content: json(tsconfigFor(sdkDir)) },
    { path: 'config.schema.json', content: json(configSchema(name)) },
    { path: 'src/index.ts', content: indexTs },
    { path: 'test/plugin.test.ts', content: testTs },
    { path: 'README.md', content: readme(name) },
    { path: '.gitignore', content: 'node_modules/\ndist/\n' },
  ];
}

function json(value: unknown): string {
  return JSON.stringify(value, null, 2) + '\n';
}

function packageJson(name: string) {
  return {
    name,
    version: '0.1.0',
    private: true,
    type: 'module',
    description: `isomesh plugin ${name}`,
    isomesh: { entry: 'src/index.ts', configSchema: 'config.schema.json' },
    scripts: {
      build: 'isomesh plugin build',
      test: 'isomesh plugin test',
      publish: `isomesh plugin publish --name ${name}`,
    },
    // No dependencies: the isomesh CLI provides @isomesh/sdk (it is not on npm) to tests and builds.
    engines: { node: '>=24' },
  };
}

// Node runs the tests with native type stripping, so the sources must stay erasable TypeScript.
const tsconfigFor = (sdkDir: string) => ({
  compilerOptions: {
    target: 'es2023',
    lib: ['es2023'],
    module: 'nodenext',
    moduleResolution: 'nodenext',
    types: ['node'],
    strict: true,
    noEmit: true,
    allowImportingTsExtensions: true,
    erasableSyntaxOnly: true,
    verbatimModuleSyntax: true,
    skipLibCheck: true,
    resolveJsonModule: true,
    // Where this machine's isomesh CLI keeps the SDK (re-run `isomesh plugin init` elsewhere to refresh).
    paths: {
      '@isomesh/sdk': [`${sdkDir}/src/index.ts`],
      '@isomesh/sdk/testing': [`${sdkDir}/src/testing.ts`],
    },
  },
  include: ['src', 'test'],
});

function configSchema(name: string) {
  return {
    $schema: 'https://json-schema.org/draft/2020-12/schema',
    title: `${name} config`,
    type: 'object',
    additionalProperties: false,
    properties: {
      header: {
        type: 'string',
        description: 'Request header that carries the tenant name to the upstream.',
        default: 'x-tenant',
      },
      protectedPrefix: {
        type: 'string',
        description: 'Requests under this path need an Authorization header.',
        default: '/admin',
      },
    },
  };
}

const indexTs = `import { definePlugin } from '@isomesh/sdk';
// The host checks every chain entry's config against this schema (PUT …/chain answers 400 otherwise).
import configSchema from '../config.schema.json' with { type: 'json' };

export interface Config {
  /** Request header that carries the tenant name to the upstream. */
  header?: string;
  /** Requests under this path need an Authorization header. */
  protectedPrefix?: string;
}

export default definePlugin<Config>({
  configSchema,

  onRequest(req, ctx) {
    const prefix = ctx.config.protectedPrefix ?? '/admin';
    if (req.path.startsWith(prefix) && !req.headers.get('authorization')) {
      return ctx.respond(401, { body: 'missing authorization' });
    }
    req.headers.set(ctx.config.header ?? 'x-tenant', ctx.tenant);
  },

  onResponse(res, ctx) {
    res.headers.set('x-served-by', \`isomesh/\${ctx.tenant}\`);
  },
});
`;

const testTs = `import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createTestHost } from '@isomesh/sdk/testing';
import plugin from '../src/index.ts';

function header(headers: Array<[string, string]>, name: string): string | undefined {
  return headers.find(([k]) => k === name)?.[1];
}

test('tags requests with the tenant', async () => {
  const host = createTestHost(plugin, { tenant: 'acme', config: { header: 'x-tenant' } });
  const out = await host.onRequest({ method: 'GET', path: '/api/items' });
  assert.ok(out.action === 'continue', \`expected continue, got \${out.action}\`);
  assert.equal(header(out.headers, 'x-tenant'), 'acme');
});

test('rejects unauthenticated requests to the protected prefix', async () => {
  const host = createTestHost(plugin, { tenant: 'acme', config: {} });
  const out = await host.onRequest({ path: '/admin/users' });
  assert.ok(out.action === 'respond', \`expected respond, got \${out.action}\`);
  assert.equal(out.status, 401);
});

test('lets authenticated requests to the protected prefix through', async () => {
  const host = createTestHost(plugin, { tenant: 'acme', config: {} });
  const out = await host.onRequest({ path: '/admin/users', headers: { authorization: 'Bearer t' } });
  assert.equal(out.action, 'continue');
});

test('marks responses', async () => {
  const host = createTestHost(plugin, { tenant: 'acme' });
  const out = await host.onResponse({ status: 200 });
  assert.ok(out.action === 'continue', \`expected continue, got \${out.action}\`);
  assert.equal(header(out.headers, 'x-served-by'), 'isomesh/acme');
});
`;

function readme(name: string): string {
  return `# ${name}

An [isomesh](https://github.com/isomesh/isomesh) plugin. It runs in your tenant's V8 isolate on every
request that passes through the tenant's plugin chain.

- \`src/index.ts\` — the plugin: \`onRequest\` guards a path prefix and tags requests with the tenant,
  \`onResponse\` adds \`x-served-by\`.
- \`config.schema.json\` — the shape of the \`config\` you give the plugin in the tenant's chain.
- \`test/plugin.test.ts\` — tests against the local test host (\`createTestHost\` from \`@isomesh/sdk/testing\`).

## Develop

Nothing to install: the \`isomesh\` CLI provides \`@isomesh/sdk\` (types, \`definePlugin\`,
\`createTestHost\`) to the tests and the build.

\`\`\`sh
isomesh plugin test          # node --test test/**/*.test.ts, with @isomesh/sdk from the CLI
isomesh plugin build         # dist/plugin.js: one self-contained bundle (@isomesh/sdk is provided by the host)
\`\`\`

npm packages the plugin imports are bundled by \`isomesh plugin build\` (\`npm install <pkg>\` them as usual).

## Publish

\`\`\`sh
export ISOMESH_SERVER=http://127.0.0.1:7700 ISOMESH_TENANT=<tenant> ISOMESH_TOKEN=<token>
isomesh plugin publish --name ${name} --activate        # new version, active at once
isomesh plugin publish --name ${name} --canary 10       # new version on 10% of requests
isomesh plugin versions ${name}
isomesh plugin rollback ${name}
\`\`\`

Then put it in the chain, e.g. \`PUT /v1/tenants/<tenant>/chain\`
\`[{"plugin": "${name}", "config": {"header": "x-tenant"}, "failurePolicy": "closed"}]\`.
`;
}
