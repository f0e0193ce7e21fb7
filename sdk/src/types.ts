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
}

export interface PluginResponse {
  status: number;
  readonly headers: PluginHeaders;
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

export interface PluginContext<C = Record<string, unknown>> {
  /** The chain entry's config. */
  readonly config: C;
  readonly tenant: string;
  readonly requestId: string;
  /** Answer the request now; the rest of the chain and the upstream are skipped. */
  respond(status: number, init?: RespondInit): EarlyResponse;
  /** Send the request to another service of the tenant. */
  route(service: string): void;
  /** A local token bucket per key, kept in the tenant's isolate. */
  rateLimit(key: string, options: RateLimitOptions): RateLimitResult;
  readonly log: PluginLog;
  readonly secrets: PluginSecrets;
}

export type HookReturn = void | EarlyResponse | undefined;

export interface Plugin<C = Record<string, unknown>> {
  onRequest?(req: PluginRequest, ctx: PluginContext<C>): HookReturn | Promise<HookReturn>;
  onResponse?(res: PluginResponse, ctx: PluginContext<C>): HookReturn | Promise<HookReturn>;
}
