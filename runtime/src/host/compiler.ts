// Publish-time compilation: TypeScript/JavaScript → one CommonJS bundle (esbuild) whose only import is
// '@isomesh/sdk', then a trial load (probe.ts: in a throwaway isolate, in a trial process in cordon
// mode) so a broken plugin is refused at publish rather than at the first request. The trial load
// reports what the plugin declares (hooks, body limits, config schema); the schema must compile.

import { createHash } from 'node:crypto';
import type { Message, Plugin as EsbuildPlugin } from 'esbuild';
import { ESBUILD_IDLE_MS, withEsbuild } from './esbuild.ts';
import { IsomeshError } from '../errors.ts';
import type { PluginVersionDeclarations } from '../store/model.ts';
import { configSchemaProblem } from '../store/index.ts';
import type { CompileInput, CompiledPlugin } from './contract.ts';
import { probeLoad, SDK, type Diagnostic } from './probe.ts';

export type { Diagnostic } from './probe.ts';

const IMPORT_GUARD = 'isomesh-imports';

/** Runs the trial load of compiled code: inline (probeLoad) or in a trial process (TrialLoader). */
export type Probe = (code: string) => PluginVersionDeclarations | Promise<PluginVersionDeclarations>;

/** Only '@isomesh/sdk' may be imported; it stays a require() the guest runtime answers. */
const importGuard: EsbuildPlugin = {
  name: IMPORT_GUARD,
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind === 'entry-point') return undefined;
      if (args.path === SDK) return { path: SDK, external: true };
      return { errors: [{ text: `cannot import "${args.path}": plugins published as source may import only ${SDK}`, detail: args.path }] };
    });
  },
};

function diagnostic(m: Message): Diagnostic {
  const d: Diagnostic = { line: m.location?.line ?? 0, column: m.location?.column ?? 0, message: m.text };
  if (m.pluginName === IMPORT_GUARD && typeof m.detail === 'string') d.import = m.detail;
  return d;
}

async function bundle(source: string, language: 'typescript' | 'javascript', idleMs: number): Promise<string> {
  try {
    const out = await withEsbuild((e) => e.build({
      stdin: { contents: source, loader: language === 'typescript' ? 'ts' : 'js', sourcefile: language === 'typescript' ? 'plugin.ts' : 'plugin.js' },
      bundle: true,
      format: 'cjs',
      // Plugins are written as ES modules, which are strict; CommonJS output is not unless told.
      banner: { js: '"use strict";' },
      platform: 'neutral',
      target: 'es2023',
      write: false,
      legalComments: 'none',
      logLevel: 'silent',
      plugins: [importGuard],
    }), idleMs);
    const file = out.outputFiles[0];
    if (file === undefined) throw new IsomeshError('ISOMESH_ERR_INTERNAL', 'esbuild produced no output');
    return file.text;
  } catch (e) {
    if (e instanceof IsomeshError) throw e;
    const errors = (e as { errors?: Message[] }).errors;
    if (!Array.isArray(errors) || errors.length === 0) throw e;
    const bad = errors.filter((m) => m.pluginName === IMPORT_GUARD).map(diagnostic);
    if (bad.length > 0) {
      const first = bad[0] as Diagnostic;
      throw new IsomeshError('ISOMESH_ERR_PLUGIN_BAD_IMPORT', `${first.message} (line ${first.line}, column ${first.column})`, bad);
    }
    const diags = errors.map(diagnostic);
    const first = diags[0] as Diagnostic;
    throw new IsomeshError('ISOMESH_ERR_PLUGIN_COMPILE', `${first.message} (line ${first.line}, column ${first.column})`, diags);
  }
}

export async function compilePlugin(input: CompileInput, probe: Probe = probeLoad, esbuildIdleMs = ESBUILD_IDLE_MS): Promise<CompiledPlugin> {
  if (input === null || typeof input !== 'object' || typeof input.source !== 'string') {
    throw new IsomeshError('ISOMESH_ERR_API_VALIDATION', 'source must be a string');
  }
  if (input.language !== 'typescript' && input.language !== 'javascript' && input.language !== 'bundle') {
    throw new IsomeshError('ISOMESH_ERR_API_VALIDATION', 'language must be typescript, javascript or bundle');
  }
  const limit = input.maxBundleBytes;
  // Refuse absurd sources before spending esbuild time on them (a bundle is never smaller than ~0).
  if (input.language === 'bundle' && Buffer.byteLength(input.source) > limit) {
    throw new IsomeshError('ISOMESH_ERR_PLUGIN_TOO_LARGE', `bundle is ${Buffer.byteLength(input.source)} bytes (max ${limit})`);
  }
  const code = input.language === 'bundle' ? input.source : await bundle(input.source, input.language, esbuildIdleMs);
  const size = Buffer.byteLength(code);
  if (size > limit) throw new IsomeshError('ISOMESH_ERR_PLUGIN_TOO_LARGE', `compiled plugin is ${size} bytes (max ${limit})`);
  const declarations = await probe(code);
  if (declarations.configSchema !== undefined) {
    const problem = configSchemaProblem(declarations.configSchema);
    if (problem !== undefined) {
      throw new IsomeshError('ISOMESH_ERR_PLUGIN_BAD_DECLARATION', `configSchema does not compile: ${problem}`);
    }
  }
  const digest = `sha256:${createHash('sha256').update(code).digest('hex')}`;
  return { code, digest, size, hooks: declarations.hooks, declarations };
}
