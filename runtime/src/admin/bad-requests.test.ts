// Every bad request gets a 4xx with the documented error code, and none of them changes the state.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ADMIN_TOKEN, startAdmin } from './testing.ts';

type Who = 'admin' | 'tenant-a' | 'none' | 'bad';

interface BadRequest {
  name: string;
  method: 'GET' | 'PUT' | 'POST' | 'DELETE';
  url: string;
  /** JSON-encoded unless `raw` is given. */
  body?: unknown;
  raw?: string;
  contentType?: string;
  who?: Who;
  status: number;
  code: string;
}

const T = '/v1/tenants/a';
const ep = [{ address: '127.0.0.1', port: 8080 }];
const big = 'x'.repeat(1024 * 1024 + 10);

const TABLE: BadRequest[] = [
  // transport: JSON, content type, size, routing
  { name: 'malformed JSON', method: 'PUT', url: `${T}/services/web`, raw: '{"endpoints": [', status: 400, code: 'ISOMESH_ERR_API_BAD_JSON' },
  { name: 'empty JSON body', method: 'PUT', url: `${T}/services/web`, raw: '', status: 400, code: 'ISOMESH_ERR_API_BAD_JSON' },
  { name: 'prototype poisoning', method: 'PUT', url: `${T}/services/x`, raw: '{"__proto__": {"admin": true}, "endpoints": []}', status: 400, code: 'ISOMESH_ERR_API_BAD_JSON' },
  { name: 'text/plain body', method: 'PUT', url: `${T}/services/web`, raw: 'endpoints', contentType: 'text/plain', status: 415, code: 'ISOMESH_ERR_API_UNSUPPORTED_MEDIA_TYPE' },
  { name: 'form body', method: 'PUT', url: `${T}/secrets/s`, raw: 'value=1', contentType: 'application/x-www-form-urlencoded', status: 415, code: 'ISOMESH_ERR_API_UNSUPPORTED_MEDIA_TYPE' },
  { name: 'javascript on a JSON-only route', method: 'PUT', url: `${T}/chain`, raw: '[]', contentType: 'application/javascript', status: 415, code: 'ISOMESH_ERR_API_UNSUPPORTED_MEDIA_TYPE' },
  { name: 'body over 1 MiB', method: 'PUT', url: `${T}/secrets/s`, body: { value: big }, status: 413, code: 'ISOMESH_ERR_API_BODY_TOO_LARGE' },
  { name: 'unknown route', method: 'GET', url: '/v1/nothing', status: 404, code: 'ISOMESH_ERR_API_NOT_FOUND' },
  { name: 'unknown route without a token', method: 'GET', url: '/v2/tenants', who: 'none', status: 404, code: 'ISOMESH_ERR_API_NOT_FOUND' },
  { name: 'unsupported method', method: 'POST', url: `${T}/chain`, body: [], status: 404, code: 'ISOMESH_ERR_API_NOT_FOUND' },
  // auth
  { name: 'no token', method: 'GET', url: T, who: 'none', status: 401, code: 'ISOMESH_ERR_AUTH_MISSING_TOKEN' },
  { name: 'bad token', method: 'GET', url: T, who: 'bad', status: 401, code: 'ISOMESH_ERR_AUTH_INVALID_TOKEN' },
  { name: 'no token on a mutation', method: 'PUT', url: '/v1/tenants/new', body: {}, who: 'none', status: 401, code: 'ISOMESH_ERR_AUTH_MISSING_TOKEN' },
  { name: 'tenant token on other tenant', method: 'GET', url: '/v1/tenants/b/services', who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: 'tenant token on missing tenant', method: 'GET', url: '/v1/tenants/zzz/services', who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: 'tenant token writes other tenant', method: 'PUT', url: '/v1/tenants/b/services/x', body: { endpoints: ep }, who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: 'tenant token lists tenants', method: 'GET', url: '/v1/tenants', who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: 'tenant token creates tenant', method: 'PUT', url: '/v1/tenants/c', body: {}, who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: 'tenant token deletes itself', method: 'DELETE', url: T, who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: 'tenant token mints tokens', method: 'POST', url: `${T}/tokens`, who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: 'tenant token sets its quota', method: 'PUT', url: `${T}/quota`, body: { weight: 100 }, who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: 'tenant token reads metrics', method: 'GET', url: '/metrics', who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  // tenants and names
  { name: 'uppercase tenant name', method: 'PUT', url: '/v1/tenants/Acme', body: {}, status: 400, code: 'ISOMESH_ERR_TENANT_BAD_NAME' },
  { name: '64-char tenant name', method: 'PUT', url: `/v1/tenants/${'a'.repeat(64)}`, body: {}, status: 400, code: 'ISOMESH_ERR_TENANT_BAD_NAME' },
  { name: 'leading dash tenant name', method: 'PUT', url: '/v1/tenants/-acme', body: {}, status: 400, code: 'ISOMESH_ERR_TENANT_BAD_NAME' },
  { name: 'trailing dash tenant name', method: 'PUT', url: '/v1/tenants/acme-', body: {}, status: 400, code: 'ISOMESH_ERR_TENANT_BAD_NAME' },
  { name: 'unicode tenant name', method: 'PUT', url: `/v1/tenants/${encodeURIComponent('café')}`, body: {}, status: 400, code: 'ISOMESH_ERR_TENANT_BAD_NAME' },
  { name: 'listenerPort 70000', method: 'PUT', url: '/v1/tenants/c', body: { listenerPort: 70000 }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'listenerPort as string', method: 'PUT', url: '/v1/tenants/c', body: { listenerPort: '17005' }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'listenerPort out of range', method: 'PUT', url: '/v1/tenants/c', body: { listenerPort: 8080 }, status: 400, code: 'ISOMESH_ERR_TENANT_PORT_OUT_OF_RANGE' },
  { name: 'listenerPort of another tenant', method: 'PUT', url: '/v1/tenants/c', body: { listenerPort: 17300 }, status: 409, code: 'ISOMESH_ERR_TENANT_PORT_IN_USE' },
  { name: 'unknown tenant field', method: 'PUT', url: '/v1/tenants/c', body: { port: 17005 }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'unknown tenant', method: 'GET', url: '/v1/tenants/ghost', status: 404, code: 'ISOMESH_ERR_TENANT_NOT_FOUND' },
  { name: 'delete unknown tenant', method: 'DELETE', url: '/v1/tenants/ghost', status: 404, code: 'ISOMESH_ERR_TENANT_NOT_FOUND' },
  { name: 'token for unknown tenant', method: 'POST', url: '/v1/tenants/ghost/tokens', status: 404, code: 'ISOMESH_ERR_TENANT_NOT_FOUND' },
  // quota
  { name: 'quota weight 0', method: 'PUT', url: `${T}/quota`, body: { weight: 0 }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'quota negative memory', method: 'PUT', url: `${T}/quota`, body: { memoryMb: -1 }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'quota oversized bundle', method: 'PUT', url: `${T}/quota`, body: { maxBundleBytes: 1e12 }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'quota fractional cpu', method: 'PUT', url: `${T}/quota`, body: { cpuMsPerRequest: 1.5 }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'quota unknown field', method: 'PUT', url: `${T}/quota`, body: { cpu: 5 }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'quota as array', method: 'PUT', url: `${T}/quota`, body: [1], status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'quota of unknown tenant', method: 'PUT', url: '/v1/tenants/ghost/quota', body: { weight: 2 }, status: 404, code: 'ISOMESH_ERR_TENANT_NOT_FOUND' },
  // services
  { name: 'service endpoint port 70000', method: 'PUT', url: `${T}/services/x`, body: { endpoints: [{ address: '127.0.0.1', port: 70000 }] }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'service endpoints empty', method: 'PUT', url: `${T}/services/x`, body: { endpoints: [] }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'service endpoints missing', method: 'PUT', url: `${T}/services/x`, body: { vip: '10.0.0.9:80' }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'service VIP without port', method: 'PUT', url: `${T}/services/x`, body: { vip: '10.0.0.9', endpoints: ep }, status: 400, code: 'ISOMESH_ERR_SERVICE_INVALID' },
  { name: 'service VIP bad octet', method: 'PUT', url: `${T}/services/x`, body: { vip: '10.0.0.300:80', endpoints: ep }, status: 400, code: 'ISOMESH_ERR_SERVICE_INVALID' },
  { name: 'service VIP IPv6 unbracketed', method: 'PUT', url: `${T}/services/x`, body: { vip: '::1:80', endpoints: ep }, status: 400, code: 'ISOMESH_ERR_SERVICE_INVALID' },
  { name: 'service VIP taken', method: 'PUT', url: `${T}/services/x`, body: { vip: '10.20.0.1:80', endpoints: ep }, status: 409, code: 'ISOMESH_ERR_SERVICE_VIP_CONFLICT' },
  { name: 'service bad lb', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, lb: 'random' }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'service bad address', method: 'PUT', url: `${T}/services/x`, body: { endpoints: [{ address: 'no spaces allowed', port: 80 }] }, status: 400, code: 'ISOMESH_ERR_SERVICE_INVALID' },
  { name: 'service negative timeout', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, timeoutMs: -5 }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'service retry on unknown', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, retries: { attempts: 1, on: ['4xx'] } }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'service uppercase name', method: 'PUT', url: `${T}/services/Web`, body: { endpoints: ep }, status: 400, code: 'ISOMESH_ERR_SERVICE_BAD_NAME' },
  { name: 'service unknown field', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, weight: 3 }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'unknown service', method: 'GET', url: `${T}/services/ghost`, status: 404, code: 'ISOMESH_ERR_SERVICE_NOT_FOUND' },
  { name: 'delete service used by a route', method: 'DELETE', url: `${T}/services/web`, status: 409, code: 'ISOMESH_ERR_SERVICE_IN_USE' },
  { name: 'service on unknown tenant', method: 'PUT', url: '/v1/tenants/ghost/services/x', body: { endpoints: ep }, status: 404, code: 'ISOMESH_ERR_TENANT_NOT_FOUND' },
  // routes
  { name: 'route to missing service', method: 'PUT', url: `${T}/routes/r`, body: { to: { service: 'ghost' } }, status: 400, code: 'ISOMESH_ERR_ROUTE_UNKNOWN_SERVICE' },
  { name: 'route weighted to missing service', method: 'PUT', url: `${T}/routes/r`, body: { to: { weighted: [{ service: 'web', weight: 1 }, { service: 'ghost', weight: 1 }] } }, status: 400, code: 'ISOMESH_ERR_ROUTE_UNKNOWN_SERVICE' },
  { name: 'route with two targets', method: 'PUT', url: `${T}/routes/r`, body: { to: { service: 'web', weighted: [{ service: 'web', weight: 1 }] } }, status: 400, code: 'ISOMESH_ERR_ROUTE_INVALID' },
  { name: 'route with two path matchers', method: 'PUT', url: `${T}/routes/r`, body: { match: { path: '/a', pathPrefix: '/b' }, to: { service: 'web' } }, status: 400, code: 'ISOMESH_ERR_ROUTE_INVALID' },
  { name: 'route bad regex', method: 'PUT', url: `${T}/routes/r`, body: { match: { pathRegex: '([a-z' }, to: { service: 'web' } }, status: 400, code: 'ISOMESH_ERR_ROUTE_INVALID' },
  { name: 'route path without slash', method: 'PUT', url: `${T}/routes/r`, body: { match: { pathPrefix: 'api' }, to: { service: 'web' } }, status: 400, code: 'ISOMESH_ERR_ROUTE_INVALID' },
  { name: 'route header with two matchers', method: 'PUT', url: `${T}/routes/r`, body: { match: { headers: [{ name: 'x', exact: 'a', prefix: 'b' }] }, to: { service: 'web' } }, status: 400, code: 'ISOMESH_ERR_ROUTE_INVALID' },
  { name: 'route weights all zero', method: 'PUT', url: `${T}/routes/r`, body: { to: { weighted: [{ service: 'web', weight: 0 }] } }, status: 400, code: 'ISOMESH_ERR_ROUTE_INVALID' },
  { name: 'route without target', method: 'PUT', url: `${T}/routes/r`, body: { match: {} }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'route name with underscore', method: 'PUT', url: `${T}/routes/my_route`, body: { to: { service: 'web' } }, status: 400, code: 'ISOMESH_ERR_ROUTE_BAD_NAME' },
  { name: 'unknown route object', method: 'GET', url: `${T}/routes/ghost`, status: 404, code: 'ISOMESH_ERR_ROUTE_NOT_FOUND' },
  { name: 'delete route used by the chain', method: 'DELETE', url: `${T}/routes/api`, status: 409, code: 'ISOMESH_ERR_ROUTE_IN_USE' },
  // plugins
  { name: 'publish without source', method: 'POST', url: `${T}/plugins/q/versions`, body: { language: 'typescript' }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'publish bad language', method: 'POST', url: `${T}/plugins/q/versions`, body: { source: 'x', language: 'python' }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'publish compile error', method: 'POST', url: `${T}/plugins/p/versions`, body: { source: 'SYNTAX ERROR' }, status: 400, code: 'ISOMESH_ERR_PLUGIN_COMPILE' },
  { name: 'publish bundle over maxBundleBytes', method: 'POST', url: `${T}/plugins/q/versions`, raw: 'x'.repeat(64 * 1024 + 1), contentType: 'application/javascript', status: 413, code: 'ISOMESH_ERR_PLUGIN_TOO_LARGE' },
  { name: 'publish source over limit', method: 'POST', url: `${T}/plugins/q/versions`, body: { source: 'x'.repeat(300 * 1024) }, status: 413, code: 'ISOMESH_ERR_PLUGIN_TOO_LARGE' },
  { name: 'publish bad plugin name', method: 'POST', url: `${T}/plugins/Q/versions`, body: { source: 'x' }, status: 400, code: 'ISOMESH_ERR_PLUGIN_BAD_NAME' },
  { name: 'publish over maxPlugins', method: 'POST', url: `${T}/plugins/third/versions`, body: { source: 'export default {}' }, status: 409, code: 'ISOMESH_ERR_QUOTA_MAX_PLUGINS' },
  { name: 'unknown plugin', method: 'GET', url: `${T}/plugins/ghost`, status: 404, code: 'ISOMESH_ERR_PLUGIN_NOT_FOUND' },
  { name: 'unknown plugin version', method: 'GET', url: `${T}/plugins/p/versions/9`, status: 404, code: 'ISOMESH_ERR_PLUGIN_VERSION_NOT_FOUND' },
  { name: 'activate unknown version', method: 'PUT', url: `${T}/plugins/p/active`, body: { version: 7 }, status: 404, code: 'ISOMESH_ERR_PLUGIN_VERSION_NOT_FOUND' },
  { name: 'activate unknown canary version', method: 'PUT', url: `${T}/plugins/p/active`, body: { version: 1, canary: { version: 7, percent: 5 } }, status: 404, code: 'ISOMESH_ERR_PLUGIN_VERSION_NOT_FOUND' },
  { name: 'canary percent 101', method: 'PUT', url: `${T}/plugins/p/active`, body: { version: 1, canary: { version: 2, percent: 101 } }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'activate version 0', method: 'PUT', url: `${T}/plugins/p/active`, body: { version: 0 }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'activate unknown plugin', method: 'PUT', url: `${T}/plugins/ghost/active`, body: { version: 1 }, status: 404, code: 'ISOMESH_ERR_PLUGIN_NOT_FOUND' },
  { name: 'delete plugin in chain', method: 'DELETE', url: `${T}/plugins/p`, status: 409, code: 'ISOMESH_ERR_PLUGIN_IN_CHAIN' },
  // chain
  { name: 'chain with unpublished plugin', method: 'PUT', url: `${T}/chain`, body: [{ plugin: 'ghost' }], status: 400, code: 'ISOMESH_ERR_CHAIN_UNKNOWN_PLUGIN' },
  { name: 'chain with inactive plugin', method: 'PUT', url: `${T}/chain`, body: [{ plugin: 'inactive' }], status: 400, code: 'ISOMESH_ERR_CHAIN_NOT_ACTIVE' },
  { name: 'chain with unknown route', method: 'PUT', url: `${T}/chain`, body: [{ plugin: 'p', routes: ['ghost'] }], status: 400, code: 'ISOMESH_ERR_CHAIN_UNKNOWN_ROUTE' },
  { name: 'chain bad failure policy', method: 'PUT', url: `${T}/chain`, body: [{ plugin: 'p', failurePolicy: 'maybe' }], status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'chain not an array', method: 'PUT', url: `${T}/chain`, body: { plugin: 'p' }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'chain config not an object', method: 'PUT', url: `${T}/chain`, body: [{ plugin: 'p', config: 'x' }], status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  // secrets
  { name: 'secret value not a string', method: 'PUT', url: `${T}/secrets/s`, body: { value: 42 }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'secret bad name', method: 'PUT', url: `${T}/secrets/S!`, body: { value: 'x' }, status: 400, code: 'ISOMESH_ERR_SECRET_BAD_NAME' },
  { name: 'secret too large', method: 'PUT', url: `${T}/secrets/s`, body: { value: 'x'.repeat(65 * 1024) }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'delete unknown secret', method: 'DELETE', url: `${T}/secrets/ghost`, status: 404, code: 'ISOMESH_ERR_SECRET_NOT_FOUND' },
  { name: 'read a secret value', method: 'GET', url: `${T}/secrets/k`, status: 404, code: 'ISOMESH_ERR_API_NOT_FOUND' },
];

