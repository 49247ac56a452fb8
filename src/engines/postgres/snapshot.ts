// The exported snapshot both dump paths (custom format, and directory format with --jobs) run
// under: our own REPEATABLE READ transaction exports it, pg_dump imports it, and every table is
// counted inside it while pg_dump runs. The transaction stays open until pg_dump has exited.

import { BackupError } from '../../core/errors.js';
import type { TableStat } from '../engine.js';
import { describeExit, type RunningTool } from '../process.js';
import type { PgClient } from './connection.js';
import { countTables } from './index.js';

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
 * Counts the tables while pg_dump runs. `finished` resolves once pg_dump exited cleanly and the
 * counts are done (the snapshot is then released); it rejects with a BackupError otherwise, and a
 * failed count stops pg_dump.
 */
export function countWhileDumping(
  client: PgClient,
  running: RunningTool,
  checksums: boolean,
  release: DumpSnapshot['release'],
): { tables: Promise<TableStat[]>; finished: Promise<void> } {
  const tables = countTables(client, checksums).catch((err) => {
    running.child.kill('SIGTERM');
    throw new BackupError(`[postgres] counting rows in the dump's snapshot failed: ${(err as Error).message}`, { cause: err });
  });
  tables.catch(() => {});
  const finished = (async () => {
    const exit = await running.exit;
    try {
      await tables;
    } finally {
      await release(exit.code === 0);
    }
    if (exit.code !== 0) throw new BackupError(`[postgres] ${describeExit('pg_dump', exit)}`);
  })();
  finished.catch(() => {});
  return { tables, finished };
}
