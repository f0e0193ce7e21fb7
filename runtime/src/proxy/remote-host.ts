// The plugin host as a data-plane worker thread sees it (PluginHostApi): admission against the node
// ledger's shared rows (so quotas hold for the node), the chain's shape (which entries apply to a
// route, their hooks and body declarations, the canary choice) decided locally from the tenant's
// configuration, and only the plugin calls themselves sent to the main thread's PluginHost — which owns
// the isolates (inline or in cordons) once for the whole node, so no isolate is duplicated per worker.
// A request no plugin touches never leaves its worker. Calls and run ends travel in one message per
// event-loop turn each way (outbox.ts).

import type { MessagePort } from 'node:worker_threads';
import { Chain, IdTable, NodeLedger, TenantQuota, applyResponseOps } from '../host/index.ts';
import type { Admission, ChainRun, HookRequest, HookResponse, PluginCallTiming, PluginHostApi, RequestOutcome, ResponseHeaderOp, ResponseOutcome } from '../host/contract.ts';
import type { TenantConfig } from '../store/model.ts';
import { Outbox } from './outbox.ts';

/** worker → main: one phase of one run's chain. */
export interface HostCall {
  t: 'call';
  id: number;
  run: number;
  tenant: string;
  requestId: string;
  route: string | undefined;
  phase: 'onRequest' | 'onResponse';
  input: HookRequest | HookResponse;
  record: boolean;
}

/** worker → main: a run the main thread holds (a plugin was called) is over. */
export interface HostEnd {
  t: 'hostEnd';
  run: number;
}

/** worker → main: the calls and ends of one event-loop turn, in order. */
export interface HostBatch {
  t: 'host';
  m: Array<HostCall | HostEnd>;
}

/** main → worker: the replies of one event-loop turn. */
export interface HostReplies {
  t: 'hostReplies';
  m: HostReply[];
}

/** main → worker: the outcome of a HostCall. */
export interface HostReply {
  t: 'hostReply';
  id: number;
  outcome?: RequestOutcome | ResponseOutcome;
  error?: string;
  calls?: PluginCallTiming[];
  /** After onRequest: whether any onResponse hook is left to call for the run (the main thread's exact answer). */
  responseHooks?: boolean;
}

interface TenantShape {
  chain: Chain;
  quota: TenantQuota;
  slot: number;
}

interface RemoteRun extends ChainRun {
  readonly key: number;
  readonly shape: TenantShape;
  route: string | undefined;
  routed: boolean;
  /** The main thread holds a run for it (a plugin was called). */
  attached: boolean;
  record: boolean;
  ended: boolean;
  calls?: PluginCallTiming[];
  /** From the main thread's onRequest answer: ctx.responseHeaders edits, and whether onResponse hooks are left. */
  responseOps?: ResponseHeaderOp[];
  responseHooks?: boolean;
}

export class RemoteHost implements PluginHostApi {
  readonly #outbox: Outbox<HostCall | HostEnd>;
  readonly #ledger: NodeLedger;
  /** This worker's index in the ledger (its own shares, reclaimed if it dies). */
  readonly #worker: number;
  readonly #tenants = new Map<string, TenantShape>();
  readonly #pending = new IdTable<{ resolve: (r: HostReply) => void; run: RemoteRun }>();
  #ids = 0;
  #runs = 0;

  constructor(port: MessagePort, ledger: NodeLedger, worker: number) {
    this.#outbox = new Outbox((m) => port.postMessage({ t: 'host', m } satisfies HostBatch));
    this.#ledger = ledger;
    this.#worker = worker;
  }

  /** A tenant's configuration (plugin code and secrets stripped) and its ledger row. */
  configure(config: TenantConfig, slot?: number): void {
    const chain = new Chain(config, () => 0);
    const existing = this.#tenants.get(config.name);
    if (existing !== undefined) {
      existing.quota.update(config.quota);
      this.#tenants.set(config.name, { chain, quota: existing.quota, slot: existing.slot });
      return;
    }
    if (slot === undefined) throw new Error(`no ledger row for tenant ${config.name}`);
    this.#tenants.set(config.name, { chain, quota: new TenantQuota(config.quota, Date.now, this.#ledger.quotaCells(slot)), slot });
  }

  removeTenant(tenant: string): void {
    this.#tenants.delete(tenant);
  }

