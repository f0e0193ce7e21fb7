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
const RL = `${T}/ratelimits`;
const lim = { requestsPerUnit: 10, unit: 'second' };
const rl = (descriptors: unknown, extra: Record<string, unknown> = {}) => ({ descriptors, limit: lim, ...extra });

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
  // tenant settings
  { name: 'pathNormalization unknown', method: 'PUT', url: T, body: { pathNormalization: 'strict' }, status: 400, code: 'ISOMESH_ERR_TENANT_INVALID' },
  { name: 'pathNormalization not a string', method: 'PUT', url: T, body: { pathNormalization: 1 }, status: 400, code: 'ISOMESH_ERR_TENANT_INVALID' },
  { name: 'accessLog.sample above 1', method: 'PUT', url: T, body: { accessLog: { sample: 1.5 } }, status: 400, code: 'ISOMESH_ERR_TENANT_INVALID' },
  { name: 'accessLog.sample negative', method: 'PUT', url: T, body: { accessLog: { sample: -0.1 } }, status: 400, code: 'ISOMESH_ERR_TENANT_INVALID' },
  { name: 'accessLog.sample as string', method: 'PUT', url: T, body: { accessLog: { sample: '0.5' } }, status: 400, code: 'ISOMESH_ERR_TENANT_INVALID' },
  { name: 'accessLog.enabled as string', method: 'PUT', url: T, body: { accessLog: { enabled: 'true' } }, status: 400, code: 'ISOMESH_ERR_TENANT_INVALID' },
  { name: 'accessLog unknown field', method: 'PUT', url: T, body: { accessLog: { enabled: true, format: 'text' } }, status: 400, code: 'ISOMESH_ERR_TENANT_INVALID' },
  { name: 'accessLog as boolean', method: 'PUT', url: T, body: { accessLog: true }, status: 400, code: 'ISOMESH_ERR_TENANT_INVALID' },
  { name: 'accessLog null', method: 'PUT', url: T, body: { accessLog: null }, status: 400, code: 'ISOMESH_ERR_TENANT_INVALID' },
  { name: 'new tenant with bad settings binds nothing', method: 'PUT', url: '/v1/tenants/c', body: { accessLog: { sample: 2 } }, status: 400, code: 'ISOMESH_ERR_TENANT_INVALID' },
  { name: 'port move with bad settings', method: 'PUT', url: T, body: { listenerPort: 17350, pathNormalization: 'x' }, status: 400, code: 'ISOMESH_ERR_TENANT_INVALID' },
  { name: 'tenant token changes its settings', method: 'PUT', url: T, body: { accessLog: { enabled: true } }, who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
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
  { name: 'service protocol unknown', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, protocol: 'h3' }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'service protocol upper case', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, protocol: 'GRPC' }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'service protocol null', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, protocol: null }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'hashOn without lb', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, hashOn: 'sourceIp' }, status: 400, code: 'ISOMESH_ERR_SERVICE_INVALID' },
  { name: 'hashOn with least_request', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, lb: 'least_request', hashOn: { header: 'x-user' } }, status: 400, code: 'ISOMESH_ERR_SERVICE_INVALID' },
  { name: 'hashOn unknown string', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, lb: 'ring_hash', hashOn: 'destinationIp' }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'hashOn header with a space', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, lb: 'ring_hash', hashOn: { header: 'x user' } }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'hashOn header empty', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, lb: 'ring_hash', hashOn: { header: '' } }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'hashOn header as number', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, lb: 'ring_hash', hashOn: { header: 7 } }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'hashOn cookie with a separator', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, lb: 'ring_hash', hashOn: { cookie: 'a;b' } }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'hashOn header and cookie', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, lb: 'ring_hash', hashOn: { header: 'a', cookie: 'b' } }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'hashOn empty object', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, lb: 'ring_hash', hashOn: {} }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'hashOn unknown form', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, lb: 'ring_hash', hashOn: { query: 'id' } }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'hashOn over 256 chars', method: 'PUT', url: `${T}/services/x`, body: { endpoints: ep, lb: 'ring_hash', hashOn: { header: 'h'.repeat(257) } }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
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
  { name: 'delete route used by a rate limit', method: 'DELETE', url: `${T}/routes/limited`, status: 409, code: 'ISOMESH_ERR_ROUTE_IN_USE' },
  { name: 'route upgrades not an array', method: 'PUT', url: `${T}/routes/r`, body: { to: { service: 'web' }, upgrades: 'websocket' }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'route upgrades over 8', method: 'PUT', url: `${T}/routes/r`, body: { to: { service: 'web' }, upgrades: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'route upgrades repeated', method: 'PUT', url: `${T}/routes/r`, body: { to: { service: 'web' }, upgrades: ['websocket', 'websocket'] }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'route upgrades repeated by case', method: 'PUT', url: `${T}/routes/r`, body: { to: { service: 'web' }, upgrades: ['WebSocket', 'websocket'] }, status: 400, code: 'ISOMESH_ERR_ROUTE_INVALID' },
  { name: 'route upgrade with a slash', method: 'PUT', url: `${T}/routes/r`, body: { to: { service: 'web' }, upgrades: ['HTTP/2.0'] }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'route upgrade empty', method: 'PUT', url: `${T}/routes/r`, body: { to: { service: 'web' }, upgrades: [''] }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
  { name: 'route upgrade not a string', method: 'PUT', url: `${T}/routes/r`, body: { to: { service: 'web' }, upgrades: [true] }, status: 400, code: 'ISOMESH_ERR_API_VALIDATION' },
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
  // rate limits
  { name: 'rate limit upper-case name', method: 'PUT', url: `${RL}/PerUser`, body: rl([{ key: 'path' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_BAD_NAME' },
  { name: 'rate limit name with underscore', method: 'PUT', url: `${RL}/per_user`, body: rl([{ key: 'path' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_BAD_NAME' },
  { name: 'rate limit 64-char name', method: 'GET', url: `${RL}/${'r'.repeat(64)}`, status: 400, code: 'ISOMESH_ERR_RATELIMIT_BAD_NAME' },
  { name: 'rate limit without descriptors', method: 'PUT', url: `${RL}/x`, body: { limit: lim }, status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit empty descriptors', method: 'PUT', url: `${RL}/x`, body: rl([]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit 9 descriptors', method: 'PUT', url: `${RL}/x`, body: rl(Array.from({ length: 9 }, (_, i) => ({ key: `header:h${i}` }))), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit descriptors not an array', method: 'PUT', url: `${RL}/x`, body: rl({ key: 'path' }), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit unknown key', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'cookie:session' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit key missing', method: 'PUT', url: `${RL}/x`, body: rl([{ value: '/x' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit header key without a name', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'header:' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit header name with a space', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'header:x user' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit upper-case key', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'PATH' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit repeated key', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'method', value: 'GET' }, { key: 'method' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit repeated header by case', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'header:X-User' }, { key: 'header:x-user' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit descriptor unknown field', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'path', prefix: '/a' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit empty value', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'path', value: '' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit value over 1024 chars', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'header:x', value: 'v'.repeat(1025) }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit value a number', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'header:x', value: 5 }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit value null', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'header:x', value: null }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit unknown route', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'route', value: 'ghost' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit route value not a name', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'route', value: 'API/v1' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: "rate limit on another tenant's route", method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'route', value: 'b-only' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit remote_address not an IP', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'remote_address', value: 'localhost' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit path without slash', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'path', value: 'login' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit lower-case method', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'method', value: 'post' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit header value with CR LF', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'header:x', value: 'a\r\nb' }]), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit without limit', method: 'PUT', url: `${RL}/x`, body: { descriptors: [{ key: 'path' }] }, status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit requestsPerUnit 0', method: 'PUT', url: `${RL}/x`, body: { descriptors: [{ key: 'path' }], limit: { requestsPerUnit: 0, unit: 'second' } }, status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit requestsPerUnit fractional', method: 'PUT', url: `${RL}/x`, body: { descriptors: [{ key: 'path' }], limit: { requestsPerUnit: 1.5, unit: 'second' } }, status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit requestsPerUnit over 1e9', method: 'PUT', url: `${RL}/x`, body: { descriptors: [{ key: 'path' }], limit: { requestsPerUnit: 1e9 + 1, unit: 'second' } }, status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit requestsPerUnit as string', method: 'PUT', url: `${RL}/x`, body: { descriptors: [{ key: 'path' }], limit: { requestsPerUnit: '10', unit: 'second' } }, status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit unit week', method: 'PUT', url: `${RL}/x`, body: { descriptors: [{ key: 'path' }], limit: { requestsPerUnit: 1, unit: 'week' } }, status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit unit missing', method: 'PUT', url: `${RL}/x`, body: { descriptors: [{ key: 'path' }], limit: { requestsPerUnit: 1 } }, status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit limit unknown field', method: 'PUT', url: `${RL}/x`, body: { descriptors: [{ key: 'path' }], limit: { ...lim, burst: 5 } }, status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit shadow as string', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'path' }], { shadow: 'false' }), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit unknown field', method: 'PUT', url: `${RL}/x`, body: rl([{ key: 'path' }], { enabled: true }), status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit body an array', method: 'PUT', url: `${RL}/x`, body: [{ key: 'path' }], status: 400, code: 'ISOMESH_ERR_RATELIMIT_INVALID' },
  { name: 'rate limit malformed JSON', method: 'PUT', url: `${RL}/x`, raw: '{"descriptors": [', status: 400, code: 'ISOMESH_ERR_API_BAD_JSON' },
  { name: 'rate limit on unknown tenant', method: 'PUT', url: '/v1/tenants/ghost/ratelimits/x', body: rl([{ key: 'path' }]), status: 404, code: 'ISOMESH_ERR_TENANT_NOT_FOUND' },
  { name: 'list rate limits of unknown tenant', method: 'GET', url: '/v1/tenants/ghost/ratelimits', status: 404, code: 'ISOMESH_ERR_TENANT_NOT_FOUND' },
  { name: 'unknown rate limit', method: 'GET', url: `${RL}/ghost`, status: 404, code: 'ISOMESH_ERR_RATELIMIT_NOT_FOUND' },
  { name: 'delete unknown rate limit', method: 'DELETE', url: `${RL}/ghost`, status: 404, code: 'ISOMESH_ERR_RATELIMIT_NOT_FOUND' },
  { name: 'rate limits without a token', method: 'GET', url: RL, who: 'none', status: 401, code: 'ISOMESH_ERR_AUTH_MISSING_TOKEN' },
  { name: "tenant token reads another tenant's rate limit", method: 'GET', url: '/v1/tenants/b/ratelimits/b-limit', who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: "tenant token deletes another tenant's rate limit", method: 'DELETE', url: '/v1/tenants/b/ratelimits/b-limit', who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: "tenant token writes another tenant's rate limit", method: 'PUT', url: '/v1/tenants/b/ratelimits/b-limit', body: rl([{ key: 'path' }]), who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: "tenant token lists another tenant's rate limits", method: 'GET', url: '/v1/tenants/b/ratelimits', who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: 'tenant token on a missing tenant rate limit', method: 'PUT', url: '/v1/tenants/zzz/ratelimits/x', body: rl([{ key: 'path' }]), who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  // node
  { name: 'node with a tenant token', method: 'GET', url: '/v1/node', who: 'tenant-a', status: 403, code: 'ISOMESH_ERR_AUTH_FORBIDDEN' },
  { name: 'node without a token', method: 'GET', url: '/v1/node', who: 'none', status: 401, code: 'ISOMESH_ERR_AUTH_MISSING_TOKEN' },
  { name: 'node is read-only', method: 'PUT', url: '/v1/node', body: { workers: 4 }, status: 404, code: 'ISOMESH_ERR_API_NOT_FOUND' },
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
  await ok('PUT', `${T}/routes/limited`, { match: { pathPrefix: '/l' }, to: { service: 'web' } });
  await ok('PUT', `${RL}/per-route`, rl([{ key: 'route', value: 'limited' }]));
  await ok('PUT', '/v1/tenants/b/services/b-web', { endpoints: ep });
  await ok('PUT', '/v1/tenants/b/routes/b-only', { to: { service: 'b-web' } });
  await ok('PUT', '/v1/tenants/b/ratelimits/b-limit', rl([{ key: 'remote_address' }]));
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
