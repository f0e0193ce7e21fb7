// JSON schemas of the management API: they validate requests (Ajv, no coercion, unknown fields
// rejected) and document the API in /openapi.json. Semantic checks (VIP syntax, regexes, references
// between objects) happen in store/validate.ts and the Store.

import {
  HTTP_TOKEN_RE,
  LIMITS,
  PATH_NORMALIZATIONS,
  QUOTA_BOUNDS,
  RATELIMIT_KEY_PATTERN,
  RATELIMIT_LIMITS,
  RATELIMIT_UNITS,
  SERVICE_PROTOCOLS,
} from '../store/index.ts';

const NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
const name = { type: 'string', pattern: NAME_PATTERN, description: 'lower-case DNS label (1-63 chars)' } as const;
const int = (minimum: number, maximum: number) => ({ type: 'integer', minimum, maximum }) as const;
const str = (maxLength: number = LIMITS.stringChars) => ({ type: 'string', minLength: 1, maxLength }) as const;
const token = (what: string, maxLength: number = LIMITS.tokenChars) =>
  ({ type: 'string', minLength: 1, maxLength, pattern: HTTP_TOKEN_RE.source, description: `${what} (an HTTP token)` }) as const;

export const tenantParams = { type: 'object', properties: { tenant: name }, required: ['tenant'] } as const;
export const namedParams = {
  type: 'object',
  properties: { tenant: name, name },
  required: ['tenant', 'name'],
} as const;
export const versionParams = {
  type: 'object',
  properties: { tenant: name, name, version: { type: 'string', pattern: '^[1-9][0-9]{0,14}$' } },
  required: ['tenant', 'name', 'version'],
} as const;

const accessLog = {
  type: 'object',
  additionalProperties: false,
  description: 'JSON access log lines on stdout; a partial object keeps the fields it leaves out',
  properties: {
    enabled: { type: 'boolean', description: 'default false' },
    sample: { type: 'number', minimum: 0, maximum: 1, description: 'fraction of requests logged (default 1)' },
  },
} as const;
const pathNormalization = {
  type: 'string',
  enum: PATH_NORMALIZATIONS,
  description: 'base = RFC 3986 §6.2.2 (default); merge_slashes = base plus "//" → "/"; none',
} as const;

/** The tenant settings fields: their schema errors answer ISOMESH_ERR_TENANT_INVALID. */
export const TENANT_SETTINGS_FIELDS = ['pathNormalization', 'accessLog'] as const;

export const tenantBody = {
  type: ['object', 'null'],
  additionalProperties: false,
  description: 'fields left out keep their current value (a new tenant starts from the defaults)',
  properties: { listenerPort: int(1, 65535), pathNormalization, accessLog },
} as const;

const tenantView = {
  type: 'object',
  description: 'the tenant',
  additionalProperties: true,
  properties: {
    name,
    listenerPort: { type: 'integer', description: 'the port actually bound' },
    pathNormalization,
    accessLog: { ...accessLog, required: ['enabled', 'sample'] },
    quota: { type: 'object', additionalProperties: true },
    generation: { type: 'integer', description: 'grows with every committed change of the tenant' },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
  },
} as const;
export const tenantResponse = { '2xx': tenantView } as const;
export const tenantListResponse = {
  200: { type: 'object', description: 'every tenant, by name', additionalProperties: true, properties: { tenants: { type: 'array', items: tenantView } } },
} as const;

export const quotaBody = {
  type: 'object',
  additionalProperties: false,
  properties: Object.fromEntries(Object.entries(QUOTA_BOUNDS).map(([k, b]) => [k, int(b.min, b.max)])),
} as const;

export const serviceBody = {
  type: 'object',
  additionalProperties: false,
  required: ['endpoints'],
  properties: {
    vip: { ...str(64), description: '"ip:port", IPv6 as "[addr]:port"' },
    endpoints: {
      type: 'array',
      minItems: 1,
      maxItems: LIMITS.endpoints,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['address', 'port'],
        properties: { address: str(253), port: int(1, 65535), weight: int(1, LIMITS.endpointWeight) },
      },
    },
    lb: { type: 'string', enum: ['round_robin', 'least_request', 'ring_hash'] },
    protocol: {
      type: 'string',
      enum: SERVICE_PROTOCOLS,
      description: 'what isomesh speaks to the endpoints: http1 (default), http2 (h2c prior knowledge), grpc (http2 plus gRPC semantics)',
    },
    hashOn: {
      description: '"sourceIp" (the default), {"header": name} or {"cookie": name}; only with lb "ring_hash"',
      oneOf: [
        { type: 'string', enum: ['sourceIp'] },
        { type: 'object', additionalProperties: false, required: ['header'], properties: { header: token('a header name') } },
        { type: 'object', additionalProperties: false, required: ['cookie'], properties: { cookie: token('a cookie name') } },
      ],
    },
    connectTimeoutMs: int(1, LIMITS.timeoutMs),
    timeoutMs: int(1, LIMITS.timeoutMs),
    retries: {
      type: 'object',
      additionalProperties: false,
      required: ['attempts', 'on'],
      properties: {
        attempts: int(0, LIMITS.retryAttempts),
        on: { type: 'array', minItems: 1, items: { type: 'string', enum: ['5xx', 'reset', 'connect-failure'] } },
      },
    },
    circuitBreaker: {
      type: 'object',
      additionalProperties: false,
      required: ['maxConnections', 'maxPending', 'consecutive5xx', 'ejectionMs'],
      properties: {
        maxConnections: int(1, 1_000_000),
        maxPending: int(0, 1_000_000),
        consecutive5xx: int(1, 10_000),
        ejectionMs: int(1, LIMITS.timeoutMs),
      },
    },
  },
} as const;

