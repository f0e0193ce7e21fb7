// Field-level checks shared by the store's validators: each failure is an IsomeshError whose message
// names the offending field.

import { IsomeshError } from '../errors.ts';
import type { ErrorCode } from '../errors.ts';

/** RFC 9110 §5.6.2 token (header names, methods, Upgrade protocols) — also RFC 6265's cookie-name. */
export const HTTP_TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

export function fail(code: ErrorCode, message: string): never {
  throw new IsomeshError(code, message);
}

export function isInt(v: unknown, min: number, max: number): v is number {
  return typeof v === 'number' && Number.isInteger(v) && v >= min && v <= max;
}

export function intField(code: ErrorCode, field: string, v: unknown, min: number, max: number): number {
  if (!isInt(v, min, max)) fail(code, `${field} must be an integer between ${min} and ${max}, got ${JSON.stringify(v)}`);
  return v;
}

/** Default bound on a free-form string field. */
export const STRING_CHARS = 1024;

export function stringField(code: ErrorCode, field: string, v: unknown, maxChars: number = STRING_CHARS): string {
  if (typeof v !== 'string' || v.length === 0) fail(code, `${field} must be a non-empty string`);
  if (v.length > maxChars) fail(code, `${field} must be at most ${maxChars} characters`);
  return v;
}

/** A header name (or other token) of at most maxChars characters. */
export function tokenField(code: ErrorCode, field: string, v: unknown, what: string, maxChars = 256): string {
  const s = stringField(code, field, v, maxChars);
  if (!HTTP_TOKEN_RE.test(s)) fail(code, `${field} must be ${what} (an HTTP token: letters, digits and !#$%&'*+-.^_\`|~), got ${JSON.stringify(s)}`);
  return s;
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export function rejectUnknown(code: ErrorCode, field: string, v: Record<string, unknown>, allowed: readonly string[]): void {
  for (const k of Object.keys(v)) {
    if (!allowed.includes(k)) fail(code, `${field}${field ? '.' : ''}${k} is not a known field`);
  }
}
