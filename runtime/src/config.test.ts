// The daemon's configuration from the environment: defaults and refusals.
import assert from 'node:assert/strict';
import os from 'node:os';
import { test } from 'node:test';
import { configFromEnv } from './config.ts';
import { IsomeshError } from './errors.ts';

test('ISOMESH_WORKERS defaults to the number of CPUs (at most 64) and accepts 1–64', () => {
  assert.equal(configFromEnv({}).workers, Math.min(64, os.availableParallelism()));
  assert.equal(configFromEnv({ ISOMESH_WORKERS: '1' }).workers, 1);
  assert.equal(configFromEnv({ ISOMESH_WORKERS: '64' }).workers, 64);
  for (const bad of ['0', '65', '-1', '2.5', 'two', '', '100']) {
    assert.throws(() => configFromEnv({ ISOMESH_WORKERS: bad }), (e: unknown) => e instanceof IsomeshError && /ISOMESH_WORKERS must be a whole number from 1 to 64/.test(e.message), bad);
  }
});

test('ISOMESH_DATAPATH_ON_STOP is keep by default, accepts keep and detach, and names itself when wrong', () => {
  assert.equal(configFromEnv({}).datapathOnStop, 'keep');
  assert.equal(configFromEnv({ ISOMESH_DATAPATH_ON_STOP: 'detach' }).datapathOnStop, 'detach');
  assert.equal(configFromEnv({ ISOMESH_DATAPATH_ON_STOP: 'keep' }).datapathOnStop, 'keep');
  for (const bad of ['', 'Detach', 'remove', 'yes']) {
    assert.throws(() => configFromEnv({ ISOMESH_DATAPATH_ON_STOP: bad }), (e: unknown) => e instanceof IsomeshError && e.code === 'ISOMESH_ERR_API_VALIDATION' && /ISOMESH_DATAPATH_ON_STOP must be keep or detach/.test(e.message), bad);
  }
});
