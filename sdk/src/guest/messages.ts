// The per-call objects a hook receives (req, res) and the metric recorder behind ctx.metrics. Methods
// live on prototypes, so a call that uses neither body nor metrics allocates nothing for them.

import type { BodyInit, MetricLabels, PluginHeaders, PluginMetrics, PluginRequest, PluginResponse } from '../types.ts';
import { base64Decode, base64Encode, bodyBytes, utf8Decode } from './bytes.ts';
import { GUEST_LIMITS, type MetricOp, type WireRequest, type WireResponse } from './protocol.ts';

/** A call's body state: what the host sent (base64), and what the plugin replaced it with. */
export class BodyState {
  /** Declared limit for this direction; 0 = not declared. */
  readonly limit: number;
  readonly #what: string;
  #wire: string | undefined;
  #bytes: Uint8Array | undefined;
  /** Set by setBody(): base64 of the new body. */
  replaced: string | undefined;

  constructor(limit: number, wire: string | undefined, what: 'request' | 'response') {
    this.limit = limit;
    this.#wire = wire;
    this.#what = what;
  }

  #check(method: string): void {
    if (this.limit === 0) {
      throw new TypeError(
        `${this.#what === 'request' ? 'req' : 'res'}.${method}(): this plugin did not declare body access; ` +
          `add body: { ${this.#what}: maxBytes } to definePlugin({...})`,
      );
    }
  }

  bytes(method: string): Uint8Array {
    this.#check(method);
    if (this.#bytes === undefined) {
      this.#bytes = this.#wire === undefined || this.#wire === '' ? new Uint8Array(0) : base64Decode(this.#wire);
      this.#wire = undefined;
    }
    return this.#bytes;
  }

  set(value: BodyInit): void {
    this.#check('setBody');
    const over = (n: number): RangeError =>
      new RangeError(`${this.#what === 'request' ? 'req' : 'res'}.setBody(): ${n} bytes is over the declared body.${this.#what} limit of ${this.limit}`);
    // Before encoding or copying: a string has at least one UTF-8 byte per UTF-16 unit.
    const floor = typeof value === 'string' ? value.length : value instanceof ArrayBuffer || ArrayBuffer.isView(value) ? value.byteLength : 0;
    if (floor > this.limit) throw over(floor);
    const bytes = bodyBytes(value, `${this.#what === 'request' ? 'req' : 'res'}.setBody`);
    if (bytes.length > this.limit) throw over(bytes.length);
    this.#bytes = bytes;
    this.#wire = undefined;
    this.replaced = base64Encode(bytes);
  }
}

function readers(body: BodyState) {
  return {
    async text(): Promise<string> {
      return utf8Decode(body.bytes('text'));
    },
    async json(): Promise<unknown> {
      return JSON.parse(utf8Decode(body.bytes('json')));
    },
    async arrayBuffer(): Promise<ArrayBuffer> {
      return body.bytes('arrayBuffer').slice().buffer as ArrayBuffer;
    },
  };
}

export class GuestRequest implements PluginRequest {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly host: string;
  readonly headers: PluginHeaders;
  readonly remoteAddress: string;
  declare readonly originalDestination?: string;
  declare readonly route?: string;
  declare readonly service?: string;
  readonly #body: BodyState;

  constructor(wire: WireRequest, headers: PluginHeaders, body: BodyState) {
    this.method = wire.method;
    this.path = wire.path;
    this.query = wire.query;
    this.host = wire.host;
    this.headers = headers;
    this.remoteAddress = wire.remoteAddress;
    const self = this as { originalDestination?: string; route?: string; service?: string };
    if (wire.originalDestination !== undefined) self.originalDestination = wire.originalDestination;
    if (wire.route !== undefined) self.route = wire.route;
    if (wire.service !== undefined) self.service = wire.service;
    this.#body = body;
  }

