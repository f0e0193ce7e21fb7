// protoc-gen-validate, read from the vendored protos' own annotations: every `(validate.rules)` on a
// field, `(validate.required)` on a oneof and `(validate.disabled|ignored)` on a message, checked against
// a resource object before it is encoded — Envoy runs these same checks on every resource it receives
// and NACKs on the first failure. Also checked, because protobufjs would silently drop them: fields the
// message does not have, values of the wrong kind, enum names that do not exist, Any payloads of types
// that are not loaded. Rule kinds implemented: message required; string len/min_len/max_len/min_bytes/
// max_bytes/pattern/prefix/suffix/contains/not_contains/in/not_in/const/well_known_regex (HTTP header
// name/value); bytes len/min_len/max_len; every number kind const/lt/lte/gt/gte/in/not_in; bool const;
// enum defined_only/in/not_in/const; duration required/lt/lte/gt/gte/const; any required/in/not_in;
// repeated min_items/max_items/unique/items; map min_pairs/max_pairs/keys/values; ignore_empty; rules on
// wrapper types apply to the wrapped value. Rules compile once per message type.

import protobuf from 'protobufjs';
import { TYPE_URL_PREFIX, type EnvoyProtos } from './protos.ts';

type Rules = Record<string, any>;
type Check = (value: unknown, path: string, errors: string[]) => void;

interface FieldPlan {
  field: protobuf.Field;
  /** Rules of the field's kind (string, uint32, message, repeated, …), merged from every annotation. */
  rules: Rules;
  /** Set when the field sits in a (non-synthetic) oneof: absent means "not chosen", not "default". */
  inOneof: boolean;
  /** proto3 `optional`: absence is meaningful. */
  optional: boolean;
}

interface TypePlan {
  fields: Map<string, FieldPlan>;
  requiredOneofs: Array<{ name: string; fields: string[] }>;
  /** Fields whose rules must hold when the field is absent (proto3 defaults, required messages, min_items). */
  absentChecks: FieldPlan[];
  skip: boolean;
}

