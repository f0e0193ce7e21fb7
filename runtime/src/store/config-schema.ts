// Plugin config schemas (definePlugin({ configSchema })): compiled with Ajv once per distinct schema
// and used to refuse a chain entry's config before any request can see it. Draft 2020-12 by default;
// draft-07 when the schema's $schema says so. Schemas come from tenants' plugins: their size is
// bounded at publish (64 KiB of JSON) and compiled validators are kept in a bounded LRU.

import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import type { Ajv, ErrorObject, ValidateFunction } from 'ajv';
import type { Ajv2020 } from 'ajv/dist/2020.js';
import { re2RegExpEngine } from './regex.ts';

const CACHE_MAX = 256;
const DRAFT_07 = /^https?:\/\/json-schema\.org\/draft-07\/schema#?$/;
const DRAFT_2020 = /^https?:\/\/json-schema\.org\/draft\/2020-12\/schema#?$/;

// strict: unknown keywords are schema errors (a typo must not silently accept everything); the
// type-level strictness checks only warn, and warnings must not go to the daemon's stdout.
// Patterns run in RE2 (linear time): a tenant's schema must not be a way to stall the daemon (ReDoS).
const OPTIONS = { strict: true, strictTypes: false, strictTuples: false, strictRequired: false, allErrors: false, logger: false, code: { regExp: re2RegExpEngine } } as const;
let ajv2020: Ajv2020 | undefined;
let ajv07: Ajv | undefined;
// Ajv is loaded with the first schema: a data-plane worker thread, which never validates configs, does not pay for it.
const requireLazy = createRequire(import.meta.url);
const newAjv07 = (): Ajv => new (requireLazy('ajv') as typeof import('ajv')).Ajv(OPTIONS);
const newAjv2020 = (): Ajv2020 => new (requireLazy('ajv/dist/2020.js') as typeof import('ajv/dist/2020.js')).Ajv2020(OPTIONS);
const cache = new Map<string, ValidateFunction>();

export class ConfigSchemaError extends Error {}

function compile(schema: Record<string, unknown>): ValidateFunction {
  const $schema = schema.$schema;
  if ($schema !== undefined && (typeof $schema !== 'string' || (!DRAFT_07.test($schema) && !DRAFT_2020.test($schema)))) {
    throw new ConfigSchemaError(`$schema ${JSON.stringify(String($schema).slice(0, 128))} is not supported (use draft 2020-12 or draft-07)`);
  }
  // A schema's $id would register it globally in the Ajv instance: compile a copy without it.
  const { $id: _id, ...rest } = schema;
  try {
    if (typeof $schema === 'string' && DRAFT_07.test($schema)) return (ajv07 ??= newAjv07()).compile(rest);
    return (ajv2020 ??= newAjv2020()).compile(rest);
  } catch (e) {
    throw new ConfigSchemaError(e instanceof Error ? e.message : String(e));
  }
}

/** The compiled validator of `schema` (cached by its JSON text); throws ConfigSchemaError. */
export function configValidator(schema: Record<string, unknown>): ValidateFunction {
  const key = createHash('sha256').update(JSON.stringify(schema)).digest('base64');
  const hit = cache.get(key);
  if (hit !== undefined) {
    cache.delete(key);
    cache.set(key, hit);
    return hit;
  }
  const fn = compile(schema);
  if (cache.size >= CACHE_MAX) cache.delete(cache.keys().next().value as string);
  cache.set(key, fn);
  return fn;
}

/** Why `schema` does not compile, or undefined when it does. */
export function configSchemaProblem(schema: unknown): string | undefined {
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) return 'configSchema must be a JSON Schema object';
  try {
    configValidator(schema as Record<string, unknown>);
    return undefined;
  } catch (e) {
    return e instanceof Error ? e.message : String(e);
  }
}

/** "/items/0/name" → ".items[0].name" */
function dotted(pointer: string): string {
  if (pointer === '') return '';
  return pointer
    .split('/')
    .slice(1)
    .map((seg) => seg.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map((seg) => (/^\d+$/.test(seg) ? `[${seg}]` : /^[A-Za-z_$][\w$]*$/.test(seg) ? `.${seg}` : `[${JSON.stringify(seg)}]`))
    .join('');
}

function describe(e: ErrorObject, base: string): string {
  let path = `${base}${dotted(e.instancePath)}`;
  const p = e.params as Record<string, unknown>;
  if (e.keyword === 'additionalProperties' && typeof p.additionalProperty === 'string') {
    return `${path}${dotted(`/${p.additionalProperty}`)} is not allowed (no such property in the plugin's configSchema)`;
  }
  if (e.keyword === 'required' && typeof p.missingProperty === 'string') {
    path = `${path}${dotted(`/${p.missingProperty}`)}`;
    return `${path} is required`;
  }
  return `${path} ${e.message ?? 'is invalid'}`;
}

/** Validates `config` against `schema`; the failing path (e.g. "chain[0].config.header must be string"), or undefined. */
export function configProblem(schema: Record<string, unknown>, config: unknown, base: string): string | undefined {
  const validate = configValidator(schema);
  if (validate(config)) return undefined;
  const first = validate.errors?.[0];
  return first === undefined ? `${base} does not match the configSchema` : describe(first, base);
}
