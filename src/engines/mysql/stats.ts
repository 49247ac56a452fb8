// Row counts (and optional content checksums) of a MySQL/MariaDB database. Tables are recorded
// under the schema "main": a MySQL database has no schemas of its own, and a restore may use
// another database name, so the database name cannot be part of a table's identity.

import type { TableStat } from '../engine.js';
import { quoteIdent, type MyConnection } from './connection.js';

export const MYSQL_SCHEMA = 'main';

export async function baseTables(conn: MyConnection, database: string): Promise<string[]> {
  const [rows] = await conn.query(
    `SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE = 'BASE TABLE' ORDER BY BINARY TABLE_NAME`,
    [database],
  );
  return (rows as { name: string }[]).map((r) => r.name);
}

/** Order-independent checksum: the sum of the first 64 bits of each row's MD5 over every column's bytes. */
async function checksumSql(conn: MyConnection, database: string, table: string): Promise<string> {
  const [cols] = await conn.query(
    `SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`,
    [database, table],
  );
  const parts = (cols as { name: string }[]).map((c) => `IFNULL(MD5(CAST(${quoteIdent(c.name)} AS BINARY)), 'n')`);
  const row = `MD5(CONCAT(${parts.join(', ') || "''"}))`;
  return `SELECT COUNT(*) AS n, CAST(COALESCE(SUM(CAST(CONV(SUBSTRING(${row}, 1, 16), 16, 10) AS UNSIGNED)), 0) AS CHAR) AS checksum
    FROM ${quoteIdent(database)}.${quoteIdent(table)}`;
}

export async function countTables(conn: MyConnection, database: string, checksums: boolean): Promise<TableStat[]> {
  const stats: TableStat[] = [];
  for (const name of await baseTables(conn, database)) {
    if (checksums) {
      const [rows] = await conn.query(await checksumSql(conn, database, name));
      const r = (rows as { n: string; checksum: string }[])[0];
      stats.push({ schema: MYSQL_SCHEMA, name, rows: Number(r.n), checksum: r.checksum });
    } else {
      const [rows] = await conn.query(`SELECT COUNT(*) AS n FROM ${quoteIdent(database)}.${quoteIdent(name)}`);
      stats.push({ schema: MYSQL_SCHEMA, name, rows: Number((rows as { n: string }[])[0].n) });
    }
  }
  return stats;
}
