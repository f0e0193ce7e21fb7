// Hand-written protobuf encoding of the two ADS responses. Each resource is encoded once (as a
// google.protobuf.Any) when a snapshot is built; a response is those bytes spliced together with a
// few header fields, so pushing CDS/EDS state of the world for thousands of tenants to many clients
// costs a memcpy, not a re-encode per client. Field numbers: envoy/service/discovery/v3/discovery.proto.

const LEN = 2; // wire type: length-delimited

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

class Writer {
  readonly buf: Buffer;
  pos = 0;
  constructor(size: number) {
    this.buf = Buffer.allocUnsafe(size);
  }
  varint(n: number): void {
    while (n >= 0x80) {
      this.buf[this.pos++] = (n % 128) | 0x80;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
  }
  bytes(field: number, b: Uint8Array): void {
    this.varint((field << 3) | LEN);
    this.varint(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
  }
  string(field: number, s: string): void {
    if (s.length === 0) return; // proto3: an empty string is the default, not written
    this.bytes(field, Buffer.from(s));
  }
}

const fieldSize = (field: number, len: number): number => varintSize(field << 3) + varintSize(len) + len;
const strSize = (field: number, s: string): number => (s.length === 0 ? 0 : fieldSize(field, Buffer.byteLength(s)));

/** google.protobuf.Any { type_url = 1; value = 2 }. */
export function encodeAny(typeUrl: string, value: Uint8Array): Buffer {
  const w = new Writer(strSize(1, typeUrl) + fieldSize(2, value.length));
  w.string(1, typeUrl);
  w.bytes(2, value);
  return w.buf;
}

export interface SotwResponse {
  versionInfo: string;
  /** Encoded google.protobuf.Any messages. */
  resources: readonly Uint8Array[];
  typeUrl: string;
  nonce: string;
  /** Encoded config.core.v3.ControlPlane. */
  controlPlane?: Uint8Array;
}

/** DiscoveryResponse { version_info = 1; resources = 2; type_url = 4; nonce = 5; control_plane = 6 }. */
export function encodeDiscoveryResponse(r: SotwResponse): Buffer {
  let size = strSize(1, r.versionInfo) + strSize(4, r.typeUrl) + strSize(5, r.nonce);
  for (const a of r.resources) size += fieldSize(2, a.length);
  if (r.controlPlane) size += fieldSize(6, r.controlPlane.length);
  const w = new Writer(size);
  w.string(1, r.versionInfo);
  for (const a of r.resources) w.bytes(2, a);
  w.string(4, r.typeUrl);
  w.string(5, r.nonce);
  if (r.controlPlane) w.bytes(6, r.controlPlane);
  return w.buf;
}

export interface DeltaResource {
  name: string;
  version: string;
  /** Encoded google.protobuf.Any. */
  any: Uint8Array;
}

export interface DeltaResponse {
  systemVersionInfo: string;
  resources: readonly DeltaResource[];
  typeUrl: string;
  removed: readonly string[];
  nonce: string;
  controlPlane?: Uint8Array;
}

/** Resource { version = 1; resource = 2; name = 3 }. */
function resourceSize(r: DeltaResource): number {
  return strSize(1, r.version) + fieldSize(2, r.any.length) + strSize(3, r.name);
}

/**
 * DeltaDiscoveryResponse { system_version_info = 1; resources = 2; type_url = 4; nonce = 5;
 * removed_resources = 6; control_plane = 7 }.
 */
export function encodeDeltaResponse(r: DeltaResponse): Buffer {
  let size = strSize(1, r.systemVersionInfo) + strSize(4, r.typeUrl) + strSize(5, r.nonce);
  const sizes = r.resources.map(resourceSize);
  for (const s of sizes) size += fieldSize(2, s);
  for (const name of r.removed) size += fieldSize(6, Buffer.byteLength(name));
  if (r.controlPlane) size += fieldSize(7, r.controlPlane.length);
  const w = new Writer(size);
  w.string(1, r.systemVersionInfo);
  r.resources.forEach((res, i) => {
    w.varint((2 << 3) | LEN);
    w.varint(sizes[i]!);
    w.string(1, res.version);
    w.bytes(2, res.any);
    w.string(3, res.name);
  });
  w.string(4, r.typeUrl);
  w.string(5, r.nonce);
  for (const name of r.removed) w.bytes(6, Buffer.from(name));
  if (r.controlPlane) w.bytes(7, r.controlPlane);
  return w.buf;
}
