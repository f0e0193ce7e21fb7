// The plugin host: per-tenant admission (TenantQuota), the chain (Chain: route filter, canary,
// failure policy) and the isolates. Data planes use it through contract.ts only.
// Mode 'cordon' (default) runs the isolates in supervised worker processes (CordonPool) with a fair
// scheduler in each; mode 'inline' runs them in this process (TenantSandbox), lowest latency but a
// looping plugin blocks this event loop and an isolated-vm abort takes every tenant down.

import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import { IsomeshError, type ErrorCode } from '../errors.ts';
import type { TenantConfig } from '../store/model.ts';
import { Chain, type StepVersion } from './chain.ts';
import { FAILURE_CODES, policyOutcome, unchanged, type ChainPass, type EntryReport, type PassEntry, type PassReply, type PassResult, type Phase } from './chain-pass.ts';
import { createRequire } from 'node:module';
import type { CordonTenant, Hooks, TenantRuntime } from './cordon.ts';
import { CordonPool } from './cordon-pool.ts';
import type {
  Admission,
  ChainRun,
  CompileInput,
  CompiledPlugin,
  HookRequest,
  HookResponse,
  PluginFetch,
  PluginHealth,
  PluginHostAdmin,
  PluginCallTiming,
  PluginHostApi,
  RequestOutcome,
  ResponseHeaderOp,
  ResponseOutcome,
  TenantHostStatus,
} from './contract.ts';
import { applyResponseOps, type GuestLog } from './validate.ts';
import { HostMetrics, type CounterSeries, type HistogramSeries } from './metrics.ts';
import { PluginMetrics } from './plugin-metrics.ts';
import { TenantQuota } from './quota.ts';
import type { NodeLedger } from './ledger.ts';
import type { TenantSandbox, SandboxEvents } from './sandbox.ts';
import { TrialLoader } from './trial.ts';
import { FetchGate } from './plugin-fetch.ts';
import { wireKindFromEnv, type WireKind } from './wire.ts';

export type { CompiledPlugin } from './contract.ts';
export { hashRequestId } from './chain.ts';

/** Plugin log lines forwarded per tenant per second (burst = 2 s worth). */
const LOG_LINES_PER_SEC = 100;
/** How often cordon mode looks for tenants refused for their CPU quota (CordonPool.confine). */
const CONFINE_CHECK_MS = 1000;
/** A confined tenant goes back to its shared cordon after this long without a CPU-quota refusal. */
const CONFINE_HOLD_MS = 60_000;

export type HostMode = 'cordon' | 'inline';

const requireLazy = createRequire(import.meta.url);
/** isolated-vm and the in-process sandbox, loaded when a tenant first runs inline (sync: configure() is). */
function inlineSandbox(): typeof TenantSandbox {
  return (requireLazy('./sandbox.ts') as typeof import('./sandbox.ts')).TenantSandbox;
}

export interface PluginHostOptions {
  logger: Logger;
  registry: Registry;
  /** Default: ISOMESH_HOST_MODE, else 'cordon'. */
  mode?: HostMode;
  /** Shared cordon processes. Default: ISOMESH_CORDONS, else 2. */
  cordons?: number;
  /**
   * Plugin passes a tenant may have waiting or running in its cordon before 429 ISOMESH_ERR_QUOTA_QUEUE.
   * Default: the tenant's maxConcurrentRequests — a request holds at most one pass at a time, so the
   * concurrency quota is the bound, and a tenant under it is never shed by the queue.
   */
  queueLimit?: number;
  /** daemon ↔ cordon transport. Default: ISOMESH_CORDON_WIRE, else 'socket'. */
  wire?: WireKind;
  /** Wall time a publish-time trial load may take (default PROBE_TIMEOUT_MS, 2 s). */
  trialLoadTimeoutMs?: number;
  /** The data plane's backend of ctx.fetch; absent → ctx.fetch rejects with "fetch is not available". */
  fetch?: PluginFetch;
  /** Shared admission rows (several data-plane workers): quotas hold for the node. */
  ledger?: NodeLedger;
  /** Cordon mode: how often to look for tenants refused for their CPU quota (default 1 s). */
  confineCheckMs?: number;
  /** Cordon mode: how long a confined tenant must go without a CPU-quota refusal to go back (default 60 s). */
  confineHoldMs?: number;
}

