// The guest runtime is owned by the SDK (sdk/src/guest/). The host bundles its entry once per process
// and runs that same code in every plugin context, so createTestHost() and production agree.

import { fileURLToPath } from 'node:url';
import { buildSync } from 'esbuild';

let cached: string | undefined;

/** Path of the SDK's guest entry, found through the workspace package rather than a relative path. */
export function guestEntryPath(): string {
  const sdkIndex = import.meta.resolve('@isomesh/sdk');
  return fileURLToPath(new URL('./guest/entry.ts', sdkIndex));
}

/** A cordon process receives the daemon's bundle instead of running esbuild itself. */
export function seedGuestRuntimeCode(code: string): void {
  cached = code;
}

/** The guest runtime as one self-contained script (IIFE, no imports). */
export function guestRuntimeCode(): string {
  if (cached !== undefined) return cached;
  const out = buildSync({
    entryPoints: [guestEntryPath()],
    bundle: true,
    format: 'iife',
    platform: 'neutral',
    target: 'es2023',
    write: false,
    legalComments: 'none',
    logLevel: 'silent',
  });
  const file = out.outputFiles[0];
  if (file === undefined) throw new Error('esbuild produced no guest runtime');
  cached = file.text;
  return cached;
}
