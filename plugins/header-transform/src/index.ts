// header-transform: remove / rename / set / add request and response headers, with values built from
// templates ({tenant} {requestId} {method} {path} {host} {remoteAddress} {status} {header:name}).
// Templates are compiled once per config object into parts, so a request only concatenates strings.

import { configParser, definePlugin, type PluginHeaders } from '@isomesh/sdk';

export interface HeaderOps {
  /** Header names to delete. */
  remove?: string[];
  /** from → to: moves every value of `from` to `to` (replacing `to`). */
  rename?: Record<string, string>;
  /** name → template: replaces the header. */
  set?: Record<string, string>;
  /** name → template: appends a value. */
  add?: Record<string, string>;
}

export interface HeaderTransformConfig {
  request?: HeaderOps;
  response?: HeaderOps;
}

type Part = string | { v: 'tenant' | 'requestId' | 'method' | 'path' | 'host' | 'remoteAddress' | 'status' } | { h: string };
type Template = Part[];

interface CompiledOps {
  remove: string[];
  rename: Array<[string, string]>;
  set: Array<[string, Template]>;
  add: Array<[string, Template]>;
}

export interface HeaderTransformSettings {
  request: CompiledOps;
  response: CompiledOps;
  /**
   * The response operations need nothing of the response (no rename, no {status}, no {header:…}):
   * onRequest hands them to the host as ctx.responseHeaders edits and onResponse is skipped.
   */
  responseStatic: boolean;
}

interface Vars {
  tenant: string;
  requestId: string;
  method?: string;
  path?: string;
  host?: string;
  remoteAddress?: string;
  status?: number;
}

const HEADER_RE = /^[!#$%&'*+\-.^_`|~0-9a-z]+$/;
// Message framing belongs to the proxy: changing these could smuggle or truncate requests.
const PROTECTED = new Set(['content-length', 'transfer-encoding', 'connection', 'upgrade', 'te', 'trailer', 'keep-alive', 'proxy-connection']);
const REQUEST_VARS = new Set(['tenant', 'requestId', 'method', 'path', 'host', 'remoteAddress']);
const RESPONSE_VARS = new Set(['tenant', 'requestId', 'status']);
const MAX_VALUE = 8192;

class ConfigError extends Error {
  constructor(message: string) {
    super(`header-transform config: ${message}`);
    this.name = 'ConfigError';
  }
}

function headerName(name: unknown, where: string): string {
  if (typeof name !== 'string' || !HEADER_RE.test(name)) throw new ConfigError(`${where}: ${JSON.stringify(name)} is not a lower-case header name`);
  if (PROTECTED.has(name)) throw new ConfigError(`${where}: "${name}" controls message framing and cannot be changed`);
  return name;
}

/** "{tenant}-{header:x-user}" → ['', {v:'tenant'}, '-', {h:'x-user'}]; "{{" and "}}" are literal braces. */
export function compileTemplate(text: unknown, vars: Set<string>, where: string): Template {
  if (typeof text !== 'string') throw new ConfigError(`${where} must be a string template`);
  if (/[\r\n\0]/.test(text)) throw new ConfigError(`${where} contains CR, LF or NUL`);
  const parts: Template = [];
  let literal = '';
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] as string;
    if ((ch === '{' || ch === '}') && text[i + 1] === ch) {
      literal += ch;
      i++;
      continue;
    }
    if (ch === '}') throw new ConfigError(`${where}: unmatched "}" (write "}}" for a literal brace)`);
    if (ch !== '{') {
      literal += ch;
      continue;
    }
    const end = text.indexOf('}', i);
    if (end < 0) throw new ConfigError(`${where}: unclosed "{" (write "{{" for a literal brace)`);
    const name = text.slice(i + 1, end);
    if (literal !== '') parts.push(literal);
    literal = '';
    if (name.startsWith('header:')) {
      const h = name.slice(7);
      if (!HEADER_RE.test(h)) throw new ConfigError(`${where}: {header:${h}} needs a lower-case header name`);
      parts.push({ h });
    } else if (vars.has(name)) {
      parts.push({ v: name as 'tenant' });
    } else {
      throw new ConfigError(`${where}: unknown placeholder {${name}} (allowed: ${[...vars].map((v) => `{${v}}`).join(' ')} {header:<name>})`);
    }
    i = end;
  }
  if (literal !== '' || parts.length === 0) parts.push(literal);
  return parts;
}

