// Daemon configuration from the environment (API.md "Running"); flags of `isomesh run` mirror it.
import os from 'node:os';
import path from 'node:path';
import { isomeshError } from './errors.ts';

export interface HostPort {
  host: string;
  port: number;
}

export interface DaemonConfig {
  admin: HostPort;
  grpc: HostPort;
  stateDir: string;
  adminToken?: string;
  listenerPorts: { min: number; max: number };
  /** Address tenant listeners bind on (loopback by default). */
  listenAddress: string;
  /** bpffs directory for pinned maps and links. */
  bpfPinDir: string;
  /** Try to load the eBPF datapath at start (off: explicit traffic only). */
  datapath: 'auto' | 'on' | 'off';
  /**
   * What stop() does with the datapath: keep (default: programs, pins and the proxy cgroup stay, so
   * redirection goes on and the next run re-adopts them) or detach (every attachment and pin removed,
   * and the proxy cgroup the daemon created, once it has left it: nothing of the node's is left).
   */
  datapathOnStop: 'keep' | 'detach';
  /** cgroup v2 directory the daemon joins for sk_msg acceleration (empty: automatic). */
  proxyCgroup: string;
  logLevel: string;
  /** Client-side timeouts of tenant listeners (ms; 0 = none). */
  timeouts: { headersMs: number; idleMs: number; bodyMs: number };
  /** Node-wide cap on client connections (undefined: half the descriptor limit). */
  maxConnections?: number;
  /** Data-plane worker threads (ISOMESH_WORKERS; default: the number of CPUs). */
  workers: number;
  /** ISOMESH_DATAPLANE: who serves the tenant listeners (envoy: a supervised Envoy configured over xDS). */
  dataplane: 'builtin' | 'envoy';
  /** Envoy mode: the Envoy admin port on 127.0.0.1 (ISOMESH_ENVOY_ADMIN_PORT). */
  envoyAdminPort: number;
  /** Envoy mode: ENVOY_BIN (default: `envoy` on PATH). */
  envoyBin?: string;
}

function msSetting(env: (name: string, fallback: string) => string, name: string, fallback: number): number {
  const raw = env(name, String(fallback));
  const v = Number(raw);
  if (!/^\d{1,9}$/.test(raw.trim()) || !Number.isSafeInteger(v)) {
    throw isomeshError('ISOMESH_ERR_API_VALIDATION', `${name} must be a whole number of milliseconds (got "${raw}")`);
  }
  return v;
}

export function parseHostPort(value: string, what: string): HostPort {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:\s]+)):(\d{1,5})$/.exec(value.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw isomeshError('ISOMESH_ERR_API_VALIDATION', `${what} must be host:port (got "${value}")`);
  }
  return { host: m[1] ?? m[2]!, port };
}

export function parsePortRange(value: string): { min: number; max: number } {
  const m = /^(\d{1,5})-(\d{1,5})$/.exec(value.trim());
  const min = m ? Number(m[1]) : NaN;
  const max = m ? Number(m[2]) : NaN;
  if (!m || min < 1 || max > 65535 || min > max) {
    throw isomeshError('ISOMESH_ERR_API_VALIDATION', `ISOMESH_LISTENER_PORTS must be "min-max" within 1-65535 (got "${value}")`);
  }
  return { min, max };
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env, overrides: Partial<Record<string, string>> = {}): DaemonConfig {
  const get = (name: string, fallback: string): string => overrides[name] ?? env[name] ?? fallback;
  const datapath = get('ISOMESH_DATAPATH', 'auto');
  if (datapath !== 'auto' && datapath !== 'on' && datapath !== 'off') {
    throw isomeshError('ISOMESH_ERR_API_VALIDATION', `ISOMESH_DATAPATH must be auto, on or off (got "${datapath}")`);
  }
  const datapathOnStop = get('ISOMESH_DATAPATH_ON_STOP', 'keep');
  if (datapathOnStop !== 'keep' && datapathOnStop !== 'detach') {
    throw isomeshError('ISOMESH_ERR_API_VALIDATION', `ISOMESH_DATAPATH_ON_STOP must be keep or detach (got "${datapathOnStop}")`);
  }
  const token = overrides.ISOMESH_ADMIN_TOKEN ?? env.ISOMESH_ADMIN_TOKEN;
  const workersRaw = get('ISOMESH_WORKERS', String(Math.min(64, os.availableParallelism())));
  if (!/^\d{1,2}$/.test(workersRaw.trim()) || Number(workersRaw) < 1 || Number(workersRaw) > 64) {
    throw isomeshError('ISOMESH_ERR_API_VALIDATION', `ISOMESH_WORKERS must be a whole number from 1 to 64 (got "${workersRaw}")`);
  }
  const maxConnections = get('ISOMESH_MAX_CONNECTIONS', '');
  if (maxConnections !== '' && (!/^\d{1,9}$/.test(maxConnections) || Number(maxConnections) < 1)) {
    throw isomeshError('ISOMESH_ERR_API_VALIDATION', `ISOMESH_MAX_CONNECTIONS must be a positive whole number (got "${maxConnections}")`);
  }
  const dataplane = get('ISOMESH_DATAPLANE', 'builtin');
  if (dataplane !== 'builtin' && dataplane !== 'envoy') {
    throw isomeshError('ISOMESH_ERR_API_VALIDATION', `ISOMESH_DATAPLANE must be builtin or envoy (got "${dataplane}")`);
  }
  const adminPort = get('ISOMESH_ENVOY_ADMIN_PORT', '7702');
  if (!/^\d{1,5}$/.test(adminPort) || Number(adminPort) < 1 || Number(adminPort) > 65535) {
    throw isomeshError('ISOMESH_ERR_API_VALIDATION', `ISOMESH_ENVOY_ADMIN_PORT must be a port 1-65535 (got "${adminPort}")`);
  }
  const envoyBin = get('ENVOY_BIN', '');
  return {
    dataplane,
    envoyAdminPort: Number(adminPort),
    ...(envoyBin !== '' ? { envoyBin } : {}),
    admin: parseHostPort(get('ISOMESH_ADMIN_ADDR', '127.0.0.1:7700'), 'ISOMESH_ADMIN_ADDR'),
    grpc: parseHostPort(get('ISOMESH_GRPC_ADDR', '127.0.0.1:7701'), 'ISOMESH_GRPC_ADDR'),
    stateDir: path.resolve(get('ISOMESH_STATE_DIR', './.isomesh')),
    ...(token ? { adminToken: token } : {}),
    listenerPorts: parsePortRange(get('ISOMESH_LISTENER_PORTS', '17000-17999')),
    listenAddress: get('ISOMESH_LISTEN_ADDRESS', '127.0.0.1'),
    bpfPinDir: get('ISOMESH_BPF_PIN_DIR', '/sys/fs/bpf/isomesh'),
    datapath,
    datapathOnStop,
    proxyCgroup: get('ISOMESH_PROXY_CGROUP', ''),
    logLevel: get('ISOMESH_LOG_LEVEL', 'info'),
    timeouts: {
      headersMs: msSetting(get, 'ISOMESH_HEADERS_TIMEOUT_MS', 10_000),
      idleMs: msSetting(get, 'ISOMESH_IDLE_TIMEOUT_MS', 60_000),
      bodyMs: msSetting(get, 'ISOMESH_BODY_TIMEOUT_MS', 30_000),
    },
    ...(maxConnections !== '' ? { maxConnections: Number(maxConnections) } : {}),
    workers: Number(workersRaw),
  };
}
