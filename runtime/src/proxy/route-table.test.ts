import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { IncomingHttpHeaders } from 'node:http';
import type { Route } from '../store/model.ts';
import { IsomeshError } from '../errors.ts';
import { RouteTable, stripPort, vipKey } from './route-table.ts';
import { service } from './test-fixtures.ts';

const routes: Route[] = [
  { name: 'host-exact', match: { host: 'API.example.com' }, to: { service: 'api' } },
  { name: 'host-wild', match: { host: '*.wild.test', pathPrefix: '/w' }, to: { service: 'wild' } },
  { name: 'path-exact', match: { path: '/exact' }, to: { service: 'exact' } },
  { name: 'regex', match: { pathRegex: '/items/[0-9]+' }, to: { service: 'items' } },
  { name: 'method', match: { method: 'delete', pathPrefix: '/m/' }, to: { service: 'deleter' } },
  { name: 'hdr-exact', match: { pathPrefix: '/h', headers: [{ name: 'X-Env', exact: 'canary' }] }, to: { service: 'canary' } },
  { name: 'hdr-prefix', match: { pathPrefix: '/h', headers: [{ name: 'x-user', prefix: 'admin-' }] }, to: { service: 'admin' } },
  { name: 'hdr-regex', match: { pathPrefix: '/h', headers: [{ name: 'x-ver', regex: 'v[12]' }] }, to: { service: 'v12' } },
  { name: 'hdr-present', match: { pathPrefix: '/h', headers: [{ name: 'x-debug', present: true }] }, to: { service: 'debug' } },
  { name: 'hdr-absent', match: { pathPrefix: '/h', headers: [{ name: 'x-debug', present: false }] }, to: { service: 'nodebug' } },
  { name: 'prefix', match: { pathPrefix: '/pre' }, to: { service: 'pre' } },
];

const table = new RouteTable(routes, [service('vipsvc', [1], { vip: '10.96.0.10:8080' }), service('v6', [1], { vip: '[FD00::1]:80' })]);

function m(host: string, path: string, method = 'GET', headers: IncomingHttpHeaders = {}): string | undefined {
  const raw = Object.entries(headers).flatMap(([k, v]) => (Array.isArray(v) ? v.flatMap((x) => [k, x]) : [k, String(v)]));
  return table.match({ host, path, method, raw })?.route;
}

test('route matching: first match in list order across host, path, regex, method and headers', () => {
  const cases: Array<[string, string, string, IncomingHttpHeaders, string | undefined]> = [
    ['api.example.com', '/anything', 'GET', {}, 'host-exact'],
    ['api.example.com.evil', '/x', 'GET', {}, undefined],
    ['a.wild.test', '/w/1', 'GET', {}, 'host-wild'],
    ['a.b.wild.test', '/w', 'GET', {}, 'host-wild'],
    ['wild.test', '/w', 'GET', {}, undefined], // "*.wild.test" needs a label before the suffix
    ['a.wild.test', '/other', 'GET', {}, undefined],
    ['x', '/exact', 'GET', {}, 'path-exact'],
    ['x', '/exact/', 'GET', {}, undefined],
    ['x', '/items/42', 'GET', {}, 'regex'],
    ['x', '/items/42/more', 'GET', {}, undefined], // anchored
    ['x', '/xx/items/42', 'GET', {}, undefined],
    ['x', '/m/1', 'DELETE', {}, 'method'],
    ['x', '/m/1', 'GET', {}, undefined],
    ['x', '/h', 'GET', { 'x-env': 'canary' }, 'hdr-exact'],
    ['x', '/h', 'GET', { 'x-env': 'canary2', 'x-user': 'admin-bob' }, 'hdr-prefix'],
    ['x', '/h', 'GET', { 'x-ver': 'v2' }, 'hdr-regex'],
    ['x', '/h', 'GET', { 'x-ver': 'v22', 'x-debug': '' }, 'hdr-present'],
    ['x', '/h', 'GET', { 'x-ver': 'v3' }, 'hdr-absent'],
    ['x', '/prefix-and-more', 'GET', {}, 'prefix'],
    ['x', '/nothing', 'GET', {}, undefined],
  ];
  for (const [host, path, method, headers, want] of cases) {
    assert.equal(m(host, path, method, headers), want, `${method} ${host}${path} ${JSON.stringify(headers)}`);
  }
});

test('a weighted target splits roughly by weight', () => {
  const t = new RouteTable([{ name: 'split', match: { pathPrefix: '/' }, to: { weighted: [{ service: 'a', weight: 3 }, { service: 'b', weight: 1 }, { service: 'c', weight: 0 }] } }], []);
  const counts: Record<string, number> = { a: 0, b: 0, c: 0 };
  for (let i = 0; i < 4000; i++) counts[t.match({ host: '', path: '/', method: 'GET', raw: [] })!.service]++;
  assert.equal(counts.c, 0);
  assert.ok(counts.a / 4000 > 0.7 && counts.a / 4000 < 0.8, JSON.stringify(counts));
});

test('weighted pick follows the injected random source exactly', () => {
  let next = 0;
  const t = new RouteTable([{ name: 'split', match: {}, to: { weighted: [{ service: 'a', weight: 1 }, { service: 'b', weight: 3 }] } }], [], () => next);
  const pick = (r: number): string => {
    next = r;
    return t.match({ host: '', path: '/', method: 'GET', raw: [] })!.service;
  };
  assert.deepEqual([0, 0.24, 0.25, 0.99].map(pick), ['a', 'a', 'b', 'b']);
});

