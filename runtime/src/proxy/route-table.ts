// A tenant's routes compiled once per TenantConfig: lower-cased hosts, anchored regexes, weighted
// targets with cumulative weights, and the VIP → service index used when no route matches.
// match() is on the hot path: no allocation besides the result object.

import type { HeaderMatch, Route, Service } from '../store/model.ts';
import { IsomeshError } from '../errors.ts';
import { headerOf } from './headers.ts';
import { compileRouteRegex, routesInPrecedence, type RouteRegex } from '../store/index.ts';

export interface RouteRequest {
  /** Lower-cased host without port ("" when absent). */
  host: string;
  /** Path without query. */
  path: string;
  method: string;
  /** Request header fields [name, value, ...]. */
  raw: readonly string[];
}

export interface RouteChoice {
  route: string;
  service: string;
  timeoutMs: number | undefined;
  /** Upgrade protocols the route lets through. */
  upgrades: readonly string[];
}

type HeaderTest =
  | { name: string; kind: 'exact'; value: string }
  | { name: string; kind: 'prefix'; value: string }
  | { name: string; kind: 'regex'; re: RouteRegex }
  | { name: string; kind: 'present'; present: boolean };

interface CompiledRoute {
  name: string;
  hostExact: string | undefined;
  /** ".example.com" for "*.example.com"; "" for "*" (any host). */
  hostSuffix: string | undefined;
  path: string | undefined;
  prefix: string | undefined;
  regex: RouteRegex | undefined;
  method: string | undefined;
  headers: HeaderTest[] | undefined;
  services: string[];
  /** Cumulative weights, same length as services; empty for a single target. */
  cumulative: number[];
  timeoutMs: number | undefined;
  /** One immutable choice per target service (match() allocates nothing). */
  choices: RouteChoice[];
}

function anchored(source: string, route: string): RouteRegex {
  try {
    return compileRouteRegex(source);
  } catch (err) {
    throw new IsomeshError('ISOMESH_ERR_ROUTE_INVALID', `route ${route}: regex ${JSON.stringify(source)}: ${(err as Error).message}`);
  }
}

function compileHeader(m: HeaderMatch, route: string): HeaderTest {
  const name = m.name.toLowerCase();
  if ('exact' in m) return { name, kind: 'exact', value: m.exact };
  if ('prefix' in m) return { name, kind: 'prefix', value: m.prefix };
  if ('regex' in m) return { name, kind: 'regex', re: anchored(m.regex, route) };
  return { name, kind: 'present', present: m.present !== false };
}

function compileRoute(r: Route): CompiledRoute {
  const m = r.match;
  let hostExact: string | undefined;
  let hostSuffix: string | undefined;
  if (m.host !== undefined && m.host !== '') {
    const host = stripPort(m.host.toLowerCase());
    if (host === '*') hostSuffix = '';
    else if (host.startsWith('*.')) hostSuffix = host.slice(1);
    else hostExact = host;
  }
  let services: string[];
  let cumulative: number[] = [];
  if ('service' in r.to) {
    services = [r.to.service];
  } else {
    services = r.to.weighted.map((w) => w.service);
    let sum = 0;
    cumulative = r.to.weighted.map((w) => (sum += Math.max(0, w.weight)));
    if (services.length === 0) throw new IsomeshError('ISOMESH_ERR_ROUTE_INVALID', `route ${r.name}: no targets`);
  }
  return {
    name: r.name,
    hostExact,
    hostSuffix,
    path: m.path,
    prefix: m.pathPrefix,
    regex: m.pathRegex !== undefined ? anchored(m.pathRegex, r.name) : undefined,
    method: m.method?.toUpperCase(),
    headers: m.headers?.length ? m.headers.map((h) => compileHeader(h, r.name)) : undefined,
    services,
    cumulative,
    timeoutMs: r.timeoutMs,
    choices: services.map((service) => Object.freeze({ route: r.name, service, timeoutMs: r.timeoutMs, upgrades: Object.freeze([...(r.upgrades ?? ['websocket'])]) })),
  };
}

