// The publish-time trial load: runs compiled plugin code in a throwaway isolate, the way a tenant
// isolate will, and reports what it declares. In cordon mode it runs in a trial process
// (trial-main.ts), so a plugin that aborts V8 or exhausts memory at load time takes down only that
// process; inline mode runs it in the daemon. Everything the guest reports is re-checked here.

import ivm from 'isolated-vm';
import { IsomeshError } from '../errors.ts';
import type { PluginVersionDeclarations } from '../store/model.ts';
import { guestRuntimeCode } from './guest-code.ts';
import { classifyError, loadPluginContext } from './sandbox.ts';
import { PROBE_MEMORY_MB, PROBE_TIMEOUT_MS } from './trial.ts';

export const SDK = '@isomesh/sdk';
const BAD_IMPORT_PREFIX = 'ISOMESH_BAD_IMPORT:';
/** The largest body limit a plugin may declare (sdk MAX_BODY_BYTES). */
export const MAX_BODY_BYTES = 64 * 1024 * 1024;
const MAX_LOAD_RESULT_CHARS = 128 * 1024;

export interface Diagnostic {
  line: number;
  column: number;
  message: string;
  import?: string;
}

/** "plugin.js:12:7" in a V8 stack → line/column (columns 0-based like esbuild's). */
function locate(e: unknown): { line: number; column: number } | undefined {
  const stack = e instanceof Error ? `${e.stack ?? ''}` : '';
  const m = /plugin\.js:(\d+):(\d+)/.exec(stack);
  return m ? { line: Number(m[1]), column: Number(m[2]) - 1 } : undefined;
}

function badDeclaration(message: string): IsomeshError {
  return new IsomeshError('ISOMESH_ERR_PLUGIN_BAD_DECLARATION', message);
}

/** The guest's finishLoad answer, checked (the guest may have tampered with its own SDK copy). */
export function declarationsOf(loadResult: string): PluginVersionDeclarations {
  if (loadResult.length > MAX_LOAD_RESULT_CHARS) throw badDeclaration(`the plugin's declarations are larger than ${MAX_LOAD_RESULT_CHARS} characters`);
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(loadResult) as Record<string, unknown>;
  } catch {
    throw badDeclaration('the plugin did not report its declarations');
  }
  if (parsed === null || typeof parsed !== 'object') throw badDeclaration('the plugin did not report its declarations');
  if (typeof parsed.badDeclaration === 'string') throw badDeclaration(parsed.badDeclaration.slice(0, 1024));
  if (parsed.hooks === undefined) throw new IsomeshError('ISOMESH_ERR_PLUGIN_NO_HOOKS', typeof parsed.noHooks === 'string' ? parsed.noHooks.slice(0, 1024) : undefined);
  const hooks = parsed.hooks;
  if (!Array.isArray(hooks) || hooks.length === 0 || hooks.length > 2 || !hooks.every((h) => h === 'onRequest' || h === 'onResponse') || new Set(hooks).size !== hooks.length) {
    throw badDeclaration('hooks must be onRequest and/or onResponse');
  }
  const out: PluginVersionDeclarations = { hooks: hooks as PluginVersionDeclarations['hooks'] };
  if (parsed.body !== undefined) {
    const b = parsed.body as Record<string, unknown> | null;
    if (b === null || typeof b !== 'object' || Array.isArray(b) || Object.keys(b).some((k) => k !== 'request' && k !== 'response')) {
      throw badDeclaration('body must be { request?: maxBytes, response?: maxBytes }');
    }
    const body: NonNullable<PluginVersionDeclarations['body']> = {};
    for (const dir of ['request', 'response'] as const) {
      const v = b[dir];
      if (v === undefined) continue;
      if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > MAX_BODY_BYTES) {
        throw badDeclaration(`body.${dir} must be an integer number of bytes in 1..${MAX_BODY_BYTES} (64 MiB), got ${JSON.stringify(v)}`);
      }
      if (!out.hooks.includes(dir === 'request' ? 'onRequest' : 'onResponse')) {
        throw badDeclaration(`body.${dir} is declared but the plugin has no ${dir === 'request' ? 'onRequest' : 'onResponse'} hook`);
      }
      body[dir] = v;
    }
    if (body.request !== undefined || body.response !== undefined) out.body = body;
  }
  if (parsed.configSchema !== undefined) {
    const s = parsed.configSchema;
    if (s === null || typeof s !== 'object' || Array.isArray(s)) throw badDeclaration('configSchema must be a JSON Schema object');
    out.configSchema = s as Record<string, unknown>;
  }
  return out;
}

/** Loads `code` in a throwaway isolate; returns its declarations or throws the publish-time error. */
export function probeLoad(code: string, timeoutMs = PROBE_TIMEOUT_MS): PluginVersionDeclarations {
  const isolate = new ivm.Isolate({ memoryLimit: PROBE_MEMORY_MB });
  try {
    const guest = isolate.compileScriptSync(guestRuntimeCode(), { filename: 'isomesh-guest.js' });
    let loadResult: string;
    try {
      loadResult = loadPluginContext(isolate, guest, code, { tenant: 'publish', plugin: 'publish' }, '{}', timeoutMs).loadResult;
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
      // definePlugin() refused a declaration while the module loaded.
      const declaration = /^(?:TypeError: )?(plugin\.(?:body|configSchema)\b.*)$/s.exec(message);
      if (declaration !== null) throw badDeclaration((declaration[1] as string).slice(0, 1024));
      const where = kind === 'memory' ? undefined : locate(e);
      const text =
        kind === 'timeout'
          ? `plugin did not finish loading within ${timeoutMs} ms`
          : kind === 'memory'
            ? `plugin exhausted the ${PROBE_MEMORY_MB} MiB memory limit of the trial load`
            : message;
      throw new IsomeshError(
        'ISOMESH_ERR_PLUGIN_LOAD',
        where ? `${text} (line ${where.line}, column ${where.column})` : text,
        [{ ...(where ?? { line: 0, column: 0 }), message: text }],
      );
    }
    return declarationsOf(loadResult);
  } finally {
    if (!isolate.isDisposed) isolate.dispose();
  }
}