export function hostModeFromEnv(env: NodeJS.ProcessEnv = process.env): HostMode {
  const m = env.ISOMESH_HOST_MODE;
  if (m === undefined || m === '' || m === 'cordon') return 'cordon';
  if (m === 'inline') return 'inline';
  throw new IsomeshError('ISOMESH_ERR_API_VALIDATION', `ISOMESH_HOST_MODE must be cordon or inline (got "${m}")`);
}

interface Generation {
  /** Its configs and services are installed in the tenant's isolate under this id. */
  id: number;
  chain: Chain;
  /** The tenant's current config holds one ref; each ChainRun pinned to it holds one. */
  refs: number;
}

interface VersionRecord extends PluginHealth {
  consecutiveFailures: number;
  /** Metric series resolved once: a call adds to plain numbers (read by prom-client at scrape). */
  outcomes: Map<string, CounterSeries>;
  cpu: CounterSeries;
  duration: HistogramSeries;
}

interface TenantState {
  name: string;
  sandbox: TenantRuntime;
  /** Set in cordon mode. */
  cordon?: CordonTenant;
  quota: TenantQuota;
  gen: Generation;
  versions: Map<string, VersionRecord>;
  logTokens: number;
  logRefilledAt: number;
  logsDropped: number;
  logger: Logger;
  /** CPU-quota refusals seen by the last confinement check, and when the count last grew. */
  cpuRefusals: number;
  cpuRefusedAt: number;
}

interface Run extends ChainRun {
  readonly state: TenantState;
  readonly gen: Generation;
  cpuMs: number;
  /** CPU of the entries that succeeded: what counts against cpuMsPerRequest for the next entries. */
  budgetUsedMs: number;
  ended: boolean;
  /** The route onRequest saw; onResponse applies the same entries. */
  route?: string;
  routed: boolean;
  /** Timings of the run's plugin calls, when recordCalls() asked for them (traced requests). */
  calls?: PluginCallTiming[];
  /** Made by attach(): admitted by a worker, so end() releases no admission slot here. */
  attached?: boolean;
  /** onRequest's ctx.responseHeaders edits (applied when the response arrives) and the steps that skip onResponse. */
  responseOps?: ResponseHeaderOp[];
  skipSteps?: Set<number>;
}

/** A pass as sent, with the version each of its entries stands for (metrics and health are per version). */
interface Plan {
  pass: ChainPass;
  versions: Array<StepVersion | undefined>;
  /** The chain step (index in the generation's steps) of each entry. */
  steps: number[];
  /** Some entry declared body access for this phase. */
  body: boolean;
  /** Epoch ms the pass was sent (traced runs only). */
  startMs?: number;
}

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

export class PluginHost implements PluginHostApi, PluginHostAdmin {
  readonly #logger: Logger;
  readonly #metrics: HostMetrics;
  readonly #pluginMetrics: PluginMetrics;
  readonly #tenants = new Map<string, TenantState>();
  readonly #pool: CordonPool | undefined;
  /** Cordon mode: publish-time trial loads run in a process of their own. */
  readonly #trial: TrialLoader | undefined;
  readonly #trialTimeoutMs: number | undefined;
  readonly #fetch: FetchGate;
  readonly #ledger: NodeLedger | undefined;
  /** digest → hooks, learnt at compile: hasResponseHooks() can answer before a cordon has loaded the code. */
  readonly #compiledHooks = new Map<string, Hooks>();
  readonly mode: HostMode;
  #configIds = 0;
  /** Chain generation ids (0 is a sandbox's own scratch generation). */
  #generationIds = 0;
  #closed = false;
  readonly #confineTimer: NodeJS.Timeout | undefined;
  readonly #confineHoldMs: number;