function compileOps(raw: unknown, where: 'request' | 'response'): CompiledOps {
  const ops: CompiledOps = { remove: [], rename: [], set: [], add: [] };
  if (raw === undefined) return ops;
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError(`${where} must be an object`);
  const o = raw as Record<string, unknown>;
  for (const k of Object.keys(o)) if (!['remove', 'rename', 'set', 'add'].includes(k)) throw new ConfigError(`${where}: unknown operation "${k}"`);
  const vars = where === 'request' ? REQUEST_VARS : RESPONSE_VARS;
  if (o.remove !== undefined) {
    if (!Array.isArray(o.remove)) throw new ConfigError(`${where}.remove must be an array of header names`);
    ops.remove = o.remove.map((n) => headerName(n, `${where}.remove`));
  }
  const map = (key: 'rename' | 'set' | 'add'): Array<[string, unknown]> => {
    const m = o[key];
    if (m === undefined) return [];
    if (m === null || typeof m !== 'object' || Array.isArray(m)) throw new ConfigError(`${where}.${key} must map header names to ${key === 'rename' ? 'header names' : 'templates'}`);
    return Object.entries(m as Record<string, unknown>);
  };
  ops.rename = map('rename').map(([from, to]) => [headerName(from, `${where}.rename`), headerName(to, `${where}.rename.${from}`)]);
  ops.set = map('set').map(([name, t]) => [headerName(name, `${where}.set`), compileTemplate(t, vars, `${where}.set.${name}`)]);
  ops.add = map('add').map(([name, t]) => [headerName(name, `${where}.add`), compileTemplate(t, vars, `${where}.add.${name}`)]);
  return ops;
}

export function parseConfig(raw: unknown): HeaderTransformSettings {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new ConfigError('config must be an object');
  const extra = Object.keys(raw).find((k) => k !== 'request' && k !== 'response');
  if (extra !== undefined) throw new ConfigError(`unknown field "${extra}"`);
  const c = raw as HeaderTransformConfig;
  const response = compileOps(c.response, 'response');
  const needsResponse = (t: Template): boolean => t.some((p) => typeof p !== 'string' && ('h' in p || p.v === 'status'));
  const responseStatic = response.rename.length === 0 && ![...response.set, ...response.add].some(([, t]) => needsResponse(t));
  return { request: compileOps(c.request, 'request'), response, responseStatic };
}

/** Parsed once per config object; a bad config fails the chain entry on every request. */
const settings = configParser<HeaderTransformSettings>(parseConfig);

/** Header reads see the headers as they were before this entry changed anything. */
function render(t: Template, vars: Vars, original: Map<string, string | null>, headers: PluginHeaders): string {
  let out = '';
  for (const p of t) {
    if (typeof p === 'string') out += p;
    else if ('h' in p) {
      if (!original.has(p.h)) original.set(p.h, headers.get(p.h));
      out += original.get(p.h) ?? '';
    } else out += String(vars[p.v] ?? '');
  }
  return out.length > MAX_VALUE ? out.slice(0, MAX_VALUE) : out;
}

/**
 * Runs `ops` reading `headers` and writing `out` — the same headers, or (static response rules, read
 * nothing) ctx.responseHeaders, whose edits the host makes in this same order when the response arrives.
 */
function apply(ops: CompiledOps, headers: PluginHeaders, vars: Vars, out: Pick<PluginHeaders, 'delete' | 'set' | 'append'> = headers): void {
  // Templates read the incoming values, so order of operations never changes what {header:x} sees.
  const original = new Map<string, string | null>();
  for (const [, t] of [...ops.set, ...ops.add]) for (const p of t) if (typeof p !== 'string' && 'h' in p) original.set(p.h, headers.get(p.h));
  for (const name of ops.remove) out.delete(name);
  for (const [from, to] of ops.rename) {
    if (!headers.has(from)) continue;
    const values = from === 'set-cookie' ? headers.getSetCookie() : [headers.get(from) as string];
    out.delete(from);
    out.delete(to);
    for (const v of values) out.append(to, v);
  }
  // An empty expansion writes nothing: "x-user: {header:x-user}" must not invent an empty header.
  for (const [name, t] of ops.set) {
    const v = render(t, vars, original, headers);
    if (v !== '') out.set(name, v);
  }
  for (const [name, t] of ops.add) {
    const v = render(t, vars, original, headers);
    if (v !== '') out.append(name, v);
  }
}

export default definePlugin<HeaderTransformConfig>({
  onRequest(req, ctx) {
    const s = settings(ctx.config);
    apply(s.request, req.headers, {
      tenant: ctx.tenant,
      requestId: ctx.requestId,
      method: req.method,
      path: req.path,
      host: req.host,
      remoteAddress: req.remoteAddress,
    });
    if (!s.responseStatic) return;
    // Response operations that need nothing of the response: handed to the host now (it makes them
    // when the response arrives), and no onResponse call for this request.
    apply(s.response, req.headers, { tenant: ctx.tenant, requestId: ctx.requestId }, ctx.responseHeaders);
    ctx.skipOnResponse();
  },
  onResponse(res, ctx) {
    const s = settings(ctx.config);
    apply(s.response, res.headers, { tenant: ctx.tenant, requestId: ctx.requestId, status: res.status });
  },
});
