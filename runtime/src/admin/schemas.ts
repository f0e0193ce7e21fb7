// JSON schemas of the management API: they validate requests (Ajv, no coercion, unknown fields
// rejected) and document the API in /openapi.json. Semantic checks (VIP syntax, regexes, references
// between objects) happen in store/validate.ts and the Store.

import { LIMITS, QUOTA_BOUNDS } from '../store/index.ts';

const NAME_PATTERN = '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$';
const name = { type: 'string', pattern: NAME_PATTERN, description: 'lower-case DNS label (1-63 chars)' } as const;
const int = (minimum: number, maximum: number) => ({ type: 'integer', minimum, maximum }) as const;
const str = (maxLength: number = LIMITS.stringChars) => ({ type: 'string', minLength: 1, maxLength }) as const;

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

export const tenantBody = {
  type: ['object', 'null'],
  additionalProperties: false,
  properties: { listenerPort: int(1, 65535) },
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
  },
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
