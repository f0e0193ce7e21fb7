// protoc-gen-validate, read from the vendored protos' own annotations: every `(validate.rules)` on a
// field, `(validate.required)` on a oneof and `(validate.disabled|ignored)` on a message, checked against
// a resource object before it is encoded — Envoy runs these same checks on every resource it receives
// and NACKs on the first failure. Also checked, because an encoder would drop or mangle them: fields the
// message does not have, values of the wrong kind, enum names that do not exist, Any payloads of types
// that are not loaded. Rule kinds implemented: message required/skip; string len/min_len/max_len/
// min_bytes/max_bytes/pattern/prefix/suffix/contains/not_contains/in/not_in/const/well_known_regex (HTTP
// header name/value); bytes len/min_len/max_len; every number kind const/lt/lte/gt/gte/in/not_in; bool
// const; enum defined_only/in/not_in/const; duration required/lt/lte/gt/gte/const; any required/in/
// not_in; repeated min_items/max_items/unique/items; map min_pairs/max_pairs/keys/values; ignore_empty;
// rules on wrapper types apply to the wrapped value.
//
// Each message type compiles once into a checker closure holding only the checks its rules need; the
// field path is kept as a stack and joined only when reporting an error.

import protobuf from 'protobufjs';
import { TYPE_URL_PREFIX, type EnvoyProtos } from './protos.ts';

type Rules = Record<string, any>;
type Obj = Record<string, unknown>;

/** Collects errors; `path` is the field path stack of the value being checked. */
class Report {
  readonly errors: string[] = [];
  readonly path: string[] = [];
  add(msg: string): void {
    this.errors.push(`${this.path.join('')}: ${msg}`);
  }
}

type Check = (v: unknown, r: Report) => void;
/** A data-plane rule for one message type; `fail` reports a violation at the message's path. */
export type Hook = (obj: Obj, fail: (message: string) => void) => void;

