import assert from 'node:assert/strict';
import { test } from 'node:test';
import { IdPool, TraceContextFactory, parseTraceparent, ratioSampled, type SamplerConfig } from './trace-context.ts';

const TID = '4bf92f3577b34da6a3ce929d0e0e4736';
const PID = '00f067aa0ba902b7';
const valid = `00-${TID}-${PID}-01`;
const parentBased = (ratio = 1): SamplerConfig => ({ root: 'traceidratio', parentBased: true, ratio });

test('a version-00 traceparent parses into trace id, parent id and flags', () => {
  assert.deepEqual(parseTraceparent(valid), { traceId: TID, parentId: PID, flags: 1 });
  assert.deepEqual(parseTraceparent(`00-${TID}-${PID}-00`), { traceId: TID, parentId: PID, flags: 0 });
  assert.deepEqual(parseTraceparent(`00-${TID}-${PID}-ff`)?.flags, 0xff, 'unknown flag bits are read, not refused');
  assert.deepEqual(parseTraceparent(` ${valid}\t`)?.traceId, TID, 'surrounding whitespace is not part of the value');
});

test('invalid traceparents are ignored (W3C edge cases)', () => {
  const cases: Array<[string, string]> = [
    ['version ff', `ff-${TID}-${PID}-01`],
    ['all-zero trace id', `00-${'0'.repeat(32)}-${PID}-01`],
    ['all-zero parent id', `00-${TID}-${'0'.repeat(16)}-01`],
    ['upper-case trace id', `00-${TID.toUpperCase()}-${PID}-01`],
    ['upper-case parent id', `00-${TID}-${PID.toUpperCase()}-01`],
    ['upper-case version', `0A-${TID}-${PID}-01`],
    ['upper-case flags', `00-${TID}-${PID}-0A`],
    ['version 00 with an extra field', `${valid}-what`],
    ['version 00 with a trailing character', `${valid}x`],
    ['short trace id', `00-${TID.slice(1)}-${PID}-01`],
    ['long parent id', `00-${TID}-${PID}0-01`],
    ['one-digit flags', `00-${TID}-${PID}-1`],
    ['non-hex in trace id', `00-${TID.slice(0, 31)}g-${PID}-01`],
    ['wrong separator', `00_${TID}-${PID}-01`],
    ['future version without the dash after flags', `01-${TID}-${PID}-01x`],
    ['non-hex version', `0g-${TID}-${PID}-01`],
    ['empty', ''],
    ['two headers joined', `${valid}, ${valid}`],
  ];
  for (const [name, value] of cases) assert.equal(parseTraceparent(value), undefined, name);
  assert.equal(parseTraceparent(undefined), undefined);
});

test('a future version is read by its version-00 prefix; extra fields are ignored', () => {
  assert.deepEqual(parseTraceparent(`01-${TID}-${PID}-01`), { traceId: TID, parentId: PID, flags: 1 });
  assert.deepEqual(parseTraceparent(`cc-${TID}-${PID}-01-what-the-future-holds`), { traceId: TID, parentId: PID, flags: 1 });
});

