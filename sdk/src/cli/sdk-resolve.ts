// Preloaded (node --import) into `isomesh plugin test` runs: a plugin project outside this repository
// has no @isomesh/sdk in node_modules (the SDK is not on npm), so imports of '@isomesh/sdk' and its
// subpaths that Node cannot resolve are answered with the CLI's own copy of the SDK. A project that
// installed the SDK itself keeps its own.

import fs from 'node:fs';
import { registerHooks } from 'node:module';

const SDK = '@isomesh/sdk';
const root = new URL('../../', import.meta.url);
const exportsMap = (JSON.parse(fs.readFileSync(new URL('package.json', root), 'utf8')) as { exports: Record<string, string> }).exports;

/** '@isomesh/sdk' → the CLI copy's "." export; '@isomesh/sdk/testing' → "./testing". */
export function cliSdkUrl(specifier: string): string | undefined {
  if (specifier !== SDK && !specifier.startsWith(`${SDK}/`)) return undefined;
  const target = exportsMap[`.${specifier.slice(SDK.length)}`];
  return target === undefined ? undefined : new URL(target, root).href;
}

registerHooks({
  resolve(specifier, context, nextResolve) {
    const fallback = cliSdkUrl(specifier);
    if (fallback === undefined) return nextResolve(specifier, context);
    try {
      return nextResolve(specifier, context);
    } catch (e) {
      if ((e as { code?: string }).code !== 'ERR_MODULE_NOT_FOUND') throw e;
      return { url: fallback, shortCircuit: true };
    }
  },
});
