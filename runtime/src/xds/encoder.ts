// A protobuf encoder for the translator's plain objects, compiled once per message type from the
// protobufjs reflection (field numbers, types, oneofs). It replaces protobufjs' fromObject + encode on
// the snapshot build path, where they cost ~100 µs per resource (an op object per field, a namespace
// lookup per Any): here a size pass fills a per-call size cache and a write pass fills one Buffer.
// Input: proto field names; enums by name or number; 64-bit integers as numbers or decimal strings;
// bytes as Uint8Array (or base64); nested Any as {"@type", ...fields} or {type_url, value}; maps as
// objects. Every present field is written (zeros included, so oneof members keep their presence).

import protobuf from 'protobufjs';

type Obj = Record<string, unknown>;

const WIRE = { varint: 0, fixed64: 1, len: 2, fixed32: 5 } as const;

interface FieldCodec {
  name: string;
  tag: number;
  tagSize: number;
  repeated: boolean;
  packed: boolean;
  map: boolean;
  /** Scalar kind, "enum" or "message". */
  kind: string;
  enumValues?: Record<string, number>;
  message?: MessageCodec;
  mapKey?: FieldCodec;
  mapValue?: FieldCodec;
}

interface MessageCodec {
  fullName: string;
  fields: Record<string, FieldCodec | undefined>;
  isAny: boolean;
}