test('a valid parent continues its trace with a new span id; tracestate passes through unchanged', () => {
  const f = new TraceContextFactory(parentBased());
  const t = f.trace(valid, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
  assert.equal(t.traceId, TID);
  assert.equal(t.parentSpanId, PID);
  assert.match(t.spanId, /^[0-9a-f]{16}$/);
  assert.notEqual(t.spanId, PID);
  assert.equal(t.sampled, true);
  assert.equal(t.traceparent, `00-${TID}-${t.spanId}-01`);
  assert.equal(t.tracestate, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7');
});

test('a later version is answered as version 00; the random flag is kept, undefined flags are not', () => {
  const f = new TraceContextFactory(parentBased());
  const t = f.trace(`02-${TID}-${PID}-ff-extra`, undefined);
  assert.equal(t.traceparent, `00-${TID}-${t.spanId}-03`);
  const unsampled = f.trace(`00-${TID}-${PID}-fe`, undefined);
  assert.equal(unsampled.sampled, false);
  assert.equal(unsampled.traceparent, `00-${TID}-${unsampled.spanId}-02`);
});

test('parent-based: a sampled=0 parent stays unsampled, a sampled=1 parent stays sampled, at any ratio', () => {
  for (const ratio of [0, 0.5, 1]) {
    const f = new TraceContextFactory(parentBased(ratio));
    assert.equal(f.trace(`00-${TID}-${PID}-00`, undefined).sampled, false, `ratio ${ratio}, flags 00`);
    assert.equal(f.trace(`00-${TID}-${PID}-01`, undefined).sampled, true, `ratio ${ratio}, flags 01`);
  }
  // Not parent-based: the ratio decides from the trace id, whatever the flag says.
  const f = new TraceContextFactory({ root: 'always_off', parentBased: false, ratio: 1 });
  const t = f.trace(valid, 'a=b');
  assert.equal(t.sampled, false);
  assert.equal(t.traceparent.endsWith('-00'), true);
});

test('an absent or invalid traceparent starts a new trace; its tracestate is dropped', () => {
  const f = new TraceContextFactory(parentBased());
  for (const incoming of [undefined, `ff-${TID}-${PID}-01`, 'garbage']) {
    const t = f.trace(incoming, 'rojo=00f067aa0ba902b7');
    assert.match(t.traceId, /^[0-9a-f]{32}$/);
    assert.notEqual(t.traceId, TID);
    assert.match(t.spanId, /^[0-9a-f]{16}$/);
    assert.equal(t.parentSpanId, undefined);
    assert.equal(t.tracestate, undefined);
    assert.equal(t.sampled, true);
    // sampled + random: the trace id was made from crypto-random bytes
    assert.equal(t.traceparent, `00-${t.traceId}-${t.spanId}-03`);
    assert.deepEqual(parseTraceparent(t.traceparent), { traceId: t.traceId, parentId: t.spanId, flags: 3 });
  }
  const off = new TraceContextFactory(parentBased(0)).trace(undefined, undefined);
  assert.equal(off.sampled, false);
  assert.equal(off.traceparent.endsWith('-02'), true);
});

test('ids are distinct across many requests and across pool refills', () => {
  const pool = new IdPool();
  const spans = new Set<string>();
  const traces = new Set<string>();
  for (let i = 0; i < 3000; i++) {
    // 3000 × 48 hex digits > 16384: several refills
    spans.add(pool.spanId());
    traces.add(pool.traceId());
  }
  assert.equal(spans.size, 3000);
  assert.equal(traces.size, 3000);
  for (const s of spans) assert.match(s, /^[0-9a-f]{16}$/);
});

test('the ratio sampler decides from the trace id’s random part (consistent with other hops)', () => {
  // R = the last 14 hex digits; sampled iff R ≥ (1 − ratio)·2^56
  const low = '0'.repeat(18) + '00000000000001';
  const high = '0'.repeat(18) + 'ffffffffffffff';
  const mid = '0'.repeat(18) + '80000000000000';
  assert.equal(ratioSampled(low, 0.5), false);
  assert.equal(ratioSampled(high, 0.5), true);
  assert.equal(ratioSampled(mid, 0.5), true, 'exactly at the threshold is sampled');
  assert.equal(ratioSampled(low, 1), true);
  assert.equal(ratioSampled(high, 0), false);
  // The digits before the random part do not matter.
  assert.equal(ratioSampled('f'.repeat(18) + '00000000000001', 0.5), false);
});

test('root sampling at a ratio: the share is near the ratio, and every decision follows the trace id', () => {
  const ratio = 0.25;
  const f = new TraceContextFactory(parentBased(ratio));
  const n = 20_000;
  let sampled = 0;
  for (let i = 0; i < n; i++) {
    const t = f.trace(undefined, undefined);
    assert.equal(t.sampled, ratioSampled(t.traceId, ratio));
    if (t.sampled) sampled++;
  }
  // Expected 5000, σ ≈ 61: ±800 is over 13σ, never flaky.
  assert.ok(sampled > 4200 && sampled < 5800, `sampled ${sampled} of ${n} at ratio ${ratio}`);
});

test('request ids from the id pool are UUID-shaped (version 4, RFC variant) and unique', async () => {
  const { IdPool } = await import('./trace-context.ts');
  const pool = new IdPool();
  const seen = new Set<string>();
  for (let i = 0; i < 5000; i++) {
    const id = pool.uuid();
    assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    seen.add(id);
  }
  assert.equal(seen.size, 5000);
});
