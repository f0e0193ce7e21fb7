// Issue 4 end to end: the real daemon in a test "node" netns, a "pod" netns behind a veth (its
// gateway is the workload's proxyAddress) and an upstream netns. Everything is set up through the
// management API; a pod process in the workload cgroup calls a service VIP with no Host header
// and lands in the tenant listener, the plugin chain acts, the upstream answers. No traffic leaves
// the namespaces this test creates.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { cgroup2Mount } from '../../bpf/loader/index.ts';
import { NODE_IP, NODE_IP6, UP_IP, TestNet, bpftoolCgroup, privileged, programExists } from './netns.ts';
import { NodeDaemon } from './node-daemon.ts';

const TAGGER = `
import { definePlugin } from '@isomesh/sdk';
export default definePlugin<{ tag: string }>({
  onRequest(req, ctx) { req.headers.set('x-mesh', ctx.config.tag); },
});`;

interface Reply { status?: number; body?: any; remoteAddress?: string; remotePort?: number; error?: string; curlExit?: number }

test('the daemon redirects workload VIP traffic through its tenant listener', { skip: privileged(), timeout: 300_000 }, async (t) => {
  const net = new TestNet();
  let d: NodeDaemon | undefined;
  t.after(async () => {
    try { await d?.stop(); } catch { /* teardown continues */ }
    if (process.env.ISOMESH_TEST_KEEP_LOGS) process.stderr.write(d?.logs() ?? '');
    await net.teardown();
    d?.cleanup();
  });
  net.setup();
  net.addUpstream();
  // the pod's default route is the node side of its veth, i.e. the workload's proxyAddress
  await net.exec(net.podNs, ['ip', 'route', 'replace', 'default', 'via', NODE_IP]);
  await net.exec(net.podNs, ['ip', '-6', 'route', 'replace', 'default', 'via', NODE_IP6]);
  const podA = net.cgroup('pod-a');
  const podB = net.cgroup('pod-b');
  const spare = net.cgroup('spare');
  const proxyCg = net.cgroup('proxy');
  const echoA = (await net.run(net.upNs, 'echo.ts', ['echo-a']).next()).port as number;
  const echoB = (await net.run(net.upNs, 'echo.ts', ['echo-b']).next()).port as number;

  d = new NodeDaemon(net, { proxyCgroup: proxyCg });
  await d.start();
  const dm = d;
  const ok = async (method: string, p: string, body?: unknown) => {
    const r = await dm.api(method, p, body);
    assert.ok(r.status >= 200 && r.status < 300, `${method} ${p} → ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };

  const shop = await ok('PUT', '/v1/tenants/shop', {});
  await ok('PUT', '/v1/tenants/shop/services/echo', { vip: '10.96.0.10:80', endpoints: [{ address: UP_IP, port: echoA }] });
  await ok('PUT', '/v1/tenants/shop/services/echo6', { vip: '[fd00:96::10]:80', endpoints: [{ address: UP_IP, port: echoA }] });
  await ok('PUT', '/v1/tenants/shop/services/other', { vip: '10.96.0.12:80', endpoints: [{ address: UP_IP, port: echoB }] });
  await ok('PUT', '/v1/tenants/shop/routes/special', { match: { pathPrefix: '/special' }, to: { service: 'other' } });
  const v = await ok('POST', '/v1/tenants/shop/plugins/tagger/versions', { source: TAGGER, language: 'typescript' });
  await ok('PUT', '/v1/tenants/shop/plugins/tagger/active', { version: v.version });
  await ok('PUT', '/v1/tenants/shop/chain', [{ plugin: 'tagger', config: { tag: 'shop-chain' } }]);
  const blog = await ok('PUT', '/v1/tenants/blog', {});
  await ok('PUT', '/v1/tenants/blog/services/web', { vip: '10.96.0.20:80', endpoints: [{ address: UP_IP, port: echoB }] });
  const wA = await dm.api('PUT', '/v1/tenants/shop/workloads/web', { cgroupPath: podA, proxyAddress: NODE_IP });
  assert.equal(wA.status, 201, JSON.stringify(wA.body));
  assert.equal(wA.body.attached, true);
  assert.equal(wA.body.proxy4, NODE_IP);
  assert.equal(wA.body.proxy6, NODE_IP6, 'the IPv6 address of the same interface serves IPv6 VIPs');
  assert.equal((await dm.api('PUT', '/v1/tenants/blog/workloads/web', { cgroupPath: podB, proxyAddress: NODE_IP })).status, 201);

  /** curl from the pod netns, optionally inside a workload cgroup. */
  const curl = async (url: string, opts: { cgroup?: string; host?: string } = {}): Promise<Reply> => {
    const args = ['curl', '-sg', '--connect-timeout', '1', '-m', '5', '-w', '\n%{http_code}'];
    if (opts.host) args.push('-H', `host: ${opts.host}`);
    const r = await net.exec(net.podNs, [...args, url], opts.cgroup ? { cgroup: opts.cgroup } : {});
    if (r.code !== 0) return { curlExit: r.code ?? -1 };
    const i = r.stdout.lastIndexOf('\n');
    return { status: Number(r.stdout.slice(i + 1)), body: JSON.parse(r.stdout.slice(0, i)) };
  };
  /** One raw HTTP request that also reports getpeername; hostHeader null = HTTP/1.0 without Host. */
  const raw = async (host: string, port: number, cgroup: string | undefined, hostHeader: string | null, path = '/raw'): Promise<Reply> => {
    const c = net.run(net.podNs, 'http-client.ts', [JSON.stringify({ mode: 'once', host, port, path, hostHeader, timeoutMs: 1500 })], cgroup);
    const e = await c.next(15_000);
    if (e.event === 'error') return { error: e.code as string };
    return { status: e.status as number, body: JSON.parse(e.body as string), remoteAddress: e.remoteAddress as string, remotePort: e.remotePort as number };
  };

  // the chain is in effect within 100 ms of activation; poll (bounded) until it shows
  for (let i = 0; i < 50; i++) {
    const r = await curl('http://10.96.0.10/', { cgroup: podA });
    if (r.body?.headers?.['x-mesh'] === 'shop-chain') break;
    await sleep(100);
  }

  await t.test('a pod process calls the VIP without a usable Host: tenant listener, chain, upstream', async () => {
    const r = await curl('http://10.96.0.10/hello?q=1', { cgroup: podA, host: 'unrelated.example' });
    assert.equal(r.status, 200, JSON.stringify(r));
    assert.equal(r.body.service, 'echo-a');
    assert.equal(r.body.url, '/hello?q=1');
    assert.equal(r.body.headers['x-mesh'], 'shop-chain', 'the plugin chain acted');
    // no Host header at all (HTTP/1.0), and the app's getpeername still shows the VIP
    const n = await raw('10.96.0.10', 80, podA, null);
    assert.equal(n.status, 200, JSON.stringify(n));
    assert.equal(n.body.service, 'echo-a');
    assert.equal(n.body.headers['x-mesh'], 'shop-chain');
    assert.equal(n.remoteAddress, '10.96.0.10');
    assert.equal(n.remotePort, 80);
  });

  await t.test('the original destination picks the service; routes still win', async () => {
    const other = await curl('http://10.96.0.12/x', { cgroup: podA, host: 'unrelated.example' });
    assert.equal(other.body?.service, 'echo-b');
    const routed = await curl('http://10.96.0.10/special', { cgroup: podA, host: 'unrelated.example' });
    assert.equal(routed.body?.service, 'echo-b');
  });

  await t.test('explicit clients keep working', async () => {
    const r = await curl(`http://${NODE_IP}:${shop.listenerPort}/explicit`, { host: '10.96.0.10' });
    assert.equal(r.status, 200);
    assert.equal(r.body.service, 'echo-a');
    assert.equal(r.body.headers['x-mesh'], 'shop-chain');
  });

  await t.test('a process outside the workload cgroup is not redirected', async () => {
    const r = await curl('http://10.96.0.10/', { host: 'unrelated.example' });
    assert.equal(r.status, undefined);
    assert.ok(r.curlExit === 28 || r.curlExit === 7, `curl exit ${r.curlExit}`);
  });

  await t.test('IPv6 VIP', async () => {
    const r = await curl('http://[fd00:96::10]/v6', { cgroup: podA, host: 'unrelated.example' });
    assert.equal(r.status, 200, JSON.stringify(r));
    assert.equal(r.body.service, 'echo-a');
    assert.equal(r.body.headers['x-mesh'], 'shop-chain');
    const n = await raw('fd00:96::10', 80, podA, null);
    assert.equal(n.remoteAddress, 'fd00:96::10');
    assert.equal(n.body?.service, 'echo-a');
  });

  await t.test('two tenants with VIPs on the same port stay separate', async () => {
    assert.notEqual(blog.listenerPort, shop.listenerPort);
    const b = await curl('http://10.96.0.20/', { cgroup: podB, host: 'unrelated.example' });
    assert.equal(b.body?.service, 'echo-b');
    assert.equal(b.body?.headers['x-mesh'], undefined, "shop's chain never sees blog's traffic");
    assert.ok((await curl('http://10.96.0.10/', { cgroup: podB })).curlExit, "blog's workload does not reach shop's VIP");
    assert.ok((await curl('http://10.96.0.20/', { cgroup: podA })).curlExit, "shop's workload does not reach blog's VIP");
  });

  await t.test('bad input for workloads and VIPs', async () => {
    const cgroupRoot = cgroup2Mount()!;
    const W = '/v1/tenants/shop/workloads';
    const cases: Array<[string, string, string, unknown, number, string]> = [
      ['nonexistent cgroup', 'PUT', `${W}/x`, { cgroupPath: `${net.cgroupRoot}/missing` }, 400, 'ISOMESH_ERR_WORKLOAD_CGROUP_NOT_FOUND'],
      ['not a cgroup', 'PUT', `${W}/x`, { cgroupPath: '/tmp' }, 400, 'ISOMESH_ERR_WORKLOAD_CGROUP_NOT_FOUND'],
      ['the cgroup2 root', 'PUT', `${W}/x`, { cgroupPath: cgroupRoot }, 400, 'ISOMESH_ERR_WORKLOAD_CGROUP_ROOT'],
      ['relative cgroup path', 'PUT', `${W}/x`, { cgroupPath: 'pods/x' }, 400, 'ISOMESH_ERR_WORKLOAD_INVALID'],
      ['".." in cgroup path', 'PUT', `${W}/x`, { cgroupPath: `${spare}/../spare` }, 400, 'ISOMESH_ERR_WORKLOAD_INVALID'],
      ['cgroup of another workload', 'PUT', `${W}/x`, { cgroupPath: podB, proxyAddress: NODE_IP }, 400, 'ISOMESH_ERR_WORKLOAD_INVALID'],
      ['proxyAddress not an IP', 'PUT', `${W}/x`, { cgroupPath: spare, proxyAddress: 'gateway' }, 400, 'ISOMESH_ERR_WORKLOAD_INVALID'],
      ['proxyAddress bad octet', 'PUT', `${W}/x`, { cgroupPath: spare, proxyAddress: '10.231.0.256' }, 400, 'ISOMESH_ERR_WORKLOAD_INVALID'],
      ['proxyAddress with a port', 'PUT', `${W}/x`, { cgroupPath: spare, proxyAddress: `${NODE_IP}:80` }, 400, 'ISOMESH_ERR_WORKLOAD_INVALID'],
      ['proxyAddress not on this node', 'PUT', `${W}/x`, { cgroupPath: spare, proxyAddress: '10.231.0.99' }, 400, 'ISOMESH_ERR_WORKLOAD_INVALID'],
      ['proxyAddress a number', 'PUT', `${W}/x`, { cgroupPath: spare, proxyAddress: 7 }, 400, 'ISOMESH_ERR_API_VALIDATION'],
      ['cgroupPath missing', 'PUT', `${W}/x`, { proxyAddress: NODE_IP }, 400, 'ISOMESH_ERR_API_VALIDATION'],
      ['unknown field', 'PUT', `${W}/x`, { cgroupPath: spare, vip: '10.96.0.10:80' }, 400, 'ISOMESH_ERR_API_VALIDATION'],
      ['bad workload name', 'PUT', `${W}/Bad_Name`, { cgroupPath: spare }, 400, 'ISOMESH_ERR_WORKLOAD_BAD_NAME'],
      ['unknown tenant', 'PUT', '/v1/tenants/nobody/workloads/x', { cgroupPath: spare }, 404, 'ISOMESH_ERR_TENANT_NOT_FOUND'],
      ['unknown workload GET', 'GET', `${W}/nope`, undefined, 404, 'ISOMESH_ERR_WORKLOAD_NOT_FOUND'],
      ['unknown workload DELETE', 'DELETE', `${W}/nope`, undefined, 404, 'ISOMESH_ERR_WORKLOAD_NOT_FOUND'],
      ['VIP owned by another tenant', 'PUT', '/v1/tenants/blog/services/dup', { vip: '10.96.0.10:80', endpoints: [{ address: UP_IP, port: echoB }] }, 409, 'ISOMESH_ERR_SERVICE_VIP_CONFLICT'],
      ['IPv6 VIP owned by another tenant (other spelling)', 'PUT', '/v1/tenants/blog/services/dup', { vip: '[FD00:96:0::10]:80', endpoints: [{ address: UP_IP, port: echoB }] }, 409, 'ISOMESH_ERR_SERVICE_VIP_CONFLICT'],
      ['VIP without port', 'PUT', '/v1/tenants/shop/services/bad', { vip: '10.96.0.30', endpoints: [{ address: UP_IP, port: 1 }] }, 400, 'ISOMESH_ERR_SERVICE_INVALID'],
      ['VIP bad octet', 'PUT', '/v1/tenants/shop/services/bad', { vip: '10.96.0.300:80', endpoints: [{ address: UP_IP, port: 1 }] }, 400, 'ISOMESH_ERR_SERVICE_INVALID'],
      ['VIP IPv6 unbracketed', 'PUT', '/v1/tenants/shop/services/bad', { vip: 'fd00:96::30:80', endpoints: [{ address: UP_IP, port: 1 }] }, 400, 'ISOMESH_ERR_SERVICE_INVALID'],
      ['VIP port 0', 'PUT', '/v1/tenants/shop/services/bad', { vip: '10.96.0.30:0', endpoints: [{ address: UP_IP, port: 1 }] }, 400, 'ISOMESH_ERR_SERVICE_INVALID'],
      ['acceleration not a boolean', 'PUT', '/v1/datapath', { acceleration: 'yes' }, 400, 'ISOMESH_ERR_API_VALIDATION'],
    ];
    const before = await ok('GET', '/v1/datapath');
    for (const [name, method, url, body, status, code] of cases) {
      const r = await dm.api(method, url, body);
      assert.equal(r.status, status, `${name}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body?.error?.code, code, `${name}: ${JSON.stringify(r.body)}`);
    }
    // nothing was attached or stored by the rejected requests
    assert.deepEqual(bpftoolCgroup(spare), []);
    assert.deepEqual((await ok('GET', W)).workloads.map((w: { name: string }) => w.name), ['web']);
    const after = await ok('GET', '/v1/datapath');
    assert.deepEqual(after.maps.vips, before.maps.vips);
    assert.deepEqual(after.workloads, before.workloads);
  });

  await t.test('GET /v1/datapath reports programs, workloads, maps, counters', async () => {
    const s = await ok('GET', '/v1/datapath');
    assert.equal(s.available, true);
    assert.equal(s.acceleration, false);
    assert.equal(s.programs.length, 6);
    assert.deepEqual(s.workloads.map((w: { tenant: string; name: string; programs: string[] }) => `${w.tenant}/${w.name}:${w.programs.length}`).sort(), ['blog/web:5', 'shop/web:5']);
    assert.equal(s.maps.vips.entries, 4);
    assert.ok(s.counters.redirects > 0 && s.counters.getpeername > 0);
    assert.ok(s.proxyCgroupId, 'mesh_sockops runs on the proxy cgroup');
    assert.equal(bpftoolCgroup(proxyCg).length, 1);
  });

  await t.test('sk_msg acceleration on and off give identical responses', async () => {
    const sample = async () => {
      const out = [];
      for (const path of ['/a', '/b?x=1', '/special']) {
        const r = await raw('10.96.0.10', 80, podA, 'unrelated.example', path);
        assert.equal(r.status, 200, JSON.stringify(r));
        // Per-request values (a fresh request id and trace span each time) are not part of the comparison.
        const { 'x-request-id': _id, traceparent: _trace, ...headers } = r.body.headers;
        out.push({ status: r.status, service: r.body.service, url: r.body.url, headers });
      }
      return out;
    };
    const plain = await sample();
    const on = await ok('PUT', '/v1/datapath', { acceleration: true });
    assert.equal(on.acceleration, true);
    const fast = await sample();
    const mid = (await ok('GET', '/v1/datapath')).counters;
    await ok('PUT', '/v1/datapath', { acceleration: false });
    const plainAgain = await sample();
    const end = (await ok('GET', '/v1/datapath')).counters;
    assert.deepEqual(fast, plain);
    assert.deepEqual(plainAgain, plain);
    assert.ok(mid.accel_redirects > 0, 'sk_msg short-circuited the app↔proxy hop');
    assert.equal(end.accel_redirects, mid.accel_redirects, 'nothing accelerated once off');
  });

  await t.test('runtime restart under a request loop: only the listener downtime fails, pins re-adopted', async () => {
    const before = await ok('GET', '/v1/datapath');
    const oldIds: number[] = before.programs.map((p: { id: number }) => p.id);
    const loop = net.run(net.podNs, 'http-client.ts', [JSON.stringify({ mode: 'loop', host: '10.96.0.10', port: 80, hostHeader: 'unrelated.example', count: 200, intervalMs: 50, timeoutMs: 1000 })], podA);
    await sleep(2000);
    const stopAt = Date.now();
    assert.equal(await dm.stop(), 0, 'SIGTERM drains and exits 0');
    // the runtime is gone; its pins are not
    assert.equal(bpftoolCgroup(podA).length, 5);
    await dm.start();
    const readyAt = Date.now();
    const { results } = (await loop.next(60_000)) as { results: Array<{ t: number; ok: boolean; error?: string; status?: number }> };
    const failures = results.filter((r) => !r.ok);
    const window = readyAt - stopAt;
    assert.ok(results.length === 200, `loop ran ${results.length} requests`);
    assert.ok(failures.every((f) => f.t >= stopAt - 1000 && f.t <= readyAt + 200), `failures outside the restart window: ${JSON.stringify(failures.filter((f) => f.t < stopAt - 1000 || f.t > readyAt + 200))}`);
    assert.ok(failures.length <= Math.ceil(window / 50) + 2, `${failures.length} failures for a ${window} ms window`);
    assert.ok(results.filter((r) => r.ok && r.t > readyAt).length > 50, 'redirection resumed after the restart');
    t.diagnostic(`restart window ${window} ms, ${failures.length}/200 failed (${[...new Set(failures.map((f) => f.error ?? f.status))].join(', ')})`);

    const after = await ok('GET', '/v1/datapath');
    const ids = new Set<number>(after.programs.map((p: { id: number }) => p.id));
    const attached = bpftoolCgroup(podA);
    assert.equal(attached.length, 5, 'no duplicate attachment');
    assert.ok(attached.every((p) => ids.has(p.id)), 'links run the re-loaded programs');
    assert.equal(bpftoolCgroup(podB).length, 5);
    assert.equal(bpftoolCgroup(proxyCg).length, 1);
    assert.deepEqual(after.maps.vips, before.maps.vips, 'no VIP entries leaked or lost');
    assert.deepEqual(after.maps.workloads, before.maps.workloads);
    assert.deepEqual(after.workloads.map((w: { name: string; tenant: string }) => `${w.tenant}/${w.name}`).sort(), ['blog/web', 'shop/web']);
    let leaked = oldIds;
    for (let i = 0; i < 50 && leaked.length; i++) {
      leaked = oldIds.filter((id) => programExists(id));
      if (leaked.length) await sleep(100);
    }
    assert.deepEqual(leaked, [], 'programs of the previous run are freed');
  });

  await t.test('DELETE workload restores direct behaviour; deleting a tenant drops its entries', async () => {
    assert.equal((await dm.api('DELETE', '/v1/tenants/shop/workloads/web')).status, 204);
    assert.deepEqual(bpftoolCgroup(podA), []);
    assert.equal((await dm.api('GET', '/v1/tenants/shop/workloads/web')).status, 404);
    const r = await curl('http://10.96.0.10/', { cgroup: podA, host: 'unrelated.example' });
    assert.ok(r.curlExit === 28 || r.curlExit === 7, `not redirected any more (curl exit ${r.curlExit})`);
    // blog's workload still reaches the node's pod-network address, so that listener stays for blog;
    // shop had the only workload on it, so shop's listener there is closed
    const closed = await curl(`http://${NODE_IP}:${shop.listenerPort}/explicit`, { host: '10.96.0.10' });
    assert.equal(closed.curlExit, 7, `shop no longer listens on ${NODE_IP} (curl exit ${closed.curlExit})`);
    assert.equal((await dm.api('DELETE', '/v1/tenants/blog')).status, 204);
    const s = await ok('GET', '/v1/datapath');
    assert.deepEqual(bpftoolCgroup(podB), []);
    assert.equal(s.maps.vips.entries, 3, "only shop's VIPs are left");
    assert.equal(s.maps.workloads.entries, 0);
    // a deleted service's VIP goes too
    assert.equal((await dm.api('DELETE', '/v1/tenants/shop/routes/special')).status, 204);
    assert.equal((await dm.api('DELETE', '/v1/tenants/shop/services/other')).status, 204);
    assert.equal((await ok('GET', '/v1/datapath')).maps.vips.entries, 2);
  });
});
