// The wire between the daemon and a cordon process, and its message shapes. Two interchangeable
// channels: FrameChannel (length-prefixed frames over a socketpair, every message written in the
// same tick goes out in one write) and NodeIpcChannel (Node's IPC channel with 'advanced'
// serialization). FrameChannel is the default: it measured faster (docs/host.md, bench/cordon-ipc.ts).
//
// A message may carry `raw`, a string that travels after its JSON header as it is: an encoded chain
// pass (daemon → cordon) and the chain runner's answer (cordon → daemon) are made once, in the
// daemon and in the isolate, and are neither parsed nor re-encoded by the cordon in between.

import type { Socket } from 'node:net';
import type { PassFailure, PassWire } from './chain-pass.ts';
import type { CapabilityFailureCode } from './capabilities.ts';
import type { FailureKind, VersionSpec } from './sandbox.ts';

/** A plugin's ctx.fetch, relayed from its cordon to the daemon that sent the pass (bodies in base64). */
export interface WireFetchRequest {
  service: string;
  method: string;
  path: string;
  headers: Array<[string, string]>;
  body?: string;
  timeoutMs: number;
}

export type WireFetchReply =
  | { ok: true; status: number; headers: Array<[string, string]>; body: string }
  | { ok: false; code: CapabilityFailureCode; message: string };

/** daemon → cordon */
export type ToCordon =
  | { t: 'init'; guest: string; runner: string; blackbox: string; cordon: string }
  | { t: 'tenant'; tenant: string; memoryMb: number; weight: number; secrets: Record<string, string> }
  | { t: 'retain'; tenant: string; spec: VersionSpec }
  | { t: 'release'; tenant: string; key: string }
  | { t: 'secrets'; tenant: string; secrets: Record<string, string> }
  | { t: 'memory'; tenant: string; mb: number }
  | { t: 'weight'; tenant: string; weight: number }
  | { t: 'reset'; tenant: string }
  | { t: 'drop'; tenant: string }
  /** A chain generation's services and configs (the runner's generation() JSON). */
  | { t: 'generation'; tenant: string; g: number; json: string }
  | { t: 'dropGeneration'; tenant: string; g: number }
  /**
   * One phase of one request's chain: the cordon runs every entry and answers once. raw: the
   * encoded pass (chain-pass.ts encodePass); s: each entry's slot, q: 1 for onRequest, b: the CPU
   * budget (ms) — what the cordon needs without reading the pass.
   */
  | { t: 'pass'; id: number; tenant: string; s: number[]; q: 0 | 1; b: number; raw: string }
  /** The answer to a relayed ctx.fetch. */
  | { t: 'fetched'; id: number; reply: WireFetchReply };

/** cordon → daemon */
export type FromCordon =
  | { t: 'ready'; pid: number }
  /** The runner's answer in raw, with what the cordon measured around it (PassWire without json). */
  | ({ t: 'passed'; id: number; waitNs: number; raw: string } & Omit<PassWire, 'json'>)
  /** The pass did not run (tenant gone, sandbox error). */
  | { t: 'unpassed'; id: number; waitNs: number; reply: PassFailure }
  | { t: 'shed'; id: number; queued: number }
  | { t: 'hooks'; tenant: string; key: string; hooks: Array<'onRequest' | 'onResponse'> | null }
  | { t: 'loadError'; tenant: string; key: string; kind: FailureKind; message: string }
  | { t: 'lost'; tenant: string; key: string | null; kind: FailureKind; message: string }
  | { t: 'rebuilt'; tenant: string }
  | { t: 'stats'; tenant: string; memoryBytes: number }
  /** A plugin of `tenant` called ctx.fetch: the daemon performs it and answers with 'fetched'. */
  | { t: 'fetch'; id: number; tenant: string; req: WireFetchRequest };

export interface Channel<Out, In> {
  /** Queues a message; it is written with everything else sent in the same tick (or at flush()). */
  send(msg: Out): void;
  /** Writes queued messages now. */
  flush(): void;
  onMessage(handler: (msg: In) => void): void;
  /** Resolves once the other end is gone and everything it sent before has been delivered. */
  readonly closed: Promise<void>;
  /** Keeps the process alive while calls are pending (ref) or not (unref). */
  ref(): void;
  unref(): void;
  close(): void;
}

/** Calls a cordon holds waiting, for all its tenants together (its scheduler's bound). */
export const CORDON_QUEUE_LIMIT = 65_536;

/** Frame: u32 length of the rest, u32 length of the JSON header, the header, the raw string. */
const HEADER = 8;

/** Length-prefixed frames over a stream socket (a JSON header, then `raw` as it is); sends are batched per tick. */
export class FrameChannel<Out extends object, In extends object> implements Channel<Out, In> {
  readonly #socket: Socket;
  #queue: string[] = [];
  #raws: Array<string | undefined> = [];
  #scheduled = false;
  #pending: Buffer | undefined;
  #handler: (msg: In) => void = () => {};
  readonly closed: Promise<void>;

