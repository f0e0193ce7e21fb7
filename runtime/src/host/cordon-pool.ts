// CordonPool: places tenants in cordon processes and shrinks the blast radius of a crash.
// Tenants are spread over ISOMESH_CORDONS shared cordons by a stable hash of their name. When a cordon
// dies, the tenant whose call was running is blamed; a tenant blamed twice within BLAME_WINDOW_MS is
// moved into a quarantine cordon of its own, so its next crashes hit only itself.

import fs from 'node:fs';
import type { Logger } from 'pino';
import { hashRequestId } from './chain.ts';
import { Cordon, CordonTenant, cordonRunDir, type FetchRelay, type Hooks } from './cordon.ts';
import type { HostMetrics } from './metrics.ts';
import type { SandboxEvents } from './sandbox.ts';
import type { WireKind } from './wire.ts';

export const BLAME_WINDOW_MS = 60_000;
export const BLAMES_TO_QUARANTINE = 2;
/** Beyond this many quarantined tenants, further offenders share one quarantine cordon. */
const MAX_QUARANTINE_CORDONS = 8;

export class CordonPool {
  readonly #logger: Logger;
  readonly #metrics: HostMetrics;
  readonly #wire: WireKind;
  readonly #queueLimit: number | undefined;
  readonly #hooksFor: (digest: string) => Hooks | undefined;
  readonly #fetch: FetchRelay;
  readonly #runDir: string;
  readonly #shared: Cordon[];
  readonly #quarantine = new Map<string, Cordon>();
  readonly #tenants = new Map<string, CordonTenant>();
  readonly #blames = new Map<string, number[]>();

  constructor(opts: {
    count: number;
    wire: WireKind;
    logger: Logger;
    metrics: HostMetrics;
    /** A fixed per-tenant queue bound; default: each tenant's maxConcurrentRequests. */
    queueLimit?: number;
    hooksFor: (digest: string) => Hooks | undefined;
    fetch: FetchRelay;
  }) {
    this.#fetch = opts.fetch;
    this.#logger = opts.logger;
    this.#metrics = opts.metrics;
    this.#wire = opts.wire;
    this.#queueLimit = opts.queueLimit;
    this.#hooksFor = opts.hooksFor;
    this.#runDir = cordonRunDir();
    const count = Math.max(1, Math.floor(opts.count));
    this.#shared = Array.from({ length: count }, (_, i) => this.#cordon(`cordon-${i}`, false));
  }

  /** The stable shared cordon of a tenant. */
  homeOf(tenant: string): Cordon {
    return this.#shared[hashRequestId(tenant) % this.#shared.length] as Cordon;
  }

  tenant(name: string, opts: { memoryMb: number; weight: number; maxConcurrentRequests: number; events: SandboxEvents }): CordonTenant {
    const cordon = this.#quarantine.get(name) ?? this.homeOf(name);
    const t = new CordonTenant({
      tenant: name,
      memoryMb: opts.memoryMb,
      weight: opts.weight,
      events: opts.events,
      cordon,
      maxConcurrentRequests: opts.maxConcurrentRequests,
      queueLimit: this.#queueLimit,
      hooksFor: this.#hooksFor,
    });
    this.#tenants.set(name, t);
    return t;
  }

  removeTenant(name: string): void {
    const t = this.#tenants.get(name);
    this.#tenants.delete(name);
    t?.dispose();
    this.#blames.delete(name);
    const q = this.#quarantine.get(name);
    if (q === undefined) return;
    this.#quarantine.delete(name);
    this.#metrics.quarantined.remove({ tenant: name });
    // A private quarantine cordon goes with its tenant; the shared one stays while others use it.
    if (![...this.#quarantine.values()].includes(q)) q.close();
  }

  isQuarantined(name: string): boolean {
    return this.#tenants.get(name)?.cordon.quarantine ?? false;
  }

  cordons(): Array<{ id: string; pid: number | null; state: string; tenants: number; restarts: number; quarantine: boolean; passes: number }> {
    return [...this.#shared, ...new Set(this.#quarantine.values())].map((c) => ({
      id: c.id,
      pid: c.pid,
      state: c.state,
      tenants: c.tenantCount,
      restarts: c.restarts,
      quarantine: c.quarantine,
      passes: c.passes,
    }));
  }

  close(): void {
    for (const t of this.#tenants.values()) t.dispose();
    this.#tenants.clear();
    for (const c of this.#shared) c.close();
    for (const c of new Set(this.#quarantine.values())) c.close();
    fs.rmSync(this.#runDir, { recursive: true, force: true });
  }

  #cordon(id: string, quarantine: boolean): Cordon {
    return new Cordon({
      id,
      quarantine,
      wire: this.#wire,
      logger: this.#logger,
      runDir: this.#runDir,
      fetch: this.#fetch,
      events: {
        onExit: (cordon, info) => {
          this.#metrics.cordonCrashes.inc({ cordon: cordon.id });
          const blamed = info.blamed;
          if (blamed === undefined || this.#tenants.get(blamed.tenant) !== blamed) return;
          this.#metrics.cordonBlamed.inc({ tenant: blamed.tenant });
          blamed.blamed(info.blamedKey ?? '', `cordon ${cordon.id} died (${info.signal ?? `exit ${info.code}`}) while this plugin was running`);
          if (!cordon.quarantine && this.#blame(blamed.tenant)) this.#isolate(blamed);
        },
        onRestart: (cordon) => {
          this.#metrics.cordonRestarts.inc({ cordon: cordon.id });
          this.#logger.info({ cordon: cordon.id, restarts: cordon.restarts }, 'cordon restarted');
        },
      },
    });
  }

  /** Records a blame; true when the tenant has now been blamed often enough to be quarantined. */
  #blame(tenant: string): boolean {
    const now = Date.now();
    const recent = (this.#blames.get(tenant) ?? []).filter((at) => now - at < BLAME_WINDOW_MS);
    recent.push(now);
    this.#blames.set(tenant, recent);
    return recent.length >= BLAMES_TO_QUARANTINE;
  }

  #isolate(t: CordonTenant): void {
    let cordon: Cordon;
    if (this.#quarantine.size < MAX_QUARANTINE_CORDONS) {
      cordon = this.#cordon(`quarantine-${t.tenant}`, true);
    } else {
      cordon = [...this.#quarantine.values()].find((c) => c.id === 'quarantine-shared') ?? this.#cordon('quarantine-shared', true);
    }
    this.#quarantine.set(t.tenant, cordon);
    this.#metrics.quarantined.set({ tenant: t.tenant }, 1);
    this.#logger.warn({ tenant: t.tenant, cordon: cordon.id }, 'tenant crashed its cordon repeatedly; moved to a quarantine cordon');
    t.moveTo(cordon);
  }
}
