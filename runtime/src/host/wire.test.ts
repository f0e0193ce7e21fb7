// FrameChannel: messages written in one tick leave in one write; a message's `raw` string travels
// after its JSON header as it is (an encoded pass, the runner's answer) and arrives intact, however
// the stream splits the bytes; `closed` resolves after the last frame the other end sent.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { once } from 'node:events';
import { FrameChannel } from './wire.ts';

type Msg = { t: string; n?: number; raw?: string };

async function pair(): Promise<{ a: net.Socket; b: net.Socket; close: () => void }> {
  const server = net.createServer();
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  const accepted = once(server, 'connection');
  const a = net.connect(port, '127.0.0.1');
  const [b] = (await accepted) as [net.Socket];
  await once(a, 'connect');
  return { a, b, close: () => { a.destroy(); b.destroy(); server.close(); } };
}

test('raw payloads (NUL, control characters, multi-byte text) arrive intact, one write per tick', async () => {
  const { a, b, close } = await pair();
  try {
    let writes = 0;
    const write = a.write.bind(a);
    a.write = ((chunk: unknown, ...rest: never[]) => {
      writes++;
      return write(chunk as never, ...rest);
    }) as typeof a.write;
    const tx = new FrameChannel<Msg, Msg>(a, { autoFlush: true });
    const rx = new FrameChannel<Msg, Msg>(b, { autoFlush: true });
    const got: Msg[] = [];
    rx.onMessage((m) => got.push(m));
    const raw = `{"q":1}\u0001host\u0000h\u0000x-é\u0000🚀 ${'x'.repeat(70_000)}`;
    tx.send({ t: 'pass', n: 1, raw });
    tx.send({ t: 'plain', n: 2 });
    tx.send({ t: 'pass', n: 3, raw: '' });
    tx.send({ t: 'pass', n: 4, raw: 'tail' });
    for (let i = 0; i < 100 && got.length < 4; i++) await new Promise((r) => setTimeout(r, 10));
    assert.equal(writes, 1, 'the four messages of one tick went out in one write');
    assert.deepEqual(got.map((m) => m.n), [1, 2, 3, 4]);
    assert.equal(got[0]?.raw, raw);
    assert.equal(got[1]?.raw, undefined);
    assert.equal(got[2]?.raw, undefined, 'an empty raw arrives as none');
    assert.equal(got[3]?.raw, 'tail');
    // The sender's message objects are unchanged (raw is not left out of them).
    const m: Msg = { t: 'pass', raw: 'kept' };
    tx.send(m);
    assert.equal(m.raw, 'kept');
  } finally {
    close();
  }
});

test('frames split at any byte reassemble; closed resolves after the last frame', async () => {
  const { a, b, close } = await pair();
  try {
    const rx = new FrameChannel<Msg, Msg>(b, { autoFlush: true });
    const got: Msg[] = [];
    rx.onMessage((m) => got.push(m));
    // Encode two frames with a channel on a throwaway socket, then dribble the bytes one by one.
    const bytes: Buffer[] = [];
    const fake = new net.Socket();
    fake.write = ((chunk: Buffer) => (bytes.push(Buffer.from(chunk)), true)) as typeof fake.write;
    const enc = new FrameChannel<Msg, Msg>(fake, { autoFlush: false });
    enc.send({ t: 'x', n: 1, raw: 'ü\u0000v' });
    enc.send({ t: 'y', n: 2 });
    enc.flush();
    const all = Buffer.concat(bytes);
    for (const byte of all) a.write(Buffer.from([byte]));
    a.end();
    await rx.closed;
    assert.deepEqual(got, [{ t: 'x', n: 1, raw: 'ü\u0000v' }, { t: 'y', n: 2 }]);
  } finally {
    close();
  }
});
