// Demo orchestrator (run by scripts/demo.sh): starts an upstream echo service on loopback and the
// runtime, then configures a tenant through the management API exactly as a user would.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

const root = path.resolve(import.meta.dirname, '..');
const env = process.env;
const adminAddr = env.ISOMESH_ADMIN_ADDR ?? '127.0.0.1:7700';
const stateDir = path.resolve(env.ISOMESH_STATE_DIR ?? path.join(root, '.isomesh'));
const upstreamPort = Number(env.DEMO_UPSTREAM_PORT ?? 18080);
const tenant = env.DEMO_TENANT ?? 'demo';
const api = `http://${adminAddr}`;

let runtime: ChildProcess | undefined;
let upstream: http.Server | undefined;

function fail(message: string): never {
  process.stderr.write(`demo: ${message}\n`);
  void shutdown(1);
  throw new Error(message);
}

async function shutdown(code: number): Promise<void> {
  if (runtime?.pid && runtime.exitCode === null) {
    runtime.kill('SIGTERM');
    await Promise.race([new Promise((r) => runtime!.once('exit', r)), sleep(5000)]);
    if (runtime.exitCode === null && runtime.signalCode === null) runtime.kill('SIGKILL');
  }
  upstream?.close();
  process.exit(code);
}

/** The upstream: echoes what it received so the plugin's effect is visible in the response. */
function startUpstream(): Promise<void> {
  upstream = http.createServer((req, res) => {
    const body = JSON.stringify({ service: 'echo', method: req.method, url: req.url, headers: req.headers }, null, 2);
    res.writeHead(200, { 'content-type': 'application/json' }).end(`${body}\n`);
  });
  return new Promise((resolve, reject) => {
    upstream!.once('error', (err) => reject(new Error(`upstream cannot listen on 127.0.0.1:${upstreamPort}: ${err.message}`)));
    upstream!.listen(upstreamPort, '127.0.0.1', () => resolve());
  });
}

async function waitReady(): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    if (runtime?.exitCode !== null) fail(`the runtime exited (code ${runtime?.exitCode}); see ${path.join(stateDir, 'runtime.log')}`);
    try {
      const res = await fetch(`${api}/readyz`);
      if (res.ok) return;
    } catch {
      // not listening yet
    }
    await sleep(100);
  }
  fail(`the runtime did not become ready at ${api} within 30 s`);
}

async function call(method: string, urlPath: string, token: string, body?: unknown): Promise<any> {
  const res = await fetch(`${api}${urlPath}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  if (!res.ok) fail(`${method} ${urlPath} → ${res.status} ${text}`);
  return text ? JSON.parse(text) : undefined;
}

async function main(): Promise<void> {
  process.on('SIGINT', () => void shutdown(0));
  process.on('SIGTERM', () => void shutdown(0));
  fs.mkdirSync(stateDir, { recursive: true });
  await startUpstream();

  const log = fs.openSync(path.join(stateDir, 'runtime.log'), 'a');
  runtime = spawn(process.execPath, [path.join(root, 'runtime/src/main.ts'), 'run'], {
    cwd: root,
    // Ctrl-C leaves nothing on the machine: where the eBPF datapath loaded (root), its programs,
    // pins and proxy cgroup go with the runtime (a node's daemon keeps them across restarts).
    env: { ISOMESH_DATAPATH_ON_STOP: 'detach', ...env, ISOMESH_STATE_DIR: stateDir, ISOMESH_ADMIN_ADDR: adminAddr },
    stdio: ['ignore', log, log],
  });
  runtime.once('exit', (code, signal) => {
    process.stderr.write(`demo: the runtime exited (${signal ?? code})\n`);
    void shutdown(code ?? 1);
  });
  await waitReady();

  const token = env.ISOMESH_ADMIN_TOKEN ?? fs.readFileSync(path.join(stateDir, 'admin-token'), 'utf8').trim();
  const t = `/v1/tenants/${tenant}`;
  const created = await call('PUT', t, token, {});
  await call('PUT', `${t}/services/echo`, token, { endpoints: [{ address: '127.0.0.1', port: upstreamPort }] });
  await call('PUT', `${t}/routes/all`, token, { match: { pathPrefix: '/' }, to: { service: 'echo' } });
  const source = fs.readFileSync(path.join(root, 'scripts/demo/greeter.ts'), 'utf8');
  const published = await call('POST', `${t}/plugins/greeter/versions`, token, { source, language: 'typescript' });
  await call('PUT', `${t}/plugins/greeter/active`, token, { version: published.version });
  await call('PUT', `${t}/chain`, token, [{ plugin: 'greeter', config: { greeting: 'hello from isomesh' }, failurePolicy: 'closed' }]);

  const port = created.listenerPort;
  process.stdout.write(
    [
      '',
      `isomesh is running: management API ${api}, tenant "${tenant}" listening on 127.0.0.1:${port}`,
      `  upstream "echo" on 127.0.0.1:${upstreamPort}; plugin "greeter" v${published.version} (${published.digest}) in the chain`,
      `  state: ${stateDir}  logs: ${path.join(stateDir, 'runtime.log')}  admin token: ${path.join(stateDir, 'admin-token')}`,
      '',
      'Try (the plugin adds x-greeting upstream and x-isomesh-plugin to the response, and blocks /admin):',
      `  curl -si http://127.0.0.1:${port}/hello`,
      `  curl -si http://127.0.0.1:${port}/admin`,
      '',
      'Press Ctrl-C to stop.',
      '',
    ].join('\n'),
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`demo: ${err instanceof Error ? err.message : String(err)}\n`);
  void shutdown(1);
});
