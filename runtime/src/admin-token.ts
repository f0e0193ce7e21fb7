// The admin token: from ISOMESH_ADMIN_TOKEN, or generated at first start, kept in the state dir
// (mode 0600, like a kubeconfig) so the operator and the CLI can read it, and printed once.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

export const ADMIN_TOKEN_FILE = 'admin-token';

export function resolveAdminToken(stateDir: string, fromEnv: string | undefined): { token: string; generated: boolean } {
  if (fromEnv) return { token: fromEnv, generated: false };
  const file = path.join(stateDir, ADMIN_TOKEN_FILE);
  try {
    const token = fs.readFileSync(file, 'utf8').trim();
    if (token) return { token, generated: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const token = `ism_admin_${randomBytes(24).toString('base64url')}`;
  // Write-then-rename so a crash never leaves a half-written token file.
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${token}\n`, { mode: 0o600 });
  fs.renameSync(tmp, file);
  return { token, generated: true };
}
