// Semantic validation and normalisation of configuration objects. The admin API's JSON schemas catch
// shape errors first (types, ranges, unknown fields); these checks are the store's own guard, so a
// caller that bypasses the API (main.ts, tests, a future CLI) still cannot store anything invalid.
// Every failure names the offending field.

import { isIP } from 'node:net';
import type { ErrorCode } from '../errors.ts';
import { STRING_CHARS, fail, intField, isObject, rejectUnknown, stringField, tokenField } from './fields.ts';
import { compileRouteRegex } from './regex.ts';
import {
  DEFAULT_QUOTA,
  DEFAULT_TENANT_SETTINGS,
  OBJECT_NAME_RE,
  TENANT_NAME_RE,
} from './model.ts';
import type {
  Activation,
  ChainEntry,
  Endpoint,
  HashOn,
  HeaderMatch,
  PathNormalization,
  Quota,
  Route,
  RouteMatch,
  RouteTarget,
  Service,
  ServiceProtocol,
  TenantSettings,
} from './model.ts';

/** Inclusive bounds of every quota field; also used by the admin API's schema. */
export const QUOTA_BOUNDS: Readonly<Record<keyof Quota, { min: number; max: number }>> = Object.freeze({
  memoryMb: { min: 8, max: 16384 },
  cpuMsPerRequest: { min: 1, max: 60_000 },
  cpuMsPerSecond: { min: 1, max: 1_000_000 },
  maxConcurrentRequests: { min: 1, max: 1_000_000 },
  maxConnections: { min: 1, max: 1_000_000 },
  requestsPerSecond: { min: 0, max: 10_000_000 },
  maxPlugins: { min: 0, max: 1024 },
  maxBundleBytes: { min: 1024, max: 32 * 1024 * 1024 },
  weight: { min: 1, max: 10_000 },
});

export const SERVICE_DEFAULTS = Object.freeze({ lb: 'round_robin' as const, connectTimeoutMs: 1000, timeoutMs: 15_000 });
export const LIMITS = Object.freeze({
  timeoutMs: 3_600_000,
  endpoints: 1024,
  endpointWeight: 10_000,
  retryAttempts: 10,
  headersPerRoute: 32,
  weightedTargets: 64,
  chainEntries: 64,
  secretBytes: 64 * 1024,
  regexChars: 1024,
  stringChars: STRING_CHARS,
  upgrades: 8,
  tokenChars: 256,
});

const NAME_CODES = {
  tenant: 'ISOMESH_ERR_TENANT_BAD_NAME',
  service: 'ISOMESH_ERR_SERVICE_BAD_NAME',
  route: 'ISOMESH_ERR_ROUTE_BAD_NAME',
  plugin: 'ISOMESH_ERR_PLUGIN_BAD_NAME',
  secret: 'ISOMESH_ERR_SECRET_BAD_NAME',
  workload: 'ISOMESH_ERR_WORKLOAD_BAD_NAME',
  ratelimit: 'ISOMESH_ERR_RATELIMIT_BAD_NAME',
} as const satisfies Record<string, ErrorCode>;

export type ObjectKind = keyof typeof NAME_CODES;

