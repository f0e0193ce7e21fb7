// The types a plugin author programs against. They describe the objects the guest runtime
// (./guest/) builds inside the tenant's isolate, so the same shapes hold in production and in
// createTestHost().

/** The Fetch `Headers` shape (names are case-insensitive; stored lower-cased, order kept). */
export interface PluginHeaders extends Iterable<[string, string]> {
  get(name: string): string | null;
  set(name: string, value: string): void;
  append(name: string, value: string): void;
  delete(name: string): void;
  has(name: string): boolean;
  forEach(callback: (value: string, name: string, headers: PluginHeaders) => void): void;
  entries(): IterableIterator<[string, string]>;
  keys(): IterableIterator<string>;
  values(): IterableIterator<string>;
  /** All values of `set-cookie`, which must not be joined. */
  getSetCookie(): string[];
}

export interface PluginRequest {
  readonly method: string;
  /** Path without the query string, e.g. "/api/users". */
  readonly path: string;
  /** Query string without "?", "" when absent. */
  readonly query: string;
  readonly host: string;
  readonly headers: PluginHeaders;
  readonly remoteAddress: string;
  /** "ip:port" the workload called, when its connection was redirected transparently. */
  readonly originalDestination?: string;
  /** The matched route's name (absent when the request reached a service by its VIP). */
  readonly route?: string;
  /** The service the route selected. */
  readonly service?: string;
  /**
   * The buffered request body. Only for a plugin that declares `body: { request: maxBytes }`; for
   * any other these reject with a TypeError. A request body over the smallest limit declared by the
   * chain is answered 413 before any plugin runs.
   */
  text(): Promise<string>;
  json(): Promise<unknown>;
  arrayBuffer(): Promise<ArrayBuffer>;
  /** Replaces the body sent upstream (at most the declared `body.request` bytes; content-length is fixed up). */
  setBody(body: BodyInit): void;
}

/** What setBody() and ctx.fetch() accept as a body (strings are sent as UTF-8). */
export type BodyInit = string | Uint8Array | ArrayBuffer;

export interface PluginResponse {
  status: number;
  readonly headers: PluginHeaders;
  /** The buffered upstream response body; only with `body: { response: maxBytes }` declared. */
  text(): Promise<string>;
  json(): Promise<unknown>;
  arrayBuffer(): Promise<ArrayBuffer>;
  /** Replaces the body sent to the client (at most the declared `body.response` bytes). */
  setBody(body: BodyInit): void;
}

export interface RespondInit {
  body?: string;
  headers?: Record<string, string> | Array<[string, string]> | PluginHeaders;
}

/** Returned by ctx.respond(); returning it (or not) from the hook has the same effect. */
export interface EarlyResponse {
  readonly status: number;
}

export interface RateLimitOptions {
  /** Tokens in the bucket (the burst), refilled evenly over windowMs. */
  limit: number;
  windowMs: number;
}

export interface RateLimitResult {
  allowed: boolean;
  remaining: number;
  /** 0 when allowed; otherwise how long until a token is available. */
  retryAfterMs: number;
}

export type LogFields = Record<string, unknown>;

