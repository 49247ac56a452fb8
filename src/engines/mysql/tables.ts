// Single tables of a MySQL/MariaDB backup: a restore of some tables' data only (the dump's INSERT
// lines of the other tables are dropped on the way to the client: mariadb-dump writes each INSERT
// on one line, strings escaped, so a line is a statement), moving restored tables beside the live
// ones (RENAME TABLE across databases of one server, all in one statement), and reading a table's
// rows with exact values (DECIMAL and BIGINT as their digits, binary as bytes, TIMESTAMP in UTC).

import { Transform, type TransformCallback } from 'node:stream';
import { RestoreError, UsageError } from '../../core/errors.js';
import { besideName, replacedName, type Cell, type PlacedTable, type ReplaceImpact, type RowSource, type TableRef, type Target } from '../engine.js';
import { closeConnection, connect, quoteIdent, withConnection, type MyConnection } from './connection.js';

const PREFIX = Buffer.from('INSERT INTO `');
/** Enough of a line to read "INSERT INTO `<64 characters, each up to 4 bytes, quotes doubled>`". */
const HEAD_BYTES = PREFIX.length + 64 * 8 + 2;

/**
 * Drops the INSERT statements of tables outside `keep`, passing everything else through untouched.
 * mariadb-dump writes an INSERT as "INSERT INTO `t` VALUES" and one row per line, or all on one
 * line; strings have their line breaks escaped, so the statement ends with the first line whose
 * last character is ";". A line is decided on its first bytes and then streamed (bounded memory,
 * whatever its length).
 */
export class InsertFilter extends Transform {
  private head: Buffer[] = [];
  private headLength = 0;
  /** undefined: deciding the current line; true: passing it; false: dropping it. */
  private pass: boolean | undefined;
  /** Inside a dropped statement: the lines up to its ";" go too. */
  private dropping = false;
  /** The last byte of the current line so far. */
  private last = -1;
  dropped = 0;

  constructor(private readonly keep: Set<string>) {
    super({ highWaterMark: 1 << 20 });
  }

  private decide(head: Buffer): boolean {
    if (this.dropping) return false;
    if (head.length < PREFIX.length || !head.subarray(0, PREFIX.length).equals(PREFIX)) return true;
    const text = head.subarray(PREFIX.length).toString('utf8');
    let name = '';
    for (let i = 0; i < text.length; i++) {
      if (text[i] === '`') {
        if (text[i + 1] === '`') {
          name += '`';
          i++;
          continue;
        }
        const keep = this.keep.has(name);
        if (!keep) {
          this.dropped++;
          this.dropping = true;
        }
        return keep;
      }
      name += text[i];
    }
    return true; // a name longer than any table: not an INSERT of a table we know
  }

  /** A line has ended: a dropped statement ends with it when its last character is ";". */
  private lineEnded(): void {
    if (this.dropping && this.last === 0x3b) this.dropping = false;
    this.pass = undefined;
    this.last = -1;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    let at = 0;
    while (at < chunk.length) {
      const nl = chunk.indexOf(10, at);
      const end = nl < 0 ? chunk.length : nl + 1;
      const piece = chunk.subarray(at, end);
      const body = nl < 0 ? piece : piece.subarray(0, piece.length - 1);
      if (body.length > 0) this.last = body[body.length - 1];
      if (this.pass === undefined) {
        this.head.push(piece);
        this.headLength += piece.length;
        if (nl >= 0 || this.headLength >= HEAD_BYTES) {
          const head = Buffer.concat(this.head);
          this.head = [];
          this.headLength = 0;
          this.pass = this.decide(head);
          if (this.pass) this.push(head);
        }
      } else if (this.pass) {
        this.push(piece);
      }
      if (nl >= 0) this.lineEnded();
      at = end;
    }
    done();
  }

  override _flush(done: TransformCallback): void {
    if (this.head.length > 0) {
      const head = Buffer.concat(this.head);
      if (this.decide(head)) this.push(head);
    }
    done();
  }
}


/**
 * Drops, in `scratch`, the triggers of the tables (a trigger cannot change databases) and every
 * foreign key between them and tables that were not restored, then renames them all into `target`
 * as "<table>__restored_<stamp>" in one RENAME TABLE (all or nothing).
 */
