// The node's gRPC server (API.md "Envoy mode"): the same services on ISOMESH_GRPC_ADDR (TCP) and on
// <stateDir>/grpc.sock (unix socket, mode 0600), in both data-plane modes. Services are added through
// addService(); each implementation is built per transport, so a handler knows which socket a call
// came in on and can apply the authorization rule:
//   unix socket                                     → sees every tenant (file permissions are the auth)
//   else gRPC metadata `authorization: Bearer <t>`  → admin token: every tenant; tenant token: its own
//   else (xDS streams only) node.metadata["isomesh.token"] on the stream's first request
//   none / unknown                                  → UNAUTHENTICATED
// Two grpc-js Server instances (one per transport) rather than one, because grpc-js does not tell a
// handler which listening socket accepted its connection.

import { createHash, timingSafeEqual } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type pino from 'pino';

export type Transport = 'unix' | 'tcp';

/** Who a call or stream acts for. */
export type GrpcPrincipal = { kind: 'admin'; via: 'unix' | 'token' } | { kind: 'tenant'; tenant: string };

/** What the server needs from the store: the owner of a minted token (null tenant = admin token). */
export interface TokenResolver {
  resolveToken(token: string): { tenant: string | null } | undefined;
}

export interface GrpcServerOptions {
  /** TCP address (ISOMESH_GRPC_ADDR); port 0 picks a free port. */
  tcp: { host: string; port: number };
  /** Unix socket path, normally <stateDir>/grpc.sock. */
  socketPath: string;
  store: TokenResolver;
  adminToken: string;
  logger: pino.Logger;
}

/** Builds a service implementation for one transport. */
export type ImplementationFactory = (transport: Transport) => grpc.UntypedServiceImplementation;

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/** The bearer token of `authorization: Bearer <token>` metadata, if any. */
export function bearerToken(metadata: grpc.Metadata): string | undefined {
  const v = metadata.get('authorization')[0];
  if (typeof v !== 'string') return undefined;
  const m = /^Bearer +(\S+) *$/i.exec(v);
  return m ? m[1] : undefined;
}

export class GrpcServer {
  readonly #opts: GrpcServerOptions;
  readonly #adminDigest: Buffer;
  readonly #servers: Record<Transport, grpc.Server>;
  readonly #services: Array<{ definition: grpc.ServiceDefinition; factory: ImplementationFactory }> = [];
  #tcpPort = 0;
  #started = false;

  constructor(opts: GrpcServerOptions) {
    if (opts.adminToken.length < 16) throw new Error('admin token must be at least 16 characters');
    this.#opts = opts;
    this.#adminDigest = digest(opts.adminToken);
    const options: grpc.ServerOptions = {
      // xDS responses for a node with many tenants are large (CDS/EDS state of the world).
      'grpc.max_send_message_length': 256 * 1024 * 1024,
      'grpc.max_receive_message_length': 16 * 1024 * 1024,
      'grpc.keepalive_permit_without_calls': 1,
      'grpc.keepalive_time_ms': 30_000,
    };
    this.#servers = { tcp: new grpc.Server(options), unix: new grpc.Server(options) };
  }

  /** Registers a service on both transports (before or after start()). */
  addService(definition: grpc.ServiceDefinition, factory: ImplementationFactory): void {
    this.#services.push({ definition, factory });
    for (const t of ['tcp', 'unix'] as const) this.#servers[t].addService(definition, factory(t));
  }

  /** Who holds this token: the daemon's admin token or a store-minted one; undefined when unknown. */
  identify(token: string): GrpcPrincipal | undefined {
    if (token.length === 0) return undefined;
    if (timingSafeEqual(digest(token), this.#adminDigest)) return { kind: 'admin', via: 'token' };
    const owner = this.#opts.store.resolveToken(token);
    if (owner === undefined) return undefined;
    return owner.tenant === null ? { kind: 'admin', via: 'token' } : { kind: 'tenant', tenant: owner.tenant };
  }

  /**
   * The principal of a call from its transport and metadata: the unix socket sees every tenant; else a
   * bearer token; undefined when neither (xDS may still find a token in the node metadata).
   * `invalid` is true when a bearer token was given but is unknown (answer UNAUTHENTICATED at once).
   */
  authorize(transport: Transport, metadata: grpc.Metadata): { principal?: GrpcPrincipal; invalid: boolean } {
    if (transport === 'unix') return { principal: { kind: 'admin', via: 'unix' }, invalid: false };
    const token = bearerToken(metadata);
    if (token === undefined) return { invalid: false };
    const principal = this.identify(token);
    return principal ? { principal, invalid: false } : { invalid: true };
  }

  get tcpAddress(): { host: string; port: number } {
    return { host: this.#opts.tcp.host, port: this.#tcpPort };
  }

  get socketPath(): string {
    return this.#opts.socketPath;
  }

  /** Binds TCP and the unix socket (0600). A stale socket file from an earlier run is replaced. */
  async start(): Promise<void> {
    if (this.#started) return;
    const { host, port } = this.#opts.tcp;
    const creds = grpc.ServerCredentials.createInsecure();
    const target = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
    this.#tcpPort = await bindAsync(this.#servers.tcp, target, creds).catch((err: Error) => {
      throw new Error(`gRPC server cannot listen on ${target} (ISOMESH_GRPC_ADDR): ${err.message}`);
    });
    const sock = this.#opts.socketPath;
    if (Buffer.byteLength(sock) > 107) throw new Error(`gRPC socket path ${sock} is longer than a unix socket path may be (107 bytes); use a shorter ISOMESH_STATE_DIR`);
    fs.mkdirSync(path.dirname(sock), { recursive: true, mode: 0o700 });
    removeStaleSocket(sock);
    await bindAsync(this.#servers.unix, `unix:${sock}`, creds).catch((err: Error) => {
      throw new Error(`gRPC server cannot listen on ${sock}: ${err.message}`);
    });
    // The state dir is 0700, so nobody else can reach the socket before the chmod either.
    fs.chmodSync(sock, 0o600);
    this.#started = true;
    this.#opts.logger.info({ tcp: `${host}:${this.#tcpPort}`, unix: sock, services: this.#services.length }, 'gRPC server listening');
  }

  /** Stops accepting calls; open streams get `graceMs` to finish, then are cancelled. */
  async stop(graceMs = 2000): Promise<void> {
    await Promise.all(
      (['tcp', 'unix'] as const).map(
        (t) =>
          new Promise<void>((resolve) => {
            const server = this.#servers[t];
            const force = setTimeout(() => {
              server.forceShutdown();
              resolve();
            }, graceMs);
            server.tryShutdown(() => {
              clearTimeout(force);
              resolve();
            });
          }),
      ),
    );
    if (this.#started) fs.rmSync(this.#opts.socketPath, { force: true });
    this.#started = false;
  }
}

function bindAsync(server: grpc.Server, target: string, creds: grpc.ServerCredentials): Promise<number> {
  return new Promise((resolve, reject) => {
    server.bindAsync(target, creds, (err, port) => (err ? reject(err) : resolve(port)));
  });
}

function removeStaleSocket(sock: string): void {
  let st: fs.Stats;
  try {
    st = fs.lstatSync(sock);
  } catch {
    return;
  }
  if (!st.isSocket()) throw new Error(`${sock} exists and is not a socket; refusing to replace it`);
  fs.rmSync(sock);
}

/** A gRPC error to pass to a callback or call.destroy()/emit('error'). */
export function grpcError(code: grpc.status, details: string): grpc.ServiceError {
  return Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });
}
