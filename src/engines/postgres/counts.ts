// Counting a PostgreSQL database's user tables: exact row counts and, with checksums, an
// order-independent checksum of every table's rows. The dump runs them in its snapshot
// (snapshot.ts); the drill and the restore compare a restored database with them (restore.ts).

import type { TableStat } from '../engine.js';
import { quoteIdent, type PgClient } from './connection.js';
import { CountLockTimeout, isLockTimeout } from './locks.js';

export const USER_TABLES_SQL = `
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2`;

/** The exact row count of one table (its partitions and children not included). */
function rowCountSql(schema: string, name: string): string {
  return `SELECT count(*)::bigint AS rows FROM ONLY ${quoteIdent(schema)}.${quoteIdent(name)}`;
}

/** Order-independent checksum of a table's rows: the sum of 64-bit prefixes of each row's md5. */
export function tableChecksumSql(schema: string, name: string): string {
  return `SELECT count(*)::bigint AS rows,
    coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text AS checksum
    FROM ONLY ${quoteIdent(schema)}.${quoteIdent(name)} t`;
}

/**
 * Counts (and with `checksums`, checksums) every user table on `client`. A count that gives up
 * waiting for its table's lock (lock_timeout) throws CountLockTimeout naming the table; once
 * `stopped()` says so, no further table is started.
 */
export async function countTables(client: PgClient, checksums: boolean, stopped: () => boolean = () => false): Promise<TableStat[]> {
  const { rows } = await client.query<{ schema: string; name: string }>(USER_TABLES_SQL);
  return countThese(client, rows, checksums, stopped);
}

/** countTables for the tables given (a restore counts each as soon as its data is in). */
export async function countThese(client: PgClient, tables: { schema: string; name: string }[], checksums: boolean, stopped: () => boolean = () => false): Promise<TableStat[]> {
  const stats: TableStat[] = [];
  for (const { schema, name } of tables) {
    if (stopped()) throw new Error('the row counts were stopped');
    try {
      if (checksums) {
        const r = await client.query<{ rows: string; checksum: string }>(tableChecksumSql(schema, name));
        stats.push({ schema, name, rows: Number(r.rows[0].rows), checksum: r.rows[0].checksum });
      } else {
        const r = await client.query<{ rows: string }>(rowCountSql(schema, name));
        stats.push({ schema, name, rows: Number(r.rows[0].rows) });
      }
    } catch (err) {
      throw isLockTimeout(err) ? new CountLockTimeout({ schema, name }, err) : err;
    }
  }
  return stats;
}
