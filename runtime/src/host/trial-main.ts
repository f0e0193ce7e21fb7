// Entry of the trial-load process (cordon mode): runs publish-time trial loads (probeLoad) one at a
// time, away from the daemon and from the tenants' cordons. A plugin that aborts V8 or exhausts the
// process's memory at load time kills only this process; the daemon answers its publisher 400 and
// starts a new one for the next publish.

import { IsomeshError } from '../errors.ts';
import { seedGuestRuntimeCode } from './guest-code.ts';
import { probeLoad } from './probe.ts';
import type { FromTrial, ToTrial } from './trial.ts';

function send(m: FromTrial): void {
  process.send?.(m);
}

process.on('message', (raw: unknown) => {
  const m = raw as ToTrial;
  if (m.t === 'init') {
    seedGuestRuntimeCode(m.guest);
    send({ t: 'ready' });
    return;
  }
  if (m.t !== 'probe') return;
  try {
    send({ t: 'probed', id: m.id, ok: true, declarations: probeLoad(m.code, m.timeoutMs) });
  } catch (e) {
    const error =
      e instanceof IsomeshError
        ? { code: e.code, message: e.message, details: e.details }
        : { code: 'ISOMESH_ERR_PLUGIN_LOAD' as const, message: e instanceof Error ? e.message : String(e) };
    send({ t: 'probed', id: m.id, ok: false, error });
  }
});
process.on('disconnect', () => process.exit(0));