/** "Host: a.example.com:8080" → "a.example.com"; "[::1]:80" → "[::1]". */
export function stripPort(host: string): string {
  if (host.charCodeAt(0) === 91 /* [ */) {
    const end = host.indexOf(']');
    return end === -1 ? host : host.slice(0, end + 1);
  }
  const colon = host.indexOf(':');
  return colon === -1 ? host : host.slice(0, colon);
}

function headersMatch(tests: HeaderTest[], raw: readonly string[]): boolean {
  for (const t of tests) {
    const v = headerOf(raw, t.name);
    switch (t.kind) {
      case 'present':
        if ((v !== undefined) !== t.present) return false;
        break;
      case 'exact':
        if (v !== t.value) return false;
        break;
      case 'prefix':
        if (v === undefined || !v.startsWith(t.value)) return false;
        break;
      case 'regex':
        if (v === undefined || !t.re.test(v)) return false;
        break;
    }
  }
  return true;
}

function routeMatches(r: CompiledRoute, req: RouteRequest): boolean {
  if (r.hostExact !== undefined && r.hostExact !== req.host) return false;
  if (r.hostSuffix !== undefined && r.hostSuffix !== '' && !(req.host.endsWith(r.hostSuffix) && req.host.length > r.hostSuffix.length)) return false;
  if (r.method !== undefined && r.method !== req.method) return false;
  if (r.path !== undefined && r.path !== req.path) return false;
  if (r.prefix !== undefined && !req.path.startsWith(r.prefix)) return false;
  if (r.regex !== undefined && !r.regex.test(req.path)) return false;
  if (r.headers !== undefined && !headersMatch(r.headers, req.raw)) return false;
  return true;
}

function pickWeighted(r: CompiledRoute, random: () => number): RouteChoice {
  const choices = r.choices;
  if (r.cumulative.length === 0) return choices[0]!;
  const total = r.cumulative[r.cumulative.length - 1]!;
  if (total <= 0) return choices[0]!;
  const x = random() * total;
  for (let i = 0; i < r.cumulative.length; i++) if (x < r.cumulative[i]!) return choices[i]!;
  return choices[choices.length - 1]!;
}

/** Normalise "ip:port" / "[v6]:port" for VIP lookups; a Host without a port means port 80. */
export function vipKey(authority: string): string {
  const a = authority.toLowerCase();
  if (a.charCodeAt(0) === 91 /* [ */) return a.endsWith(']') ? `${a}:80` : a;
  const colon = a.indexOf(':');
  if (colon === -1) return `${a}:80`;
  // A bare IPv6 address without brackets: treat as host only.
  return a.indexOf(':', colon + 1) === -1 ? a : `[${a}]:80`;
}

export class RouteTable {
  readonly #routes: CompiledRoute[];
  readonly #vips: Map<string, string>;
  readonly #random: () => number;

  /** Throws ISOMESH_ERR_ROUTE_INVALID for a route that cannot be compiled (bad regex, no targets). */
  constructor(routes: Route[], services: Service[], random: () => number = Math.random) {
    this.#routes = routesInPrecedence(routes).map(compileRoute);
    this.#vips = new Map();
    for (const s of services) if (s.vip) this.#vips.set(vipKey(s.vip), s.name);
    this.#random = random;
  }

  get size(): number {
    return this.#routes.length;
  }

  /** First route in precedence order that matches; a weighted target is resolved to one service. */
  match(req: RouteRequest): RouteChoice | undefined {
    const routes = this.#routes;
    for (let i = 0; i < routes.length; i++) {
      const r = routes[i];
      if (routeMatches(r, req)) return pickWeighted(r, this.#random);
    }
    return undefined;
  }

  /** The service whose VIP is this "ip:port" (or Host authority), if any. */
  serviceByVip(authority: string | undefined): string | undefined {
    if (authority === undefined || authority === '' || this.#vips.size === 0) return undefined;
    return this.#vips.get(vipKey(authority));
  }
}