export async function placeBeside(scratch: Target, target: Target, tables: TableRef[], stamp: string): Promise<PlacedTable[]> {
  return withConnection(scratch, null, async (c) => {
    const db = scratch.database;
    const set = new Set(tables.map((t) => t.name));
    const placed: PlacedTable[] = tables.map((t) => ({ from: t, to: { schema: 'main', name: besideName(t.name, stamp) }, left: [] }));
    const byName = new Map(placed.map((p) => [p.from.name, p]));
    const [taken] = await c.query(`SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME IN (?)`, [target.database, placed.map((p) => p.to.name)]);
    const clash = (taken as { name: string }[])[0];
    if (clash) throw new UsageError(`${target.database} already holds a table ${clash.name}`);
    const [triggers] = await c.query(`SELECT TRIGGER_NAME AS name, EVENT_OBJECT_TABLE AS tbl FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE IN (?)`, [db, [...set]]);
    for (const tg of triggers as { name: string; tbl: string }[]) {
      await c.query(`DROP TRIGGER ${quoteIdent(db)}.${quoteIdent(tg.name)}`);
      byName.get(tg.tbl)?.left.push(`trigger ${tg.name}`);
    }
    const [fks] = await c.query(
      `SELECT CONSTRAINT_NAME AS name, TABLE_NAME AS child, REFERENCED_TABLE_NAME AS parent FROM information_schema.REFERENTIAL_CONSTRAINTS
       WHERE CONSTRAINT_SCHEMA = ? AND (TABLE_NAME IN (?) OR REFERENCED_TABLE_NAME IN (?))`,
      [db, [...set], [...set]],
    );
    for (const fk of fks as { name: string; child: string; parent: string }[]) {
      if (set.has(fk.child) && set.has(fk.parent)) continue;
      await c.query(`ALTER TABLE ${quoteIdent(db)}.${quoteIdent(fk.child)} DROP FOREIGN KEY ${quoteIdent(fk.name)}`);
      byName.get(fk.child)?.left.push(`foreign key ${fk.name} → ${fk.parent} (not restored)`);
    }
    const [keys] = await c.query(
      `SELECT TABLE_NAME AS tbl, COLUMN_NAME AS col FROM information_schema.KEY_COLUMN_USAGE
       WHERE TABLE_SCHEMA = ? AND CONSTRAINT_NAME = 'PRIMARY' AND TABLE_NAME IN (?) ORDER BY TABLE_NAME, ORDINAL_POSITION`,
      [db, [...set]],
    );
    for (const k of keys as { tbl: string; col: string }[]) {
      const p = byName.get(k.tbl);
      if (p) p.key = [...(p.key ?? []), k.col];
    }
    const renames = placed.map((p) => `${quoteIdent(db)}.${quoteIdent(p.from.name)} TO ${quoteIdent(target.database)}.${quoteIdent(p.to.name)}`);
    await c.query(`RENAME TABLE ${renames.join(', ')}`).catch((err: Error) => {
      throw new RestoreError(`[mysql] moving the restored tables into ${target.database} failed (nothing was changed there): ${err.message}`, { cause: err });
    });
    return placed;
  });
}

type Kind = 'number' | 'binary' | 'timestamp' | 'datetime' | 'json' | 'text';

function kindOf(dataType: string): Kind {
  const t = dataType.toLowerCase();
  if (/^(tinyint|smallint|mediumint|int|integer|bigint|decimal|numeric|float|double|real|year)$/.test(t)) return 'number';
  if (/^(binary|varbinary|tinyblob|blob|mediumblob|longblob|bit|geometry|point|linestring|polygon|multipoint|multilinestring|multipolygon|geometrycollection)$/.test(t)) return 'binary';
  if (t === 'timestamp') return 'timestamp';
  if (t === 'datetime') return 'datetime';
  if (t === 'json') return 'json';
  return 'text';
}

function toCell(value: Buffer | null, kind: Kind): Cell {
  if (value === null) return null;
  if (kind === 'binary') return value;
  const text = value.toString('utf8');
  switch (kind) {
    case 'number':
      return { number: text };
    case 'json':
      return { json: text };
    case 'timestamp':
    case 'datetime': {
      const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)$/.exec(text);
      if (!m || m[1] === '0000-00-00') return text;
      return { time: `${m[1]}T${m[2]}${kind === 'timestamp' ? 'Z' : ''}` };
    }
    default:
      return text;
  }
}

