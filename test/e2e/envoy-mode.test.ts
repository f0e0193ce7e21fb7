// ISOMESH_DATAPLANE=envoy through a real daemon: GET /v1/node reports the supervised process, the
// built-in proxy leaves the tenant ports to Envoy, the bootstrap is written, the daemon's stop drains
// and ends Envoy — with a stand-in executable (process management only; no Envoy binary exists on the
// project's machines) — and without any binary the state is "absent" while xDS stays served.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { freePort, freePortRange, startDaemon } from '../support/daemon.ts';

function standIn(dir: string): { bin: string; calls: () => string[] } {
  const bin = path.join(dir, 'envoy');
  const log = path.join(dir, 'calls');
  // records its arguments and SIGTERM; ends by itself within 60 s
  fs.writeFileSync(bin, `#!/bin/sh
trap 'echo "term $$" >> ${log}; exit 0' TERM
echo "start $$ $*" >> ${log}
i=0
while [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done
`, { mode: 0o755 });
  return { bin, calls: () => (fs.existsSync(log) ? fs.readFileSync(log, 'utf8').trim().split('\n') : []) };
}

function canBind(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

test('envoy mode: the daemon runs Envoy from its bootstrap, reports it in /v1/node, leaves tenant ports to it and stops it on SIGTERM', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-envoy-mode-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  const envoy = standIn(dir);
  const adminPort = await freePort();
  const listenerPorts = await freePortRange();
  const d = await startDaemon({ listenerPorts, env: { ISOMESH_DATAPLANE: 'envoy', ENVOY_BIN: envoy.bin, ISOMESH_ENVOY_ADMIN_PORT: String(adminPort) } });
  t.after(() => d.stop());
  let node: any;
  for (let i = 0; i < 300; i++) {
    node = (await d.api('GET', '/v1/node')).body;
    if (node.dataplane?.envoy?.state === 'running') break;
    await sleep(10);
  }
  assert.equal(node.dataplane.mode, 'envoy');
  assert.equal(node.dataplane.envoy.state, 'running');
  assert.equal(node.dataplane.envoy.restarts, 0);
  const pid = node.dataplane.envoy.pid;
  assert.ok(Number.isInteger(pid) && pid > 0);
  for (let i = 0; i < 300 && envoy.calls().length === 0; i++) await sleep(10);
  const bootstrap = path.join(d.stateDir, 'envoy', 'bootstrap.json');
  assert.equal(envoy.calls()[0], `start ${pid} -c ${bootstrap} --drain-time-s 5 --disable-hot-restart --log-path ${path.join(d.stateDir, 'envoy', 'envoy.log')}`);
  const b = JSON.parse(fs.readFileSync(bootstrap, 'utf8'));
  assert.equal(b.admin.address.socket_address.port_value, adminPort);
  assert.equal(b.static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe.path, path.join(d.stateDir, 'grpc.sock'));

  // a tenant gets its port, but the built-in proxy does not hold it: Envoy binds it from LDS
  const tenant = await d.api('PUT', '/v1/tenants/shop', {});
  assert.equal(tenant.status, 201, JSON.stringify(tenant.body));
  const port = tenant.body.listenerPort;
  assert.ok(await canBind(port), 'the tenant port is left free for Envoy');
  // a port of the range someone else holds is still refused, as the built-in proxy refuses it
  const holder = net.createServer();
  const taken = port === listenerPorts.max ? listenerPorts.min : listenerPorts.max;
  await new Promise<void>((r) => holder.listen(taken, '127.0.0.1', () => r()));
  t.after(() => holder.close());
  const lo = await d.api('PUT', '/v1/tenants/other', { listenerPort: taken });
  assert.equal(lo.status, 409, JSON.stringify(lo.body));
  assert.equal(lo.body.error.code, 'ISOMESH_ERR_TENANT_PORT_IN_USE');

  assert.equal(await d.stop(), 0);
  assert.ok(envoy.calls().includes(`term ${pid}`), 'Envoy got SIGTERM when the daemon stopped');
});

test('envoy mode without a binary: "absent", one clear log line, ext_proc and RLS still served on the socket', async (t) => {
  const empty = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-no-envoy-'));
  t.after(() => fs.rmSync(empty, { recursive: true, force: true }));
  // PATH keeps node's own directory only: no envoy there
  const d = await startDaemon({ env: { ISOMESH_DATAPLANE: 'envoy', PATH: `${path.dirname(process.execPath)}:${empty}`, ISOMESH_ENVOY_ADMIN_PORT: String(await freePort()), ISOMESH_LOG_LEVEL: 'info' } });
  t.after(() => d.stop());
  const node = (await d.api('GET', '/v1/node')).body;
  assert.deepEqual(node.dataplane, { mode: 'envoy', envoy: { state: 'absent', restarts: 0 } });
  assert.match(d.logs(), /no envoy on PATH \(set ENVOY_BIN\)/);
  // the gRPC socket answers ext_proc (a stream with no tenant metadata is refused with INVALID_ARGUMENT)
  const { envoyProtos } = await import('../../runtime/src/xds/index.ts');
  const Process = envoyProtos().service('envoy.service.ext_proc.v3.ExternalProcessor').Process!;
  const Client = grpc.makeGenericClientConstructor({ Process }, 'ExternalProcessor');
  const c = new Client(`unix:${path.join(d.stateDir, 'grpc.sock')}`, grpc.credentials.createInsecure());
  t.after(() => c.close());
  const err = await new Promise<grpc.ServiceError>((resolve) => {
    const call = (c as any).Process(new grpc.Metadata());
    call.on('error', resolve);
    call.on('data', () => {});
    call.write({ request_headers: { headers: { headers: [] }, end_of_stream: true } });
  });
  assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
  assert.match(err.details, /x-isomesh-tenant/);
});
