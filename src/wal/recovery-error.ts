// Why a restore_command failed, for the `dbstash restore` that started the recovery. PostgreSQL
// ends recovery on any exit below 126 as if the archive ended there, and would promote a server
// that is missing data; `wal get --recovery` exits 126 instead, so the server stops, and leaves
// the reason in this file of the data directory (restore_command runs there).

import { writeFileSync } from 'node:fs';
import path from 'node:path';

export const RECOVERY_ERROR_FILE = 'dbstash-recovery-error.txt';

/** The exit status that makes PostgreSQL stop recovery (a "shell error" to it). */
export const STOP_RECOVERY = 126;

/** Leaves `name: message` in the data directory (the working directory) and returns STOP_RECOVERY. */
export function stopRecovery(name: string, message: string): number {
  try {
    writeFileSync(RECOVERY_ERROR_FILE, `${name}: ${message}\n`, { mode: 0o600 });
  } catch {
    /* the server log has the message too */
  }
  return STOP_RECOVERY;
}

export function recoveryErrorFile(pgdata: string): string {
  return path.join(pgdata, RECOVERY_ERROR_FILE);
}