  text(): Promise<string> {
    return readers(this.#body).text();
  }

  json(): Promise<unknown> {
    return readers(this.#body).json();
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    return readers(this.#body).arrayBuffer();
  }

  setBody(body: BodyInit): void {
    this.#body.set(body);
  }
}

export class GuestResponse implements PluginResponse {
  readonly headers: PluginHeaders;
  readonly #box: { status: number };
  readonly #body: BodyState;
  readonly #checkStatus: (v: unknown) => number;

  constructor(wire: WireResponse, headers: PluginHeaders, box: { status: number }, body: BodyState, checkStatus: (v: unknown) => number) {
    this.headers = headers;
    this.#box = box;
    this.#body = body;
    this.#checkStatus = checkStatus;
    box.status = wire.status;
  }

  get status(): number {
    return this.#box.status;
  }

  set status(v: number) {
    this.#box.status = this.#checkStatus(v);
  }

  text(): Promise<string> {
    return readers(this.#body).text();
  }

  json(): Promise<unknown> {
    return readers(this.#body).json();
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    return readers(this.#body).arrayBuffer();
  }

  setBody(body: BodyInit): void {
    this.#body.set(body);
  }
}

const METRIC_NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]{0,63}$/;
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]{0,63}$/;
const RESERVED_LABELS = new Set(['tenant', 'plugin', 'le', 'quantile']);
const HISTOGRAM_SUFFIXES = /_(total|bucket|sum|count)$/;
export const METRIC_LIMITS = Object.freeze({ labels: 5, labelValueChars: 128 });

function checkLabels(labels: MetricLabels | undefined, what: string): Array<[string, string]> {
  if (labels === undefined) return [];
  if (labels === null || typeof labels !== 'object' || Array.isArray(labels)) throw new TypeError(`${what}: labels must be an object of name → value`);
  const out: Array<[string, string]> = [];
  for (const [k, raw] of Object.entries(labels)) {
    if (!LABEL_NAME_RE.test(k) || k.startsWith('__')) throw new TypeError(`${what}: invalid label name ${JSON.stringify(k.slice(0, 64))}`);
    if (RESERVED_LABELS.has(k)) throw new TypeError(`${what}: label "${k}" is reserved (the host sets tenant and plugin)`);
    if (typeof raw !== 'string' && typeof raw !== 'number' && typeof raw !== 'boolean') throw new TypeError(`${what}: label ${k} must be a string, number or boolean`);
    const v = String(raw);
    if (v.length > METRIC_LIMITS.labelValueChars) throw new TypeError(`${what}: label ${k} is longer than ${METRIC_LIMITS.labelValueChars} characters`);
    out.push([k, v]);
  }
  if (out.length > METRIC_LIMITS.labels) throw new TypeError(`${what}: at most ${METRIC_LIMITS.labels} labels`);
  return out.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

/** Collects one call's metric updates (summed per series), bounded per call. */
export class MetricRecorder implements PluginMetrics {
  readonly #series = new Map<string, MetricOp>();
  #observations = 0;
  dropped = 0;

  counter(name: string, labels?: MetricLabels): { inc(n?: number): void } {
    if (typeof name !== 'string' || !METRIC_NAME_RE.test(name)) throw new TypeError(`ctx.metrics.counter: invalid metric name ${JSON.stringify(String(name).slice(0, 64))}`);
    const pairs = checkLabels(labels, 'ctx.metrics.counter');
    const key = `c\u0000${name}\u0000${JSON.stringify(pairs)}`;
    return {
      inc: (n: number = 1): void => {
        if (typeof n !== 'number' || !Number.isFinite(n) || n < 0) throw new TypeError('counter.inc(n): n must be a finite number >= 0');
        const op = this.#series.get(key);
        if (op !== undefined) (op as ['c', string, Array<[string, string]>, number])[3] += n;
        else if (this.#series.size >= GUEST_LIMITS.metricSeriesPerCall) this.dropped++;
        else this.#series.set(key, ['c', name, pairs, n]);
      },
    };
  }

  histogram(name: string, labels?: MetricLabels): { observe(value: number): void } {
    if (typeof name !== 'string' || !METRIC_NAME_RE.test(name)) throw new TypeError(`ctx.metrics.histogram: invalid metric name ${JSON.stringify(String(name).slice(0, 64))}`);
    if (HISTOGRAM_SUFFIXES.test(name)) throw new TypeError(`ctx.metrics.histogram: a histogram name must not end in _total, _bucket, _sum or _count`);
    const pairs = checkLabels(labels, 'ctx.metrics.histogram');
    const key = `h\u0000${name}\u0000${JSON.stringify(pairs)}`;
    return {
      observe: (value: number): void => {
        if (typeof value !== 'number' || !Number.isFinite(value)) throw new TypeError('histogram.observe(v): v must be a finite number');
        if (this.#observations >= GUEST_LIMITS.metricObservationsPerCall) {
          this.dropped++;
          return;
        }
        const op = this.#series.get(key);
        if (op !== undefined) (op[3] as number[]).push(value);
        else if (this.#series.size >= GUEST_LIMITS.metricSeriesPerCall) {
          this.dropped++;
          return;
        } else this.#series.set(key, ['h', name, pairs, [value]]);
        this.#observations++;
      },
    };
  }

  ops(): MetricOp[] | undefined {
    return this.#series.size === 0 ? undefined : [...this.#series.values()];
  }
}
