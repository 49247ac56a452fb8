// The exported snapshot both dump paths (custom format, and directory format with --jobs) run
// under: our own REPEATABLE READ transaction exports it, pg_dump imports it, and the database's
// own properties are read and every table is counted inside it while pg_dump runs. The
// transaction stays open until pg_dump has exited.
//
// Nothing of it may outlive the backup on the server: its lock waits are bounded by the backup's
// lock-wait timeout (SET LOCAL lock_timeout, as pg_dump's own by --lock-wait-timeout), and when the
// backup is aborted or pg_dump fails, the query running on the snapshot's connection is cancelled
// on the server (a CancelRequest) before the connection closes: a backend waiting for a lock or
// counting rows would not notice a closed socket.

import { onAbort } from '../../core/abort.js';
import { BackupError } from '../../core/errors.js';
import type { DatabaseProperties, TableStat, Target } from '../engine.js';
import { describeExit, type RunningTool } from '../process.js';
import { cancelRunningQuery, type PgClient } from './connection.js';
import { countTables } from './counts.js';
import { CountLockTimeout, lockTimeoutSetting, lockWaitFailure, pgDumpLockTimeout } from './locks.js';
import { readOwnProperties } from './properties.js';

export interface DumpSnapshot {
  id: string;
  /** Ends the transaction (COMMIT after a good dump, else ROLLBACK) and the connection; idempotent. */
  release(commit: boolean): Promise<void>;
}

/** Releases the client on first call; safe to call before the snapshot exists. */
export function snapshotReleaser(client: PgClient): DumpSnapshot['release'] {
  let finished = false;
  return async (commit: boolean) => {
    if (finished) return;
    finished = true;
    await client.query(commit ? 'COMMIT' : 'ROLLBACK').catch(() => {});
    await client.end().catch(() => {});
  };
}

/** The pg_dump argument that bounds its lock waits as the counts' are (none for 0: no limit). */
export function lockWaitArgs(lockWaitTimeout: number): string[] {
  return lockWaitTimeout > 0 ? [`--lock-wait-timeout=${Math.round(lockWaitTimeout)}`] : [];
}

export async function exportSnapshot(client: PgClient, lockWaitTimeout: number): Promise<string> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  // The row counts run beside pg_dump: parallel workers would only take CPU from the dump's own
  // backend (a parallel count of 10M rows costs more CPU in total than a serial one).
  await client.query(`SET LOCAL max_parallel_workers_per_gather = 0; SET LOCAL lock_timeout = '${lockTimeoutSetting(lockWaitTimeout)}'`);
  return (await client.query<{ id: string }>('SELECT pg_export_snapshot() AS id')).rows[0].id;
}

/**
 * The database's own properties as of the snapshot (queued on its connection before the counts).
 * A failure fails the counts too (the transaction is aborted), and with them the dump.
 */
export function propertiesInSnapshot(client: PgClient): Promise<DatabaseProperties> {
  const read = readOwnProperties(client).then(
    (p) => p as unknown as DatabaseProperties,
    (err: unknown) => {
      throw new BackupError(`[postgres] reading the database's properties in the dump's snapshot failed: ${(err as Error).message}`, { cause: err });
    },
  );
  read.catch(() => {});
  return read;
}

export interface CountOptions {
  /** The database, for looking up who holds a lock the dump gave up on. */
  target: Target;
  checksums: boolean;
  /** ms; names the wait in the error message. */
  lockWaitTimeout: number;
  /** The backup's abort signal: it cancels the counts on the server. */
  signal: AbortSignal;
  release: DumpSnapshot['release'];
}

/** After a cancel, how long the connection may take to end before its socket is closed. */
const CANCEL_GRACE_MS = 2000;

/**
 * Counts the tables while pg_dump runs. `finished` resolves once pg_dump exited cleanly and the
 * counts are done; it rejects with a BackupError otherwise: a failed count stops pg_dump, and a
 * failed pg_dump (or an abort) cancels the count running on the server. A lock wait that ran out,
 * on either side, fails with the table and the session holding it. The snapshot is released then,
 * without holding up `finished`: closing the connection waits for the server's backend to exit
 * (~10 ms), which overlaps with the end of the compression and the fsync of the artifact instead
 * of delaying them. `tables` resolves once the connection is closed too.
 */
export function countWhileDumping(client: PgClient, running: RunningTool, opts: CountOptions): { tables: Promise<TableStat[]>; finished: Promise<void> } {
  let stopped = false;
  const stopCounting = () => {
    if (stopped) return;
    stopped = true;
    void cancelRunningQuery(client);
  };
  const unhook = onAbort(opts.signal, () => {
    stopCounting();
    // A cancel the server never answered must not keep the process alive; lock_timeout then ends the query there.
    setTimeout(() => client.connection.stream.destroy(), CANCEL_GRACE_MS).unref();
  });
  let countsFailed = false;
  const counted = countTables(client, opts.checksums, () => stopped).catch(async (err: unknown) => {
    if (stopped) throw new BackupError('[postgres] the row counts were cancelled', { cause: err });
    countsFailed = true;
    const failure =
      err instanceof CountLockTimeout && !opts.signal.aborted
        ? await lockWaitFailure(opts.target, [err.table], opts.lockWaitTimeout, err)
        : new BackupError(`[postgres] counting rows in the dump's snapshot failed: ${(err as Error).message}`, { cause: err });
    running.child.kill('SIGTERM');
    throw failure;
  });
  counted.catch(() => {});
  let released: Promise<void> = Promise.resolve();
  const finished = (async () => {
    const exit = await running.exit;
    let dumpFailure: BackupError | undefined;
    if (exit.code !== 0 && !countsFailed) {
      // Who holds the lock pg_dump gave up on is looked up before the counts are cancelled: one of
      // them may still wait for it, and pg_blocking_pids() names its blocker.
      const locked = opts.signal.aborted ? undefined : pgDumpLockTimeout(exit.stderr);
      dumpFailure = locked ? await lockWaitFailure(opts.target, locked, opts.lockWaitTimeout) : new BackupError(`[postgres] ${describeExit('pg_dump', exit)}`);
      stopCounting();
    }
    try {
      await counted;
    } catch (err) {
      if (!dumpFailure) throw err;
    } finally {
      unhook();
      released = opts.release(exit.code === 0);
    }
    if (dumpFailure) throw dumpFailure;
  })();
  finished.catch(() => {});
  const tables = (async () => {
    const stats = await counted;
    await finished.catch(() => {});
    await released;
    return stats;
  })();
  tables.catch(() => {});
  return { tables, finished };
}
