// Writes docs/errors.md from the ERROR_CODES table (runtime/src/errors.ts). `node scripts/gen-error-docs.ts`
import fs from 'node:fs';
import path from 'node:path';
import { ERROR_CODES } from '../runtime/src/errors.ts';

const rows = Object.entries(ERROR_CODES).map(([code, spec]) => `| \`${code}\` | ${spec.status} | ${spec.status < 500 ? 'user' : 'system'} | ${spec.message} |`);
const doc = `# Error codes

Generated from \`runtime/src/errors.ts\` by \`node scripts/gen-error-docs.ts\` — do not edit by hand.

Every error the management API returns is \`{"error": {"code": "<code>", "message": "<what went wrong>"}}\`
with the status below; the data plane reports the same codes in the \`x-isomesh-error\` response header.
User errors (4xx) mean the caller sent something wrong and nothing changed; system faults (5xx) are
isomesh's own (the 503s of plugin failures are the failing tenant's, under its failure policy).

| code | status | kind | meaning |
|---|---|---|---|
${rows.join('\n')}
`;
fs.writeFileSync(path.join(import.meta.dirname, '../docs/errors.md'), doc);
console.log(`docs/errors.md: ${rows.length} codes`);
