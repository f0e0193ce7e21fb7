// Connect latency and ping-pong round trip: explicit (client dials the listener) vs eBPF redirect
// (client dials the VIP) vs redirect + sk_msg acceleration, for a pod behind a veth and for a
// workload in the node's own netns (loopback). Runs inside private network namespaces.
// Usage (root): node bench/datapath-redirect.ts [count=1000]  -> bench/results/datapath-redirect.json
import fs from 'node:fs';
import path from 'node:path';
import { Datapath } from '../runtime/src/datapath/index.ts';
import { NODE_IP, TestNet, privileged } from '../test/datapath/netns.ts';

const count = Number(process.argv[2] ?? 1000);
const skip = privileged();
if (skip) {
  console.error(`skipped: ${skip}`);
  process.exit(1);
}

interface Stats { p50: number; p99: number; mean: number }
function stats(xs: number[]): Stats {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))]!;
  return { p50: +q(0.5).toFixed(1), p99: +q(0.99).toFixed(1), mean: +(s.reduce((a, b) => a + b, 0) / s.length).toFixed(1) };
}

const net = new TestNet();
let dp: Datapath | undefined;
const results: Array<{ topology: string; mode: string; connectUs: Stats; rttUs: Stats }> = [];
try {
  net.setup();
  const pod = net.cgroup('pod');
  const local = net.cgroup('local');
  const proxy = net.cgroup('proxy');
  const listener = await net.server('bench', proxy);
  dp = await Datapath.open({ pinDir: net.pinDir, proxyCgroupPath: proxy });
  dp.setServices('bench', [{ vip: '10.96.0.10:80', listenerPort: listener.port }]);
  dp.attachWorkload({ tenant: 'bench', name: 'pod', cgroupPath: pod, proxyAddress: NODE_IP });
  dp.attachWorkload({ tenant: 'bench', name: 'local', cgroupPath: local });
  // the node netns routes the VIP to its loopback so an unredirected connect would stay local too
  const run = async (topology: string, mode: string, host: string, port: number, ns: string, cgroup?: string) => {
    const ev = await net.client({ host, port, mode: 'bench', count, timeoutMs: 5000 }, { ns, ...(cgroup ? { cgroup } : {}) });
    const b = ev.find((e) => e.event === 'bench') as { connectUs: number[]; rttUs: number[] } | undefined;
    if (!b) throw new Error(`${topology}/${mode}: ${JSON.stringify(ev)}`);
    results.push({ topology, mode, connectUs: stats(b.connectUs), rttUs: stats(b.rttUs) });
  };
  for (const [topology, ns, cg, direct] of [['pod-veth', net.podNs, pod, NODE_IP], ['node-loopback', net.nodeNs, local, '127.0.0.1']] as const) {
    dp.setAcceleration(false);
    await run(topology, 'explicit', direct, listener.port, ns);
    await run(topology, 'redirect', '10.96.0.10', 80, ns, cg);
    dp.setAcceleration(true);
    await run(topology, 'redirect+sk_msg', '10.96.0.10', 80, ns, cg);
  }
  const counters = dp.counters();
  const out = { date: new Date().toISOString(), count, kernel: fs.readFileSync('/proc/sys/kernel/osrelease', 'utf8').trim(), results, counters };
  const file = path.join(import.meta.dirname, 'results', 'datapath-redirect.json');
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, `${JSON.stringify(out, null, 2)}\n`);
  console.table(results.map((r) => ({ topology: r.topology, mode: r.mode, 'connect p50 µs': r.connectUs.p50, 'connect p99 µs': r.connectUs.p99, 'rtt p50 µs': r.rttUs.p50, 'rtt p99 µs': r.rttUs.p99, 'rtt mean µs': r.rttUs.mean })));
  console.log(`accel redirects: ${counters.accel_redirects}, fallbacks: ${counters.accel_fallbacks}; written to ${file}`);
} finally {
  try { dp?.close({ detach: true }); } catch { /* teardown continues */ }
  await net.teardown();
}
