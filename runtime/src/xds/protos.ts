// One loader for every Envoy proto isomesh speaks: the Envoy API files vendored in @grpc/grpc-js-xds
// (deps/envoy-api, xds, googleapis, protoc-gen-validate), parsed once into a protobufjs Root with the
// include-path and well-known-type setup @grpc/proto-loader uses. From that one Root come
//   - gRPC service definitions (service()) whose messages have proto-loader's object shape
//     (keepCase field names, enums and 64-bit integers as strings, oneof names set, no defaults),
//   - encode/decode of any message, and pack/unpack of google.protobuf.Any payloads,
//   - the field options (protoc-gen-validate rules) that pgv.ts checks resources against.
// Building proto-loader's PackageDefinition for the whole Envoy API would describe ~360 message types
// nobody calls (≈ 2× the load time), so service definitions are made here from the same Root.

import fs from 'node:fs';
import path from 'node:path';
import type { MethodDefinition, ServiceDefinition } from '@grpc/grpc-js';
import '@grpc/proto-loader'; // registers google/protobuf/descriptor.proto & co. with protobufjs (as proto-loader loads them)
import protobuf from 'protobufjs';
import { MessageEncoder } from './encoder.ts';

const DEPS = path.resolve(import.meta.dirname, '../../../node_modules/@grpc/grpc-js-xds/deps');
export const PROTO_INCLUDE_DIRS: readonly string[] = ['envoy-api', 'xds', 'googleapis', 'protoc-gen-validate'].map((d) => path.join(DEPS, d));

/** Every file isomesh needs; their imports come along. */
export const PROTO_FILES: readonly string[] = [
  'envoy/service/discovery/v3/ads.proto',
  'envoy/service/ext_proc/v3/external_processor.proto',
  'envoy/service/ratelimit/v3/rls.proto',
  'envoy/config/bootstrap/v3/bootstrap.proto',
  'envoy/config/listener/v3/listener.proto',
  'envoy/config/route/v3/route.proto',
  'envoy/config/cluster/v3/cluster.proto',
  'envoy/config/endpoint/v3/endpoint.proto',
  // extension types the translator emits (typed_config / typed_extension_protocol_options / per-route)
  'envoy/extensions/filters/network/http_connection_manager/v3/http_connection_manager.proto',
  'envoy/extensions/filters/http/router/v3/router.proto',
  'envoy/extensions/filters/http/ext_proc/v3/ext_proc.proto',
  'envoy/extensions/filters/http/ratelimit/v3/rate_limit.proto',
  'envoy/extensions/filters/http/local_ratelimit/v3/local_rate_limit.proto',
  'envoy/extensions/upstreams/http/v3/http_protocol_options.proto',
  'envoy/extensions/http/early_header_mutation/header_mutation/v3/header_mutation.proto',
  'google/rpc/status.proto',
];

export const TYPE_URL_PREFIX = 'type.googleapis.com/';

/** xDS resource type URLs served over ADS. */
export const TYPE_URLS = Object.freeze({
  listener: 'type.googleapis.com/envoy.config.listener.v3.Listener',
  route: 'type.googleapis.com/envoy.config.route.v3.RouteConfiguration',
  cluster: 'type.googleapis.com/envoy.config.cluster.v3.Cluster',
  endpoint: 'type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment',
});
export type ResourceKind = keyof typeof TYPE_URLS;
export const RESOURCE_KINDS: readonly ResourceKind[] = ['cluster', 'endpoint', 'listener', 'route'];

/** Fully qualified message names of the extension types isomesh emits. */
export const EXT = Object.freeze({
  hcm: 'envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager',
  router: 'envoy.extensions.filters.http.router.v3.Router',
  extProc: 'envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor',
  extProcPerRoute: 'envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute',
  rateLimit: 'envoy.extensions.filters.http.ratelimit.v3.RateLimit',
  httpProtocolOptions: 'envoy.extensions.upstreams.http.v3.HttpProtocolOptions',
});

/** A google.protobuf.Any on the wire. */
export interface AnyMessage {
  type_url: string;
  value: Uint8Array;
}

/**
 * toObject options matching @grpc/proto-loader's
 * `{ keepCase: true, longs: String, enums: String, defaults: false, oneofs: true }`.
 */
export const OBJECT_OPTIONS: protobuf.IConversionOptions = Object.freeze({ longs: String, enums: String, defaults: false, oneofs: true });

function loadRoot(): protobuf.Root {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => {
    if (path.isAbsolute(target)) return target;
    for (const dir of PROTO_INCLUDE_DIRS) {
      const full = path.join(dir, target);
      if (fs.existsSync(full)) return full;
    }
    return target; // google/protobuf/*.proto: served from protobufjs' common definitions
  };
  root.loadSync([...PROTO_FILES], { keepCase: true });
  root.resolveAll();
  return root;
}

export class EnvoyProtos {
  readonly root: protobuf.Root;
  readonly #types = new Map<string, protobuf.Type>();
  readonly #encoder: MessageEncoder;

  constructor(root: protobuf.Root = loadRoot()) {
    this.root = root;
    this.#encoder = new MessageEncoder(root);
  }

