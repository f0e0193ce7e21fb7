// The xDS component's face: the node's gRPC server (ADS, and the seam other gRPC services such as
// ext_proc and the rate-limit service register through) and the one loader of Envoy protos.
export { GrpcServer, bearerToken, grpcError } from './server.ts';
export type { GrpcPrincipal, GrpcServerOptions, ImplementationFactory, TokenResolver, Transport } from './server.ts';
export { EXT, EnvoyProtos, OBJECT_OPTIONS, PROTO_FILES, PROTO_INCLUDE_DIRS, RESOURCE_KINDS, TYPE_URLS, TYPE_URL_PREFIX, duration, envoyProtos, structString } from './protos.ts';
export type { AnyMessage, ResourceKind } from './protos.ts';