export function checkName(kind: ObjectKind, name: unknown): string {
  const re = kind === 'tenant' ? TENANT_NAME_RE : OBJECT_NAME_RE;
  if (typeof name !== 'string' || !re.test(name)) {
    fail(
      NAME_CODES[kind],
      `${kind === 'ratelimit' ? 'rate limit' : kind} name ${JSON.stringify(name)} is invalid: use 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
    );
  }
  return name;
}

// ---- quota ----------------------------------------------------------------------------------

export function validateQuotaPatch(patch: unknown): Partial<Quota> {
  const code = 'ISOMESH_ERR_QUOTA_INVALID';
  if (!isObject(patch)) fail(code, 'quota must be an object');
  rejectUnknown(code, '', patch, Object.keys(QUOTA_BOUNDS));
  const out: Partial<Quota> = {};
  for (const [key, b] of Object.entries(QUOTA_BOUNDS) as Array<[keyof Quota, { min: number; max: number }]>) {
    if (patch[key] === undefined) continue;
    out[key] = intField(code, key, patch[key], b.min, b.max);
  }
  return out;
}

export function mergeQuota(base: Quota | undefined, patch: Partial<Quota>): Quota {
  return { ...(base ?? DEFAULT_QUOTA), ...patch };
}

// ---- tenant settings -------------------------------------------------------------------------

export const PATH_NORMALIZATIONS: readonly PathNormalization[] = ['base', 'merge_slashes', 'none'];

/** A partial update of TenantSettings; accessLog may itself be partial. */
export interface TenantSettingsPatch {
  pathNormalization?: PathNormalization;
  accessLog?: Partial<TenantSettings['accessLog']>;
}

/** The settings fields of a PUT /v1/tenants/{t} body (listenerPort, if present, is the caller's). */
export function validateTenantSettingsPatch(body: unknown): TenantSettingsPatch {
  const code = 'ISOMESH_ERR_TENANT_INVALID';
  if (body === null || body === undefined) return {};
  if (!isObject(body)) fail(code, 'tenant body must be an object');
  rejectUnknown(code, '', body, ['listenerPort', 'pathNormalization', 'accessLog']);
  const out: TenantSettingsPatch = {};
  if (body.pathNormalization !== undefined) {
    if (!PATH_NORMALIZATIONS.includes(body.pathNormalization as never)) {
      fail(code, `pathNormalization must be one of ${PATH_NORMALIZATIONS.join(', ')}, got ${JSON.stringify(body.pathNormalization)}`);
    }
    out.pathNormalization = body.pathNormalization as PathNormalization;
  }
  if (body.accessLog !== undefined) {
    const a = body.accessLog;
    if (!isObject(a)) fail(code, 'accessLog must be an object');
    rejectUnknown(code, 'accessLog', a, ['enabled', 'sample']);
    const log: Partial<TenantSettings['accessLog']> = {};
    if (a.enabled !== undefined) {
      if (typeof a.enabled !== 'boolean') fail(code, `accessLog.enabled must be a boolean, got ${JSON.stringify(a.enabled)}`);
      log.enabled = a.enabled;
    }
    if (a.sample !== undefined) {
      if (typeof a.sample !== 'number' || !Number.isFinite(a.sample) || a.sample < 0 || a.sample > 1) {
        fail(code, `accessLog.sample must be a number between 0 and 1, got ${JSON.stringify(a.sample)}`);
      }
      log.sample = a.sample;
    }
    out.accessLog = log;
  }
  return out;
}

/** Fields left out keep their value in base (the defaults for a new tenant). */
export function mergeTenantSettings(base: TenantSettings | undefined, patch: TenantSettingsPatch): TenantSettings {
  const b = base ?? DEFAULT_TENANT_SETTINGS;
  return {
    pathNormalization: patch.pathNormalization ?? b.pathNormalization,
    accessLog: { ...b.accessLog, ...patch.accessLog },
  };
}

// ---- services --------------------------------------------------------------------------------

/** Parses "ip:port" or "[v6]:port"; returns undefined when malformed. */
export function parseHostPort(s: string): { ip: string; port: number } | undefined {
  const m = /^\[([0-9a-fA-F:.]+)\]:(\d{1,5})$/.exec(s) ?? /^([0-9.]+):(\d{1,5})$/.exec(s);
  if (!m) return undefined;
  const ip = m[1]!;
  const port = Number(m[2]);
  const family = isIP(ip);
  if (family === 0 || (family === 6) !== s.startsWith('[')) return undefined;
  if (port < 1 || port > 65535) return undefined;
  return { ip, port };
}

const HOSTNAME_RE = /^(?=.{1,253}$)([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*$/;

function validateEndpoint(v: unknown, i: number): Endpoint {
  const code = 'ISOMESH_ERR_SERVICE_INVALID';
  const f = `endpoints[${i}]`;
  if (!isObject(v)) fail(code, `${f} must be an object`);
  rejectUnknown(code, f, v, ['address', 'port', 'weight']);
  const address = stringField(code, `${f}.address`, v.address, 253);
  if (isIP(address) === 0 && !HOSTNAME_RE.test(address)) {
    fail(code, `${f}.address must be an IP address or a hostname, got ${JSON.stringify(address)}`);
  }
  return {
    address,
    port: intField(code, `${f}.port`, v.port, 1, 65535),
    weight: v.weight === undefined ? 1 : intField(code, `${f}.weight`, v.weight, 1, LIMITS.endpointWeight),
  };
}

const LBS = ['round_robin', 'least_request', 'ring_hash'] as const;
const RETRY_ON = ['5xx', 'reset', 'connect-failure'] as const;
export const SERVICE_PROTOCOLS: readonly ServiceProtocol[] = ['http1', 'http2', 'grpc'];

function validateHashOn(code: ErrorCode, v: unknown): HashOn {
  if (v === 'sourceIp') return v;
  const forms = '"sourceIp", {"header": name} or {"cookie": name}';
  if (!isObject(v)) fail(code, `hashOn must be ${forms}, got ${JSON.stringify(v)}`);
  const keys = Object.keys(v);
  if (keys.length !== 1 || (keys[0] !== 'header' && keys[0] !== 'cookie')) fail(code, `hashOn must be ${forms}`);
  // Header names are case-insensitive (stored lower case); cookie names are case-sensitive.
  if (keys[0] === 'header') return { header: tokenField(code, 'hashOn.header', v.header, 'a header name', LIMITS.tokenChars).toLowerCase() };
  return { cookie: tokenField(code, 'hashOn.cookie', v.cookie, 'a cookie name', LIMITS.tokenChars) };
}

export function validateService(name: string, body: unknown): Service {
  const code = 'ISOMESH_ERR_SERVICE_INVALID';
  checkName('service', name);
  if (!isObject(body)) fail(code, 'service body must be an object');
  rejectUnknown(code, '', body, ['vip', 'endpoints', 'lb', 'protocol', 'hashOn', 'connectTimeoutMs', 'timeoutMs', 'retries', 'circuitBreaker']);
  const svc: Service = {
    name,
    endpoints: [],
    lb: SERVICE_DEFAULTS.lb,
    protocol: 'http1',
    connectTimeoutMs: SERVICE_DEFAULTS.connectTimeoutMs,
    timeoutMs: SERVICE_DEFAULTS.timeoutMs,
  };
  if (body.vip !== undefined) {
    const vip = stringField(code, 'vip', body.vip, 64);
    if (!parseHostPort(vip)) fail(code, `vip must be "ip:port" (IPv6 as "[addr]:port") with port 1-65535, got ${JSON.stringify(vip)}`);
    svc.vip = vip;
  }
  if (!Array.isArray(body.endpoints) || body.endpoints.length === 0) fail(code, 'endpoints must be a non-empty array');
  if (body.endpoints.length > LIMITS.endpoints) fail(code, `endpoints must have at most ${LIMITS.endpoints} entries`);
  svc.endpoints = body.endpoints.map(validateEndpoint);
  if (body.lb !== undefined) {
    if (!LBS.includes(body.lb as never)) fail(code, `lb must be one of ${LBS.join(', ')}`);
    svc.lb = body.lb as Service['lb'];
  }
  if (body.protocol !== undefined) {
    if (!SERVICE_PROTOCOLS.includes(body.protocol as never)) fail(code, `protocol must be one of ${SERVICE_PROTOCOLS.join(', ')}`);
    svc.protocol = body.protocol as ServiceProtocol;
  }
  if (body.hashOn !== undefined) {
    if (svc.lb !== 'ring_hash') fail(code, `hashOn applies only to lb "ring_hash" (lb is "${svc.lb}")`);
    svc.hashOn = validateHashOn(code, body.hashOn);
  } else if (svc.lb === 'ring_hash') {
    svc.hashOn = 'sourceIp';
  }
  if (body.connectTimeoutMs !== undefined) svc.connectTimeoutMs = intField(code, 'connectTimeoutMs', body.connectTimeoutMs, 1, LIMITS.timeoutMs);
  if (body.timeoutMs !== undefined) svc.timeoutMs = intField(code, 'timeoutMs', body.timeoutMs, 1, LIMITS.timeoutMs);
  if (body.retries !== undefined) {
    const r = body.retries;
    if (!isObject(r)) fail(code, 'retries must be an object');
    rejectUnknown(code, 'retries', r, ['attempts', 'on']);
    const attempts = intField(code, 'retries.attempts', r.attempts, 0, LIMITS.retryAttempts);
    if (!Array.isArray(r.on) || r.on.length === 0) fail(code, 'retries.on must be a non-empty array');
    for (const [i, o] of r.on.entries()) {
      if (!RETRY_ON.includes(o as never)) fail(code, `retries.on[${i}] must be one of ${RETRY_ON.join(', ')}`);
    }
    svc.retries = { attempts, on: [...new Set(r.on as Array<(typeof RETRY_ON)[number]>)] };
  }
  if (body.circuitBreaker !== undefined) {
    const c = body.circuitBreaker;
    if (!isObject(c)) fail(code, 'circuitBreaker must be an object');
    const keys = ['maxConnections', 'maxPending', 'consecutive5xx', 'ejectionMs'] as const;
    rejectUnknown(code, 'circuitBreaker', c, keys);
    svc.circuitBreaker = {
      maxConnections: intField(code, 'circuitBreaker.maxConnections', c.maxConnections, 1, 1_000_000),
      maxPending: intField(code, 'circuitBreaker.maxPending', c.maxPending, 0, 1_000_000),
      consecutive5xx: intField(code, 'circuitBreaker.consecutive5xx', c.consecutive5xx, 1, 10_000),
      ejectionMs: intField(code, 'circuitBreaker.ejectionMs', c.ejectionMs, 1, LIMITS.timeoutMs),
    };
  }
  return svc;
}

// ---- routes ----------------------------------------------------------------------------------

function checkRegex(code: ErrorCode, field: string, v: unknown): string {
  const s = stringField(code, field, v, LIMITS.regexChars);
  try {
    compileRouteRegex(s);
  } catch (err) {
    fail(code, `${field} ${(err as Error).message}`);
  }
  return s;
}

function validateHeaderMatch(v: unknown, i: number): HeaderMatch {
  const code = 'ISOMESH_ERR_ROUTE_INVALID';
  const f = `match.headers[${i}]`;
  if (!isObject(v)) fail(code, `${f} must be an object`);
  rejectUnknown(code, f, v, ['name', 'exact', 'prefix', 'regex', 'present']);
  const name = stringField(code, `${f}.name`, v.name, 256);
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(name)) fail(code, `${f}.name must be an HTTP header name`);
  const kinds = (['exact', 'prefix', 'regex', 'present'] as const).filter((k) => v[k] !== undefined);
  if (kinds.length !== 1) fail(code, `${f} must have exactly one of exact, prefix, regex, present`);
  const lname = name.toLowerCase();
  switch (kinds[0]) {
    case 'exact':
      if (typeof v.exact !== 'string') fail(code, `${f}.exact must be a string`);
      return { name: lname, exact: v.exact };
    case 'prefix':
      return { name: lname, prefix: stringField(code, `${f}.prefix`, v.prefix) };
    case 'regex':
      return { name: lname, regex: checkRegex(code, `${f}.regex`, v.regex) };
    default:
      if (typeof v.present !== 'boolean') fail(code, `${f}.present must be a boolean`);
      return { name: lname, present: v.present };
  }
}

function validateMatch(v: unknown): RouteMatch {
  const code = 'ISOMESH_ERR_ROUTE_INVALID';
  if (!isObject(v)) fail(code, 'match must be an object');
  rejectUnknown(code, 'match', v, ['host', 'pathPrefix', 'path', 'pathRegex', 'method', 'headers']);
  const m: RouteMatch = {};
  if (v.host !== undefined) {
    const host = stringField(code, 'match.host', v.host, 253).toLowerCase();
    if (!/^(\*\.)?[a-z0-9.-]+(:\d{1,5})?$/.test(host)) fail(code, `match.host must be a hostname (optionally "*.suffix"), got ${JSON.stringify(v.host)}`);
    m.host = host;
  }
  const paths = (['pathPrefix', 'path', 'pathRegex'] as const).filter((k) => v[k] !== undefined);
  if (paths.length > 1) fail(code, 'match may have only one of pathPrefix, path, pathRegex');
  if (v.pathPrefix !== undefined) {
    m.pathPrefix = stringField(code, 'match.pathPrefix', v.pathPrefix);
    if (!m.pathPrefix.startsWith('/')) fail(code, 'match.pathPrefix must start with "/"');
  }
  if (v.path !== undefined) {
    m.path = stringField(code, 'match.path', v.path);
    if (!m.path.startsWith('/')) fail(code, 'match.path must start with "/"');
  }
  if (v.pathRegex !== undefined) m.pathRegex = checkRegex(code, 'match.pathRegex', v.pathRegex);
  if (v.method !== undefined) {
    const method = stringField(code, 'match.method', v.method, 32);
    if (!/^[A-Z]+$/.test(method)) fail(code, `match.method must be an upper-case HTTP method, got ${JSON.stringify(method)}`);
    m.method = method;
  }
  if (v.headers !== undefined) {
    if (!Array.isArray(v.headers)) fail(code, 'match.headers must be an array');
    if (v.headers.length > LIMITS.headersPerRoute) fail(code, `match.headers must have at most ${LIMITS.headersPerRoute} entries`);
    m.headers = v.headers.map(validateHeaderMatch);
  }
  return m;
}

function validateTarget(v: unknown): RouteTarget {
  const code = 'ISOMESH_ERR_ROUTE_INVALID';
  if (!isObject(v)) fail(code, 'to must be an object');
  rejectUnknown(code, 'to', v, ['service', 'weighted']);
  if ((v.service === undefined) === (v.weighted === undefined)) fail(code, 'to must have exactly one of service, weighted');
  if (v.service !== undefined) {
    if (typeof v.service !== 'string' || !OBJECT_NAME_RE.test(v.service)) fail(code, 'to.service must be a service name');
    return { service: v.service };
  }
  const w = v.weighted;
  if (!Array.isArray(w) || w.length === 0) fail(code, 'to.weighted must be a non-empty array');
  if (w.length > LIMITS.weightedTargets) fail(code, `to.weighted must have at most ${LIMITS.weightedTargets} entries`);
  const weighted = w.map((t, i) => {
    const f = `to.weighted[${i}]`;
    if (!isObject(t)) fail(code, `${f} must be an object`);
    rejectUnknown(code, f, t, ['service', 'weight']);
    if (typeof t.service !== 'string' || !OBJECT_NAME_RE.test(t.service)) fail(code, `${f}.service must be a service name`);
    return { service: t.service, weight: intField(code, `${f}.weight`, t.weight, 0, LIMITS.endpointWeight) };
  });
  if (weighted.every((t) => t.weight === 0)) fail(code, 'to.weighted must have at least one weight above 0');
  return { weighted };
}

/** Validates a route's shape; the store checks that its services exist. */
export function validateRoute(name: string, body: unknown): Route {
  const code = 'ISOMESH_ERR_ROUTE_INVALID';
  checkName('route', name);
  if (!isObject(body)) fail(code, 'route body must be an object');
  rejectUnknown(code, '', body, ['match', 'to', 'timeoutMs', 'upgrades']);
  const route: Route = { name, match: validateMatch(body.match ?? {}), to: validateTarget(body.to), upgrades: ['websocket'] };
  if (body.timeoutMs !== undefined) route.timeoutMs = intField(code, 'timeoutMs', body.timeoutMs, 1, LIMITS.timeoutMs);
  if (body.upgrades !== undefined) route.upgrades = validateUpgrades(code, body.upgrades);
  return route;
}

/** Upgrade protocol tokens, lower case (compared case-insensitively, RFC 9110 §7.8); [] refuses upgrades. */
function validateUpgrades(code: ErrorCode, v: unknown): string[] {
  if (!Array.isArray(v)) fail(code, 'upgrades must be an array of protocol names, e.g. ["websocket"]');
  if (v.length > LIMITS.upgrades) fail(code, `upgrades must have at most ${LIMITS.upgrades} entries`);
  const out: string[] = [];
  for (const [i, u] of v.entries()) {
    const p = tokenField(code, `upgrades[${i}]`, u, 'a protocol name', 64).toLowerCase();
    if (out.includes(p)) fail(code, `upgrades[${i}] repeats "${p}"`);
    out.push(p);
  }
  return out;
}

export function routeServices(route: Route): string[] {
  return 'service' in route.to ? [route.to.service] : route.to.weighted.map((w) => w.service);
}

// ---- chain, activation, secrets, workloads -------------------------------------------------

/** Plugin configs are data for a plugin, not a place to store documents: bounded depth and size. */
export const CONFIG_MAX_DEPTH = 32;
export const CONFIG_MAX_NODES = 10_000;

/**
 * Walks a parsed JSON value without recursion (so a hostile 50,000-deep value cannot overflow the
 * stack) and says what is wrong with it, or undefined when it is within the bounds.
 */
export function jsonShapeProblem(value: unknown, maxDepth: number, maxNodes: number): string | undefined {
  const stack: Array<[unknown, number]> = [[value, 1]];
  let nodes = 0;
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (++nodes > maxNodes) return `must have at most ${maxNodes} values`;
    if (v === null || typeof v !== 'object') continue;
    if (depth > maxDepth) return `must be nested at most ${maxDepth} levels deep`;
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
  return undefined;
}

/** Validates chain entries' shape; the store checks plugins, activations and routes. */
export function validateChain(body: unknown): ChainEntry[] {
  const code = 'ISOMESH_ERR_CHAIN_INVALID';
  if (!Array.isArray(body)) fail(code, 'chain must be an array');
  if (body.length > LIMITS.chainEntries) fail(code, `chain must have at most ${LIMITS.chainEntries} entries`);
  return body.map((e, i) => {
    const f = `[${i}]`;
    if (!isObject(e)) fail(code, `${f} must be an object`);
    rejectUnknown(code, f, e, ['plugin', 'config', 'failurePolicy', 'routes']);
    if (typeof e.plugin !== 'string' || !OBJECT_NAME_RE.test(e.plugin)) fail(code, `${f}.plugin must be a plugin name`);
    if (e.config !== undefined && !isObject(e.config)) fail(code, `${f}.config must be an object`);
    if (e.config !== undefined) {
      const problem = jsonShapeProblem(e.config, CONFIG_MAX_DEPTH, CONFIG_MAX_NODES);
      if (problem) fail(code, `${f}.config ${problem}`);
    }
    if (e.failurePolicy !== undefined && e.failurePolicy !== 'closed' && e.failurePolicy !== 'open') {
      fail(code, `${f}.failurePolicy must be "closed" or "open"`);
    }
    const entry: ChainEntry = {
      plugin: e.plugin,
      config: (e.config as Record<string, unknown> | undefined) ?? {},
      failurePolicy: (e.failurePolicy as ChainEntry['failurePolicy'] | undefined) ?? 'closed',
    };
    if (e.routes !== undefined) {
      if (!Array.isArray(e.routes)) fail(code, `${f}.routes must be an array of route names`);
      for (const [j, r] of e.routes.entries()) {
        if (typeof r !== 'string' || !OBJECT_NAME_RE.test(r)) fail(code, `${f}.routes[${j}] must be a route name`);
      }
      entry.routes = [...new Set(e.routes as string[])];
    }
    return entry;
  });
}

export function validateActivation(body: unknown): Activation {
  const code = 'ISOMESH_ERR_API_VALIDATION';
  if (!isObject(body)) fail(code, 'activation must be an object');
  rejectUnknown(code, '', body, ['version', 'canary']);
  const a: Activation = { version: intField(code, 'version', body.version, 1, Number.MAX_SAFE_INTEGER) };
  if (body.canary !== undefined) {
    const c = body.canary;
    if (!isObject(c)) fail(code, 'canary must be an object');
    rejectUnknown(code, 'canary', c, ['version', 'percent']);
    a.canary = {
      version: intField(code, 'canary.version', c.version, 1, Number.MAX_SAFE_INTEGER),
      percent: intField(code, 'canary.percent', c.percent, 0, 100),
    };
    if (a.canary.version === a.version) fail(code, 'canary.version must differ from version');
  }
  return a;
}

export function validateSecretValue(value: unknown): string {
  const code = 'ISOMESH_ERR_SECRET_INVALID';
  if (typeof value !== 'string') fail(code, 'value must be a string');
  if (Buffer.byteLength(value) > LIMITS.secretBytes) fail(code, `value must be at most ${LIMITS.secretBytes} bytes`);
  return value;
}

export function validateWorkload(body: unknown): { cgroupPath: string; proxyAddress: string } {
  const code = 'ISOMESH_ERR_WORKLOAD_INVALID';
  if (!isObject(body)) fail(code, 'workload body must be an object');
  rejectUnknown(code, '', body, ['cgroupPath', 'proxyAddress']);
  const cgroupPath = stringField(code, 'cgroupPath', body.cgroupPath, 4096);
  if (!cgroupPath.startsWith('/') || cgroupPath.split('/').includes('..')) fail(code, 'cgroupPath must be an absolute path without ".."');
  let proxyAddress = '127.0.0.1';
  if (body.proxyAddress !== undefined) {
    proxyAddress = stringField(code, 'proxyAddress', body.proxyAddress, 64);
    if (isIP(proxyAddress) === 0) fail(code, `proxyAddress must be an IP address, got ${JSON.stringify(proxyAddress)}`);
  }
  return { cgroupPath, proxyAddress };
}
