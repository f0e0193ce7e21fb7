// Maps every error the admin server can meet — IsomeshError, Ajv validation failures, Fastify's own
// FST_ERR_* — to the API's one error shape {"error":{"code","message"}}. Anything unrecognised is a
// fault: 500 with a generic message (details go to the log, never to the caller).

import type { FastifyRequest } from 'fastify';
import { IsomeshError } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';

interface AjvError {
  instancePath: string;
  keyword: string;
  params: Record<string, unknown>;
  message?: string;
  /** Present because the server's Ajv runs with verbose: the schema object holding the keyword. */
  parentSchema?: { description?: string };
}

interface FastifyLikeError extends Error {
  code?: string;
  statusCode?: number;
  validation?: AjvError[];
  validationContext?: string;
}

const PARAM_NAME_CODES: Record<string, ErrorCode> = {
  tenant: 'ISOMESH_ERR_TENANT_BAD_NAME',
  service: 'ISOMESH_ERR_SERVICE_BAD_NAME',
  route: 'ISOMESH_ERR_ROUTE_BAD_NAME',
  plugin: 'ISOMESH_ERR_PLUGIN_BAD_NAME',
  secret: 'ISOMESH_ERR_SECRET_BAD_NAME',
  workload: 'ISOMESH_ERR_WORKLOAD_BAD_NAME',
  ratelimit: 'ISOMESH_ERR_RATELIMIT_BAD_NAME',
};

/** "body/endpoints/0/port must be ≤ 65535" — the location first, then what is wrong. */
export function describeAjvError(context: string, e: AjvError): string {
  const at = `${context}${e.instancePath}`;
  const p = e.params;
  switch (e.keyword) {
    case 'required':
      return `${at}/${String(p.missingProperty)} is required`;
    case 'additionalProperties':
      return `${at}/${String(p.additionalProperty)} is not a known field`;
    case 'maximum':
      return `${at} must be ≤ ${String(p.limit)}`;
    case 'minimum':
      return `${at} must be ≥ ${String(p.limit)}`;
    case 'type':
      return `${at} must be ${String(p.type).replace(',', ' or ')}`;
    case 'enum':
      return `${at} must be one of ${(p.allowedValues as unknown[]).map((v) => JSON.stringify(v)).join(', ')}`;
    case 'pattern': {
      const what = e.parentSchema?.description;
      return what ? `${at} must be ${what}, matching ${String(p.pattern)}` : `${at} must match ${String(p.pattern)}`;
    }
    case 'minItems':
      return `${at} must have at least ${String(p.limit)} item(s)`;
    case 'maxItems':
      return `${at} must have at most ${String(p.limit)} item(s)`;
    case 'minLength':
      return `${at} must not be empty`;
    case 'maxLength':
      return `${at} must be at most ${String(p.limit)} characters`;
    case 'uniqueItems':
      return `${at} must not repeat an item (items ${String(p.j)} and ${String(p.i)} are equal)`;
    case 'oneOf':
    case 'anyOf':
      return `${at} must be ${e.parentSchema?.description ?? 'one of the documented forms'}`;
    default:
      return `${at} ${e.message ?? 'is invalid'}`;
  }
}

const FASTIFY_CODES: Record<string, ErrorCode> = {
  FST_ERR_CTP_INVALID_JSON_BODY: 'ISOMESH_ERR_API_BAD_JSON',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'ISOMESH_ERR_API_BAD_JSON',
  FST_ERR_CTP_BODY_TOO_LARGE: 'ISOMESH_ERR_API_BODY_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'ISOMESH_ERR_API_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'ISOMESH_ERR_API_BAD_REQUEST',
  FST_ERR_CTP_EMPTY_TYPE: 'ISOMESH_ERR_API_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_TYPE: 'ISOMESH_ERR_API_UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_BAD_URL: 'ISOMESH_ERR_API_BAD_REQUEST',
  FST_ERR_MAX_PARAM_LENGTH: 'ISOMESH_ERR_API_BAD_REQUEST',
  FST_ERR_ASYNC_CONSTRAINT: 'ISOMESH_ERR_API_BAD_REQUEST',
};

