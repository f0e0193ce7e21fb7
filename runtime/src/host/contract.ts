// The contract between a data plane (built-in proxy, or Envoy through ext_proc) and the plugin host.
// The host owns admission (tenant rps / concurrency / CPU budget), the chain (route filtering, canary
// selection, failure policies) and the isolates. A data plane only calls begin → onRequest →
// (upstream) → onResponse → end, so both data planes behave identically.

import type { PluginVersionDeclarations, TenantConfig } from '../store/model.ts';
import type { ErrorCode } from '../errors.ts';
import type { ResponseHeaderOp } from '@isomesh/sdk';

/** Header names lower-cased, order preserved, repeated names allowed. */
export type HeaderList = Array<[string, string]>;
export type { ResponseHeaderOp };

export interface HookRequest {
  method: string;
  /** Path without the query string, e.g. "/api/users". */
  path: string;
  /** Query string without "?", "" when absent. */
  query: string;
  host: string;
  headers: HeaderList;
  remoteAddress: string;
  /** "ip:port" the workload called, when the connection was redirected transparently. */
  originalDestination?: string;
  /** Name of the matched route (undefined when the request goes to a service by VIP default). */
  route?: string;
  /** Name of the service the route selected. */
  service?: string;
  /**
   * The buffered request body: present only when an applicable chain entry declared
   * `body.request` (see PluginHostApi.bodyLimit) and the body fit that limit.
   */
  body?: Uint8Array;
}

export interface HookResponse {
  status: number;
  headers: HeaderList;
  /** The buffered response body, when an applicable entry declared `body.response`. */
  body?: Uint8Array;
}

/** ext_proc's shape of a header change: what Envoy's HeaderMutation carries. */
export interface HeaderMutation {
  /** Replace every value of the name with this one (OVERWRITE_IF_EXISTS_OR_ADD). */
  set: HeaderList;
  /** Add a value after the existing ones (APPEND_IF_EXISTS_OR_ADD). */
  append: HeaderList;
  remove: string[];
}

/**
 * The data plane's backend for ctx.fetch: one request from a plugin of `tenant` to the tenant's own
 * service `service` (the host has checked that the tenant has it), through the proxy path (load
 * balancing, timeouts, retries; not the chain). `path` includes the query string. The host enforces
 * `timeoutMs` itself as well and bounds the answer (a body over 1 MiB rejects the plugin's fetch);
 * a rejection of the returned promise rejects the plugin's fetch with ERR_FETCH_FAILED and its message.
 */
export type PluginFetch = (
  tenant: string,
  req: { service: string; method: string; path: string; headers: HeaderList; body?: Uint8Array; timeoutMs: number },
) => Promise<{ status: number; headers: HeaderList; body: Uint8Array }>;

/** One plugin call of a request, for tracing (recordCalls). */
export interface PluginCallTiming {
  plugin: string;
  version: number;
  phase: 'onRequest' | 'onResponse';
  /** Epoch ms when the call started. */
  startMs: number;
  durationMs: number;
  /** "continue", "respond", or the isomesh error code when it failed. */
  outcome: string;
}

/** Opaque per-request handle: pins the plugin versions a request started with, holds its admission. */
export interface ChainRun {
  readonly tenant: string;
  readonly requestId: string;
}

export type Admission =
  | { ok: true; run: ChainRun }
  | { ok: false; status: 429 | 503; code: ErrorCode; message: string; retryAfterSec?: number };

export type RequestOutcome =
  /**
   * Go upstream with these (possibly modified) headers; `service` set when a plugin called ctx.route();
   * `body` set when a plugin replaced the request body (the data plane fixes content-length up).
   */
  | {
      action: 'continue';
      headers: HeaderList;
      service?: string;
      body?: Uint8Array;
      /** ctx.responseHeaders edits of the chain, in chain order: applied to the upstream's response before onResponse. */
      responseHeaders?: ResponseHeaderOp[];
    }
  /** A plugin answered early (ctx.respond). */
  | { action: 'respond'; status: number; headers: HeaderList; body: string }
  /** A chain entry with failurePolicy 'closed' failed: answer `status` with header x-isomesh-error: code. */
  | { action: 'fail'; status: number; code: ErrorCode; message: string };

