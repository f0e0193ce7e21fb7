// Hostname endpoints. EDS carries IP literals only (Envoy and gRPC both refuse a hostname in an
// LbEndpoint), and isomesh serves every service as an EDS cluster so that the weights, localities and
// names are the same for both flavors. So the control plane resolves: a hostname endpoint's addresses
// are looked up when a config first names it and again every `refreshMs`; when they change, the
// tenants using the hostname are rebuilt. Until a lookup succeeds the endpoint is left out of EDS
// (a translation warning, shown in GET /v1/xds); a failed refresh keeps the last good addresses.

import dns from 'node:dns/promises';

export type Lookup = (hostname: string) => Promise<string[]>;

export const defaultLookup: Lookup = async (hostname) => (await dns.lookup(hostname, { all: true, verbatim: true })).map((a) => a.address);

export interface HostnameResolverOptions {
  lookup?: Lookup;
  /** Re-resolution period for hostnames in use; default 30 s. */
  refreshMs?: number;
  /** Called with the hostnames whose addresses changed. */
  onChange: (hostnames: Set<string>) => void;
}

const MAX_HOSTNAMES = 10_000;

export class HostnameResolver {
  readonly #lookup: Lookup;
  readonly #onChange: (hostnames: Set<string>) => void;
  readonly #known = new Map<string, string[]>();
  readonly #pending = new Map<string, Promise<void>>();
  readonly #timer: NodeJS.Timeout;

  constructor(opts: HostnameResolverOptions) {
    this.#lookup = opts.lookup ?? defaultLookup;
    this.#onChange = opts.onChange;
    this.#timer = setInterval(() => void this.refresh(), opts.refreshMs ?? 30_000);
    this.#timer.unref();
  }

  /** The addresses of `hostname` if known; otherwise starts a lookup and returns undefined. */
  resolve(hostname: string): readonly string[] | undefined {
    const ips = this.#known.get(hostname);
    if (ips === undefined) void this.#resolveNow(hostname);
    return ips;
  }

  /** Resolves every known hostname again (bounded: one lookup per hostname at a time). */
  async refresh(): Promise<void> {
    await Promise.all([...this.#known.keys()].map((h) => this.#resolveNow(h)));
  }

  /** Waits for the lookups in progress (tests). */
  async settled(): Promise<void> {
    while (this.#pending.size > 0) await Promise.all(this.#pending.values());
  }

  /** Forgets hostnames no config uses any more. */
  retain(inUse: ReadonlySet<string>): void {
    for (const h of [...this.#known.keys()]) if (!inUse.has(h)) this.#known.delete(h);
  }

  close(): void {
    clearInterval(this.#timer);
  }

  #resolveNow(hostname: string): Promise<void> {
    let p = this.#pending.get(hostname);
    if (p) return p;
    p = (async () => {
      let ips: string[];
      try {
        ips = [...new Set(await this.#lookup(hostname))].sort();
      } catch {
        return; // keep the last good addresses (or none)
      } finally {
        this.#pending.delete(hostname);
      }
      const old = this.#known.get(hostname);
      if (old !== undefined && old.join() === ips.join()) return;
      if (old === undefined && this.#known.size >= MAX_HOSTNAMES) return;
      this.#known.set(hostname, ips);
      this.#onChange(new Set([hostname]));
    })();
    this.#pending.set(hostname, p);
    return p;
  }
}