/**
 * The error to report. Ajv lists a failed oneOf's branch errors before the oneOf error itself; when
 * exactly one branch got past the value's own level (e.g. {"header": "bad name"} matched the header
 * form's shape, then failed its pattern), its error says more than "must be one of...".
 */
function reportable(errors: AjvError[]): AjvError {
  const alt = errors.findLast((e) => e.keyword === 'oneOf' || e.keyword === 'anyOf');
  if (!alt) return errors[0]!;
  const deeper = errors.filter((e) => e !== alt && e.instancePath.startsWith(`${alt.instancePath}/`));
  return deeper.length === 1 ? deeper[0]! : alt;
}

/** The top-level body field an error is about ("" when it is about the body as a whole). */
function topField(e: AjvError): string {
  const seg = e.instancePath.split('/')[1];
  if (seg !== undefined) return seg;
  if (e.keyword === 'required') return String(e.params.missingProperty);
  if (e.keyword === 'additionalProperties') return String(e.params.additionalProperty);
  return '';
}

/** Turns any thrown value into an IsomeshError fit to send. `fault` is true for 5xx. */
export function toIsomeshError(raw: unknown, request: FastifyRequest): { error: IsomeshError; fault: boolean } {
  if (raw instanceof IsomeshError) return { error: raw, fault: !raw.isUserError };
  const err = raw as FastifyLikeError;
  if (Array.isArray(err.validation) && err.validation.length > 0) {
    const context = err.validationContext ?? 'request';
    const first = reportable(err.validation);
    if (context === 'params') {
      const param = first.instancePath.replace(/^\//, '');
      const kind = param === 'name' ? (request.routeOptions.config.kind ?? 'plugin') : param;
      const code = PARAM_NAME_CODES[kind] ?? 'ISOMESH_ERR_API_VALIDATION';
      const value = (request.params as Record<string, unknown> | undefined)?.[param];
      return {
        error: new IsomeshError(code, `${kind === 'ratelimit' ? 'rate limit' : kind} ${JSON.stringify(value)} is invalid: ${describeAjvError('params', first)}`),
        fault: false,
      };
    }
    const own = context === 'body' ? request.routeOptions.config.invalidBody : undefined;
    const code = own && (!own.fields || own.fields.includes(topField(first))) ? own.code : 'ISOMESH_ERR_API_VALIDATION';
    return { error: new IsomeshError(code, describeAjvError(context, first)), fault: false };
  }
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' && request.routeOptions.config.tooLargeCode) {
    return { error: new IsomeshError(request.routeOptions.config.tooLargeCode), fault: false };
  }
  const mapped = err.code ? FASTIFY_CODES[err.code] : undefined;
  if (mapped) {
    const detail = mapped === 'ISOMESH_ERR_API_UNSUPPORTED_MEDIA_TYPE'
      ? `unsupported content type ${JSON.stringify(request.headers['content-type'] ?? '')}; send application/json`
      : err.message;
    return { error: new IsomeshError(mapped, detail), fault: false };
  }
  const status = err.statusCode;
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const code: ErrorCode = status === 413 ? 'ISOMESH_ERR_API_BODY_TOO_LARGE'
      : status === 415 ? 'ISOMESH_ERR_API_UNSUPPORTED_MEDIA_TYPE'
      : status === 404 ? 'ISOMESH_ERR_API_NOT_FOUND'
      : 'ISOMESH_ERR_API_BAD_REQUEST';
    const e = new IsomeshError(code, err.message);
    return { error: e, fault: false };
  }
  return { error: new IsomeshError('ISOMESH_ERR_INTERNAL'), fault: true };
}
