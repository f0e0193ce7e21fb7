// Test and benchmark fixtures: TenantConfigs shaped as the store builds them, and node facts.

import { DEFAULT_QUOTA, DEFAULT_TENANT_SETTINGS, type Route, type Service, type TenantConfig } from '../store/model.ts';
import type { NodeFacts } from './translate.ts';

export function service(name: string, over: Partial<Service> = {}): Service {
  return {
    name,
    endpoints: [{ address: '127.0.0.1', port: 9000, weight: 1 }],
    lb: 'round_robin',
    protocol: 'http1',
    connectTimeoutMs: 1000,
    timeoutMs: 15_000,
    ...over,
  };
}

export function route(name: string, over: Partial<Route> & Pick<Route, 'to'>): Route {
  return { name, match: {}, upgrades: ['websocket'], ...over };
}

export function tenant(name: string, over: Partial<TenantConfig> = {}): TenantConfig {
  return {
    name,
    listenerPort: 17000,
    quota: { ...DEFAULT_QUOTA },
    services: [],
    routes: [],
    chain: [],
    plugins: {},
    secrets: {},
    settings: { ...DEFAULT_TENANT_SETTINGS, accessLog: { ...DEFAULT_TENANT_SETTINGS.accessLog } },
    rateLimits: [],
    generation: 1,
    ...over,
  };
}

export function facts(over: Partial<NodeFacts> = {}): NodeFacts {
  return {
    listenAddresses: () => ['127.0.0.1'],
    grpcTarget: { pipe: '/var/lib/isomesh/grpc.sock' },
    resolve: (h) => (h === 'localhost' ? ['127.0.0.1'] : undefined),
    ...over,
  };
}

/** A tenant using every feature the translator knows: for "everything it emits is valid" tests. */
export function richTenant(name: string, port = 17000): TenantConfig {
  return tenant(name, {
    listenerPort: port,
    quota: { ...DEFAULT_QUOTA, requestsPerSecond: 50 },
    services: [
      service('web', {
        vip: '10.96.0.10:80',
        endpoints: [
          { address: '127.0.0.1', port: 9001, weight: 3 },
          { address: '127.0.0.2', port: 9001, weight: 1 },
          { address: 'localhost', port: 9002, weight: 2 },
        ],
        lb: 'least_request',
        retries: { attempts: 2, on: ['5xx', 'connect-failure'] },
        circuitBreaker: { maxConnections: 100, maxPending: 10, consecutive5xx: 5, ejectionMs: 30_000 },
      }),
      service('api', { vip: '[fd00::10]:8080', protocol: 'grpc', lb: 'ring_hash', hashOn: { header: 'x-user' }, endpoints: [{ address: '::1', port: 9003, weight: 1 }] }),
      service('cart', { protocol: 'http2', lb: 'ring_hash', hashOn: { cookie: 'sid' } }),
      service('ring', { protocol: 'grpc', lb: 'ring_hash' }),
    ],
    routes: [
      route('catch-all', { match: { pathPrefix: '/' }, to: { service: 'web' } }),
      route('api', { match: { host: 'api.example.com', pathPrefix: '/pkg.Api/' }, to: { service: 'api' }, timeoutMs: 2500 }),
      route('wild', { match: { host: '*.shop.example', path: '/cart', method: 'POST' }, to: { service: 'cart' }, upgrades: [] }),
      route('split', {
        match: { pathRegex: '/v[0-9]+/.*', headers: [{ name: 'x-canary', exact: '1' }, { name: 'x-debug', present: false }, { name: 'x-p', prefix: 'a' }, { name: 'x-r', regex: 'b+' }] },
        to: { weighted: [{ service: 'api', weight: 80 }, { service: 'ring', weight: 20 }] },
      }),
      route('ws', { match: { pathPrefix: '/ws' }, to: { service: 'web' }, upgrades: ['websocket', 'h2c'] }),
    ],
    chain: [
      { plugin: 'auth', config: {}, failurePolicy: 'closed' },
      { plugin: 'body', config: {}, failurePolicy: 'open', routes: ['api'] },
    ],
    plugins: {
      auth: { name: 'auth', active: { version: 1, digest: 'sha256:a', code: '', meta: { hooks: ['onRequest'] } } },
      body: {
        name: 'body',
        active: { version: 2, digest: 'sha256:b', code: '', meta: { hooks: ['onRequest', 'onResponse'], body: { request: 4 * 1024 * 1024 } } },
        canary: { version: 3, digest: 'sha256:c', code: '', meta: { hooks: ['onResponse'], body: { response: 2 * 1024 * 1024 } }, percent: 10 },
      },
    },
    secrets: { 'api-key': 'tenant-secret-value' },
    settings: { pathNormalization: 'merge_slashes', accessLog: { enabled: true, sample: 1 } },
    rateLimits: [
      { name: 'per-ip', descriptors: [{ key: 'remote_address' }], limit: { requestsPerUnit: 100, unit: 'second' }, shadow: false },
      { name: 'per-route-user', descriptors: [{ key: 'route' }, { key: 'header:x-user' }], limit: { requestsPerUnit: 10, unit: 'minute' }, shadow: true },
      { name: 'get-paths', descriptors: [{ key: 'method', value: 'GET' }, { key: 'path' }], limit: { requestsPerUnit: 5, unit: 'hour' }, shadow: false },
    ],
  });
}