  constructor(opts: PluginHostOptions) {
    this.#logger = opts.logger.child({ component: 'host' });
    this.#metrics = new HostMetrics(opts.registry, () =>
      [...this.#tenants.values()].map((t) => ({
        tenant: t.name,
        memoryBytes: t.sandbox.memoryBytes(),
        cpuMsPerSecond: t.quota.cpuMsLastSecond(),
        ...(t.cordon === undefined ? {} : { cordon: t.cordon.placement().cordon, pid: t.cordon.placement().pid }),
      })),
    );
    this.#pluginMetrics = new PluginMetrics(opts.registry);
    this.mode = opts.mode ?? hostModeFromEnv();
    this.#trialTimeoutMs = opts.trialLoadTimeoutMs;
    this.#ledger = opts.ledger;
    this.#fetch = new FetchGate(opts.fetch, (tenant, service) => this.#tenants.get(tenant)?.gen.chain.services.has(service) ?? false);
    if (this.mode === 'cordon') {
      const envCount = Number(process.env.ISOMESH_CORDONS);
      this.#pool = new CordonPool({
        count: opts.cordons ?? (Number.isInteger(envCount) && envCount > 0 ? envCount : 2),
        wire: opts.wire ?? wireKindFromEnv(),
        logger: this.#logger,
        metrics: this.#metrics,
        ...(opts.queueLimit === undefined ? {} : { queueLimit: opts.queueLimit }),
        hooksFor: (digest) => this.#compiledHooks.get(digest),
        fetch: (tenant, req) => this.#fetch.relay(tenant, req),
      });
      this.#trial = new TrialLoader({ logger: this.#logger, runDir: this.#pool.runDir, ...(opts.trialLoadTimeoutMs === undefined ? {} : { timeoutMs: opts.trialLoadTimeoutMs }) });
      // Admission happens wherever the request arrived (this thread or a data-plane worker); the
      // refusal counts live in the quota rows every thread shares, so one look here sees them all.
      this.#confineTimer = setInterval(() => this.#confineCheck(), opts.confineCheckMs ?? CONFINE_CHECK_MS);
      this.#confineTimer.unref();
    }
    this.#confineHoldMs = opts.confineHoldMs ?? CONFINE_HOLD_MS;
  }

  async compile(input: CompileInput): Promise<CompiledPlugin> {
    const trial = this.#trial;
    const timeoutMs = this.#trialTimeoutMs;
    // Loaded on first use (esbuild, isolated-vm): data-plane worker threads import this module for
    // Chain, TenantQuota and NodeLedger only, and never compile.
    const { compilePlugin } = await import('./compiler.ts');
    const probe = trial !== undefined ? (code: string) => trial.probe(code) : async (code: string) => (await import('./probe.ts')).probeLoad(code, timeoutMs);
    const compiled = await compilePlugin(input, probe);
    if (this.#compiledHooks.size > 4096) this.#compiledHooks.clear();
    this.#compiledHooks.set(compiled.digest, compiled.hooks);
    return compiled;
  }

  /** The shared cordon a tenant name hashes to (cordon mode), before any quarantine. */
  cordonOf(tenant: string): string | undefined {
    return this.#pool?.homeOf(tenant).id;
  }

  /** The trial-load process (cordon mode): pid and whether a load runs; crashes so far. */
  trialProcess(): { pid: number | null; busy: boolean; crashes: number } | undefined {
    return this.#trial === undefined ? undefined : { ...this.#trial.process, crashes: this.#trial.crashes };
  }

  /** The cordon processes (cordon mode): id, pid, state, tenants, restarts, chain passes sent. */
  cordons(): ReturnType<CordonPool['cordons']> {
    return this.#pool?.cordons() ?? [];
  }

  configure(config: TenantConfig): void {
    if (this.#closed) throw new IsomeshError('ISOMESH_ERR_INTERNAL', 'plugin host is closed');
    const chain = new Chain(config, () => ++this.#configIds);
    let state = this.#tenants.get(config.name);
    if (state === undefined) {
      state = this.#createTenant(config, chain);
      this.#tenants.set(config.name, state);
    } else {
      state.quota.update(config.quota);
      state.sandbox.setMemoryMb(config.quota.memoryMb);
      state.cordon?.setWeight(config.quota.weight);
      state.cordon?.setQueueLimit(config.quota.maxConcurrentRequests);
      const before = new Set(state.gen.chain.specs.map((s) => s.key));
      for (const spec of chain.specs) state.sandbox.retain(spec);
      const old = state.gen;
      state.gen = this.#generation(state.sandbox, chain);
      this.#unref(state, old);
      // New code may be the fix for a crash-looping version: rebuild now rather than after back-off.
      if (chain.specs.some((s) => !before.has(s.key))) state.sandbox.resetBackoff();
    }
    state.sandbox.setSecrets(config.secrets);
    const live = new Set(chain.steps.flatMap((s) => [s.active?.healthKey, s.canary?.healthKey]));
    for (const key of state.versions.keys()) if (!live.has(key)) state.versions.delete(key);
  }

  removeTenant(tenant: string): void {
    const state = this.#tenants.get(tenant);
    if (state === undefined) return;
    this.#tenants.delete(tenant);
    this.#pluginMetrics.removeTenant(tenant);
    if (this.#pool !== undefined) this.#pool.removeTenant(tenant);
    else state.sandbox.dispose();
  }

  begin(tenant: string, requestId: string): Admission {
    const state = this.#tenants.get(tenant);
    if (state === undefined) {
      return { ok: false, status: 503, code: 'ISOMESH_ERR_PLUGIN_UNAVAILABLE', message: `tenant ${tenant} is not configured in the plugin host` };
    }
    const admitted = state.quota.admit();
    if (!admitted.ok) {
      this.#metrics.rejections.inc({ tenant, reason: admitted.reason });
      const a: Admission = { ok: false, status: 429, code: admitted.code, message: admitted.message };
      if (admitted.retryAfterSec !== undefined) a.retryAfterSec = admitted.retryAfterSec;
      return a;
    }
    state.gen.refs++;
    const run: Run = { tenant, requestId, state, gen: state.gen, cpuMs: 0, budgetUsedMs: 0, ended: false, routed: false };
    return { ok: true, run };
  }

  /**
   * A run for a request a data-plane worker has already admitted (the node ledger holds its slot):
   * pins the chain generation like begin() but takes no admission; end() releases nothing.
   */
  attach(tenant: string, requestId: string, route: string | undefined): ChainRun | undefined {
    const state = this.#tenants.get(tenant);
    if (state === undefined) return undefined;
    state.gen.refs++;
    const run: Run = { tenant, requestId, state, gen: state.gen, cpuMs: 0, budgetUsedMs: 0, ended: false, route, routed: true, attached: true };
    return run;
  }

  end(run: ChainRun): void {
    const r = run as Run;
    if (r.ended) return;
    r.ended = true;
    if (r.attached !== true) r.state.quota.release();
    this.#unref(r.state, r.gen);
  }

  bodyLimit(run: ChainRun, phase: 'request' | 'response', route?: string): number {
    const r = run as Run;
    return r.gen.chain.bodyLimit(phase, route ?? r.route, r.requestId);
  }

  hasRequestHooks(run: ChainRun, route: string | undefined): boolean {
    const r = run as Run;
    // The route is known now: later phases (onResponse, body limits) filter by it even if onRequest is skipped.
    r.route = route;
    r.routed = true;
    const steps = r.gen.chain.steps;
    if (steps.length === 0) return false;
    return steps.some((step) => {
      if (!Chain.applies(step, route)) return false;
      const v = Chain.versionFor(step, r.requestId);
      const hooks = v === undefined ? undefined : r.state.sandbox.hooks(v.key);
      // No active version: the entry's failure policy still has to answer for it.
      return hooks === undefined || hooks.includes('onRequest');
    });
  }

  hasResponseHooks(run: ChainRun): boolean {
    return (run as Run).responseOps !== undefined || this.responseHooksLeft(run);
  }

  /** Some applicable entry has an onResponse hook this run still calls (ctx.skipOnResponse() taken into account). */
  responseHooksLeft(run: ChainRun): boolean {
    const r = run as Run;
    return r.gen.chain.steps.some((step, at) => {
      if (r.routed && !Chain.applies(step, r.route)) return false;
      if (r.skipSteps?.has(at) === true) return false;
      const v = Chain.versionFor(step, r.requestId);
      const hooks = v === undefined ? undefined : r.state.sandbox.hooks(v.key);
      return hooks === undefined || hooks.includes('onResponse');
    });
  }

  async onRequest(run: ChainRun, req: HookRequest): Promise<RequestOutcome> {
    const r = run as Run;
    r.route = req.route;
    r.routed = true;
    const plan = this.#plan(r, 'onRequest');
    if (plan === undefined) return { action: 'continue', headers: req.headers };
    if (req.body === undefined) plan.pass.req = req;
    else {
      // The bytes travel as base64 (never a host object), and only when an entry reads them.
      const { body, ...rest } = req;
      plan.pass.req = rest;
      if (plan.body) plan.pass.body = base64(body);
    }
    plan.pass.services = r.gen.chain.serviceList;
    const done = this.#runPass(r, plan);
    return (done instanceof Promise ? await done : done) as RequestOutcome;
  }

  async onResponse(run: ChainRun, res: HookResponse): Promise<ResponseOutcome> {
    const r = run as Run;
    // onRequest's ctx.responseHeaders edits come first: the onResponse hooks see the response with them.
    if (r.responseOps !== undefined) res = { ...res, headers: applyResponseOps(res.headers, r.responseOps) };
    const plan = this.#plan(r, 'onResponse');
    if (plan === undefined) return { action: 'continue', status: res.status, headers: res.headers };
    if (res.body === undefined) plan.pass.res = res;
    else {
      const { body, ...rest } = res;
      plan.pass.res = rest;
      if (plan.body) plan.pass.body = base64(body);
    }
    const done = this.#runPass(r, plan);
    return (done instanceof Promise ? await done : done) as ResponseOutcome;
  }

  status(tenant: string): TenantHostStatus {
    const state = this.#tenants.get(tenant);
    if (state === undefined) throw new IsomeshError('ISOMESH_ERR_TENANT_NOT_FOUND', `no tenant ${tenant} in the plugin host`);
    const plugins: Record<string, PluginHealth> = {};
    for (const step of state.gen.chain.steps) {
      for (const v of [step.active, step.canary]) {
        if (v === undefined) continue;
        const rec = this.#record(state, v);
        const h: PluginHealth = { health: rec.health, invocations: rec.invocations, failures: rec.failures, restarts: rec.restarts };
        if (rec.lastError !== undefined) h.lastError = { ...rec.lastError };
        plugins[v.healthKey] = h;
      }
    }
    const q = state.quota.quota;
    const placement: NonNullable<TenantHostStatus['usage']['placement']> =
      state.cordon === undefined ? { mode: 'inline' } : { mode: 'cordon', ...state.cordon.placement() };
    return {
      plugins,
      usage: {
        cpuMsPerSecond: state.quota.cpuMsLastSecond(),
        memoryBytes: state.sandbox.memoryBytes(),
        inFlight: state.quota.inFlight,
        rejections: { ...state.quota.rejections },
        requestsPerSecond: state.quota.requestsLastSecond(),
        queuedCalls: state.cordon?.queued ?? 0,
        limits: {
          cpuMsPerSecond: q.cpuMsPerSecond,
          memoryBytes: q.memoryMb * 1024 * 1024,
          maxConcurrentRequests: q.maxConcurrentRequests,
          requestsPerSecond: q.requestsPerSecond,
          cpuMsPerRequest: q.cpuMsPerRequest,
          weight: q.weight,
        },
        placement,
      },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#confineTimer);
    for (const tenant of [...this.#tenants.keys()]) this.removeTenant(tenant);
    this.#pool?.close();
    this.#trial?.close();
  }

  /**
   * A tenant refused for its CPU quota within the last confineHoldMs runs in a cordon of its own (its
   * long calls would otherwise wait in front of its neighbours'); one that has kept within the quota
   * that long goes back to its shared cordon. A tenant moves only with no request in flight (the
   * cordon it leaves would fail their calls); until then it is tried again at the next look.
   */
  #confineCheck(): void {
    const pool = this.#pool;
    if (pool === undefined) return;
    const now = Date.now();
    for (const state of this.#tenants.values()) {
      const refused = state.quota.rejections.cpu;
      if (refused > state.cpuRefusals) {
        state.cpuRefusals = refused;
        state.cpuRefusedAt = now;
      }
      const held = state.cpuRefusedAt > 0 && now - state.cpuRefusedAt < this.#confineHoldMs;
      if (held === pool.isConfined(state.name) || state.quota.inFlight > 0) continue;
      if (held) pool.confine(state.name);
      else pool.release(state.name);
    }
  }

  #createTenant(config: TenantConfig, chain: Chain): TenantState {
    const name = config.name;
    const logger = this.#logger.child({ tenant: name });
    let state: TenantState | undefined;
    const events: SandboxEvents = {
        onLoadError: (key, kind, message) => {
          logger.warn({ version: key, kind, err: message }, 'plugin version failed to load');
          if (state !== undefined) this.#markFailure(state, key.split('#')[0] as string, FAILURE_CODES[kind], message);
        },
        onIsolateLost: (key, kind, message) => {
          logger.warn({ version: key, kind, err: message }, 'tenant isolate lost; it will be rebuilt');
          if (state !== undefined && key !== undefined) {
            const rec = state.versions.get(key.split('#')[0] as string);
            if (rec !== undefined) rec.restarts++;
          }
        },
        onIsolateRebuilt: () => {
          this.#metrics.restarts.inc({ tenant: name });
          logger.info('tenant isolate rebuilt');
        },
    };
    const cordon = this.#pool?.tenant(name, {
      memoryMb: config.quota.memoryMb,
      weight: config.quota.weight,
      maxConcurrentRequests: config.quota.maxConcurrentRequests,
      events,
    });
    const sandbox: TenantRuntime =
      cordon ?? new (inlineSandbox())({ tenant: name, memoryMb: config.quota.memoryMb, events, fetch: this.#fetch.forTenant(name) });
    for (const spec of chain.specs) sandbox.retain(spec);
    const quota = new TenantQuota(config.quota, Date.now, this.#ledger?.quotaCells(this.#ledger.assign(name)));
    state = {
      name,
      sandbox,
      ...(cordon === undefined ? {} : { cordon }),
      quota,
      gen: this.#generation(sandbox, chain),
      versions: new Map(),
      logTokens: LOG_LINES_PER_SEC * 2,
      logRefilledAt: Date.now(),
      logsDropped: 0,
      // A shared quota row may carry refusals from before (a worker admitted for a tenant of this name).
      cpuRefusals: quota.rejections.cpu,
      cpuRefusedAt: 0,
      logger,
    };
    return state;
  }

  /** A new chain generation: its configs and services go to the isolate once, not with every pass. */
  #generation(sandbox: TenantRuntime, chain: Chain): Generation {
    const id = ++this.#generationIds;
    sandbox.defineGeneration(id, chain.serviceList, chain.steps.map((s) => [s.configId, s.config] as const));
    return { id, chain, refs: 1 };
  }

  #unref(state: TenantState, gen: Generation): void {
    if (--gen.refs > 0) return;
    state.sandbox.dropGeneration(gen.id);
    for (const spec of gen.chain.specs) state.sandbox.release(spec.key);
  }

  #record(state: TenantState, v: StepVersion): VersionRecord {
    let rec = state.versions.get(v.healthKey);
    if (rec === undefined) {
      const labels = { tenant: state.name, plugin: v.plugin };
      rec = {
        health: 'ok',
        invocations: 0,
        failures: 0,
        restarts: 0,
        consecutiveFailures: 0,
        outcomes: new Map(),
        cpu: this.#metrics.cpuSeconds.series(labels),
        duration: this.#metrics.duration.series(labels),
      };
      state.versions.set(v.healthKey, rec);
    }
    return rec;
  }

  #count(state: TenantState, v: StepVersion, rec: VersionRecord, outcome: string): void {
    let c = rec.outcomes.get(outcome);
    if (c === undefined) {
      c = this.#metrics.invocations.series({ tenant: state.name, plugin: v.plugin, version: String(v.version), outcome });
      rec.outcomes.set(outcome, c);
    }
    c.value++;
  }

  #markFailure(state: TenantState, healthKey: string, code: ErrorCode, message: string): void {
    const rec = state.versions.get(healthKey);
    if (rec === undefined) return;
    rec.health = 'degraded';
    rec.lastError = { code, message, at: new Date().toISOString() };
  }

  /**
   * The entries of this phase for this request: route filter, version pinned by the run (canary),
   * entries known not to have the phase's hook left out. Undefined when nothing is left to run.
   */
  #plan(r: Run, phase: Phase): Plan | undefined {
    let entries: PassEntry[] | undefined;
    let versions: Array<StepVersion | undefined> | undefined;
    const steps: number[] = [];
    let body = false;
    const direction = phase === 'onRequest' ? 'request' : 'response';
    const all = r.gen.chain.steps;
    for (let at = 0; at < all.length; at++) {
      const step = all[at]!;
      if (!Chain.applies(step, r.route)) continue;
      if (phase === 'onResponse' && r.skipSteps?.has(at) === true) continue;
      const v = Chain.versionFor(step, r.requestId);
      if (v !== undefined) {
        const hooks = r.state.sandbox.hooks(v.key);
        if (hooks !== undefined && !hooks.includes(phase)) continue;
        // Before the call: events about it (isolate lost, restarts) may arrive before its result.
        this.#record(r.state, v);
      }
      const entry: PassEntry = { plugin: step.plugin, configId: step.configId, failurePolicy: step.failurePolicy };
      if (v !== undefined) {
        entry.key = v.key;
        const limit = v.body?.[direction];
        if (limit !== undefined) {
          entry.body = limit;
          body = true;
        }
      }
      (entries ??= []).push(entry);
      (versions ??= []).push(v);
      steps.push(at);
    }
    if (entries === undefined || versions === undefined) return undefined;
    const cpuBudgetMs = r.state.quota.quota.cpuMsPerRequest - r.budgetUsedMs;
    return { pass: { phase, requestId: r.requestId, generation: r.gen.id, entries, cpuBudgetMs }, versions, steps, body };
  }

  /** Runs a pass (in this process or one round trip to the cordon) and accounts for every entry. */
  recordCalls(run: ChainRun): void {
    (run as Run).calls ??= [];
  }

  calls(run: ChainRun): PluginCallTiming[] | undefined {
    return (run as Run).calls;
  }

  #runPass(r: Run, plan: Plan): RequestOutcome | ResponseOutcome | Promise<RequestOutcome | ResponseOutcome> {
    if (r.calls !== undefined) {
      plan.startMs = performance.timeOrigin + performance.now();
      plan.pass.each = true; // a trace shows each call's own timing
    }
    const reply = r.state.sandbox.runPass(plan.pass);
    if (reply instanceof Promise) return reply.then((rep) => this.#settle(r, plan, rep));
    return this.#settle(r, plan, reply);
  }

  #settle(r: Run, plan: Plan, reply: PassReply): RequestOutcome | ResponseOutcome | Promise<RequestOutcome | ResponseOutcome> {
    if ('reports' in reply) {
      this.#account(r, plan, reply);
      const o = reply.outcome;
      if (o.action === 'continue') {
        if (reply.body !== undefined) o.body = Buffer.from(reply.body, 'base64');
        if (plan.pass.phase === 'onRequest') this.#deferred(r, plan, o as RequestOutcome & { action: 'continue' }, reply.skipResponse);
      }
      return o;
    }
    return this.#passFailed(r, plan, reply.transport, reply.message, reply.entry ?? 0);
  }

  /**
   * The pass did not run (queue full, cordon restarting) or its cordon died under it: no entry
   * results came back. The failure belongs to the entry that was running (blackbox) or else the
   * first, under that entry's policy; when it is 'open', the pass is sent again without it — entries
   * before it ran in a process that is gone, so they run again (their results never arrived).
   */
  #passFailed(r: Run, plan: Plan, kind: 'overloaded' | 'crashed' | 'unavailable', message: string, at: number): RequestOutcome | ResponseOutcome | Promise<RequestOutcome | ResponseOutcome> {
    const entry = plan.pass.entries[at] ?? (plan.pass.entries[0] as PassEntry);
    const index = plan.pass.entries[at] === undefined ? 0 : at;
    const v = plan.versions[index];
    const state = r.state;
    if (kind === 'overloaded') {
      state.quota.countRejection('queue');
      this.#metrics.rejections.inc({ tenant: state.name, reason: 'queue' });
      if (v !== undefined) this.#count(state, v, this.#record(state, v), 'shed');
      return policyOutcome(entry, FAILURE_CODES.overloaded, message) as RequestOutcome;
    }
    const code = FAILURE_CODES[kind];
    if (v !== undefined) this.#apply(r, v, { entry: index, outcome: kind, cpuNs: 0, wallMs: 0, code, message });
    const stop = policyOutcome(entry, code, message);
    if (stop !== undefined) return stop;
    const rest: Plan = {
      pass: { ...plan.pass, entries: plan.pass.entries.filter((_, i) => i !== index) },
      versions: plan.versions.filter((_, i) => i !== index),
      steps: plan.steps.filter((_, i) => i !== index),
      body: plan.body,
    };
    if (rest.pass.entries.length === 0) return unchanged(plan.pass);
    return this.#runPass(r, rest);
  }

  /** Keeps onRequest's response header edits and onResponse skips for the response (skips as chain steps). */
  #deferred(r: Run, plan: Plan, o: RequestOutcome & { action: 'continue' }, skip: number[] | undefined): void {
    if (o.responseHeaders !== undefined) r.responseOps = o.responseHeaders;
    if (skip !== undefined) r.skipSteps = new Set(skip.map((e) => plan.steps[e]!));
  }

  #account(r: Run, plan: Plan, result: PassResult): void {
    r.budgetUsedMs += result.budgetUsedMs;
    let cpuNs = 0;
    for (const report of result.reports) cpuNs += report.cpuNs;
    r.state.quota.addCpu(cpuNs);
    // Entries run one after another: each starts where the one before it ended.
    let at = plan.startMs ?? 0;
    for (const report of result.reports) {
      const v = plan.versions[report.entry];
      if (v === undefined) continue;
      this.#apply(r, v, report);
      if (r.calls !== undefined && r.calls.length < 256) {
        r.calls.push({ plugin: v.plugin, version: v.version, phase: plan.pass.phase, startMs: at, durationMs: report.wallMs, outcome: report.code ?? (report.outcome === 'ok' ? 'continue' : report.outcome) });
        at += report.wallMs;
      }
    }
  }

  /** Metrics, CPU accounting and health of one entry's call. */
  #apply(r: Run, v: StepVersion, report: EntryReport): void {
    const state = r.state;
    const rec = this.#record(state, v);
    this.#metrics.duration.observe(rec.duration, report.wallMs / 1000);
    if (report.cpuNs > 0) {
      r.cpuMs += report.cpuNs / 1e6;
      rec.cpu.value += report.cpuNs / 1e9;
    }
    if (report.logs !== undefined) this.#forwardLogs(state, v, report.logs);
    if (report.metrics !== undefined || report.metricsDropped !== undefined) {
      this.#pluginMetrics.apply(state.name, v.plugin, report.metrics, report.metricsDropped);
    }
    rec.invocations++;
    this.#count(state, v, rec, report.outcome);
    if (report.code === undefined) {
      rec.consecutiveFailures = 0;
      rec.health = 'ok';
    } else {
      rec.failures++;
      rec.consecutiveFailures++;
      this.#markFailure(state, v.healthKey, report.code, report.message ?? '');
    }
  }

  /** Plugin logs go to pino with tenant/plugin labels, bounded per tenant so a plugin cannot flood. */
  #forwardLogs(state: TenantState, v: StepVersion, logs: GuestLog[]): void {
    const now = Date.now();
    state.logTokens = Math.min(LOG_LINES_PER_SEC * 2, state.logTokens + ((now - state.logRefilledAt) * LOG_LINES_PER_SEC) / 1000);
    state.logRefilledAt = now;
    for (const line of logs) {
      if (state.logTokens < 1) {
        state.logsDropped++;
        continue;
      }
      state.logTokens--;
      const obj: Record<string, unknown> = { plugin: v.plugin, version: v.version, source: 'plugin' };
      if (line.fields !== undefined) {
        try {
          obj.fields = JSON.parse(line.fields);
        } catch {
          obj.fields = line.fields;
        }
      }
      if (state.logsDropped > 0) {
        obj.droppedBefore = state.logsDropped;
        state.logsDropped = 0;
      }
      state.logger[line.level](obj, line.msg);
    }
  }
}
export { applyRateLimits, descriptorValues, limitKey, RateLimitCounters, UNIT_SECONDS, type RateLimitDecision, type RateLimitStore, type RateLimitVerdict, type RequestFacts } from './ratelimit.ts';
export { applyHeaderMutation, headerMutation, isEmptyMutation } from './header-mutation.ts';
export { applyResponseOps } from './validate.ts';
export { MAX_WORKERS, NodeLedger, SharedRateLimitCounters, type LedgerBuffers } from './ledger.ts';
export { TenantQuota } from './quota.ts';
export { Chain, type ChainStep, type StepVersion } from './chain.ts';
export { IdTable } from './id-table.ts';