  /** The message type by fully qualified name (with or without a type URL prefix); throws when unknown. */
  type(name: string): protobuf.Type {
    const key = name.startsWith(TYPE_URL_PREFIX) ? name.slice(TYPE_URL_PREFIX.length) : name.replace(/^.*\//, '');
    let t = this.#types.get(key);
    if (t === undefined) {
      t = this.root.lookupType(key);
      this.#types.set(key, t);
    }
    return t;
  }

  /** Whether a message type of this name (or type URL) is loaded. */
  has(name: string): boolean {
    try {
      this.type(name);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Encodes a plain object (proto field names; enums by name; nested Any either as {type_url, value}
   * or as {"@type": "type.googleapis.com/<name>", ...fields}) as message `name`.
   */
  encode(name: string, obj: object): Uint8Array {
    return this.#encoder.encode(name, obj as Record<string, unknown>);
  }

  /** protobufjs' own fromObject + encode (slower; the reference encode() is tested against). */
  encodeWithProtobufjs(name: string, obj: object): Uint8Array {
    const t = this.type(name);
    return t.encode(t.fromObject(obj as Record<string, unknown>)).finish();
  }

  /** Decodes bytes of message `name` into proto-loader's object shape (nested Any left packed). */
  decode<T = Record<string, unknown>>(name: string, bytes: Uint8Array): T {
    const t = this.type(name);
    return t.toObject(t.decode(bytes), OBJECT_OPTIONS) as T;
  }

  /** Packs `obj` as a google.protobuf.Any of message `name`. */
  pack(name: string, obj: object): AnyMessage {
    const t = this.type(name);
    return { type_url: TYPE_URL_PREFIX + t.fullName.slice(1), value: this.encode(name, obj) };
  }

  /** Unpacks an Any into {typeName, message}; throws when the type is not loaded. */
  unpack<T = Record<string, unknown>>(any: AnyMessage): { typeName: string; message: T } {
    const t = this.type(any.type_url);
    return { typeName: t.fullName.slice(1), message: t.toObject(t.decode(any.value), OBJECT_OPTIONS) as T };
  }

  /**
   * Decodes a message with every nested Any expanded to {"@type", ...fields} (protobufjs' JSON mapping;
   * bytes as base64, enums by name): for tests, status pages and debugging.
   */
  toJSON(name: string, bytes: Uint8Array): Record<string, unknown> {
    const t = this.type(name);
    return t.toObject(t.decode(bytes), { ...OBJECT_OPTIONS, json: true }) as Record<string, unknown>;
  }

  /**
   * A @grpc/grpc-js service definition for `fullName` (e.g. "envoy.service.ext_proc.v3.ExternalProcessor").
   * Serializers accept a plain object, or an already encoded Buffer/Uint8Array passed through as is
   * (the ADS server encodes its large responses itself).
   */
  service(fullName: string): ServiceDefinition {
    const svc = this.root.lookupService(fullName);
    const def: Record<string, MethodDefinition<unknown, unknown>> = {};
    for (const m of svc.methodsArray) {
      m.resolve();
      const req = m.resolvedRequestType!;
      const res = m.resolvedResponseType!;
      def[m.name] = {
        path: `/${fullName}/${m.name}`,
        requestStream: m.requestStream === true,
        responseStream: m.responseStream === true,
        requestSerialize: serializer(req),
        requestDeserialize: deserializer(req),
        responseSerialize: serializer(res),
        responseDeserialize: deserializer(res),
        originalName: m.name.charAt(0).toLowerCase() + m.name.slice(1),
      };
    }
    return def as ServiceDefinition;
  }
}

function serializer(t: protobuf.Type): (value: unknown) => Buffer {
  return (value) => {
    if (value instanceof Uint8Array) return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      throw new TypeError(`cannot serialize ${Array.isArray(value) ? 'an array' : typeof value} as ${t.fullName.slice(1)}`);
    }
    const bytes = t.encode(t.fromObject(value as Record<string, unknown>)).finish();
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer(t: protobuf.Type): (bytes: Buffer) => unknown {
  return (bytes) => t.toObject(t.decode(bytes), OBJECT_OPTIONS);
}

let shared: EnvoyProtos | undefined;

/** The process-wide loader (parsed on first use, ≈ 100 ms). */
export function envoyProtos(): EnvoyProtos {
  shared ??= new EnvoyProtos();
  return shared;
}

/** google.protobuf.Duration from milliseconds. */
export function duration(ms: number): { seconds: number; nanos: number } {
  const seconds = Math.floor(ms / 1000);
  return { seconds, nanos: Math.round((ms - seconds * 1000) * 1e6) };
}

/**
 * Reads a string field of a decoded google.protobuf.Struct (e.g. node.metadata["isomesh.token"]).
 * The well-known types come from protobufjs' bundled definitions, whose Value fields are camelCase
 * (`stringValue`), as every @grpc/proto-loader user sees them.
 */
export function structString(struct: unknown, key: string): string | undefined {
  const fields = (struct as { fields?: Record<string, { stringValue?: unknown }> } | undefined)?.fields;
  const v = fields?.[key]?.stringValue;
  return typeof v === 'string' ? v : undefined;
}
