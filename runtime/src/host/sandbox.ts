// TenantSandbox owns one tenant's isolate: a context per plugin version in use, one context for the
// chain runner (sdk/src/guest/runner.ts), loading, and rebuilding after a crash. It speaks plain data
// only (JSON strings in, JSON strings out), so it runs the same in the daemon (inline) and in a
// cordon process.
//
// Security: the host keeps references *to* guest functions; nothing from the host (Reference,
// ExternalCopy, Callback) is ever placed where plugin code could reach it. Data crosses as strings.
// The runner's context holds each plugin context's entry functions (handed over by reference at
// load), one host callback, `mark`, through which the host measures each entry's CPU, and 16 bytes
// of memory shared with the host (the crossing's start, the entry running: lazy marks, pass-wire.ts);
// plugin code cannot reach that context (runner.ts: it hands plugins only strings and numbers).
//
// A pass (one phase of a request's chain) is one crossing into the runner in the common case;
// PassDrive (pass-drive.ts) makes the crossings and measures them.

import v8 from 'node:v8';
import ivm from 'isolated-vm';
import { HostCapabilities, type CapabilityFetch } from './capabilities.ts';
import { decodePass, encodePass, generationJson, hookBits, type ChainPass, type EncodedPass, type PassHooks, type PassResult, type PassWire } from './chain-pass.ts';
import { guestRuntimeCode, runnerCode } from './guest-code.ts';
import { PassDrive, type Crossing, type DriveHost, type RunnerCall } from './pass-drive.ts';
import { threadCpuClock } from './thread-clock.ts';
import { SHARED_BYTES, SHARED_CLOCK, SHARED_EACH, SHARED_RUNNING } from '@isomesh/sdk/pass-wire';

export { CAPABILITY_ROUNDS, CAPABILITY_WALL_MS } from './pass-drive.ts';

// A plugin's hook runs while the runner's context is the one entered into the isolate. V8 lets the
// Function constructor (new Function, Function('return this')) create code only when the entered
// context may access the constructor's own context — contexts of one isolate never may (each has
// its own security token) — so without this, plugins that compile code (ajv, template engines) would
// fail with "no access". The check guards against one context using another's Function constructor;
// here no context ever holds another's objects (runner.ts), so a plugin can still only create
// functions in its own context. Process-wide, and read by V8 at each call.
v8.setFlagsFromString('--allow-unsafe-function-constructor');

