// Route precedence: the one order in which a tenant's routes are tried, shared by the built-in proxy's
// route table and the xDS translator (Envoy takes the first matching route of a virtual host, so the
// translator emits routes in this order). Routes are a set keyed by name; their order is by
// specificity, as Gateway API defines it for HTTPRoute:
//   1. host: exact host, then wildcard host (longer suffix first), then any host;
//   2. path: exact path, then longer path prefix, then path regex, then no path condition;
//   3. a method condition over none;
//   4. more header conditions over fewer;
//   5. then the given order (the store lists routes by name).
// Host comes first so a host-only route (and the plugins scoped to it) is never shadowed by another
// host's catch-all "pathPrefix: /".

import type { Route } from './model.ts';

function rank(r: Route): number[] {
  const m = r.match;
  const host = m.host === undefined || m.host === '' ? '*' : m.host;
  const hostKind = host === '*' ? 2 : host.startsWith('*.') ? 1 : 0;
  const pathKind = m.path !== undefined ? 0 : m.pathPrefix !== undefined ? 1 : m.pathRegex !== undefined ? 2 : 3;
  const prefixLen = m.pathPrefix !== undefined ? -m.pathPrefix.length : 0;
  return [hostKind, hostKind === 2 ? 0 : -host.length, pathKind, prefixLen, m.method !== undefined ? 0 : 1, -(m.headers?.length ?? 0)];
}

/** Comparator for Array.prototype.sort (stable: ties keep the given order). */
export function byPrecedence(a: Route, b: Route): number {
  const ra = rank(a);
  const rb = rank(b);
  for (let i = 0; i < ra.length; i++) if (ra[i] !== rb[i]) return ra[i]! - rb[i]!;
  return 0;
}

/** The routes in the order they are tried (a new array; the input is not changed). */
export function routesInPrecedence(routes: readonly Route[]): Route[] {
  return [...routes].sort(byPrecedence);
}
