// Bootstrap of one plugin context inside a tenant's isolate. The host bundles this file once (esbuild,
// IIFE) and runs it in every new context before the plugin's code. It installs a CommonJS
// `module`/`exports`/`require` for the plugin bundle (require knows only '@isomesh/sdk') and a
// one-shot `__isomesh` object whose functions the host takes as references and then deletes, so the
// plugin can neither see nor replace the entry points.

import { configParser, definePlugin, pluginHooks } from './define.ts';
import { GuestPlugin } from './invoke.ts';
import { BAD_IMPORT_PREFIX, type LoadMeta, type LoadResult } from './protocol.ts';

const g = globalThis as Record<string, unknown>;
const sdk = Object.freeze({ configParser, definePlugin, default: Object.freeze({ configParser, definePlugin }) });
const moduleObject: { exports: unknown } = { exports: {} };
let loaded: GuestPlugin | undefined;
let secretsJson = '{}';

function requireShim(name: unknown): unknown {
  if (name === '@isomesh/sdk') return sdk;
  throw new Error(`${BAD_IMPORT_PREFIX} ${String(name).slice(0, 200)}`);
}

function plugin(): GuestPlugin {
  if (loaded === undefined) throw new Error('plugin is not loaded');
  return loaded;
}

// WebAssembly memory lives outside the V8 heap that the tenant's memoryMb limit counts: a plugin
// could pin gigabytes of node memory with it. Plugins are TypeScript; they get no WebAssembly.
delete g.WebAssembly;
// The per-request budget and cpuMsPerSecond count the CPU of the thread a hook runs on
// (runtime/src/host/thread-clock.ts). Atomics.wait would hold that thread — the daemon's, inline —
// without using CPU; a plugin has nothing to wait for synchronously (nothing else runs in its isolate).
delete (Atomics as unknown as Record<string, unknown>).wait;

g.module = moduleObject;
g.exports = moduleObject.exports;
g.require = requireShim;

g.__isomesh = {
  /** After the plugin's code ran: find its plugin object, check it, hide the CommonJS globals. */
  finishLoad(metaJson: string): string {
    const meta = JSON.parse(metaJson) as LoadMeta;
    const exported = moduleObject.exports as Record<string, unknown> | null;
    delete g.module;
    delete g.exports;
    delete g.require;
    const candidate =
      exported !== null && typeof exported === 'object' && 'default' in exported ? exported.default : exported;
    try {
      pluginHooks(candidate);
    } catch (e) {
      return JSON.stringify({ noHooks: e instanceof Error ? e.message : String(e) } satisfies LoadResult);
    }
    try {
      loaded = new GuestPlugin(candidate, meta);
    } catch (e) {
      return JSON.stringify({ badDeclaration: e instanceof Error ? e.message : String(e) } satisfies LoadResult);
    }
    loaded.setSecrets(secretsJson);
    const d = loaded.declarations;
    const result: LoadResult = { hooks: d.hooks };
    if (d.body !== undefined) result.body = d.body;
    if (d.configSchema !== undefined) result.configSchema = d.configSchema;
    return JSON.stringify(result);
  },
  setSecrets(json: string): void {
    secretsJson = json;
    if (loaded !== undefined) loaded.setSecrets(json);
  },
  call(inputJson: string): string {
    return plugin().call(inputJson);
  },
  // The chain runner's entries (runner.ts): primitives in, a string out.
  request(...args: Parameters<GuestPlugin['request']>): string {
    return plugin().request(...args);
  },
  response(...args: Parameters<GuestPlugin['response']>): string {
    return plugin().response(...args);
  },
  poll(id: number): string {
    return plugin().poll(id);
  },
  deliver(resultsJson: string): void {
    plugin().deliver(resultsJson);
  },
  settle(id: number): string {
    return plugin().settle(id);
  },
  wait(id: number): Promise<string> {
    return plugin().wait(id);
  },
  cancel(id: number): void {
    plugin().cancel(id);
  },
};
