// The eBPF path for the open-loop benchmark, inside a network namespace and cgroups of its own
// (test/datapath/netns.ts: nothing reaches the host's network): the real daemon with the datapath on
// (pinned to the proxy CPU, in its own proxy cgroup so sk_msg sees both ends), an upstream nginx in
// the same netns, and a workload cgroup whose connects to the tenant's VIP are redirected to the
// tenant listener on 127.0.0.1 — the node-local topology, like the loopback targets. Three targets:
// the listener dialled explicitly (control), the VIP through the redirect, and the VIP with sk_msg.
// Needs root; says why when it cannot run. teardown() kills by PID and removes netns, cgroups, pins.
import fs from 'node:fs';
import path from 'node:path';
import { NodeDaemon } from '../../test/datapath/node-daemon.ts';
import { TestNet, privileged } from '../../test/datapath/netns.ts';
import { setupTenant } from './daemon.ts';
import { startNginxUpstream } from './peers.ts';
import type { RealisticChain } from './plugins.ts';
import { ProcessGroup } from './processes.ts';

const VIP = '10.96.0.10';

export interface EbpfTarget {
  id: string;
  label: string;
  port: number;
  host: string;
  path: Record<string, number>;
  prefix: string[];
  before: () => Promise<void>;
  counters: () => Promise<Record<string, number>>;
}

export type EbpfSetup = { ran: false; reason: string } | { ran: true; targets: EbpfTarget[]; teardown: () => Promise<void> };

/**
 * Waits (≤ 5 s) until a cgroup of ours is empty; after 2 s, SIGKILLs the PIDs still in it — only
 * processes this benchmark started (the daemon's children, the generator) are ever put there.
 */
async function drainCgroup(dir: string): Promise<void> {
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline) {
    let pids: number[];
    try {
      pids = fs.readFileSync(path.join(dir, 'cgroup.procs'), 'utf8').split('\n').filter((l) => l !== '').map(Number);
    } catch {
      return; // already gone
    }
    if (pids.length === 0) return;
    if (deadline - Date.now() < 3000) {
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // exited meanwhile
        }
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function setupEbpf(o: { chain: RealisticChain; proxyCpu: string | undefined; loadCpu: string | undefined; root: string }): Promise<EbpfSetup> {
  let reason: string | false;
  try {
    reason = privileged();
  } catch (e) {
    reason = (e as Error).message;
  }
  if (reason) return { ran: false, reason };
  const net = new TestNet();
  const group = new ProcessGroup();
  let d: NodeDaemon | undefined;
  const cgroups: string[] = [];
  const teardown = async (): Promise<void> => {
    await group.close();
    try {
      await d?.stop();
    } catch {
      // teardown continues
    }
    // The daemon's cordon workers may outlive it by a moment; an occupied cgroup cannot be removed.
    for (const cg of cgroups) await drainCgroup(cg);
    await net.teardown();
    d?.cleanup();
  };
  try {
    net.setup();
    const workload = net.cgroup('workload');
    const proxyCg = net.cgroup('proxy');
    cgroups.push(workload, proxyCg);
    const inNode = ['nsenter', `--net=/run/netns/${net.nodeNs}`, '--'];
    const upstream = await startNginxUpstream(group, o.root, o.loadCpu, { name: 'netns-upstream', prefix: inNode });
    d = new NodeDaemon(net, { proxyCgroup: proxyCg, ...(o.proxyCpu === undefined ? {} : { cpus: o.proxyCpu }), env: { ISOMESH_LOG_LEVEL: 'warn', ISOMESH_WORKERS: '1' } });
    await d.start();
    const dm = d;
    const must = async (method: string, p: string, body?: unknown): Promise<any> => {
      const r = await dm.api(method, p, body);
      if (r.status < 200 || r.status > 299) throw new Error(`${method} ${p} → ${r.status} ${JSON.stringify(r.body)}`);
      return r.body;
    };
    const port = await setupTenant({ must }, 'chain3', { upstreamPort: upstream.port, plugins: o.chain.plugins, secrets: o.chain.secrets, quota: o.chain.quota });
    await must('PUT', '/v1/tenants/chain3/services/origin', { vip: `${VIP}:80`, endpoints: [{ address: '127.0.0.1', port: upstream.port }] });
    await must('PUT', '/v1/tenants/chain3/workloads/client', { cgroupPath: workload });
    const pid = d.pid!;
    const path = { proxy: pid, upstream: upstream.proc.pid };
    const inWorkload = [...inNode, 'sh', '-c', `echo $$ > '${workload}/cgroup.procs' && exec "$0" "$@"`];
    const accel = (on: boolean) => async () => {
      await must('PUT', '/v1/datapath', { acceleration: on });
    };
    const counters = async (): Promise<Record<string, number>> => (await must('GET', '/v1/datapath')).counters as Record<string, number>;
    const targets: EbpfTarget[] = [
      { id: 'netns-explicit', label: 'isomesh + 3 plugins, explicit (netns control)', port, host: '127.0.0.1', path, prefix: inNode, before: accel(false), counters },
      { id: 'netns-redirect', label: 'isomesh + 3 plugins via eBPF redirect', port: 80, host: VIP, path, prefix: inWorkload, before: accel(false), counters },
      { id: 'netns-sk_msg', label: 'isomesh + 3 plugins via eBPF redirect + sk_msg', port: 80, host: VIP, path, prefix: inWorkload, before: accel(true), counters },
    ];
    return { ran: true, targets, teardown };
  } catch (e) {
    const logs = d?.logs().slice(-2000) ?? '';
    await teardown();
    return { ran: false, reason: `setup failed: ${(e as Error).message}${logs ? `\n${logs}` : ''}` };
  }
}
