// The real peers: nginx as the static upstream, nginx as a reverse proxy with a keep-alive upstream
// pool, and haproxy. Each runs in the foreground as a single process (nginx master_process off,
// haproxy -db nbthread 1) so it is one PID to stop and one core of work — like the Node proxy.
import fs from 'node:fs';
import path from 'node:path';
import { freePort, waitForPort, type ProcessGroup, type Started } from './processes.ts';

export const SMALL_PATH = '/small.txt';
export const LARGE_PATH = '/16k.bin';
export const SMALL_BODY = 'hello, mesh\n';
export const LARGE_BYTES = 16 * 1024;

export interface PeerOptions {
  /** Distinguishes several instances of one kind (their directories and names). */
  name?: string;
  /** argv prefix, e.g. nsenter into a network namespace (see ProcessGroup.start). */
  prefix?: string[];
  /** Also listen for h2c on a second port (upstream) / listen for h2c instead of HTTP/1.1 (proxy). */
  h2c?: boolean;
  /** Proxy only: the upstream is gRPC (`grpc_pass`, HTTP/2) instead of HTTP/1.1 `proxy_pass`. */
  grpc?: boolean;
  /**
   * Proxy only: this many worker processes under a master, each with its own SO_REUSEPORT listener
   * (what isomesh's ISOMESH_WORKERS does); default one worker, no master.
   */
  workers?: number;
}

export interface Peer {
  name: string;
  port: number;
  proc: Started;
  /** The same server's h2c (HTTP/2 prior knowledge) port, when asked for (`h2c: true`). */
  h2cPort?: number;
}

function nginxCommon(dir: string, workers = 1): string {
  return `daemon off;
master_process ${workers > 1 ? 'on' : 'off'};
worker_processes ${workers};
error_log ${dir}/error.log warn;
pid ${dir}/nginx.pid;
events { worker_connections 8192; }
`;
}

function nginxHttpCommon(dir: string): string {
  return `  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
`;
}

function prepareDir(root: string, name: string): string {
  const dir = path.join(root, name);
  fs.mkdirSync(dir, { recursive: true, mode: 0o755 });
  fs.chmodSync(root, 0o755);
  return dir;
}

/** nginx serving the small and 16 KiB bodies from files (open_file_cache: no disk on the hot path). */
export async function startNginxUpstream(group: ProcessGroup, root: string, cpus?: string, opts: PeerOptions = {}): Promise<Peer> {
  const name = opts.name ?? 'nginx-upstream';
  const dir = prepareDir(root, name);
  const www = path.join(dir, 'www');
  fs.mkdirSync(www, { recursive: true, mode: 0o755 });
  fs.writeFileSync(path.join(www, SMALL_PATH.slice(1)), SMALL_BODY, { mode: 0o644 });
  fs.writeFileSync(path.join(www, LARGE_PATH.slice(1)), Buffer.alloc(LARGE_BYTES, 'x'), { mode: 0o644 });
  const port = await freePort();
  const h2cPort = opts.h2c === true ? await freePort() : undefined;
  const conf = `${nginxCommon(dir)}
http {
${nginxHttpCommon(dir)}
  open_file_cache max=16 inactive=300s;
  sendfile on;
  tcp_nopush off;
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port} backlog=4096;${h2cPort === undefined ? '' : `
    listen 127.0.0.1:${h2cPort} http2 backlog=4096;`}
    root ${www};
  }
}
`;
  fs.writeFileSync(path.join(dir, 'nginx.conf'), conf);
  const proc = group.start(name, 'nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf')], { ...(cpus === undefined ? {} : { cpus }), ...(opts.prefix ? { prefix: opts.prefix } : {}) });
  await waitForPort(port, proc, 10_000, opts.prefix);
  return { name, port, proc, ...(h2cPort === undefined ? {} : { h2cPort }) };
}

/**
 * nginx reverse proxy with a keep-alive upstream pool (HTTP/1.1, Connection cleared). `h2c`: the
 * listener speaks HTTP/2 prior knowledge (nginx's `proxy_pass` still talks HTTP/1.1 upstream); `grpc`:
 * `grpc_pass` to an HTTP/2 gRPC upstream (one stream per upstream connection, connections kept alive).
 */
export async function startNginxProxy(group: ProcessGroup, root: string, upstreamPort: number, cpus?: string, opts: PeerOptions = {}): Promise<Peer> {
  const name = opts.name ?? 'nginx';
  const dir = prepareDir(root, name === 'nginx' ? 'nginx-proxy' : name);
  const port = await freePort();
  const conf = `${nginxCommon(dir, opts.workers)}
http {
${nginxHttpCommon(dir)}
  upstream origin {
    server 127.0.0.1:${upstreamPort};
    keepalive ${opts.h2c === true || opts.grpc === true ? 512 : 128}; # h2 clients keep hundreds of streams in flight
    keepalive_requests 10000000;
  }
  server {
    listen 127.0.0.1:${port}${opts.h2c === true || opts.grpc === true ? ' http2' : ''}${(opts.workers ?? 1) > 1 ? ' reuseport' : ''} backlog=4096;
    location / {
${opts.grpc === true ? '      grpc_pass grpc://origin;' : `      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";`}
    }
  }
}
`;
  fs.writeFileSync(path.join(dir, 'nginx.conf'), conf);
  const proc = group.start(name, 'nginx', ['-p', dir, '-c', path.join(dir, 'nginx.conf')], { ...(cpus === undefined ? {} : { cpus }), ...(opts.prefix ? { prefix: opts.prefix } : {}) });
  await waitForPort(port, proc, 10_000, opts.prefix);
  return { name, port, proc };
}

/** haproxy in HTTP mode, one thread, server-side connection reuse. */
export async function startHaproxy(group: ProcessGroup, root: string, upstreamPort: number, cpus?: string): Promise<Peer> {
  const dir = prepareDir(root, 'haproxy');
  const port = await freePort();
  const conf = `global
  nbthread 1
  maxconn 4096

defaults
  mode http
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  option http-keep-alive
  http-reuse always

frontend bench
  bind 127.0.0.1:${port}
  default_backend origin

backend origin
  server s1 127.0.0.1:${upstreamPort}
`;
  fs.writeFileSync(path.join(dir, 'haproxy.cfg'), conf);
  const proc = group.start('haproxy', 'haproxy', ['-db', '-f', path.join(dir, 'haproxy.cfg')], cpus === undefined ? {} : { cpus });
  await waitForPort(port, proc);
  return { name: 'haproxy', port, proc };
}
