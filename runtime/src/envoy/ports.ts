// Tenant listener ports in envoy mode: Envoy binds them (from LDS), so the management API's "bind the
// tenant's listener" becomes "check the port is free here" — the same refusal (EADDRINUSE → 409) as
// the built-in proxy gives, without isomesh holding a port Envoy must take.

import net from 'node:net';

export interface EnvoyListenerPortsOptions {
  /** The node's listen address (ISOMESH_LISTEN_ADDRESS). */
  listenAddress: string;
  /** The tenant's committed port (store), for status. */
  portOf: (tenant: string) => number | undefined;
}

export class EnvoyListenerPorts {
  readonly #opts: EnvoyListenerPortsOptions;

  constructor(opts: EnvoyListenerPortsOptions) {
    this.#opts = opts;
  }

  /** Probes that `port` can be bound on the listen address (Envoy will bind it); resolves to the port. */
  bind(_tenant: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      const probe = net.createServer();
      probe.once('error', reject);
      probe.listen({ host: this.#opts.listenAddress, port, exclusive: true }, () => {
        const bound = (probe.address() as net.AddressInfo).port;
        probe.close(() => resolve(bound));
      });
    });
  }

  /** Envoy drops the tenant's listener when LDS no longer has it. */
  async removeTenant(_tenant: string): Promise<void> {}

  status(tenant: string): { listener?: { address: string; port: number }; requests: number; inFlight: number } | undefined {
    const port = this.#opts.portOf(tenant);
    if (port === undefined) return undefined;
    // Request counts live in Envoy (its admin /stats), not here.
    return { listener: { address: this.#opts.listenAddress, port }, requests: 0, inFlight: 0 };
  }
}
