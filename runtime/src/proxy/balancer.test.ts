import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { Service } from '../store/model.ts';
import { EndpointPicker } from './balancer.ts';

function svc(weights: number[], lb: Service['lb'], circuitBreaker?: Service['circuitBreaker']): Pick<Service, 'endpoints' | 'lb' | 'circuitBreaker'> {
  return { endpoints: weights.map((weight, i) => ({ address: '127.0.0.1', port: 1000 + i, weight })), lb, circuitBreaker };
}

test('smooth weighted round robin gives exact shares and interleaves', () => {
  const p = new EndpointPicker(svc([5, 1, 1], 'round_robin'));
  const seq = Array.from({ length: 7 }, () => p.pick('', 0)!.port);
  // nginx's documented sequence for weights 5,1,1: a a b a c a a
  assert.deepEqual(seq, [1000, 1000, 1001, 1000, 1002, 1000, 1000]);
  const counts = new Map<number, number>();
  for (let i = 0; i < 700; i++) {
    const port = p.pick('', 0)!.port;
    counts.set(port, (counts.get(port) ?? 0) + 1);
  }
  assert.deepEqual([counts.get(1000), counts.get(1001), counts.get(1002)], [500, 100, 100]);
});

test('weight 0 endpoints get no traffic unless all are 0', () => {
  const p = new EndpointPicker(svc([0, 1], 'round_robin'));
  for (let i = 0; i < 10; i++) assert.equal(p.pick('', 0)!.port, 1001);
  const all0 = new EndpointPicker(svc([0, 0], 'round_robin'));
  const seen = new Set(Array.from({ length: 4 }, () => all0.pick('', 0)!.port));
  assert.deepEqual([...seen].sort(), [1000, 1001]);
});

test('least request picks the endpoint with fewest in-flight requests', () => {
  const p = new EndpointPicker(svc([1, 1, 1], 'least_request'));
  p.endpoints[0].addInFlight(3);
  p.endpoints[1].addInFlight(1);
  p.endpoints[2].addInFlight(2);
  for (let i = 0; i < 5; i++) assert.equal(p.pick('', 0)!.port, 1001);
  p.endpoints[1].addInFlight(4);
  assert.equal(p.pick('', 0)!.port, 1002);
});

test('ring hash is stable per key and spreads keys over endpoints', () => {
  const p = new EndpointPicker(svc([1, 1, 1, 1], 'ring_hash'));
  const counts = new Map<number, number>();
  for (let k = 0; k < 2000; k++) {
    const first = p.pick(`client-${k}`, 0)!.port;
    assert.equal(p.pick(`client-${k}`, 0)!.port, first);
    counts.set(first, (counts.get(first) ?? 0) + 1);
  }
  assert.equal(counts.size, 4);
  for (const n of counts.values()) assert.ok(n > 250 && n < 750, JSON.stringify([...counts]));
});

test('ring hash: removing an endpoint only moves the keys it owned', () => {
  const four = new EndpointPicker(svc([1, 1, 1, 1], 'ring_hash'));
  const three = new EndpointPicker({ ...svc([1, 1, 1], 'ring_hash') });
  let moved = 0;
  for (let k = 0; k < 1000; k++) {
    const before = four.pick(`k${k}`, 0)!.port;
    const after = three.pick(`k${k}`, 0)!.port;
    if (before !== 1003 && before !== after) moved++;
  }
  assert.equal(moved, 0);
});

test('outlier detection ejects after consecutive failures, then readmits', () => {
  const p = new EndpointPicker(svc([1, 1], 'round_robin', { maxConnections: 10, maxPending: 10, consecutive5xx: 2, ejectionMs: 1000 }));
  const bad = p.endpoints[0];
  p.report(bad, false, 0);
  assert.equal(bad.ejectedUntil, 0);
  p.report(bad, false, 0);
  assert.equal(bad.ejectedUntil, 1000);
  for (let i = 0; i < 6; i++) assert.equal(p.pick('', 500)!.port, 1001);
  const after = new Set(Array.from({ length: 4 }, () => p.pick('', 1500)!.port));
  assert.equal(after.size, 2);
  // Panic mode: with every endpoint ejected, traffic still flows.
  p.report(p.endpoints[0], false, 2000);
  p.report(p.endpoints[0], false, 2000);
  p.report(p.endpoints[1], false, 2000);
  p.report(p.endpoints[1], false, 2000);
  assert.ok(p.pick('', 2100) !== undefined);
});
