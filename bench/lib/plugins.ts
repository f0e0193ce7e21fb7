// Plugin sources the benchmarks publish: a no-op, a small chain of three (request header, header
// gate, response header), the realistic chain of three example plugins (jwt-auth, rate-limit,
// header-transform), a light plugin and a CPU burner for the noisy-neighbour run.
import { createHmac } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export const NOOP = `export default { onRequest() {} };`;

export const CHAIN3: Array<[string, string]> = [
  ['tag', `import { definePlugin } from '@isomesh/sdk';
export default definePlugin({ onRequest(req, ctx) { req.headers.set('x-tenant', ctx.tenant); } });`],
  ['gate', `export default { onRequest(req, ctx) { if (req.headers.get('x-blocked') !== null) return ctx.respond(403, { body: 'blocked' }); } };`],
  ['stamp', `export default { onResponse(res) { res.headers.set('x-served-by', 'isomesh'); } };`],
];

/** Answers early with its version tag, so a client can tell which version served it. */
export function versionTag(tag: string): string {
  return `export default { onRequest(req, ctx) { return ctx.respond(200, { body: '${tag}' }); } };`;
}

export const LIGHT = `export default { onRequest(req, ctx) { req.headers.set('x-tenant', ctx.tenant); } };`;

/** Spins for `ms` of wall time (≈ CPU time: nothing else runs in the isolate) on every request. */
export function burner(ms: number): string {
  return `export default { onRequest() { const end = Date.now() + ${ms}; let x = 0; while (Date.now() < end) x++; if (x < 0) throw new Error('never'); } };`;
}

// The realistic chain: the example plugins as users publish them (plugins/<name>/src/index.ts),
// in the order an operator would put them: authenticate, then rate-limit, then rewrite headers.
const PLUGINS_DIR = path.resolve(import.meta.dirname, '..', '..', 'plugins');
const JWT_SECRET_NAME = 'jwt-key';
const JWT_KEY = 'bench-hs256-key-0123456789abcdef0123456789abcdef';

function exampleSource(name: string): string {
  return fs.readFileSync(path.join(PLUGINS_DIR, name, 'src', 'index.ts'), 'utf8');
}

export interface RealisticChain {
  plugins: Array<[string, string, Record<string, unknown>]>;
  secrets: Record<string, string>;
  /**
   * A CPU-per-second quota no benchmark reaches (like the rate-limit's limit): the default 500 ms/s
   * answered 429 ISOMESH_ERR_QUOTA_CPU to part of a saturating load, and a cost benchmark must
   * measure the chain, not the tenant's quota (bench/noisy.ts is the one about quotas).
   */
  quota: Record<string, number>;
  /** Request header lines every client sends (to every target alike, so the request is the same). */
  headers: string[];
  /** Response header that proves the whole chain ran (header-transform's onResponse). */
  proofHeader: string;
}

function b64url(x: string | Buffer): string {
  return Buffer.from(x).toString('base64url');
}

/** An HS256 JWT valid for `ttlSec`, signed with the bench tenant's key. */
export function benchToken(ttlSec = 86_400): string {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const now = Math.floor(Date.now() / 1000);
  const body = b64url(JSON.stringify({ sub: 'user-42', aud: 'bench', iss: 'isomesh-bench', iat: now, exp: now + ttlSec }));
  const sig = createHmac('sha256', JWT_KEY).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

export function realisticChain(): RealisticChain {
  return {
    plugins: [
      ['jwt-auth', exampleSource('jwt-auth'), { secret: JWT_SECRET_NAME, audience: 'bench', issuer: 'isomesh-bench', algorithms: ['HS256'], forwardClaims: { sub: 'x-user-id' } }],
      // A limit no benchmark reaches: the bucket is consulted and updated on every request all the same.
      ['rate-limit', exampleSource('rate-limit'), { limit: 1_000_000_000, windowMs: 1000, key: 'client-ip' }],
      ['header-transform', exampleSource('header-transform'), {
        request: { set: { 'x-tenant': '{tenant}', 'x-request-id': '{requestId}' }, remove: ['x-debug'] },
        response: { set: { 'x-served-by': 'isomesh' }, remove: ['server'] },
      }],
    ],
    secrets: { [JWT_SECRET_NAME]: JWT_KEY },
    quota: { cpuMsPerSecond: 100_000 },
    headers: [`authorization: Bearer ${benchToken()}`],
    proofHeader: 'x-served-by',
  };
}
