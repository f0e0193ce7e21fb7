// ChainPass: one phase (onRequest or onResponse) of one request's chain, as plain data, and the one
// implementation of running it against a tenant's isolate. The daemon picks the entries (route filter,
// canary version pinned by the ChainRun) and the CPU budget left; runChainPass runs them in order with
// the chain's semantics — header edits carried from entry to entry, ctx.respond stops the chain,
// ctx.route, failure policy closed/open per entry, the per-request CPU budget by isolate cpuTime — and
// reports each entry's outcome so the daemon can keep metrics and health. Inline mode calls it in the
// daemon; in cordon mode the whole pass travels to the cordon in one message and runs there.

import type { ErrorCode } from '../errors.ts';
import type { FailurePolicy } from '../store/model.ts';
import type { HeaderList, HookRequest, HookResponse, RequestOutcome, ResponseOutcome } from './contract.ts';
import type { FailureKind, InvokeLimits, InvokeOutcome } from './sandbox.ts';
import { BadResult, parseVerdict, type GuestLog, type GuestMetricOp } from './validate.ts';

export type Phase = 'onRequest' | 'onResponse';

export interface PassEntry {
  /** Sandbox key of the version serving this request; absent when the plugin has no active version. */
  key?: string;
  plugin: string;
  configId: number;
  config: unknown;
  failurePolicy: FailurePolicy;
  /** The body limit (bytes) the version declared for this phase; absent = no body access. */
  body?: number;
}

export interface ChainPass {
  phase: Phase;
  requestId: string;
  /** The request as the data plane saw it (onRequest), without its body. */
  req?: HookRequest;
  /** The upstream response (onResponse), without its body. */
  res?: HookResponse;
  /**
   * Base64 of the buffered body of this phase: set only when the data plane buffered one and an
   * entry declared body access (bytes cross the isolate and process boundaries as strings).
   */
  body?: string;
  entries: PassEntry[];
  /** CPU (ms) left of the request's cpuMsPerRequest when the pass starts. */
  cpuBudgetMs: number;
  /** The tenant's service names (valid ctx.route targets); onRequest only. */
  services?: readonly string[];
}

/** 'ok' | 'respond' or the failure; 'shed' is the daemon's (a pass refused by a full queue). */
export type EntryOutcome = 'ok' | 'respond' | FailureKind | 'shed';

export interface EntryReport {
  /** Index into ChainPass.entries. */
  entry: number;
  outcome: EntryOutcome;
  cpuNs: number;
  /** Wall time of the hook call at the isolate boundary. */
  wallMs: number;
  /** Set when the entry failed. */
  code?: ErrorCode;
  message?: string;
  logs?: GuestLog[];
  metrics?: GuestMetricOp[];
  metricsDropped?: number;
}

export type PassOutcome = RequestOutcome | ResponseOutcome;

export interface PassResult {
  /** Entries that ran (an entry without the phase's hook is skipped and not reported). */
  reports: EntryReport[];
  outcome: PassOutcome;
  /** CPU (ms) of the entries that succeeded: what counts against cpuMsPerRequest afterwards. */
  budgetUsedMs: number;
  /** Base64 of the body when an entry replaced it (the daemon decodes it into the outcome). */
  body?: string;
}

/** What a runtime answers for a pass it could not run at all (cordon died, restarting, queue full). */
export interface PassFailure {
  transport: 'overloaded' | 'crashed' | 'unavailable';
  message: string;
  /** The entry that was running when it failed, when known (the cordon's blackbox). */
  entry?: number;
}

export type PassReply = PassResult | PassFailure;

/** What runChainPass needs of a sandbox (TenantSandbox). */
export interface PassSandbox {
  hooks(key: string): ReadonlyArray<Phase> | undefined;
  invoke(key: string, input: Record<string, unknown>, config: unknown, timeoutMs: number, limits?: InvokeLimits): InvokeOutcome | Promise<InvokeOutcome>;
}

export interface PassHooks {
  /** Passed to every invoke (a cordon releases the tenant in onIdle). */
  limits?: InvokeLimits;
  /** Before each entry's hook call (the cordon's blackbox records which entry runs). */
  enter?(entry: number): void;
  /** When the pass stops using the isolate: finished, or waiting for an async hook. */
  exit?(): void;
}

export const FAILURE_CODES: Record<FailureKind | 'overloaded', ErrorCode> = {
  overloaded: 'ISOMESH_ERR_QUOTA_QUEUE',
  threw: 'ISOMESH_ERR_PLUGIN_THREW',
  timeout: 'ISOMESH_ERR_PLUGIN_TIMEOUT',
  memory: 'ISOMESH_ERR_PLUGIN_MEMORY',
  crashed: 'ISOMESH_ERR_PLUGIN_CRASHED',
  bad_result: 'ISOMESH_ERR_PLUGIN_BAD_RESULT',
  unavailable: 'ISOMESH_ERR_PLUGIN_UNAVAILABLE',
};