const WRAPPERS = new Set(['DoubleValue', 'FloatValue', 'Int64Value', 'UInt64Value', 'Int32Value', 'UInt32Value', 'BoolValue', 'StringValue', 'BytesValue'].map((n) => `.google.protobuf.${n}`));
const NUMBER_KINDS = new Set(['double', 'float', 'int32', 'int64', 'uint32', 'uint64', 'sint32', 'sint64', 'fixed32', 'fixed64', 'sfixed32', 'sfixed64']);
const HEADER_NAME_RE = /^:?[0-9a-zA-Z!#$%&'*+\-.^_|~`]+$/;
const NO_CTL_RE = /^[^\u0000\u000a\u000d]*$/;
const HEADER_VALUE_STRICT_RE = /^[^\u0000-\u0008\u000a-\u001f\u007f]*$/;
const SURROGATE_RE = /[\ud800-\udfff]/;

function mergedRules(options: Array<Record<string, unknown>> | undefined): Rules {
  let out: Rules = {};
  for (const o of options ?? []) {
    const r = o['(validate.rules)'];
    if (r !== undefined) out = { ...out, ...(r as Rules) };
  }
  return out;
}

const durationNs = (d: unknown): number => {
  const o = (d ?? {}) as { seconds?: number | string; nanos?: number };
  return Number(o.seconds ?? 0) * 1e9 + Number(o.nanos ?? 0);
};

function isEmpty(v: unknown): boolean {
  return v === undefined || v === null || v === '' || v === 0 || v === false || (Array.isArray(v) && v.length === 0) || (v instanceof Uint8Array && v.length === 0);
}

const charLength = (s: string): number => (SURROGATE_RE.test(s) ? [...s].length : s.length);

/** Bounds, const, in, not_in of a number (or duration, via toN); PGV reads lower > upper as an exclusive range. */
function boundsChecks(r: Rules, toN: (x: unknown) => number): Check[] {
  const checks: Check[] = [];
  const lo = r.gt !== undefined ? { v: toN(r.gt), strict: true } : r.gte !== undefined ? { v: toN(r.gte), strict: false } : undefined;
  const hi = r.lt !== undefined ? { v: toN(r.lt), strict: true } : r.lte !== undefined ? { v: toN(r.lte), strict: false } : undefined;
  if (lo || hi) {
    const desc = JSON.stringify({ gt: r.gt, gte: r.gte, lt: r.lt, lte: r.lte });
    const exclusive = lo !== undefined && hi !== undefined && lo.v > hi.v;
    checks.push((v, rep) => {
      const n = toN(v);
      const aboveLo = lo === undefined || (lo.strict ? n > lo.v : n >= lo.v);
      const belowHi = hi === undefined || (hi.strict ? n < hi.v : n <= hi.v);
      if (!(exclusive ? aboveLo || belowHi : aboveLo && belowHi)) rep.add(`${n} is out of range ${desc}`);
    });
  }
  if (r.const !== undefined) checks.push((v, rep) => void (toN(v) !== toN(r.const) && rep.add(`must equal ${JSON.stringify(r.const)}`)));
  if (Array.isArray(r.in) && r.in.length > 0) {
    const allowed = new Set(r.in.map(toN));
    checks.push((v, rep) => void (!allowed.has(toN(v)) && rep.add(`must be one of ${JSON.stringify(r.in)}`)));
  }
  if (Array.isArray(r.not_in) && r.not_in.length > 0) {
    const denied = new Set(r.not_in.map(toN));
    checks.push((v, rep) => void (denied.has(toN(v)) && rep.add(`must not be one of ${JSON.stringify(r.not_in)}`)));
  }
  return checks;
}

function stringChecks(r: Rules): Check[] {
  const c: Check[] = [];
  const s = (v: unknown) => v as string;
  if (r.len !== undefined) c.push((v, rep) => void (charLength(s(v)) !== Number(r.len) && rep.add(`length must be ${r.len}`)));
  if (r.min_len !== undefined) c.push((v, rep) => void (charLength(s(v)) < Number(r.min_len) && rep.add(`must be at least ${r.min_len} characters`)));
  if (r.max_len !== undefined) c.push((v, rep) => void (charLength(s(v)) > Number(r.max_len) && rep.add(`must be at most ${r.max_len} characters`)));
  if (r.min_bytes !== undefined) c.push((v, rep) => void (Buffer.byteLength(s(v)) < Number(r.min_bytes) && rep.add(`must be at least ${r.min_bytes} bytes`)));
  if (r.max_bytes !== undefined) c.push((v, rep) => void (Buffer.byteLength(s(v)) > Number(r.max_bytes) && rep.add(`must be at most ${r.max_bytes} bytes`)));
  if (r.pattern !== undefined) {
    const re = new RegExp(r.pattern, 'u');
    c.push((v, rep) => void (!re.test(s(v)) && rep.add(`must match ${r.pattern}`)));
  }
  if (r.prefix !== undefined) c.push((v, rep) => void (!s(v).startsWith(r.prefix) && rep.add(`must start with ${JSON.stringify(r.prefix)}`)));
  if (r.suffix !== undefined) c.push((v, rep) => void (!s(v).endsWith(r.suffix) && rep.add(`must end with ${JSON.stringify(r.suffix)}`)));
  if (r.contains !== undefined) c.push((v, rep) => void (!s(v).includes(r.contains) && rep.add(`must contain ${JSON.stringify(r.contains)}`)));
  if (r.not_contains !== undefined) c.push((v, rep) => void (s(v).includes(r.not_contains) && rep.add(`must not contain ${JSON.stringify(r.not_contains)}`)));
  if (r.const !== undefined) c.push((v, rep) => void (s(v) !== r.const && rep.add(`must equal ${JSON.stringify(r.const)}`)));
  if (Array.isArray(r.in) && r.in.length > 0) c.push((v, rep) => void (!r.in.includes(s(v)) && rep.add(`must be one of ${JSON.stringify(r.in)}`)));
  if (Array.isArray(r.not_in) && r.not_in.length > 0) c.push((v, rep) => void (r.not_in.includes(s(v)) && rep.add(`must not be one of ${JSON.stringify(r.not_in)}`)));
  const strict = r.strict !== false;
  if (r.well_known_regex === 'HTTP_HEADER_NAME') {
    const re = strict ? HEADER_NAME_RE : NO_CTL_RE;
    c.push((v, rep) => void (!re.test(s(v)) && rep.add('not a valid HTTP header name')));
  }
  if (r.well_known_regex === 'HTTP_HEADER_VALUE') {
    const re = strict ? HEADER_VALUE_STRICT_RE : NO_CTL_RE;
    c.push((v, rep) => void (!re.test(s(v)) && rep.add('not a valid HTTP header value')));
  }
  return c;
}

function bytesChecks(r: Rules): Check[] {
  const n = (v: unknown) => (typeof v === 'string' ? Buffer.from(v, 'base64').length : (v as Uint8Array).length);
  const c: Check[] = [];
  if (r.len !== undefined) c.push((v, rep) => void (n(v) !== Number(r.len) && rep.add(`must be ${r.len} bytes`)));
  if (r.min_len !== undefined) c.push((v, rep) => void (n(v) < Number(r.min_len) && rep.add(`must be at least ${r.min_len} bytes`)));
  if (r.max_len !== undefined) c.push((v, rep) => void (n(v) > Number(r.max_len) && rep.add(`must be at most ${r.max_len} bytes`)));
  return c;
}

function enumChecks(r: Rules, en: protobuf.Enum): Check[] {
  const num = (v: unknown): number | undefined => (typeof v === 'string' ? en.values[v] : (v as number));
  const defined = new Set(Object.values(en.values));
  const c: Check[] = [];
  if (r.defined_only) c.push((v, rep) => void (!defined.has(num(v) as number) && rep.add(`${JSON.stringify(v)} is not a defined value`)));
  const numeric = boundsChecks({ const: r.const, in: r.in, not_in: r.not_in }, (v) => num(v) ?? NaN);
  return [...c, ...numeric];
}

/** The rules of one scalar kind as checks (kind: a scalar type name, or "enum"). */
function scalarRuleChecks(kind: string, r: Rules, en?: protobuf.Enum): Check[] {
  let checks: Check[];
  if (kind === 'string') checks = stringChecks(r);
  else if (kind === 'bytes') checks = bytesChecks(r);
  else if (kind === 'bool') checks = r.const !== undefined ? [(v, rep) => void (v !== r.const && rep.add(`must be ${r.const}`))] : [];
  else if (kind === 'enum') checks = enumChecks(r, en!);
  else if (NUMBER_KINDS.has(kind)) checks = boundsChecks(r, Number);
  else checks = [];
  if (r.ignore_empty && checks.length > 0) {
    const inner = checks;
    checks = [(v, rep) => void (!isEmpty(v) && inner.forEach((c) => c(v, rep)))];
  }
  return checks;
}

/** Value-kind check for a scalar or enum field. */
function kindCheck(f: protobuf.Field): Check {
  const rt = f.resolvedType;
  if (rt instanceof protobuf.Enum) {
    return (v, rep) => void (!(typeof v === 'string' ? v in rt.values : typeof v === 'number' && Number.isInteger(v)) && rep.add(`${JSON.stringify(v)} is not a value of ${rt.name}`));
  }
  const t = f.type;
  const ok: (v: unknown) => boolean =
    t === 'string' ? (v) => typeof v === 'string'
    : t === 'bool' ? (v) => typeof v === 'boolean'
    : t === 'bytes' ? (v) => v instanceof Uint8Array || typeof v === 'string'
    : NUMBER_KINDS.has(t) ? (v) => (typeof v === 'number' && Number.isFinite(v)) || (typeof v === 'string' && /^-?\d+$/.test(v))
    : () => false;
  return (v, rep) => void (!ok(v) && rep.add(`${JSON.stringify(v)} is not a ${t}`));
}

function anySet(o: Obj, names: string[]): boolean {
  for (let i = 0; i < names.length; i++) {
    const v = o[names[i]!];
    if (v !== undefined && v !== null) return true;
  }
  return false;
}

const run = (checks: Check[], v: unknown, rep: Report): void => {
  for (const c of checks) c(v, rep);
};

export class ResourceValidator {
  readonly #protos: EnvoyProtos;
  readonly #compiled = new Map<protobuf.Type, Check>();
  readonly #hooks = new Map<string, Hook>();

  constructor(protos: EnvoyProtos) {
    this.#protos = protos;
  }

  /** Adds a data-plane rule for every message of type `fullName` (without leading dot); before first use. */
  hook(fullName: string, fn: Hook): this {
    this.#hooks.set(`.${fullName}`, fn);
    return this;
  }

  /** Every violation in `obj` as message `typeName` (a name or type URL); [] when valid. */
  validate(typeName: string, obj: unknown): string[] {
    const rep = new Report();
    rep.path.push(typeName.replace(/^.*\//, ''));
    this.#message(this.#protos.type(typeName))(obj, rep);
    return rep.errors;
  }

  /** The checker of a message type (compiled on first use; recursive types resolve lazily). */
  #message(t: protobuf.Type): Check {
    let c = this.#compiled.get(t);
    if (c) return c;
    let compiled: Check | undefined;
    c = (v, rep) => (compiled ??= this.#compile(t))(v, rep);
    this.#compiled.set(t, c);
    return c;
  }

  #compile(t: protobuf.Type): Check {
    const fullName = t.fullName;
    if (fullName === '.google.protobuf.Any') return this.#anyCheck({});
    const opts = (t.options ?? {}) as Obj;
    const skip = opts['(validate.disabled)'] === true || opts['(validate.ignored)'] === true;
    const present: Record<string, { check: Check; seg: string } | undefined> = Object.create(null);
    const absent: Array<{ name: string; seg: string; check: (rep: Report) => void }> = [];
    const requiredOneofs: string[][] = [];
    /** Decoded messages (proto-loader's `oneofs: true`) name the chosen member under the oneof's name. */
    const oneofNames = new Map<string, Set<string>>();
    for (const o of t.oneofsArray) {
      oneofNames.set(o.name, new Set(o.oneof));
      const only = o.fieldsArray[0] as (protobuf.Field & { options?: Obj }) | undefined;
      const synthetic = o.fieldsArray.length === 1 && only?.options?.proto3_optional === true;
      if (!skip && !synthetic && (o.options as Obj | undefined)?.['(validate.required)'] === true) requiredOneofs.push(o.oneof);
    }
    for (const f of t.fieldsArray) {
      f.resolve();
      const rules = skip ? {} : mergedRules(f.parsedOptions as Array<Record<string, unknown>> | undefined);
      present[f.name] = { check: this.#fieldCheck(f, rules), seg: `.${f.name}` };
      const optional = (f.options as Obj | undefined)?.proto3_optional === true;
      const inOneof = f.partOf !== null && !optional;
      if (!skip && !inOneof && !optional) {
        const a = this.#absentCheck(f, rules);
        if (a) absent.push({ name: f.name, seg: `.${f.name}`, check: a });
      }
    }
    const hook = this.#hooks.get(fullName);
    const typeName = t.name;
    return (v, rep) => {
      if (typeof v !== 'object' || v === null || Array.isArray(v) || v instanceof Uint8Array) return rep.add(`expected a ${typeName} message`);
      const o = v as Obj;
      const before = rep.errors.length;
      for (const key in o) {
        const value = o[key];
        if (value === undefined) continue;
        const field = present[key];
        if (field) {
          rep.path.push(field.seg);
          field.check(value, rep);
          rep.path.pop();
        } else if (!(typeof value === 'string' && oneofNames.get(key)?.has(value))) {
          rep.path.push(`.${key}`);
          rep.add(`${typeName} has no field "${key}"`);
          rep.path.pop();
        }
      }
      for (const a of absent) {
        if (o[a.name] !== undefined && o[a.name] !== null) continue;
        rep.path.push(a.seg);
        a.check(rep);
        rep.path.pop();
      }
      for (const names of requiredOneofs) if (!anySet(o, names)) rep.add(`one of ${names.join(', ')} is required`);
      // data-plane rules run on messages PGV accepted, as clients check PGV first
      if (hook && rep.errors.length === before) hook(o, (msg) => rep.add(msg));
    };
  }

  #anyCheck(rules: Rules): Check {
    return (v, rep) => {
      if (typeof v !== 'object' || v === null) return rep.add('expected an Any');
      const o = v as Obj;
      const typeUrl = o['@type'] ?? o.type_url;
      if (typeof typeUrl !== 'string' || !typeUrl.startsWith(TYPE_URL_PREFIX)) return rep.add('Any without a type.googleapis.com/ type URL');
      if (Array.isArray(rules.in) && rules.in.length > 0 && !rules.in.includes(typeUrl)) rep.add(`type ${typeUrl} not allowed here`);
      if (Array.isArray(rules.not_in) && rules.not_in.includes(typeUrl)) rep.add(`type ${typeUrl} not allowed here`);
      if (!this.#protos.has(typeUrl)) return rep.add(`unknown type ${typeUrl}`);
      const inner = this.#protos.type(typeUrl);
      rep.path.push(`<${inner.name}>`);
      if ('@type' in o) {
        const { '@type': _drop, ...fields } = o;
        this.#message(inner)(fields, rep);
      } else if (o.value instanceof Uint8Array) {
        this.#message(inner)(this.#protos.decode(typeUrl, o.value), rep);
      } else {
        rep.add('Any.value must be bytes');
      }
      rep.path.pop();
    };
  }

  /** What must hold when field `f` is absent, or undefined when nothing. */
  #absentCheck(f: protobuf.Field, r: Rules): ((rep: Report) => void) | undefined {
    if (f.repeated || f.map) {
      const rr = f.map ? r.map : r.repeated;
      const min = Number(rr?.min_items ?? rr?.min_pairs ?? 0);
      return rr && !rr.ignore_empty && min > 0 ? (rep) => rep.add(`at least ${min} entries required`) : undefined;
    }
    if (f.resolvedType instanceof protobuf.Type) {
      return r.message?.required || r.duration?.required || r.any?.required || r.timestamp?.required ? (rep) => rep.add('is required') : undefined;
    }
    // a proto3 scalar left unset is its default value, which the rules must accept
    const en = f.resolvedType instanceof protobuf.Enum ? f.resolvedType : undefined;
    const kind = en ? 'enum' : f.type;
    const checks = r[kind] ? scalarRuleChecks(kind, r[kind], en) : [];
    if (checks.length === 0) return undefined;
    const dflt = en ? 0 : kind === 'string' ? '' : kind === 'bytes' ? new Uint8Array(0) : kind === 'bool' ? false : 0;
    return (rep) => run(checks, dflt, rep);
  }

  #fieldCheck(f: protobuf.Field, r: Rules): Check {
    if (f.map) {
      const mr = r.map ?? {};
      const keyChecks = mr.keys?.string ? stringChecks(mr.keys.string) : [];
      const value = this.#valueCheck(f, mr.values ?? {});
      const counts: Check[] = [];
      if (mr.min_pairs !== undefined) counts.push((n, rep) => void ((n as number) < Number(mr.min_pairs) && !(mr.ignore_empty && n === 0) && rep.add(`at least ${mr.min_pairs} entries required`)));
      if (mr.max_pairs !== undefined) counts.push((n, rep) => void ((n as number) > Number(mr.max_pairs) && rep.add(`at most ${mr.max_pairs} entries allowed`)));
      return (v, rep) => {
        if (typeof v !== 'object' || v === null || Array.isArray(v)) return rep.add('expected a map');
        const o = v as Obj;
        run(counts, Object.keys(o).length, rep);
        for (const k in o) {
          rep.path.push(`[${JSON.stringify(k)}]`);
          run(keyChecks, k, rep);
          value(o[k], rep);
          rep.path.pop();
        }
      };
    }
    if (f.repeated) {
      const rr = r.repeated ?? {};
      const item = this.#valueCheck(f, rr.items ?? {});
      const counts: Check[] = [];
      if (rr.min_items !== undefined) counts.push((v, rep) => void ((v as unknown[]).length < Number(rr.min_items) && !(rr.ignore_empty && (v as unknown[]).length === 0) && rep.add(`at least ${rr.min_items} items required`)));
      if (rr.max_items !== undefined) counts.push((v, rep) => void ((v as unknown[]).length > Number(rr.max_items) && rep.add(`at most ${rr.max_items} items allowed`)));
      if (rr.unique) counts.push((v, rep) => void (new Set((v as unknown[]).map((x) => JSON.stringify(x))).size !== (v as unknown[]).length && rep.add('items must be unique')));
      return (v, rep) => {
        if (!Array.isArray(v)) return rep.add('expected a list');
        run(counts, v, rep);
        for (let i = 0; i < v.length; i++) {
          rep.path.push(`[${i}]`);
          item(v[i], rep);
          rep.path.pop();
        }
      };
    }
    return this.#valueCheck(f, r);
  }

  /** One value of field `f` (the field itself, a list item or a map value) under `rules`. */
  #valueCheck(f: protobuf.Field, rules: Rules): Check {
    const rt = f.resolvedType;
    if (rt instanceof protobuf.Type) {
      if (rules.message?.skip) return () => {};
      const fullName = rt.fullName;
      if (fullName === '.google.protobuf.Any') return this.#anyCheck(rules.any ?? {});
      const message = this.#message(rt);
      const extra: Check[] = [];
      if (fullName === '.google.protobuf.Duration' && rules.duration) extra.push(...boundsChecks(rules.duration, durationNs));
      if (WRAPPERS.has(fullName)) {
        const kind = Object.keys(rules).find((k) => k !== 'message');
        if (kind) {
          const inner = scalarRuleChecks(kind, rules[kind]);
          extra.push((v, rep) => void ((v as Obj).value !== undefined && run(inner, (v as Obj).value, rep)));
        }
      }
      if (extra.length === 0) return message;
      return (v, rep) => {
        const before = rep.errors.length;
        message(v, rep);
        if (rep.errors.length === before) run(extra, v, rep);
      };
    }
    const en = rt instanceof protobuf.Enum ? rt : undefined;
    const kind = en ? 'enum' : f.type;
    const kindOk = kindCheck(f);
    const checks = rules[kind] ? scalarRuleChecks(kind, rules[kind], en) : [];
    return (v, rep) => {
      const before = rep.errors.length;
      kindOk(v, rep);
      if (rep.errors.length === before) run(checks, v, rep);
    };
  }
}