test(`table: ${TABLE.length} bad requests answer 4xx with their code and change nothing`, async (t) => {
  assert.ok(TABLE.length >= 45);
  const f = await startAdmin({ listenerPorts: { min: 17300, max: 17399 } });
  t.after(() => f.close());
  const ok = async (method: string, url: string, body?: unknown) => {
    const r = await f.call(method, url, body);
    assert.ok(r.status < 300, `setup ${method} ${url}: ${r.status} ${r.text}`);
    return r;
  };
  await ok('PUT', T, {});
  await ok('PUT', '/v1/tenants/b', {});
  await ok('PUT', `${T}/quota`, { maxPlugins: 2, maxBundleBytes: 64 * 1024 });
  const tokenA = (await ok('POST', `${T}/tokens`)).json.token as string;
  await ok('PUT', `${T}/services/web`, { vip: '10.20.0.1:80', endpoints: ep });
  await ok('PUT', `${T}/routes/api`, { match: { pathPrefix: '/api' }, to: { service: 'web' } });
  await ok('POST', `${T}/plugins/p/versions`, { source: 'export default { onRequest() {} }' });
  await ok('POST', `${T}/plugins/p/versions`, { source: 'export default { onRequest() { return; } }' });
  await ok('PUT', `${T}/plugins/p/active`, { version: 1 });
  await ok('POST', `${T}/plugins/inactive/versions`, { source: 'export default { onResponse() {} }' });
  await ok('PUT', `${T}/chain`, [{ plugin: 'p', routes: ['api'] }]);
  await ok('PUT', `${T}/secrets/k`, { value: 'v' });

  const before = f.store.dump();
  const tokens: Record<Who, string | null> = { admin: ADMIN_TOKEN, 'tenant-a': tokenA, none: null, bad: 'not-a-real-token' };
  const failures: string[] = [];
  for (const c of TABLE) {
    const headers: Record<string, string> = {};
    const token = tokens[c.who ?? 'admin'];
    if (token !== null) headers.authorization = `Bearer ${token}`;
    let payload: string | undefined;
    if (c.raw !== undefined || c.body !== undefined) {
      headers['content-type'] = c.contentType ?? 'application/json';
      payload = c.raw ?? JSON.stringify(c.body);
    }
    const res = await f.app.inject({ method: c.method, url: c.url, headers, payload });
    let code: string | undefined;
    try {
      code = JSON.parse(res.body).error?.code;
    } catch {
      code = `(not JSON: ${res.body.slice(0, 80)})`;
    }
    const message = (() => {
      try {
        return JSON.parse(res.body).error?.message as string | undefined;
      } catch {
        return undefined;
      }
    })();
    if (res.statusCode !== c.status || code !== c.code || !message) {
      failures.push(`${c.name}: got ${res.statusCode} ${code} (${message}), want ${c.status} ${c.code}`);
    }
  }
  assert.deepEqual(failures, []);
  assert.deepEqual(f.store.dump(), before, 'no bad request changed the state');
  assert.equal(f.proxy.bound.size, 2, 'no listener was bound or removed');
});
