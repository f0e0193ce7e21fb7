// The plugin host: per-tenant admission (TenantQuota), the chain (Chain: route filter, canary,
// failure policy) and the isolates. Data planes use it through contract.ts only.
// Mode 'cordon' (default) runs the isolates in supervised worker processes (CordonPool) with a fair
// scheduler in each; mode 'inline' runs them in this process (TenantSandbox), lowest latency but a
// looping plugin blocks this event loop and an isolated-vm abort takes every tenant down.

import type { Logger } from 'pino';
import type { Counter, Histogram, Registry } from 'prom-client';
import { IsomeshError, type ErrorCode } from '../errors.ts';
import type { TenantConfig } from '../store/model.ts';
import { Chain, type ChainStep, type StepVersion } from './chain.ts';
import { compilePlugin } from './compiler.ts';
import type { CallOutcome, CordonTenant, Hooks, TenantRuntime } from './cordon.ts';
import { CordonPool } from './cordon-pool.ts';
import type {
  Admission,
  ChainRun,
  CompileInput,
  CompiledPlugin,
  HeaderList,
  HookRequest,
  HookResponse,
  PluginHealth,
  PluginHostAdmin,
  PluginHostApi,
  RequestOutcome,
  ResponseOutcome,
  TenantHostStatus,
} from './contract.ts';
import { HostMetrics } from './metrics.ts';
import { TenantQuota } from './quota.ts';
import { TenantSandbox, type FailureKind, type SandboxEvents } from './sandbox.ts';
import { wireKindFromEnv, type WireKind } from './wire.ts';
import { BadResult, parseVerdict, type GuestLog, type Verdict } from './validate.ts';

export type { CompiledPlugin } from './contract.ts';
export { hashRequestId } from './chain.ts';

const FAILURE_CODES: Record<FailureKind | 'overloaded', ErrorCode> = {
  overloaded: 'ISOMESH_ERR_QUOTA_QUEUE',
  threw: 'ISOMESH_ERR_PLUGIN_THREW',
  timeout: 'ISOMESH_ERR_PLUGIN_TIMEOUT',
  memory: 'ISOMESH_ERR_PLUGIN_MEMORY',
  crashed: 'ISOMESH_ERR_PLUGIN_CRASHED',
  bad_result: 'ISOMESH_ERR_PLUGIN_BAD_RESULT',
  unavailable: 'ISOMESH_ERR_PLUGIN_UNAVAILABLE',
};

/** Plugin log lines forwarded per tenant per second (burst = 2 s worth). */
const LOG_LINES_PER_SEC = 100;
/** Plugin calls a tenant may have waiting or running in its cordon; more are shed with 429. */
export const DEFAULT_QUEUE_LIMIT = 256;
/** The wall-clock timeout is only a backstop for the CPU budget: budget × factor + slack. */
const WALL_BACKSTOP_FACTOR = 1.5;
const WALL_BACKSTOP_SLACK_MS = 2;

export type HostMode = 'cordon' | 'inline';

export interface PluginHostOptions {
  logger: Logger;
  registry: Registry;
  /** Default: ISOMESH_HOST_MODE, else 'cordon'. */
  mode?: HostMode;
  /** Shared cordon processes. Default: ISOMESH_CORDONS, else 2. */
  cordons?: number;
  /** Plugin calls per tenant waiting in its cordon before 429 ISOMESH_ERR_QUOTA_QUEUE. */
  queueLimit?: number;
  /** daemon ↔ cordon transport. Default: ISOMESH_CORDON_WIRE, else 'socket'. */
  wire?: WireKind;
}

export function hostModeFromEnv(env: NodeJS.ProcessEnv = process.env): HostMode {
  const m = env.ISOMESH_HOST_MODE;
  if (m === undefined || m === '' || m === 'cordon') return 'cordon';
  if (m === 'inline') return 'inline';
  throw new IsomeshError('ISOMESH_ERR_API_VALIDATION', `ISOMESH_HOST_MODE must be cordon or inline (got "${m}")`);
}

interface Generation {
  chain: Chain;
  /** The tenant's current config holds one ref; each ChainRun pinned to it holds one. */
  refs: number;
}

interface VersionRecord extends PluginHealth {
  consecutiveFailures: number;
  outcomes: Map<string, Counter.Internal>;
  cpu: Counter.Internal;
  duration: Histogram.Internal<'tenant' | 'plugin'>;
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
}

type StepResult = { ok: true; verdict: Exclude<Verdict, { action: 'error' }> } | { ok: false; code: ErrorCode; message: string };