/** The wall-clock timeout is only a backstop for the CPU budget: budget × factor + slack. */
export const WALL_BACKSTOP_FACTOR = 1.5;
export const WALL_BACKSTOP_SLACK_MS = 2;

/** The outcome of a failed entry under its failure policy: undefined = skip it and go on ('open'). */
export function policyOutcome(entry: PassEntry, code: ErrorCode, message: string): PassOutcome | undefined {
  // A shed call is load shedding, not a plugin failure: 429 whatever the failure policy.
  if (code === 'ISOMESH_ERR_QUOTA_QUEUE') return { action: 'fail', status: 429, code, message };
  if (entry.failurePolicy === 'closed') return { action: 'fail', status: 503, code, message };
  return undefined;
}

/** The outcome of a pass whose entries all were skipped: the input, unchanged. */
export function unchanged(pass: ChainPass): PassOutcome {
  if (pass.phase === 'onRequest') return { action: 'continue', headers: (pass.req as HookRequest).headers };
  const res = pass.res as HookResponse;
  return { action: 'continue', status: res.status, headers: res.headers };
}

const NO_SERVICES: readonly string[] = [];

class PassRun {
  readonly #sandbox: PassSandbox;
  readonly #pass: ChainPass;
  readonly #hooks: PassHooks;
  readonly #services: { has(name: string): boolean };
  readonly reports: EntryReport[] = [];
  #headers: HeaderList;
  #status: number;
  #service: string | undefined;
  #usedMs = 0;
  #body: string | undefined;
  #bodyReplaced = false;

  constructor(sandbox: PassSandbox, pass: ChainPass, hooks: PassHooks) {
    this.#sandbox = sandbox;
    this.#pass = pass;
    this.#hooks = hooks;
    const services = pass.services ?? NO_SERVICES;
    this.#services = { has: (name) => services.includes(name) };
    this.#body = pass.body;
    if (pass.phase === 'onRequest') {
      this.#headers = (pass.req as HookRequest).headers;
      this.#status = 0;
    } else {
      const res = pass.res as HookResponse;
      this.#headers = res.headers;
      this.#status = res.status;
    }
  }