function varintSize(n: number): number {
  if (n < 0) return 10;
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

const SCALAR_WIRE: Record<string, number> = {
  double: WIRE.fixed64, float: WIRE.fixed32, int32: WIRE.varint, int64: WIRE.varint, uint32: WIRE.varint, uint64: WIRE.varint,
  sint32: WIRE.varint, sint64: WIRE.varint, fixed32: WIRE.fixed32, fixed64: WIRE.fixed64, sfixed32: WIRE.fixed32, sfixed64: WIRE.fixed64,
  bool: WIRE.varint, enum: WIRE.varint, string: WIRE.len, bytes: WIRE.len, message: WIRE.len,
};

function toNumber(v: unknown): number {
  return typeof v === 'string' ? Number(v) : typeof v === 'boolean' ? (v ? 1 : 0) : (v as number);
}

function bytesOf(v: unknown): Uint8Array {
  return typeof v === 'string' ? Buffer.from(v, 'base64') : (v as Uint8Array);
}

export class MessageEncoder {
  readonly #root: protobuf.Root;
  readonly #codecs = new Map<protobuf.Type, MessageCodec>();
  readonly #byName = new Map<string, MessageCodec>();

  constructor(root: protobuf.Root) {
    this.#root = root;
  }

  /** Encodes `obj` as message `name` (fully qualified, or a type URL). */
  encode(name: string, obj: Obj): Buffer {
    const codec = this.#named(name);
    const sizes: Sizes = { list: [], next: 0 };
    const tagged = '@type' in obj; // the object of an Any written with its "@type": encode its fields
    const w: Out = { buf: Buffer.allocUnsafe(this.#size(codec, obj, sizes, tagged)), pos: 0 };
    this.#write(codec, obj, sizes, w, tagged);
    return w.buf;
  }

  #named(name: string): MessageCodec {
    let c = this.#byName.get(name);
    if (!c) {
      c = this.#codec(this.#root.lookupType(name.slice(name.lastIndexOf('/') + 1)));
      this.#byName.set(name, c);
    }
    return c;
  }

  #codec(t: protobuf.Type): MessageCodec {
    let c = this.#codecs.get(t);
    if (c) return c;
    c = { fullName: t.fullName.slice(1), fields: Object.create(null), isAny: t.fullName === '.google.protobuf.Any' };
    this.#codecs.set(t, c); // before the fields: types may be recursive
    for (const f of t.fieldsArray) {
      f.resolve();
      c.fields[f.name] = this.#field(f, f.id);
    }
    return c;
  }

  #field(f: protobuf.Field, id: number): FieldCodec {
    const rt = f.resolvedType;
    const kind = rt instanceof protobuf.Type ? 'message' : rt instanceof protobuf.Enum ? 'enum' : f.type;
    const map = f instanceof protobuf.MapField;
    const wire = map ? WIRE.len : SCALAR_WIRE[kind]!;
    const packed = f.repeated && !map && wire !== WIRE.len && f.packed;
    const tag = (id << 3) | (packed ? WIRE.len : wire);
    const fc: FieldCodec = { name: f.name, tag, tagSize: varintSize(tag), repeated: f.repeated && !map, packed, map, kind };
    if (rt instanceof protobuf.Enum) fc.enumValues = rt.values;
    if (rt instanceof protobuf.Type) fc.message = this.#codec(rt);
    if (map) {
      const mf = f as protobuf.MapField;
      const keyKind = mf.keyType;
      const keyTag = (1 << 3) | SCALAR_WIRE[keyKind]!;
      fc.mapKey = { name: 'key', tag: keyTag, tagSize: 1, repeated: false, packed: false, map: false, kind: keyKind };
      const value = new protobuf.Field('value', 2, mf.type);
      value.parent = f.parent;
      value.resolve();
      fc.mapValue = this.#field(value, 2);
    }
    return fc;
  }

  #enumNumber(fc: FieldCodec, v: unknown): number {
    if (typeof v === 'number') return v;
    const n = fc.enumValues![String(v)];
    if (n === undefined) throw new TypeError(`${fc.name}: ${JSON.stringify(v)} is not an enum value`);
    return n;
  }

  /** Size of one scalar value, without its tag. */
  #scalarSize(fc: FieldCodec, v: unknown): number {
    switch (fc.kind) {
      case 'string': {
        const n = Buffer.byteLength(v as string);
        return varintSize(n) + n;
      }
      case 'bytes': {
        const n = bytesOf(v).length;
        return varintSize(n) + n;
      }
      case 'bool':
        return 1;
      case 'enum':
        return varintSize(this.#enumNumber(fc, v));
      case 'double':
      case 'fixed64':
      case 'sfixed64':
        return 8;
      case 'float':
      case 'fixed32':
      case 'sfixed32':
        return 4;
      case 'sint32':
      case 'sint64':
        return varintSize(zigzag(toNumber(v)));
      default:
        return varintSize(toNumber(v));
    }
  }

  /** Body size of a message (for an {"@type"} Any: its type_url and value fields); cached in `sizes`. */
  #size(codec: MessageCodec, obj: Obj, sizes: Sizes, anyBody = false): number {
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new TypeError(`${codec.fullName}: expected an object`);
    const slot = sizes.list.length;
    sizes.list.push(0); // pre-order: the write pass meets messages in the same order
    let size = 0;
    if (codec.isAny && !anyBody && typeof obj['@type'] === 'string') {
      const typeUrl = obj['@type'];
      const valueSize = this.#size(this.#named(typeUrl), obj, sizes, true);
      const urlLen = Buffer.byteLength(typeUrl);
      size = 1 + varintSize(urlLen) + urlLen + 1 + varintSize(valueSize) + valueSize;
    } else {
      for (const key in obj) {
        const v = obj[key];
        if (v === undefined || v === null) continue;
        const fc = codec.fields[key];
        if (!fc) {
          if (key === '@type' && anyBody) continue;
          throw new TypeError(`${codec.fullName} has no field "${key}"`);
        }
        size += this.#fieldSize(fc, v, sizes);
      }
    }
    sizes.list[slot] = size;
    return size;
  }

  #entrySize(fc: FieldCodec, k: string, val: unknown, sizes: Sizes): number {
    return 1 + this.#scalarSize(fc.mapKey!, k) + fc.mapValue!.tagSize + this.#oneSize(fc.mapValue!, val, sizes);
  }

  #fieldSize(fc: FieldCodec, v: unknown, sizes: Sizes): number {
    if (fc.map) {
      let size = 0;
      for (const k in v as Obj) {
        const entry = this.#entrySize(fc, k, (v as Obj)[k], sizes);
        size += fc.tagSize + varintSize(entry) + entry;
      }
      return size;
    }
    if (fc.repeated) {
      if (!Array.isArray(v)) throw new TypeError(`${fc.name}: expected a list`);
      if (fc.packed) {
        if (v.length === 0) return 0;
        let body = 0;
        for (const x of v) body += this.#scalarSize(fc, x);
        return fc.tagSize + varintSize(body) + body;
      }
      let size = 0;
      for (const x of v) size += fc.tagSize + this.#oneSize(fc, x, sizes);
      return size;
    }
    return fc.tagSize + this.#oneSize(fc, v, sizes);
  }

  /** Size of one value without its tag (a message's length prefix included). */
  #oneSize(fc: FieldCodec, v: unknown, sizes: Sizes): number {
    if (fc.kind !== 'message') return this.#scalarSize(fc, v);
    const body = this.#size(fc.message!, v as Obj, sizes);
    return varintSize(body) + body;
  }

  /** Writes a message body; its own slot in `sizes` was consumed by the caller (or is the root's). */
  #write(codec: MessageCodec, obj: Obj, sizes: Sizes, w: Out, anyBody = false): void {
    if (codec.isAny && !anyBody && typeof obj['@type'] === 'string') {
      const typeUrl = obj['@type'];
      writeVarint(w, (1 << 3) | WIRE.len);
      writeString(w, typeUrl);
      writeVarint(w, (2 << 3) | WIRE.len);
      writeVarint(w, sizes.list[++sizes.next]!);
      this.#write(this.#named(typeUrl), obj, sizes, w, true);
      return;
    }
    for (const key in obj) {
      const v = obj[key];
      if (v === undefined || v === null) continue;
      const fc = codec.fields[key];
      if (!fc) continue; // "@type" of an Any body
      if (fc.map) {
        for (const k in v as Obj) {
          const val = (v as Obj)[k];
          writeVarint(w, fc.tag);
          writeVarint(w, this.#entrySize(fc, k, val, sizes));
          writeVarint(w, fc.mapKey!.tag);
          this.#writeScalar(fc.mapKey!, k, w);
          writeVarint(w, fc.mapValue!.tag);
          this.#writeOne(fc.mapValue!, val, sizes, w);
        }
      } else if (fc.repeated) {
        const list = v as unknown[];
        if (fc.packed) {
          if (list.length === 0) continue;
          let body = 0;
          for (const x of list) body += this.#scalarSize(fc, x);
          writeVarint(w, fc.tag);
          writeVarint(w, body);
          for (const x of list) this.#writeScalar(fc, x, w);
        } else {
          for (const x of list) {
            writeVarint(w, fc.tag);
            this.#writeOne(fc, x, sizes, w);
          }
        }
      } else {
        writeVarint(w, fc.tag);
        this.#writeOne(fc, v, sizes, w);
      }
    }
  }

  #writeOne(fc: FieldCodec, v: unknown, sizes: Sizes, w: Out): void {
    if (fc.kind !== 'message') return this.#writeScalar(fc, v, w);
    writeVarint(w, sizes.list[++sizes.next]!);
    this.#write(fc.message!, v as Obj, sizes, w);
  }

  #writeScalar(fc: FieldCodec, v: unknown, w: Out): void {
    switch (fc.kind) {
      case 'string':
        return writeString(w, v as string);
      case 'bytes': {
        const b = bytesOf(v);
        writeVarint(w, b.length);
        w.buf.set(b, w.pos);
        w.pos += b.length;
        return;
      }
      case 'bool':
        w.buf[w.pos++] = v ? 1 : 0;
        return;
      case 'enum':
        return writeVarint(w, this.#enumNumber(fc, v));
      case 'double':
        w.pos = w.buf.writeDoubleLE(toNumber(v), w.pos);
        return;
      case 'float':
        w.pos = w.buf.writeFloatLE(toNumber(v), w.pos);
        return;
      case 'fixed32':
        w.pos = w.buf.writeUInt32LE(toNumber(v), w.pos);
        return;
      case 'sfixed32':
        w.pos = w.buf.writeInt32LE(toNumber(v), w.pos);
        return;
      case 'fixed64':
        w.pos = w.buf.writeBigUInt64LE(BigInt(v as number | string), w.pos);
        return;
      case 'sfixed64':
        w.pos = w.buf.writeBigInt64LE(BigInt(v as number | string), w.pos);
        return;
      case 'sint32':
      case 'sint64':
        return writeVarint(w, zigzag(toNumber(v)));
      default:
        return writeVarint(w, toNumber(v));
    }
  }
}

const zigzag = (n: number): number => (n >= 0 ? n * 2 : -n * 2 - 1);

/** Message body sizes in pre-order (the size pass fills them, the write pass reads them in turn). */
interface Sizes {
  list: number[];
  next: number;
}

interface Out {
  buf: Buffer;
  pos: number;
}

function writeVarint(w: Out, n: number): void {
  if (n < 0) {
    // negative int32/int64: ten bytes of two's complement
    let b = BigInt.asUintN(64, BigInt(n));
    for (let i = 0; i < 9; i++) {
      w.buf[w.pos++] = Number(b & 0x7fn) | 0x80;
      b >>= 7n;
    }
    w.buf[w.pos++] = Number(b);
    return;
  }
  while (n >= 0x80) {
    w.buf[w.pos++] = (n % 128) | 0x80;
    n = Math.floor(n / 128);
  }
  w.buf[w.pos++] = n;
}

function writeString(w: Out, s: string): void {
  const n = Buffer.byteLength(s);
  writeVarint(w, n);
  w.pos += w.buf.write(s, w.pos, 'utf8');
}
