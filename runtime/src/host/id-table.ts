// IdTable: the records of calls in flight, by their sequential numeric id (a cordon's passes, a
// worker's plugin calls, the main thread's runs of a worker's requests).
//
// Why not a Map: such a table sees a set and a delete per call at a steady few dozen entries, and
// V8's Map reallocates its backing table as it grows and shrinks. Under load those tables outlived
// two scavenges, were promoted, and once replaced still pointed at the records they had held until
// the next full GC — so every scavenge copied the finished calls' records and everything they held
// (the pass, the request's promise and its continuation). In the daemon under the realistic chain in
// cordon mode (16 concurrent requests): scavenges of 20–50 ms promoting ≈ 10 MB each, with this table
// 0.4–3 ms promoting nothing, and the p99 latency of that load 40–48 ms → 12–16 ms (docs/host.md,
// "Records of calls in flight"). Here the slots are plain arrays that never shrink: a finished call's slot is
// emptied in place.
//
// Ids are assumed to grow (++counter); slot = id & mask. A new id whose slot still holds a live older
// record doubles the table, up to MAX_SLOTS; past that the older record moves to a Map of its own
// (a call that outlives thousands of later ones — a long stream — is rare, and does not churn).

const MAX_SLOTS = 4096;

export class IdTable<T> {
  #ids: number[];
  #values: Array<T | undefined>;
  #mask: number;
  #size = 0;
  /** Records pushed out of their slot by a much newer id. */
  #overflow: Map<number, T> | undefined;

  constructor(capacity = 64) {
    let n = 1;
    while (n < Math.min(capacity, MAX_SLOTS)) n *= 2;
    this.#ids = new Array<number>(n).fill(-1);
    this.#values = new Array<T | undefined>(n).fill(undefined);
    this.#mask = n - 1;
  }

  get size(): number {
    return this.#size + (this.#overflow?.size ?? 0);
  }

  get(id: number): T | undefined {
    const i = id & this.#mask;
    if (this.#ids[i] === id && this.#values[i] !== undefined) return this.#values[i];
    return this.#overflow?.get(id);
  }

  set(id: number, value: T): void {
    if (this.#overflow?.has(id) === true) {
      this.#overflow.set(id, value);
      return;
    }
    let i = id & this.#mask;
    while (this.#ids[i] !== id && this.#values[i] !== undefined) {
      if (this.#ids.length < MAX_SLOTS) this.#grow();
      else {
        (this.#overflow ??= new Map()).set(this.#ids[i] as number, this.#values[i] as T);
        this.#values[i] = undefined;
        this.#ids[i] = -1;
        this.#size--;
      }
      i = id & this.#mask;
    }
    if (this.#values[i] === undefined) this.#size++;
    this.#ids[i] = id;
    this.#values[i] = value;
  }

  /** Removes the record of `id`; returns it (undefined when there was none). */
  take(id: number): T | undefined {
    const i = id & this.#mask;
    if (this.#ids[i] === id && this.#values[i] !== undefined) {
      const v = this.#values[i];
      this.#values[i] = undefined;
      this.#ids[i] = -1;
      this.#size--;
      return v;
    }
    const o = this.#overflow?.get(id);
    if (o !== undefined) this.#overflow?.delete(id);
    return o;
  }

  delete(id: number): boolean {
    return this.take(id) !== undefined;
  }

  /** The live records (not in id order). */
  *entries(): Generator<[number, T]> {
    yield* this.#slotted();
    if (this.#overflow !== undefined) yield* this.#overflow;
  }

  *#slotted(): Generator<[number, T]> {
    for (let i = 0; i < this.#values.length; i++) {
      const v = this.#values[i];
      if (v !== undefined) yield [this.#ids[i] as number, v];
    }
  }

  values(): T[] {
    return [...this.entries()].map(([, v]) => v);
  }

  clear(): void {
    this.#ids.fill(-1);
    this.#values.fill(undefined);
    this.#size = 0;
    this.#overflow = undefined;
  }

  /** Doubles the slots; records in slots of their own keep slots of their own (ids differing mod n differ mod 2n). */
  #grow(): void {
    const live = [...this.#slotted()];
    const n = this.#ids.length * 2;
    this.#ids = new Array<number>(n).fill(-1);
    this.#values = new Array<T | undefined>(n).fill(undefined);
    this.#mask = n - 1;
    for (const [id, v] of live) {
      this.#ids[id & this.#mask] = id;
      this.#values[id & this.#mask] = v;
    }
  }
}
