// json-enricher: reads the JSON request body, looks the value of one field up at one of the tenant's
// own services (ctx.fetch, through the data plane's load balancing and timeouts) and writes the answer
// into the body before it goes upstream. Counts every outcome and the lookup latency (ctx.metrics).

import { configParser, definePlugin, type PluginContext } from '@isomesh/sdk';

export interface Config {
  service: string;
  path: string;
  idField: string;
  into: string;
  timeoutMs: number;
  onError: 'continue' | 'reject';
  methods: string[];
}

/** The largest request body this plugin buffers (the host answers 413 before it runs otherwise). */
const MAX_BODY = 64 * 1024;
const SERVICE_RE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const FIELDS = ['service', 'path', 'idField', 'into', 'timeoutMs', 'onError', 'methods'];

// The same schema as config.schema.json (examples.test.ts checks they agree): PUT …/chain enforces it.
const configSchema = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  title: 'json-enricher config',
  type: 'object',
  additionalProperties: false,
  required: ['service', 'path', 'idField', 'into'],
  properties: {
    service: { type: 'string', pattern: '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$', description: "The tenant's service that answers lookups." },
    path: { type: 'string', pattern: '^/', description: 'Lookup path; {id} is replaced by the URL-encoded id.' },
    idField: { type: 'string', minLength: 1, description: "Top-level field of the request's JSON body holding the id." },
    into: { type: 'string', minLength: 1, description: "Top-level field the lookup's JSON answer is written to." },
    timeoutMs: { type: 'integer', minimum: 1, maximum: 5000, default: 200, description: 'Lookup timeout.' },
    onError: { enum: ['continue', 'reject'], default: 'continue', description: 'A failed lookup: forward the body unchanged, or answer 502.' },
    methods: { type: 'array', items: { type: 'string' }, minItems: 1, default: ['POST', 'PUT', 'PATCH'], description: 'Methods whose bodies are enriched.' },
  },
};

export function parseConfig(raw: unknown): Config {
  const c = (raw ?? {}) as Record<string, unknown>;
  for (const k of Object.keys(c)) if (!FIELDS.includes(k)) throw new TypeError(`json-enricher: unknown field "${k}"`);
  const str = (k: string): string => {
    const v = c[k];
    if (typeof v !== 'string' || v.length === 0) throw new TypeError(`json-enricher: ${k} must be a non-empty string`);
    return v;
  };
  const service = str('service');
  if (!SERVICE_RE.test(service)) throw new TypeError('json-enricher: service must be a service name');
  const path = str('path');
  if (!path.startsWith('/')) throw new TypeError('json-enricher: path must start with "/"');
  const timeoutMs = c.timeoutMs ?? 200;
  if (typeof timeoutMs !== 'number' || !Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > 5000) throw new TypeError('json-enricher: timeoutMs must be 1..5000');
  const onError = c.onError ?? 'continue';
  if (onError !== 'continue' && onError !== 'reject') throw new TypeError('json-enricher: onError must be "continue" or "reject"');
  const methods = c.methods ?? ['POST', 'PUT', 'PATCH'];
  if (!Array.isArray(methods) || methods.length === 0 || !methods.every((m) => typeof m === 'string')) throw new TypeError('json-enricher: methods must be a list of methods');
  return { service, path, idField: str('idField'), into: str('into'), timeoutMs, onError, methods: methods.map((m: string) => m.toUpperCase()) };
}

const settings = configParser(parseConfig);

type Outcome = 'enriched' | 'skipped' | 'no_id' | 'not_found' | 'lookup_failed' | 'bad_body';

function count(ctx: PluginContext<Config>, outcome: Outcome): void {
  ctx.metrics.counter('json_enricher_requests', { outcome }).inc();
}

export default definePlugin<Config>({
  body: { request: MAX_BODY },
  configSchema,

  async onRequest(req, ctx) {
    const cfg = settings(ctx.config);
    const type = req.headers.get('content-type') ?? '';
    if (!cfg.methods.includes(req.method) || !/^application\/(.+\+)?json\b/i.test(type)) return count(ctx, 'skipped');
    let doc: unknown;
    try {
      doc = await req.json();
    } catch {
      count(ctx, 'bad_body');
      return ctx.respond(400, { body: 'request body is not valid JSON', headers: { 'content-type': 'text/plain' } });
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) return count(ctx, 'skipped');
    const body = doc as Record<string, unknown>;
    const id = body[cfg.idField];
    if (typeof id !== 'string' && typeof id !== 'number') return count(ctx, 'no_id');

    const started = Date.now();
    let answer: unknown;
    try {
      const res = await ctx.fetch(`http://${cfg.service}${cfg.path.replace('{id}', encodeURIComponent(String(id)))}`, {
        headers: { accept: 'application/json', 'x-request-id': ctx.requestId },
        timeoutMs: cfg.timeoutMs,
      });
      ctx.metrics.histogram('json_enricher_lookup_seconds', { status: String(res.status) }).observe((Date.now() - started) / 1000);
      if (res.status === 404) {
        count(ctx, 'not_found');
        return;
      }
      if (!res.ok) throw new Error(`lookup answered ${res.status}`);
      answer = await res.json();
    } catch (e) {
      count(ctx, 'lookup_failed');
      ctx.log.warn('lookup failed', { service: cfg.service, error: e instanceof Error ? e.message : String(e) });
      if (cfg.onError === 'reject') return ctx.respond(502, { body: 'lookup failed', headers: { 'content-type': 'text/plain' } });
      return;
    }
    const out = JSON.stringify({ ...body, [cfg.into]: answer });
    if (out.length > MAX_BODY) {
      count(ctx, 'lookup_failed');
      ctx.log.warn('enriched body would exceed the plugin body limit; forwarded unchanged', { bytes: out.length });
      return;
    }
    req.setBody(out);
    req.headers.set('x-enriched-by', 'json-enricher');
    count(ctx, 'enriched');
  },
});
