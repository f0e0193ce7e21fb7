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

// ---- requests -------------------------------------------------------------------------------

/**
 * resource_names of a DiscoveryRequest, decoded on demand: an Envoy ACKs every EDS response with its
 * whole subscription (thousands of names), and usually the same one; `key` (count + two 32-bit FNV
 * hashes of the bytes) lets the stream tell "unchanged" without building thousands of strings.
 */
export interface RequestNames {
  readonly count: number;
  readonly key: string;
  list(): string[];
}

export interface RawDiscoveryRequest {
  version_info: string;
  type_url: string;
  response_nonce: string;
  resource_names: RequestNames;
  /** Encoded config.core.v3.Node, when present (the first request of a stream). */
  node?: Buffer;
  /** Encoded google.rpc.Status, when present (a NACK). */
  error_detail?: Buffer;
}

/** DiscoveryRequest { version_info = 1; node = 2; resource_names = 3; type_url = 4; response_nonce = 5; error_detail = 6 }. */
export function decodeDiscoveryRequest(buf: Buffer): RawDiscoveryRequest {
  const out: RawDiscoveryRequest = { version_info: '', type_url: '', response_nonce: '', resource_names: EMPTY_NAMES };
  const ranges: number[] = [];
  let h1 = 0x811c9dc5;
  let h2 = 0x01000193;
  let pos = 0;
  const varint = (): number => {
    let n = 0;
    let mul = 1;
    for (;;) {
      if (pos >= buf.length) throw new Error('truncated DiscoveryRequest');
      const b = buf[pos++]!;
      n += (b & 0x7f) * mul;
      if (b < 0x80) return n;
      mul *= 128;
    }
  };
  while (pos < buf.length) {
    const tag = varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (wire === 0) {
      varint();
      continue;
    }
    if (wire === 1 || wire === 5) {
      pos += wire === 1 ? 8 : 4;
      continue;
    }
    if (wire !== 2) throw new Error(`unsupported wire type ${wire} in DiscoveryRequest`);
    const len = varint();
    const end = pos + len;
    if (end > buf.length) throw new Error('truncated DiscoveryRequest');
    switch (field) {
      case 1:
        out.version_info = buf.toString('utf8', pos, end);
        break;
      case 2:
        out.node = buf.subarray(pos, end);
        break;
      case 3:
        ranges.push(pos, end);
        for (let i = pos; i < end; i++) {
          h1 = Math.imul(h1 ^ buf[i]!, 0x01000193);
          h2 = Math.imul(h2 ^ buf[i]!, 0x5bd1e995) ^ (h2 >>> 15);
        }
        h1 = Math.imul(h1 ^ 0xff, 0x01000193); // name boundary
        break;
      case 4:
        out.type_url = buf.toString('utf8', pos, end);
        break;
      case 5:
        out.response_nonce = buf.toString('utf8', pos, end);
        break;
      case 6:
        out.error_detail = buf.subarray(pos, end);
        break;
    }
    pos = end;
  }
  if (ranges.length > 0) {
    const count = ranges.length / 2;
    out.resource_names = {
      count,
      key: `${count}:${(h1 >>> 0).toString(36)}:${(h2 >>> 0).toString(36)}`,
      list: () => {
        const names: string[] = new Array(count);
        for (let i = 0; i < count; i++) names[i] = buf.toString('utf8', ranges[2 * i]!, ranges[2 * i + 1]!);
        return names;
      },
    };
  }
  return out;
}

const EMPTY_NAMES: RequestNames = Object.freeze({ count: 0, key: '0', list: () => [] });
