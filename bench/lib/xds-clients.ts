// Child process of bench/xds.ts: Envoy-style ADS clients (wildcard CDS/LDS, every EDS/RDS name),
// each ACKing every response at once and reading only its header fields (version, nonce, count), as
// a fast client would. Runs apart from the control plane, as Envoys do. Protocol over IPC:
//   parent → {op: 'open', target, token, names: {eds, rds}, clients: [{id, delta}]}, {op: 'exit'}
//   child  → {ack: {client, type, version, count, at}}  (at: epoch ms, sub-millisecond)
import * as grpc from '@grpc/grpc-js';
import { envoyProtos } from '../../runtime/src/xds/index.ts';

const CDS = 'type.googleapis.com/envoy.config.cluster.v3.Cluster';
const EDS = 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment';
const LDS = 'type.googleapis.com/envoy.config.listener.v3.Listener';
const RDS = 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration';

interface Header {
  version: string;
  typeUrl: string;
  nonce: string;
  count: number;
}

/** Top-level fields of a (Delta)DiscoveryResponse, without decoding its resources. */
function readHeader(buf: Buffer, delta: boolean): Header {
  const h: Header = { version: '', typeUrl: '', nonce: '', count: 0 };
  let pos = 0;
  const varint = (): number => {
    let n = 0;
    let mul = 1;
    for (;;) {
      const b = buf[pos++]!;
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 128;
    }
  };
  while (pos < buf.length) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    if ((tag & 7) === 0) {
      varint();
      continue;
    }
    const len = varint();
    if (field === 1) h.version = buf.toString('utf8', pos, pos + len);
    else if (field === 2 || (delta && field === 6)) h.count++;
    else if (field === 4) h.typeUrl = buf.toString('utf8', pos, pos + len);
    else if (field === 5) h.nonce = buf.toString('utf8', pos, pos + len);
    pos += len;
  }
  return h;
}

const ads = envoyProtos().service('envoy.service.discovery.v3.AggregatedDiscoveryService');
const light: grpc.ServiceDefinition = {
  StreamAggregatedResources: { ...ads.StreamAggregatedResources!, responseDeserialize: (b: Buffer) => readHeader(b, false) },
  DeltaAggregatedResources: { ...ads.DeltaAggregatedResources!, responseDeserialize: (b: Buffer) => readHeader(b, true) },
};
const Ads = grpc.makeGenericClientConstructor(light, 'ADS');
const now = () => performance.timeOrigin + performance.now();
const clients: grpc.Client[] = [];

function open(target: string, token: string, id: string, delta: boolean, names: { eds: string[]; rds: string[] }): void {
  // Envoy's defaults: no practical message size limit, 256 MiB HTTP/2 windows
  const client = new Ads(target, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': 512 * 1024 * 1024, 'grpc-node.flow_control_window': 256 * 1024 * 1024 });
  clients.push(client);
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  const call = (client as unknown as Record<string, (m: grpc.Metadata) => grpc.ClientDuplexStream<object, Header>>)[delta ? 'DeltaAggregatedResources' : 'StreamAggregatedResources']!(md);
  const subs: Record<string, string[]> = { [CDS]: ['*'], [EDS]: names.eds, [LDS]: ['*'], [RDS]: names.rds };
  call.on('data', (h: Header) => {
    call.write(delta ? { type_url: h.typeUrl, response_nonce: h.nonce } : { type_url: h.typeUrl, response_nonce: h.nonce, version_info: h.version, resource_names: subs[h.typeUrl] });
    process.send!({ ack: { client: id, type: h.typeUrl, version: h.version, count: h.count, at: now() } });
  });
  call.on('error', () => {});
  const node = { id, user_agent_name: 'envoy' };
  for (const [type_url, n] of Object.entries(subs)) call.write(delta ? { node, type_url, resource_names_subscribe: n } : { node, type_url, resource_names: n });
}

process.on('message', (m: { op: string; target: string; token: string; names: { eds: string[]; rds: string[] }; clients: Array<{ id: string; delta: boolean }> }) => {
  if (m.op === 'exit') {
    for (const c of clients) c.close();
    process.exit(0);
  }
  if (m.op === 'open') for (const c of m.clients) open(m.target, m.token, c.id, c.delta, m.names);
});
process.on('disconnect', () => process.exit(0));
