// Cordon: one supervised worker process (cordon-main.ts) holding the isolates of a group of tenants.
// CordonTenant is a tenant's handle on its cordon with the same shape as TenantSandbox
// (TenantRuntime), so the chain and quota code does not know which mode it runs in. The daemon keeps
// each tenant's desired state (memory, weight, secrets, retained versions) and re-sends it whenever a
// cordon process is (re)started or the tenant moves to another cordon.

import { fork, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { ProcessSupervisor } from '../process-supervisor.ts';
import { decodePass, encodePass, generationJson, type ChainPass, type PassReply } from './chain-pass.ts';
import { childEntry } from './child-entry.ts';
import { guestRuntimeCode, runnerCode } from './guest-code.ts';
import { IdTable } from './id-table.ts';
import type { SandboxEvents, VersionSpec } from './sandbox.ts';
import { CORDON_QUEUE_LIMIT, FrameChannel, NodeIpcChannel, type Channel, type FromCordon, type ToCordon, type WireFetchReply, type WireFetchRequest, type WireKind } from './wire.ts';

/** The daemon's side of ctx.fetch for a tenant in a cordon (PluginHost checks and performs it). */
export type FetchRelay = (tenant: string, req: WireFetchRequest) => Promise<WireFetchReply>;

export type Hooks = Array<'onRequest' | 'onResponse'>;

/** What the host needs from a tenant's isolates, inline (TenantSandbox) or in a cordon (CordonTenant). */
export interface TenantRuntime {
  retain(spec: VersionSpec): void;
  release(key: string): void;
  hooks(key: string): Hooks | undefined;
  setSecrets(secrets: Record<string, string>): void;
  setMemoryMb(memoryMb: number): void;
  /** A chain generation's services and entry configs (installed in the isolate once, then referenced by passes). */
  defineGeneration(generation: number, services: readonly string[], configs: ReadonlyArray<readonly [number, unknown]>): void;
  dropGeneration(generation: number): void;
  resetBackoff(): void;
  memoryBytes(): number;
  /** Runs one phase of a request's chain (runChainPass): in this process, or in one round trip to a cordon. */
  runPass(pass: ChainPass): PassReply | Promise<PassReply>;
  dispose(): void;
}

export interface Placement {
  cordon: string;
  pid: number | null;
  quarantined: boolean;
  /** In a cordon of its own because it is held to its CPU quota (CordonPool.confine). */
  confined: boolean;
}

export interface CordonEvents {
  /** The process died; `blamed` is the tenant whose call was running (undefined when none was). */
  onExit(cordon: Cordon, info: { blamed?: CordonTenant; blamedKey?: string; code: number | null; signal: string | null }): void;
  onRestart(cordon: Cordon): void;
}

interface PendingCall {
  tenant: CordonTenant;
  pass: ChainPass;
  /** The process it was sent to (a restarted cordon's calls are not the dead one's). */
  child: ChildProcess | undefined;
  resolve: (reply: PassReply) => void;
}

const MAX_BACKOFF_MS = 5_000;
/** How long a dead cordon's socket may take to deliver what the process wrote before dying. */
const DRAIN_MS = 200;
const STREAK_RESET_MS = 30_000;

/** Arguments of the parent that a child must not inherit (the test runner, inspector, watch mode). */
function childExecArgv(): string[] {
  return process.execArgv.filter((a) => !/^--(test|inspect|watch|experimental-test)/.test(a));
}

export class Cordon {
  readonly id: string;
  readonly quarantine: boolean;
  /** Holds tenants confined for their CPU quota (CordonPool.confine). */
  readonly confined: boolean;
  readonly #wire: WireKind;
  readonly #events: CordonEvents;
  readonly #logger: Logger;
  /** The pool's private directory: blackbox files and the bundled entry. */
  readonly #runDir: string;
  readonly #blackbox: string;
  readonly #fetch: FetchRelay;
  readonly #tenants = new Map<string, CordonTenant>();
  readonly #pending = new IdTable<PendingCall>();
  /** Spawn, exit watch, restart with back-off (the process supervision shared with the Envoy supervisor). */
  readonly #proc: ProcessSupervisor;
  /** The process the channel talks to (set when one starts, cleared when it exits). */
  #child: ChildProcess | undefined;
  #channel: Channel<ToCordon, FromCordon> | undefined;
  #ids = 0;
  /** Chain passes sent (one round trip each). */
  passes = 0;

  constructor(opts: { id: string; quarantine: boolean; confined?: boolean; wire: WireKind; events: CordonEvents; logger: Logger; runDir: string; fetch: FetchRelay }) {
    this.id = opts.id;
    this.#fetch = opts.fetch;
    this.quarantine = opts.quarantine;
    this.confined = opts.confined ?? false;
    this.#wire = opts.wire;
    this.#events = opts.events;
    this.#logger = opts.logger.child({ cordon: opts.id });
    this.#runDir = opts.runDir;
    this.#blackbox = path.join(opts.runDir, `${opts.id.replace(/[^a-z0-9-]/gi, '_')}.blackbox`);
    this.#proc = new ProcessSupervisor({
      spawn: () => this.#spawn(),
      onStart: (child, restart) => this.#started(child, restart),
      onExit: (info) => void this.#exited(info.code, info.signal),
      delay: (streak) => (streak <= 1 ? 0 : Math.min(MAX_BACKOFF_MS, 100 * 2 ** (streak - 2))),
      streakResetMs: STREAK_RESET_MS,
      // A cordon whose tenants all left while it was down stays down until one attaches.
      wanted: () => this.#tenants.size > 0,
    });
  }

  get pid(): number | null {
    return this.#proc.pid ?? null;
  }

  /** 'idle' | 'up' | 'backoff' | 'closed' */
  get state(): string {
    const s = this.#proc.state;
    return s === 'running' ? 'up' : s === 'stopping' || s === 'stopped' ? 'closed' : s;
  }

  /** Restarts after a crash. */
  get restarts(): number {
    return this.#proc.restarts;
  }

  get #up(): boolean {
    return this.#proc.state === 'running';
  }

  get tenantCount(): number {
    return this.#tenants.size;
  }

  attach(t: CordonTenant): void {
    this.#tenants.set(t.tenant, t);
    if (this.#proc.state === 'idle') this.#proc.start();
    else if (this.#up) t.replay();
  }

  detach(t: CordonTenant): void {
    if (this.#tenants.get(t.tenant) !== t) return;
    this.#tenants.delete(t.tenant);
    this.send({ t: 'drop', tenant: t.tenant });
  }

  send(msg: ToCordon): void {
    if (this.#up) this.#channel?.send(msg);
  }

  /** Sends one chain pass, encoded once here; the cordon runs all its entries and answers once. */
  pass(t: CordonTenant, pass: ChainPass, slotOf: (key: string) => number | undefined): PassReply | Promise<PassReply> {
    if (!this.#up) {
      return { transport: 'unavailable', message: `cordon ${this.id} is restarting (back-off after repeated crashes)` };
    }
    const enc = encodePass(pass, slotOf);
    const id = ++this.#ids;
    this.passes++;
    // While answers are due, the channel keeps the daemon alive (ref is idempotent and cheap).
    this.#channel?.ref();
    return new Promise<PassReply>((resolve) => {
      this.#pending.set(id, { tenant: t, pass, child: this.#child, resolve });
      (this.#channel as Channel<ToCordon, FromCordon>).send({ t: 'pass', id, tenant: t.tenant, s: enc.slots, q: enc.req ? 1 : 0, b: enc.cpuBudgetMs, raw: enc.json });
    });
  }

  close(): void {
    // Under `node --cpu-prof` (bench/profile.ts) the cordon is asked to exit (SIGTERM, it exits 0)
    // so that it writes its profile; otherwise it ends at once (SIGKILL), whatever it is running.
    if (PROFILING) void this.#proc.stop({ graceMs: 2000 });
    else this.#proc.kill();
    this.#failPending(() => ({ transport: 'unavailable', message: 'plugin host is closing' }));
    this.#child = undefined;
    this.#channel?.close();
    fs.rmSync(this.#blackbox, { force: true });
  }

  #spawn(): ChildProcess {
    // Rewritten in place, never truncated: a file a process has mapped must not shrink under it.
    const fd = fs.openSync(this.#blackbox, fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    try {
      fs.writeSync(fd, Buffer.from(new Float64Array([-1, -1]).buffer), 0, 16, 0);
    } finally {
      fs.closeSync(fd);
    }
    const entry = childEntry(new URL('./cordon-main.ts', import.meta.url), this.#runDir, (err) => this.#logger.warn({ err }, 'could not bundle the cordon entry; cordons run it as TypeScript (20 MiB more each)'));
    return fork(entry, [], {
      execPath: process.execPath,
      execArgv: childExecArgv(),
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc', 'pipe'],
      env: { ...process.env, ISOMESH_CORDON_WIRE: this.#wire },
    });
  }

  #started(child: ChildProcess, restart: boolean): void {
    this.#child = child;
    const channel: Channel<ToCordon, FromCordon> =
      this.#wire === 'ipc'
        ? new NodeIpcChannel<ToCordon, FromCordon>(child, { autoFlush: true })
        : new FrameChannel<ToCordon, FromCordon>(child.stdio[4] as Socket, { autoFlush: true });
    this.#channel = channel;
    channel.onMessage((m) => this.#receive(m));
    child.on('error', (err) => this.#logger.error({ err }, 'cordon process error'));
    child.unref();
    // The IPC channel only carries control traffic in socket mode; it must not keep the daemon alive.
    (child.channel as { unref?: () => void } | undefined)?.unref?.();
    channel.unref();
    channel.send({ t: 'init', guest: guestRuntimeCode(), runner: runnerCode(), blackbox: this.#blackbox, cordon: this.id });
    for (const t of this.#tenants.values()) t.replay();
    if (restart) this.#events.onRestart(this);
  }

  #receive(m: FromCordon): void {
    switch (m.t) {
      case 'passed':
      case 'unpassed':
      case 'shed': {
        const p = this.#pending.take(m.id);
        if (p === undefined) return;
        if (this.#pending.size === 0) this.#channel?.unref();
        if (m.t === 'shed') p.resolve({ transport: 'overloaded', message: `tenant has ${m.queued} plugin calls queued in its cordon` });
        else if (m.t === 'unpassed') p.resolve(m.reply);
        else {
          const wire: Parameters<typeof decodePass>[1] = { json: m.raw ?? '', cpuNs: m.cpuNs, wallMs: m.wallMs };
          if (m.over !== undefined) wire.over = m.over;
          if (m.extra !== undefined) wire.extra = m.extra;
          // The daemon checks what the isolate answered (the cordon passed it on unread).
          p.resolve(decodePass(p.pass, wire));
        }
        return;
      }
      case 'ready':
        return;
      case 'fetch': {
        // Answer only the process that asked: a restarted cordon reuses fetch ids.
        const child = this.#child;
        const known = this.#tenants.has(m.tenant);
        const reply: Promise<WireFetchReply> = known
          ? this.#fetch(m.tenant, m.req)
          : Promise.resolve({ ok: false, code: 'ERR_CAPABILITY_FAILED', message: `ctx.fetch: tenant ${m.tenant} is not in cordon ${this.id}` });
        void reply.then((r) => {
          if (this.#child === child && this.#up) this.#channel?.send({ t: 'fetched', id: m.id, reply: r });
        });
        return;
      }
      default: {
        const t = this.#tenants.get(m.tenant);
        if (t !== undefined) t.receive(m);
      }
    }
  }

  /** Fails the calls still pending (those sent to `child` only, when given). */
  #failPending(outcome: (p: PendingCall) => PassReply, child?: ChildProcess): void {
    for (const [id, p] of [...this.#pending.entries()]) {
      if (child !== undefined && p.child !== child) continue;
      this.#pending.delete(id);
      p.resolve(outcome(p));
    }
    if (this.#pending.size === 0) this.#channel?.unref();
  }

  /** The call (pass id) and chain entry that were running, from the blackbox: [-1, -1] when none. */
  #runningCall(): [number, number] {
    try {
      const buf = fs.readFileSync(this.#blackbox);
      return buf.length >= 16 ? [buf.readDoubleLE(0), buf.readDoubleLE(8)] : [-1, -1];
    } catch {
      return [-1, -1];
    }
  }

  /** The process died unasked (the supervisor restarts it after its back-off, unless onExit closes us). */
  #exited(code: number | null, signal: string | null): void {
    const child = this.#child;
    const channel = this.#channel;
    this.#child = undefined;
    this.#channel = undefined;
    const [runningId, runningEntry] = this.#runningCall();
    const running = this.#pending.get(runningId);
    const why = signal !== null ? `signal ${signal}` : `exit code ${code}`;
    this.#logger.error({ code, signal, blamed: running?.tenant.tenant, inFlight: this.#pending.size }, 'cordon process died');
    // Answers the process wrote before it died may still be in the socket: deliver them first, so
    // only the calls that were lost with it fail (bounded: a socket that never closes is not waited for).
    const fail = (): void =>
      this.#failPending(
        (p) =>
          p === running
            ? { transport: 'crashed', message: `plugin call was running when its cordon process died (${why})`, entry: runningEntry }
            : { transport: 'crashed', message: `cordon process died (${why}) while the call was in flight` },
        child,
      );
    if (channel === undefined) fail();
    else {
      const timer = setTimeout(fail, DRAIN_MS);
      void channel.closed.then(() => {
        clearTimeout(timer);
        fail();
      });
    }
    const info: Parameters<CordonEvents['onExit']>[1] = { code, signal };
    if (running !== undefined) {
      info.blamed = running.tenant;
      const key = running.pass.entries[runningEntry]?.key;
      if (key !== undefined) info.blamedKey = key;
    }
    // May move the blamed tenant elsewhere (or close this cordon) before it comes back.
    this.#events.onExit(this, info);
  }
}

/** The queue bound for a concurrency quota: a quota of 0 (no limit) leaves only the cordon's own. */
function queueBoundFor(maxConcurrentRequests: number): number {
  return maxConcurrentRequests > 0 ? maxConcurrentRequests : CORDON_QUEUE_LIMIT;
}

/** A tenant's handle on the cordon that runs its isolate. */
export class CordonTenant implements TenantRuntime {
  readonly tenant: string;
  readonly #events: SandboxEvents;
  /** Set by the host's operator (tests); else the bound follows the tenant's maxConcurrentRequests. */
  readonly #fixedQueueLimit: number | undefined;
  #queueLimit: number;
  readonly #hooksFor: (digest: string) => Hooks | undefined;
  #cordon: Cordon;
  #memoryMb: number;
  #weight: number;
  #secrets: Record<string, string> = {};
  readonly #specs = new Map<string, { spec: VersionSpec; refs: number }>();
  /** Runner slots by version key (assigned here: passes are encoded in the daemon). */
  readonly #slots = new Map<string, number>();
  #nextSlot = 1;
  readonly #generations = new Map<number, string>();
  readonly #slotOf = (key: string): number | undefined => this.#slots.get(key);
  readonly #hooks = new Map<string, Hooks>();
  #memoryBytes = 0;
  #queued = 0;
  #disposed = false;

  constructor(opts: {
    tenant: string;
    memoryMb: number;
    weight: number;
    events: SandboxEvents;
    cordon: Cordon;
    maxConcurrentRequests: number;
    /** A fixed bound instead of the tenant's maxConcurrentRequests. */
    queueLimit?: number | undefined;
    hooksFor: (digest: string) => Hooks | undefined;
  }) {
    this.tenant = opts.tenant;
    this.#memoryMb = opts.memoryMb;
    this.#weight = opts.weight;
    this.#events = opts.events;
    this.#fixedQueueLimit = opts.queueLimit;
    this.#queueLimit = opts.queueLimit ?? queueBoundFor(opts.maxConcurrentRequests);
    this.#hooksFor = opts.hooksFor;
    this.#cordon = opts.cordon;
    this.#cordon.attach(this);
  }

  get cordon(): Cordon {
    return this.#cordon;
  }

  /** Calls sent to the cordon and not answered yet. */
  get queued(): number {
    return this.#queued;
  }

  placement(): Placement {
    return { cordon: this.#cordon.id, pid: this.#cordon.pid, quarantined: this.#cordon.quarantine, confined: this.#cordon.confined };
  }

  moveTo(cordon: Cordon): void {
    if (cordon === this.#cordon) return;
    this.#cordon.detach(this);
    this.#cordon = cordon;
    this.#memoryBytes = 0;
    cordon.attach(this);
  }

  /** Sends the whole desired state (after a cordon start or a move). */
  replay(): void {
    this.#cordon.send({ t: 'tenant', tenant: this.tenant, memoryMb: this.#memoryMb, weight: this.#weight, secrets: this.#secrets });
    for (const [g, json] of this.#generations) this.#cordon.send({ t: 'generation', tenant: this.tenant, g, json });
    for (const { spec } of this.#specs.values()) this.#cordon.send({ t: 'retain', tenant: this.tenant, spec });
  }

  receive(m: FromCordon): void {
    switch (m.t) {
      case 'hooks':
        if (m.hooks === null) this.#hooks.delete(m.key);
        else this.#hooks.set(m.key, m.hooks);
        return;
      case 'stats':
        this.#memoryBytes = m.memoryBytes;
        return;
      case 'loadError':
        this.#events.onLoadError(m.key, m.kind, m.message);
        return;
      case 'lost':
        this.#events.onIsolateLost(m.key ?? undefined, m.kind, m.message);
        return;
      case 'rebuilt':
        this.#events.onIsolateRebuilt();
        return;
    }
  }

  /** The cordon died while this tenant's call was running. */
  blamed(key: string, message: string): void {
    this.#events.onIsolateLost(key, 'crashed', message);
  }

  retain(spec: VersionSpec): void {
    const s = this.#specs.get(spec.key);
    if (s !== undefined) {
      s.refs++;
      return;
    }
    const slotted: VersionSpec = { ...spec, slot: this.#nextSlot++ };
    this.#slots.set(spec.key, slotted.slot as number);
    this.#specs.set(spec.key, { spec: slotted, refs: 1 });
    this.#cordon.send({ t: 'retain', tenant: this.tenant, spec: slotted });
  }

  release(key: string): void {
    const s = this.#specs.get(key);
    if (s === undefined || --s.refs > 0) return;
    this.#specs.delete(key);
    this.#slots.delete(key);
    this.#hooks.delete(key);
    this.#cordon.send({ t: 'release', tenant: this.tenant, key });
  }

  hooks(key: string): Hooks | undefined {
    return this.#hooks.get(key) ?? this.#hooksFor(key.slice(key.indexOf('#') + 1));
  }

  setSecrets(secrets: Record<string, string>): void {
    if (JSON.stringify(secrets) === JSON.stringify(this.#secrets)) return;
    this.#secrets = { ...secrets };
    this.#cordon.send({ t: 'secrets', tenant: this.tenant, secrets: this.#secrets });
  }

  setMemoryMb(memoryMb: number): void {
    if (memoryMb === this.#memoryMb) return;
    this.#memoryMb = memoryMb;
    this.#cordon.send({ t: 'memory', tenant: this.tenant, mb: memoryMb });
  }

  setWeight(weight: number): void {
    if (weight === this.#weight) return;
    this.#weight = weight;
    this.#cordon.send({ t: 'weight', tenant: this.tenant, weight });
  }

  /** Follows the tenant's maxConcurrentRequests (unless the host fixed the bound). */
  setQueueLimit(maxConcurrentRequests: number): void {
    this.#queueLimit = this.#fixedQueueLimit ?? queueBoundFor(maxConcurrentRequests);
  }

  defineGeneration(generation: number, services: readonly string[], configs: ReadonlyArray<readonly [number, unknown]>): void {
    const json = generationJson(services, configs);
    this.#generations.set(generation, json);
    this.#cordon.send({ t: 'generation', tenant: this.tenant, g: generation, json });
  }

  dropGeneration(generation: number): void {
    if (!this.#generations.delete(generation)) return;
    this.#cordon.send({ t: 'dropGeneration', tenant: this.tenant, g: generation });
  }

  resetBackoff(): void {
    this.#cordon.send({ t: 'reset', tenant: this.tenant });
  }

  memoryBytes(): number {
    return this.#memoryBytes;
  }

  runPass(pass: ChainPass): PassReply | Promise<PassReply> {
    if (this.#disposed) return { transport: 'unavailable', message: 'tenant was removed' };
    if (this.#queued >= this.#queueLimit) {
      return { transport: 'overloaded', message: `tenant has ${this.#queued} plugin calls queued (max ${this.#queueLimit})` };
    }
    const out = this.#cordon.pass(this, pass, this.#slotOf);
    if (!(out instanceof Promise)) return out;
    this.#queued++;
    return out.then((o) => {
      this.#queued--;
      return o;
    });
  }

  dispose(): void {
    this.#disposed = true;
    this.#cordon.detach(this);
  }
}

const PROFILING = process.execArgv.some((a) => a.startsWith('--cpu-prof'));

const RUN_DIR_PREFIX = 'isomesh-cordons-';

/**
 * A private directory for the cordons' blackbox files, named for this process so that a later start
 * can tell it is stale: directories of processes that are gone (a daemon killed with -9 never removes
 * its own) are removed first.
 */
export function cordonRunDir(): string {
  removeStaleRunDirs();
  return fs.mkdtempSync(path.join(os.tmpdir(), `${RUN_DIR_PREFIX}${process.pid}-`));
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Removes run directories whose daemon is dead (and unnamed ones from before pids were recorded, after a day). */
export function removeStaleRunDirs(dir = os.tmpdir()): number {
  let removed = 0;
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!name.startsWith(RUN_DIR_PREFIX)) continue;
    const full = path.join(dir, name);
    const m = /^(\d+)-/.exec(name.slice(RUN_DIR_PREFIX.length));
    let stale: boolean;
    if (m !== null) stale = Number(m[1]) !== process.pid && !alive(Number(m[1]));
    else {
      try {
        stale = Date.now() - fs.statSync(full).mtimeMs > 24 * 3600 * 1000;
      } catch {
        stale = false;
      }
    }
    if (!stale) continue;
    try {
      fs.rmSync(full, { recursive: true, force: true });
      removed++;
    } catch {
      // not ours to remove (another user's): leave it
    }
  }
  return removed;
}
