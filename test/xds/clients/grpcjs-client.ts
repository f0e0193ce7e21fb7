// A proxyless gRPC client on @grpc/grpc-js-xds, driven by isomesh's xDS tests over JSON lines on
// stdin/stdout — the same protocol as grpc_client.py (see there). It runs as a child process because
// grpc-js-xds leaves timers behind (priority failover/retention) that would keep a test process alive;
// here `exit` ends the process. The bootstrap comes from GRPC_XDS_BOOTSTRAP_CONFIG.
import readline from 'node:readline';
import * as grpc from '@grpc/grpc-js';
import * as xds from '@grpc/grpc-js-xds';
import { ECHO } from '../../../runtime/src/xds/testing.ts';

xds.register();
const Echo = grpc.makeGenericClientConstructor(ECHO, 'Echo');
const channels = new Map<string, grpc.Client>();

function channel(target: string): grpc.Client {
  let c = channels.get(target);
  if (!c) {
    c = new Echo(target, grpc.credentials.createInsecure());
    channels.set(target, c);
  }
  return c;
}

function once(c: grpc.Client, timeoutMs: number, wait: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    (c as unknown as { Call: Function }).Call(Buffer.from('ping'), { deadline: Date.now() + timeoutMs, waitForReady: wait }, (err: grpc.ServiceError | null, res?: Buffer) =>
      err ? reject(err) : resolve(res!.toString()),
    );
  });
}

async function call(cmd: { target: string; count?: number; timeout?: number; wait?: boolean }) {
  const ok: Record<string, number> = {};
  const errors: Record<string, number> = {};
  let last: string | null = null;
  const c = channel(cmd.target);
  for (let i = 0; i < (cmd.count ?? 1); i++) {
    try {
      const id = await once(c, (cmd.timeout ?? 5) * 1000, cmd.wait === true);
      ok[id] = (ok[id] ?? 0) + 1;
    } catch (err) {
      const name = grpc.status[(err as grpc.ServiceError).code] ?? 'UNKNOWN';
      errors[name] = (errors[name] ?? 0) + 1;
      last = (err as grpc.ServiceError).details;
    }
  }
  return { ok, errors, last_error: last };
}

console.log(JSON.stringify({ ready: true, grpc: 'grpc-js' }));
for await (const line of readline.createInterface({ input: process.stdin })) {
  const cmd = JSON.parse(line);
  if (cmd.op === 'exit') break;
  let out: object;
  if (cmd.op === 'call') out = await call(cmd);
  else if (cmd.op === 'close') {
    channels.get(cmd.target)?.close();
    channels.delete(cmd.target);
    out = { closed: true };
  } else out = { error: `unknown op ${JSON.stringify(cmd.op)}` };
  console.log(JSON.stringify(out));
}
for (const c of channels.values()) c.close();
process.exit(0);