/** A table's rows streamed from the server (no buffering of the result), each value as its bytes. */
export async function readRows(target: Target, table: TableRef, opts: { where?: string; limit?: number; signal: AbortSignal }): Promise<RowSource> {
  const conn = await connect(target, target.database, opts.signal);
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await closeConnection(conn);
  };
  try {
    const [cols] = await conn.query(
      `SELECT COLUMN_NAME AS name, DATA_TYPE AS type, COLUMN_TYPE AS full FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? ORDER BY ORDINAL_POSITION`,
      [target.database, table.name],
    );
    const columns = (cols as { name: string; type: string; full: string }[]).map((c) => ({ name: c.name, type: c.full, kind: kindOf(c.type) }));
    if (columns.length === 0) throw new UsageError(`no table ${table.name} in ${target.database}`);
    const sql = `SELECT ${columns.map((c) => quoteIdent(c.name)).join(', ')} FROM ${quoteIdent(table.name)}${opts.where ? ` WHERE ${opts.where}` : ''}${opts.limit !== undefined ? ` LIMIT ${opts.limit}` : ''}`;
    const core = (conn as unknown as { connection: { query(o: object): { stream(o?: object): NodeJS.ReadableStream } } }).connection;
    const stream = core.query({ sql, rowsAsArray: true, typeCast: (field: { buffer(): Buffer | null }) => field.buffer() }).stream({ highWaterMark: 256 });
    async function* rows(): AsyncGenerator<Cell[]> {
      try {
        for await (const r of stream as AsyncIterable<(Buffer | null)[]>) yield r.map((v, i) => toCell(v, columns[i].kind));
      } catch (err) {
        const e = err as { sqlMessage?: string; message: string };
        throw new UsageError(`cannot read ${table.name}${opts.where ? ` where ${opts.where}` : ''}: ${e.sqlMessage ?? e.message}`, {
          hint: opts.where ? 'check the --where condition (SQL, as in a WHERE clause)' : undefined,
        });
      } finally {
        await close();
      }
    }
    return { columns: columns.map(({ name, type }) => ({ name, type })), rows: rows(), close };
  } catch (err) {
    await close();
    throw err;
  }
}

interface Fk {
  name: string;
  table: string;
  columns: string[];
  parent: string;
  parentColumns: string[];
  onDelete: string;
  onUpdate: string;
}

async function foreignKeysOf(c: MyConnection, db: string, where: 'child' | 'parent', table: string): Promise<Fk[]> {
  const [rows] = await c.query(
    `SELECT k.CONSTRAINT_NAME AS name, k.TABLE_NAME AS tbl, k.COLUMN_NAME AS col, k.REFERENCED_TABLE_NAME AS parent, k.REFERENCED_COLUMN_NAME AS pcol,
            r.DELETE_RULE AS onDelete, r.UPDATE_RULE AS onUpdate
     FROM information_schema.KEY_COLUMN_USAGE k JOIN information_schema.REFERENTIAL_CONSTRAINTS r
       ON r.CONSTRAINT_SCHEMA = k.CONSTRAINT_SCHEMA AND r.CONSTRAINT_NAME = k.CONSTRAINT_NAME AND r.TABLE_NAME = k.TABLE_NAME
     WHERE k.TABLE_SCHEMA = ? AND k.REFERENCED_TABLE_SCHEMA = ? AND ${where === 'child' ? 'k.TABLE_NAME' : 'k.REFERENCED_TABLE_NAME'} = ?
     ORDER BY k.TABLE_NAME, k.CONSTRAINT_NAME, k.ORDINAL_POSITION`,
    [db, db, table],
  );
  const byName = new Map<string, Fk>();
  for (const r of rows as { name: string; tbl: string; col: string; parent: string; pcol: string; onDelete: string; onUpdate: string }[]) {
    const k = `${r.tbl}\u0000${r.name}`;
    const fk = byName.get(k) ?? { name: r.name, table: r.tbl, columns: [], parent: r.parent, parentColumns: [], onDelete: r.onDelete, onUpdate: r.onUpdate };
    fk.columns.push(r.col);
    fk.parentColumns.push(r.pcol);
    byName.set(k, fk);
  }
  return [...byName.values()];
}