export type ResponseOutcome =
  /** `body` set when a plugin replaced the response body. */
  | { action: 'continue'; status: number; headers: HeaderList; body?: Uint8Array }
  | { action: 'fail'; status: number; code: ErrorCode; message: string };

export interface PluginHostApi {
  /** Install or replace a tenant's configuration (new requests use it; in-flight ones keep theirs). */
  configure(config: TenantConfig): void;
  removeTenant(tenant: string): void;
  /** Admission control. On ok, the caller must call end(run) exactly once. */
  begin(tenant: string, requestId: string): Admission;
  onRequest(run: ChainRun, req: HookRequest): Promise<RequestOutcome>;
  onResponse(run: ChainRun, res: HookResponse): Promise<ResponseOutcome>;
  end(run: ChainRun): void;
  /**
   * False when no chain entry applies to this route with an onRequest hook: the data plane may skip
   * onRequest (and the HookRequest it would build). Records the route for the later phases.
   */
  hasRequestHooks?(run: ChainRun, route: string | undefined): boolean;
  /** True when the tenant's chain has at least one onResponse hook applicable (lets the proxy skip work). */
  hasResponseHooks(run: ChainRun): boolean;
  /**
   * The body the chain needs buffered for this run and phase: 0 = none (stream it); else the largest
   * body (bytes) every applicable entry that declared one accepts (the smallest declared limit). Call
   * after onRequest's route is known (onRequest phase: with the route the request matched).
   */
  bodyLimit(run: ChainRun, phase: 'request' | 'response', route?: string): number;
  /** Keep a timing record of this run's plugin calls (only asked for when the request is traced). */
  recordCalls?(run: ChainRun): void;
  /** The recorded plugin calls of a run (after recordCalls). */
  calls?(run: ChainRun): PluginCallTiming[] | undefined;
  close(): Promise<void>;
}

/** Publish-time compilation: TypeScript/JavaScript source or a prebuilt bundle → loadable code. */
export interface CompileInput {
  source: string;
  language: 'typescript' | 'javascript' | 'bundle';
  maxBundleBytes: number;
}

export interface CompiledPlugin {
  /** The code the host loads into an isolate. */
  code: string;
  /** "sha256:<hex>" of `code`. */
  digest: string;
  /** Bytes of `code`. */
  size: number;
  hooks: Array<'onRequest' | 'onResponse'>;
  /** What the trial load found the plugin declares (hooks, body limits, config schema); stored with the version. */
  declarations: PluginVersionDeclarations;
}

export interface PluginHealth {
  health: 'ok' | 'degraded';
  lastError?: { code: ErrorCode; message: string; at: string };
  invocations: number;
  failures: number;
  restarts: number;
}

export interface TenantUsage {
  cpuMsPerSecond: number;
  memoryBytes: number;
  inFlight: number;
  /** `queue`: plugin calls shed because the tenant's call queue in its cordon was full. */
  rejections: { rps: number; concurrency: number; cpu: number; queue?: number };
  /** Requests admitted over the last second. */
  requestsPerSecond?: number;
  /** Plugin calls waiting or running in the tenant's cordon. */
  queuedCalls?: number;
  /** The quota each figure above is measured against (0 = unlimited where the quota allows it). */
  limits?: { cpuMsPerSecond: number; memoryBytes: number; maxConcurrentRequests: number; requestsPerSecond: number; cpuMsPerRequest: number; weight: number };
  /** Where the tenant's isolate runs: a cordon process, or the daemon itself (mode inline). */
  placement?: { mode: 'cordon' | 'inline'; cordon?: string; pid?: number | null; quarantined?: boolean; confined?: boolean };
}

export interface TenantHostStatus {
  /** Keyed by "<plugin>@<version>". */
  plugins: Record<string, PluginHealth>;
  usage: TenantUsage;
}

export interface PluginHostAdmin {
  /** Throws IsomeshError (ISOMESH_ERR_PLUGIN_COMPILE/LOAD/NO_HOOKS/BAD_IMPORT/BAD_DECLARATION/TOO_LARGE) with details. */
  compile(input: CompileInput): Promise<CompiledPlugin>;
  status(tenant: string): TenantHostStatus;
}
