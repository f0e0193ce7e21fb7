// A thin client for the management API (API.md). It only knows HTTP and the error envelope;
// each command knows its own paths and payloads.
import { ApiError, ServerUnreachableError } from './cli-errors.ts';

export interface ApiResponse<T = unknown> {
  status: number;
  body: T;
}

export interface RequestOptions {
  /** Sent as application/json. */
  json?: unknown;
  /** Sent as-is with `contentType`. */
  body?: string | Uint8Array;
  contentType?: string;
}

// Errors whose cause means "no HTTP conversation happened" rather than "the server said no".
const UNREACHABLE_CODES = new Set([
  'ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT',
  'ECONNRESET', 'EPIPE', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET',
]);

export class ManagementClient {
  readonly server: string;
  readonly #token: string | undefined;
  readonly #timeoutMs: number;

  constructor(server: string, token?: string, timeoutMs = 30_000) {
    this.server = server.replace(/\/+$/, '');
    this.#token = token;
    this.#timeoutMs = timeoutMs;
  }

  get<T = unknown>(path: string): Promise<ApiResponse<T>> {
    return this.request<T>('GET', path);
  }

  put<T = unknown>(path: string, json: unknown): Promise<ApiResponse<T>> {
    return this.request<T>('PUT', path, { json });
  }

  post<T = unknown>(path: string, options: RequestOptions = {}): Promise<ApiResponse<T>> {
    return this.request<T>('POST', path, options);
  }

  delete<T = unknown>(path: string): Promise<ApiResponse<T>> {
    return this.request<T>('DELETE', path);
  }

  async request<T = unknown>(method: string, path: string, options: RequestOptions = {}): Promise<ApiResponse<T>> {
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    let body: string | Uint8Array | undefined;
    if (options.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.json);
    } else if (options.body !== undefined) {
      headers['content-type'] = options.contentType ?? 'application/octet-stream';
      body = options.body;
    }
    let res: Response;
    try {
      res = await fetch(this.server + path, {
        method, headers, body, signal: AbortSignal.timeout(this.#timeoutMs),
      });
    } catch (err) {
      throw this.#transportError(err);
    }
    const text = await res.text();
    const parsed = parseJson(text);
    if (!res.ok) throw toApiError(res.status, res.statusText, parsed, text);
    return { status: res.status, body: (parsed === undefined ? text : parsed) as T };
  }

  #transportError(err: unknown): Error {
    const e = err as { name?: string; cause?: { code?: string; message?: string } };
    if (e?.name === 'TimeoutError') return new ServerUnreachableError(this.server, `no answer within ${this.#timeoutMs} ms`);
    const code = e?.cause?.code;
    if (code && UNREACHABLE_CODES.has(code)) return new ServerUnreachableError(this.server, code);
    if (e?.name === 'TypeError') {
      // fetch() throws a TypeError both for bad URLs and for network failures; tell them apart.
      if (!URL.canParse(this.server)) return new ServerUnreachableError(this.server, 'not a valid URL');
      return new ServerUnreachableError(this.server, e.cause?.message ?? 'network error');
    }
    return err as Error;
  }
}

function parseJson(text: string): unknown {
  if (!text) return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function toApiError(status: number, statusText: string, parsed: unknown, text: string): ApiError {
  const envelope = (parsed as { error?: { code?: unknown; message?: unknown } } | undefined)?.error;
  if (envelope && typeof envelope === 'object') {
    const code = typeof envelope.code === 'string' ? envelope.code : `HTTP_${status}`;
    const message = typeof envelope.message === 'string' ? envelope.message : statusText || `HTTP ${status}`;
    return new ApiError(status, code, message, envelope);
  }
  const snippet = text.trim().slice(0, 200);
  return new ApiError(status, `HTTP_${status}`, snippet || statusText || `HTTP ${status}`);
}

/** `/v1/tenants/a/plugins/b` from segments, each URL-encoded. */
export function apiPath(...segments: Array<string | number>): string {
  return '/' + segments.map((s) => encodeURIComponent(String(s))).join('/');
}
