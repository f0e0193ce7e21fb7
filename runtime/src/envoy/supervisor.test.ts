// The Envoy supervisor with a stand-in executable (a small shell script: only process management is
// under test here; no Envoy binary is installable on the project's machines), and the bootstrap it
// writes decoded as envoy.config.bootstrap.v3.Bootstrap and validated.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { test } from 'node:test';
import pino from 'pino';
import { envoyProtos } from '../xds/index.ts';
import { bootstrapErrors, envoyBootstrap, XDS_CLUSTER } from './bootstrap.ts';
import { EnvoySupervisor } from './supervisor.ts';

const logger = pino({ level: 'silent' });

function tempDir(t: { after: (fn: () => void) => void }): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'isomesh-envoy-'));
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * A stand-in `envoy`: records its arguments and signals in <dir>/calls, then behaves as $MODE says —
 * run (until SIGTERM), crash (exit 3 at once), stubborn (ignores SIGTERM). Every run ends by itself
 * within 30 s.
 */
function standIn(dir: string, mode: 'run' | 'crash' | 'stubborn'): string {
  fs.mkdirSync(path.join(dir, 'bin'), { recursive: true });
  const bin = path.join(dir, 'bin', 'envoy');
  const log = path.join(dir, 'calls');
  const onTerm = mode === 'stubborn' ? `echo "term-ignored $$" >> ${log}` : `echo "term $$" >> ${log}; exit 0`;
  fs.writeFileSync(bin, `#!/bin/sh
trap '${onTerm}' TERM
echo "start $$ $*" >> ${log}
${mode === 'crash' ? 'exit 3' : ''}
i=0
while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
exit 0
`, { mode: 0o755 });
  return bin;
}

const calls = (dir: string): string[] => {
  try {
    return fs.readFileSync(path.join(dir, 'calls'), 'utf8').trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
};

async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 1000 && !cond(); i++) await sleep(10);
  assert.ok(cond(), what);
}

function supervisor(dir: string, extra: Partial<ConstructorParameters<typeof EnvoySupervisor>[0]> = {}): EnvoySupervisor {
  return new EnvoySupervisor({ stateDir: dir, socketPath: path.join(dir, 'grpc.sock'), adminPort: 1, nodeId: 'node-a', logger, drainTimeSec: 1, killAfterMs: 300, ...extra });
}

test('bootstrap: ADS over the unix socket, admin on 127.0.0.1, node id/cluster; decodes as Bootstrap and passes PGV', () => {
  const b = envoyBootstrap({ nodeId: 'isomesh-n1', cluster: 'isomesh', socketPath: '/var/lib/isomesh/grpc.sock', adminPort: 7702 });
  assert.deepEqual(bootstrapErrors(b), []);
  const p = envoyProtos();
  const decoded = p.toJSON('envoy.config.bootstrap.v3.Bootstrap', p.encode('envoy.config.bootstrap.v3.Bootstrap', b)) as any;
  assert.deepEqual(decoded.node, { id: 'isomesh-n1', cluster: 'isomesh' });
  assert.equal(decoded.admin.address.socket_address.address, '127.0.0.1');
  assert.equal(decoded.admin.address.socket_address.port_value, 7702);
  const ads = decoded.dynamic_resources.ads_config;
  assert.equal(ads.api_type, 'GRPC');
  assert.equal(ads.transport_api_version, 'V3');
  assert.equal(ads.grpc_services[0].envoy_grpc.cluster_name, XDS_CLUSTER);
  assert.deepEqual(decoded.dynamic_resources.lds_config, { ads: {}, config_source_specifier: 'ads', resource_api_version: 'V3' });
  const xds = decoded.static_resources.clusters[0];
  assert.equal(xds.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.pipe.path, '/var/lib/isomesh/grpc.sock');
  assert.ok(xds.typed_extension_protocol_options['envoy.extensions.upstreams.http.v3.HttpProtocolOptions'].explicit_http_config.http2_protocol_options, 'ADS is gRPC: HTTP/2 to the socket');
  // the checker is real: a broken bootstrap is refused
  assert.ok(bootstrapErrors({ ...b, admin: { address: { socket_address: { address: '127.0.0.1', port_value: 70000 } } } }).length > 0);
  assert.ok(bootstrapErrors({ ...b, node: { id: 'x', nope: 1 } }).length > 0);
});

