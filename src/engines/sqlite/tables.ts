// Single tables of a SQLite backup: moving restored tables beside the live ones (a copy inside one
// transaction of the live database, under "<table>__restored_<stamp>", with the table's own SQL
// and its indexes renamed), and reading a table's rows with exact values (64-bit integers as
// their digits, blobs as bytes).

import Database from 'better-sqlite3';
import { RestoreError, UsageError } from '../../core/errors.js';
import { besideName, replacedName, type Cell, type PlacedTable, type ReplaceImpact, type RowSource, type TableRef, type Target } from '../engine.js';
import { openForReading } from './db.js';

const quote = (name: string) => `"${name.replace(/"/g, '""')}"`;
const NAME = String.raw`("(?:[^"]|"")*"|\[[^\]]*\]|\`(?:[^\`]|\`\`)*\`|'(?:[^']|'')*'|[^\s(]+)`;


export async function placeBeside(scratch: Target, target: Target, tables: TableRef[], stamp: string): Promise<PlacedTable[]> {
  const db = openTarget(target);
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

function openTarget(target: Target): Database.Database {
  try {
    return new Database(target.path!, { fileMustExist: true });
  } catch (err) {
    throw new RestoreError(`[sqlite] cannot open ${target.path}: ${(err as Error).message}`, { cause: err });
  }
}

interface Around {
  triggers: { name: string; sql: string }[];
  views: string[];
  fksOut: string[];
  /** Tables whose foreign keys name this one. */
  children: string[];
  autoincrement: boolean;
}

function around(db: Database.Database, table: string): Around {
  const triggers = db.prepare(`SELECT name, sql FROM sqlite_schema WHERE type = 'trigger' AND tbl_name = ?`).all(table) as { name: string; sql: string }[];
  const views = (db.prepare(`SELECT name, sql FROM sqlite_schema WHERE type = 'view'`).all() as { name: string; sql: string }[])
    .filter((v) => new RegExp(`(^|[^\\w])["\`[]?${table.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}["\`\\]]?($|[^\\w])`, 'i').test(v.sql))
    .map((v) => v.name);
  const fksOut = [...new Set((db.prepare(`SELECT "table" AS ref FROM pragma_foreign_key_list(?)`).all(table) as { ref: string }[]).map((f) => f.ref))];
  const others = db.prepare(`SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> ?`).all(table) as { name: string }[];
  const children = others
    .filter(({ name }) => (db.prepare(`SELECT "table" AS ref FROM pragma_foreign_key_list(?)`).all(name) as { ref: string }[]).some((f) => f.ref.toLowerCase() === table.toLowerCase()))
    .map((o) => o.name);
  const autoincrement = !!db.prepare(`SELECT 1 FROM sqlite_schema WHERE name = 'sqlite_sequence'`).get() && !!db.prepare(`SELECT 1 FROM sqlite_sequence WHERE name = ?`).get(table);
  return { triggers, views, fksOut, children, autoincrement };
}

export async function replaceImpact(target: Target, table: TableRef, _set: TableRef[], stamp: string): Promise<ReplaceImpact> {
  const db = openTarget(target);
  try {
    if (!db.prepare(`SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?`).get(table.name)) {
      throw new UsageError(`${target.path} has no table ${table.name}: there is nothing to replace`, { hint: 'restore it beside the live tables (without --replace)' });
    }
    const a = around(db, table.name);
    return {
      follow: [
        ...a.views.map((v) => `view ${v}: reads the restored table (SQLite views name their tables)`),
        ...a.triggers.map((t) => `trigger ${t.name}: re-created on the restored table`),
        ...(a.fksOut.length ? [`foreign keys to ${a.fksOut.join(', ')}: as in the backup (SQLite checks them only with PRAGMA foreign_keys = ON)`] : []),
        ...(a.autoincrement ? ['AUTOINCREMENT counter: the higher of the live and restored ones'] : []),
        `indexes: as in the backup, named <index>__restored_${stamp} (SQLite cannot rename an index)`,
      ],
      stay: [`the live table itself, kept as ${replacedName(table.name, stamp)} with its indexes`],
      referencedBy: a.children.map((c) => `foreign key of ${c}`),
    };
  } finally {
    db.close();
  }
}

/**
 * One transaction: the live table renamed aside, the restored one renamed in, the live table's
 * triggers re-created on it; with `cascade`, the tables whose foreign keys name it are checked
 * against the restored rows (PRAGMA foreign_key_check). legacy_alter_table keeps SQLite from
 * rewriting other tables' and views' references to follow the renamed live table.
 */
export async function replaceTables(target: Target, placed: PlacedTable[], stamp: string, opts: { cascade: boolean }): Promise<TableRef[]> {
  const db = openTarget(target);
  try {
    db.pragma('foreign_keys = OFF');
    db.pragma('legacy_alter_table = ON');
    db.pragma('busy_timeout = 10000');
    const kept: TableRef[] = [];
    const swap = db.transaction(() => {
      for (const p of placed) {
        const live = p.from.name;
        const a = around(db, live);
        if (a.children.length > 0 && !opts.cascade) {
          throw new UsageError(`${live} is referenced by other tables (${a.children.join(', ')}): --replace refuses it`, { hint: 'run with --cascade-plan to let their foreign keys name the restored table' });
        }
        const counter = a.autoincrement ? (db.prepare(`SELECT seq FROM sqlite_sequence WHERE name = ?`).get(live) as { seq: number }).seq : undefined;
        const keptName = replacedName(live, stamp);
        db.exec(`ALTER TABLE ${quote(live)} RENAME TO ${quote(keptName)}`);
        db.exec(`ALTER TABLE ${quote(p.to.name)} RENAME TO ${quote(live)}`);
        for (const t of a.triggers) {
          db.exec(`DROP TRIGGER ${quote(t.name)}`);
          db.exec(t.sql);
        }
        if (counter !== undefined) db.prepare(`UPDATE sqlite_sequence SET seq = max(seq, ?) WHERE name = ?`).run(counter, live);
        for (const child of opts.cascade ? a.children : []) {
          const bad = db.prepare(`SELECT count(*) AS n FROM pragma_foreign_key_check(?)`).get(child) as { n: number };
          if (bad.n > 0) throw new RestoreError(`[sqlite] ${bad.n} row(s) of ${child} reference rows the restored ${live} does not hold`);
        }
        kept.push({ schema: 'main', name: keptName });
      }
    });
    try {
      swap.immediate();
    } catch (err) {
      if (err instanceof UsageError) throw err;
      throw new RestoreError(`replacing ${placed.map((p) => p.from.name).join(', ')} failed, nothing was changed: ${(err as Error).message}`, {
        hint: 'the restored table stays beside the live one; compare them and copy rows back by hand',
        cause: err,
      });
    }
    return kept;
  } finally {
    db.close();
  }
}
