// esbuild for the host: loaded on first use (a data-plane worker thread, which never bundles, does
// not pay for it), and the lifetime of its service processes. esbuild's JS API keeps a service
// process alive after the first call — one for build(), another behind a worker thread for
// buildSync() — for the life of the daemon (14 MiB of RSS each, measured). Bundling happens at
// startup (the guest runtime) and at publish, both rare: once nothing has used esbuild for
// ESBUILD_IDLE_MS both are stopped, and the next call starts them again (esbuild's own behaviour
// after stop()).

import { createRequire } from 'node:module';

type Esbuild = typeof import('esbuild');

export const ESBUILD_IDLE_MS = 30_000;

const requireLazy = createRequire(import.meta.url);
let loaded: Esbuild | undefined;
let using = 0;
let idleTimer: NodeJS.Timeout | undefined;

function esbuild(): Esbuild {
  return (loaded ??= requireLazy('esbuild') as Esbuild);
}

function begin(): Esbuild {
  using++;
  clearTimeout(idleTimer);
  idleTimer = undefined;
  return esbuild();
}

function end(idleMs: number): void {
  using--;
  if (using > 0) return;
  idleTimer = setTimeout(() => {
    idleTimer = undefined;
    if (using === 0) void esbuild().stop();
  }, idleMs);
  idleTimer.unref();
}

/** Runs `fn` with esbuild; its service processes are stopped `idleMs` after the last use ends. */
export async function withEsbuild<T>(fn: (e: Esbuild) => Promise<T>, idleMs = ESBUILD_IDLE_MS): Promise<T> {
  const e = begin();
  try {
    return await fn(e);
  } finally {
    end(idleMs);
  }
}

/** withEsbuild for esbuild's synchronous calls (buildSync). */
export function withEsbuildSync<T>(fn: (e: Esbuild) => T, idleMs = ESBUILD_IDLE_MS): T {
  const e = begin();
  try {
    return fn(e);
  } finally {
    end(idleMs);
  }
}

/** Whether esbuild's service processes may be running (in use, or their idle stop has not come yet). */
export function esbuildServiceKept(): boolean {
  return using > 0 || idleTimer !== undefined;
}
