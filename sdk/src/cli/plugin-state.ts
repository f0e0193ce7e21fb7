// Reading a plugin's versions and activation out of the management API's answers. The API may add
// fields (API.md), so these accept the documented shapes and ignore the rest.
import { apiPath, type ManagementClient } from './client.ts';
import { CliFailure, UsageError } from './cli-errors.ts';

export interface Activation {
  version: number;
  canary?: { version: number; percent: number };
}

export interface VersionInfo {
  version: number;
  digest?: string;
  size?: number;
  createdAt?: string;
  language?: string;
}

export function pluginPath(tenant: string, name: string, ...rest: string[]): string {
  return apiPath('v1', 'tenants', tenant, 'plugins', name, ...rest);
}

/** `{active: {version, canary?}}`, `{active: n}` or `{activeVersion: n}`; undefined when not active. */
export function activationOf(plugin: unknown): Activation | undefined {
  const p = plugin as Record<string, unknown> | null;
  if (!p || typeof p !== 'object') return undefined;
  const active = p.active ?? p.activation;
  if (typeof active === 'number') return withCanary({ version: active }, p.canary);
  if (active && typeof active === 'object') {
    const a = active as Record<string, unknown>;
    if (typeof a.version === 'number') return withCanary({ version: a.version }, a.canary ?? p.canary);
  }
  if (typeof p.activeVersion === 'number') return withCanary({ version: p.activeVersion }, p.canary);
  return undefined;
}

function withCanary(a: Activation, canary: unknown): Activation {
  const c = canary as { version?: unknown; percent?: unknown } | null | undefined;
  if (c && typeof c.version === 'number' && typeof c.percent === 'number') a.canary = { version: c.version, percent: c.percent };
  return a;
}

/** A versions list: an array, or `{versions: [...]}`; elements are numbers or `{version, ...}`. */
export function versionsOf(body: unknown): VersionInfo[] {
  const list = Array.isArray(body) ? body : (body as { versions?: unknown } | null)?.versions;
  if (!Array.isArray(list)) return [];
  const out: VersionInfo[] = [];
  for (const v of list) {
    if (typeof v === 'number') out.push({ version: v });
    else if (v && typeof v === 'object' && typeof (v as VersionInfo).version === 'number') out.push(v as VersionInfo);
  }
  return out.sort((a, b) => a.version - b.version);
}

export async function fetchActivation(client: ManagementClient, tenant: string, name: string): Promise<Activation | undefined> {
  const { body } = await client.get(pluginPath(tenant, name));
  return activationOf(body);
}

export async function setActivation(client: ManagementClient, tenant: string, name: string, activation: Activation): Promise<unknown> {
  const { body } = await client.put(pluginPath(tenant, name, 'active'), activation);
  return body;
}

/** The version a rollback goes to: the highest one below the active version. */
export function previousVersion(versions: VersionInfo[], current: number): number {
  let best: number | undefined;
  for (const v of versions) if (v.version < current && (best === undefined || v.version > best)) best = v.version;
  if (best === undefined) throw new CliFailure(`no version older than ${current} to roll back to`);
  return best;
}

/** Canary percent: a number in 0..100 (fractions allowed). */
export function parsePercent(raw: string, flag: string, usage: string): number {
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < 0 || n > 100) {
    throw new UsageError(`${flag} must be a number from 0 to 100 (got "${raw}")`, usage);
  }
  return n;
}

/** A plugin version: a whole number >= 1. */
export function parseVersion(raw: string, what: string, usage: string): number {
  if (!/^\d+$/.test(raw.trim()) || Number(raw) < 1) throw new UsageError(`${what} must be a whole number >= 1 (got "${raw}")`, usage);
  return Number(raw);
}
