// The entries of the host's child processes (cordon-main.ts, trial-main.ts) as plain JavaScript.
// Node strips the types of a .ts module with a WebAssembly build of swc that it instantiates in
// every process importing TypeScript: 20 MiB of RSS per process (a process importing one .ts file
// grows from 41 to 61 MiB), paid by each cordon and by the trial-load process. The daemon already
// bundles the guest runtime with esbuild; it bundles each child entry once too, into one ES module
// written to the cordons' private run directory (mkdtemp, 0700: never a shared, guessable path
// whose file another user could have planted), and forks that. Packages stay external, imported
// from the files the sources would load (absolute file URLs), and import.meta.url in the bundle is
// the entry's own source URL, so that createRequire(import.meta.url) (koffi for the blackbox)
// resolves exactly as in the sources. If bundling fails the child runs the .ts entry as before and
// the failure is logged: it costs memory, not function.

import fs from 'node:fs';
import { isBuiltin } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { withEsbuildSync } from './esbuild.ts';

/** Bundled code by source URL (bundled once per process). */
const bundles = new Map<string, string>();

/** The repository's dependencies stay external (the workspace SDK, TypeScript, is bundled). */
function externalPackages(): string[] {
  const manifest = JSON.parse(fs.readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { dependencies?: Record<string, string> };
  return Object.keys(manifest.dependencies ?? {}).flatMap((name) => [name, `${name}/*`]);
}

/**
 * Points the bundle's imports of packages at the files the sources would load (resolved from this
 * directory, where the entries are): the bundle lives in the temp directory, where a bare specifier
 * resolves to nothing. esbuild prints every import with a double-quoted specifier (`from "x"`,
 * `import("x")`, `import "x"`).
 */
function resolvePackageImports(code: string, specifiers: string[]): string {
  let out = code;
  for (const spec of specifiers) {
    const url = import.meta.resolve(spec);
    const quoted = JSON.stringify(spec).replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
    out = out.replace(new RegExp(`(\\bfrom\\s*|\\bimport\\s*\\(\\s*|\\bimport\\s*)${quoted}`, 'g'), (_m, lead: string) => `${lead}${JSON.stringify(url)}`);
  }
  return out;
}

function bundle(source: URL): string {
  const known = bundles.get(source.href);
  if (known !== undefined) return known;
  const out = withEsbuildSync((e) =>
    e.buildSync({
      entryPoints: [fileURLToPath(source)],
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: 'node24',
      write: false,
      legalComments: 'none',
      logLevel: 'silent',
      define: { 'import.meta.url': JSON.stringify(source.href) },
      external: externalPackages(),
      metafile: true,
    }),
  );
  const bundled = out.outputFiles[0]?.text;
  if (bundled === undefined) throw new Error('esbuild produced no output');
  const imported = new Set<string>();
  for (const o of Object.values(out.metafile.outputs)) for (const i of o.imports) if (i.external && !isBuiltin(i.path)) imported.add(i.path);
  const code = resolvePackageImports(bundled, [...imported]);
  bundles.set(source.href, code);
  return code;
}

/**
 * The JavaScript file to fork for the TypeScript entry `source`, written into `dir` (a private
 * directory of this process) on first use; `source` itself when bundling failed (`onError` says why).
 */
export function childEntry(source: URL, dir: string, onError: (err: unknown) => void): string | URL {
  // Only this process writes into its private directory: a file there is the one it wrote.
  const file = path.join(dir, `${path.basename(fileURLToPath(source), '.ts')}.mjs`);
  if (fs.existsSync(file)) return file;
  try {
    fs.writeFileSync(file, bundle(source), { mode: 0o600 });
    return file;
  } catch (err) {
    onError(err);
    return source;
  }
}
