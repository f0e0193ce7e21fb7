// Route regexes (pathRegex, header regex) run in RE2, as Envoy's `safe_regex` does: matching is linear
// in the input (no backtracking, so no ReDoS), the syntax is RE2's (no backreferences or lookaround),
// and a pattern's compiled program is bounded. The bound is Envoy's default
// (re2.max_program_size.error_level = 100), so every route the API accepts is one Envoy accepts too.
// A pattern matches the whole value (RE2 FullMatch), as in Envoy.

import { RE2JS } from 're2js';

export const MAX_REGEX_PROGRAM_SIZE = 100;

export interface RouteRegex {
  readonly source: string;
  /** Whole-value match. */
  test(value: string): boolean;
}

/** Compiles a route regex; throws an Error whose message says what is wrong (syntax or program size). */
export function compileRouteRegex(source: string): RouteRegex {
  let re: RE2JS;
  try {
    re = RE2JS.compile(source);
  } catch (err) {
    throw new Error(`is not a valid regular expression in RE2 syntax (no backreferences or lookaround): ${(err as Error).message}`);
  }
  const size = re.programSize();
  if (size > MAX_REGEX_PROGRAM_SIZE) {
    throw new Error(`is too complex: its RE2 program has ${size} instructions (at most ${MAX_REGEX_PROGRAM_SIZE}, as Envoy's default)`);
  }
  return { source, test: (value) => re.matches(value) };
}

/**
 * Ajv's `code.regExp` engine backed by RE2: JSON Schema `pattern` / `patternProperties` in tenants'
 * plugin config schemas run in linear time too (they are evaluated in the daemon at PUT …/chain and
 * …/active). Unanchored search, as JSON Schema defines `pattern`.
 */
export const re2RegExpEngine = Object.assign(
  (pattern: string, _flags: string): { test(s: string): boolean; toString(): string } => {
    let re: RE2JS;
    try {
      re = RE2JS.compile(pattern);
    } catch (err) {
      throw new Error(`pattern ${JSON.stringify(pattern.slice(0, 64))} is not a valid regular expression in RE2 syntax: ${(err as Error).message}`);
    }
    return { test: (s: string) => re.matcher(s).find(), toString: () => `re2:${pattern}` };
  },
  { code: 'RE2JS.compile' },
);
