// The daemon's side of ctx.fetch: a plugin's request reaches the data plane's PluginFetch backend
// only when it names one of its own tenant's services (by the tenant's current config) — otherwise it
// is refused without a request. Used directly by inline sandboxes and, through the relay, by cordons
// (plain data over the wire, bodies in base64).

import { CAPABILITY_BOUNDS, CapabilityFetchError, type CapabilityFetch, type CapabilityFetchRequest, type CapabilityFetchResponse } from './capabilities.ts';
import type { PluginFetch } from './contract.ts';
import type { WireFetchReply, WireFetchRequest } from './wire.ts';

function base64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

export class FetchGate {
  readonly #backend: PluginFetch | undefined;
  readonly #hasService: (tenant: string, service: string) => boolean;

  constructor(backend: PluginFetch | undefined, hasService: (tenant: string, service: string) => boolean) {
    this.#backend = backend;
    this.#hasService = hasService;
  }

  /** The ctx.fetch backend of one tenant's sandbox. */
  forTenant(tenant: string): CapabilityFetch {
    return (req) => this.#perform(tenant, req);
  }

  /** A cordon relayed a plugin's ctx.fetch: perform it and answer as plain data. */
  async relay(tenant: string, req: WireFetchRequest): Promise<WireFetchReply> {
    const call: CapabilityFetchRequest = { service: req.service, method: req.method, path: req.path, headers: req.headers, timeoutMs: req.timeoutMs };
    if (req.body !== undefined) call.body = Buffer.from(req.body, 'base64');
    try {
      const res = await this.#perform(tenant, call);
      const body = res.body instanceof Uint8Array ? res.body : new Uint8Array(0);
      // Bounded here too: an over-large answer is refused without shipping it to the cordon.
      if (body.byteLength > CAPABILITY_BOUNDS.fetchBodyBytes) {
        return { ok: false, code: 'ERR_FETCH_TOO_LARGE', message: `ctx.fetch: response body is ${body.byteLength} bytes (max ${CAPABILITY_BOUNDS.fetchBodyBytes})` };
      }
      return { ok: true, status: res.status, headers: res.headers, body: base64(body) };
    } catch (e) {
      const code = e instanceof CapabilityFetchError ? e.code : 'ERR_FETCH_FAILED';
      return { ok: false, code, message: e instanceof Error ? e.message : String(e) };
    }
  }

  async #perform(tenant: string, req: CapabilityFetchRequest): Promise<CapabilityFetchResponse> {
    const backend = this.#backend;
    if (backend === undefined) throw new CapabilityFetchError('ERR_FETCH_UNAVAILABLE', 'ctx.fetch: fetch is not available');
    if (!this.#hasService(tenant, req.service)) {
      throw new CapabilityFetchError('ERR_FETCH_UNKNOWN_SERVICE', `ctx.fetch: "${req.service}" is not a service of tenant ${tenant}`);
    }
    const out: Parameters<PluginFetch>[1] = { service: req.service, method: req.method, path: req.path, headers: req.headers, timeoutMs: req.timeoutMs };
    if (req.body !== undefined) out.body = req.body;
    try {
      return await backend(tenant, out);
    } catch (e) {
      throw new CapabilityFetchError('ERR_FETCH_FAILED', `ctx.fetch: ${e instanceof Error ? e.message : String(e)}`.slice(0, 1024));
    }
  }
}
