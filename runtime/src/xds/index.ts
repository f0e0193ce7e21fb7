// The xDS component's face: the node's gRPC server (ADS, and the seam other gRPC services such as
// ext_proc and the rate-limit service register through), the one loader of Envoy protos, and the
// control plane that turns TenantConfigs into xDS resources.
export { GrpcServer, bearerToken, grpcError } from './server.ts';
export type { GrpcPrincipal, GrpcServerOptions, ImplementationFactory, TokenResolver, Transport } from './server.ts';
export { EXT, EnvoyProtos, OBJECT_OPTIONS, PROTO_FILES, PROTO_INCLUDE_DIRS, RESOURCE_KINDS, TYPE_URLS, TYPE_URL_PREFIX, duration, envoyProtos, structString } from './protos.ts';
export type { AnyMessage, ResourceKind } from './protos.ts';
export { XdsControlPlane } from './control-plane.ts';
export type { XdsControlPlaneOptions, XdsStatus } from './control-plane.ts';
export {
  GRPC_CLUSTER,
  ROUTE_METADATA,
  SERVICE_METADATA,
  TENANT_METADATA,
  UPSTREAM_HEADER,
  apiListenerName,
  clusterName,
  listenerName,
  routeConfigName,
} from './translate.ts';
export type { Flavor, NodeFacts } from './translate.ts';
export { ExtProcServer, DEFAULT_MAX_STREAMS, EXT_PROC_SERVICE } from './ext-proc.ts';
export type { ExtProcOptions } from './ext-proc.ts';
export { REQUEST_ATTRIBUTES } from './ext-proc-wire.ts';
export { RateLimitService, RLS_SERVICE } from './rls.ts';
export type { RateLimitServiceOptions } from './rls.ts';
export { dataPlaneValidator } from './validate.ts';