test('absent: no binary → state "absent", a clear log line, the bootstrap still written for an Envoy run elsewhere', async (t) => {
  const dir = tempDir(t);
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(s) });
  const sup = supervisor(dir, { searchPath: path.join(dir, 'empty-path'), logger: log });
  sup.start();
  assert.deepEqual(sup.status(), { state: 'absent', restarts: 0 });
  assert.match(lines.join(''), /no envoy on PATH \(set ENVOY_BIN\)/);
  assert.deepEqual(bootstrapErrors(JSON.parse(fs.readFileSync(sup.bootstrapPath, 'utf8'))), []);
  assert.equal(fs.statSync(sup.bootstrapPath).mode & 0o777, 0o600);
  await sup.stop();
  assert.equal(sup.status().state, 'absent');

  const notExec = path.join(dir, 'envoy-not-executable');
  fs.writeFileSync(notExec, '#!/bin/sh\n', { mode: 0o644 });
  const bad = supervisor(dir, { bin: notExec, logger: log });
  bad.start();
  assert.equal(bad.status().state, 'absent');
  assert.match(lines.join(''), /ENVOY_BIN .* is not an executable file/);
});

test('start → running (pid, arguments), clean stop with SIGTERM → stopped with lastExit', async (t) => {
  const dir = tempDir(t);
  const sup = supervisor(dir, { bin: standIn(dir, 'run') });
  t.after(() => sup.stop());
  sup.start();
  await until(() => calls(dir).length > 0, 'the stand-in ran');
  const st = sup.status();
  assert.equal(st.state, 'running');
  assert.ok(typeof st.pid === 'number' && st.pid > 0);
  const [first] = calls(dir);
  assert.equal(first, `start ${st.pid} -c ${sup.bootstrapPath} --drain-time-s 1 --disable-hot-restart --log-path ${sup.logPath}`);
  await sup.stop();
  const after = sup.status();
  assert.equal(after.state, 'stopped');
  assert.equal(after.pid, undefined);
  assert.equal(after.restarts, 0);
  assert.ok(after.lastExit !== undefined && (after.lastExit.code === 0 || after.lastExit.signal === 'SIGTERM'));
  assert.ok(calls(dir).includes(`term ${st.pid}`), 'SIGTERM reached it');
});

test('crash → restarting with back-off, restarts counted, lastExit kept; stop during back-off ends it', async (t) => {
  const dir = tempDir(t);
  const sup = supervisor(dir, { bin: standIn(dir, 'crash'), backoff: { initialMs: 20, maxMs: 80 } });
  t.after(() => sup.stop());
  sup.start();
  await until(() => sup.status().restarts >= 3, 'restarted three times');
  const st = sup.status();
  assert.ok(st.state === 'restarting' || st.state === 'running');
  assert.equal(st.lastExit?.code, 3);
  assert.ok(!Number.isNaN(Date.parse(st.lastExit!.at)));
  await sup.stop();
  const n = calls(dir).length;
  await sleep(200);
  assert.equal(calls(dir).length, n, 'no restart after stop');
  assert.equal(sup.status().state, 'stopped');
});

test('stop drains through Envoy admin first, then SIGTERM; SIGKILL after the bound when Envoy does not leave', async (t) => {
  const dir = tempDir(t);
  const drains: string[] = [];
  const admin = http.createServer((req, res) => {
    drains.push(`${req.method} ${req.url}`);
    res.end('OK\n');
  });
  await new Promise<void>((r) => admin.listen(0, '127.0.0.1', () => r()));
  t.after(() => admin.close());
  const port = (admin.address() as { port: number }).port;
  const sup = supervisor(dir, { bin: standIn(dir, 'stubborn'), adminPort: port, drainTimeSec: 0.2 as number, killAfterMs: 200 });
  sup.start();
  await until(() => calls(dir).length > 0, 'the stand-in ran (its trap is set before it writes)');
  await sup.stop();
  assert.deepEqual(drains, ['POST /drain_listeners?graceful']);
  const st = sup.status();
  assert.equal(st.state, 'stopped');
  assert.equal(st.lastExit?.signal, 'SIGKILL', 'it ignored SIGTERM');
});
