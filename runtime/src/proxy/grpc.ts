// gRPC semantics on top of HTTP/2 (API.md "Protocols"): a request is gRPC when its content-type is
// application/grpc*; its grpc-timeout bounds the wait; errors isomesh makes itself are answered as
// gRPC (HTTP 200, "trailers-only": grpc-status and grpc-message in the one HEADERS frame), with the
// x-isomesh-error code in grpc-message.

/** gRPC status codes used here. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

export function isGrpc(contentType: string | undefined): boolean {
  return contentType !== undefined && /^application\/grpc(\+|;|$)/i.test(contentType);
}

const UNITS: Record<string, number> = { H: 3_600_000, M: 60_000, S: 1000, m: 1, u: 0.001, n: 0.000001 };

/** grpc-timeout ("100m", "5S", at most 8 digits) in ms; undefined when absent or malformed. */
export function grpcTimeoutMs(value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const m = /^(\d{1,8})([HMSmun])$/.exec(value.trim());
  if (m === null) return undefined;
  return Math.max(1, Math.ceil(Number(m[1]) * UNITS[m[2]!]!));
}

/**
 * The gRPC status for an answer isomesh makes with this HTTP status and isomesh code: timeouts →
 * DEADLINE_EXCEEDED, quota and rate limits (429) → RESOURCE_EXHAUSTED, 401 → UNAUTHENTICATED,
 * 403 → PERMISSION_DENIED, no route / no endpoint / upstream failures / a closed chain failure
 * (503, 502, 404) → UNAVAILABLE; the rest by gRPC's HTTP mapping.
 */
export function grpcStatusFor(status: number, code?: string): number {
  if (code === 'ISOMESH_ERR_PROXY_UPSTREAM_TIMEOUT' || status === 504 || status === 408) return GrpcStatus.DEADLINE_EXCEEDED;
  if (status === 429) return GrpcStatus.RESOURCE_EXHAUSTED;
  if (status === 401) return GrpcStatus.UNAUTHENTICATED;
  if (status === 403) return GrpcStatus.PERMISSION_DENIED;
  if (status === 404 || status === 502 || status === 503) return GrpcStatus.UNAVAILABLE;
  if (status === 400 || status === 431) return GrpcStatus.INTERNAL;
  if (status === 413) return GrpcStatus.RESOURCE_EXHAUSTED;
  if (status === 501) return GrpcStatus.UNIMPLEMENTED;
  if (status >= 200 && status < 300) return GrpcStatus.OK;
  return GrpcStatus.UNKNOWN;
}

/** grpc-message is percent-encoded (gRPC's HTTP/2 protocol spec): printable ASCII but "%" as is. */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/** Headers of a trailers-only gRPC answer (HTTP 200): [name, value, ...]. */
export function grpcTrailersOnly(grpcStatus: number, message: string, extra: string[]): string[] {
  return ['content-type', 'application/grpc', 'grpc-status', String(grpcStatus), 'grpc-message', encodeGrpcMessage(message), ...extra];
}
