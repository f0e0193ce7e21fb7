// Free loopback ports for tests and benchmarks (one implementation for both).
import net from 'node:net';

export async function freePort(host = '127.0.0.1'): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, host, () => resolve());
  });
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

async function portFree(port: number): Promise<boolean> {
  const srv = net.createServer();
  const ok = await new Promise<boolean>((resolve) => {
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => resolve(true));
  });
  if (ok) await new Promise((r) => srv.close(r));
  return ok;
}

/** A block of `count` consecutive free loopback ports for tenant listeners (bounded number of tries). */
export async function freePortRange(count = 20): Promise<{ min: number; max: number }> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const min = 20000 + Math.floor(Math.random() * ((40000 - count) / 100)) * 100;
    let ok = true;
    for (let p = min; p < min + count && ok; p++) ok = await portFree(p);
    if (ok) return { min, max: min + count - 1 };
  }
  throw new Error(`no block of ${count} free ports found`);
}
