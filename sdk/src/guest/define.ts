// definePlugin: checks a plugin's shape where the author writes it (and again when the host loads it).

import type { Plugin } from '../types.ts';

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

export function definePlugin<C = Record<string, unknown>>(plugin: Plugin<C>): Plugin<C> {
  pluginHooks(plugin);
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
