// Entry of a cordon process: a supervised child of the daemon that owns the isolates of a group of
// tenants (TenantSandbox each) and runs their chain passes through a FairScheduler. If V8 or
// isolated-vm aborts this process, only these tenants' in-flight calls fail; the daemon restarts it.
//
// The unit of work is a pass: one phase of one request's chain, every entry run in order by the
// tenant's chain runner (the same code as inline mode) and answered in one message. The pass arrives
// encoded by the daemon and its answer leaves as the runner made it: the cordon reads neither.
// Passes run synchronously one at a time; the scheduler picks the next tenant between passes. A pass
// whose hook waits for a host capability it cannot answer at once (ctx.sleep, ctx.fetch, a JWKS)
// releases its tenant (InvokeLimits.onIdle), so the tenant's other requests run meanwhile; its CPU is
// charged when it settles. Before each entry the pass id and entry index are stored in the
// "blackbox" (blackbox.ts: a shared mapping of a file, no syscall and no wake-up of the daemon) so
// that after a crash the daemon can blame the tenant and plugin that were running.

import net from 'node:net';
import { openBlackbox, type Blackbox } from './blackbox.ts';
import { seedGuestRuntimeCode } from './guest-code.ts';
import type { PassFailure, PassHooks, PassWire } from './chain-pass.ts';
import { CapabilityFetchError, type CapabilityFetch } from './capabilities.ts';
import { TenantSandbox } from './sandbox.ts';
import { FairScheduler } from './scheduler.ts';
import { CORDON_QUEUE_LIMIT, FrameChannel, NodeIpcChannel, wireKindFromEnv, type Channel, type FromCordon, type ToCordon } from './wire.ts';

type Call = Extract<ToCordon, { t: 'pass' }> & { queuedAt: bigint };
/** A released pass that got its capability result and waits for its tenant's turn to go on. */
type Resume = { t: 'resume'; grant: () => void };
type Task = Call | Resume;

/** Run calls for at most this long before letting new messages in (fairness needs them queued). */
const SLICE_MS = 0.5;
/** Results wait for the end of the slice (one write for many) unless the next call may be long. */
const HOLD_RESULTS_MS = 0.2;
const STATS_MS = 500;

// fd 4 is the socketpair the daemon opened for FrameChannel (stdio: ignore, inherit, inherit, ipc, pipe).
const socket = wireKindFromEnv() === 'ipc' ? undefined : new net.Socket({ fd: 4, readable: true, writable: true });
const channel: Channel<FromCordon, ToCordon> =
  socket === undefined
    ? new NodeIpcChannel<FromCordon, ToCordon>(process as never, { autoFlush: false })
    : new FrameChannel<FromCordon, ToCordon>(socket, { autoFlush: false });

const tenants = new Map<string, TenantSandbox>();
// The bound is a safety net only: the daemon bounds each tenant's queue before sending.
const scheduler = new FairScheduler<Task>({ queueLimit: CORDON_QUEUE_LIMIT });
const active = new Set<string>();
let blackbox: Blackbox | undefined;
let pumpScheduled = false;
/** When the oldest result not yet written was produced (0: none). */
let unflushedSince = 0;
/** The tenant whose results wait unwritten ('' once they are several tenants'). */
let unflushedTenant: string | undefined;
/** Recent wall time per call, by tenant (EWMA), to predict whether the next call is long. */
const callMs = new Map<string, number>();

function sendDone(call: Call, reply: PassWire | PassFailure, waitNs: number): void {
  if ('transport' in reply) channel.send({ t: 'unpassed', id: call.id, reply, waitNs });
  else {
    const m: Extract<FromCordon, { t: 'passed' }> = { t: 'passed', id: call.id, waitNs, raw: reply.json, cpuNs: reply.cpuNs, wallMs: reply.wallMs };
    if (reply.over !== undefined) m.over = reply.over;
    if (reply.extra !== undefined) m.extra = reply.extra;
    channel.send(m);
  }
  if (unflushedSince === 0) {
    unflushedSince = performance.now();
    unflushedTenant = call.tenant;
  } else if (unflushedTenant !== call.tenant) unflushedTenant = '';
}

function flush(): void {
  channel.flush();
  unflushedSince = 0;
  unflushedTenant = undefined;
}

/** Which pass and entry run now ([-1, -1]: none); read by the daemon only after this process died. */
function record(id: number, entry: number): void {
  blackbox?.record(id, entry);
}

/**
 * The memory of the tenants that ran calls, STATS_MS after the first of them: a timer only while
 * there is something to report, so an idle cordon is not woken (a wake-up of an idle process costs
 * 0.1–0.3 ms of CPU on a VM).
 */
let statsTimer: NodeJS.Timeout | undefined;
function armStats(): void {
  if (statsTimer !== undefined) return;
  statsTimer = setTimeout(() => {
    statsTimer = undefined;
    for (const t of active) sendStats(t);
    active.clear();
    flush();
  }, STATS_MS);
  statsTimer.unref();
}

function sendStats(tenant: string): void {
  const s = tenants.get(tenant);
  if (s !== undefined) channel.send({ t: 'stats', tenant, memoryBytes: s.memoryBytes() });
}

