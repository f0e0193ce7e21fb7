// Issue 4: a workload keeps calling SERVICE_VIP:port and its traffic lands on its tenant's
// listener, with no iptables. Runs entirely inside network namespaces this test creates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Datapath } from '../../runtime/src/datapath/index.ts';
import { IsomeshError } from '../../runtime/src/errors.ts';
import { cgroup2Mount } from '../../bpf/loader/index.ts';
import { NODE_IP, NODE_IP6, POD_IP, TestNet, bpftoolCgroup, privileged, programExists } from './netns.ts';

test('workload VIP traffic is redirected into its tenant listener', { skip: privileged(), timeout: 120_000 }, async (t) => {
  const net = new TestNet();
  let dp: Datapath | undefined;
  t.after(async () => {
    try { dp?.close({ detach: true }); } catch { /* teardown continues */ }
    await net.teardown();
  });
  net.setup();
  const podA = net.cgroup('pod-a');
  const podB = net.cgroup('pod-b');
  const proxy = net.cgroup('proxy');
  const listenerA = await net.server('tenant-a', proxy);
  const listenerB = await net.server('tenant-b', proxy);

  dp = await Datapath.open({ pinDir: net.pinDir, proxyCgroupPath: proxy });
  // tenants reuse the same VIP:port: each must only ever reach its own listener
  dp.setServices('tenant-a', [
    { vip: '10.96.0.10:80', listenerPort: listenerA.port },
    { vip: '[fd00:96::10]:80', listenerPort: listenerA.port },
  ]);
  dp.setServices('tenant-b', [
    { vip: '10.96.0.10:80', listenerPort: listenerB.port },
    { vip: '10.96.0.11:80', listenerPort: listenerB.port },
  ]);
  dp.attachWorkload({ tenant: 'tenant-a', name: 'web', cgroupPath: podA, proxyAddress: NODE_IP, proxyAddress6: NODE_IP6 });
  dp.attachWorkload({ tenant: 'tenant-b', name: 'api', cgroupPath: podB, proxyAddress: NODE_IP });
  const d = dp;

  /** whoami through the VIP; checks the original destination while the connection is open. */
  const whoami = async (host: string, port: number, cgroup?: string) => {
    let orig: string | undefined;
    const events = await net.client({ host, port, mode: 'whoami', timeoutMs: 1500 }, {
      ...(cgroup ? { cgroup } : {}),
      onWhoami: (e) => {
        const server = e.server as { peerAddress: string; peerPort: number };
        orig = d.originalDestination({ remoteAddress: server.peerAddress, remotePort: server.peerPort });
      },
    });
    const connected = events.find((e) => e.event === 'connected');
    const answer = events.find((e) => e.event === 'whoami')?.server as Record<string, unknown> | undefined;
    const error = events.find((e) => e.event === 'error')?.code as string | undefined;
    return { connected, answer, error, orig };
  };

  await t.test('IPv4: lands on the tenant listener, the app sees the VIP, the listener recovers it', async () => {
    const before = d.counters();
    const r = await whoami('10.96.0.10', 80, podA);
    assert.equal(r.error, undefined);
    assert.equal(r.answer?.tenant, 'tenant-a');
    assert.equal(r.answer?.localPort, listenerA.port);
    assert.equal(r.connected?.remoteAddress, '10.96.0.10', 'getpeername shows the VIP');
    assert.equal(r.connected?.remotePort, 80);
    assert.equal(String(r.answer?.peerAddress).replace('::ffff:', ''), POD_IP);
    assert.equal(r.orig, '10.96.0.10:80');
    const after = d.counters();
    assert.ok(after.redirects > before.redirects);
    assert.ok(after.getpeername > before.getpeername);
    assert.ok(after.tuples > before.tuples);
  });

  await t.test('IPv6 VIP', async () => {
    const r = await whoami('fd00:96::10', 80, podA);
    assert.equal(r.error, undefined);
    assert.equal(r.answer?.tenant, 'tenant-a');
    assert.equal(r.connected?.remoteAddress, 'fd00:96::10');
    assert.equal(r.connected?.remotePort, 80);
    assert.equal(r.orig, '[fd00:96::10]:80');
  });

  await t.test('two tenants with the same VIP:port stay separate', async () => {
    const b = await whoami('10.96.0.10', 80, podB);
    assert.equal(b.answer?.tenant, 'tenant-b');
    assert.equal(b.orig, '10.96.0.10:80');
    const b2 = await whoami('10.96.0.11', 80, podB);
    assert.equal(b2.answer?.tenant, 'tenant-b');
    // tenant-b's other VIP is not tenant-a's: a's workload is not redirected there
    const a = await whoami('10.96.0.11', 80, podA);
    assert.equal(a.answer, undefined);
    assert.ok(a.error, 'connect must fail');
  });

  await t.test('a process outside the workload cgroups is not redirected', async () => {
    const r = await whoami('10.96.0.10', 80);
    assert.equal(r.answer, undefined);
    assert.ok(r.error === 'ETIMEDOUT' || r.error === 'ENETUNREACH' || r.error === 'EHOSTUNREACH', `got ${r.error}`);
  });

  await t.test('original destination is unknown for connections that were not redirected', () => {
    assert.equal(d.originalDestination({ remoteAddress: POD_IP, remotePort: 1 }), undefined);
    assert.equal(d.originalDestination({}), undefined);
  });

  await t.test('acceleration on and off give identical responses', async () => {
    const pingpong = async () => {
      const ev = await net.client({ host: '10.96.0.10', port: 80, mode: 'pingpong', count: 5 }, { cgroup: podA });
      return ev.find((e) => e.event === 'replies')?.replies;
    };
    d.setAcceleration(false);
    const plain = await pingpong();
    const before = d.counters();
    d.setAcceleration(true);
    assert.equal(d.status().acceleration, true);
    const fast = await pingpong();
    const after = d.counters();
    d.setAcceleration(false);
    const plainAgain = await pingpong();
    assert.deepEqual(plain, ['tenant-a:ping-0', 'tenant-a:ping-1', 'tenant-a:ping-2', 'tenant-a:ping-3', 'tenant-a:ping-4']);
    assert.deepEqual(fast, plain);
    assert.deepEqual(plainAgain, plain);
    assert.ok(after.sockhash_adds >= before.sockhash_adds + 2, 'both ends entered the SOCKHASH');
    assert.ok(after.accel_redirects > before.accel_redirects, 'sk_msg redirected messages');
    assert.equal(d.counters().accel_redirects, after.accel_redirects, 'nothing accelerated once off');
  });

  await t.test('status reports programs, workloads, maps and counters', () => {
    const s = d.status();
    assert.equal(s.programs.length, 6);
    assert.ok(s.programs.every((p) => p.id > 0));
    assert.deepEqual(s.workloads.map((w) => `${w.tenant}/${w.name}:${w.programs.length}`).sort(), ['tenant-a/web:5', 'tenant-b/api:5']);
    assert.equal(s.maps.vips?.entries, 4);
    assert.equal(s.maps.workloads?.entries, 2);
    assert.ok(s.counters.redirects >= 4);
  });

  await t.test('restart: pins are re-adopted, no duplicate attachment, redirection never stops', async () => {
    const attached = bpftoolCgroup(podA);
    assert.equal(attached.length, 5);
    const oldIds = d.status().programs.map((p) => p.id);
    d.close();
    dp = undefined;
    // the runtime is gone, redirection is not
    assert.equal((await whoami('10.96.0.10', 80, podA)).answer?.tenant, 'tenant-a');
    const dp2 = await Datapath.open({ pinDir: net.pinDir, proxyCgroupPath: proxy });
    dp = dp2;
    const now = bpftoolCgroup(podA);
    assert.equal(now.length, 5, 'still exactly one attachment per hook');
    const ids = new Set(dp2.status().programs.map((p) => p.id));
    assert.ok(now.every((p) => ids.has(p.id)), 'links now run the re-loaded programs');
    assert.equal(bpftoolCgroup(proxy).length, 1);
    assert.deepEqual(dp2.status().workloads.map((w) => w.name).sort(), ['api', 'web']);
    const r = await whoami('10.96.0.10', 80, podA);
    assert.equal(r.answer?.tenant, 'tenant-a');
    assert.equal(dp2.originalDestination({ remoteAddress: POD_IP, remotePort: 1 }), undefined);
    // the first run's programs are released once nothing runs them (freed after an RCU grace period)
    let leaked = oldIds;
    for (let i = 0; i < 50 && leaked.length; i++) {
      leaked = oldIds.filter((id) => programExists(id));
      if (leaked.length) await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(leaked, [], 'programs of the previous run are freed');
  });

  await t.test('detach restores direct behaviour', async () => {
    assert.equal(dp!.detachWorkload('tenant-a', 'web'), true);
    assert.equal(dp!.detachWorkload('tenant-a', 'web'), false);
    assert.deepEqual(bpftoolCgroup(podA), []);
    const r = await whoami('10.96.0.10', 80, podA);
    assert.equal(r.answer, undefined);
    assert.ok(r.error);
    // tenant-b is untouched
    assert.equal((await whoami('10.96.0.10', 80, podB)).answer?.tenant, 'tenant-b');
    dp!.removeTenant('tenant-b');
    assert.deepEqual(bpftoolCgroup(podB), []);
    assert.equal(dp!.status().maps.vips?.entries, 2);
  });

  await t.test('typed errors for bad cgroup paths', () => {
    const expectCode = (fn: () => void, code: string) =>
      assert.throws(fn, (e: unknown) => e instanceof IsomeshError && e.code === code);
    expectCode(() => dp!.attachWorkload({ tenant: 'tenant-a', name: 'x', cgroupPath: cgroup2Mount()! }), 'ISOMESH_ERR_WORKLOAD_CGROUP_ROOT');
    expectCode(() => dp!.attachWorkload({ tenant: 'tenant-a', name: 'x', cgroupPath: `${net.cgroupRoot}/missing` }), 'ISOMESH_ERR_WORKLOAD_CGROUP_NOT_FOUND');
    expectCode(() => dp!.attachWorkload({ tenant: 'tenant-a', name: 'x', cgroupPath: fs.realpathSync('/tmp') }), 'ISOMESH_ERR_WORKLOAD_CGROUP_NOT_FOUND');
    expectCode(() => dp!.attachWorkload({ tenant: 'tenant-a', name: 'x', cgroupPath: podA, proxyAddress: 'nope' }), 'ISOMESH_ERR_WORKLOAD_INVALID');
    expectCode(() => dp!.setServices('tenant-a', [{ vip: '10.96.0.10', listenerPort: 1 }]), 'ISOMESH_ERR_SERVICE_INVALID');
    expectCode(() => dp!.attachWorkload({ tenant: 'Bad Name', name: 'x', cgroupPath: podA }), 'ISOMESH_ERR_TENANT_BAD_NAME');
  });
});