export interface PluginLog {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

export interface PluginSecrets {
  /** A secret of the plugin's own tenant; undefined when it does not exist. */
  get(name: string): string | undefined;
}

/** A JSON Web Key (RFC 7517) as it appears in a JWKS. */
export interface JsonWebKey {
  kty: string;
  kid?: string;
  alg?: string;
  use?: string;
  [param: string]: unknown;
}

export interface JsonWebKeySet {
  keys: JsonWebKey[];
}

export type JwtAlgorithm =
  | 'HS256' | 'HS384' | 'HS512'
  | 'RS256' | 'RS384' | 'RS512'
  | 'PS256' | 'PS384' | 'PS512'
  | 'ES256' | 'ES384' | 'ES512'
  | 'EdDSA';

/**
 * How ctx.jwt.verify checks a token. Give exactly one key source: `secret` (the *name* of one of the
 * tenant's secrets, for HS256/384/512) or `jwks` (an inline key set, for RS/PS/ES/EdDSA).
 */
export interface JwtVerifyOptions {
  secret?: string;
  jwks?: JsonWebKeySet;
  /** Expected `iss` (any of, when a list). */
  issuer?: string | string[];
  /** Expected `aud` (any of, when a list). */
  audience?: string | string[];
  subject?: string;
  /** Seconds of leeway for exp / nbf / iat. */
  clockTolerance?: number;
  /** Allowed `alg` values; defaults to the key source's family (HS* for a secret, asymmetric for a JWKS). */
  algorithms?: JwtAlgorithm[];
  /** Claims that must be present. */
  requiredClaims?: string[];
}

export interface JwtClaims {
  iss?: string;
  sub?: string;
  aud?: string | string[];
  exp?: number;
  nbf?: number;
  iat?: number;
  jti?: string;
  [claim: string]: unknown;
}

export interface JwtHeader {
  alg: string;
  kid?: string;
  typ?: string;
  [param: string]: unknown;
}

export interface JwtVerifyResult {
  payload: JwtClaims;
  header: JwtHeader;
}

/** Why ctx.jwt.verify rejected (the rejection is an Error named "JwtVerifyError" with this `code`). */
export type JwtErrorCode =
  | 'ERR_JWT_EXPIRED'
  | 'ERR_JWT_CLAIM_INVALID'
  | 'ERR_JWT_SIGNATURE_INVALID'
  | 'ERR_JWT_NO_MATCHING_KEY'
  | 'ERR_JWT_MALFORMED'
  | 'ERR_JWT_ALG_NOT_ALLOWED'
  | 'ERR_JWT_OPTIONS'
  | 'ERR_CAPABILITY_LIMIT'
  | 'ERR_CAPABILITY_FAILED';

export interface JwtVerifyError extends Error {
  name: 'JwtVerifyError';
  code: JwtErrorCode;
  /** The claim that failed validation, for ERR_JWT_CLAIM_INVALID / ERR_JWT_EXPIRED. */
  claim?: string;
}

export interface PluginJwt {
  /**
   * Verifies a compact JWS token on the host (jose) and resolves with its claims and header, or
   * rejects with a JwtVerifyError. The isolate does no crypto and never sees a shared secret.
   */
  verify(token: string, options: JwtVerifyOptions): Promise<JwtVerifyResult>;
}

/** One edit of the upstream's response, made in onRequest: [op, name (lower case), value (not for delete)]. */
export type ResponseHeaderOp = ['set' | 'append', string, string] | ['delete', string];

/**
 * ctx.responseHeaders (onRequest only): edits the host makes to the upstream's response headers when
 * they arrive — in chain order, before any onResponse hook sees them — without calling the plugin
 * again. Names are case-insensitive; framing headers (content-length, transfer-encoding, connection,
 * ...) are the proxy's, as for res.headers. Not applied to early answers (ctx.respond) or to the
 * proxy's own error responses. Throws a TypeError in onResponse (edit res.headers there).
 */
export interface ResponseHeaderEdits {
  set(name: string, value: string): void;
  append(name: string, value: string): void;
  delete(name: string): void;
}

export interface PluginContext<C = Record<string, unknown>> {
  /** The chain entry's config. */
  readonly config: C;
  readonly tenant: string;
  readonly requestId: string;
  /** Answer the request now; the rest of the chain and the upstream are skipped. */
  respond(status: number, init?: RespondInit): EarlyResponse;
  /** Send the request to another service of the tenant. */
  route(service: string): void;
  /**
   * onRequest: response header edits the host applies when the upstream answers (see
   * ResponseHeaderEdits) — what an onResponse hook that only sets or removes headers would do, at
   * no second call into the plugin.
   */
  readonly responseHeaders: ResponseHeaderEdits;
  /**
   * onRequest: this entry's onResponse hook is not called for this request (a plugin whose response
   * work was done with ctx.responseHeaders, or that has none for this request). Throws in onResponse.
   */
  skipOnResponse(): void;
  /** A local token bucket per key, kept in the tenant's isolate. */
  rateLimit(key: string, options: RateLimitOptions): RateLimitResult;
  readonly log: PluginLog;
  readonly secrets: PluginSecrets;
  /** JWT verification, performed by the host (an async host capability). */
  readonly jwt: PluginJwt;
  /**
   * Resolves after `ms` (0..60000) without using the isolate's CPU: a host timer. The time counts
   * against the hook call's capability wall budget (5 s by default); a sleep that does not fit is
   * refused up front. Rejects with an Error whose `code` is ERR_SLEEP_OPTIONS, ERR_CAPABILITY_LIMIT
   * or ERR_CAPABILITY_FAILED.
   */
  sleep(ms: number): Promise<void>;
  /**
   * A Fetch-API call to one of this tenant's own services: `http://<service>/path?query` only (no
   * https, userinfo, port, IP or other host — those reject without a request). Performed by the
   * host through the data plane; `init.timeoutMs` (default 1000) must fit in the hook call's
   * capability wall budget. Rejects with an Error named "FetchError" whose `code` is one of
   * FetchErrorCode; a response body over 1 MiB rejects with ERR_FETCH_TOO_LARGE.
   */
  fetch(url: string, init?: FetchInit): Promise<FetchResponse>;
  /** Counters and histograms exported at /metrics as isomesh_plugin_<name> (see PluginMetrics). */
  readonly metrics: PluginMetrics;
}

export interface FetchInit {
  /** Default GET. */
  method?: string;
  headers?: Record<string, string> | Array<[string, string]> | PluginHeaders;
  /** Not allowed with GET or HEAD. At most 1 MiB. */
  body?: BodyInit;
  /** Default 1000. */
  timeoutMs?: number;
}

export interface FetchResponse {
  readonly status: number;
  /** status 200..299 */
  readonly ok: boolean;
  readonly headers: PluginHeaders;
  text(): Promise<string>;
  json(): Promise<unknown>;
  arrayBuffer(): Promise<ArrayBuffer>;
}

export type FetchErrorCode =
  | 'ERR_FETCH_OPTIONS'
  | 'ERR_FETCH_UNKNOWN_SERVICE'
  | 'ERR_FETCH_UNAVAILABLE'
  | 'ERR_FETCH_TIMEOUT'
  | 'ERR_FETCH_TOO_LARGE'
  | 'ERR_FETCH_FAILED'
  | 'ERR_CAPABILITY_LIMIT'
  | 'ERR_CAPABILITY_FAILED';

/** Metric labels: at most 5, names [a-zA-Z_][a-zA-Z0-9_]* (not tenant, plugin, le), values ≤ 128 chars. */
export type MetricLabels = Record<string, string | number | boolean>;

/**
 * Plugin metrics. Names follow Prometheus rules ([a-zA-Z_:][a-zA-Z0-9_:]*, at most 64 characters);
 * a counter `x` is exported as `isomesh_plugin_x_total` (a name that already ends in `_total` keeps
 * it), a histogram `x` as `isomesh_plugin_x` with the default buckets; every series also carries
 * `tenant` and `plugin`. A tenant has at most 1,000 series; a name keeps the type and label names it
 * was first used with. What does not fit is dropped and counted in
 * `isomesh_plugin_metrics_dropped_total{tenant,plugin}`. Invalid names or values throw TypeError.
 */
export interface PluginMetrics {
  counter(name: string, labels?: MetricLabels): { inc(n?: number): void };
  histogram(name: string, labels?: MetricLabels): { observe(value: number): void };
}

export type HookReturn = void | EarlyResponse | undefined;

/** Buffered body access, per direction: the largest body (bytes, 1..64 MiB) the plugin reads. */
export interface BodyDeclaration {
  request?: number;
  response?: number;
}

/** A JSON Schema (draft 2020-12 by default, or draft-07 when `$schema` says so). */
export type JsonSchema = Record<string, unknown>;

export interface Plugin<C = Record<string, unknown>> {
  /**
   * Ask for the buffered body. Without it the body streams and req/res.text() etc. reject. The host
   * buffers at most the smallest limit among the chain's entries that declared one.
   */
  body?: BodyDeclaration;
  /** The chain entry's config must match this schema: PUT …/chain refuses a config that does not. */
  configSchema?: JsonSchema;
  onRequest?(req: PluginRequest, ctx: PluginContext<C>): HookReturn | Promise<HookReturn>;
  onResponse?(res: PluginResponse, ctx: PluginContext<C>): HookReturn | Promise<HookReturn>;
}
