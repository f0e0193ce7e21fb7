// Entry of a data-plane worker thread (ISOMESH_WORKERS > 1): a ProxyServer of its own on the tenant
// ports (SO_REUSEPORT: the kernel spreads connections over the workers), admission and rate limits in
// the node ledger's shared memory, plugin calls sent to the main thread's plugin host (remote-host.ts).
// The main thread (workers.ts) configures it with messages; see WorkerCommand.

import { parentPort, workerData } from 'node:worker_threads';
import pino from 'pino';
import prom from 'prom-client';
import { NodeLedger, SharedRateLimitCounters, type LedgerBuffers } from '../host/index.ts';
import type { TenantConfig } from '../store/model.ts';
import { Telemetry } from '../telemetry/index.ts';
import { ProxyServer } from './index.ts';
import { SharedConnectionCounter } from './listener.ts';
import type { FetchRequest } from './plugin-fetch.ts';
import { RemoteHost, type HostReplies } from './remote-host.ts';
import type { Http1Timeouts } from './http1/connection.ts';

export interface WorkerInit {
  worker: number;
  buffers: LedgerBuffers;
  listenAddress: string;
  timeouts: Http1Timeouts;
  maxConnections: number;
  drainTimeoutMs: number;
  logLevel: string;
}

/** main → worker. Commands with an id are answered with { t: 'done', id, value? | error? }. */
export type WorkerCommand =
  | { t: 'configure'; id: number; config: TenantConfig; slot: number; cells: Record<string, number> }
  | { t: 'bind'; id: number; tenant: string; port: number }
  | { t: 'addAddress'; id: number; tenant: string; address: string }
  | { t: 'removeAddress'; id: number; tenant: string; address: string }
  | { t: 'removeTenant'; id: number; tenant: string }
  | { t: 'endpointStatus'; id: number; tenant: string; service: string }
  | { t: 'metrics'; id: number }
  | { t: 'fetch'; id: number; tenant: string; req: FetchRequest }
  | { t: 'pins'; id: number; pinDir: string }
  | { t: 'close'; id: number }
  | HostReplies;

const port = parentPort!;
const init = workerData as WorkerInit;
const ledger = new NodeLedger(init.buffers);
const slots = new Map<string, number>();
/** Per tenant: its upstream state's cells in the ledger (breakers, ejection, in-flight), from the main thread. */
const cells = new Map<string, Record<string, number>>();
const logger = pino({ level: init.logLevel, base: { svc: 'isomesh', pid: process.pid, worker: init.worker } });
const registry = new prom.Registry();
const telemetry = Telemetry.fromEnv(process.env, logger, { registry });
const host = new RemoteHost(port, ledger, init.worker);
const proxy = new ProxyServer({
  host,
  logger: logger.child({ component: 'proxy' }),
  registry,
  listenAddress: init.listenAddress,
  timeouts: init.timeouts,
  drainTimeoutMs: init.drainTimeoutMs,
  telemetry,
  rateLimits: new SharedRateLimitCounters(ledger),
  connections: new SharedConnectionCounter(ledger, (t) => slots.get(t), init.maxConnections, init.worker),
  reusePort: true,
  sharedUpstream: (tenant) => ({ ledger, worker: init.worker, cell: (key) => cells.get(tenant)?.[key] }),
});

async function handle(m: WorkerCommand): Promise<unknown> {
  switch (m.t) {
    case 'configure':
      slots.set(m.config.name, m.slot);
      cells.set(m.config.name, m.cells);
      host.configure(m.config, m.slot);
      await proxy.configure(m.config);
      return proxy.status(m.config.name)?.listener?.port;
    case 'bind':
      return proxy.bind(m.tenant, m.port);
    case 'addAddress':
      return proxy.addListenAddress(m.tenant, m.address);
    case 'removeAddress':
      return proxy.removeListenAddress(m.tenant, m.address);
    case 'removeTenant':
      await proxy.removeTenant(m.tenant);
      host.removeTenant(m.tenant);
      slots.delete(m.tenant);
      cells.delete(m.tenant);
      return undefined;
    case 'endpointStatus':
      return proxy.endpointStatus(m.tenant, m.service);
    case 'metrics':
      return registry.getMetricsAsJSON();
    case 'fetch': {
      const r = await proxy.fetch(m.tenant, m.req);
      return { status: r.status, headers: r.headers, body: r.body };
    }
    case 'pins': {
      const { Datapath } = await import('../datapath/index.ts');
      const resolve = Datapath.resolverFromPins(m.pinDir);
      proxy.setOriginalDestinationResolver(resolve);
      return undefined;
    }
    case 'close':
      await proxy.close();
      await host.close();
      await telemetry.shutdown();
      return undefined;
    default:
      return undefined;
  }
}

port.on('message', (m: WorkerCommand) => {
  if (m.t === 'hostReplies') {
    host.replies(m);
    return;
  }
  handle(m).then(
    (value) => {
      port.postMessage({ t: 'done', id: m.id, value });
      if (m.t === 'close') port.close();
    },
    (err: unknown) => {
      const e = err as { code?: string; message?: string };
      port.postMessage({ t: 'done', id: m.id, error: { code: e.code, message: e.message ?? String(err) } });
    },
  );
});

port.postMessage({ t: 'ready' });