const WRAPPERS = new Set(['DoubleValue', 'FloatValue', 'Int64Value', 'UInt64Value', 'Int32Value', 'UInt32Value', 'BoolValue', 'StringValue', 'BytesValue'].map((n) => `.google.protobuf.${n}`));
const NUMBER_KINDS = new Set(['double', 'float', 'int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'fixed32', 'fixed64', 'sfixed32', 'sfixed64']);
const HEADER_NAME_RE = /^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$/;
const NO_CTL_RE = /^[^\u0000\u000a\u000d]*$/;
const HEADER_VALUE_STRICT_RE = /^[^\u0000-\u0008\u000a-\u001f\u007f]*$/;

function mergedRules(options: Array<Record<string, unknown>> | undefined): Rules | undefined {
  if (!options) return undefined;
  let out: Rules | undefined;
  for (const o of options) {
    const r = o['(validate.rules)'];
    if (r !== undefined) out = { ...(out ?? {}), ...(r as Rules) };
  }
  return out;
}

function durationNs(d: unknown): number {
  const o = (d ?? {}) as { seconds?: number | string; nanos?: number };
  return Number(o.seconds ?? 0) * 1e9 + Number(o.nanos ?? 0);
}

function isEmpty(v: unknown): boolean {
  return v === undefined || v === null || v === '' || v === 0 || v === false || (Array.isArray(v) && v.length === 0) || (v instanceof Uint8Array && v.length === 0);
}

/** Numeric (and duration) bounds, with PGV's exclusive-range reading when the lower bound exceeds the upper. */
function checkBounds(r: Rules, n: number, toN: (x: unknown) => number, path: string, errors: string[]): void {
  const lo = r.gt !== undefined ? { v: toN(r.gt), strict: true } : r.gte !== undefined ? { v: toN(r.gte), strict: false } : undefined;
  const hi = r.lt !== undefined ? { v: toN(r.lt), strict: true } : r.lte !== undefined ? { v: toN(r.lte), strict: false } : undefined;
  const aboveLo = lo === undefined || (lo.strict ? n > lo.v : n >= lo.v);
  const belowHi = hi === undefined || (hi.strict ? n < hi.v : n <= hi.v);
  const ok = lo !== undefined && hi !== undefined && lo.v > hi.v ? aboveLo || belowHi : aboveLo && belowHi;
  if (!ok) errors.push(`${path}: ${n} is out of range ${JSON.stringify({ gt: r.gt, gte: r.gte, lt: r.lt, lte: r.lte })}`);
  if (r.const !== undefined && n !== toN(r.const)) errors.push(`${path}: must equal ${JSON.stringify(r.const)}`);
  if (Array.isArray(r.in) && r.in.length > 0 && !r.in.map(toN).includes(n)) errors.push(`${path}: must be one of ${JSON.stringify(r.in)}`);
  if (Array.isArray(r.not_in) && r.not_in.map(toN).includes(n)) errors.push(`${path}: must not be one of ${JSON.stringify(r.not_in)}`);
}

function checkString(r: Rules, s: string, path: string, errors: string[]): void {
  const chars = [...s].length;
  const bytes = Buffer.byteLength(s);
  if (r.len !== undefined && chars !== Number(r.len)) errors.push(`${path}: length must be ${r.len}`);
  if (r.min_len !== undefined && chars < Number(r.min_len)) errors.push(`${path}: must be at least ${r.min_len} characters`);
  if (r.max_len !== undefined && chars > Number(r.max_len)) errors.push(`${path}: must be at most ${r.max_len} characters`);
  if (r.min_bytes !== undefined && bytes < Number(r.min_bytes)) errors.push(`${path}: must be at least ${r.min_bytes} bytes`);
  if (r.max_bytes !== undefined && bytes > Number(r.max_bytes)) errors.push(`${path}: must be at most ${r.max_bytes} bytes`);
  if (r.pattern !== undefined && !new RegExp(r.pattern, 'u').test(s)) errors.push(`${path}: must match ${r.pattern}`);
  if (r.prefix !== undefined && !s.startsWith(r.prefix)) errors.push(`${path}: must start with ${JSON.stringify(r.prefix)}`);
  if (r.suffix !== undefined && !s.endsWith(r.suffix)) errors.push(`${path}: must end with ${JSON.stringify(r.suffix)}`);
  if (r.contains !== undefined && !s.includes(r.contains)) errors.push(`${path}: must contain ${JSON.stringify(r.contains)}`);
  if (r.not_contains !== undefined && s.includes(r.not_contains)) errors.push(`${path}: must not contain ${JSON.stringify(r.not_contains)}`);
  if (r.const !== undefined && s !== r.const) errors.push(`${path}: must equal ${JSON.stringify(r.const)}`);
  if (Array.isArray(r.in) && r.in.length > 0 && !r.in.includes(s)) errors.push(`${path}: must be one of ${JSON.stringify(r.in)}`);
  if (Array.isArray(r.not_in) && r.not_in.includes(s)) errors.push(`${path}: must not be one of ${JSON.stringify(r.not_in)}`);
  const strict = r.strict !== false;
  if (r.well_known_regex === 'HTTP_HEADER_NAME' && !(strict ? HEADER_NAME_RE.test(s) : NO_CTL_RE.test(s))) errors.push(`${path}: not a valid HTTP header name`);
  if (r.well_known_regex === 'HTTP_HEADER_VALUE' && !(strict ? HEADER_VALUE_STRICT_RE.test(s) : NO_CTL_RE.test(s))) errors.push(`${path}: not a valid HTTP header value`);
}

export class ResourceValidator {
  readonly #protos: EnvoyProtos;
  readonly #plans = new Map<protobuf.Type, TypePlan>();
  /** Extra checks by message full name (data-plane rules of real clients), run after PGV's. */
  readonly #hooks = new Map<string, (obj: Record<string, unknown>, path: string, errors: string[]) => void>();

  constructor(protos: EnvoyProtos) {
    this.#protos = protos;
  }

  /** Adds a data-plane rule for every message of type `fullName` (without leading dot). */
  hook(fullName: string, fn: (obj: Record<string, unknown>, path: string, errors: string[]) => void): this {
    this.#hooks.set(`.${fullName}`, fn);
    return this;
  }

  /** Every violation in `obj` as message `typeName` (a name or type URL); [] when valid. */
  validate(typeName: string, obj: unknown): string[] {
    const errors: string[] = [];
    this.#message(this.#protos.type(typeName), obj, typeName.replace(/^.*\//, ''), errors);
    return errors;
  }

  #plan(t: protobuf.Type): TypePlan {
    let plan = this.#plans.get(t);
    if (plan) return plan;
    const opts = (t.options ?? {}) as Record<string, unknown>;
    plan = { fields: new Map(), requiredOneofs: [], absentChecks: [], skip: opts['(validate.disabled)'] === true || opts['(validate.ignored)'] === true };
    for (const o of t.oneofsArray) {
      const synthetic = o.fieldsArray.length === 1 && o.name.startsWith('_') && (o.fieldsArray[0] as protobuf.Field & { options?: Record<string, unknown> }).options?.proto3_optional === true;
      if (!synthetic && (o.options as Record<string, unknown> | undefined)?.['(validate.required)'] === true) plan.requiredOneofs.push({ name: o.name, fields: o.oneof });
    }
    for (const f of t.fieldsArray) {
      f.resolve();
      const all = mergedRules(f.parsedOptions as Array<Record<string, unknown>> | undefined) ?? {};
      const proto3Optional = (f.options as Record<string, unknown> | undefined)?.proto3_optional === true;
      const fp: FieldPlan = { field: f, rules: all, inOneof: f.partOf !== null && !proto3Optional, optional: proto3Optional };
      plan.fields.set(f.name, fp);
      if (!fp.inOneof && !fp.optional && Object.keys(all).length > 0) plan.absentChecks.push(fp);
    }
    this.#plans.set(t, plan);
    return plan;
  }

  #message(t: protobuf.Type, obj: unknown, path: string, errors: string[]): void {
    if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) {
      errors.push(`${path}: expected a ${t.name} message`);
      return;
    }
    const o = obj as Record<string, unknown>;
    if (t.fullName === '.google.protobuf.Any') return this.#any(o, {}, path, errors);
    const plan = this.#plan(t);
    for (const key of Object.keys(o)) {
      if (o[key] === undefined) continue;
      const fp = plan.fields.get(key);
      if (!fp) {
        errors.push(`${path}.${key}: ${t.name} has no field "${key}"`);
        continue;
      }
      this.#field(fp, o[key], `${path}.${key}`, errors, plan.skip);
    }
    if (!plan.skip) {
      for (const fp of plan.absentChecks) {
        const v = o[fp.field.name];
        if (v === undefined || v === null) this.#absent(fp, `${path}.${fp.field.name}`, errors);
      }
      for (const oneof of plan.requiredOneofs) {
        if (!oneof.fields.some((f) => o[f] !== undefined && o[f] !== null)) errors.push(`${path}: one of ${oneof.fields.join(', ')} is required`);
      }
    }
    this.#hooks.get(t.fullName)?.(o, path, errors);
  }

  #any(o: Record<string, unknown>, rules: Rules, path: string, errors: string[]): void {
    const typeUrl = (o['@type'] ?? o.type_url) as unknown;
    if (typeof typeUrl !== 'string' || !typeUrl.startsWith(TYPE_URL_PREFIX)) {
      errors.push(`${path}: Any without a type.googleapis.com/ type URL`);
      return;
    }
    if (Array.isArray(rules.in) && rules.in.length > 0 && !rules.in.includes(typeUrl)) errors.push(`${path}: type ${typeUrl} not allowed here`);
    if (Array.isArray(rules.not_in) && rules.not_in.includes(typeUrl)) errors.push(`${path}: type ${typeUrl} not allowed here`);
    if (!this.#protos.has(typeUrl)) {
      errors.push(`${path}: unknown type ${typeUrl}`);
      return;
    }
    const inner = this.#protos.type(typeUrl);
    if ('@type' in o) {
      const { '@type': _drop, ...fields } = o;
      this.#message(inner, fields, `${path}<${inner.name}>`, errors);
    } else if (o.value instanceof Uint8Array) {
      this.#message(inner, this.#protos.decode(typeUrl, o.value), `${path}<${inner.name}>`, errors);
    } else {
      errors.push(`${path}: Any.value must be bytes`);
    }
  }

  #absent(fp: FieldPlan, path: string, errors: string[]): void {
    const r = fp.rules;
    if (fp.field.repeated || fp.field.map) {
      const rr = fp.field.map ? r.map : r.repeated;
      if (rr && !rr.ignore_empty && Number(rr.min_items ?? rr.min_pairs ?? 0) > 0) errors.push(`${path}: at least ${rr.min_items ?? rr.min_pairs} entries required`);
      return;
    }
    if (fp.field.resolvedType instanceof protobuf.Type) {
      if (r.message?.required || r.duration?.required || r.any?.required || r.timestamp?.required) errors.push(`${path}: is required`);
      return;
    }
    // proto3 scalar left unset = its default value, which the rules must accept
    const defaults: Record<string, unknown> = { string: '', bytes: new Uint8Array(0), bool: false };
    const v = fp.field.resolvedType instanceof protobuf.Enum ? 0 : (defaults[fp.field.type] ?? 0);
    this.#scalar(fp, v, path, errors);
  }

  #field(fp: FieldPlan, v: unknown, path: string, errors: string[], skipRules: boolean): void {
    const f = fp.field;
    if (f.map) {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) return void errors.push(`${path}: expected a map`);
      const entries = Object.entries(v as Record<string, unknown>);
      const mr = skipRules ? undefined : fp.rules.map;
      if (mr && !(mr.ignore_empty && entries.length === 0)) {
        if (mr.min_pairs !== undefined && entries.length < Number(mr.min_pairs)) errors.push(`${path}: at least ${mr.min_pairs} entries required`);
        if (mr.max_pairs !== undefined && entries.length > Number(mr.max_pairs)) errors.push(`${path}: at most ${mr.max_pairs} entries allowed`);
      }
      for (const [k, val] of entries) {
        if (mr?.keys?.string) checkString(mr.keys.string, k, `${path}[${k}] key`, errors);
        this.#single(f, mr?.values ?? {}, val, `${path}[${JSON.stringify(k)}]`, errors, skipRules);
      }
      return;
    }
    if (f.repeated) {
      if (!Array.isArray(v)) return void errors.push(`${path}: expected a list`);
      const rr = skipRules ? undefined : fp.rules.repeated;
      if (rr && !(rr.ignore_empty && v.length === 0)) {
        if (rr.min_items !== undefined && v.length < Number(rr.min_items)) errors.push(`${path}: at least ${rr.min_items} items required`);
        if (rr.max_items !== undefined && v.length > Number(rr.max_items)) errors.push(`${path}: at most ${rr.max_items} items allowed`);
        if (rr.unique && new Set(v.map((x) => JSON.stringify(x))).size !== v.length) errors.push(`${path}: items must be unique`);
      }
      v.forEach((item, i) => this.#single(f, rr?.items ?? {}, item, `${path}[${i}]`, errors, skipRules));
      return;
    }
    this.#single(f, fp.rules, v, path, errors, skipRules);
  }

  /** One value of field `f` (a list item, a map value or the field itself) under `rules`. */
  #single(f: protobuf.Field, rules: Rules, v: unknown, path: string, errors: string[], skipRules: boolean): void {
    const rt = f.resolvedType;
    if (rt instanceof protobuf.Type) {
      if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Uint8Array) return void errors.push(`${path}: expected a ${rt.name} message`);
      const o = v as Record<string, unknown>;
      if (!skipRules && rules.message?.skip) return;
      if (rt.fullName === '.google.protobuf.Any') return this.#any(o, skipRules ? {} : (rules.any ?? {}), path, errors);
      if (!skipRules && rt.fullName === '.google.protobuf.Duration') {
        this.#message(rt, o, path, errors);
        if (rules.duration) checkBounds(rules.duration, durationNs(o), durationNs, path, errors);
        return;
      }
      this.#message(rt, o, path, errors);
      if (!skipRules && WRAPPERS.has(rt.fullName) && o.value !== undefined) {
        const kind = Object.keys(rules).find((k) => k !== 'message');
        if (kind) this.#scalarRules(kind, rules[kind], o.value, path, errors);
      }
      return;
    }
    if (skipRules) return void this.#kind(f, v, path, errors);
    this.#scalar({ field: f, rules, inOneof: false, optional: false }, v, path, errors);
  }

  #kind(f: protobuf.Field, v: unknown, path: string, errors: string[]): boolean {
    const rt = f.resolvedType;
    if (rt instanceof protobuf.Enum) {
      const ok = typeof v === 'string' ? v in rt.values : typeof v === 'number' && Number.isInteger(v);
      if (!ok) errors.push(`${path}: ${JSON.stringify(v)} is not a value of ${rt.name}`);
      return ok;
    }
    const t = f.type;
    const ok =
      t === 'string' ? typeof v === 'string'
      : t === 'bool' ? typeof v === 'boolean'
      : t === 'bytes' ? v instanceof Uint8Array || typeof v === 'string'
      : NUMBER_KINDS.has(t) ? (typeof v === 'number' && Number.isFinite(v)) || (typeof v === 'string' && /^-?\d+$/.test(v))
      : false;
    if (!ok) errors.push(`${path}: ${JSON.stringify(v)} is not a ${t}`);
    return ok;
  }

  #scalar(fp: FieldPlan, v: unknown, path: string, errors: string[]): void {
    if (!this.#kind(fp.field, v, path, errors)) return;
    const rt = fp.field.resolvedType;
    const kind = rt instanceof protobuf.Enum ? 'enum' : fp.field.type;
    const r = fp.rules[kind];
    if (r) this.#scalarRules(kind, r, v, path, errors, rt instanceof protobuf.Enum ? rt : undefined);
  }

  #scalarRules(kind: string, r: Rules, v: unknown, path: string, errors: string[], en?: protobuf.Enum): void {
    if (r.ignore_empty && isEmpty(v)) return;
    if (kind === 'string') return checkString(r, String(v), path, errors);
    if (kind === 'bytes') {
      const n = typeof v === 'string' ? Buffer.byteLength(v) : (v as Uint8Array).length;
      if (r.len !== undefined && n !== Number(r.len)) errors.push(`${path}: must be ${r.len} bytes`);
      if (r.min_len !== undefined && n < Number(r.min_len)) errors.push(`${path}: must be at least ${r.min_len} bytes`);
      if (r.max_len !== undefined && n > Number(r.max_len)) errors.push(`${path}: must be at most ${r.max_len} bytes`);
      return;
    }
    if (kind === 'bool') {
      if (r.const !== undefined && v !== r.const) errors.push(`${path}: must be ${r.const}`);
      return;
    }
    if (kind === 'enum') {
      const n = typeof v === 'string' ? en?.values[v] : (v as number);
      if (r.defined_only && (n === undefined || !Object.values(en?.values ?? {}).includes(n))) errors.push(`${path}: ${JSON.stringify(v)} is not a defined value`);
      if (n !== undefined) {
        if (r.const !== undefined && n !== Number(r.const)) errors.push(`${path}: must be ${r.const}`);
        if (Array.isArray(r.in) && r.in.length > 0 && !r.in.map(Number).includes(n)) errors.push(`${path}: must be one of ${JSON.stringify(r.in)}`);
        if (Array.isArray(r.not_in) && r.not_in.map(Number).includes(n)) errors.push(`${path}: must not be one of ${JSON.stringify(r.not_in)}`);
      }
      return;
    }
    if (NUMBER_KINDS.has(kind)) checkBounds(r, Number(v), Number, path, errors);
  }
}
