// Single tables of a SQLite backup: moving restored tables beside the live ones (a copy inside one
// transaction of the live database, under "<table>__restored_<stamp>", with the table's own SQL
// and its indexes renamed), and reading a table's rows with exact values (64-bit integers as
// their digits, blobs as bytes).

import Database from 'better-sqlite3';
import { RestoreError, UsageError } from '../../core/errors.js';
import { besideName, type Cell, type PlacedTable, type RowSource, type TableRef, type Target } from '../engine.js';
import { openForReading } from './db.js';

const quote = (name: string) => `"${name.replace(/"/g, '""')}"`;
const NAME = String.raw`("(?:[^"]|"")*"|\[[^\]]*\]|\`(?:[^\`]|\`\`)*\`|'(?:[^']|'')*'|[^\s(]+)`;


export async function placeBeside(scratch: Target, target: Target, tables: TableRef[], stamp: string): Promise<PlacedTable[]> {
  let db: Database.Database;
  try {
    db = new Database(target.path!, { fileMustExist: true });
  } catch (err) {
    throw new RestoreError(`[sqlite] cannot open ${target.path}: ${(err as Error).message}`, { cause: err });
  }
  try {
    db.pragma('foreign_keys = OFF');
    db.pragma('busy_timeout = 10000');
    db.prepare('ATTACH DATABASE ? AS dbstash_backup').run(scratch.path!);
    const placed: PlacedTable[] = [];
    const copy = db.transaction(() => {
      for (const t of tables) {
        const to = besideName(t.name, stamp);
        const exists = db.prepare(`SELECT 1 FROM main.sqlite_schema WHERE name = ? COLLATE NOCASE`).get(to);
        if (exists) throw new UsageError(`${target.path} already holds a table ${to}`);
        const row = db.prepare(`SELECT sql FROM dbstash_backup.sqlite_schema WHERE type = 'table' AND name = ?`).get(t.name) as { sql: string } | undefined;
        if (!row?.sql) throw new RestoreError(`[sqlite] the backup holds no table ${t.name}`);
        const create = new RegExp(`^CREATE TABLE ${NAME}`, 'i');
        if (!create.test(row.sql)) throw new RestoreError(`[sqlite] ${t.name} is not a plain table (${row.sql.slice(0, 40)}…); it cannot be restored beside`);
        db.exec(row.sql.replace(create, `CREATE TABLE main.${quote(to)}`));
        db.exec(`INSERT INTO main.${quote(to)} SELECT * FROM dbstash_backup.${quote(t.name)}`);
        const left: string[] = [];
        const indexes = db.prepare(`SELECT name, sql FROM dbstash_backup.sqlite_schema WHERE type = 'index' AND tbl_name = ? AND sql IS NOT NULL`).all(t.name) as { name: string; sql: string }[];
        const index = new RegExp(`^CREATE (UNIQUE )?INDEX ${NAME} ON ${NAME}`, 'i');
        for (const ix of indexes) {
          if (!index.test(ix.sql)) {
            left.push(`index ${ix.name}`);
            continue;
          }
          db.exec(ix.sql.replace(index, (_m, unique: string | undefined) => `CREATE ${unique ?? ''}INDEX main.${quote(besideName(ix.name, stamp))} ON ${quote(to)}`));
        }
        const triggers = db.prepare(`SELECT name FROM dbstash_backup.sqlite_schema WHERE type = 'trigger' AND tbl_name = ?`).all(t.name) as { name: string }[];
        for (const tg of triggers) left.push(`trigger ${tg.name}`);
        const fks = db.prepare(`SELECT DISTINCT "table" AS ref FROM pragma_foreign_key_list(?, 'dbstash_backup')`).all(t.name) as { ref: string }[];
        for (const fk of fks) left.push(`its foreign key to ${fk.ref} names the live table (SQLite checks it only with PRAGMA foreign_keys = ON)`);
        const pk = (db.prepare(`SELECT name, pk FROM pragma_table_info(?, 'dbstash_backup') WHERE pk > 0 ORDER BY pk`).all(t.name) as { name: string }[]).map((c) => c.name);
        placed.push({ from: t, to: { schema: 'main', name: to }, left, key: pk.length > 0 ? pk : undefined });
      }
    });
    copy.immediate();
    return placed;
  } finally {
    try {
      db.prepare('DETACH DATABASE dbstash_backup').run();
    } catch {
      /* not attached */
    }
    db.close();
  }
}

export async function readRows(target: Target, table: TableRef, opts: { where?: string; limit?: number }): Promise<RowSource> {
  const db = openForReading(target.path!);
  try {
    const exists = db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?`).get(table.name);
    if (!exists) throw new UsageError(`no table ${table.name} in ${target.path}`);
    let stmt: Database.Statement;
    try {
      stmt = db.prepare(`SELECT * FROM ${quote(table.name)}${opts.where ? ` WHERE ${opts.where}` : ''}${opts.limit !== undefined ? ` LIMIT ${opts.limit}` : ''}`);
    } catch (err) {
      throw new UsageError(`cannot read ${table.name}${opts.where ? ` where ${opts.where}` : ''}: ${(err as Error).message}`, { hint: opts.where ? 'check the --where condition (SQL, as in a WHERE clause)' : undefined });
    }
    stmt.raw(true).safeIntegers(true);
    const columns = stmt.columns().map((c) => ({ name: c.name, type: c.type ?? '' }));
    const close = async () => {
      if (db.open) db.close();
    };
    async function* rows(): AsyncGenerator<Cell[]> {
      try {
        for (const r of stmt.iterate() as Iterable<unknown[]>) {
          yield r.map((v): Cell => {
            if (v === null || v === undefined) return null;
            if (typeof v === 'bigint') return { number: v.toString() };
            if (typeof v === 'number') return { number: String(v) };
            if (Buffer.isBuffer(v)) return v;
            return String(v);
          });
        }
      } finally {
        await close();
      }
    }
    return { columns, rows: rows(), close };
  } catch (err) {
    db.close();
    throw err;
  }
}