function sendHooks(tenant: string, key: string): void {
  const s = tenants.get(tenant);
  if (s !== undefined) channel.send({ t: 'hooks', tenant, key, hooks: s.hooks(key) ?? null });
}

/** ctx.fetch calls relayed to the daemon, awaiting its 'fetched' answer. */
const fetches = new Map<number, (reply: Extract<ToCordon, { t: 'fetched' }>['reply']) => void>();
let fetchIds = 0;

/** A tenant's ctx.fetch backend in a cordon: the daemon performs it (it holds the data plane). */
function relayFetch(tenant: string): CapabilityFetch {
  return (req) =>
    new Promise((resolve, reject) => {
      const id = ++fetchIds;
      // The sandbox gives up at timeoutMs; the entry must not outlive a daemon that never answers.
      const timer = setTimeout(() => {
        fetches.delete(id);
        reject(new CapabilityFetchError('ERR_FETCH_TIMEOUT', `ctx.fetch: no answer within ${req.timeoutMs} ms`));
      }, req.timeoutMs + 1000);
      fetches.set(id, (reply) => {
        clearTimeout(timer);
        if (reply.ok) resolve({ status: reply.status, headers: reply.headers, body: Buffer.from(reply.body, 'base64') });
        else reject(new CapabilityFetchError(reply.code, reply.message));
      });
      const wire = { service: req.service, method: req.method, path: req.path, headers: req.headers, timeoutMs: req.timeoutMs };
      channel.send({
        t: 'fetch',
        id,
        tenant,
        req: req.body === undefined ? wire : { ...wire, body: Buffer.from(req.body.buffer, req.body.byteOffset, req.body.byteLength).toString('base64') },
      });
      // The capability loop runs outside the pump: write now rather than at the end of a slice.
      flush();
    });
}

function createTenant(m: Extract<ToCordon, { t: 'tenant' }>): void {
  const existing = tenants.get(m.tenant);
  if (existing !== undefined) {
    existing.setMemoryMb(m.memoryMb);
    existing.setSecrets(m.secrets);
    scheduler.setWeight(m.tenant, m.weight);
    return;
  }
  const tenant = m.tenant;
  const sandbox = new TenantSandbox({
    tenant,
    memoryMb: m.memoryMb,
    fetch: relayFetch(tenant),
    events: {
      onLoadError: (key, kind, message) => channel.send({ t: 'loadError', tenant, key, kind, message }),
      onIsolateLost: (key, kind, message) => channel.send({ t: 'lost', tenant, key: key ?? null, kind, message }),
      onIsolateRebuilt: () => channel.send({ t: 'rebuilt', tenant }),
    },
  });
  sandbox.setSecrets(m.secrets);
  tenants.set(tenant, sandbox);
  scheduler.setWeight(tenant, m.weight);
}

function passCpuMs(wire: PassWire): number {
  let ns = 0;
  for (const n of wire.cpuNs) ns += n;
  return ns / 1e6;
}

function run(call: Call): void {
  const sandbox = tenants.get(call.tenant);
  if (sandbox === undefined) {
    scheduler.complete(call.tenant, 0);
    sendDone(call, { transport: 'unavailable', message: 'tenant is not loaded in this cordon' }, 0);
    return;
  }
  active.add(call.tenant);
  armStats();
  const waitNs = Number(process.hrtime.bigint() - call.queuedAt);
  const t0 = performance.now();
  // Do not hold finished calls' results hostage behind a long call, nor another tenant's behind
  // this one's: should this pass kill the process, only its own tenant's answers are lost with it.
  if (unflushedSince !== 0 && (unflushedTenant !== call.tenant || (callMs.get(call.tenant) ?? 0) > HOLD_RESULTS_MS || t0 - unflushedSince > HOLD_RESULTS_MS)) flush();
  let released = false;
  let entry = -1;
  const hooks: PassHooks = {
    enter: (i) => {
      entry = i;
      record(call.id, i);
    },
    exit: () => record(-1, -1),
    limits: {
      // The hook waits for a host capability (or another call): the isolate is free, so the tenant's
      // next pass may run meanwhile. Its CPU is charged when it settles (settle below).
      onIdle: () => {
        if (released) return;
        released = true;
        record(-1, -1);
        scheduler.complete(call.tenant, 0);
        schedulePump();
      },
      // Its wait is over: what it runs next (the rest of the hook, the next entries) waits for the
      // tenant's turn like any pass, ahead of the tenant's new ones.
      resume: async () => {
        await new Promise<void>((grant) => {
          const job: Resume = {
            t: 'resume',
            grant: () => {
              released = false;
              grant();
            },
          };
          if (!scheduler.enqueueFront(call.tenant, job)) job.grant();
          else schedulePump();
        });
        record(call.id, entry);
      },
    },
  };
  let out: PassWire | Promise<PassWire>;
  try {
    out = sandbox.runEncoded({ json: call.raw, entries: call.s.length, slots: call.s, req: call.q === 1, cpuBudgetMs: call.b }, hooks);
  } catch (e) {
    record(-1, -1);
    scheduler.complete(call.tenant, 0);
    sendDone(call, { transport: 'crashed', message: `sandbox error: ${e instanceof Error ? e.message : String(e)}` }, waitNs);
    return;
  }
  callMs.set(call.tenant, 0.7 * (callMs.get(call.tenant) ?? 0) + 0.3 * (performance.now() - t0));
  if (out instanceof Promise) {
    // Until onIdle releases it, the tenant stays busy (its isolate has an unsettled call).
    out.then(
      (r) => settle(call, r, waitNs, released),
      (e: unknown) => {
        record(-1, -1);
        settle(call, { transport: 'crashed', message: `sandbox error: ${String(e)}` }, waitNs, released);
      },
    );
    return;
  }
  scheduler.complete(call.tenant, passCpuMs(out));
  sendDone(call, out, waitNs);
}

