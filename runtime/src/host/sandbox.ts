// TenantSandbox owns one tenant's isolate: a context per plugin version in use, hook invocation, and
// rebuilding after a crash. It speaks plain data only (JSON strings in, InvokeOutcome out) so it can
// later move into a supervised worker process ("cordon") without changing the chain or quota code.
//
// Security: the host keeps references *to* guest functions; nothing from the host (Reference,
// ExternalCopy, Callback) is ever placed where guest code could reach it. Data crosses as strings.

import ivm from 'isolated-vm';
import { guestRuntimeCode } from './guest-code.ts';

export interface VersionSpec {
  /** Unique per loaded code: "<plugin>@<version>#<digest>". */
  key: string;
  plugin: string;
  version: number;
  digest: string;
  code: string;
}

export type FailureKind = 'threw' | 'timeout' | 'memory' | 'crashed' | 'bad_result' | 'unavailable';

export type InvokeOutcome =
  | { ok: true; result: string; cpuNs: number }
  | { ok: false; kind: FailureKind; message: string; cpuNs: number };

export interface SandboxEvents {
  /** A version could not be (re)loaded into a context. */
  onLoadError(key: string, kind: FailureKind, message: string): void;
  /** The isolate was lost (memory limit or crash) while running `key`; it will be rebuilt. */
  onIsolateLost(key: string | undefined, kind: FailureKind, message: string): void;
  onIsolateRebuilt(): void;
}

interface GuestApi {
  call: ivm.Reference<(input: string) => string>;
  settle: ivm.Reference<(id: number) => string>;
  wait: ivm.Reference<(id: number) => Promise<string>>;
  cancel: ivm.Reference<(id: number) => void>;
  setSecrets: ivm.Reference<(json: string) => void>;
  finishLoad: ivm.Reference<(meta: string) => string>;
}

interface LoadedVersion {
  spec: VersionSpec;
  refs: number;
  context?: ivm.Context;
  api?: GuestApi;
  hooks?: Array<'onRequest' | 'onResponse'>;
  /** Config ids this context has already received (configs are sent once, then referenced). */
  configsSeen: Set<number>;
}

export const LOAD_TIMEOUT_MS = 200;
const MIN_MEMORY_MB = 8;
const MAX_BACKOFF_MS = 10_000;
const STREAK_RESET_MS = 30_000;
const TIMED_OUT = 'Script execution timed out.';

export function classifyError(isolate: ivm.Isolate, e: unknown): { kind: FailureKind; message: string } {
  const message = e instanceof Error ? e.message : String(e);
  if (isolate.isDisposed) {
    return /memory limit/i.test(message)
      ? { kind: 'memory', message: 'isolate exceeded its memory limit and was disposed' }
      : { kind: 'crashed', message: `isolate crashed: ${message}` };
  }
  if (message === TIMED_OUT) return { kind: 'timeout', message: 'plugin exceeded its CPU time per request' };
  return { kind: 'threw', message };
}

/** Creates a context, runs the guest runtime then the plugin code in it, and returns its entry points. */
export function loadPluginContext(
  isolate: ivm.Isolate,
  guest: ivm.Script,
  code: string,
  meta: { tenant: string; plugin: string },
  secretsJson: string,
  timeoutMs = LOAD_TIMEOUT_MS,
): { context: ivm.Context; api: GuestApi; loadResult: string } {
  const context = isolate.createContextSync();
  try {
    guest.runSync(context, { timeout: timeoutMs });
    const entry = context.global.getSync('__isomesh', { reference: true }) as ivm.Reference<Record<string, unknown>>;
    const fn = <T>(name: string): ivm.Reference<T> => entry.getSync(name, { reference: true }) as ivm.Reference<T>;
    const api: GuestApi = {
      call: fn('call'),
      settle: fn('settle'),
      wait: fn('wait'),
      cancel: fn('cancel'),
      setSecrets: fn('setSecrets'),
      finishLoad: fn('finishLoad'),
    };
    entry.release();
    context.global.deleteSync('__isomesh');
    api.setSecrets.applySync(undefined, [secretsJson], { timeout: timeoutMs });
    const script = isolate.compileScriptSync(code, { filename: 'plugin.js' });
    script.runSync(context, { timeout: timeoutMs });
    script.release();
    const loadResult = api.finishLoad.applySync(undefined, [JSON.stringify(meta)], { timeout: timeoutMs });
    return { context, api, loadResult: String(loadResult) };
  } catch (e) {
    if (!isolate.isDisposed) context.release();
    throw e;
  }
}

