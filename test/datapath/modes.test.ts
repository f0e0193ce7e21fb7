// ISOMESH_DATAPATH: off leaves the datapath alone and the workload API answers 503 with the reason;
// auto keeps serving explicit traffic when the datapath cannot open; on refuses to start. The
// datapath is made unavailable with a pin dir that is not on bpffs, so this runs anywhere.
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';
import { request, startEcho } from '../support/http.ts';

const tmp: string[] = [];
after(() => { for (const dir of tmp) fs.rmSync(dir, { recursive: true, force: true }); });
/** A pin dir on an ordinary file system: the datapath cannot open there. */
function notBpffs(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-nobpf-'));
  tmp.push(dir);
  return path.join(dir, 'pins');
}

test('ISOMESH_DATAPATH=off: workloads and /v1/datapath report the datapath as unavailable', async (t) => {
  const d = await startDaemon({ env: { ISOMESH_DATAPATH: 'off' } });
  t.after(() => d.stop());
  assert.equal((await d.api('PUT', '/v1/tenants/shop', {})).status, 201);
  const put = await d.api('PUT', '/v1/tenants/shop/workloads/web', { cgroupPath: '/sys/fs/cgroup/whatever' });
  assert.equal(put.status, 503);
  assert.equal(put.body.error.code, 'ISOMESH_ERR_DATAPATH_UNAVAILABLE');
  assert.match(put.body.error.message, /ISOMESH_DATAPATH=off/);
  // bad input is still bad input, whatever the datapath
  assert.equal((await d.api('PUT', '/v1/tenants/shop/workloads/web', { cgroupPath: 'relative' })).status, 400);
  const s = await d.api('GET', '/v1/datapath');
  assert.equal(s.status, 200);
  assert.deepEqual(s.body, { available: false, mode: 'off', reason: 'disabled (ISOMESH_DATAPATH=off)' });
  assert.equal((await d.api('PUT', '/v1/datapath', { acceleration: true })).body.error.code, 'ISOMESH_ERR_DATAPATH_UNAVAILABLE');
  assert.deepEqual((await d.api('GET', '/v1/tenants/shop/workloads')).body, { workloads: [] });
  // admin-only: a tenant token gets 403
  const token = (await d.api('POST', '/v1/tenants/shop/tokens')).body.token;
  assert.equal((await d.api('GET', '/v1/tenants/shop/workloads', undefined, token)).status, 403);
  assert.equal((await d.api('GET', '/v1/datapath', undefined, token)).status, 403);
});

test('ISOMESH_DATAPATH=auto: a datapath that cannot open is a warning; explicit traffic is served', async (t) => {
  const echo = await startEcho('echo');
  let d: TestDaemon | undefined;
  t.after(async () => {
    await d?.stop();
    await echo.close();
  });
  const pinDir = notBpffs();
  d = await startDaemon({ env: { ISOMESH_DATAPATH: 'auto', ISOMESH_BPF_PIN_DIR: pinDir } });
  const s = await d.api('GET', '/v1/datapath');
  assert.equal(s.body.available, false);
  assert.equal(s.body.mode, 'auto');
  assert.match(s.body.reason, /eBPF datapath unavailable: (needs root|.*bpffs|.*cgroup v2)/);
  const tenant = await d.api('PUT', '/v1/tenants/shop', {});
  await d.api('PUT', '/v1/tenants/shop/services/echo', { vip: '10.96.0.10:80', endpoints: [{ address: '127.0.0.1', port: echo.port }] });
  // A change takes effect within 100 ms of its answer (API.md), not at it: ask until it has.
  let res = await request(tenant.body.listenerPort, '/x', { headers: { host: '10.96.0.10' } });
  for (let i = 0; i < 40 && res.status !== 200; i++) {
    await new Promise((r) => setTimeout(r, 50));
    res = await request(tenant.body.listenerPort, '/x', { headers: { host: '10.96.0.10' } });
  }
  assert.equal(res.status, 200, 'explicit traffic (by VIP Host) is served');
  assert.equal(fs.existsSync(pinDir), false, 'nothing was pinned');
});

test('ISOMESH_DATAPATH=on: a datapath that cannot open fails the start with the reason', async () => {
  await assert.rejects(
    startDaemon({ env: { ISOMESH_DATAPATH: 'on', ISOMESH_BPF_PIN_DIR: notBpffs() } }),
    (err: Error) => /daemon exited with 1/.test(err.message) && /ISOMESH_ERR_DATAPATH_UNAVAILABLE/.test(err.message),
  );
});