export interface VersionSpec {
  /** Unique per loaded code: "<plugin>@<version>#<digest>". */
  key: string;
  plugin: string;
  version: number;
  digest: string;
  code: string;
  /** The version's slot in the chain runner (set by whoever encodes passes; assigned here when absent). */
  slot?: number;
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

/** Bounds of one entry's capability loop (defaults: CAPABILITY_WALL_MS, CAPABILITY_ROUNDS). */
export interface InvokeLimits {
  /** Wall time host capabilities may take in one hook call; not charged as the tenant's CPU. */
  capabilityWallMs?: number;
  /** Rounds of capability requests one hook call may need. */
  capabilityRounds?: number;
  /**
   * Called once when the pass stops using the isolate to wait (for a capability or for another
   * call). A scheduler that runs one pass per tenant at a time may start the tenant's next one
   * meanwhile: the sandbox charges each pass only for its own turns of the isolate.
   */
  onIdle?: () => void;
  /**
   * With onIdle: resolves when the scheduler gives the pass its tenant's turn back. The sandbox
   * awaits it before it uses the isolate again after a wait, and calls onIdle again at the next wait
   * — so the work a pass does after a capability is scheduled like a new pass. Time spent waiting for
   * it is not counted against the entry's idle budget.
   */
  resume?: () => Promise<void>;
}

interface GuestApi {
  setSecrets: ivm.Reference<(json: string) => void>;
  finishLoad: ivm.Reference<(meta: string) => string>;
  /** The runner's entries into this context (handed to the runner at load, then released here). */
  request: ivm.Reference<unknown>;
  response: ivm.Reference<unknown>;
  poll: ivm.Reference<unknown>;
  deliver: ivm.Reference<unknown>;
  cancel: ivm.Reference<unknown>;
}

type RunnerApi = Record<RunnerCall | 'install' | 'uninstall' | 'generation' | 'dropGeneration' | 'setMark' | 'forget', ivm.Reference<unknown>>;

interface LoadedVersion {
  spec: VersionSpec;
  slot: number;
  refs: number;
  context?: ivm.Context;
  api?: GuestApi;
  hooks?: Array<'onRequest' | 'onResponse'>;
}

// Loading a version that passed the publish-time trial: bounded, with room for a CPU-starved machine.
export const LOAD_TIMEOUT_MS = 1000;
const MIN_MEMORY_MB = 8;
const MAX_BACKOFF_MS = 10_000;
const STREAK_RESET_MS = 30_000;
const TIMED_OUT = 'Script execution timed out.';
/** Generation 0 is the scratch generation of invoke(). */
const INVOKE_GENERATION = 0;
/**
 * One pass in MEASURE_EVERY of an isolate marks every entry (lazy marks, pass-wire.ts): what each
 * plugin version costs alone, to split the CPU of the others' unmarked stretches.
 */
const MEASURE_EVERY = 16;

/** The clock crossings are measured with (thread-clock.ts); isolated-vm's own where that cannot load. */
const threadClock = threadCpuClock();

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
  filename = 'plugin.js',
): { context: ivm.Context; api: GuestApi; loadResult: string } {
  const context = isolate.createContextSync();
  try {
    guest.runSync(context, { timeout: timeoutMs });
    const entry = context.global.getSync('__isomesh', { reference: true }) as ivm.Reference<Record<string, unknown>>;
    const fn = <T>(name: string): ivm.Reference<T> => entry.getSync(name, { reference: true }) as ivm.Reference<T>;
    const api: GuestApi = {
      setSecrets: fn('setSecrets'),
      finishLoad: fn('finishLoad'),
      request: fn('request'),
      response: fn('response'),
      poll: fn('poll'),
      deliver: fn('deliver'),
      cancel: fn('cancel'),
    };
    entry.release();
    context.global.deleteSync('__isomesh');
    api.setSecrets.applySync(undefined, [secretsJson], { timeout: timeoutMs });
    const script = isolate.compileScriptSync(code, { filename });
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
  #runner: RunnerApi | undefined;
  #versions = new Map<string, LoadedVersion>();
  #bySlot = new Map<number, LoadedVersion>();
  #nextSlot = 1;
  /** Chain generations: id → JSON of their services and configs (installed in every new isolate). */
  #generations = new Map<number, string>();
  #secretsJson = '{}';
  #secrets: Record<string, string> = Object.create(null);
  readonly #capabilities: HostCapabilities;
  /** The pass inside the isolate right now (the runner's mark callback reaches it). */
  #crossing: PassDrive | undefined;
  /** Passes waiting for the isolate's next turn (another call may settle what they wait on). */
  #wakers = new Set<() => void>();
  /** The version of the entry that ran last (a lost isolate counts as its restart). */
  #lastEntered: string | undefined;
  #tokens = 0;
  #incarnation = 0;
  #invokeConfigs = 0;
  #down = false;
  #crashStreak = 0;
  #lastLostAt = 0;
  #rebuildAt = 0;
  #restarts = 0;
  readonly #driveHost: DriveHost;
  /** Memory shared with the chain runner of every isolate this sandbox builds (pass-wire.ts, lazy marks). */
  readonly #shared = new SharedArrayBuffer(SHARED_BYTES);
  readonly #clock = new Float64Array(this.#shared, 0, 1);
  readonly #ctl = new Int32Array(this.#shared, 0, SHARED_BYTES / 4);
  /** CPU (ns) of a call of each slot's version, measured alone (EWMA): splits unmarked stretches. */
  readonly #weights = new Map<number, number>();
  readonly #measureEvery: number;
  #passes = 0;
  #marks = 0;
  /** isolated-vm's clock (the fallback) cannot be read once its isolate is gone: its last reading. */
  #lastCpu = 0;

  /**
   * `fetch`: the backend of the tenant's ctx.fetch (the daemon's PluginFetch, or a cordon's relay to it).
   * `measureEvery`: one pass in that many marks every entry (MEASURE_EVERY), and so does every pass
   * with a version not measured yet; 1: every pass; 0: only those that ask (tests of lazy marks).
   */
  constructor(opts: { tenant: string; memoryMb: number; events: SandboxEvents; fetch?: CapabilityFetch; measureEvery?: number }) {
    this.tenant = opts.tenant;
    this.#measureEvery = Math.max(0, Math.floor(opts.measureEvery ?? MEASURE_EVERY));
    this.#capabilities = new HostCapabilities(opts.fetch === undefined ? {} : { fetch: opts.fetch });
    this.#memoryMb = Math.max(MIN_MEMORY_MB, opts.memoryMb);
    this.#events = opts.events;
    this.#driveHost = {
      cross: (drive, call, args, timeoutMs) => this.#cross(drive, call, args, timeoutMs),
      cpuNs: () => this.#cpuNs(),
      generation: () => this.#incarnation,
      slotHooks: (slot) => {
        const hooks = this.#bySlot.get(slot)?.hooks;
        return hooks === undefined ? undefined : hookBits(hooks);
      },
      capabilities: this.#capabilities,
      secrets: () => this.#secrets,
      nextTurn: (ms) => this.#nextTurn(ms),
      newToken: () => ++this.#tokens,
      forget: (token) => {
        try {
          this.#runner?.forget.applySync(undefined, [token], { timeout: LOAD_TIMEOUT_MS });
        } catch {
          // its state goes with a lost isolate
        }
      },
      entered: (slot) => {
        this.#lastEntered = this.#bySlot.get(slot)?.spec.key;
      },
      weight: (slot) => this.#weights.get(slot),
      learn: (slot, ns) => {
        const w = this.#weights.get(slot);
        this.#weights.set(slot, w === undefined ? ns : w + (ns - w) / 8);
      },
    };
    this.#build();
  }

  get restarts(): number {
    return this.#restarts;
  }

  /** Some loaded version in `slots` has not been measured alone yet (its weight would be a guess). */
  #unmeasured(slots: readonly number[]): boolean {
    for (const slot of slots) if (slot > 0 && !this.#weights.has(slot)) return true;
    return false;
  }

  /** Mark callbacks the runner made (lazy marks leave out most of them; tests and benchmarks read it). */
  get marks(): number {
    return this.#marks;
  }

  /** Loads `spec` unless already loaded; each retain needs one release. */
  retain(spec: VersionSpec): void {
    const v = this.#versions.get(spec.key);
    if (v !== undefined) {
      v.refs++;
      return;
    }
    const slot = spec.slot ?? this.#nextSlot++;
    const loaded: LoadedVersion = { spec, slot, refs: 1 };
    this.#versions.set(spec.key, loaded);
    this.#bySlot.set(slot, loaded);
    if (!this.#down) this.#load(loaded);
  }

  release(key: string): void {
    const v = this.#versions.get(key);
    if (v === undefined) return;
    if (--v.refs > 0) return;
    this.#versions.delete(key);
    if (this.#bySlot.get(v.slot) === v) this.#bySlot.delete(v.slot);
    this.#weights.delete(v.slot);
    this.#unload(v);
  }

  hooks(key: string): Array<'onRequest' | 'onResponse'> | undefined {
    return this.#versions.get(key)?.hooks;
  }

  /** The runner slot of a retained version. */
  slotOf(key: string): number | undefined {
    return this.#versions.get(key)?.slot;
  }

  /** A chain generation's ctx.route services and entry configs, installed in the isolate once. */
  defineGeneration(generation: number, services: readonly string[], configs: ReadonlyArray<readonly [number, unknown]>): void {
    this.defineGenerationJson(generation, generationJson(services, configs));
  }

  /** The same, already encoded (a cordon receives it from the daemon). */
  defineGenerationJson(generation: number, json: string): void {
    this.#generations.set(generation, json);
    if (this.#down || this.#runner === undefined) return;
    try {
      this.#runner.generation.applySync(undefined, [generation, json], { timeout: LOAD_TIMEOUT_MS });
    } catch (e) {
      this.#fail(undefined, e, this.#isolate as ivm.Isolate);
    }
  }

  dropGeneration(generation: number): void {
    if (!this.#generations.delete(generation) || this.#down || this.#runner === undefined) return;
    try {
      this.#runner.dropGeneration.applySync(undefined, [generation], { timeout: LOAD_TIMEOUT_MS });
    } catch (e) {
      this.#fail(undefined, e, this.#isolate as ivm.Isolate);
    }
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

  /** Runs one phase of a request's chain in this isolate (inline mode; a cordon adds its own hooks). */
  runPass(pass: ChainPass, hooks: PassHooks = {}): PassResult | Promise<PassResult> {
    const enc = encodePass(pass, (key) => this.slotOf(key));
    const wire = this.runEncoded(enc, hooks);
    return wire instanceof Promise ? wire.then((w) => decodePass(pass, w)) : decodePass(pass, wire);
  }

  /**
   * Runs an encoded pass and answers the runner's JSON with what was measured around it. Synchronous
   * when every hook settles synchronously or with a capability answered at once (the common case).
   */
  runEncoded(enc: EncodedPass, hooks: PassHooks = {}): PassWire | Promise<PassWire> {
    if (this.#down) {
      if (Date.now() < this.#rebuildAt) return unavailablePass(enc, 'isolate is being rebuilt (back-off after repeated failures)');
      this.#rebuild();
      if (this.#down) return unavailablePass(enc, 'isolate is being rebuilt (back-off after repeated failures)');
    }
    const each = enc.each === true || (this.#measureEvery > 0 && (this.#passes++ % this.#measureEvery === 0 || this.#unmeasured(enc.slots)));
    return new PassDrive(this.#driveHost, each && enc.each !== true ? { ...enc, each } : enc, hooks).run();
  }

  /**
   * One hook call as a one-entry pass (tests and tools): `input` as the guest's CallInput, the
   * result as a CallResult-shaped JSON (a hook that threw: action "error"). Other failures (timeout,
   * memory, bad result, unavailable) come back as ok: false.
   */
  invoke(
    key: string,
    input: { hook: string; requestId: string; now?: number; configId?: number; req?: ChainPass['req']; res?: ChainPass['res'] },
    config: unknown,
    timeoutMs: number,
    limits: PassHooks['limits'] = {},
  ): InvokeOutcome | Promise<InvokeOutcome> {
    const configId = 1_000_000_000 + ++this.#invokeConfigs;
    this.defineGeneration(INVOKE_GENERATION, [], [[configId, config]]);
    const pass: ChainPass = {
      phase: input.hook === 'onResponse' ? 'onResponse' : 'onRequest',
      requestId: input.requestId,
      generation: INVOKE_GENERATION,
      entries: [{ key, plugin: key.split('@')[0] as string, configId, failurePolicy: 'closed' }],
      // The wall backstop of the call is timeoutMs (budget × factor + slack).
      cpuBudgetMs: Math.max(0, (timeoutMs - 2) / 1.5),
    };
    if (input.req !== undefined) pass.req = input.req;
    if (input.res !== undefined) pass.res = input.res;
    const toOutcome = (r: PassResult): InvokeOutcome => {
      const rep = r.reports[0];
      const cpuNs = rep?.cpuNs ?? 0;
      const o = r.outcome;
      // A hook that threw is the guest's answer (action "error"), as the guest's call reports it.
      if (o.action === 'fail' && rep?.outcome === 'threw') return { ok: true, result: JSON.stringify({ action: 'error', message: o.message, logs: rep.logs, metrics: rep.metrics }), cpuNs };
      if (o.action === 'fail') {
        const kind = rep !== undefined && rep.outcome !== 'ok' && rep.outcome !== 'respond' && rep.outcome !== 'shed' ? rep.outcome : 'unavailable';
        return { ok: false, kind, message: o.message, cpuNs };
      }
      const extras = { logs: rep?.logs, metrics: rep?.metrics };
      if (o.action === 'respond') return { ok: true, result: JSON.stringify({ action: 'respond', status: o.status, headers: o.headers, body: o.body, ...extras }), cpuNs };
      return { ok: true, result: JSON.stringify({ ...o, ...(r.body === undefined ? {} : { body: r.body }), ...extras }), cpuNs };
    };
    const out = this.runPass(pass, { limits });
    return out instanceof Promise ? out.then(toOutcome) : toOutcome(out);
  }

  dispose(): void {
    this.#teardown();
    this.#versions.clear();
    this.#bySlot.clear();
    this.#capabilities.dispose();
  }

  // ── crossings ──────────────────────────────────────────────────────────────────────────────────

  #cross(drive: PassDrive, call: RunnerCall, args: unknown[], timeoutMs: number): Crossing {
    // A lost isolate is rebuilt on its next use unless it is in its back-off.
    if (this.#down && Date.now() >= this.#rebuildAt) this.#rebuild();
    const isolate = this.#isolate;
    const runner = this.#runner;
    if (this.#down || isolate === undefined || runner === undefined || isolate.isDisposed) {
      return { ok: false, kind: 'unavailable', message: 'isolate is being rebuilt (back-off after repeated failures)', lost: true };
    }
    let out: unknown;
    let error: unknown;
    let threw = false;
    this.#crossing = drive;
    // The wall clock first: the crossing's wall time then spans its CPU reading (lazy marks).
    this.#clock[SHARED_CLOCK] = Date.now();
    this.#ctl[SHARED_EACH] = call === 'pass' && !drive.each ? 0 : 1;
    this.#ctl[SHARED_RUNNING] = drive.current;
    drive.beginCrossing(this.#cpuNs());
    try {
      // A pass answers a string, or (rarely) the holder its microtasks filled: by reference, read below.
      out = runner[call].applySync(undefined, args, call === 'pass' ? { timeout: timeoutMs } : { timeout: timeoutMs, result: { copy: true } });
    } catch (e) {
      threw = true;
      error = e;
    } finally {
      this.#crossing = undefined;
      drive.endCrossing(this.#cpuNs(isolate), this.#ctl[SHARED_RUNNING]);
    }
    this.#wakeAll();
    if (threw) {
      const failed = this.#fail(undefined, error, isolate);
      const out: Crossing = { ok: false, kind: failed.kind, message: failed.message, lost: isolate.isDisposed };
      // Each plugin's code runs as plugin-<slot>.js: the error's stack names the plugin it came from.
      const stack = failed.kind === 'threw' && error instanceof Error ? /\bplugin-(\d+)\.js:/.exec(String(error.stack)) : null;
      if (stack !== null) out.slot = Number(stack[1]);
      return out;
    }
    if (out instanceof ivm.Reference) {
      const ref = out;
      try {
        out = ref.getSync(0);
      } catch (e) {
        out = undefined;
        if (isolate.isDisposed) return { ok: false, ...this.#fail(undefined, e, isolate), lost: true };
      } finally {
        ref.release();
      }
    }
    if (Array.isArray(out)) out = out[0];
    if (typeof out !== 'string') return { ok: true, out: '' };
    return { ok: true, out };
  }

  /** CPU so far (ns) on the clock crossings are measured with; `isolate`: the one the crossing used (it may be gone now). */
  #cpuNs(isolate = this.#isolate): number {
    if (threadClock !== undefined) return threadClock();
    return isolate === undefined || isolate.isDisposed ? this.#lastCpu : (this.#lastCpu = Number(isolate.cpuTime));
  }

  #wakeAll(): void {
    if (this.#wakers.size === 0) return;
    const wakers = [...this.#wakers];
    this.#wakers.clear();
    for (const w of wakers) w();
  }

  #nextTurn(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#wakers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(1, Math.ceil(ms)));
      this.#wakers.add(done);
    });
  }

  // ── the isolate's life ─────────────────────────────────────────────────────────────────────────

  #fail(key: string | undefined, e: unknown, isolate: ivm.Isolate): { kind: FailureKind; message: string } {
    const { kind, message } = classifyError(isolate, e);
    // Only the isolate we still run counts as lost (an async pass may outlive a rebuild).
    if (isolate.isDisposed && isolate === this.#isolate) this.#lost(key ?? this.#lastEntered, kind, message);
    return { kind, message };
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
    this.#incarnation++;
    this.#down = false;
    try {
      this.#guest = this.#isolate.compileScriptSync(guestRuntimeCode(), { filename: 'isomesh-guest.js' });
      this.#startRunner(this.#isolate);
      for (const [g, json] of this.#generations) this.#runner?.generation.applySync(undefined, [g, json], { timeout: LOAD_TIMEOUT_MS });
    } catch (e) {
      const { kind, message } = classifyError(this.#isolate, e);
      this.#lost(undefined, kind === 'threw' ? 'crashed' : kind, `chain runner failed to start: ${message}`);
      return;
    }
    for (const v of this.#versions.values()) {
      if (this.#down) break;
      this.#load(v);
    }
  }

  #startRunner(isolate: ivm.Isolate): void {
    const context = isolate.createContextSync();
    const script = isolate.compileScriptSync(runnerCode(), { filename: 'isomesh-runner.js' });
    script.runSync(context, { timeout: LOAD_TIMEOUT_MS });
    script.release();
    const entry = context.global.getSync('__isomeshRunner', { reference: true }) as ivm.Reference<Record<string, unknown>>;
    const fn = (name: string): ivm.Reference<unknown> => entry.getSync(name, { reference: true }) as ivm.Reference<unknown>;
    const runner: RunnerApi = {
      pass: fn('pass'),
      deliver: fn('deliver'),
      poll: fn('poll'),
      fail: fn('fail'),
      install: fn('install'),
      uninstall: fn('uninstall'),
      generation: fn('generation'),
      dropGeneration: fn('dropGeneration'),
      setMark: fn('setMark'),
      forget: fn('forget'),
    };
    entry.release();
    context.global.deleteSync('__isomeshRunner');
    // The runner's only way into the host: numbers in, a number out, for the pass inside the isolate.
    const mark = new ivm.Callback((entryIndex: unknown, next: unknown, charged: unknown): number => {
      const drive = this.#crossing;
      if (drive === undefined || typeof entryIndex !== 'number' || typeof next !== 'number') return 0;
      this.#marks++;
      return drive.mark(entryIndex, next, charged === 1 ? 1 : 0);
    });
    // Capability requests answered inside the crossing (HostCapabilities.performSync) or "" (not now).
    const capabilities = new ivm.Callback((entryIndex: unknown, requests: unknown): string => {
      const drive = this.#crossing;
      if (drive === undefined || typeof entryIndex !== 'number' || typeof requests !== 'string') return '';
      return drive.capabilitiesNow(entryIndex, requests);
    });
    // The shared memory goes in as an ExternalCopy of the SharedArrayBuffer: the isolate gets the same memory, not a copy.
    runner.setMark.applySync(undefined, [mark, capabilities, new ivm.ExternalCopy(this.#shared).copyInto({ release: true })], { timeout: LOAD_TIMEOUT_MS });
    this.#runner = runner;
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
    }
    this.#runner = undefined;
    this.#wakeAll();
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
        LOAD_TIMEOUT_MS,
        `plugin-${v.slot}.js`,
      );
      const result = JSON.parse(loaded.loadResult) as { hooks?: Array<'onRequest' | 'onResponse'>; noHooks?: string; badDeclaration?: string };
      const a = loaded.api;
      const entries = [a.request, a.response, a.poll, a.deliver, a.cancel];
      if (result.hooks === undefined) {
        for (const ref of [a.setSecrets, a.finishLoad, ...entries]) ref.release();
        loaded.context.release();
        this.#events.onLoadError(v.spec.key, 'bad_result', result.noHooks ?? result.badDeclaration ?? 'plugin has no hooks');
        return;
      }
      (this.#runner as RunnerApi).install.applySync(undefined, [v.slot, hookBits(result.hooks), ...entries.map((r) => r.derefInto())], { timeout: LOAD_TIMEOUT_MS });
      // The runner holds the functions now; the host keeps only what it calls itself.
      for (const ref of entries) ref.release();
      v.context = loaded.context;
      v.api = a;
      v.hooks = result.hooks;
    } catch (e) {
      const { kind, message } = classifyError(isolate, e);
      this.#events.onLoadError(v.spec.key, kind, message);
      if (isolate.isDisposed) this.#lost(v.spec.key, kind, message);
    }
  }

  #unload(v: LoadedVersion): void {
    if (v.api !== undefined) {
      v.api.setSecrets.release();
      v.api.finishLoad.release();
      try {
        this.#runner?.uninstall.applySync(undefined, [v.slot], { timeout: LOAD_TIMEOUT_MS });
      } catch {
        // a lost isolate takes the slot with it
      }
    }
    if (v.context !== undefined && this.#isolate !== undefined && !this.#isolate.isDisposed) v.context.release();
    v.api = undefined;
    v.context = undefined;
    this.#wakeAll();
  }
}

/**
 * A pass that cannot reach the isolate (rebuild back-off): every entry that would run fails as
 * unavailable, under its policy, in order — as if each had been called.
 */
function unavailablePass(enc: EncodedPass, message: string): PassWire {
  const p = JSON.parse(enc.json.slice(0, enc.json.indexOf('\u0001'))) as { e: Array<[number, number, 0 | 1, number, string?]> };
  const reports: Array<{ e: number; o: 'unavailable'; m: string }> = [];
  let out: Record<string, unknown> = { a: 'c' };
  for (let i = 0; i < p.e.length; i++) {
    const [slot, , closed, , plugin] = p.e[i] as [number, number, 0 | 1, number, string?];
    if (slot === -2) continue;
    if (slot === -1) {
      if (closed === 1) {
        out = { a: 'f', k: 'unavailable', m: `plugin ${String(plugin)} has no active version` };
        break;
      }
      continue;
    }
    reports.push({ e: i, o: 'unavailable', m: message });
    if (closed === 1) {
      out = { a: 'f', k: 'unavailable', m: message };
      break;
    }
  }
  return { json: JSON.stringify({ ...out, r: reports }), cpuNs: new Array<number>(enc.entries).fill(0), wallMs: new Array<number>(enc.entries).fill(0) };
}
