// The exported snapshot both dump paths (custom format, and directory format with --jobs) run
// under: our own REPEATABLE READ transaction exports it, pg_dump imports it, and the database's
// own properties are read and every table is counted inside it while pg_dump runs. The
// transaction stays open until pg_dump has exited.

import { BackupError } from '../../core/errors.js';
import type { DatabaseProperties, TableStat } from '../engine.js';
import { describeExit, type RunningTool } from '../process.js';
import type { PgClient } from './connection.js';
import { countTables } from './index.js';
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

export async function exportSnapshot(client: PgClient): Promise<string> {
  await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
  // The row counts run beside pg_dump: parallel workers would only take CPU from the dump's own
  // backend (a parallel count of 10M rows costs more CPU in total than a serial one).
  await client.query('SET LOCAL max_parallel_workers_per_gather = 0');
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

/**
 * Counts the tables while pg_dump runs. `finished` resolves once pg_dump exited cleanly and the
 * counts are done; it rejects with a BackupError otherwise, and a failed count stops pg_dump. The
 * snapshot is released then, without holding up `finished`: closing the connection waits for the
 * server's backend to exit (~10 ms), which overlaps with the end of the compression and the fsync
 * of the artifact instead of delaying them. `tables` resolves once the connection is closed too.
 */
export function countWhileDumping(
  client: PgClient,
  running: RunningTool,
  checksums: boolean,
  release: DumpSnapshot['release'],
): { tables: Promise<TableStat[]>; finished: Promise<void> } {
  const counted = countTables(client, checksums).catch((err) => {
    running.child.kill('SIGTERM');
    throw new BackupError(`[postgres] counting rows in the dump's snapshot failed: ${(err as Error).message}`, { cause: err });
  });
  counted.catch(() => {});
  let released: Promise<void> = Promise.resolve();
  const finished = (async () => {
    const exit = await running.exit;
    try {
      await counted;
    } finally {
      released = release(exit.code === 0);
    }
    if (exit.code !== 0) throw new BackupError(`[postgres] ${describeExit('pg_dump', exit)}`);
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
