// Row counts (and optional content checksums) of a MySQL/MariaDB database. Tables are recorded
// under the schema "main": a MySQL database has no schemas of its own, and a restore may use
// another database name, so the database name cannot be part of a table's identity.
//
// Every table type that holds rows is counted — base tables and MariaDB's system-versioned tables
// alike, and whatever type a newer server adds — only views and sequences (one row: their state)
// are not. A system-versioned table's count includes its history rows when the dump holds them
// (a live or restored database is always counted with its history: a restore of a dump without
// history has none). Its ROW START/ROW END columns are not part of the checksum: a restore
// without history, or of transaction-precise versioning, cannot keep their values.

import type { TableStat } from '../engine.js';
import { quoteIdent, type MyConnection } from './connection.js';

export const MYSQL_SCHEMA = 'main';

/** Table types that hold no rows of their own (TEMPORARY: the session's own temporary tables). */
export const ROWLESS_TYPES = ['VIEW', 'SYSTEM VIEW', 'SEQUENCE', 'TEMPORARY'];

export interface DataTable {
  name: string;
  /** TABLE_TYPE as the server reports it ("BASE TABLE", "SYSTEM VERSIONED", …). */
  type: string;
  engine: string | null;
  /** System-versioned: by timestamp (its history can be dumped) or by transaction id (it cannot). */
  versioning?: 'timestamp' | 'transaction';
}

/**
 * The tables of `database` that hold rows. Two plain queries joined here: a subquery on
 * information_schema.COLUMNS per table makes MariaDB open every table of the server for each one
 * (a quarter of a second for 16 tables), a filtered COLUMNS query alone takes a millisecond.
 */
export async function dataTables(conn: MyConnection, database: string): Promise<DataTable[]> {
  const [rows] = await conn.query(
    `SELECT TABLE_NAME AS name, TABLE_TYPE AS type, ENGINE AS engine FROM information_schema.TABLES
     WHERE TABLE_SCHEMA = ? AND TABLE_TYPE NOT IN (${ROWLESS_TYPES.map(() => '?').join(', ')})
     ORDER BY BINARY TABLE_NAME`,
    [database, ...ROWLESS_TYPES],
  );
  const tables = rows as { name: string; type: string; engine: string | null }[];
  const versioned = tables.filter((t) => t.type === 'SYSTEM VERSIONED');
  const startTypes = new Map<string, string>();
  if (versioned.length > 0) {
    const [cols] = await conn.query(
      `SELECT TABLE_NAME AS name, DATA_TYPE AS type FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND GENERATION_EXPRESSION = 'ROW START'`,
      [database],
    );
    for (const c of cols as { name: string; type: string }[]) startTypes.set(c.name, c.type);
  }
  return tables.map((r) => ({
    name: r.name,
    type: r.type,
    engine: r.engine,
    ...(r.type === 'SYSTEM VERSIONED' ? { versioning: startTypes.get(r.name)?.toLowerCase() === 'bigint' ? ('transaction' as const) : ('timestamp' as const) } : {}),
  }));
}

/** Order-independent checksum: the sum of the first 64 bits of each row's MD5 over every column's bytes. */
async function checksumSql(conn: MyConnection, database: string, table: string, from: string): Promise<string> {
  const [cols] = await conn.query(
    `SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS
     WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND COALESCE(GENERATION_EXPRESSION, '') NOT IN ('ROW START', 'ROW END')
     ORDER BY ORDINAL_POSITION`,
    [database, table],
  );
  const parts = (cols as { name: string }[]).map((c) => `IFNULL(MD5(CAST(${quoteIdent(c.name)} AS BINARY)), 'n')`);
  const row = `MD5(CONCAT(${parts.join(', ') || "''"}))`;
  return `SELECT COUNT(*) AS n, CAST(COALESCE(SUM(CAST(CONV(SUBSTRING(${row}, 1, 16), 16, 10) AS UNSIGNED)), 0) AS CHAR) AS checksum FROM ${from}`;
}

/**
 * Counts every table that holds rows. `history`: whether the rows of system-versioned tables
 * include their history (true unless the dump being counted for leaves it out).
 */
export async function countTables(conn: MyConnection, database: string, checksums: boolean, opts: { history?: boolean } = {}): Promise<TableStat[]> {
  const history = opts.history ?? true;
  const tables = (await dataTables(conn, database)).map((table) => ({
    name: table.name,
    from: `${quoteIdent(database)}.${quoteIdent(table.name)}${table.versioning && history ? ' FOR SYSTEM_TIME ALL' : ''}`,
  }));
  const stats: TableStat[] = [];
  if (checksums) {
    for (const table of tables) {
      const [rows] = await conn.query(await checksumSql(conn, database, table.name, table.from));
      const r = (rows as { n: string; checksum: string }[])[0];
      stats.push({ schema: MYSQL_SCHEMA, name: table.name, rows: Number(r.n), checksum: r.checksum });
    }
    return stats;
  }
  // Many counts to one statement: the server counts one table after the other either way, and
  // each statement of its own costs a round trip (17 tables: ~4 ms).
  for (let start = 0; start < tables.length; start += COUNTS_PER_STATEMENT) {
    const batch = tables.slice(start, start + COUNTS_PER_STATEMENT);
    const [rows] = await conn.query(batch.map((t, i) => `SELECT ${i} AS i, COUNT(*) AS n FROM ${t.from}`).join(' UNION ALL '));
    const counted = new Map((rows as { i: number | string; n: string }[]).map((r) => [Number(r.i), Number(r.n)]));
    batch.forEach((t, i) => {
      const n = counted.get(i);
      if (n === undefined) throw new Error(`no count came back for table ${t.name}`);
      stats.push({ schema: MYSQL_SCHEMA, name: t.name, rows: n });
    });
  }
  return stats;
}

/** Tables counted by one statement (a UNION ALL of their counts). */
const COUNTS_PER_STATEMENT = 64;