export class PluginHost implements PluginHostApi, PluginHostAdmin {
  readonly #logger: Logger;
  readonly #metrics: HostMetrics;
  readonly #tenants = new Map<string, TenantState>();
  readonly #pool: CordonPool | undefined;
  /** digest → hooks, learnt at compile: hasResponseHooks() can answer before a cordon has loaded the code. */
  readonly #compiledHooks = new Map<string, Hooks>();
  readonly mode: HostMode;
  #configIds = 0;
  #closed = false;

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
    this.mode = opts.mode ?? hostModeFromEnv();
    if (this.mode === 'cordon') {
      const envCount = Number(process.env.ISOMESH_CORDONS);
      this.#pool = new CordonPool({
        count: opts.cordons ?? (Number.isInteger(envCount) && envCount > 0 ? envCount : 2),
        wire: opts.wire ?? wireKindFromEnv(),
        logger: this.#logger,
        metrics: this.#metrics,
        queueLimit: opts.queueLimit ?? DEFAULT_QUEUE_LIMIT,
        hooksFor: (digest) => this.#compiledHooks.get(digest),
      });
    }
  }

  async compile(input: CompileInput): Promise<CompiledPlugin> {
    const compiled = await compilePlugin(input);
    if (this.#compiledHooks.size > 4096) this.#compiledHooks.clear();
    this.#compiledHooks.set(compiled.digest, compiled.hooks);
    return compiled;
  }

  /** The shared cordon a tenant name hashes to (cordon mode), before any quarantine. */
  cordonOf(tenant: string): string | undefined {
    return this.#pool?.homeOf(tenant).id;
  }

  /** The cordon processes (cordon mode): id, pid, state, tenants, restarts. */
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
      const before = new Set(state.gen.chain.specs.map((s) => s.key));
      for (const spec of chain.specs) state.sandbox.retain(spec);
      const old = state.gen;
      state.gen = { chain, refs: 1 };
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

  end(run: ChainRun): void {
    const r = run as Run;
    if (r.ended) return;
    r.ended = true;
    r.state.quota.release();
    this.#unref(r.state, r.gen);
  }

  hasResponseHooks(run: ChainRun): boolean {
    const r = run as Run;
    return r.gen.chain.steps.some((step) => {
      if (r.routed && !Chain.applies(step, r.route)) return false;
      const v = Chain.versionFor(step, r.requestId);
      const hooks = v === undefined ? undefined : r.state.sandbox.hooks(v.key);
      return hooks === undefined || hooks.includes('onResponse');
    });
  }

  async onRequest(run: ChainRun, req: HookRequest): Promise<RequestOutcome> {
    const r = run as Run;
    r.route = req.route;
    r.routed = true;
    let headers = req.headers;
    let service: string | undefined;
    for (const step of r.gen.chain.steps) {
      if (!Chain.applies(step, req.route)) continue;
      const input = { hook: 'onRequest', requestId: r.requestId, now: Date.now(), configId: step.configId, req: { ...req, headers } };
      const res = await this.#runStep(r, step, 'onRequest', input);
      if (res === undefined) continue;
      if (!res.ok) {
        // A shed call is load shedding, not a plugin failure: 429 whatever the failure policy.
        if (res.code === 'ISOMESH_ERR_QUOTA_QUEUE') return { action: 'fail', status: 429, code: res.code, message: res.message };
        if (step.failurePolicy === 'closed') return { action: 'fail', status: 503, code: res.code, message: res.message };
        continue;
      }
      const v = res.verdict;
      if (v.action === 'respond') return { action: 'respond', status: v.status, headers: v.headers, body: v.body };
      if (v.headers !== undefined) headers = v.headers;
      if (v.service !== undefined) service = v.service;
    }
    return service === undefined ? { action: 'continue', headers } : { action: 'continue', headers, service };
  }

  async onResponse(run: ChainRun, res: HookResponse): Promise<ResponseOutcome> {
    const r = run as Run;
    let { status, headers } = res;
    for (const step of r.gen.chain.steps) {
      if (!Chain.applies(step, r.route)) continue;
      const input = { hook: 'onResponse', requestId: r.requestId, now: Date.now(), configId: step.configId, res: { status, headers } };
      const out = await this.#runStep(r, step, 'onResponse', input);
      if (out === undefined) continue;
      if (!out.ok) {
        if (out.code === 'ISOMESH_ERR_QUOTA_QUEUE') return { action: 'fail', status: 429, code: out.code, message: out.message };
        if (step.failurePolicy === 'closed') return { action: 'fail', status: 503, code: out.code, message: out.message };
        continue;
      }
      const v = out.verdict;
      // ctx.respond in onResponse replaces status and headers and ends the response chain.
      if (v.action === 'respond') return { action: 'continue', status: v.status, headers: v.headers };
      if (v.headers !== undefined) headers = v.headers;
      if (v.status !== undefined) status = v.status;
    }
    return { action: 'continue', status, headers };
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
    for (const tenant of [...this.#tenants.keys()]) this.removeTenant(tenant);
    this.#pool?.close();
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
    const cordon = this.#pool?.tenant(name, { memoryMb: config.quota.memoryMb, weight: config.quota.weight, events });
    const sandbox: TenantRuntime = cordon ?? new TenantSandbox({ tenant: name, memoryMb: config.quota.memoryMb, events });
    for (const spec of chain.specs) sandbox.retain(spec);
    state = {
      name,
      sandbox,
      ...(cordon === undefined ? {} : { cordon }),
      quota: new TenantQuota(config.quota),
      gen: { chain, refs: 1 },
      versions: new Map(),
      logTokens: LOG_LINES_PER_SEC * 2,
      logRefilledAt: Date.now(),
      logsDropped: 0,
      logger,
    };
    return state;
  }

  #unref(state: TenantState, gen: Generation): void {
    if (--gen.refs > 0) return;
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
        cpu: this.#metrics.cpuSeconds.labels(labels),
        duration: this.#metrics.duration.labels(labels),
      };
      state.versions.set(v.healthKey, rec);
    }
    return rec;
  }

  #count(state: TenantState, v: StepVersion, rec: VersionRecord, outcome: string): void {
    let c = rec.outcomes.get(outcome);
    if (c === undefined) {
      c = this.#metrics.invocations.labels({ tenant: state.name, plugin: v.plugin, version: String(v.version), outcome });
      rec.outcomes.set(outcome, c);
    }
    c.inc();
  }

  #markFailure(state: TenantState, healthKey: string, code: ErrorCode, message: string): void {
    const rec = state.versions.get(healthKey);
    if (rec === undefined) return;
    rec.health = 'degraded';
    rec.lastError = { code, message, at: new Date().toISOString() };
  }

  /** Runs one chain entry; undefined when the entry has nothing to run for this phase. */
  async #runStep(r: Run, step: ChainStep, phase: 'onRequest' | 'onResponse', input: Record<string, unknown>): Promise<StepResult | undefined> {
    const state = r.state;
    const v = Chain.versionFor(step, r.requestId);
    if (v === undefined) return { ok: false, code: 'ISOMESH_ERR_PLUGIN_UNAVAILABLE', message: `plugin ${step.plugin} has no active version` };
    const hooks = state.sandbox.hooks(v.key);
    if (hooks !== undefined && !hooks.includes(phase)) return undefined;
    const rec = this.#record(state, v);
    // cpuMsPerRequest is the chain's budget for one request, measured in isolate CPU. Entries that
    // failed are not charged to the ones after them (a failed 'open' entry must not starve the next).
    const budgetMs = state.quota.quota.cpuMsPerRequest - r.budgetUsedMs;
    const t0 = performance.now();
    let out: CallOutcome;
    if (budgetMs <= 0) {
      out = { ok: false, kind: 'timeout', message: 'the request used up its CPU time per request in earlier plugins', cpuNs: 0 };
    } else {
      // The isolate's timeout is wall time: a backstop. The verdict is the measured CPU below.
      const called = state.sandbox.invoke(v.key, input, step.config, budgetMs * WALL_BACKSTOP_FACTOR + WALL_BACKSTOP_SLACK_MS);
      out = called instanceof Promise ? await called : called;
    }
    rec.duration.observe((performance.now() - t0) / 1000);
    const usedMs = out.cpuNs / 1e6;
    if (out.cpuNs > 0) {
      r.cpuMs += usedMs;
      state.quota.addCpu(out.cpuNs);
      rec.cpu.inc(out.cpuNs / 1e9);
    }
    if (out.ok && usedMs > budgetMs) {
      out = { ok: false, kind: 'timeout', message: `plugin used ${usedMs.toFixed(1)} ms CPU, over the ${budgetMs.toFixed(1)} ms left of its CPU time per request`, cpuNs: out.cpuNs };
    }
    if (!out.ok && out.kind === 'overloaded') {
      state.quota.countRejection('queue');
      this.#metrics.rejections.inc({ tenant: state.name, reason: 'queue' });
      this.#count(state, v, rec, 'shed');
      return { ok: false, code: FAILURE_CODES.overloaded, message: out.message };
    }
    rec.invocations++;
    let result: StepResult;
    let outcome: string;
    if (out.ok) {
      try {
        const verdict = parseVerdict(out.result, phase, r.gen.chain.services);
        if (verdict.logs !== undefined) this.#forwardLogs(state, v, verdict.logs);
        if (verdict.action === 'error') {
          result = { ok: false, code: 'ISOMESH_ERR_PLUGIN_THREW', message: verdict.message };
          outcome = 'threw';
        } else {
          result = { ok: true, verdict };
          outcome = verdict.action === 'respond' ? 'respond' : 'ok';
        }
      } catch (e) {
        if (!(e instanceof BadResult)) throw e;
        result = { ok: false, code: 'ISOMESH_ERR_PLUGIN_BAD_RESULT', message: e.message };
        outcome = 'bad_result';
      }
    } else {
      result = { ok: false, code: FAILURE_CODES[out.kind], message: out.message };
      outcome = out.kind;
    }
    this.#count(state, v, rec, outcome);
    if (result.ok) {
      r.budgetUsedMs += usedMs;
      rec.consecutiveFailures = 0;
      rec.health = 'ok';
    } else {
      rec.failures++;
      rec.consecutiveFailures++;
      this.#markFailure(state, v.healthKey, result.code, result.message);
    }
    return result;
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
