// W3C Trace Context (https://www.w3.org/TR/trace-context/) on the request path: parse the incoming
// `traceparent`, start a trace when it is absent or invalid, pick the request span's id and decide
// sampling. Called for every request, so it makes no SDK objects: ids are slices of a hex string
// made from a pool of crypto-random bytes (crypto.randomFillSync, 8 KiB at a time: one refill per
// 341 new traces), and sampling is arithmetic on the trace id.

import crypto from 'node:crypto';

export interface TraceContext {
  /** 32 lower-case hex digits. */
  traceId: string;
  /** 16 hex digits: the request span's id, and the parent id the upstream sees. */
  spanId: string;
  /** The caller's span (from a valid incoming traceparent). */
  parentSpanId: string | undefined;
  sampled: boolean;
  /** The traceparent to send upstream: "00-<traceId>-<spanId>-<flags>". */
  traceparent: string;
  /** The incoming tracestate, unchanged (only with a valid incoming traceparent). */
  tracestate: string | undefined;
}

/** What OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG say. */
export interface SamplerConfig {
  /** Decision for a trace this proxy starts (and, when not parentBased, for every trace). */
  root: 'always_on' | 'always_off' | 'traceidratio';
  /** Follow a valid incoming traceparent's sampled flag. */
  parentBased: boolean;
  /** 0..1, for traceidratio. */
  ratio: number;
}

export interface ParsedTraceparent {
  traceId: string;
  parentId: string;
  /** The trace-flags byte. */
  flags: number;
}

const FLAG_SAMPLED = 0x01;
/** Trace Context Level 2: the trace id's rightmost 7 bytes are random. Kept while the trace id is kept. */
const FLAG_RANDOM = 0x02;
const ZERO_SPAN = '0000000000000000';
const ZERO_TRACE = ZERO_SPAN + ZERO_SPAN;
/** 2^56: the span of the trace id's random part (its last 14 hex digits) the ratio sampler compares. */
const R_RANGE = 2 ** 56;

/** Lower-case hex digits at [from, to): the all-zero test is folded in (-1 = not hex, 0 = all zero, 1 = ok). */
function hexRun(s: string, from: number, to: number): -1 | 0 | 1 {
  let nonZero = false;
  for (let i = from; i < to; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x30 && c <= 0x39) {
      if (c !== 0x30) nonZero = true;
    } else if (c >= 0x61 && c <= 0x66) {
      nonZero = true;
    } else {
      return -1;
    }
  }
  return nonZero ? 1 : 0;
}

function hexByte(s: string, at: number): number {
  return parseInt(s.slice(at, at + 2), 16);
}

/**
 * A traceparent header value, or undefined when it is not one this proxy may continue (then the
 * trace restarts). Version 00 must be exactly 55 characters; a later version (not ff) is read by its
 * version-00 prefix and must have "-" or the end after the flags (W3C §4.3 "Versioning of traceparent").
 * Upper-case hex, all-zero ids and version ff are invalid.
 */
export function parseTraceparent(value: string | undefined): ParsedTraceparent | undefined {
  if (value === undefined) return undefined;
  let s = value;
  // HTTP parsers trim OWS; a caller that did not gets the same answer.
  const first = s.charCodeAt(0);
  const last = s.charCodeAt(s.length - 1);
  if (first === 0x20 || first === 0x09 || last === 0x20 || last === 0x09) s = s.trim();
  if (s.length < 55) return undefined;
  if (s.charCodeAt(2) !== 0x2d || s.charCodeAt(35) !== 0x2d || s.charCodeAt(52) !== 0x2d) return undefined;
  if (hexRun(s, 0, 2) < 0 || (s.charCodeAt(0) === 0x66 && s.charCodeAt(1) === 0x66)) return undefined;
  const version00 = s.charCodeAt(0) === 0x30 && s.charCodeAt(1) === 0x30;
  if (version00 ? s.length !== 55 : s.length > 55 && s.charCodeAt(55) !== 0x2d) return undefined;
  if (hexRun(s, 3, 35) !== 1 || hexRun(s, 36, 52) !== 1 || hexRun(s, 53, 55) < 0) return undefined;
  return { traceId: s.slice(3, 35), parentId: s.slice(36, 52), flags: hexByte(s, 53) };
}

