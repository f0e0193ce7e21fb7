// Entry of a cordon process: a supervised child of the daemon that owns the isolates of a group of
// tenants (TenantSandbox each) and runs their hook calls through a FairScheduler. If V8 or
// isolated-vm aborts this process, only these tenants' in-flight calls fail; the daemon restarts it.
//
// Calls run synchronously (applySync) one at a time; the scheduler picks the next tenant between
// calls. Before each call the id is written to the "blackbox" file (pwrite, no wake-up of the daemon)
// so that after a crash the daemon can blame the tenant whose call was running.

import fs from 'node:fs';
import net from 'node:net';
import { seedGuestRuntimeCode } from './guest-code.ts';
import { TenantSandbox, type InvokeOutcome } from './sandbox.ts';
import { FairScheduler } from './scheduler.ts';
import { FrameChannel, NodeIpcChannel, wireKindFromEnv, type Channel, type FromCordon, type ToCordon } from './wire.ts';

type Call = Extract<ToCordon, { t: 'call' }> & { queuedAt: bigint };

/** A safety net only: the daemon bounds each tenant's queue before sending. */
const QUEUE_LIMIT = 65_536;
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
const scheduler = new FairScheduler<Call>({ queueLimit: QUEUE_LIMIT });
const active = new Set<string>();
const box = Buffer.alloc(8);
let blackbox = -1;
let pumpScheduled = false;
/** When the oldest result not yet written was produced (0: none). */
let unflushedSince = 0;
/** Recent wall time per call, by tenant (EWMA), to predict whether the next call is long. */
const callMs = new Map<string, number>();

function sendDone(call: Call, out: InvokeOutcome, waitNs: number): void {
  channel.send({ t: 'done', id: call.id, out, waitNs });
  if (unflushedSince === 0) unflushedSince = performance.now();
}

function flush(): void {
  channel.flush();
  unflushedSince = 0;
}

function record(id: number): void {
  if (blackbox < 0) return;
  box.writeDoubleLE(id, 0);
  fs.writeSync(blackbox, box, 0, 8, 0);
}

function sendStats(tenant: string): void {
  const s = tenants.get(tenant);
  if (s !== undefined) channel.send({ t: 'stats', tenant, memoryBytes: s.memoryBytes() });
}

function sendHooks(tenant: string, key: string): void {
  const s = tenants.get(tenant);
  if (s !== undefined) channel.send({ t: 'hooks', tenant, key, hooks: s.hooks(key) ?? null });
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

function finish(call: Call, out: InvokeOutcome): void {
  scheduler.complete(call.tenant, out.cpuNs / 1e6);
  sendDone(call, out, 0);
}

function run(call: Call): void {
  const sandbox = tenants.get(call.tenant);
  if (sandbox === undefined) {
    finish(call, { ok: false, kind: 'unavailable', message: 'tenant is not loaded in this cordon', cpuNs: 0 });
    return;
  }
  active.add(call.tenant);
  const waitNs = Number(process.hrtime.bigint() - call.queuedAt);
  const t0 = performance.now();
  // Do not hold finished calls' results hostage behind a long call.
  if (unflushedSince !== 0 && ((callMs.get(call.tenant) ?? 0) > HOLD_RESULTS_MS || t0 - unflushedSince > HOLD_RESULTS_MS)) flush();
  record(call.id);
  let out: InvokeOutcome | Promise<InvokeOutcome>;
  try {
    out = sandbox.invoke(call.key, call.input, call.config, call.timeoutMs);
  } catch (e) {
    out = { ok: false, kind: 'crashed', message: `sandbox error: ${e instanceof Error ? e.message : String(e)}`, cpuNs: 0 };
  }
  record(-1);
  callMs.set(call.tenant, 0.7 * (callMs.get(call.tenant) ?? 0) + 0.3 * (performance.now() - t0));
  if (out instanceof Promise) {
    // The tenant stays busy (its isolate has an unsettled call); other tenants go on.
    out.then(
      (o) => settle(call, o, waitNs),
      (e: unknown) => settle(call, { ok: false, kind: 'crashed', message: String(e), cpuNs: 0 }, waitNs),
    );
    return;
  }
  scheduler.complete(call.tenant, out.cpuNs / 1e6);
  sendDone(call, out, waitNs);
}

function settle(call: Call, out: InvokeOutcome, waitNs: number): void {
  scheduler.complete(call.tenant, out.cpuNs / 1e6);
  sendDone(call, out, waitNs);
  schedulePump();
}

function pump(): void {
  pumpScheduled = false;
  const sliceEnd = performance.now() + SLICE_MS;
  for (;;) {
    const next = scheduler.next();
    if (next === undefined) break;
    run(next.task);
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

/** After the current batch of messages: every frame of a chunk is queued before the first pick. */
function schedulePump(): void {
  if (pumpScheduled) return;
  pumpScheduled = true;
  queueMicrotask(pump);
}

function handle(m: ToCordon): void {
  switch (m.t) {
    case 'call': {
      const call = m as Call;
      call.queuedAt = process.hrtime.bigint();
      if (!scheduler.enqueue(m.tenant, call)) channel.send({ t: 'shed', id: m.id, queued: scheduler.queued(m.tenant) });
      break;
    }
    case 'init':
      seedGuestRuntimeCode(m.guest);
      blackbox = fs.openSync(m.blackbox, 'r+');
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
    case 'weight':
      scheduler.setWeight(m.tenant, m.weight);
      break;
    case 'reset':
      tenants.get(m.tenant)?.resetBackoff();
      break;
    case 'drop': {
      tenants.get(m.tenant)?.dispose();
      tenants.delete(m.tenant);
      for (const call of scheduler.drop(m.tenant)) {
        sendDone(call, { ok: false, kind: 'unavailable', message: 'tenant left this cordon', cpuNs: 0 }, 0);
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
setInterval(() => {
  for (const t of active) sendStats(t);
  active.clear();
  flush();
}, STATS_MS).unref();
channel.send({ t: 'ready', pid: process.pid });
channel.flush();