  constructor(socket: Socket, opts: { autoFlush: boolean }) {
    this.#socket = socket;
    this.#socket.setNoDelay?.(true);
    this.#socket.on('data', (chunk: Buffer) => this.#read(chunk));
    this.#socket.on('error', () => {});
    // 'close' follows the last 'data': what the other end wrote before it died has been read.
    this.closed = new Promise((resolve) => this.#socket.once('close', () => resolve()));
    if (!opts.autoFlush) this.#scheduled = true; // the owner calls flush()
  }

  send(msg: Out): void {
    const m = msg as { raw?: string | undefined };
    const raw = m.raw;
    if (raw === undefined) this.#queue.push(JSON.stringify(msg));
    else {
      m.raw = undefined;
      this.#queue.push(JSON.stringify(msg));
      m.raw = raw;
    }
    this.#raws.push(raw);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flushScheduled);
    }
  }

  readonly #flushScheduled = (): void => {
    this.#scheduled = false;
    this.flush();
  };

  flush(): void {
    const q = this.#queue;
    if (q.length === 0) return;
    const raws = this.#raws;
    this.#queue = [];
    this.#raws = [];
    let bytes = 0;
    const lens = new Array<number>(q.length * 2);
    for (let i = 0; i < q.length; i++) {
      const n = Buffer.byteLength(q[i] as string);
      const raw = raws[i];
      const m = raw === undefined ? 0 : Buffer.byteLength(raw);
      lens[2 * i] = n;
      lens[2 * i + 1] = m;
      bytes += HEADER + n + m;
    }
    const buf = Buffer.allocUnsafe(bytes);
    let off = 0;
    for (let i = 0; i < q.length; i++) {
      const n = lens[2 * i] as number;
      const m = lens[2 * i + 1] as number;
      buf.writeUInt32LE(4 + n + m, off);
      buf.writeUInt32LE(n, off + 4);
      off += HEADER;
      off += buf.write(q[i] as string, off);
      if (m > 0) off += buf.write(raws[i] as string, off);
    }
    if (!this.#socket.destroyed) this.#socket.write(buf);
  }

  onMessage(handler: (msg: In) => void): void {
    this.#handler = handler;
  }

  ref(): void {
    this.#socket.ref();
  }

  unref(): void {
    this.#socket.unref();
  }

  close(): void {
    this.flush();
    this.#socket.end();
  }

  #read(chunk: Buffer): void {
    const buf = this.#pending === undefined ? chunk : Buffer.concat([this.#pending, chunk]);
    let off = 0;
    while (buf.length - off >= HEADER) {
      const len = buf.readUInt32LE(off);
      if (buf.length - off - 4 < len) break;
      const n = buf.readUInt32LE(off + 4);
      const start = off + HEADER;
      const msg = JSON.parse(buf.toString('utf8', start, start + n)) as In;
      const end = off + 4 + len;
      if (end > start + n) (msg as { raw?: string }).raw = buf.toString('utf8', start + n, end);
      off = end;
      this.#handler(msg);
    }
    this.#pending = off === buf.length ? undefined : buf.subarray(off);
    // Keep only the tail, not the whole chunk it came from.
    if (this.#pending !== undefined && off > 0) this.#pending = Buffer.from(this.#pending);
  }
}

/** Node's IPC channel ('advanced' serialization); messages of one tick go out as one array. */
export class NodeIpcChannel<Out, In> implements Channel<Out, In> {
  readonly #endpoint: NodeIpcEndpoint;
  #queue: Out[] = [];
  #scheduled = false;
  readonly #autoFlush: boolean;
  readonly closed: Promise<void>;

  constructor(endpoint: NodeIpcEndpoint, opts: { autoFlush: boolean }) {
    this.#endpoint = endpoint;
    this.#autoFlush = opts.autoFlush;
    this.closed = new Promise((resolve) => endpoint.once?.('disconnect', () => resolve()) ?? resolve());
  }

  send(msg: Out): void {
    this.#queue.push(msg);
    if (this.#autoFlush && !this.#scheduled) {
      this.#scheduled = true;
      setImmediate(() => {
        this.#scheduled = false;
        this.flush();
      });
    }
  }

  flush(): void {
    if (this.#queue.length === 0) return;
    const batch = this.#queue;
    this.#queue = [];
    if (this.#endpoint.connected) this.#endpoint.send?.({ wire: batch } as never);
  }

  onMessage(handler: (msg: In) => void): void {
    this.#endpoint.on('message', (m: unknown) => {
      const batch = (m as { wire?: In[] }).wire;
      if (batch !== undefined) for (const msg of batch) handler(msg);
    });
  }

  ref(): void {
    (this.#endpoint.channel as { ref?: () => void } | undefined)?.ref?.();
  }

  unref(): void {
    (this.#endpoint.channel as { unref?: () => void } | undefined)?.unref?.();
  }

  close(): void {
    this.flush();
  }
}

/** The part of ChildProcess / process used by NodeIpcChannel. */
export interface NodeIpcEndpoint {
  connected: boolean;
  channel?: unknown;
  send?: (msg: never) => boolean;
  on(event: 'message', listener: (m: unknown) => void): unknown;
  once?(event: 'disconnect', listener: () => void): unknown;
}

export type WireKind = 'socket' | 'ipc';

export function wireKindFromEnv(env: NodeJS.ProcessEnv = process.env): WireKind {
  return env.ISOMESH_CORDON_WIRE === 'ipc' ? 'ipc' : 'socket';
}
