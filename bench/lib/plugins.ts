// Plugin sources the benchmarks publish: a no-op, a realistic chain of three (request header,
// header gate, response header), a light plugin and a CPU burner for the noisy-neighbour run.

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
