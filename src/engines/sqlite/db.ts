// Reading a SQLite database: opening it so that closing it leaves no traces, and counting (and
// checksumming) its tables. Shared by the backup and the restore half of the engine.

import { createHash } from 'node:crypto';
import { rm } from 'node:fs/promises';
import Database from 'better-sqlite3';
import type { TableStat } from '../engine.js';

/** The files SQLite keeps beside a database while it is open (or after a crash). */
export const SIDECARS = ['-wal', '-shm', '-journal'] as const;

/** A database file and the side files SQLite may keep beside it. */
export function databaseFiles(file: string): string[] {
  return [file, ...SIDECARS.map((suffix) => file + suffix)];
}

/** Removes a database file and its side files (those that exist). */
export async function removeDatabaseFiles(file: string): Promise<void> {
  for (const name of databaseFiles(file)) await rm(name, { force: true });
}

/**
 * Opens an existing database that dbstash only reads. Read-write with query_only on, because only
 * a connection that may write can, as the last one to close, checkpoint a WAL database and remove
 * its -wal and -shm files: a read-only connection creates them and leaves them behind, where they
 * look like a database still in use. When a read-write open fails, the file is opened read-only.
 * The caller MUST close the connection (in a finally).
 */
export function openForReading(file: string): Database.Database {
  let db: Database.Database;
  try {
    db = new Database(file, { fileMustExist: true });
  } catch {
    return new Database(file, { readonly: true, fileMustExist: true });
  }
  try {
    db.pragma('query_only = ON');
  } catch (err) {
    db.close();
    throw err;
  }
  return db;
}

function quote(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function sqliteTableStats(db: Database.Database, checksums: boolean): TableStat[] {
  const tables = db
    .prepare(`SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
    .all() as { name: string }[];
  return tables.map(({ name }) => {
    const rows = Number((db.prepare(`SELECT count(*) AS n FROM ${quote(name)}`).get() as { n: number }).n);
    const stat: TableStat = { schema: 'main', name, rows };
    if (checksums) stat.checksum = sqliteChecksum(db, name);
    return stat;
  });
}

/** Order-independent checksum: sum of the first 8 bytes of each row's SHA-256, modulo 2^64. */
function sqliteChecksum(db: Database.Database, table: string): string {
  const cols = (db.prepare(`PRAGMA table_info(${quote(table)})`).all() as { name: string }[]).map((c) => quote(c.name));
  let sum = 0n;
  for (const row of db.prepare(`SELECT ${cols.join(', ') || '1'} FROM ${quote(table)}`).raw().iterate() as Iterable<unknown[]>) {
    const h = createHash('sha256').update(JSON.stringify(row, (_k, v) => (typeof v === 'bigint' ? v.toString() : Buffer.isBuffer(v) ? v.toString('base64') : v))).digest();
    sum = (sum + h.readBigUInt64BE(0)) & 0xffffffffffffffffn;
  }
  return sum.toString();
}
