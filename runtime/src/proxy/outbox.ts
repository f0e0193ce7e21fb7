// Outbox: the plugin calls between a data-plane worker and the main thread, posted together once per
// event-loop turn. A MessagePort message costs each side its serialisation, a cross-thread wake-up
// and a dispatch into JS (≈ 20 µs a side for a call and its reply, ≈ 5 µs in batches of 8:
// bench/crossings.ts); a worker's concurrent requests reach their chains in the same turn, and a
// cordon answers many passes in one read, so one message carries them all. The flush runs in the
// turn's check phase (setImmediate): right after the I/O callbacks that queued the messages, with
// no added wait.

export class Outbox<M> {
  #queue: M[] = [];
  #scheduled = false;
  readonly #post: (batch: M[]) => void;

  /** `post` sends one batch (in the order pushed); it is called at most once per event-loop turn. */
  constructor(post: (batch: M[]) => void) {
    this.#post = post;
  }

  push(m: M): void {
    this.#queue.push(m);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(this.#flush);
  }

  readonly #flush = (): void => {
    this.#scheduled = false;
    const batch = this.#queue;
    this.#queue = [];
    this.#post(batch);
  };
}
