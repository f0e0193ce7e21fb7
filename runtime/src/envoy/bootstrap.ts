// The Envoy bootstrap isomesh writes in envoy mode: ADS (SotW) over the node's gRPC unix socket to
// isomesh itself, listeners and clusters from LDS/CDS over that ADS stream, the admin interface on
// loopback only. Written as proto3 JSON (field names as in the protos), which Envoy reads for a `.json`
// config path; the daemon checks it decodes as envoy.config.bootstrap.v3.Bootstrap and passes PGV.
// Envoy sets node.user_agent_name ("envoy") itself: that is how the xDS server tells it from a
// proxyless client.

import { dataPlaneValidator, envoyProtos } from '../xds/index.ts';

const BOOTSTRAP = 'envoy.config.bootstrap.v3.Bootstrap';

/** The static cluster Envoy reaches isomesh's ADS on (CDS's `isomesh_grpc` serves ext_proc and RLS). */
export const XDS_CLUSTER = 'isomesh_xds';
const HTTP_OPTIONS = 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions';

export interface BootstrapOptions {
  nodeId: string;
  cluster: string;
  /** <stateDir>/grpc.sock */
  socketPath: string;
  adminPort: number;
}

export function envoyBootstrap(o: BootstrapOptions): Record<string, unknown> {
  const ads = { ads: {}, resource_api_version: 'V3' };
  return {
    node: { id: o.nodeId, cluster: o.cluster },
    dynamic_resources: {
      ads_config: {
        api_type: 'GRPC',
        transport_api_version: 'V3',
        grpc_services: [{ envoy_grpc: { cluster_name: XDS_CLUSTER } }],
        set_node_on_first_message_only: true,
      },
      lds_config: ads,
      cds_config: ads,
    },
    static_resources: {
      clusters: [
        {
          name: XDS_CLUSTER,
          type: 'STATIC',
          connect_timeout: { seconds: 1, nanos: 0 },
          load_assignment: {
            cluster_name: XDS_CLUSTER,
            endpoints: [{ lb_endpoints: [{ endpoint: { address: { pipe: { path: o.socketPath } } } }] }],
          },
          typed_extension_protocol_options: {
            [HTTP_OPTIONS]: { '@type': `type.googleapis.com/${HTTP_OPTIONS}`, explicit_http_config: { http2_protocol_options: {} } },
          },
        },
      ],
    },
    // Loopback only: the admin interface can drain and stop Envoy.
    admin: { address: { socket_address: { address: '127.0.0.1', port_value: o.adminPort } } },
  };
}

/**
 * Why Envoy would refuse this bootstrap: it must encode as envoy.config.bootstrap.v3.Bootstrap (unknown
 * fields and bad enum names throw) and, decoded again, pass protoc-gen-validate's rules; [] when fine.
 */
export function bootstrapErrors(b: Record<string, unknown>): string[] {
  const protos = envoyProtos();
  let bytes: Uint8Array;
  try {
    bytes = protos.encode(BOOTSTRAP, b);
  } catch (err) {
    return [(err as Error).message];
  }
  return dataPlaneValidator(protos).validate(BOOTSTRAP, protos.decode(BOOTSTRAP, bytes));
}
