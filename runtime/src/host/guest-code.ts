// The guest runtime is owned by the SDK (sdk/src/guest/). The host bundles its entries once per
// process and runs that same code in every isolate, so createTestHost() and production agree:
// entry.ts in every plugin context, runner.ts (the chain runner) in one context per isolate.

import { fileURLToPath } from 'node:url';
import { withEsbuildSync } from './esbuild.ts';

const cached = new Map<'entry' | 'runner', string>();

function sdkFile(name: string): string {
  const sdkIndex = import.meta.resolve('@isomesh/sdk');
  return fileURLToPath(new URL(`./guest/${name}`, sdkIndex));
}

/** Path of the SDK's guest entry, found through the workspace package rather than a relative path. */
export function guestEntryPath(): string {
  return sdkFile('entry.ts');
}

/** A cordon process receives the daemon's bundles instead of running esbuild itself. */
export function seedGuestRuntimeCode(code: string, runner?: string): void {
  cached.set('entry', code);
  if (runner !== undefined) cached.set('runner', runner);
}

function bundle(which: 'entry' | 'runner'): string {
  const hit = cached.get(which);
  if (hit !== undefined) return hit;
  const out = withEsbuildSync((e) => e.buildSync({
    entryPoints: [sdkFile(`${which}.ts`)],
    bundle: true,
    format: 'iife',
    platform: 'neutral',
    target: 'es2023',
    write: false,
    legalComments: 'none',
    logLevel: 'silent',
    // The runner must be strict code: a sloppy plugin function must not reach it through `caller`.
    ...(which === 'runner' ? { banner: { js: '"use strict";' } } : {}),
  }));
  const file = out.outputFiles[0];
  if (file === undefined) throw new Error(`esbuild produced no guest ${which}`);
  cached.set(which, file.text);
  return file.text;
}

/** The guest runtime as one self-contained script (IIFE, no imports). */
export function guestRuntimeCode(): string {
  return bundle('entry');
}

/** The chain runner as one self-contained strict script. */
export function runnerCode(): string {
  return bundle('runner');
}
