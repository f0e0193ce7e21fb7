// TenantSandbox owns one tenant's isolate: a context per plugin version in use, hook invocation, and
// rebuilding after a crash. It speaks plain data only (JSON strings in, InvokeOutcome out) so it can
// later move into a supervised worker process ("cordon") without changing the chain or quota code.
//
// Security: the host keeps references *to* guest functions; nothing from the host (Reference,
// ExternalCopy, Callback) is ever placed where guest code could reach it. Data crosses as strings.
//
// Async host capabilities (ctx.jwt.verify, ctx.sleep) follow the same rule: a hook that awaits one
// leaves a request in guest state; #drive collects it with poll() (a copied string), performs it in
// HostCapabilities, hands the result back with deliver() (a copied string), lets microtasks run and
// polls again — in bounded rounds, within the call's CPU and wall budgets.

import ivm from 'isolated-vm';
import { HostCapabilities, type CapabilityFetch } from './capabilities.ts';
import { runChainPass, type ChainPass, type PassResult } from './chain-pass.ts';
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

/** Bounds of one invocation's capability loop (defaults: CAPABILITY_WALL_MS, CAPABILITY_ROUNDS). */
export interface InvokeLimits {
  /** Wall time host capabilities may take in one hook call; not charged as the tenant's CPU. */
  capabilityWallMs?: number;
  /** Rounds of poll → perform → deliver one hook call may need. */
  capabilityRounds?: number;
  /**
   * Called once when the call stops using the isolate to wait (for a capability or for another call).
   * A scheduler that runs one call per tenant at a time may start the tenant's next call meanwhile:
   * the sandbox charges each call only for its own turns of the isolate.
   */
  onIdle?: () => void;
  /**
   * With onIdle: resolves when the scheduler gives the call its tenant's turn back. The sandbox
   * awaits it before it uses the isolate again after a wait (and before it returns), and calls onIdle
   * again at the next wait — so the work a call does after a capability is scheduled like a new call.
   * Time spent waiting for it is not counted against the call's idle budget.
   */
  resume?: () => Promise<void>;
}

interface GuestApi {
  call: ivm.Reference<(input: string) => string>;
  poll: ivm.Reference<(id: number) => string>;
  deliver: ivm.Reference<(results: string) => void>;
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
  /** Calls waiting for this context to run again (anything that runs may settle their promises). */
  wakers: Set<() => void>;
}

/** What one invocation has used so far. */
interface Budget {
  cpuNs: number;
  cpuLimitNs: number;
  timeoutMs: number;
  startedAt: number;
  capabilityMs: number;
  capabilityWallMs: number;
  rounds: number;
  maxRounds: number;
  onIdle?: () => void;
  resume?: () => Promise<void>;
  /** Whether the call holds its tenant's turn (true until its first wait). */
  holding: boolean;
  /** Wall time spent waiting for resume() (the scheduler), excluded from the idle budget. */
  queuedMs: number;
}

