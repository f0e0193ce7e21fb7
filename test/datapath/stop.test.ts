// ISOMESH_DATAPATH_ON_STOP=detach: a daemon that stops takes its datapath with it — no program left
// attached to the proxy or a workload cgroup, no pin, and no proxy cgroup it created. (The default,
// keep, is the restart test in daemon.test.ts: pins re-adopted by the next run.) Everything lives in
// the test's own namespaces, cgroups and bpffs directory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { NODE_IP, TestNet, bpftoolCgroup, privileged, programExists } from './netns.ts';
import { NodeDaemon } from './node-daemon.ts';

test('ISOMESH_DATAPATH_ON_STOP=detach: a stopped daemon leaves no program, pin or cgroup of its own', { skip: privileged(), timeout: 180_000 }, async (t) => {
  const net = new TestNet();
  const daemons: NodeDaemon[] = [];
  let made: string | undefined;
  t.after(async () => {
    for (const d of daemons) {
      try { await d.stop(); } catch { /* teardown continues */ }
    }
    // Only if a failed run left it (empty once its daemon has exited).
    if (made !== undefined) try { fs.rmdirSync(made); } catch { /* gone or never made */ }
    await net.teardown();
    for (const d of daemons) d.cleanup();
  });
  net.setup();
  const pod = net.cgroup('pod');

  /** Starts a detaching daemon in `proxy`, gives it a tenant and a workload; the program ids attached. */
  const run = async (proxy: string): Promise<{ d: NodeDaemon; ids: number[] }> => {
    const d = new NodeDaemon(net, { proxyCgroup: proxy, env: { ISOMESH_DATAPATH_ON_STOP: 'detach' } });
    daemons.push(d);
    await d.start();
    assert.equal((await d.api('PUT', '/v1/tenants/shop', {})).status, 201);
    const w = await d.api('PUT', '/v1/tenants/shop/workloads/web', { cgroupPath: pod, proxyAddress: NODE_IP });
    assert.equal(w.status, 201, JSON.stringify(w.body));
    const onProxy = bpftoolCgroup(proxy);
    const onPod = bpftoolCgroup(pod);
    assert.ok(onProxy.some((p) => p.name === 'mesh_sockops'), `proxy cgroup: ${JSON.stringify(onProxy)}`);
    assert.ok(onPod.length >= 2, `workload cgroup: ${JSON.stringify(onPod)}`);
    assert.ok(fs.existsSync(net.pinDir), 'pins while running');
    return { d, ids: [...onProxy, ...onPod].map((p) => p.id) };
  };

  await t.test('a proxy cgroup the daemon created: everything goes, the cgroup too', async () => {
    made = path.join(net.cgroupRoot, 'proxy-made-by-the-daemon');
    assert.equal(fs.existsSync(made), false);
    const { d, ids } = await run(made);
    assert.equal(await d.stop(), 0, d.logs().slice(-2000));
    assert.deepEqual(bpftoolCgroup(pod), [], 'nothing left on the workload cgroup');
    assert.equal(fs.existsSync(net.pinDir), false, 'no pin left');
    for (const id of ids) assert.equal(programExists(id), false, `program ${id} freed`);
    assert.equal(fs.existsSync(made), false, 'the cgroup the daemon made is removed');
    assert.match(d.logs(), /proxy cgroup removed/);
  });

  await t.test('a proxy cgroup that existed before stays, with nothing attached', async () => {
    const given = net.cgroup('proxy-given');
    const { d, ids } = await run(given);
    assert.equal(await d.stop(), 0, d.logs().slice(-2000));
    assert.deepEqual(bpftoolCgroup(given), []);
    assert.deepEqual(bpftoolCgroup(pod), []);
    assert.equal(fs.existsSync(net.pinDir), false);
    for (const id of ids) assert.equal(programExists(id), false, `program ${id} freed`);
    assert.equal(fs.existsSync(given), true, 'the operator’s cgroup stays');
  });

  await t.test('auto, and the datapath does not open after the daemon joined a proxy cgroup it made: it goes back, the cgroup goes', async () => {
    const planned = path.join(net.cgroupRoot, 'proxy-of-a-failed-start');
    made = planned;
    // A pin dir whose parent is no bpffs directory: Datapath.open refuses it after the cgroup was joined.
    const d = new NodeDaemon(net, { proxyCgroup: planned, datapath: 'auto', env: { ISOMESH_BPF_PIN_DIR: `${net.pinDir}-missing/pins` } });
    daemons.push(d);
    await d.start();
    assert.match(d.logs(), /transparent redirection is off/);
    assert.equal(fs.existsSync(planned), false, `no cgroup left behind: ${d.logs().slice(-2000)}`);
    const cgroup = fs.readFileSync(`/proc/${d.pid}/cgroup`, 'utf8');
    assert.equal(cgroup.includes('proxy-of-a-failed-start'), false, cgroup);
    assert.equal(cgroup, fs.readFileSync('/proc/self/cgroup', 'utf8'), 'the daemon is back in the cgroup it was started in');
    assert.equal(await d.stop(), 0, d.logs().slice(-2000));
  });
});