function settle(call: Call, reply: PassWire | PassFailure, waitNs: number, released: boolean): void {
  const cpuMs = 'transport' in reply ? 0 : passCpuMs(reply);
  // A released tenant may already run its next pass: charge the CPU without touching "busy".
  if (released) scheduler.charge(call.tenant, cpuMs);
  else scheduler.complete(call.tenant, cpuMs);
  sendDone(call, reply, waitNs);
  // Through the event loop: a burst of passes resuming together (timers firing at once) must let
  // newly arrived passes of other tenants be read and queued between them.
  schedulePumpSoon();
}

function pump(): void {
  pumpScheduled = false;
  const sliceEnd = performance.now() + SLICE_MS;
  for (;;) {
    const next = scheduler.next();
    if (next === undefined) break;
    // A resumed pass continues in a microtask, holding its tenant's turn until it waits or settles.
    if (next.task.t === 'resume') next.task.grant();
    else run(next.task);
    if (performance.now() > sliceEnd) {
      // Through the event loop (not a microtask): calls that arrived meanwhile must be read and
      // queued before the scheduler picks again, or a long call's tenant would go again first.
      pumpScheduled = true;
      setImmediate(pump);
      break;
    }
  }
  flush();
}

function schedulePumpSoon(): void {
  if (pumpScheduled) return;
  pumpScheduled = true;
  setImmediate(pump);
}

/** After the current batch of messages: every frame of a chunk is queued before the first pick. */
function schedulePump(): void {
  if (pumpScheduled) return;
  pumpScheduled = true;
  queueMicrotask(pump);
}

function handle(m: ToCordon): void {
  switch (m.t) {
    case 'pass': {
      const call = m as Call;
      call.queuedAt = process.hrtime.bigint();
      if (!scheduler.enqueue(m.tenant, call)) channel.send({ t: 'shed', id: m.id, queued: scheduler.queued(m.tenant) });
      break;
    }
    case 'fetched': {
      const answer = fetches.get(m.id);
      fetches.delete(m.id);
      answer?.(m.reply);
      return;
    }
    case 'init':
      seedGuestRuntimeCode(m.guest, m.runner);
      blackbox = openBlackbox(m.blackbox);
      break;
    case 'tenant':
      createTenant(m);
      sendStats(m.tenant);
      break;
    case 'retain': {
      const s = tenants.get(m.tenant);
      if (s === undefined) break;
      s.retain(m.spec);
      sendHooks(m.tenant, m.spec.key);
      sendStats(m.tenant);
      break;
    }
    case 'release':
      tenants.get(m.tenant)?.release(m.key);
      break;
    case 'secrets':
      tenants.get(m.tenant)?.setSecrets(m.secrets);
      break;
    case 'memory':
      tenants.get(m.tenant)?.setMemoryMb(m.mb);
      break;
    case 'generation':
      tenants.get(m.tenant)?.defineGenerationJson(m.g, m.json);
      break;
    case 'dropGeneration':
      tenants.get(m.tenant)?.dropGeneration(m.g);
      break;
    case 'weight':
      scheduler.setWeight(m.tenant, m.weight);
      break;
    case 'reset':
      tenants.get(m.tenant)?.resetBackoff();
      break;
    case 'drop': {
      tenants.get(m.tenant)?.dispose();
      tenants.delete(m.tenant);
      for (const task of scheduler.drop(m.tenant)) {
        // A resumed pass finds its isolate gone and answers for itself.
        if (task.t === 'resume') task.grant();
        else sendDone(task, { transport: 'unavailable', message: 'tenant left this cordon' }, 0);
      }
      break;
    }
  }
  schedulePump();
}

channel.onMessage(handle);
// The daemon is gone (its end of the channel closed): nothing left to serve.
process.on('disconnect', () => process.exit(0));
socket?.on('close', () => process.exit(0));
// Under `node --cpu-prof` (bench/profile.ts) the profile is written only by an orderly exit; the
// daemon's close() then sends SIGTERM (elsewhere SIGKILL, and SIGTERM keeps its default).
if (process.execArgv.some((a) => a.startsWith('--cpu-prof'))) process.on('SIGTERM', () => process.exit(0));

channel.send({ t: 'ready', pid: process.pid });
channel.flush();
