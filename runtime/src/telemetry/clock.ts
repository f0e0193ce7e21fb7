// Epoch milliseconds with sub-millisecond resolution for the record's times. performance.timeOrigin +
// performance.now() is precise but drifts from wall time over a long uptime (NTP slews the wall clock,
// not the monotonic one), and spans from different hosts line up by wall time. So the drift is re-read
// at most once a second and applied only when it moved by more than Date.now()'s 1 ms resolution
// could explain: times stay smooth (no ±1 ms jitter between reads) and within ~2 ms of the wall clock.

const REREAD_MS = 1000;
const TOLERANCE_MS = 2;
let readAt = Number.NEGATIVE_INFINITY;
let offset = 0;

/** The epoch time (ms, with fractions) of a performance.now() reading. */
export function epochMs(performanceNow: number = performance.now()): number {
  if (performanceNow - readAt > REREAD_MS || performanceNow < readAt) {
    const now = performance.now();
    const drift = Date.now() - (performance.timeOrigin + now);
    if (Math.abs(drift - offset) > TOLERANCE_MS) offset = drift;
    readAt = now;
  }
  return performance.timeOrigin + performanceNow + offset;
}
