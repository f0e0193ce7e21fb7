// The request messages as the service definitions decode them (proto-loader's object shape).
import type { NodeInfo } from './stream.ts';
import type { RequestNames } from './wire.ts';

export interface RpcStatus {
  code?: number;
  message?: string;
}

/** A SotW DiscoveryRequest as ads.ts decodes it (resource_names read on demand). */
export interface SotwRequest {
  version_info: string;
  node?: NodeInfo;
  resource_names: RequestNames;
  type_url: string;
  response_nonce: string;
  error_detail?: RpcStatus;
}

export interface DeltaDiscoveryRequest {
  node?: NodeInfo;
  type_url?: string;
  resource_names_subscribe?: string[];
  resource_names_unsubscribe?: string[];
  initial_resource_versions?: Record<string, string>;
  response_nonce?: string;
  error_detail?: RpcStatus;
}
