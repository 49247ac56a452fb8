// The restore lock of a MySQL/MariaDB database: a named server lock (GET_LOCK) held by a
// connection of its own for as long as the restore runs. The server releases it when that
// connection ends, however the process ends (kill -9 included), so a lock is never left behind.
// The connection has no default database: it is not one of the target's sessions.

import { createHash } from 'node:crypto';
import { DbstashError, RestoreError } from '../../core/errors.js';
import type { Target } from '../engine.js';
import { closeOnAbort, connect, where } from './connection.js';

const MAX_LOCK_NAME = 64; // MySQL's limit for GET_LOCK names
/** A year: the server must not close the idle connection (and drop the lock) during a long restore. */
const IDLE_TIMEOUT_S = 31_536_000;

export function restoreLockName(database: string): string {
  const name = `dbstash restore ${database}`;
  if (name.length <= MAX_LOCK_NAME) return name;
  return `dbstash restore #${createHash('sha256').update(database).digest('hex').slice(0, 40)}`;
}

export async function lockRestoreTarget(target: Target, signal?: AbortSignal): Promise<{ release(): Promise<void> }> {
  const conn = await connect(target, null, signal);
  const unhook = closeOnAbort(conn, signal);
  const name = restoreLockName(target.database);
  try {
    await conn.query(`SET SESSION wait_timeout = ${IDLE_TIMEOUT_S}`);
    const [rows] = await conn.query(`SELECT GET_LOCK(?, 0) AS got, IS_USED_LOCK(?) AS holder`, [name, name]);
    const { got, holder } = (rows as { got: number | null; holder: string | null }[])[0];
    if (Number(got) !== 1) {
      let who = holder ? `connection ${holder}` : 'another connection';
      if (holder) {
        const [procs] = await conn.query(`SELECT USER AS user, HOST AS host, TIME AS time FROM information_schema.PROCESSLIST WHERE ID = ?`, [holder]);
        const p = (procs as { user: string; host: string; time: number }[])[0];
        if (p) who += ` (${p.user}@${p.host}, for ${p.time} s)`;
      }
      throw new RestoreError(`[mysql] another restore into ${target.database} is running at ${where(target)}: ${who} holds the lock "${name}"`, {
        hint: 'wait for it to finish and look at its result; a restore that was killed releases the lock as soon as its connection closes',
      });
    }
  } catch (err) {
    unhook();
    await conn.end().catch(() => conn.destroy());
    signal?.throwIfAborted();
    if (err instanceof DbstashError) throw err;
    throw new RestoreError(`[mysql] cannot take the restore lock on ${target.database} at ${where(target)}: ${(err as Error).message}`, { cause: err });
  }
  let released = false;
  return {
    async release() {
      if (released) return;
      released = true;
      unhook();
      await conn.query(`SELECT RELEASE_LOCK(?)`, [name]).catch(() => {});
      await conn.end().catch(() => conn.destroy());
    },
  };
}