  /** Runs entries from `from` on; synchronous until an entry's hook has to wait. */
  run(from: number): PassResult | Promise<PassResult> {
    const pass = this.#pass;
    const entries = pass.entries;
    for (let i = from; i < entries.length; i++) {
      const entry = entries[i] as PassEntry;
      if (entry.key === undefined) {
        const stop = policyOutcome(entry, 'ISOMESH_ERR_PLUGIN_UNAVAILABLE', `plugin ${entry.plugin} has no active version`);
        if (stop !== undefined) return this.#result(stop);
        continue;
      }
      const hooks = this.#sandbox.hooks(entry.key);
      if (hooks !== undefined && !hooks.includes(pass.phase)) continue;
      // cpuMsPerRequest is the chain's budget for one request, measured in isolate CPU. Entries that
      // failed are not charged to the ones after them (a failed 'open' entry must not starve the next).
      const budgetMs = pass.cpuBudgetMs - this.#usedMs;
      if (budgetMs <= 0) {
        const out: InvokeOutcome = { ok: false, kind: 'timeout', message: 'the request used up its CPU time per request in earlier plugins', cpuNs: 0 };
        const stop = this.#after(i, entry, out, budgetMs, 0);
        if (stop !== undefined) return stop;
        continue;
      }
      const input: Record<string, unknown> =
        pass.phase === 'onRequest'
          ? { hook: 'onRequest', requestId: pass.requestId, now: Date.now(), configId: entry.configId, req: { ...pass.req, headers: this.#headers } }
          : { hook: 'onResponse', requestId: pass.requestId, now: Date.now(), configId: entry.configId, res: { status: this.#status, headers: this.#headers } };
      // Only an entry that declared body access gets the body (each later one sees earlier edits).
      if (entry.body !== undefined) (input[pass.phase === 'onRequest' ? 'req' : 'res'] as Record<string, unknown>).body = this.#body ?? '';
      const t0 = performance.now();
      this.#hooks.enter?.(i);
      let called: InvokeOutcome | Promise<InvokeOutcome>;
      try {
        // The isolate's timeout is wall time: a backstop. The verdict is the measured CPU (#after).
        called = this.#sandbox.invoke(entry.key, input, entry.config, budgetMs * WALL_BACKSTOP_FACTOR + WALL_BACKSTOP_SLACK_MS, this.#hooks.limits);
      } catch (e) {
        called = { ok: false, kind: 'crashed', message: `sandbox error: ${e instanceof Error ? e.message : String(e)}`, cpuNs: 0 };
      }
      if (called instanceof Promise) {
        this.#hooks.exit?.();
        return called.then(
          (out) => this.#after(i, entry, out, budgetMs, t0) ?? this.run(i + 1),
          (e: unknown) => this.#after(i, entry, { ok: false, kind: 'crashed', message: String(e), cpuNs: 0 }, budgetMs, t0) ?? this.run(i + 1),
        );
      }
      const stop = this.#after(i, entry, called, budgetMs, t0);
      if (stop !== undefined) return stop;
    }
    const outcome: PassOutcome =
      pass.phase === 'onRequest'
        ? this.#service === undefined
          ? { action: 'continue', headers: this.#headers }
          : { action: 'continue', headers: this.#headers, service: this.#service }
        : { action: 'continue', status: this.#status, headers: this.#headers };
    return this.#result(outcome);
  }

  #result(outcome: PassOutcome): PassResult {
    this.#hooks.exit?.();
    const result: PassResult = { reports: this.reports, outcome, budgetUsedMs: this.#usedMs };
    if (this.#bodyReplaced && outcome.action === 'continue' && this.#body !== undefined) result.body = this.#body;
    return result;
  }

  /** Records one entry's outcome and applies it; a PassResult when the chain stops here. */
  #after(i: number, entry: PassEntry, out: InvokeOutcome, budgetMs: number, t0: number): PassResult | undefined {
    const wallMs = t0 === 0 ? 0 : performance.now() - t0;
    const usedMs = out.cpuNs / 1e6;
    if (out.ok && usedMs > budgetMs) {
      out = { ok: false, kind: 'timeout', message: `plugin used ${usedMs.toFixed(1)} ms CPU, over the ${budgetMs.toFixed(1)} ms left of its CPU time per request`, cpuNs: out.cpuNs };
    }
    const report: EntryReport = { entry: i, outcome: 'ok', cpuNs: out.cpuNs, wallMs };
    this.reports.push(report);
    if (!out.ok) return this.#failed(report, entry, FAILURE_CODES[out.kind], out.message, out.kind);
    let verdict;
    try {
      verdict = parseVerdict(out.result, this.#pass.phase, this.#services, entry.body ?? 0);
    } catch (e) {
      if (!(e instanceof BadResult)) throw e;
      return this.#failed(report, entry, 'ISOMESH_ERR_PLUGIN_BAD_RESULT', e.message, 'bad_result');
    }
    if (verdict.logs !== undefined && verdict.logs.length > 0) report.logs = verdict.logs;
    if (verdict.metrics !== undefined) report.metrics = verdict.metrics;
    if (verdict.metricsDropped !== undefined) report.metricsDropped = verdict.metricsDropped;
    if (verdict.action === 'error') return this.#failed(report, entry, 'ISOMESH_ERR_PLUGIN_THREW', verdict.message, 'threw');
    this.#usedMs += usedMs;
    if (verdict.action === 'respond') {
      report.outcome = 'respond';
      // In onResponse, ctx.respond replaces status and headers and ends the response chain.
      return this.#result(
        this.#pass.phase === 'onRequest'
          ? { action: 'respond', status: verdict.status, headers: verdict.headers, body: verdict.body }
          : { action: 'continue', status: verdict.status, headers: verdict.headers },
      );
    }
    if (verdict.headers !== undefined) this.#headers = verdict.headers;
    if (verdict.service !== undefined) this.#service = verdict.service;
    if (verdict.action === 'continue' && verdict.body !== undefined) {
      this.#body = verdict.body;
      this.#bodyReplaced = true;
    }
    if (verdict.status !== undefined && this.#pass.phase === 'onResponse') this.#status = verdict.status;
    return undefined;
  }

  #failed(report: EntryReport, entry: PassEntry, code: ErrorCode, message: string, kind: FailureKind): PassResult | undefined {
    report.outcome = kind;
    report.code = code;
    report.message = message;
    const stop = policyOutcome(entry, code, message);
    return stop === undefined ? undefined : this.#result(stop);
  }
}

/**
 * Runs a pass's entries in order against `sandbox`. Synchronous when every hook settles
 * synchronously (the common case); a promise once a hook awaits something (a host capability).
 */
export function runChainPass(sandbox: PassSandbox, pass: ChainPass, hooks: PassHooks = {}): PassResult | Promise<PassResult> {
  return new PassRun(sandbox, pass, hooks).run(0);
}
