// envoy.service.discovery.v3.AggregatedDiscoveryService on the node's gRPC server: one SotwStream or
// DeltaStream per call. A call on the unix socket, or with a valid bearer token, is authorized at once;
// otherwise the stream authorizes from its first request's node metadata (see stream.ts).

import * as grpc from '@grpc/grpc-js';
import { DeltaStream } from './delta.ts';
import type { EnvoyProtos } from './protos.ts';
import { grpcError, type GrpcServer, type Transport } from './server.ts';
import { SotwStream } from './sotw.ts';
import type { AdsStream, ClientStatus, NodeInfo, StreamDeps } from './stream.ts';
import type { RpcStatus, SotwRequest } from './ads-types.ts';
import { decodeDiscoveryRequest } from './wire.ts';

export const ADS_SERVICE = 'envoy.service.discovery.v3.AggregatedDiscoveryService';

export class AdsServer {
  readonly #deps: StreamDeps;
  readonly #streams = new Set<AdsStream>();

  constructor(deps: StreamDeps) {
    this.#deps = deps;
  }

  /** Adds the ADS service to both transports of `server`. */
  register(server: GrpcServer, protos: EnvoyProtos): void {
    const def = { ...protos.service(ADS_SERVICE) };
    // SotW requests are decoded by hand: their resource_names (thousands for an Envoy's EDS) are read only when they changed
    def.StreamAggregatedResources = {
      ...def.StreamAggregatedResources!,
      requestDeserialize: (buf: Buffer): SotwRequest => {
        const raw = decodeDiscoveryRequest(buf);
        return {
          ...raw,
          node: raw.node && protos.decode<NodeInfo>('envoy.config.core.v3.Node', raw.node),
          error_detail: raw.error_detail && protos.decode<RpcStatus>('google.rpc.Status', raw.error_detail),
        };
      },
    };
    server.addService(def, (transport) => ({
      StreamAggregatedResources: (call: grpc.ServerDuplexStream<unknown, unknown>) => this.#open(server, transport, call, 'sotw'),
      DeltaAggregatedResources: (call: grpc.ServerDuplexStream<unknown, unknown>) => this.#open(server, transport, call, 'delta'),
    }));
  }

  #open(server: GrpcServer, transport: Transport, call: grpc.ServerDuplexStream<unknown, unknown>, protocol: 'sotw' | 'delta'): void {
    const { principal, invalid } = server.authorize(transport, call.metadata);
    if (invalid) return void call.emit('error', grpcError(grpc.status.UNAUTHENTICATED, 'invalid bearer token'));
    const Ctor = protocol === 'sotw' ? SotwStream : DeltaStream;
    const stream = new Ctor(this.#deps, call, principal, (s) => this.#streams.delete(s));
    if (!stream.closed) this.#streams.add(stream);
  }

  /** Status of every authorized stream (GET /v1/xds). */
  clients(): ClientStatus[] {
    return [...this.#streams].filter((s) => s.authorized).map((s) => s.status());
  }

  closeAll(): void {
    for (const s of [...this.#streams]) s.close(grpcError(grpc.status.UNAVAILABLE, 'isomesh is shutting down'));
  }
}
