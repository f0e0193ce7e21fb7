// HTTP/2 under weight: a 1 GiB upload streams through the proxy with the daemon's memory bounded (flow
// control and backpressure end to end), and configuration changes under h2load lose no stream.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startDaemon, type TestDaemon } from '../support/daemon.ts';

let d: TestDaemon;
let port: number;
let sink: http.Server;
let sinkPort: number;
let received = 0;

function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : 0;
}

before(async () => {
  sink = http.createServer((req, res) => {
    let n = 0;
    req.on('data', (c: Buffer) => (n += c.length));
    req.on('end', () => {
      received += n;
      res.end(String(n));
    });
  });
  await new Promise<void>((r) => sink.listen(0, '127.0.0.1', r));
  sinkPort = (sink.address() as AddressInfo).port;
  d = await startDaemon();
  port = (await d.api('PUT', '/v1/tenants/big', {})).body.listenerPort;
  await d.api('PUT', '/v1/tenants/big/services/sink', { endpoints: [{ address: '127.0.0.1', port: sinkPort }], timeoutMs: 120_000 });
  await d.api('PUT', '/v1/tenants/big/routes/all', { match: { pathPrefix: '/' }, to: { service: 'sink' } });
  await sleep(300);
});

after(async () => {
  await d?.stop();
  sink?.closeAllConnections();
  sink?.close();
});

test('a 1 GiB upload over h2 streams through with the daemon RSS bounded', { timeout: 120_000 }, async () => {
  const pid = d.proc.pid!;
  const baseline = rssMiB(pid);
  let peak = baseline;
  const sampler = setInterval(() => (peak = Math.max(peak, rssMiB(pid))), 50);
  const total = 1024 * 1024 * 1024;
  const chunk = Buffer.alloc(256 * 1024, 0x61);
  const session = http2.connect(`http://127.0.0.1:${port}`);
  try {
    const answer = await new Promise<string>((resolve, reject) => {
      const req = session.request({ ':method': 'POST', ':path': '/upload', 'content-type': 'application/octet-stream' });
      let body = '';
      req.on('data', (c) => (body += c));
      req.on('end', () => resolve(body));
      req.on('error', reject);
      let sent = 0;
      const pump = (): void => {
        while (sent < total) {
          sent += chunk.length;
          if (!req.write(chunk)) {
            req.once('drain', pump);
            return;
          }
        }
        req.end();
      };
      pump();
    });
    assert.equal(answer, String(total), 'the upstream got every byte');
  } finally {
    clearInterval(sampler);
    session.close();
  }
  assert.ok(peak - baseline < 200, `daemon RSS grew ${(peak - baseline).toFixed(0)} MiB (from ${baseline.toFixed(0)}) for a 1 GiB upload`);
});

test('configuration changes under h2 load: zero failed streams', { timeout: 60_000 }, async () => {
  const load = new Promise<string>((resolve, reject) =>
    execFile('h2load', ['-n', '20000', '-c', '4', '-m', '16', `http://127.0.0.1:${port}/x`], { timeout: 50_000 }, (err, out) => (err ? reject(err) : resolve(out))),
  );
  let changes = 0;
  const changer = (async () => {
    for (let i = 0; i < 20; i++) {
      const r = await d.api('PUT', '/v1/tenants/big/services/sink', {
        endpoints: [{ address: '127.0.0.1', port: sinkPort, weight: 1 + (i % 3) }],
        timeoutMs: 60_000 + i,
        lb: i % 2 === 0 ? 'round_robin' : 'least_request',
      });
      assert.equal(r.status, 200);
      changes++;
      await d.api('PUT', '/v1/tenants/big/routes/all', { match: { pathPrefix: '/' }, to: { service: 'sink' }, timeoutMs: 30_000 + i });
      await sleep(25);
    }
  })();
  const [out] = await Promise.all([load, changer]);
  assert.equal(changes, 20);
  assert.match(out, /20000 succeeded, 0 failed, 0 errored, 0 timeout/, out);
  assert.match(out, /status codes: 20000 2xx/);
});