const headerMatch = {
  type: 'object',
  additionalProperties: false,
  required: ['name'],
  description: 'name plus exactly one of exact, prefix, regex, present',
  properties: {
    name: str(256),
    exact: { type: 'string', maxLength: LIMITS.stringChars },
    prefix: str(),
    regex: str(LIMITS.regexChars),
    present: { type: 'boolean' },
  },
} as const;

export const routeBody = {
  type: 'object',
  additionalProperties: false,
  required: ['to'],
  properties: {
    match: {
      type: 'object',
      additionalProperties: false,
      description: 'at most one of pathPrefix, path, pathRegex',
      properties: {
        host: str(253),
        pathPrefix: str(),
        path: str(),
        pathRegex: str(LIMITS.regexChars),
        method: str(32),
        headers: { type: 'array', maxItems: LIMITS.headersPerRoute, items: headerMatch },
      },
    },
    to: {
      type: 'object',
      additionalProperties: false,
      description: 'exactly one of service, weighted',
      properties: {
        service: name,
        weighted: {
          type: 'array',
          minItems: 1,
          maxItems: LIMITS.weightedTargets,
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['service', 'weight'],
            properties: { service: name, weight: int(0, LIMITS.endpointWeight) },
          },
        },
      },
    },
    timeoutMs: int(1, LIMITS.timeoutMs),
    upgrades: {
      type: 'array',
      maxItems: LIMITS.upgrades,
      uniqueItems: true,
      items: token('an Upgrade protocol name', 64),
      description: 'HTTP/1.1 Upgrade protocols let through, stored lower case (default ["websocket"]; [] refuses upgrades with 403)',
    },
  },
} as const;

const endpointStatus = {
  type: 'array',
  description: "live state of each endpoint, from the data plane (absent when it holds none for the service)",
  items: {
    type: 'object',
    additionalProperties: true,
    properties: {
      address: { type: 'string' },
      port: { type: 'integer' },
      ejected: { type: 'boolean', description: 'taken out of load balancing by outlier detection' },
      ejectedUntil: { type: 'string', format: 'date-time', description: 'present while ejected' },
      active: { type: 'integer', description: 'requests in flight to the endpoint' },
      consecutive5xx: { type: 'integer', description: 'failures since the last success (5xx, reset, connect failure)' },
    },
  },
} as const;

/** GET one service: the stored service plus its endpoints' live state. */
export const serviceResponse = {
  200: {
    type: 'object',
    description: "the service, with its endpoints' live state",
    additionalProperties: true,
    properties: { name, ...serviceBody.properties, endpointStatus },
  },
} as const;

const descriptor = {
  type: 'object',
  additionalProperties: false,
  required: ['key'],
  properties: {
    key: {
      type: 'string',
      minLength: 1,
      maxLength: RATELIMIT_LIMITS.headerNameChars + 7,
      pattern: RATELIMIT_KEY_PATTERN,
      description: 'remote_address, path, method, route or header:<name>',
    },
    value: {
      ...str(RATELIMIT_LIMITS.valueChars),
      description: 'count only requests with exactly this value; absent = one counter per distinct value',
    },
  },
} as const;

export const rateLimitBody = {
  type: 'object',
  additionalProperties: false,
  required: ['descriptors', 'limit'],
  properties: {
    descriptors: {
      type: 'array',
      minItems: 1,
      maxItems: RATELIMIT_LIMITS.descriptors,
      items: descriptor,
      description: 'a request counts when it matches every descriptor; keys must not repeat',
    },
    limit: {
      type: 'object',
      additionalProperties: false,
      required: ['requestsPerUnit', 'unit'],
      properties: {
        requestsPerUnit: int(RATELIMIT_LIMITS.requestsPerUnit.min, RATELIMIT_LIMITS.requestsPerUnit.max),
        unit: { type: 'string', enum: RATELIMIT_UNITS },
      },
    },
    shadow: { type: 'boolean', description: 'count only: over-limit requests pass (default false)' },
  },
} as const;

const rateLimitView = {
  type: 'object',
  description: 'the rate limit as stored (header names lower case, shadow filled in)',
  additionalProperties: true,
  properties: { name, ...rateLimitBody.properties },
} as const;
export const rateLimitResponse = { '2xx': rateLimitView } as const;
export const rateLimitListResponse = {
  200: { type: 'object', description: "the tenant's rate limits, by name", additionalProperties: true, properties: { rateLimits: { type: 'array', items: rateLimitView } } },
} as const;

export const pluginSourceBody = {
  type: 'object',
  additionalProperties: false,
  required: ['source'],
  properties: {
    source: { type: 'string', minLength: 1 },
    language: { type: 'string', enum: ['typescript', 'javascript'], default: 'typescript' },
  },
} as const;

export const activationBody = {
  type: 'object',
  additionalProperties: false,
  required: ['version'],
  properties: {
    version: int(1, Number.MAX_SAFE_INTEGER),
    canary: {
      type: 'object',
      additionalProperties: false,
      required: ['version', 'percent'],
      properties: { version: int(1, Number.MAX_SAFE_INTEGER), percent: int(0, 100) },
    },
  },
} as const;

export const chainBody = {
  type: 'array',
  maxItems: LIMITS.chainEntries,
  items: {
    type: 'object',
    additionalProperties: false,
    required: ['plugin'],
    properties: {
      plugin: name,
      config: { type: 'object', description: 'free-form, handed to the plugin as ctx.config' },
      failurePolicy: { type: 'string', enum: ['closed', 'open'] },
      routes: { type: 'array', items: name },
    },
  },
} as const;

export const secretBody = {
  type: 'object',
  additionalProperties: false,
  required: ['value'],
  properties: { value: { type: 'string', maxLength: LIMITS.secretBytes } },
} as const;