/** The ratio sampler's decision for a trace id (OpenTelemetry's consistent probability sampling:
 *  sample when the 56-bit random part R ≥ (1 − ratio)·2^56), so every hop using it agrees. */
export function ratioSampled(traceId: string, ratio: number): boolean {
  if (ratio >= 1) return true;
  if (ratio <= 0) return false;
  const r = parseInt(traceId.slice(18, 24), 16) * 2 ** 32 + parseInt(traceId.slice(24, 32), 16);
  return r >= (1 - ratio) * R_RANGE;
}

const POOL_BYTES = 8192;

/** Random ids cut from one hex string per refill of crypto-random bytes. */
export class IdPool {
  readonly #bytes = Buffer.allocUnsafe(POOL_BYTES);
  #hex = '';
  #at = POOL_BYTES * 2;

  #take(chars: number): string {
    if (this.#at + chars > this.#hex.length) {
      crypto.randomFillSync(this.#bytes);
      this.#hex = this.#bytes.toString('hex');
      this.#at = 0;
    }
    const s = this.#hex.slice(this.#at, this.#at + chars);
    this.#at += chars;
    return s;
  }

  spanId(): string {
    let id = this.#take(16);
    while (id === ZERO_SPAN) id = this.#take(16);
    return id;
  }

  /** A random UUID (version 4 layout) from the same pool: cheaper than crypto.randomUUID per request. */
  uuid(): string {
    const h = this.#take(32);
    const variant = '89ab'[parseInt(h[16]!, 16) & 3]!;
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
  }

  traceId(): string {
    let id = this.#take(32);
    // An all-zero trace id is invalid; its odds are 2^-128, the check is one comparison.
    while (id === ZERO_TRACE) id = this.#take(32);
    return id;
  }
}

function flagsHex(flags: number): string {
  return flags === 0 ? '00' : flags === 1 ? '01' : flags === 2 ? '02' : '03';
}

/** Makes the per-request TraceContext (see trace()). */
export class TraceContextFactory {
  readonly #ids: IdPool;
  readonly #sampler: SamplerConfig;

  constructor(sampler: SamplerConfig, ids: IdPool = new IdPool()) {
    this.#sampler = sampler;
    this.#ids = ids;
  }

  get sampler(): SamplerConfig {
    return this.#sampler;
  }

  /** A random request id (UUID layout) from the id pool. */
  requestId(): string {
    return this.#ids.uuid();
  }

  #rootDecision(traceId: string): boolean {
    const s = this.#sampler;
    return s.root === 'always_on' ? true : s.root === 'always_off' ? false : ratioSampled(traceId, s.ratio);
  }

  /** Continue a valid incoming traceparent (tracestate passes through), else start a trace. */
  trace(traceparent: string | undefined, tracestate: string | undefined): TraceContext {
    const spanId = this.#ids.spanId();
    const parent = parseTraceparent(traceparent);
    if (parent) {
      const sampled = this.#sampler.parentBased ? (parent.flags & FLAG_SAMPLED) !== 0 : this.#rootDecision(parent.traceId);
      // Other flag bits than these two are not defined by version 00 and are not passed on.
      const flags = (sampled ? FLAG_SAMPLED : 0) | (parent.flags & FLAG_RANDOM);
      return {
        traceId: parent.traceId,
        spanId,
        parentSpanId: parent.parentId,
        sampled,
        traceparent: `00-${parent.traceId}-${spanId}-${flagsHex(flags)}`,
        tracestate: tracestate === '' ? undefined : tracestate,
      };
    }
    const traceId = this.#ids.traceId();
    const sampled = this.#rootDecision(traceId);
    return {
      traceId,
      spanId,
      parentSpanId: undefined,
      sampled,
      traceparent: `00-${traceId}-${spanId}-${sampled ? '03' : '02'}`,
      // A restarted trace does not carry the previous trace's vendor state: W3C has a vendor that
      // could not parse traceparent leave tracestate alone.
      tracestate: undefined,
    };
  }
}