export class TenantSandbox {
  readonly tenant: string;
  #memoryMb: number;
  #events: SandboxEvents;
  #isolate: ivm.Isolate | undefined;
  #guest: ivm.Script | undefined;
  #versions = new Map<string, LoadedVersion>();
  #secretsJson = '{}';
  #down = false;
  #crashStreak = 0;
  #lastLostAt = 0;
  #rebuildAt = 0;
  #restarts = 0;

  constructor(opts: { tenant: string; memoryMb: number; events: SandboxEvents }) {
    this.tenant = opts.tenant;
    this.#memoryMb = Math.max(MIN_MEMORY_MB, opts.memoryMb);
    this.#events = opts.events;
    this.#build();
  }

  get restarts(): number {
    return this.#restarts;
  }

  /** Loads `spec` unless already loaded; each retain needs one release. */
  retain(spec: VersionSpec): void {
    const v = this.#versions.get(spec.key);
    if (v !== undefined) {
      v.refs++;
      return;
    }
    const loaded: LoadedVersion = { spec, refs: 1, configsSeen: new Set() };
    this.#versions.set(spec.key, loaded);
    if (!this.#down) this.#load(loaded);
  }

  release(key: string): void {
    const v = this.#versions.get(key);
    if (v === undefined) return;
    if (--v.refs > 0) return;
    this.#versions.delete(key);
    this.#unload(v);
  }

  hooks(key: string): Array<'onRequest' | 'onResponse'> | undefined {
    return this.#versions.get(key)?.hooks;
  }

  setSecrets(secrets: Record<string, string>): void {
    const json = JSON.stringify(secrets);
    if (json === this.#secretsJson) return;
    this.#secretsJson = json;
    if (this.#down) return;
    for (const v of this.#versions.values()) {
      try {
        v.api?.setSecrets.applySync(undefined, [json], { timeout: LOAD_TIMEOUT_MS });
      } catch (e) {
        this.#fail(v.spec.key, e, this.#isolate as ivm.Isolate);
        return;
      }
    }
  }

  /** A new memory limit needs a new isolate. */
  setMemoryMb(memoryMb: number): void {
    const mb = Math.max(MIN_MEMORY_MB, memoryMb);
    if (mb === this.#memoryMb) return;
    this.#memoryMb = mb;
    this.#teardown();
    this.#build();
  }

  /** Configuration changed (e.g. a fixed version): rebuild now instead of waiting out the back-off. */
  resetBackoff(): void {
    this.#crashStreak = 0;
    this.#lastLostAt = 0;
    this.#rebuildAt = 0;
    if (this.#down) this.#rebuild();
  }

  memoryBytes(): number {
    if (this.#isolate === undefined || this.#isolate.isDisposed) return 0;
    const h = this.#isolate.getHeapStatisticsSync();
    return h.used_heap_size + h.externally_allocated_size;
  }

  /** Runs one hook call. Synchronous when the hook settles synchronously (the common case). */
  invoke(key: string, input: Record<string, unknown>, config: unknown, timeoutMs: number): InvokeOutcome | Promise<InvokeOutcome> {
    if (this.#down) {
      if (Date.now() < this.#rebuildAt) {
        return { ok: false, kind: 'unavailable', message: 'isolate is being rebuilt (back-off after repeated failures)', cpuNs: 0 };
      }
      this.#rebuild();
    }
    const v = this.#versions.get(key);
    const isolate = this.#isolate;
    if (v === undefined || v.api === undefined || isolate === undefined || this.#down) {
      return { ok: false, kind: 'unavailable', message: `plugin version ${key} is not loaded`, cpuNs: 0 };
    }
    const configId = input.configId as number;
    const json = JSON.stringify(v.configsSeen.has(configId) ? input : { ...input, config });
    v.configsSeen.add(configId);
    const timeout = Math.max(1, Math.ceil(timeoutMs));
    const t0 = isolate.cpuTime;
    let out: unknown;
    try {
      out = v.api.call.applySync(undefined, [json], { timeout });
      if (typeof out === 'string' && out.startsWith('{"pending":')) {
        const id = (JSON.parse(out) as { pending: number }).pending;
        // Microtasks ran before applySync returned: most async hooks have settled by now.
        out = v.api.settle.applySync(undefined, [id], { timeout });
        if (out === '') return this.#await(v, isolate, id, t0, timeoutMs);
      }
    } catch (e) {
      return this.#fail(key, e, isolate, t0);
    }
    const cpuNs = Number(isolate.cpuTime - t0);
    if (typeof out !== 'string') return { ok: false, kind: 'bad_result', message: 'hook call returned a non-string', cpuNs };
    return { ok: true, result: out, cpuNs };
  }

  dispose(): void {
    this.#teardown();
    this.#versions.clear();
  }

  async #await(v: LoadedVersion, isolate: ivm.Isolate, id: number, t0: bigint, timeoutMs: number): Promise<InvokeOutcome> {
    const api = v.api as GuestApi;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), Math.max(1, timeoutMs));
    });
    try {
      const waited = api.wait.apply(undefined, [id], { result: { promise: true, copy: true }, timeout: Math.max(1, Math.ceil(timeoutMs)) });
      const out = await Promise.race([waited, timedOut]);
      const cpuNs = isolate.isDisposed ? 0 : Number(isolate.cpuTime - t0);
      if (out === 'timeout') {
        // Settle the guest's wait() so the pending apply does not outlive the request.
        try {
          api.cancel.applySync(undefined, [id], { timeout: LOAD_TIMEOUT_MS });
        } catch {}
        waited.catch(() => {});
        return { ok: false, kind: 'timeout', message: 'async hook did not settle within the CPU time per request', cpuNs };
      }
      if (typeof out !== 'string') return { ok: false, kind: 'bad_result', message: 'hook call returned a non-string', cpuNs };
      return { ok: true, result: out, cpuNs };
    } catch (e) {
      return this.#fail(v.spec.key, e, isolate, t0);
    } finally {
      clearTimeout(timer);
    }
  }

  #fail(key: string, e: unknown, isolate: ivm.Isolate, t0?: bigint): InvokeOutcome {
    const { kind, message } = classifyError(isolate, e);
    let cpuNs = 0;
    if (t0 !== undefined && !isolate.isDisposed) cpuNs = Number(isolate.cpuTime - t0);
    // Only the isolate we still run counts as lost (an async call may outlive a rebuild).
    if (isolate.isDisposed && isolate === this.#isolate) this.#lost(key, kind, message);
    return { ok: false, kind, message, cpuNs };
  }

  #lost(key: string | undefined, kind: FailureKind, message: string): void {
    if (this.#down) return;
    this.#down = true;
    // The streak decays with time, not with successes: another plugin of the tenant succeeding
    // between crashes must not defeat the back-off.
    const now = Date.now();
    if (now - this.#lastLostAt > STREAK_RESET_MS) this.#crashStreak = 0;
    this.#lastLostAt = now;
    this.#crashStreak++;
    // First failure rebuilds on the next call; a crash loop backs off exponentially.
    const delay = this.#crashStreak <= 1 ? 0 : Math.min(MAX_BACKOFF_MS, 100 * 2 ** (this.#crashStreak - 2));
    this.#rebuildAt = now + delay;
    this.#teardown();
    this.#events.onIsolateLost(key, kind, message);
  }

  #build(): void {
    this.#isolate = new ivm.Isolate({ memoryLimit: this.#memoryMb });
    this.#guest = this.#isolate.compileScriptSync(guestRuntimeCode(), { filename: 'isomesh-guest.js' });
    this.#down = false;
    for (const v of this.#versions.values()) {
      if (this.#down) break;
      this.#load(v);
    }
  }

  #rebuild(): void {
    this.#restarts++;
    this.#build();
    if (!this.#down) this.#events.onIsolateRebuilt();
  }

  #teardown(): void {
    for (const v of this.#versions.values()) {
      v.api = undefined;
      v.context = undefined;
      v.hooks = undefined;
      v.configsSeen.clear();
    }
    const isolate = this.#isolate;
    this.#guest = undefined;
    if (isolate !== undefined && !isolate.isDisposed) isolate.dispose();
    this.#down = true;
  }

  #load(v: LoadedVersion): void {
    const isolate = this.#isolate as ivm.Isolate;
    try {
      const loaded = loadPluginContext(
        isolate,
        this.#guest as ivm.Script,
        v.spec.code,
        { tenant: this.tenant, plugin: v.spec.plugin },
        this.#secretsJson,
      );
      const result = JSON.parse(loaded.loadResult) as { hooks?: Array<'onRequest' | 'onResponse'>; noHooks?: string };
      if (result.hooks === undefined) {
        loaded.context.release();
        this.#events.onLoadError(v.spec.key, 'bad_result', result.noHooks ?? 'plugin has no hooks');
        return;
      }
      v.context = loaded.context;
      v.api = loaded.api;
      v.hooks = result.hooks;
    } catch (e) {
      const { kind, message } = classifyError(isolate, e);
      this.#events.onLoadError(v.spec.key, kind, message);
      if (isolate.isDisposed) this.#lost(v.spec.key, kind, message);
    }
  }

  #unload(v: LoadedVersion): void {
    for (const ref of Object.values(v.api ?? {})) (ref as ivm.Reference<unknown>).release();
    if (v.context !== undefined && this.#isolate !== undefined && !this.#isolate.isDisposed) v.context.release();
    v.api = undefined;
    v.context = undefined;
  }
}
