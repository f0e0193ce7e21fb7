// `isomesh plugin build`'s engine: one self-contained CommonJS bundle per plugin. `@isomesh/sdk` stays
// external because the plugin host provides it inside the isolate; everything else is inlined.
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { CliFailure } from './cli-errors.ts';

export const SDK_MODULE = '@isomesh/sdk';
export const DEFAULT_BUNDLE_OUT = 'dist/plugin.js';

export interface PluginBundle {
  entry: string;
  /** Absolute path written to. */
  out: string;
  code: Uint8Array;
  size: number;
  /** "sha256:<hex>", the same form the server reports as a version's digest. */
  digest: string;
  warnings: string[];
}

interface EsbuildLocation { file: string; line: number; column: number; lineText?: string }
interface EsbuildMessage { text: string; location: EsbuildLocation | null }

/** The entry point: package.json `isomesh.entry`, then `main` (if it is source), then src/index.ts. */
export function resolveEntry(dir: string, outFile: string): string {
  let pkg: { main?: unknown; isomesh?: { entry?: unknown } } = {};
  const pkgFile = path.join(dir, 'package.json');
  if (fs.existsSync(pkgFile)) {
    try {
      pkg = JSON.parse(fs.readFileSync(pkgFile, 'utf8'));
    } catch (err) {
      throw new CliFailure(`${pkgFile}: invalid JSON (${(err as Error).message})`);
    }
  }
  const candidates: string[] = [];
  if (typeof pkg.isomesh?.entry === 'string') candidates.push(pkg.isomesh.entry);
  // "main" may point at the build output itself; never bundle the bundle.
  if (typeof pkg.main === 'string' && path.resolve(dir, pkg.main) !== outFile) candidates.push(pkg.main);
  candidates.push('src/index.ts');
  for (const c of candidates) {
    const abs = path.resolve(dir, c);
    if (fs.existsSync(abs)) return abs;
  }
  throw new CliFailure(`no plugin entry point in ${dir}: looked for ${candidates.join(', ')}`);
}

export async function buildPluginBundle(dir: string, out?: string): Promise<PluginBundle> {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new CliFailure(`${dir} is not a directory`);
  const outFile = path.resolve(dir, out ?? DEFAULT_BUNDLE_OUT);
  const entry = resolveEntry(dir, outFile);
  // Loaded lazily: esbuild is a native binary; commands that talk only to the server skip it.
  const esbuild = await import('esbuild');
  let result;
  try {
    result = await esbuild.build({
      entryPoints: [entry],
      absWorkingDir: dir,
      bundle: true,
      write: false,
      outfile: outFile,
      format: 'cjs',
      platform: 'neutral',
      target: 'es2023',
      // platform "neutral" resolves no package fields by default; npm dependencies still need them.
      mainFields: ['module', 'main'],
      external: [SDK_MODULE],
      sourcemap: false,
      legalComments: 'none',
      logLevel: 'silent',
    });
  } catch (err) {
    const errors = (err as { errors?: EsbuildMessage[] }).errors;
    if (!Array.isArray(errors)) throw err;
    throw new CliFailure(`build failed with ${errors.length} error${errors.length === 1 ? '' : 's'}:\n` +
      errors.map((m) => formatMessage(dir, m)).join('\n'));
  }
  const file = result.outputFiles.find((f) => f.path === outFile) ?? result.outputFiles[0];
  if (!file) throw new CliFailure('esbuild produced no output');
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, file.contents);
  return {
    entry,
    out: outFile,
    code: file.contents,
    size: file.contents.byteLength,
    digest: 'sha256:' + createHash('sha256').update(file.contents).digest('hex'),
    warnings: result.warnings.map((m) => formatMessage(dir, m as EsbuildMessage)),
  };
}

/** `file:line:col: message` with a 1-based column, as editors and compilers print it. */
export function formatMessage(dir: string, m: EsbuildMessage): string {
  if (!m.location) return `  ${m.text}`;
  const { file, line, column, lineText } = m.location;
  const rel = path.isAbsolute(file) ? path.relative(dir, file) : file;
  const head = `  ${rel}:${line}:${column + 1}: ${m.text}`;
  return lineText ? `${head}\n      ${lineText}\n      ${' '.repeat(column)}^` : head;
}
