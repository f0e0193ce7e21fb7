// Chain: one tenant's plugin chain as an immutable snapshot (one per configuration generation).
// Knows which entries apply to a route and which version (active or canary) serves a request;
// holds no isolates, so it can be handed to a scheduler or another process as data.

import type { ChainEntry, FailurePolicy, ResolvedVersion, TenantConfig } from '../store/model.ts';
import type { VersionSpec } from './sandbox.ts';

export interface StepVersion {
  /** Sandbox key: "<plugin>@<version>#<digest>". */
  key: string;
  /** Status key: "<plugin>@<version>". */
  healthKey: string;
  plugin: string;
  version: number;
  /** Body limits the version declared (bytes per direction). */
  body?: { request?: number; response?: number };
  /** The hooks the version declared at publish (absent for versions published before they were recorded). */
  hooks?: ReadonlyArray<'onRequest' | 'onResponse'>;
}

export interface ChainStep {
  plugin: string;
  failurePolicy: FailurePolicy;
  routes?: ReadonlySet<string>;
  configId: number;
  config: Record<string, unknown>;
  active?: StepVersion;
  canary?: StepVersion & { percent: number };
}

/** FNV-1a (32 bit): a stable, cheap hash so a request id always lands on the same side of a canary. */
export function hashRequestId(id: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) {
    h ^= id.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

function stepVersion(plugin: string, v: ResolvedVersion): StepVersion {
  const sv: StepVersion = { key: `${plugin}@${v.version}#${v.digest}`, healthKey: `${plugin}@${v.version}`, plugin, version: v.version };
  if (v.meta?.body !== undefined) sv.body = v.meta.body;
  if (v.meta?.hooks !== undefined) sv.hooks = v.meta.hooks;
  return sv;
}

export class Chain {
  readonly steps: readonly ChainStep[];
  readonly services: ReadonlySet<string>;
  /** The same names as a list (what a ChainPass carries to a cordon). */
  readonly serviceList: readonly string[];
  /** The plugin versions this chain needs loaded, once each. */
  readonly specs: readonly VersionSpec[];
  /** Whether any version of the chain declared body access (bodyLimit answers 0 at once otherwise). */
  readonly anyBody: boolean;

  constructor(config: TenantConfig, nextConfigId: () => number) {
    const specs = new Map<string, VersionSpec>();
    const need = (plugin: string, v: ResolvedVersion): StepVersion => {
      const sv = stepVersion(plugin, v);
      if (!specs.has(sv.key)) specs.set(sv.key, { key: sv.key, plugin, version: v.version, digest: v.digest, code: v.code });
      return sv;
    };
    this.steps = config.chain.map((entry: ChainEntry): ChainStep => {
      const resolved = config.plugins[entry.plugin];
      const step: ChainStep = {
        plugin: entry.plugin,
        failurePolicy: entry.failurePolicy,
        configId: nextConfigId(),
        config: entry.config ?? {},
      };
      if (entry.routes !== undefined) step.routes = new Set(entry.routes);
      if (resolved?.active !== undefined) step.active = need(entry.plugin, resolved.active);
      if (resolved?.canary !== undefined && resolved.canary.percent > 0) {
        step.canary = { ...need(entry.plugin, resolved.canary), percent: resolved.canary.percent };
      }
      return step;
    });
    this.serviceList = config.services.map((s) => s.name);
    this.services = new Set(this.serviceList);
    this.specs = [...specs.values()];
    this.anyBody = this.steps.some((s) => s.active?.body !== undefined || s.canary?.body !== undefined);
  }

  static applies(step: ChainStep, route: string | undefined): boolean {
    return step.routes === undefined || (route !== undefined && step.routes.has(route));
  }

  /**
   * The smallest body limit (`phase`) the versions serving `requestId` on `route` declared; 0 when
   * none reads that body.
   */
  bodyLimit(phase: 'request' | 'response', route: string | undefined, requestId: string): number {
    if (!this.anyBody) return 0;
    let limit = 0;
    for (const step of this.steps) {
      if (!Chain.applies(step, route)) continue;
      const declared = Chain.versionFor(step, requestId)?.body?.[phase];
      if (declared !== undefined && (limit === 0 || declared < limit)) limit = declared;
    }
    return limit;
  }

  /** The version serving `requestId`: canary when hash(requestId) % 100 < percent. */
  static versionFor(step: ChainStep, requestId: string): StepVersion | undefined {
    if (step.canary !== undefined && hashRequestId(requestId) % 100 < step.canary.percent) return step.canary;
    return step.active;
  }
}
