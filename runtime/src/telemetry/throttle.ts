// At most one log line per interval for a repeating condition (an unreachable collector fails every
// batch). Occurrences in between are summed and reported by the next line that is written.

export class Throttle {
  readonly #intervalMs: number;
  readonly #now: () => number;
  #last = Number.NEGATIVE_INFINITY;
  #count = 0;

  constructor(intervalMs: number, now: () => number = () => performance.now()) {
    this.#intervalMs = intervalMs;
    this.#now = now;
  }

  /** Adds `count` occurrences; calls write(total since the last line, ms since it) when a line is due. */
  run(count: number, write: (total: number, sinceMs: number | undefined) => void): void {
    this.#count += count;
    const now = this.#now();
    if (now - this.#last < this.#intervalMs) return;
    const since = Number.isFinite(this.#last) ? Math.round(now - this.#last) : undefined;
    const total = this.#count;
    this.#last = now;
    this.#count = 0;
    write(total, since);
  }
}
