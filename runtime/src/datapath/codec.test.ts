import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IsomeshError } from '../errors.ts';
import * as codec from './codec.ts';

test('addresses are 16 bytes, IPv4 v4-mapped, and format back to Service.vip form', () => {
  assert.equal(codec.addr16('10.96.0.10').toString('hex'), '00000000000000000000ffff0a60000a');
  assert.deepEqual(codec.addr16('::ffff:10.96.0.10'), codec.addr16('10.96.0.10'));
  assert.equal(codec.addr16('fd00:96::10').toString('hex'), 'fd000096000000000000000000000010');
  assert.equal(codec.formatEndpoint(codec.addr16('10.96.0.10'), 80), '10.96.0.10:80');
  assert.equal(codec.formatEndpoint(codec.addr16('fd00:96:0:0::10'), 443), '[fd00:96::10]:443');
  assert.throws(() => codec.addr16('not-an-ip'));
});

test('VIPs parse as "ip:port" or "[ipv6]:port"', () => {
  assert.deepEqual(codec.parseVip('10.96.0.10:80'), { ip: '10.96.0.10', port: 80 });
  assert.deepEqual(codec.parseVip('[fd00::1]:8080'), { ip: 'fd00::1', port: 8080 });
  for (const bad of ['10.96.0.10', 'fd00::1:80', '10.96.0.10:0', '10.96.0.10:70000', 'host:80']) {
    assert.throws(() => codec.parseVip(bad), (e: unknown) => e instanceof IsomeshError && e.code === 'ISOMESH_ERR_SERVICE_INVALID', bad);
  }
});

test('workload records round-trip through the generated layout', () => {
  const rec = { tenantId: 7, name: 'web', proxy4: '10.231.0.1', proxy6: 'fd00:231::1' };
  assert.deepEqual(codec.decodeWorkload(codec.workloadValue(rec)), rec);
  assert.deepEqual(codec.decodeWorkload(codec.workloadValue({ tenantId: 1, name: 'x' })), { tenantId: 1, name: 'x' });
  assert.throws(() => codec.workloadValue({ tenantId: 1, name: 'n'.repeat(64) }));
  const key = codec.vipKey(3, '10.96.0.10', 80);
  const decoded = codec.decodeVipKey(key);
  assert.equal(decoded.tenantId, 3);
  assert.equal(decoded.port, 80);
  assert.equal(codec.formatEndpoint(decoded.addr, decoded.port), '10.96.0.10:80');
  assert.equal(codec.decodeVipValue(codec.vipValue(17001)).listenerPort, 17001);
  assert.equal(codec.decodeConfig(codec.configValue(true)).accel, true);
});

test('per-CPU slots are summed', () => {
  const b = Buffer.alloc(24);
  b.writeBigUInt64LE(2n, 0);
  b.writeBigUInt64LE(40n, 16);
  assert.equal(codec.sumPerCpu(b), 42);
});
