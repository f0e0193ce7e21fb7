// The domain model shared by every component. The store owns it; the proxy, the plugin host and the
// xDS server read it as immutable per-tenant snapshots (TenantConfig).

export interface Quota {
  /** Heap limit of the tenant's isolate(s), MiB. */
  memoryMb: number;
  /** CPU a plugin chain may use for one request (the CPU of the thread that runs it), ms. */
  cpuMsPerRequest: number;
  /** Sustained CPU share of the tenant's plugins, ms of CPU per second of wall time. */
  cpuMsPerSecond: number;
  /** In-flight requests on the tenant listener. */
  maxConcurrentRequests: number;
  /** Open client connections to the tenant listener (node-wide); more are refused with 503. */
  maxConnections: number;
  /** Admission token bucket; 0 = unlimited. */
  requestsPerSecond: number;
  /** Publish-time: plugins a tenant may own. */
  maxPlugins: number;
  /** Publish-time: largest compiled plugin bundle, bytes. */
  maxBundleBytes: number;
  /** Share of contended plugin CPU among tenants. */
  weight: number;
}

/** A stored quota with the fields added since it was written filled in from the defaults. */
export function completeQuota(stored: Partial<Quota>): Quota {
  return { ...DEFAULT_QUOTA, ...stored };
}

export const DEFAULT_QUOTA: Readonly<Quota> = Object.freeze({
  memoryMb: 64,
  cpuMsPerRequest: 50,
  cpuMsPerSecond: 500,
  maxConcurrentRequests: 1024,
  maxConnections: 4096,
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
/** What isomesh speaks to a service's endpoints: HTTP/1.1, h2c (prior knowledge), or h2c with gRPC semantics. */
export type ServiceProtocol = 'http1' | 'http2' | 'grpc';
/** The key ring_hash hashes: a request header, a cookie, or the client's address (default). */
export type HashOn = { header: string } | { cookie: string } | 'sourceIp';

export interface Service {
  name: string;
  /** "ip:port" (IPv6 as "[::1]:80") — the address workloads call; optional for explicit-only services. */
  vip?: string;
  endpoints: Endpoint[];
  lb: LoadBalancer;
  /** Absent = 'http1' (the store always fills it in). */
  protocol?: ServiceProtocol;
  /** ring_hash only; absent = 'sourceIp'. */
  hashOn?: HashOn;
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
  /** HTTP/1.1 Upgrade protocols (lower case) let through; absent = ["websocket"]; [] refuses upgrades with 403. */
  upgrades?: string[];
}

/** How a request path is normalised before routing, plugins and the upstream see it (API.md). */
export type PathNormalization = 'base' | 'merge_slashes' | 'none';

export interface AccessLogSettings {
  enabled: boolean;
  /** Fraction of requests logged, 0..1. */
  sample: number;
}

/** Per-tenant data-plane settings (PUT /v1/tenants/{t} fields besides listenerPort). */
export interface TenantSettings {
  pathNormalization: PathNormalization;
  accessLog: AccessLogSettings;
}

export const DEFAULT_TENANT_SETTINGS: Readonly<TenantSettings> = Object.freeze({
  pathNormalization: 'base',
  accessLog: Object.freeze({ enabled: false, sample: 1 }),
});

/** A descriptor entry's key: what part of the request a rate limit counts by. */
export type RateLimitKey = 'remote_address' | 'path' | 'method' | 'route' | `header:${string}`;

export interface RateLimitDescriptor {
  key: RateLimitKey;
  /** Only requests with this exact value count; absent = one counter per distinct value. */
  value?: string;
}

export type RateLimitUnit = 'second' | 'minute' | 'hour' | 'day';

/** A self-service rate limit (PUT /v1/tenants/{t}/ratelimits/{name}); applied before the chain. */
export interface RateLimit {
  name: string;
  descriptors: RateLimitDescriptor[];
  limit: { requestsPerUnit: number; unit: RateLimitUnit };
  /** Count only: over-limit requests pass and are counted as shadow_over. */
  shadow: boolean;
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
  /** What the version declares (hooks, body limits, config schema); absent for versions published before v2. */
  meta?: PluginVersionDeclarations;
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
  /** What the version declared at publish (absent for versions published before it was recorded). */
  meta?: PluginVersionDeclarations;
}

/** What a plugin version declares in definePlugin, recorded at publish. */
export interface PluginVersionDeclarations {
  hooks: Array<'onRequest' | 'onResponse'>;
  /** Buffered body access: the largest body (bytes) the plugin reads, per direction. */
  body?: { request?: number; response?: number };
  /** JSON Schema of the chain entry's config. */
  configSchema?: Record<string, unknown>;
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
  settings: TenantSettings;
  rateLimits: RateLimit[];
  generation: number;
}

export const TENANT_NAME_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
/** Services, routes, plugins, secrets and workloads share the tenant name grammar. */
export const OBJECT_NAME_RE = TENANT_NAME_RE;
