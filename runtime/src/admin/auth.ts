// Bearer-token authorisation. The admin token is compared in constant time (equal-length SHA-256
// digests); tenant tokens exist only as SHA-256 hashes in the store. A tenant token used on another
// tenant's path gets the same 403 whether or not that tenant exists, so it learns nothing.

import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { IsomeshError } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';
import type { Store } from '../store/index.ts';

/** Who may call a route: anyone, the admin only, or the admin and the path's own tenant. */
export type AuthLevel = 'public' | 'admin' | 'tenant';

export type Principal = { kind: 'admin' } | { kind: 'tenant'; tenant: string };

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Defaults to 'admin': a route registered without a level is admin-only. */
    auth?: AuthLevel;
    /** The kind of object the route's :name parameter names (for the bad-name error code). */
    kind?: 'service' | 'route' | 'plugin' | 'secret' | 'workload' | 'ratelimit';
    /**
     * Error code for a body that fails the route's JSON schema (instead of ISOMESH_ERR_API_VALIDATION),
     * optionally only for errors under the listed top-level fields.
     */
    invalidBody?: { code: ErrorCode; fields?: readonly string[] };
    /** Route also accepts application/javascript bodies. */
    javascript?: boolean;
    /** Error code for a body over this route's limit (instead of ISOMESH_ERR_API_BODY_TOO_LARGE). */
    tooLargeCode?: 'ISOMESH_ERR_PLUGIN_TOO_LARGE';
  }
  interface FastifyRequest {
    principal?: Principal;
  }
}

function digest(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

export class TokenAuth {
  private readonly store: Store;
  private readonly adminDigest: Buffer;

  constructor(store: Store, adminToken: string) {
    if (adminToken.length < 16) throw new Error('admin token must be at least 16 characters');
    this.store = store;
    this.adminDigest = digest(adminToken);
  }

  /** Who holds this token, or undefined for an unknown token. */
  identify(token: string): Principal | undefined {
    if (timingSafeEqual(digest(token), this.adminDigest)) return { kind: 'admin' };
    const owner = this.store.resolveToken(token);
    if (!owner) return undefined;
    return owner.tenant === null ? { kind: 'admin' } : { kind: 'tenant', tenant: owner.tenant };
  }

  /** onRequest check: throws 401/403 IsomeshErrors; sets request.principal. */
  authorize(request: FastifyRequest): void {
    if (request.is404) return; // unknown routes answer 404 regardless of credentials
    const level = request.routeOptions.config.auth ?? 'admin';
    if (level === 'public') return;
    const header = request.headers.authorization;
    if (header === undefined || header === '') {
      throw new IsomeshError('ISOMESH_ERR_AUTH_MISSING_TOKEN', 'missing "Authorization: Bearer <token>" header');
    }
    const m = /^Bearer +(\S+) *$/i.exec(header);
    const principal = m ? this.identify(m[1]!) : undefined;
    if (!principal) throw new IsomeshError('ISOMESH_ERR_AUTH_INVALID_TOKEN', 'the bearer token is not valid');
    request.principal = principal;
    if (principal.kind === 'admin') return;
    if (level === 'admin') throw new IsomeshError('ISOMESH_ERR_AUTH_FORBIDDEN', 'this operation needs the admin token');
    const tenant = (request.params as { tenant?: string } | undefined)?.tenant;
    if (tenant !== principal.tenant) {
      throw new IsomeshError('ISOMESH_ERR_AUTH_FORBIDDEN', 'this token may only access its own tenant');
    }
  }
}
