// Publish-time compilation: TypeScript/JavaScript → one CommonJS bundle (esbuild) whose only import is
// '@isomesh/sdk', then a trial load in a throwaway isolate so a broken plugin is refused at publish
// rather than at the first request.

import { createHash } from 'node:crypto';
import ivm from 'isolated-vm';
import { build, type Message, type Plugin as EsbuildPlugin } from 'esbuild';
import { IsomeshError } from '../errors.ts';
import type { CompileInput, CompiledPlugin } from './contract.ts';
import { guestRuntimeCode } from './guest-code.ts';
import { classifyError, loadPluginContext } from './sandbox.ts';

const SDK = '@isomesh/sdk';
const BAD_IMPORT_PREFIX = 'ISOMESH_BAD_IMPORT:';
const PROBE_MEMORY_MB = 32;
const PROBE_TIMEOUT_MS = 200;
const IMPORT_GUARD = 'isomesh-imports';

export interface Diagnostic {
  line: number;
  column: number;
  message: string;
  import?: string;
}

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

async function bundle(source: string, language: 'typescript' | 'javascript'): Promise<string> {
  try {
    const out = await build({
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
    });
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

/** "plugin.js:12:7" in a V8 stack → line/column (columns 0-based like esbuild's). */
function locate(e: unknown): { line: number; column: number } | undefined {
  const stack = e instanceof Error ? `${e.stack ?? ''}` : '';
  const m = /plugin\.js:(\d+):(\d+)/.exec(stack);
  return m ? { line: Number(m[1]), column: Number(m[2]) - 1 } : undefined;
}

/** Loads `code` in a throwaway isolate; returns the hooks or throws the publish-time error. */
export function probeLoad(code: string): Array<'onRequest' | 'onResponse'> {
  const isolate = new ivm.Isolate({ memoryLimit: PROBE_MEMORY_MB });
  try {
    const guest = isolate.compileScriptSync(guestRuntimeCode(), { filename: 'isomesh-guest.js' });
    let loadResult: string;
    try {
      loadResult = loadPluginContext(isolate, guest, code, { tenant: 'publish', plugin: 'publish' }, '{}', PROBE_TIMEOUT_MS).loadResult;
    } catch (e) {
      const { kind, message } = classifyError(isolate, e);
      if (message.startsWith(BAD_IMPORT_PREFIX)) {
        const name = message.slice(BAD_IMPORT_PREFIX.length).trim();
        const where = locate(e);
        throw new IsomeshError('ISOMESH_ERR_PLUGIN_BAD_IMPORT', `bundle requires "${name}": only ${SDK} is provided`, [
          { ...(where ?? { line: 0, column: 0 }), message: `cannot require "${name}"`, import: name },
        ]);
      }
      const syntax = /^(.*) \[plugin\.js:(\d+):(\d+)\]$/.exec(message);
      if (e instanceof Error && e.name === 'SyntaxError' && syntax) {
        // V8 rejected the bundle itself (language 'bundle'): a compile error, not a load error.
        const d = { line: Number(syntax[2]), column: Number(syntax[3]) - 1, message: syntax[1] as string };
        throw new IsomeshError('ISOMESH_ERR_PLUGIN_COMPILE', `${d.message} (line ${d.line}, column ${d.column})`, [d]);
      }
      const where = locate(e);
      const text = kind === 'timeout' ? `plugin did not finish loading within ${PROBE_TIMEOUT_MS} ms` : message;
      throw new IsomeshError(
        'ISOMESH_ERR_PLUGIN_LOAD',
        where ? `${text} (line ${where.line}, column ${where.column})` : text,
        [{ ...(where ?? { line: 0, column: 0 }), message: text }],
      );
    }
    const parsed = JSON.parse(loadResult) as { hooks?: Array<'onRequest' | 'onResponse'>; noHooks?: string };
    if (parsed.hooks === undefined) throw new IsomeshError('ISOMESH_ERR_PLUGIN_NO_HOOKS', parsed.noHooks);
    return parsed.hooks;
  } finally {
    if (!isolate.isDisposed) isolate.dispose();
  }
}

export async function compilePlugin(input: CompileInput): Promise<CompiledPlugin> {
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
  const code = input.language === 'bundle' ? input.source : await bundle(input.source, input.language);
  const size = Buffer.byteLength(code);
  if (size > limit) throw new IsomeshError('ISOMESH_ERR_PLUGIN_TOO_LARGE', `compiled plugin is ${size} bytes (max ${limit})`);
  const hooks = probeLoad(code);
  const digest = `sha256:${createHash('sha256').update(code).digest('hex')}`;
  return { code, digest, size, hooks };
}
