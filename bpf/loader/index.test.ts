import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  BpfError, BpfLink, BpfObject, MapFd, cgroup2Mount, cgroupId, cgroupPrograms, ensureBpffs, isBpffs, possibleCpus,
} from './index.ts';
import { COUNTERS, MAPS, PROGRAMS, STRUCTS } from '../generated.ts';

const OBJECT = path.join(import.meta.dirname, '..', 'obj', 'isomesh.o');

/** Root-only tests: skipped with a reason elsewhere, but a skip is a failure under CI=true. */
function privileged(): string | false {
  if (process.getuid?.() === 0) return false;
  const reason = 'needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN) to load eBPF programs';
  if (process.env.CI === 'true') throw new Error(`CI=true but ${reason}`);
  return reason;
}

function tempPinDir(t: { after(fn: () => void): void }): string {
  ensureBpffs('/sys/fs/bpf');
  const dir = `/sys/fs/bpf/isomesh-loader-test-${randomBytes(4).toString('hex')}`;
  fs.mkdirSync(dir);
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

test('opening a missing object is a typed ENOENT', () => {
  assert.throws(() => BpfObject.open('/nonexistent/isomesh.o'), (e: unknown) =>
    e instanceof BpfError && e.code === 'ENOENT' && e.op === 'bpf_object__open_file');
});

test('programs and maps are found by their generated names; unknown names are ENOENT', (t) => {
  const obj = BpfObject.open(OBJECT);
  t.after(() => obj.close());
  for (const name of Object.keys(PROGRAMS)) assert.equal(obj.program(name).name, name);
  for (const [name, def] of Object.entries(MAPS)) {
    const m = obj.map(name);
    assert.equal(m.keySize, def.keySize, `${name} key size`);
    assert.equal(m.valueSize, def.valueSize, `${name} value size`);
  }
  assert.throws(() => obj.map('no_such_map'), (e: unknown) => e instanceof BpfError && e.code === 'ENOENT');
  assert.throws(() => obj.program('no_such_prog'), (e: unknown) => e instanceof BpfError && e.code === 'ENOENT');
});

test('load, map update/lookup/delete/iterate and typed map errors', { skip: privileged() }, (t) => {
  const obj = BpfObject.open(OBJECT);
  t.after(() => obj.close());
  obj.load();
  const vips = obj.map('vips').ops();
  const key = (tenant: number, port: number) => {
    const k = Buffer.alloc(STRUCTS.mesh_vip_key.size);
    k.writeUInt32LE(tenant, STRUCTS.mesh_vip_key.fields.tenant_id.offset);
    k.writeUInt16LE(port, STRUCTS.mesh_vip_key.fields.port.offset);
    return k;
  };
  const value = (listener: number) => {
    const v = Buffer.alloc(STRUCTS.mesh_vip_value.size);
    v.writeUInt16LE(listener, STRUCTS.mesh_vip_value.fields.listener_port.offset);
    return v;
  };
  assert.equal(vips.lookup(key(1, 80)), undefined);
  vips.update(key(1, 80), value(17001));
  vips.update(key(2, 80), value(17002));
  assert.equal(vips.lookup(key(1, 80))!.readUInt16LE(0), 17001);
  assert.equal(vips.lookup(key(2, 80))!.readUInt16LE(0), 17002);
  assert.equal(vips.keys().length, 2);
  assert.deepEqual(vips.entries().map(([, v]) => v.readUInt16LE(0)).sort(), [17001, 17002]);
  assert.equal(vips.delete(key(1, 80)), true);
  assert.equal(vips.delete(key(1, 80)), false);
  assert.equal(vips.keys().length, 1);
  assert.throws(() => vips.lookup(Buffer.alloc(3)), (e: unknown) => e instanceof BpfError && e.code === 'EINVAL');
  assert.throws(() => vips.update(key(1, 1), Buffer.alloc(1)), (e: unknown) => e instanceof BpfError && e.code === 'EINVAL');
  // the array map has exactly max_entries slots: index 1 of `config` does not exist
  const config = obj.map('config').ops();
  const idx = (n: number) => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };
  assert.throws(() => config.update(idx(1), Buffer.alloc(8)), (e: unknown) => e instanceof BpfError && e.code === 'E2BIG');
  // per-CPU counters: one 8-byte slot per possible CPU, all zero after load
  const counters = obj.map('counters').ops(true);
  const raw = counters.lookup(idx(COUNTERS.redirects))!;
  assert.equal(raw.length, 8 * possibleCpus());
  assert.ok(raw.every((b) => b === 0));
});

test('pinned maps are re-adopted by a second object (bpf_obj_get + reuse_fd)', { skip: privileged() }, (t) => {
  const pins = tempPinDir(t);
  const first = BpfObject.open(OBJECT);
  t.after(() => first.close());
  first.load();
  const pin = path.join(pins, 'tenants');
  first.map('tenants').pin(pin);
  assert.ok(isBpffs(pins));
  const key = Buffer.from([7, 0, 0, 0]);
  const name = Buffer.alloc(STRUCTS.mesh_tenant.size);
  name.write('acme');
  first.map('tenants').ops().update(key, name);

  const pinned = MapFd.fromPin(pin);
  t.after(() => pinned.close());
  assert.equal(pinned.keySize, 4);
  assert.equal(pinned.valueSize, STRUCTS.mesh_tenant.size);
  const second = BpfObject.open(OBJECT);
  t.after(() => second.close());
  second.map('tenants').reuseFd(pinned.fd);
  second.load();
  assert.equal(second.map('tenants').ops().lookup(key)!.toString('utf8', 0, 4), 'acme');
  assert.throws(() => MapFd.fromPin(path.join(pins, 'missing')), (e: unknown) => e instanceof BpfError && e.code === 'ENOENT');
});

test('cgroup attach through a pinned link, re-open, update and detach', { skip: privileged() }, (t) => {
  const mount = cgroup2Mount();
  assert.ok(mount, 'cgroup2 must be mounted');
  const cg = path.join(mount, `isomesh-loader-test-${randomBytes(4).toString('hex')}`);
  fs.mkdirSync(cg);
  t.after(() => fs.rmdirSync(cg));
  const pins = tempPinDir(t);
  const obj = BpfObject.open(OBJECT);
  t.after(() => obj.close());
  obj.load();
  const prog = obj.program('mesh_connect4');
  const type = PROGRAMS.mesh_connect4.attachType;
  assert.deepEqual(cgroupPrograms(cg, type), []);
  const link = prog.attachCgroup(cg);
  t.after(() => { try { link.detach(); } catch { /* already detached */ } link.destroy(); });
  assert.deepEqual(cgroupPrograms(cg, type), [prog.id]);
  assert.ok(cgroupId(cg) > 0n);
  const pin = path.join(pins, 'connect4');
  link.pin(pin);

  const adopted = BpfLink.open(pin);
  assert.equal(adopted.info().progId, prog.id);
  assert.equal(adopted.info().id, link.info().id);
  // a second load of the same object: swapping the program keeps exactly one attachment
  const obj2 = BpfObject.open(OBJECT);
  t.after(() => obj2.close());
  obj2.load();
  const prog2 = obj2.program('mesh_connect4');
  adopted.updateProgram(prog2);
  assert.deepEqual(cgroupPrograms(cg, type), [prog2.id]);
  adopted.unpin();
  adopted.detach();
  adopted.destroy();
  assert.deepEqual(cgroupPrograms(cg, type), []);
  assert.throws(() => prog.attachCgroup(path.join(cg, 'missing')), (e: unknown) => e instanceof BpfError && e.code === 'ENOENT');
});
