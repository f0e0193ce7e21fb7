import assert from 'node:assert/strict';
import { test } from 'node:test';
import { service, tenant } from './fixtures.ts';
import { startControlPlane } from './testing.ts';

type Obj = Record<string, any>;

function endpointIps(cla: Obj | undefined): string[] {
  return (cla?.endpoints ?? []).flatMap((l: Obj) => l.lb_endpoints.map((e: Obj) => e.endpoint.address.socket_address.address));
}

test('hostname endpoints: resolved by the control plane, EDS carries the IPs; a change of addresses rebuilds the tenant; a failed lookup keeps the last good', async (t) => {
  let answer: string[] | Error = ['127.0.0.5'];
  const asked: string[] = [];
  const plane = await startControlPlane({
    lookup: async (h) => {
      asked.push(h);
      if (answer instanceof Error) throw answer;
      return h === 'db.internal' ? answer : [];
    },
  });
  t.after(() => plane.close());
  const cfg = tenant('acme', { services: [service('db', { endpoints: [{ address: 'db.internal', port: 5432, weight: 2 }, { address: '127.0.0.9', port: 5432, weight: 1 }] })] });
  const cla = () => {
    const r = plane.cp.snapshot('envoy', 'acme').get('endpoint', 'acme/db')!;
    const any = plane.cp.protos.decode<{ type_url: string; value: Uint8Array }>('google.protobuf.Any', r.any);
    return plane.cp.protos.decode<Obj>(any.type_url, any.value);
  };
  plane.cp.snapshot('envoy', '*'); // an Envoy view exists: the flavor is built from here on
  plane.cp.apply(cfg);
  // not resolved yet: the endpoint is left out, with a warning, and a lookup is under way
  assert.deepEqual(endpointIps(cla()), ['127.0.0.9']);
  assert.match(plane.cp.status().tenants.acme!.warnings[0]!, /db\.internal:5432 did not resolve/);
  await plane.cp.settled();
  assert.deepEqual(endpointIps(cla()), ['127.0.0.5', '127.0.0.9']);
  assert.equal(cla().endpoints[0].load_balancing_weight.value, 2);
  assert.deepEqual(plane.cp.status().tenants.acme!.warnings, []);
  // the addresses change: the next refresh rebuilds the tenant
  answer = ['127.0.0.6', '127.0.0.7'];
  await plane.cp.refreshHostnames();
  assert.deepEqual(endpointIps(cla()), ['127.0.0.6', '127.0.0.7', '127.0.0.9']);
  // a failing lookup keeps what was resolved last
  answer = new Error('SERVFAIL');
  await plane.cp.refreshHostnames();
  assert.deepEqual(endpointIps(cla()), ['127.0.0.6', '127.0.0.7', '127.0.0.9']);
  assert.ok(asked.every((h) => h === 'db.internal'));
});

test('status: tenants with the generation served and why a build was refused; no clients yet', async (t) => {
  const plane = await startControlPlane();
  t.after(() => plane.close());
  plane.cp.snapshot('envoy', '*');
  assert.ok(plane.cp.apply(tenant('acme', { generation: 3 })));
  assert.equal(plane.cp.apply(tenant('beta', { generation: 4 })), false, 'same listener port as acme');
  const st = plane.cp.status();
  assert.deepEqual(st.clients, []);
  assert.deepEqual(st.tenants.acme, { generation: 3, served: 3, warnings: [] });
  assert.equal(st.tenants.beta!.served, undefined);
  assert.match(st.tenants.beta!.error!, /already served for another tenant/);
  assert.equal(st.proxylessVersions['type.googleapis.com/envoy.config.listener.v3.Listener'], '0', 'proxyless not built: nobody asked');
  plane.cp.remove('acme');
  assert.ok(plane.cp.apply(tenant('beta', { generation: 5 })));
});
