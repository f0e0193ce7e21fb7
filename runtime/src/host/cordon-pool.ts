// CordonPool: places tenants in cordon processes and shrinks the blast radius of a crash.
// Tenants are spread over ISOMESH_CORDONS shared cordons by a stable hash of their name. When a cordon
// dies, the tenant whose call was running is blamed; a tenant blamed twice within BLAME_WINDOW_MS is
// moved into a quarantine cordon of its own, so its next crashes hit only itself.
// A tenant held to its CPU quota (requests refused for it) is confined to a cordon of its own while
// that lasts: a call already running cannot be preempted, so in a shared cordon its long calls would
// sit in front of its neighbours' calls; alone, they queue only behind each other.

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
/** Beyond this many confined tenants, further ones share one confinement cordon. */
const MAX_CONFINED_CORDONS = 8;
const CONFINED_SHARED = 'confined-shared';

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
  readonly #confined = new Map<string, Cordon>();
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
    const cordon = this.#quarantine.get(name) ?? this.#confined.get(name) ?? this.homeOf(name);
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
    this.#unconfine(name);
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

  isConfined(name: string): boolean {
    return this.#confined.has(name);
  }

  /**
   * Moves a tenant held to its CPU quota into a cordon of its own (up to MAX_CONFINED_CORDONS, then
   * one shared by the further ones). A quarantined tenant is alone already. True when it moved.
   */
  confine(name: string): boolean {
    const t = this.#tenants.get(name);
    if (t === undefined || this.#confined.has(name) || this.#quarantine.has(name)) return false;
    const cordon =
      this.#privateConfined() < MAX_CONFINED_CORDONS
        ? this.#cordon(`confined-${name}`, false, true)
        : ([...this.#confined.values()].find((c) => c.id === CONFINED_SHARED) ?? this.#cordon(CONFINED_SHARED, false, true));
    this.#confined.set(name, cordon);
    this.#metrics.confined.set({ tenant: name }, 1);
    this.#logger.info({ tenant: name, cordon: cordon.id }, 'tenant held to its CPU quota; confined to a cordon of its own');
    t.moveTo(cordon);
    return true;
  }

  /** The tenant goes back to its shared cordon (it has kept within its CPU quota for a while). */
  release(name: string): boolean {
    const t = this.#tenants.get(name);
    if (t === undefined || !this.#confined.has(name)) return false;
    this.#unconfine(name);
    this.#logger.info({ tenant: name, cordon: this.homeOf(name).id }, 'tenant within its CPU quota again; back in its shared cordon');
    t.moveTo(this.homeOf(name));
    return true;
  }

  cordons(): Array<{ id: string; pid: number | null; state: string; tenants: number; restarts: number; quarantine: boolean; passes: number }> {
    return [...this.#shared, ...new Set(this.#quarantine.values()), ...new Set(this.#confined.values())].map((c) => ({
      id: c.id,
      pid: c.pid,
      state: c.state,
      tenants: c.tenantCount,
      restarts: c.restarts,
      quarantine: c.quarantine,
      passes: c.passes,
    }));
  }

  /** This pool's private directory (blackbox files, bundled child entries); removed by close(). */
  get runDir(): string {
    return this.#runDir;
  }

  close(): void {
    for (const t of this.#tenants.values()) t.dispose();
    this.#tenants.clear();
    for (const c of this.#shared) c.close();
    for (const c of new Set(this.#quarantine.values())) c.close();
    for (const c of new Set(this.#confined.values())) c.close();
    fs.rmSync(this.#runDir, { recursive: true, force: true });
  }

  #privateConfined(): number {
    let n = 0;
    for (const c of this.#confined.values()) if (c.id !== CONFINED_SHARED) n++;
    return n;
  }

  /** Forgets a tenant's confinement; its private cordon closes once nobody uses it. */
  #unconfine(name: string): void {
    const c = this.#confined.get(name);
    if (c === undefined) return;
    this.#confined.delete(name);
    this.#metrics.confined.remove({ tenant: name });
    if (![...this.#confined.values()].includes(c)) c.close();
  }

  #cordon(id: string, quarantine: boolean, confined = false): Cordon {
    return new Cordon({
      id,
      quarantine,
      confined,
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
    // Quarantine outranks confinement: a confined tenant crashing repeatedly is quarantined (a cordon
    // of its own either way, but quarantine is sticky).
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
    this.#unconfine(t.tenant);
  }
}