  begin(tenant: string, requestId: string): Admission {
    const shape = this.#tenants.get(tenant);
    if (shape === undefined) return { ok: false, status: 503, code: 'ISOMESH_ERR_PLUGIN_UNAVAILABLE', message: `tenant ${tenant} is not configured in the plugin host` };
    const admitted = shape.quota.admit();
    if (!admitted.ok) {
      const a: Admission = { ok: false, status: 429, code: admitted.code, message: admitted.message };
      if (admitted.retryAfterSec !== undefined) a.retryAfterSec = admitted.retryAfterSec;
      return a;
    }
    this.#ledger.workerInFlight(this.#worker, shape.slot, 1);
    this.#ledger.countRequest(shape.slot);
    this.#ledger.countWorkerRequest(this.#worker);
    const run: RemoteRun = { tenant, requestId, key: ++this.#runs, shape, route: undefined, routed: false, attached: false, record: false, ended: false };
    return { ok: true, run };
  }

  end(run: ChainRun): void {
    const r = run as RemoteRun;
    if (r.ended) return;
    r.ended = true;
    r.shape.quota.release();
    this.#ledger.workerInFlight(this.#worker, r.shape.slot, -1);
    if (r.attached) this.#outbox.push({ t: 'hostEnd', run: r.key });
  }

  hasRequestHooks(run: ChainRun, route: string | undefined): boolean {
    const r = run as RemoteRun;
    r.route = route;
    r.routed = true;
    return this.#any(r, 'onRequest');
  }

  hasResponseHooks(run: ChainRun): boolean {
    const r = run as RemoteRun;
    return r.responseOps !== undefined || (r.responseHooks ?? this.#any(r, 'onResponse'));
  }

  /** Some applicable entry may have this hook (unknown hooks count: the main thread decides exactly). */
  #any(r: RemoteRun, phase: 'onRequest' | 'onResponse'): boolean {
    for (const step of r.shape.chain.steps) {
      if (r.routed && !Chain.applies(step, r.route)) continue;
      const v = Chain.versionFor(step, r.requestId);
      if (v === undefined || v.hooks === undefined || v.hooks.includes(phase)) return true;
    }
    return false;
  }

  bodyLimit(run: ChainRun, phase: 'request' | 'response', route?: string): number {
    const r = run as RemoteRun;
    return r.shape.chain.bodyLimit(phase, route ?? r.route, r.requestId);
  }

  recordCalls(run: ChainRun): void {
    (run as RemoteRun).record = true;
  }

  calls(run: ChainRun): PluginCallTiming[] | undefined {
    return (run as RemoteRun).calls;
  }

  onRequest(run: ChainRun, req: HookRequest): Promise<RequestOutcome> {
    const r = run as RemoteRun;
    if (!r.routed) {
      r.route = req.route;
      r.routed = true;
    }
    return this.#call(r, 'onRequest', req) as Promise<RequestOutcome>;
  }

  onResponse(run: ChainRun, res: HookResponse): Promise<ResponseOutcome> {
    const r = run as RemoteRun;
    // No hook left to call: onRequest's response header edits are applied here, without a round trip.
    if (r.responseHooks === false) {
      return Promise.resolve({ action: 'continue', status: res.status, headers: r.responseOps === undefined ? res.headers : applyResponseOps(res.headers, r.responseOps) });
    }
    return this.#call(r, 'onResponse', res) as Promise<ResponseOutcome>;
  }

  #call(r: RemoteRun, phase: 'onRequest' | 'onResponse', input: HookRequest | HookResponse): Promise<RequestOutcome | ResponseOutcome> {
    const id = ++this.#ids;
    r.attached = true;
    const msg: HostCall = { t: 'call', id, run: r.key, tenant: r.tenant, requestId: r.requestId, route: r.route, phase, input, record: r.record };
    return new Promise((resolve, reject) => {
      this.#pending.set(id, {
        run: r,
        resolve: (reply) => {
          if (reply.calls !== undefined) r.calls = reply.calls;
          if (phase === 'onRequest' && reply.outcome?.action === 'continue') {
            const o = reply.outcome as RequestOutcome & { action: 'continue' };
            if (o.responseHeaders !== undefined) r.responseOps = o.responseHeaders;
            if (reply.responseHooks !== undefined) r.responseHooks = reply.responseHooks;
          }
          if (reply.outcome !== undefined) resolve(reply.outcome);
          else reject(new Error(reply.error ?? 'plugin host call failed'));
        },
      });
      this.#outbox.push(msg);
    });
  }

  /** The main thread answered calls. */
  replies(batch: HostReplies): void {
    for (const r of batch.m) this.#reply(r);
  }

  #reply(msg: HostReply): void {
    const p = this.#pending.take(msg.id);
    if (p === undefined) return;
    p.resolve(msg);
  }

  async close(): Promise<void> {
    for (const [id, p] of [...this.#pending.entries()]) {
      this.#pending.delete(id);
      p.resolve({ t: 'hostReply', id, error: 'the data-plane worker is closing' });
    }
  }
}
