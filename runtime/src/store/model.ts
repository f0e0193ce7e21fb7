// The domain model shared by every component. The store owns it; the proxy, the plugin host and the
// xDS server read it as immutable per-tenant snapshots (TenantConfig).

export interface Quota {
  /** Heap limit of the tenant's isolate(s), MiB. */
  memoryMb: number;
  /** CPU a plugin chain may use for one request (isolate cpuTime), ms. */
  cpuMsPerRequest: number;
  /** Sustained CPU share of the tenant's plugins, ms of CPU per second of wall time. */
  cpuMsPerSecond: number;
  /** In-flight requests on the tenant listener. */
  maxConcurrentRequests: number;
  /** Admission token bucket; 0 = unlimited. */
  requestsPerSecond: number;
  /** Publish-time: plugins a tenant may own. */
  maxPlugins: number;
  /** Publish-time: largest compiled plugin bundle, bytes. */
  maxBundleBytes: number;
  /** Share of contended plugin CPU among tenants. */
  weight: number;
}

export const DEFAULT_QUOTA: Readonly<Quota> = Object.freeze({
  memoryMb: 64,
  cpuMsPerRequest: 50,
  cpuMsPerSecond: 500,
  maxConcurrentRequests: 1024,
  requestsPerSecond: 0,
  maxPlugins: 16,
  maxBundleBytes: 1024 * 1024,
  weight: 1,
});

export interface Endpoint {
  address: string;
  port: number;
  weight: number;
}

export type LoadBalancer = 'round_robin' | 'least_request' | 'ring_hash';
export type RetryOn = '5xx' | 'reset' | 'connect-failure';

export interface Service {
  name: string;
  /** "ip:port" (IPv6 as "[::1]:80") — the address workloads call; optional for explicit-only services. */
  vip?: string;
  endpoints: Endpoint[];
  lb: LoadBalancer;
  connectTimeoutMs: number;
  timeoutMs: number;
  retries?: { attempts: number; on: RetryOn[] };
  circuitBreaker?: { maxConnections: number; maxPending: number; consecutive5xx: number; ejectionMs: number };
}

export type HeaderMatch =
  | { name: string; exact: string }
  | { name: string; prefix: string }
  | { name: string; regex: string }
  | { name: string; present: boolean };

export interface RouteMatch {
  host?: string;
  pathPrefix?: string;
  path?: string;
  pathRegex?: string;
  method?: string;
  headers?: HeaderMatch[];
}

export type RouteTarget = { service: string } | { weighted: Array<{ service: string; weight: number }> };

export interface Route {
  name: string;
  match: RouteMatch;
  to: RouteTarget;
  timeoutMs?: number;
}

export type FailurePolicy = 'closed' | 'open';

export interface ChainEntry {
  plugin: string;
  config: Record<string, unknown>;
  failurePolicy: FailurePolicy;
  /** Route names this entry applies to; absent = all routes. */
  routes?: string[];
}

export interface PluginVersionMeta {
  plugin: string;
  version: number;
  digest: string; // "sha256:<hex>" of the compiled code
  size: number; // bytes of compiled code
  language: 'typescript' | 'javascript' | 'bundle';
  createdAt: string;
}

export interface Activation {
  version: number;
  canary?: { version: number; percent: number };
}

/** A plugin version with its compiled code, as the host loads it. */
export interface ResolvedVersion {
  version: number;
  digest: string;
  code: string;
}

export interface ResolvedPlugin {
  name: string;
  active?: ResolvedVersion;
  canary?: ResolvedVersion & { percent: number };
}

/**
 * Everything the data plane needs for one tenant, as one immutable snapshot. A new snapshot is
 * built after every committed change; `generation` grows monotonically per tenant.
 */
export interface TenantConfig {
  name: string;
  listenerPort: number;
  quota: Quota;
  services: Service[];
  routes: Route[];
  chain: ChainEntry[];
  /** Plugins referenced by the chain, with the code of their active (and canary) versions. */
  plugins: Record<string, ResolvedPlugin>;
  /** Secret values: handed only to this tenant's isolate. */
  secrets: Record<string, string>;
  generation: number;
}

export const TENANT_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Services, routes, plugins, secrets and workloads share the tenant name grammar. */
export const OBJECT_NAME_RE = TENANT_NAME_RE;
