// definePlugin: checks a plugin's shape where the author writes it (and again when the host loads it).

import type { BodyDeclaration, JsonSchema, Plugin } from '../types.ts';

/** Marks objects made by definePlugin (a registered symbol, so any copy of the SDK agrees). */
export const PLUGIN_MARK: unique symbol = Symbol.for('isomesh.plugin') as never;

export const HOOK_NAMES = ['onRequest', 'onResponse'] as const;
export type HookName = (typeof HOOK_NAMES)[number];

/** The hooks `value` provides; throws TypeError when it is not a usable plugin. */
export function pluginHooks(value: unknown): HookName[] {
  if (value === null || typeof value !== 'object') {
    throw new TypeError('a plugin must be an object with onRequest and/or onResponse');
  }
  const hooks: HookName[] = [];
  for (const name of HOOK_NAMES) {
    const hook = (value as Record<string, unknown>)[name];
    if (hook === undefined) continue;
    if (typeof hook !== 'function') throw new TypeError(`plugin.${name} must be a function`);
    hooks.push(name);
  }
  if (hooks.length === 0) throw new TypeError('a plugin needs at least one of onRequest, onResponse');
  return hooks;
}

/** The largest body a plugin may declare per direction (the host buffers it in memory). */
export const MAX_BODY_BYTES = 64 * 1024 * 1024;
/** configSchema as JSON may be at most this long. */
export const MAX_CONFIG_SCHEMA_CHARS = 64 * 1024;

export interface Declarations {
  hooks: HookName[];
  body?: BodyDeclaration;
  configSchema?: JsonSchema;
}

function bodyLimit(v: unknown, what: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_BODY_BYTES) {
    throw new TypeError(`plugin.body.${what} must be an integer number of bytes in 1..${MAX_BODY_BYTES} (64 MiB)`);
  }
  return v;
}

/** Hooks, body limits and config schema `value` declares; throws TypeError on anything invalid. */
export function pluginDeclarations(value: unknown): Declarations {
  const hooks = pluginHooks(value);
  const p = value as Record<string, unknown>;
  const out: Declarations = { hooks };
  if (p.body !== undefined) {
    const b = p.body as Record<string, unknown> | null;
    if (b === null || typeof b !== 'object' || Array.isArray(b)) throw new TypeError('plugin.body must be { request?: maxBytes, response?: maxBytes }');
    for (const k of Object.keys(b)) if (k !== 'request' && k !== 'response') throw new TypeError(`plugin.body: unknown key "${k.slice(0, 64)}" (request, response)`);
    const body: BodyDeclaration = {};
    const request = bodyLimit(b.request, 'request');
    const response = bodyLimit(b.response, 'response');
    if (request !== undefined) body.request = request;
    if (response !== undefined) body.response = response;
    if (request !== undefined && !hooks.includes('onRequest')) throw new TypeError('plugin.body.request needs an onRequest hook');
    if (response !== undefined && !hooks.includes('onResponse')) throw new TypeError('plugin.body.response needs an onResponse hook');
    if (request !== undefined || response !== undefined) out.body = body;
  }
  if (p.configSchema !== undefined) {
    const schema = p.configSchema;
    if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) throw new TypeError('plugin.configSchema must be a JSON Schema object');
    let json: string | undefined;
    try {
      json = JSON.stringify(schema);
    } catch (e) {
      throw new TypeError(`plugin.configSchema is not JSON: ${e instanceof Error ? e.message : String(e)}`);
    }
    if (json === undefined || json.length > MAX_CONFIG_SCHEMA_CHARS) throw new TypeError(`plugin.configSchema must be JSON of at most ${MAX_CONFIG_SCHEMA_CHARS} characters`);
    out.configSchema = JSON.parse(json) as JsonSchema;
  }
  return out;
}

export function definePlugin<C = Record<string, unknown>>(plugin: Plugin<C>): Plugin<C> {
  pluginDeclarations(plugin);
  if (!Object.prototype.hasOwnProperty.call(plugin, PLUGIN_MARK)) {
    Object.defineProperty(plugin, PLUGIN_MARK, { value: true, enumerable: false });
  }
  return plugin;
}

export function isDefinedPlugin(value: unknown): boolean {
  return value !== null && typeof value === 'object' && (value as Record<symbol, unknown>)[PLUGIN_MARK] === true;
}

/**
 * Parse-once plugin config (Envoy's config.cc habit): `const settings = configParser(parse)` returns
 * a function that parses and validates a chain entry's config object the first time it sees it and
 * answers from a cache afterwards (the host hands the same frozen object to every request of one
 * configuration). A parse error is cached too and re-thrown on every request, so a bad config fails
 * the entry — and its failure policy applies — without re-parsing per request.
 */
export function configParser<T>(parse: (config: object) => T): (config: object) => T {
  const cache = new WeakMap<object, { ok: true; value: T } | { ok: false; error: unknown }>();
  return (config: object): T => {
    let hit = cache.get(config);
    if (hit === undefined) {
      try {
        hit = { ok: true, value: parse(config) };
      } catch (error) {
        hit = { ok: false, error };
      }
      cache.set(config, hit);
    }
    if (!hit.ok) throw hit.error;
    return hit.value;
  };
}