test('route timeout is carried with the choice', () => {
  const t = new RouteTable([{ name: 'slow', match: { path: '/s' }, to: { service: 'a' }, timeoutMs: 1234 }], []);
  assert.deepEqual(t.match({ host: '', path: '/s', method: 'GET', raw: [] }), { route: 'slow', service: 'a', timeoutMs: 1234, upgrades: ['websocket'] });
});

test('VIP lookup by original destination or Host authority', () => {
  assert.equal(table.serviceByVip('10.96.0.10:8080'), 'vipsvc');
  assert.equal(table.serviceByVip('10.96.0.10:8081'), undefined);
  assert.equal(table.serviceByVip('10.96.0.10'), undefined); // Host without port means :80
  assert.equal(table.serviceByVip('[fd00::1]'), 'v6');
  assert.equal(table.serviceByVip('[fd00::1]:80'), 'v6');
  assert.equal(table.serviceByVip(undefined), undefined);
  assert.equal(vipKey('Example.COM'), 'example.com:80');
  assert.equal(stripPort('a.b:81'), 'a.b');
  assert.equal(stripPort('[::1]:81'), '[::1]');
});

test('an invalid regex is rejected with ISOMESH_ERR_ROUTE_INVALID', () => {
  assert.throws(
    () => new RouteTable([{ name: 'bad', match: { pathRegex: '(' }, to: { service: 'a' } }], []),
    (err: unknown) => err instanceof IsomeshError && err.code === 'ISOMESH_ERR_ROUTE_INVALID' && err.message.includes('bad'),
  );
});

test('routes are tried by specificity, not by name: exact > longest prefix > regex > catch-all', () => {
  const svc = (name: string) => ({ name, endpoints: [{ address: '127.0.0.1', port: 1, weight: 1 }], lb: 'round_robin' as const, connectTimeoutMs: 1000, timeoutMs: 1000 });
  const routes = [
    { name: 'a-all', match: { pathPrefix: '/' }, to: { service: 'all' } },
    { name: 'b-api', match: { pathPrefix: '/api' }, to: { service: 'api' } },
    { name: 'c-api-v2', match: { pathPrefix: '/api/v2' }, to: { service: 'v2' } },
    { name: 'd-exact', match: { path: '/api/v2/health' }, to: { service: 'health' } },
    { name: 'e-regex', match: { pathRegex: '/api/[0-9]+' }, to: { service: 'num' } },
    { name: 'f-host', match: { pathPrefix: '/api', host: 'shop.local' }, to: { service: 'shop' } },
  ];
  const table = new RouteTable(routes, ['all', 'api', 'v2', 'health', 'num', 'shop'].map(svc));
  const pick = (path: string, host = '') => table.match({ host, path, method: 'GET', raw: [] })?.service;
  assert.equal(pick('/x'), 'all');
  assert.equal(pick('/api/users'), 'api');
  assert.equal(pick('/api/v2/users'), 'v2');
  assert.equal(pick('/api/v2/health'), 'health');
  assert.equal(pick('/api/42'), 'api', 'a prefix beats a regex');
  assert.equal(pick('/api/users', 'shop.local'), 'shop', 'same prefix, host condition wins');
});

test('regression (issue 7 also-worth-mending host-before-path): a host-only route beats another host catch-all prefix', () => {
  const routes: Route[] = [
    { name: 'catch-all', match: { pathPrefix: '/' }, to: { service: 'public' } },
    { name: 'admin', match: { host: 'admin.internal' }, to: { service: 'admin' } },
    { name: 'wild', match: { host: '*.internal', pathPrefix: '/' }, to: { service: 'wild' } },
  ];
  const table = new RouteTable(routes, ['public', 'admin', 'wild'].map((n) => service(n, [1])));
  const pick = (host: string, path = '/') => table.match({ host, path, method: 'GET', raw: [] })?.route;
  assert.equal(pick('admin.internal'), 'admin', 'exact host wins over any prefix on any host');
  assert.equal(pick('db.internal', '/x'), 'wild', 'a wildcard host wins over any host');
  assert.equal(pick('public.example'), 'catch-all');
});

test('regression (issue 7 #1 route-regex-redos): route regexes are RE2: linear time, RE2 syntax, bounded program', () => {
  const routes: Route[] = [
    { name: 'rx', match: { pathPrefix: '/rx', headers: [{ name: 'x-a', regex: '(a+)+$' }] }, to: { service: 'rx' } },
    { name: 'prx', match: { pathRegex: '/p/(a+)+$' }, to: { service: 'rx' } },
  ];
  const table = new RouteTable(routes, [service('rx', [1])]);
  // Under a backtracking engine each of these takes ~2^64 steps (the defect: a stalled event loop).
  const evil = 'a'.repeat(64) + '!';
  assert.equal(table.match({ host: '', path: '/rx', method: 'GET', raw: ['x-a', evil] }), undefined);
  assert.equal(table.match({ host: '', path: `/p/${evil}`, method: 'GET', raw: [] }), undefined);
  assert.equal(table.match({ host: '', path: '/rx', method: 'GET', raw: ['x-a', 'aaa'] })?.route, 'rx');
  for (const [pattern, why] of [['(a)\\1', /RE2 syntax/], ['(?=a)b', /RE2 syntax/], ['[a-z]{500}', /too complex/]] as const) {
    assert.throws(
      () => new RouteTable([{ name: 'bad', match: { pathRegex: pattern }, to: { service: 'rx' } }], [service('rx', [1])]),
      (err: unknown) => err instanceof IsomeshError && err.code === 'ISOMESH_ERR_ROUTE_INVALID' && why.test(err.message),
      pattern,
    );
  }
});