function fkClause(fk: Fk, parent = fk.parent): string {
  return `CONSTRAINT ${quoteIdent(fk.name)} FOREIGN KEY (${fk.columns.map(quoteIdent).join(', ')}) REFERENCES ${quoteIdent(parent)} (${fk.parentColumns.map(quoteIdent).join(', ')}) ON DELETE ${fk.onDelete} ON UPDATE ${fk.onUpdate}`;
}

/** Rows of `child` whose foreign key finds no row in `parent` (a NULL column never does). */
async function orphans(c: MyConnection, fk: Fk, child: string, parent: string): Promise<number> {
  const join = fk.columns.map((col, i) => `p.${quoteIdent(fk.parentColumns[i])} = c.${quoteIdent(col)}`).join(' AND ');
  const notNull = fk.columns.map((col) => `c.${quoteIdent(col)} IS NOT NULL`).join(' AND ');
  const [rows] = await c.query(`SELECT count(*) AS n FROM ${quoteIdent(child)} c WHERE ${notNull} AND NOT EXISTS (SELECT 1 FROM ${quoteIdent(parent)} p WHERE ${join})`);
  return Number((rows as { n: number }[])[0].n);
}

async function triggersOf(c: MyConnection, db: string, table: string): Promise<{ name: string; sql: string }[]> {
  const [rows] = await c.query(`SELECT TRIGGER_NAME AS name FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? AND EVENT_OBJECT_TABLE = ? ORDER BY ACTION_ORDER`, [db, table]);
  const out: { name: string; sql: string }[] = [];
  for (const { name } of rows as { name: string }[]) {
    const [def] = await c.query(`SHOW CREATE TRIGGER ${quoteIdent(name)}`);
    out.push({ name, sql: (def as Record<string, string>[])[0]['SQL Original Statement'] });
  }
  return out;
}

export async function replaceImpact(target: Target, table: TableRef, _set: TableRef[], stamp: string): Promise<ReplaceImpact> {
  return withConnection(target, target.database, async (c) => {
    const db = target.database;
    const [exists] = await c.query(`SELECT 1 FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND TABLE_TYPE = 'BASE TABLE'`, [db, table.name]);
    if ((exists as unknown[]).length === 0) throw new UsageError(`${db} has no table ${table.name}: there is nothing to replace`, { hint: 'restore it beside the live tables (without --replace)' });
    const triggers = await triggersOf(c, db, table.name);
    const out = await foreignKeysOf(c, db, 'child', table.name);
    const inbound = (await foreignKeysOf(c, db, 'parent', table.name)).filter((f) => f.table !== table.name);
    const [views] = await c.query(`SELECT TABLE_NAME AS name FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? AND VIEW_DEFINITION LIKE ?`, [db, `%\`${table.name.replace(/[%_\\]/g, '\\$&')}\`%`]);
    return {
      follow: [
        ...(views as { name: string }[]).map((v) => `view ${v.name}: reads the restored table (MySQL views name their tables)`),
        ...triggers.map((t) => `trigger ${t.name}: re-created on the restored table`),
        ...out.map((f) => `foreign key ${f.name} → ${f.parent}: moved to the restored table, its rows checked first`),
        'AUTO_INCREMENT: the higher of the live and restored values',
        'indexes, columns and defaults: as in the backup',
      ],
      stay: [`the live table itself, kept as ${replacedName(table.name, stamp)} (without its triggers and foreign keys, which move)`],
      referencedBy: inbound.map((f) => `foreign key ${f.name} of ${f.table}`),
    };
  });
}

/**
 * MySQL cannot change tables in a transaction, so everything that can fail is checked first (the
 * restored rows against the foreign keys out of the table, the rows of the tables referencing it
 * against the restored rows); then one RENAME TABLE swaps the two tables atomically, and the
 * triggers and foreign keys are moved from the kept table to the restored one. A failure after the
 * swap is reported with what is left to do by hand.
 */
