// The gRPC peer of the h2 benchmark: a @grpc/grpc-js server (a real gRPC implementation that is not
// isomesh) with one unary method that echoes its request message, run as its own process
// (`node bench/lib/grpc-upstream.ts <port>`, pinned like the other upstreams); and a one-call gRPC
// client for the checks before and after the load, which reads the real grpc-status.
//
// Messages are raw protobuf bytes (no .proto needed): field 1, a string. The echo proves the request
// body travelled through the proxy; every OK response carries exactly ECHO_FRAMED bytes of DATA, so a
// load client's DATA byte count tells how many calls really came back with the message.
import * as grpc from '@grpc/grpc-js';
import fs from 'node:fs';
import { freePort, waitForPort, type ProcessGroup } from './processes.ts';
import type { Peer } from './peers.ts';

export const GRPC_SERVICE = 'bench.Echo';
export const GRPC_METHOD = 'Unary';
export const GRPC_PATH = `/${GRPC_SERVICE}/${GRPC_METHOD}`;
/** The request message: protobuf field 1 (wire type 2) = "hello, mesh". */
export const ECHO_MESSAGE = Buffer.concat([Buffer.from([0x0a, 11]), Buffer.from('hello, mesh')]);
/** The message in gRPC's length-prefixed framing (flag 0 = uncompressed, 4-byte big-endian length). */
export const ECHO_FRAMED = grpcFrame(ECHO_MESSAGE);

export function grpcFrame(message: Buffer): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(message.length, 1);
  return Buffer.concat([head, message]);
}

/** Writes the framed request body for h2load's `-d` into `file`; returns the path. */
export function writeGrpcRequest(file: string): string {
  fs.writeFileSync(file, ECHO_FRAMED);
  return file;
}

const id = (b: Buffer): Buffer => b;
const ECHO_DEFINITION: grpc.ServiceDefinition = {
  [GRPC_METHOD]: { path: GRPC_PATH, requestStream: false, responseStream: false, requestSerialize: id, requestDeserialize: id, responseSerialize: id, responseDeserialize: id, originalName: GRPC_METHOD },
};

export async function startGrpcUpstream(group: ProcessGroup, cpus?: string): Promise<Peer> {
  const port = await freePort();
  const proc = group.start('grpc-upstream', process.execPath, [import.meta.filename, String(port)], cpus === undefined ? {} : { cpus });
  await waitForPort(port, proc);
  return { name: 'grpc-upstream', port, proc };
}

export interface UnaryResult {
  /** grpc-status (0 = OK). */
  code: number;
  details: string;
  reply?: Buffer;
  /** Response headers (initial metadata), e.g. a header the plugin chain set. */
  headers: Record<string, string>;
}

/** One unary call to 127.0.0.1:port with the given request metadata; resolves with the status, never rejects on a gRPC error. */
export function grpcUnary(port: number, metadata: Record<string, string> = {}, timeoutMs = 5000): Promise<UnaryResult> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata)) md.set(k, v);
  const headers: Record<string, string> = {};
  return new Promise<UnaryResult>((resolve) => {
    const call = client.makeUnaryRequest(GRPC_PATH, id, id, ECHO_MESSAGE, md, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, reply?: Buffer) => {
      client.close();
      resolve(err ? { code: err.code, details: err.details, headers } : { code: 0, details: '', reply: reply!, headers });
    });
    call.on('metadata', (m: grpc.Metadata) => {
      for (const [k, v] of Object.entries(m.getMap())) headers[k] = String(v);
    });
  });
}

if (import.meta.main) {
  const port = Number(process.argv[2]);
  const server = new grpc.Server();
  server.addService(ECHO_DEFINITION, { [GRPC_METHOD]: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request) });
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err) => {
    if (err) {
      process.stderr.write(`grpc-upstream: ${err.message}\n`);
      process.exit(1);
    }
  });
  const stop = (): void => server.tryShutdown(() => process.exit(0));
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}
