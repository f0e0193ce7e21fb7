// Percentiles over raw samples (nearest-rank on a sorted copy) and small number formatting.

export interface Summary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
  max: number;
}

export function percentile(sorted: ArrayLike<number>, p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
  return sorted[i] as number;
}

export function summarize(samples: ArrayLike<number>): Summary {
  const s = Float64Array.from(samples).sort();
  let sum = 0;
  for (const x of s) sum += x;
  return {
    count: s.length,
    p50: percentile(s, 0.5),
    p90: percentile(s, 0.9),
    p99: percentile(s, 0.99),
    mean: s.length ? sum / s.length : NaN,
    max: s.length ? (s[s.length - 1] as number) : NaN,
  };
}

/** Rounds to `digits` significant-ish decimals for JSON and tables. */
export function round(x: number, digits = 2): number {
  if (!Number.isFinite(x)) return x;
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export function roundSummary(s: Summary, digits = 2): Summary {
  return {
    count: s.count,
    p50: round(s.p50, digits),
    p90: round(s.p90, digits),
    p99: round(s.p99, digits),
    mean: round(s.mean, digits),
    max: round(s.max, digits),
  };
}

export function fmt(x: number | undefined, digits = 2): string {
  if (x === undefined || !Number.isFinite(x)) return '—';
  if (Math.abs(x) >= 1000) return Math.round(x).toLocaleString('en-US');
  return x.toFixed(digits);
}

/** Median and range of repeated measurements of one figure (each repetition one value). */
export interface Spread {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function spread(xs: number[], digits = 2): Spread {
  const s = xs.filter((x) => Number.isFinite(x)).sort((a, b) => a - b);
  if (s.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median: round(median, digits), min: round(s[0]!, digits), max: round(s[s.length - 1]!, digits), n: s.length };
}

/** What every repetition of a CPU-per-request benchmark measures (bench/cpu.ts, bench/h2.ts). */
export interface LoadSample {
  rep: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  proxyUserUs: number;
  proxySysUs: number;
  disturbed: boolean;
}

/** The spread of a target's repetitions, and its ratios to nginx's repetitions of the same number. */
export interface LoadSpread {
  cpuUs: Spread;
  userUs: Spread;
  sysUs: Spread;
  rps: Spread;
  p50Ms: Spread;
  p99Ms: Spread;
  disturbedReps: number;
  /** Per repetition: this target's CPU/request ÷ nginx's in the same repetition. */
  cpuVsNginx?: Spread;
  rpsVsNginx?: Spread;
}

/** `mine`: one target's repetitions; `ref`: nginx's (undefined: no ratios, e.g. for "direct"). */
export function loadSpread<S extends LoadSample>(mine: S[], ref: S[] | undefined, latencyDigits: number): LoadSpread {
  const cpu = (s: S): number => s.proxyUserUs + s.proxySysUs;
  const paired = (f: (a: S, b: S) => number): Spread =>
    spread(mine.map((s) => { const r = ref?.find((x) => x.rep === s.rep); return r === undefined ? NaN : f(s, r); }), 3);
  return {
    cpuUs: spread(mine.map(cpu), 1),
    userUs: spread(mine.map((s) => s.proxyUserUs), 1),
    sysUs: spread(mine.map((s) => s.proxySysUs), 1),
    rps: spread(mine.map((s) => s.rps), 0),
    p50Ms: spread(mine.map((s) => s.p50Ms), latencyDigits),
    p99Ms: spread(mine.map((s) => s.p99Ms), latencyDigits),
    disturbedReps: mine.filter((s) => s.disturbed).length,
    ...(ref === undefined || ref.length === 0 ? {} : { cpuVsNginx: paired((a, b) => cpu(a) / cpu(b)), rpsVsNginx: paired((a, b) => a.rps / b.rps) }),
  };
}

/** "12.3 (11.9–13.0)": median and range, for tables. */
export function fmtSpread(s: Spread | undefined, digits = 1): string {
  if (s === undefined || s.n === 0) return '—';
  if (s.n === 1 || s.min === s.max) return fmt(s.median, digits);
  return `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})`;
}