export async function replaceTables(target: Target, placed: PlacedTable[], stamp: string, opts: { cascade: boolean }): Promise<TableRef[]> {
  return withConnection(target, target.database, async (c) => {
    const db = target.database;
    const kept: TableRef[] = [];
    for (const p of placed) {
      const live = p.from.name;
      const restored = p.to.name;
      const keptName = replacedName(live, stamp);
      const triggers = await triggersOf(c, db, live);
      const out = await foreignKeysOf(c, db, 'child', live);
      const inbound = (await foreignKeysOf(c, db, 'parent', live)).filter((f) => f.table !== live);
      if (inbound.length > 0 && !opts.cascade) {
        throw new UsageError(`${live} is referenced by other tables (${inbound.map((f) => `${f.name} of ${f.table}`).join(', ')}): --replace refuses it`, {
          hint: 'run with --cascade-plan to re-point their foreign keys to the restored table',
        });
      }
      for (const fk of out) {
        const n = await orphans(c, fk, restored, fk.parent === live ? restored : fk.parent);
        if (n > 0) throw new RestoreError(`[mysql] ${n} restored row(s) of ${live} break foreign key ${fk.name} → ${fk.parent}; nothing was changed`, { hint: 'the restored table stays beside the live one; compare and copy rows back by hand' });
      }
      for (const fk of inbound) {
        const n = await orphans(c, fk, fk.table, restored);
        if (n > 0) throw new RestoreError(`[mysql] ${n} row(s) of ${fk.table} reference rows the restored ${live} does not hold (${fk.name}); nothing was changed`, { hint: 'the restored table stays beside the live one; compare and copy rows back by hand' });
      }
      const [auto] = await c.query(`SELECT AUTO_INCREMENT AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ?`, [db, live]);
      const counter = (auto as { n: number | null }[])[0]?.n;
      await c.query(`RENAME TABLE ${quoteIdent(live)} TO ${quoteIdent(keptName)}, ${quoteIdent(restored)} TO ${quoteIdent(live)}`);
      kept.push({ schema: 'main', name: keptName });
      const steps: string[] = [];
      try {
        await c.query('SET SESSION FOREIGN_KEY_CHECKS = 0');
        for (const t of triggers) {
          steps.push(`re-create trigger ${t.name} on ${live}`);
          await c.query(`DROP TRIGGER ${quoteIdent(t.name)}`);
          await c.query(t.sql);
          steps.pop();
        }
        // InnoDB renamed the kept table's generated key names (<table>_ibfk_<n>) along with it.
        const keptKeys = await foreignKeysOf(c, db, 'child', keptName);
        for (const fk of out) {
          steps.push(`add foreign key ${fk.name} to ${live}`);
          const same = keptKeys.find((k) => k.columns.join() === fk.columns.join() && k.parentColumns.join() === fk.parentColumns.join() && (k.parent === fk.parent || (fk.parent === live && k.parent === keptName)));
          if (same) await c.query(`ALTER TABLE ${quoteIdent(keptName)} DROP FOREIGN KEY ${quoteIdent(same.name)}`);
          const [has] = await c.query(`SELECT 1 FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = ?`, [db, live, fk.name]);
          if ((has as unknown[]).length === 0) await c.query(`ALTER TABLE ${quoteIdent(live)} ADD ${fkClause(fk, fk.parent === live ? live : fk.parent)}`);
          steps.pop();
        }
        for (const fk of inbound) {
          steps.push(`re-point foreign key ${fk.name} of ${fk.table} to ${live}`);
          // Two statements: MariaDB refuses to drop and add one constraint name in one ALTER.
          await c.query(`ALTER TABLE ${quoteIdent(fk.table)} DROP FOREIGN KEY ${quoteIdent(fk.name)}`);
          await c.query(`ALTER TABLE ${quoteIdent(fk.table)} ADD ${fkClause(fk, live)}`);
          steps.pop();
        }
        if (counter) await c.query(`ALTER TABLE ${quoteIdent(live)} AUTO_INCREMENT = ${Number(counter)}`);
      } catch (err) {
        throw new RestoreError(`[mysql] ${live} was swapped for the restored table (the old one is ${keptName}), but this step failed: ${steps[steps.length - 1]}: ${(err as Error).message}`, {
          hint: `finish it by hand, or swap back: RENAME TABLE \`${live}\` TO \`${restored}\`, \`${keptName}\` TO \`${live}\``,
          cause: err,
        });
      } finally {
        await c.query('SET SESSION FOREIGN_KEY_CHECKS = 1').catch(() => {});
      }
    }
    return kept;
  });
}