// Loading a version that passed the publish-time trial: bounded, with room for a CPU-starved machine.
export const LOAD_TIMEOUT_MS = 1000;
const MIN_MEMORY_MB = 8;
const MAX_BACKOFF_MS = 10_000;
const STREAK_RESET_MS = 30_000;
const TIMED_OUT = 'Script execution timed out.';
export const CAPABILITY_WALL_MS = 5_000;
export const CAPABILITY_ROUNDS = 8;
/** Wake-ups of one waiting call (each is a turn of the context by some other call). */
const MAX_TURNS = 10_000;

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
      poll: fn('poll'),
      deliver: fn('deliver'),
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
  #secrets: Record<string, string> = Object.create(null);
  readonly #capabilities: HostCapabilities;
  #down = false;
  #crashStreak = 0;
  #lastLostAt = 0;
  #rebuildAt = 0;
  #restarts = 0;

  /** `fetch`: the backend of the tenant's ctx.fetch (the daemon's PluginFetch, or a cordon's relay to it). */
  constructor(opts: { tenant: string; memoryMb: number; events: SandboxEvents; fetch?: CapabilityFetch }) {
    this.tenant = opts.tenant;
    this.#capabilities = new HostCapabilities(opts.fetch === undefined ? {} : { fetch: opts.fetch });
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
    const loaded: LoadedVersion = { spec, refs: 1, configsSeen: new Set(), wakers: new Set() };
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
    this.#secrets = Object.assign(Object.create(null) as Record<string, string>, secrets);
    if (this.#down) return;
    for (const v of this.#versions.values()) {
      try {
        v.api?.setSecrets.applySync(undefined, [json], { timeout: LOAD_TIMEOUT_MS });
      } catch (e) {
        this.#fail(v.spec.key, e, this.#isolate as ivm.Isolate, 0);
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

  /**
   * Runs one hook call. Synchronous when the hook settles synchronously (the common case); a promise
   * when it awaits something (another call's progress, or a host capability). `timeoutMs` bounds the
   * guest's CPU and the wall time it may sit idle; capability work has its own wall budget.
   */
  invoke(
    key: string,
    input: Record<string, unknown>,
    config: unknown,
    timeoutMs: number,
    limits: InvokeLimits = {},
  ): InvokeOutcome | Promise<InvokeOutcome> {
    if (this.#down) {
      if (Date.now() < this.#rebuildAt) {
        return { ok: false, kind: 'unavailable', message: 'isolate is being rebuilt (back-off after repeated failures)', cpuNs: 0 };
      }
      this.#rebuild();
    }
    const v = this.#versions.get(key);
    const isolate = this.#isolate;
    const api = v?.api;
    if (v === undefined || api === undefined || isolate === undefined || this.#down) {
      return { ok: false, kind: 'unavailable', message: `plugin version ${key} is not loaded`, cpuNs: 0 };
    }
    const configId = input.configId as number;
    const json = JSON.stringify(v.configsSeen.has(configId) ? input : { ...input, config });
    v.configsSeen.add(configId);
    const b: Budget = {
      cpuNs: 0,
      cpuLimitNs: Math.max(1, timeoutMs) * 1e6,
      timeoutMs: Math.max(1, timeoutMs),
      startedAt: performance.now(),
      capabilityMs: 0,
      capabilityWallMs: Math.max(0, limits.capabilityWallMs ?? CAPABILITY_WALL_MS),
      rounds: 0,
      maxRounds: Math.max(0, limits.capabilityRounds ?? CAPABILITY_ROUNDS),
      holding: true,
      queuedMs: 0,
    };
    if (limits.onIdle !== undefined) {
      b.onIdle = limits.onIdle;
      if (limits.resume !== undefined) b.resume = limits.resume;
    }
    let out: unknown;
    let id: number | undefined;
    try {
      out = this.#enter(isolate, b, (timeout) => api.call.applySync(undefined, [json], { timeout }));
      this.#wake(v);
      if (typeof out === 'string' && out.startsWith('{"pending":')) {
        id = (JSON.parse(out) as { pending: number }).pending;
        const pendingId = id;
        // Microtasks ran before applySync returned: most async hooks have settled by now.
        out = this.#enter(isolate, b, (timeout) => api.poll.applySync(undefined, [pendingId], { timeout }));
        if (out === '' || (typeof out === 'string' && out.startsWith('['))) return this.#drive(v, api, isolate, pendingId, out, b);
      }
    } catch (e) {
      const failed = this.#fail(key, e, isolate, b.cpuNs);
      // The guest must not keep a call the host gave up on (it counts against its pending limit).
      if (id !== undefined && this.#current(v, api, isolate)) this.#abandon(api, id, b, 'threw', '');
      return failed;
    }
    if (typeof out !== 'string') return { ok: false, kind: 'bad_result', message: 'hook call returned a non-string', cpuNs: b.cpuNs };
    return { ok: true, result: out, cpuNs: b.cpuNs };
  }

  /** Runs one phase of a request's chain in this isolate (inline mode; a cordon adds its own hooks). */
  runPass(pass: ChainPass): PassResult | Promise<PassResult> {
    return runChainPass(this, pass);
  }

  dispose(): void {
    this.#teardown();
    this.#versions.clear();
    this.#capabilities.dispose();
  }

  /** One synchronous turn of the isolate, charged to the call's CPU (only its own turns count). */
  #enter<T>(isolate: ivm.Isolate, b: Budget, run: (timeoutMs: number) => T): T {
    const leftNs = b.cpuLimitNs - b.cpuNs;
    if (leftNs <= 0) throw new Error(TIMED_OUT);
    const c0 = isolate.cpuTime;
    try {
      return run(Math.max(1, Math.ceil(leftNs / 1e6)));
    } finally {
      if (!isolate.isDisposed) b.cpuNs += Number(isolate.cpuTime - c0);
    }
  }

  /**
   * The async half of invoke: until the hook settles, perform the capability requests it makes
   * (bounded rounds, capability wall budget) or, when it makes none, wait for the context to run
   * again for another call (its promise may depend on that call) within the idle wall budget.
   */
  async #drive(v: LoadedVersion, api: GuestApi, isolate: ivm.Isolate, id: number, first: string, b: Budget): Promise<InvokeOutcome> {
    const out = await this.#driveTurns(v, api, isolate, id, first, b);
    // The caller goes on using the isolate (the rest of its chain): only within its tenant's turn.
    await this.#regain(b);
    return out;
  }

  #idle(b: Budget): void {
    if (!b.holding || b.onIdle === undefined) return;
    b.holding = false;
    try {
      b.onIdle();
    } catch {}
  }

  async #regain(b: Budget): Promise<void> {
    if (b.holding || b.resume === undefined) return;
    const t0 = performance.now();
    try {
      await b.resume();
    } catch {}
    b.queuedMs += performance.now() - t0;
    b.holding = true;
  }

  async #driveTurns(v: LoadedVersion, api: GuestApi, isolate: ivm.Isolate, id: number, first: string, b: Budget): Promise<InvokeOutcome> {
    let out: unknown = first;
    this.#idle(b);
    try {
      for (let turn = 0; turn < MAX_TURNS; turn++) {
        if (typeof out !== 'string') return this.#abandon(api, id, b, 'bad_result', 'hook call returned a non-string');
        if (out !== '' && !out.startsWith('[')) return { ok: true, result: out, cpuNs: b.cpuNs };
        if (out.startsWith('[')) {
          if (++b.rounds > b.maxRounds) {
            return this.#abandon(api, id, b, 'timeout', `plugin needed more than ${b.maxRounds} rounds of capability calls in one hook call`);
          }
          this.#idle(b);
          const t0 = performance.now();
          const results = await this.#capabilities.perform(JSON.parse(out), {
            secrets: this.#secrets,
            now: Date.now(),
            wallLeftMs: b.capabilityWallMs - b.capabilityMs,
          });
          b.capabilityMs += performance.now() - t0;
          await this.#regain(b);
          if (!this.#current(v, api, isolate)) return this.#gone(b);
          if (b.capabilityMs > b.capabilityWallMs) {
            return this.#abandon(api, id, b, 'timeout', `capability calls took longer than ${b.capabilityWallMs} ms in one hook call`);
          }
          this.#enter(isolate, b, (timeout) => api.deliver.applySync(undefined, [JSON.stringify(results)], { timeout }));
          this.#wake(v);
        } else {
          const idleLeft = b.timeoutMs - (performance.now() - b.startedAt - b.capabilityMs - b.queuedMs);
          if (idleLeft <= 0) return this.#abandon(api, id, b, 'timeout', 'async hook did not settle within the CPU time per request');
          this.#idle(b);
          await this.#nextTurn(v, idleLeft);
          await this.#regain(b);
          if (!this.#current(v, api, isolate)) return this.#gone(b);
        }
        out = this.#enter(isolate, b, (timeout) => api.poll.applySync(undefined, [id], { timeout }));
      }
      return this.#abandon(api, id, b, 'timeout', 'async hook did not settle');
    } catch (e) {
      const failed = this.#fail(v.spec.key, e, isolate, b.cpuNs);
      if (this.#current(v, api, isolate)) this.#abandon(api, id, b, failed.ok ? 'threw' : failed.kind, '');
      return failed;
    }
  }

  /** Gives up on a pending call: the guest drops its state so nothing is left hanging. */
  #abandon(api: GuestApi, id: number, b: Budget, kind: FailureKind, message: string): InvokeOutcome {
    try {
      api.cancel.applySync(undefined, [id], { timeout: LOAD_TIMEOUT_MS });
    } catch {}
    return { ok: false, kind, message, cpuNs: b.cpuNs };
  }

  #current(v: LoadedVersion, api: GuestApi, isolate: ivm.Isolate): boolean {
    return v.api === api && this.#isolate === isolate && !isolate.isDisposed;
  }

  #gone(b: Budget): InvokeOutcome {
    return { ok: false, kind: 'unavailable', message: 'the plugin context was unloaded or rebuilt while the call was waiting', cpuNs: b.cpuNs };
  }

  #wake(v: LoadedVersion): void {
    if (v.wakers.size === 0) return;
    const wakers = [...v.wakers];
    v.wakers.clear();
    for (const w of wakers) w();
  }

  #nextTurn(v: LoadedVersion, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        v.wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(1, Math.ceil(ms)));
      v.wakers.add(done);
    });
  }

  #fail(key: string, e: unknown, isolate: ivm.Isolate, cpuNs: number): InvokeOutcome {
    const { kind, message } = classifyError(isolate, e);
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
      this.#wake(v);
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
      const result = JSON.parse(loaded.loadResult) as { hooks?: Array<'onRequest' | 'onResponse'>; noHooks?: string; badDeclaration?: string };
      if (result.hooks === undefined) {
        loaded.context.release();
        this.#events.onLoadError(v.spec.key, 'bad_result', result.noHooks ?? result.badDeclaration ?? 'plugin has no hooks');
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
    this.#wake(v);
  }
}
