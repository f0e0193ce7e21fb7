// Every error isomesh reports is made here, with a stable code (ISOMESH_ERR_<AREA>_<WHAT>).
// User errors (4xx: the caller got something wrong) are kept apart from system faults (5xx).
// Add a code to the table below; docs/errors.md documents each one and a test checks that.

export interface ErrorSpec {
  status: number;
  message: string;
}

export const ERROR_CODES = {
  // admin / transport
  ISOMESH_ERR_API_BAD_JSON: { status: 400, message: 'request body is not valid JSON' },
  ISOMESH_ERR_API_BAD_REQUEST: { status: 400, message: 'request is invalid' },
  ISOMESH_ERR_API_VALIDATION: { status: 400, message: 'a field is missing or has the wrong type or value' },
  ISOMESH_ERR_API_UNSUPPORTED_MEDIA_TYPE: { status: 415, message: 'unsupported content type' },
  ISOMESH_ERR_API_BODY_TOO_LARGE: { status: 413, message: 'request body is too large' },
  ISOMESH_ERR_API_NOT_FOUND: { status: 404, message: 'no such endpoint' },
  ISOMESH_ERR_API_METHOD_NOT_ALLOWED: { status: 405, message: 'method not allowed' },
  ISOMESH_ERR_AUTH_MISSING_TOKEN: { status: 401, message: 'missing bearer token' },
  ISOMESH_ERR_AUTH_INVALID_TOKEN: { status: 401, message: 'invalid token' },
  ISOMESH_ERR_AUTH_FORBIDDEN: { status: 403, message: 'this token may not do that' },
  // tenants and quotas
  ISOMESH_ERR_TENANT_BAD_NAME: { status: 400, message: 'invalid tenant name' },
  ISOMESH_ERR_TENANT_NOT_FOUND: { status: 404, message: 'no such tenant' },
  ISOMESH_ERR_TENANT_PORT_IN_USE: { status: 409, message: 'listener port is already in use' },
  ISOMESH_ERR_TENANT_PORT_OUT_OF_RANGE: { status: 400, message: 'listener port is outside the configured range' },
  ISOMESH_ERR_TENANT_NO_FREE_PORT: { status: 409, message: 'no free listener port in the configured range' },
  ISOMESH_ERR_QUOTA_INVALID: { status: 400, message: 'invalid quota' },
  ISOMESH_ERR_QUOTA_MAX_PLUGINS: { status: 409, message: 'tenant has reached maxPlugins' },
  ISOMESH_ERR_TENANT_INVALID: { status: 400, message: 'invalid tenant settings' },
  // services and routes
  ISOMESH_ERR_SERVICE_BAD_NAME: { status: 400, message: 'invalid service name' },
  ISOMESH_ERR_SERVICE_INVALID: { status: 400, message: 'invalid service' },
  ISOMESH_ERR_SERVICE_NOT_FOUND: { status: 404, message: 'no such service' },
  ISOMESH_ERR_SERVICE_IN_USE: { status: 409, message: 'service is referenced by a route' },
  ISOMESH_ERR_SERVICE_VIP_CONFLICT: { status: 409, message: 'VIP is already owned by another service' },
  ISOMESH_ERR_ROUTE_BAD_NAME: { status: 400, message: 'invalid route name' },
  ISOMESH_ERR_ROUTE_INVALID: { status: 400, message: 'invalid route' },
  ISOMESH_ERR_ROUTE_NOT_FOUND: { status: 404, message: 'no such route' },
  ISOMESH_ERR_ROUTE_UNKNOWN_SERVICE: { status: 400, message: 'route refers to a service that does not exist' },
  ISOMESH_ERR_ROUTE_IN_USE: { status: 409, message: 'route is referenced by the chain or a rate limit' },
  // plugins and chain
  ISOMESH_ERR_PLUGIN_BAD_NAME: { status: 400, message: 'invalid plugin name' },
  ISOMESH_ERR_PLUGIN_NOT_FOUND: { status: 404, message: 'no such plugin' },
  ISOMESH_ERR_PLUGIN_VERSION_NOT_FOUND: { status: 404, message: 'no such plugin version' },
  ISOMESH_ERR_PLUGIN_COMPILE: { status: 400, message: 'plugin source does not compile' },
  ISOMESH_ERR_PLUGIN_LOAD: { status: 400, message: 'plugin failed to load' },
  ISOMESH_ERR_PLUGIN_NO_HOOKS: { status: 400, message: 'plugin does not export a plugin with onRequest or onResponse' },
  ISOMESH_ERR_PLUGIN_BAD_IMPORT: { status: 400, message: 'plugin imports a module other than @isomesh/sdk' },
  ISOMESH_ERR_PLUGIN_BAD_DECLARATION: { status: 400, message: 'plugin declares an invalid body limit or configSchema' },
  ISOMESH_ERR_PLUGIN_TOO_LARGE: { status: 413, message: 'plugin bundle exceeds maxBundleBytes' },
  ISOMESH_ERR_PLUGIN_IN_CHAIN: { status: 409, message: 'plugin is referenced by the chain' },
  ISOMESH_ERR_CHAIN_INVALID: { status: 400, message: 'invalid chain' },
  ISOMESH_ERR_CHAIN_UNKNOWN_PLUGIN: { status: 400, message: 'chain refers to a plugin that is not published' },
  ISOMESH_ERR_CHAIN_NOT_ACTIVE: { status: 400, message: 'chain refers to a plugin with no active version' },
  ISOMESH_ERR_CHAIN_UNKNOWN_ROUTE: { status: 400, message: 'chain entry refers to a route that does not exist' },
  ISOMESH_ERR_CHAIN_BAD_CONFIG: { status: 400, message: "chain entry config does not match the plugin's configSchema" },
  // rate limits
  ISOMESH_ERR_RATELIMIT_BAD_NAME: { status: 400, message: 'invalid rate limit name' },
  ISOMESH_ERR_RATELIMIT_INVALID: { status: 400, message: 'invalid rate limit' },
  ISOMESH_ERR_RATELIMIT_NOT_FOUND: { status: 404, message: 'no such rate limit' },
  // secrets
  ISOMESH_ERR_SECRET_BAD_NAME: { status: 400, message: 'invalid secret name' },
  ISOMESH_ERR_SECRET_INVALID: { status: 400, message: 'invalid secret' },
  ISOMESH_ERR_SECRET_NOT_FOUND: { status: 404, message: 'no such secret' },
  // workloads / datapath
  ISOMESH_ERR_WORKLOAD_BAD_NAME: { status: 400, message: 'invalid workload name' },
  ISOMESH_ERR_WORKLOAD_INVALID: { status: 400, message: 'invalid workload' },
  ISOMESH_ERR_WORKLOAD_NOT_FOUND: { status: 404, message: 'no such workload' },
  ISOMESH_ERR_WORKLOAD_CGROUP_NOT_FOUND: { status: 400, message: 'cgroup path does not exist' },
  ISOMESH_ERR_WORKLOAD_CGROUP_ROOT: { status: 400, message: 'cannot attach to the cgroup v2 root' },
  ISOMESH_ERR_DATAPATH_UNAVAILABLE: { status: 503, message: 'eBPF datapath is not available on this node' },
  // data plane (x-isomesh-error values)
  ISOMESH_ERR_PROXY_NO_ROUTE: { status: 404, message: 'no route matches the request' },
  ISOMESH_ERR_PROXY_NO_ENDPOINT: { status: 503, message: 'service has no healthy endpoint' },
  ISOMESH_ERR_PROXY_UPSTREAM_REFUSED: { status: 502, message: 'upstream refused the connection' },
  ISOMESH_ERR_PROXY_UPSTREAM_RESET: { status: 502, message: 'upstream reset the connection' },
  ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT: { status: 504, message: 'upstream timed out' },
  ISOMESH_ERR_PROXY_BAD_REQUEST: { status: 400, message: 'malformed request' },
  ISOMESH_ERR_PROXY_BAD_HOST: { status: 400, message: 'missing, repeated or invalid Host / authority' },
  ISOMESH_ERR_PROXY_BAD_PATH: { status: 400, message: 'request path is invalid or climbs above the root' },
  ISOMESH_ERR_PROXY_HEADERS_TOO_LARGE: { status: 431, message: 'request headers are too large or too many' },
  ISOMESH_ERR_PROXY_REQUEST_TIMEOUT: { status: 408, message: 'the client was too slow sending the request' },
  ISOMESH_ERR_PROXY_BODY_TOO_LARGE: { status: 413, message: 'request body is larger than a plugin of the chain accepts' },
  ISOMESH_ERR_PROXY_NOT_IMPLEMENTED: { status: 501, message: 'the request uses a feature the proxy does not implement' },
  ISOMESH_ERR_PROXY_UPGRADE_REFUSED: { status: 403, message: 'the route does not allow this protocol upgrade' },
  ISOMESH_ERR_PROXY_CONNECTION_LIMIT: { status: 503, message: 'too many connections to the tenant listener or the node' },
  ISOMESH_ERR_UPSTREAM_BAD_RESPONSE: { status: 502, message: 'upstream sent an invalid or too large response head' },
  ISOMESH_ERR_UPSTREAM_BODY_TOO_LARGE: { status: 502, message: 'response body is larger than a plugin of the chain accepts' },
  ISOMESH_ERR_RATELIMIT_OVER: { status: 429, message: 'a rate limit of the tenant is exceeded' },
  ISOMESH_ERR_PROXY_UNKNOWN_SERVICE: { status: 503, message: 'request was routed to a service the tenant does not have' },
  ISOMESH_ERR_PROXY_CIRCUIT_OPEN: { status: 503, message: 'service has too many pending requests (circuit breaker)' },
  ISOMESH_ERR_PROXY_LISTEN_FAILED: { status: 500, message: 'tenant listener could not be bound' },
  ISOMESH_ERR_QUOTA_RPS: { status: 429, message: 'tenant request rate exceeded' },
  ISOMESH_ERR_QUOTA_CONCURRENCY: { status: 429, message: 'tenant concurrent requests exceeded' },
  ISOMESH_ERR_QUOTA_CPU: { status: 429, message: 'tenant plugin CPU budget exceeded' },
  ISOMESH_ERR_QUOTA_QUEUE: { status: 429, message: 'tenant plugin call queue is full' },
  ISOMESH_ERR_PLUGIN_THREW: { status: 503, message: 'plugin threw' },
  ISOMESH_ERR_PLUGIN_TIMEOUT: { status: 503, message: 'plugin exceeded its CPU time per request' },
  ISOMESH_ERR_PLUGIN_MEMORY: { status: 503, message: 'plugin exceeded its memory limit' },
  ISOMESH_ERR_PLUGIN_CRASHED: { status: 503, message: 'plugin isolate crashed' },
  ISOMESH_ERR_PLUGIN_BAD_RESULT: { status: 503, message: 'plugin returned an invalid result' },
  ISOMESH_ERR_PLUGIN_UNAVAILABLE: { status: 503, message: 'plugin is not loaded' },
  // Envoy data plane (ext_proc answers)
  ISOMESH_ERR_EXTPROC_PROTOCOL: { status: 500, message: 'ext_proc message out of order or not supported (the request is refused, never let through unprocessed)' },
  ISOMESH_ERR_EXTPROC_OVERLOADED: { status: 503, message: 'too many ext_proc streams open on this node' },
  // system faults
  ISOMESH_ERR_INTERNAL: { status: 500, message: 'internal error' },
  ISOMESH_ERR_STORE_FAULT: { status: 500, message: 'state store fault' },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class IsomeshError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly details: unknown;

  constructor(code: ErrorCode, message?: string, details?: unknown) {
    super(message ?? ERROR_CODES[code].message);
    this.name = 'IsomeshError';
    this.code = code;
    this.status = ERROR_CODES[code].status;
    this.details = details;
  }

  get isUserError(): boolean {
    return this.status >= 400 && this.status < 500;
  }

  toJSON(): { error: { code: ErrorCode; message: string; details?: unknown } } {
    const error: { code: ErrorCode; message: string; details?: unknown } = { code: this.code, message: this.message };
    if (this.details !== undefined) error.details = this.details;
    return { error };
  }
}

export function isomeshError(code: ErrorCode, message?: string, details?: unknown): IsomeshError {
  return new IsomeshError(code, message, details);
}
