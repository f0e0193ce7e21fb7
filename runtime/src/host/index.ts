// The plugin host: per-tenant admission (TenantQuota), the chain (Chain: route filter, canary,
// failure policy) and the isolates (TenantSandbox). Data planes use it through contract.ts only.

import type { Logger } from 'pino';
import type { Counter, Histogram, Registry } from 'prom-client';
import { IsomeshError, type ErrorCode } from '../errors.ts';
import type { TenantConfig } from '../store/model.ts';
import { Chain, type ChainStep, type StepVersion } from './chain.ts';
import { compilePlugin } from './compiler.ts';
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
import { TenantSandbox, type FailureKind, type InvokeOutcome } from './sandbox.ts';
import { BadResult, parseVerdict, type GuestLog, type Verdict } from './validate.ts';

export type { CompiledPlugin } from './contract.ts';
export { hashRequestId } from './chain.ts';

const FAILURE_CODES: Record<FailureKind, ErrorCode> = {
  threw: 'ISOMESH_ERR_PLUGIN_THREW',
  timeout: 'ISOMESH_ERR_PLUGIN_TIMEOUT',
  memory: 'ISOMESH_ERR_PLUGIN_MEMORY',
  crashed: 'ISOMESH_ERR_PLUGIN_CRASHED',
  bad_result: 'ISOMESH_ERR_PLUGIN_BAD_RESULT',
  unavailable: 'ISOMESH_ERR_PLUGIN_UNAVAILABLE',
};

/** Plugin log lines forwarded per tenant per second (burst = 2 s worth). */
const LOG_LINES_PER_SEC = 100;

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
  sandbox: TenantSandbox;
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
  #configIds = 0;
  #closed = false;

  constructor(opts: { logger: Logger; registry: Registry }) {
    this.#logger = opts.logger.child({ component: 'host' });
    this.#metrics = new HostMetrics(opts.registry);
  }

  compile(input: CompileInput): Promise<CompiledPlugin> {
    return compilePlugin(input);
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
    state.sandbox.dispose();
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
    const run: Run = { tenant, requestId, state, gen: state.gen, cpuMs: 0, ended: false, routed: false };
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
    return {
      plugins,
      usage: {
        cpuMsPerSecond: state.quota.cpuMsLastSecond(),
        memoryBytes: state.sandbox.memoryBytes(),
        inFlight: state.quota.inFlight,
        rejections: { ...state.quota.rejections },
      },
    };
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const tenant of [...this.#tenants.keys()]) this.removeTenant(tenant);
  }

  #createTenant(config: TenantConfig, chain: Chain): TenantState {
    const name = config.name;
    const logger = this.#logger.child({ tenant: name });
    let state: TenantState | undefined;
    const sandbox = new TenantSandbox({
      tenant: name,
      memoryMb: config.quota.memoryMb,
      events: {
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
      },
    });
    for (const spec of chain.specs) sandbox.retain(spec);
    state = {
      name,
      sandbox,
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
    // Each call gets the full per-request CPU limit: a failed 'open' entry must not starve the next one.
    const limitMs = state.quota.quota.cpuMsPerRequest;
    const t0 = performance.now();
    const called = state.sandbox.invoke(v.key, input, step.config, limitMs);
    const out: InvokeOutcome = called instanceof Promise ? await called : called;
    rec.duration.observe((performance.now() - t0) / 1000);
    if (out.cpuNs > 0) {
      r.cpuMs += out.cpuNs / 1e6;
      state.quota.addCpu(out.cpuNs);
      rec.cpu.inc(out.cpuNs / 1e9);
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
