// Test helpers: a control plane on loopback, a raw ADS client (grpc-js, no xDS library), loopback
// gRPC echo backends, and xDS bootstraps for real clients. Everything binds 127.0.0.1 / a temp dir.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { Registry } from 'prom-client';
import { ADS_SERVICE } from './ads.ts';
import { XdsControlPlane } from './control-plane.ts';
import { envoyProtos, type AnyMessage } from './protos.ts';
import { GrpcServer } from './server.ts';
import type { Lookup } from './resolver.ts';

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

export interface TestControlPlane {
  server: GrpcServer;
  cp: XdsControlPlane;
  registry: Registry;
  dir: string;
  target: string;
  close(): Promise<void>;
}

/** A gRPC server + control plane; `tokens` maps tenant tokens to their tenant. */
export async function startControlPlane(opts: { tokens?: Record<string, string>; lookup?: Lookup } = {}): Promise<TestControlPlane> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-xds-'));
  const logger = pino({ level: process.env.XDS_TEST_LOG ?? 'silent' });
  const tokens = opts.tokens ?? {};
  const server = new GrpcServer({
    tcp: { host: '127.0.0.1', port: 0 },
    socketPath: path.join(dir, 'grpc.sock'),
    store: { resolveToken: (t) => (t in tokens ? { tenant: tokens[t]! } : undefined) },
    adminToken: ADMIN_TOKEN,
    logger,
  });
  const registry = new Registry();
  const cp = new XdsControlPlane({ grpc: server, logger, registry, listenAddresses: () => ['127.0.0.1'], ...(opts.lookup ? { lookup: opts.lookup } : {}) });
  await server.start();
  return {
    server,
    cp,
    registry,
    dir,
    target: `127.0.0.1:${server.tcpAddress.port}`,
    async close() {
      cp.close();
      await server.stop(200);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

const AdsClient = grpc.makeGenericClientConstructor(envoyProtos().service(ADS_SERVICE), 'AggregatedDiscoveryService');

export interface DecodedResponse {
  version_info?: string;
  system_version_info?: string;
  resources?: Array<AnyMessage & { name?: string; version?: string; resource?: AnyMessage }>;
  removed_resources?: string[];
  type_url: string;
  nonce: string;
}

/** One raw ADS stream: send requests, await responses in order (each wait bounded). */
export class RawAdsStream {
  readonly #client: grpc.Client;
  readonly #call: grpc.ClientDuplexStream<object, DecodedResponse>;
  readonly #queue: DecodedResponse[] = [];
  readonly #waiters: Array<(r: DecodedResponse | Error) => void> = [];
  error: grpc.ServiceError | undefined;

  constructor(target: string, protocol: 'sotw' | 'delta', opts: { token?: string } = {}) {
    this.#client = new AdsClient(target, grpc.credentials.createInsecure());
    const md = new grpc.Metadata();
    if (opts.token !== undefined) md.set('authorization', `Bearer ${opts.token}`);
    const method = protocol === 'sotw' ? 'StreamAggregatedResources' : 'DeltaAggregatedResources';
    this.#call = (this.#client as unknown as Record<string, (md: grpc.Metadata) => grpc.ClientDuplexStream<object, DecodedResponse>>)[method]!(md);
    this.#call.on('data', (r: DecodedResponse) => {
      const w = this.#waiters.shift();
      if (w) w(r);
      else this.#queue.push(r);
    });
    this.#call.on('error', (err: grpc.ServiceError) => {
      this.error = err;
      for (const w of this.#waiters.splice(0)) w(err);
    });
  }

  send(req: object): void {
    this.#call.write(req);
  }

  /** The next response (rejects on stream error or after `timeoutMs`). */
  next(timeoutMs = 5000): Promise<DecodedResponse> {
    const r = this.#queue.shift();
    if (r) return Promise.resolve(r);
    if (this.error) return Promise.reject(this.error);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.#waiters.indexOf(done);
        if (i >= 0) this.#waiters.splice(i, 1);
        reject(new Error(`no response within ${timeoutMs} ms`));
      }, timeoutMs);
      const done = (x: DecodedResponse | Error) => {
        clearTimeout(timer);
        if (x instanceof Error) reject(x);
        else resolve(x);
      };
      this.#waiters.push(done);
    });
  }

  /** Responses already received and not yet read. */
  get pending(): number {
    return this.#queue.length;
  }

  close(): void {
    this.#call.cancel();
    this.#client.close();
  }
}

/** Names and decoded messages of a response's resources. */
export function decodeResources(r: DecodedResponse): Array<{ name: string; version?: string; message: Record<string, any> }> {
  const protos = envoyProtos();
  return (r.resources ?? []).map((res) => {
    const any = res.resource ?? res;
    const message = protos.unpack<Record<string, any>>(any).message;
    return { name: res.name ?? String(message.name ?? message.cluster_name), ...(res.version ? { version: res.version } : {}), message };
  });
}

export function node(id: string, opts: { envoy?: boolean; token?: string } = {}): object {
  return {
    id,
    user_agent_name: opts.envoy ? 'envoy' : 'isomesh-test',
    ...(opts.token ? { metadata: { fields: { 'isomesh.token': { stringValue: opts.token } } } } : {}),
  };
}

// ---- loopback gRPC backends ------------------------------------------------------------------

/** A unary method with raw bytes in and out: what the real-client tests call. */
export const ECHO: grpc.ServiceDefinition = {
  Call: {
    path: '/isomesh.test.Echo/Call',
    requestStream: false,
    responseStream: false,
    requestSerialize: (v: Buffer) => v,
    requestDeserialize: (b: Buffer) => b,
    responseSerialize: (v: Buffer) => v,
    responseDeserialize: (b: Buffer) => b,
  },
};

export interface EchoBackend {
  id: string;
  port: number;
  calls: number;
  stop(): Promise<void>;
}

/** A loopback gRPC server answering every Call with its id. */
export async function echoBackend(id: string): Promise<EchoBackend> {
  const server = new grpc.Server();
  const backend: EchoBackend = {
    id,
    port: 0,
    calls: 0,
    // forced: clients in this process may keep pooled connections to the backend open
    stop: async () => server.forceShutdown(),
  };
  server.addService(ECHO, {
    Call: (_call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      backend.calls++;
      cb(null, Buffer.from(id));
    },
  });
  backend.port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  return backend;
}

/** An xDS bootstrap for a proxyless client of isomesh (insecure channel, token in node metadata). */
export function bootstrap(target: string, nodeId: string, token: string): object {
  return {
    xds_servers: [{ server_uri: target, channel_creds: [{ type: 'insecure' }], server_features: ['xds_v3'] }],
    node: { id: nodeId, locality: {}, metadata: { 'isomesh.token': token } },
  };
}
