// Single tables out of a PostgreSQL dump: which tables the dump holds (read from its table of
// contents and DDL, which sit at the head of the archive: only that much is read), a restore of
// some tables' data only (a pg_restore list with the other tables' data entries commented out:
// every table is still created, empty, so views, functions and foreign keys among the restored
// tables come out as in the source), moving restored tables beside the live ones (into a schema
// "dbstash_restored_<stamp>" of the target, through pg_dump | pg_restore --single-transaction), and
// reading a table's rows back with every value in its exact text: as cells through a cursor
// (show), or as lines the server renders itself, streamed out by COPY (export). Memory is
// bounded either way.

import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { RestoreError, UsageError } from '../../core/errors.js';
import type { Cell, DumpTable, PlacedTable, RenderedSource, RestoreOptions, RowFormat, RowSource, TableRef, Target } from '../engine.js';
import { feed } from '../feed.js';
import { describeExit, startTool } from '../process.js';
import { to as copyTo } from 'pg-copy-streams';
import { classifyPgError, closeOnAbort, connect, dbnameArg, libpqEnv, onDatabase, quoteIdent, quoteLiteral, restoreEnv, type PgClient } from './connection.js';
import { findPgTool } from './tools.js';

const IDENT = String.raw`(?:"(?:[^"]|"")+"|[^\s."(),;]+)`;
const QNAME = new RegExp(String.raw`(${IDENT})\.(${IDENT})`);

function unquote(ident: string): string {
  return ident.startsWith('"') ? ident.slice(1, -1).replace(/""/g, '"') : ident;
}

function qname(text: string): TableRef | undefined {
  const m = QNAME.exec(text);
  return m ? { schema: unquote(m[1]), name: unquote(m[2]) } : undefined;
}

const key = (t: TableRef) => `${t.schema}\u0000${t.name}`;

/** pg_restore --list lines of one kind: "<id>; <oid> <oid> <KIND> <schema> <name> <owner>". */
function listEntries(list: string, kind: string): { line: string; table: TableRef }[] {
  // "TABLE" is also how "TABLE DATA" and "TABLE ATTACH" begin.
  const re = new RegExp(`^\\d+; \\d+ \\d+ ${kind} (?!DATA |ATTACH )(\\S+) (.+) (\\S*)$`);
  const out: { line: string; table: TableRef }[] = [];
  for (const line of list.split('\n')) {
    const m = re.exec(line);
    if (m) out.push({ line, table: { schema: m[1], name: m[2] } });
  }
  return out;
}

/** The head of a custom-format dump: pg_restore's table of contents and the DDL it would run. */
export async function readHead(raw: Readable, signal: AbortSignal): Promise<{ list: string; ddl: string }> {
  const bin = (await findPgTool('pg_restore', 0)).path;
  const list = startTool(bin, ['--list'], { signal, stdin: 'pipe' });
  const ddl = startTool(bin, ['--schema-only', '--file=-'], { signal, stdin: 'pipe', bulkOutput: true });
  let listText = '';
  let ddlText = '';
  list.stdout.setEncoding('utf8').on('data', (d: string) => (listText += d));
  ddl.stdout.setEncoding('utf8').on('data', (d: string) => (ddlText += d));
  try {
    await feed(raw, [list.child.stdin, ddl.child.stdin], { untilUnread: true });
  } catch (err) {
    list.child.kill('SIGKILL');
    ddl.child.kill('SIGKILL');
    await Promise.all([list.exit, ddl.exit]);
    throw err;
  }
  const [a, b] = await Promise.all([list.exit, ddl.exit]);
  for (const [exit, what] of [[a, 'pg_restore --list'], [b, 'pg_restore --schema-only']] as const) {
    if (exit.code !== 0) throw new RestoreError(`[postgres] cannot read the dump's table of contents: ${describeExit(what, exit)}`);
  }
  return { list: listText, ddl: ddlText };
}

/** The tables of a dump with their partitions and inheritance children (from its head). */
export function tablesOfHead(head: { list: string; ddl: string }): DumpTable[] {
  const tables = new Map<string, DumpTable>();
  for (const { table } of listEntries(head.list, 'TABLE')) tables.set(key(table), { ...table, children: [] });
  let current: DumpTable | undefined;
  for (const line of head.ddl.split('\n')) {
    const create = /^CREATE (?:UNLOGGED )?TABLE (.+?) \($/.exec(line);
    if (create) {
      const t = qname(create[1]);
      current = t ? tables.get(key(t)) : undefined;
      continue;
    }
    if (/^(?:\) )?PARTITION BY /.test(line) && current) current.partitioned = true;
    const inherits = /^INHERITS \((.+)\);$/.exec(line);
    if (inherits && current) {
      for (const part of inherits[1].split(/,\s*/)) {
        const parent = qname(part);
        const p = parent && tables.get(key(parent));
        if (p) p.children.push({ schema: current.schema, name: current.name });
      }
    }
    const attach = new RegExp(String.raw`^ALTER TABLE ONLY (${IDENT}\.${IDENT}) ATTACH PARTITION (${IDENT}\.${IDENT}) `).exec(line);
    if (attach) {
      const [parent, child] = [qname(attach[1]), qname(attach[2])];
      const p = parent && tables.get(key(parent));
      if (p && child) p.children.push(child);
    }
  }
  for (const [k, to] of foreignKeys(head.ddl)) {
    const [schema, name, constraint] = k.split('\u0000');
    const t = tables.get(key({ schema, name }));
    if (t) (t.references ??= []).push({ constraint, table: to });
  }
  return [...tables.values()];
}

/** A directory-format artifact (pg_dump --jobs) is not read ahead: its tables come from the manifest. */
export async function dumpTables(raw: Readable, opts: RestoreOptions): Promise<{ tables: DumpTable[]; toc: Head } | undefined> {
  if (opts.format !== 'dump') return undefined;
  const head = await readHead(raw, opts.signal);
  return { tables: tablesOfHead(head), toc: head };
}

/** A dump's head: pg_restore --list and --schema-only of it. */
export interface Head {
  list: string;
  ddl: string;
}

export function isHead(toc: unknown): toc is Head {
  return typeof toc === 'object' && toc !== null && typeof (toc as Head).list === 'string' && typeof (toc as Head).ddl === 'string';
}

/** Foreign keys in a dump's DDL: "<schema>\0<table>\0<constraint>" → the table it references. */
function foreignKeys(ddl: string): Map<string, TableRef> {
  const re = new RegExp(String.raw`^ALTER TABLE (?:ONLY )?(${IDENT}\.${IDENT})\n\s+ADD CONSTRAINT (${IDENT}) FOREIGN KEY \([^)]*\) REFERENCES (${IDENT}\.${IDENT})\(`, 'gm');
  const out = new Map<string, TableRef>();
  for (const m of ddl.matchAll(re)) {
    const [from, to] = [qname(m[1]), qname(m[3])];
    if (from && to) out.set(`${key(from)}\u0000${unquote(m[2])}`, to);
  }
  return out;
}

/**
 * A pg_restore --use-list file that restores everything but the data of tables outside `only`,
 * the foreign keys from a restored table to one that stays empty (they would fail), the large
 * objects' data and materialized views' contents (refreshing them over partial data would be
 * wrong and slow). Every other table is created, empty.
 */
export async function writeOnlyList(head: { list: string; ddl: string }, only: TableRef[], dir: string): Promise<string> {
  const { list } = head;
  const wanted = new Set(only.map(key));
  const data = new Map(listEntries(list, 'TABLE DATA').map((e) => [e.line, e.table]));
  const fks = foreignKeys(head.ddl);
  const lines = list.split('\n').map((line) => {
    const table = data.get(line);
    if (table && !wanted.has(key(table))) return `;${line}`;
    const fk = /^\d+; \d+ \d+ FK CONSTRAINT (\S+) (\S+) (.+) \S*$/.exec(line);
    if (fk && wanted.has(key({ schema: fk[1], name: fk[2] }))) {
      const to = fks.get(`${fk[1]}\u0000${fk[2]}\u0000${fk[3]}`);
      if (!to || !wanted.has(key(to))) return `;${line}`;
    }
    if (/^\d+; \d+ \d+ (BLOBS|MATERIALIZED VIEW DATA) /.test(line)) return `;${line}`;
    return line;
  });
  const file = path.join(dir, 'only.list');
  await writeFile(file, lines.join('\n'), { mode: 0o600 });
  return file;
}

/** The schema restored tables are put in, beside the live ones. */
export function besideSchema(stamp: string): string {
  return `dbstash_restored_${stamp}`;
}

/**
 * besideSchema(stamp), or with _2, _3, … when the target already has it: two partial restores in
 * the same second (a script, or two people) must not meet in one schema.
 */
async function freeBesideSchema(target: Target, stamp: string, signal: AbortSignal): Promise<string> {
  const base = besideSchema(stamp);
  const taken = await onDatabase(
    target,
    async (c) => new Set((await c.query<{ nspname: string }>(`SELECT nspname FROM pg_namespace WHERE nspname = $1 OR nspname LIKE $2`, [base, `${base}\\_%`])).rows.map((r) => r.nspname)),
    signal,
  );
  if (!taken.has(base)) return base;
  for (let n = 2; ; n++) if (!taken.has(`${base}_${n}`)) return `${base}_${n}`;
}

/**
 * In `scratch`, moves the tables into the schema besideSchema(stamp), or the next free name
 * after it (their indexes, constraints
 * and owned sequences go with them), drops what would tie them to tables that were not restored
 * (foreign keys) or run code on them (triggers), then copies that schema into `target` with
 * pg_dump | pg_restore in one transaction.
 */
export async function placeBeside(
  scratch: Target,
  target: Target,
  tables: TableRef[],
  stamp: string,
  opts: { signal: AbortSignal; tempDir: string; noOwner?: boolean },
): Promise<PlacedTable[]> {
  const schema = await freeBesideSchema(target, stamp, opts.signal);
  const names = new Map<string, TableRef>();
  for (const t of tables) {
    const other = names.get(t.name);
    if (other) throw new UsageError(`${other.schema}.${t.name} and ${t.schema}.${t.name} would meet in one schema ${schema}`, { hint: 'restore them one at a time' });
    names.set(t.name, t);
  }
  const placed = await onDatabase(
    scratch,
    async (c) => {
      const oid = async (t: TableRef) => (await c.query<{ oid: number }>('SELECT $1::regclass::oid AS oid', [`${quoteIdent(t.schema)}.${quoteIdent(t.name)}`])).rows[0].oid;
      const oids = new Map<number, TableRef>();
      for (const t of tables) oids.set(await oid(t), t);
      const set = [...oids.keys()];
      const out: PlacedTable[] = [];
      await c.query(`CREATE SCHEMA ${quoteIdent(schema)}`);
      for (const [relid, t] of oids) {
        const left: string[] = [];
        const fks = await c.query<{ conname: string; ref: string }>(
          `SELECT conname, confrelid::regclass::text AS ref FROM pg_constraint
           WHERE conrelid = $1 AND contype = 'f' AND conparentid = 0 AND NOT (confrelid = ANY($2::oid[]))`,
          [relid, set],
        );
        for (const fk of fks.rows) {
          await c.query(`ALTER TABLE ${quoteIdent(t.schema)}.${quoteIdent(t.name)} DROP CONSTRAINT ${quoteIdent(fk.conname)}`);
          left.push(`foreign key ${fk.conname} → ${fk.ref} (not restored)`);
        }
        const triggers = await c.query<{ tgname: string }>(`SELECT tgname FROM pg_trigger WHERE tgrelid = $1 AND NOT tgisinternal AND tgparentid = 0`, [relid]);
        for (const tg of triggers.rows) {
          await c.query(`DROP TRIGGER ${quoteIdent(tg.tgname)} ON ${quoteIdent(t.schema)}.${quoteIdent(t.name)}`);
          left.push(`trigger ${tg.tgname}`);
        }
        const key = await c.query<{ name: string }>(
          `SELECT a.attname AS name FROM pg_index i JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, n) ON true
           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum WHERE i.indrelid = $1 AND i.indisprimary ORDER BY k.n`,
          [relid],
        );
        await c.query(`ALTER TABLE ${quoteIdent(t.schema)}.${quoteIdent(t.name)} SET SCHEMA ${quoteIdent(schema)}`);
        out.push({ from: t, to: { schema, name: t.name }, left, key: key.rows.length > 0 ? key.rows.map((r) => r.name) : undefined });
      }
      return out;
    },
    opts.signal,
  );
  const dumpBin = (await findPgTool('pg_dump', 0, scratch.options.binDir)).path;
  const restoreBin = (await findPgTool('pg_restore', 0, target.options.binDir)).path;
  const dump = startTool(dumpBin, ['--format=custom', '--compress=0', '--no-password', `--schema=${schema}`, `--dbname=${dbnameArg(scratch.database)}`], {
    env: libpqEnv(scratch),
    signal: opts.signal,
    bulkOutput: true,
  });
  const args = ['--no-password', '--exit-on-error', '--single-transaction', `--dbname=${dbnameArg(target.database)}`, ...(opts.noOwner ? ['--no-owner'] : [])];
  const load = startTool(restoreBin, args, { env: restoreEnv(target), signal: opts.signal, stdin: 'pipe' });
  load.stdout.resume();
  dump.stdout.pipe(load.child.stdin);
  load.child.stdin.on('error', () => dump.child.kill('SIGKILL'));
  const [dumped, loaded] = await Promise.all([dump.exit, load.exit]);
  if (dumped.code !== 0) throw new RestoreError(`[postgres] copying the restored tables out of ${scratch.database}: ${describeExit('pg_dump', dumped)}`);
  if (loaded.code !== 0) throw new RestoreError(`[postgres] putting the restored tables into ${target.database} (nothing was changed there): ${describeExit('pg_restore', loaded)}`);
  return placed;
}

const NUMBER_TYPES = new Set([20, 21, 23, 26, 700, 701, 1700]);
const JSON_TYPES = new Set([114, 3802]);

/** A PostgreSQL value's text output as a Cell (DateStyle ISO, TimeZone UTC, IntervalStyle iso_8601). */
function toCell(text: string | null, type: number): Cell {
  if (text === null) return null;
  if (type === 16) return text === 't';
  if (NUMBER_TYPES.has(type)) return { number: text };
  if (JSON_TYPES.has(type)) return { json: text };
  if (type === 17) return Buffer.from(text.slice(2), 'hex');
  if (type === 1184 || type === 1114) {
    const m = /^(\d{4,}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)(\+00)?$/.exec(text);
    return m ? { time: `${m[1]}T${m[2]}${m[3] ? 'Z' : ''}` } : text; // infinity, BC dates: as the server writes them
  }
  return text;
}

/** Rows per FETCH: two batches in memory at a time (one rendered, one on its way). */
const FETCH_ROWS = 500;

interface Column {
  name: string;
  type: string;
  /** The type's oid, through any domains to the base type (as the server reports it in a result). */
  oid: number;
  category: string;
}

/** Arrays, composites and ranges have no JSON number or string of their own: they go out as JSON. */
const AS_JSON = new Set(['A', 'C', 'R']);

type Batch = { rows: (string | null)[][]; fields: { dataTypeID: number }[] };

interface Cursor {
  columns: Column[];
  /** The next batch of rows, each value in its text form (no parsing in the driver). */
  fetch(): Promise<Batch>;
  close(): Promise<void>;
}

/** What every value's text relies on: UTC, ISO dates, ISO 8601 intervals, floats to their exact digits, bytea in hex. */
const SESSION_SETTINGS = `SET TIME ZONE 'UTC'; SET DateStyle = ISO; SET IntervalStyle = iso_8601; SET extra_float_digits = 3; SET bytea_output = hex; SET standard_conforming_strings = on`;

/** The table's columns, in order, with each one's type seen through any domains. */
async function columnsOf(client: PgClient, table: TableRef): Promise<Column[]> {
  const rel = `${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
  const cols = await client.query<Column>(
    `WITH RECURSIVE c AS (
       SELECT a.attnum, a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, a.atttypid AS base
       FROM pg_attribute a WHERE a.attrelid = $1::regclass AND a.attnum > 0 AND NOT a.attisdropped
       UNION ALL
       SELECT c.attnum, c.name, c.type, t.typbasetype FROM c JOIN pg_type t ON t.oid = c.base WHERE t.typtype = 'd')
     SELECT c.name, c.type, c.base::int AS oid, t.typcategory AS category
     FROM c JOIN pg_type t ON t.oid = c.base WHERE t.typtype <> 'd' ORDER BY c.attnum`,
    [rel],
  );
  return cols.rows;
}

/** The FROM clause: the table, with the condition and the limit. */
function sourceOf(table: TableRef, opts: { where?: string; limit?: number }): string {
  return `${quoteIdent(table.schema)}.${quoteIdent(table.name)}${opts.where ? ` WHERE ${opts.where}` : ''}${opts.limit !== undefined ? ` LIMIT ${opts.limit}` : ''}`;
}

function whereError(table: TableRef, opts: { where?: string }, err: Error): UsageError {
  return new UsageError(`cannot read ${table.schema}.${table.name}${opts.where ? ` where ${opts.where}` : ''}: ${err.message}`, { hint: opts.where ? 'check the --where condition (SQL, as in a WHERE clause)' : undefined });
}

/**
 * A connection to `target` in SESSION_SETTINGS, with `table`'s columns, handed to `open` with its
 * close() (which closes once); closed at once if `open` fails. With `abortCloses`, an abort of
 * `signal` also closes its socket while it is in use.
 */
async function openSession<T>(target: Target, table: TableRef, signal: AbortSignal, abortCloses: boolean, open: (client: PgClient, columns: Column[], close: () => Promise<void>) => Promise<T>): Promise<T> {
  const client = await connect(target, target.database, signal).catch((err: unknown) => {
    throw classifyPgError(err, target);
  });
  const unhook = abortCloses ? closeOnAbort(client, signal) : () => {};
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    unhook();
    await client.end().catch(() => {});
  };
  try {
    await client.query(SESSION_SETTINGS);
    return await open(client, await columnsOf(client, table), close);
  } catch (err) {
    await close();
    throw err instanceof UsageError ? err : classifyPgError(err, target);
  }
}

/** A read-only snapshot of `table` with a cursor over `select(columns, source)`, in SESSION_SETTINGS. */
async function openCursor(target: Target, table: TableRef, opts: { where?: string; limit?: number; signal: AbortSignal }, select: (columns: Column[], source: string) => string): Promise<Cursor> {
  return openSession(target, table, opts.signal, false, async (client, columns, close) => {
    await client.query('BEGIN TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY');
    await client.query(`DECLARE dbstash_rows NO SCROLL CURSOR FOR ${select(columns, sourceOf(table, opts))}`).catch((err: Error) => {
      throw whereError(table, opts, err);
    });
    const raw = { getTypeParser: () => (v: string) => v };
    const fetch = () => client.query({ text: `FETCH ${FETCH_ROWS} FROM dbstash_rows`, rowMode: 'array', types: raw as never }) as unknown as Promise<Batch>;
    return { columns, fetch, close };
  });
}

/** Every batch of the cursor, the next one asked for before this one is used: the server reads while Node writes. */
async function* batches<T>(cursor: Cursor, use: (batch: Batch) => T): AsyncGenerator<T> {
  let pending: Promise<Batch> | undefined = cursor.fetch();
  try {
    while (pending) {
      const batch: Batch = await pending;
      pending = batch.rows.length < FETCH_ROWS ? undefined : cursor.fetch();
      yield use(batch);
    }
  } finally {
    await pending?.catch(() => {});
    await cursor.close();
  }
}

/** The table's rows through a cursor, FETCH_ROWS at a time, in one read-only transaction. */
export async function readRows(target: Target, table: TableRef, opts: { where?: string; limit?: number; signal: AbortSignal }): Promise<RowSource> {
  const cursor = await openCursor(target, table, opts, (columns, source) => `SELECT ${columns.map((c) => (AS_JSON.has(c.category) ? `to_json(${quoteIdent(c.name)})` : quoteIdent(c.name))).join(', ') || 'NULL'} FROM ${source}`);
  async function* rows(): AsyncGenerator<Cell[]> {
    for await (const cells of batches(cursor, (batch) => {
      const types = batch.fields.map((f) => f.dataTypeID);
      return batch.rows.map((r) => r.map((v, i) => toCell(v, types[i])));
    })) yield* cells;
  }
  return { columns: cursor.columns.map((c) => ({ name: c.name, type: c.type })), rows: rows(), close: cursor.close };
}

// The server renders each line itself, to the very text tables/render.ts makes of toCell's cells
// (test/tables/postgres.test.ts compares the two on every kind of value): numbers as their digits
// (NaN and infinities as strings), JSON as its own text, bytea as base64, timestamps as ISO 8601
// with "Z" in UTC, arrays, composites and ranges as JSON, everything else as its output text.
// Every value then stays inside the server's C code: Node handles one string per row.

const JSON_NUMBER_SQL = String.raw`'^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$'`;
const ISO_TIME_SQL = String.raw`'^[0-9]{4,}-[0-9][0-9]-[0-9][0-9] [0-9][0-9]:[0-9][0-9]:[0-9][0-9](\.[0-9]+)?(\+00)?$'`;
/** What render.ts counts as blank at a CSV field's ends. */
const CSV_BLANKS_SQL = String.raw`(' ', E'\t', E'\n', E'\x0B', E'\f', E'\r')`;

type Kind = 'bool' | 'int' | 'decimal' | 'json' | 'bytea' | 'time' | 'text';

function kindOf(c: Column): Kind {
  if (AS_JSON.has(c.category) || JSON_TYPES.has(c.oid)) return 'json';
  if (c.oid === 16) return 'bool';
  if (c.oid === 20 || c.oid === 21 || c.oid === 23 || c.oid === 26) return 'int';
  if (NUMBER_TYPES.has(c.oid)) return 'decimal';
  if (c.oid === 17) return 'bytea';
  if (c.oid === 1184 || c.oid === 1114) return 'time';
  return 'text';
}

/**
 * Types whose cast to text is their output function (or no conversion at all): text, varchar,
 * the numbers, the times, uuid. Every other type goes through format(), which calls the output
 * function as the driver's text does, where a cast to text might not (char(n) loses its padding,
 * inet gains a netmask, an extension may define its own cast).
 */
const TEXT_BY_CAST = new Set([25, 1043, 20, 21, 23, 26, 700, 701, 1700, 1082, 1083, 1114, 1184, 1186, 1266, 2950]);

/** A value's text, NULL for NULL (the inner query's column). */
function textOf(c: Column, kind: Kind): string {
  const v = quoteIdent(c.name);
  switch (kind) {
    case 'bool':
      return `CASE WHEN ${v} THEN 'true' WHEN NOT ${v} THEN 'false' END`;
    case 'json':
      return AS_JSON.has(c.category) ? `to_json(${v})::text` : `${v}::text`;
    case 'bytea':
      // replace(), not translate(): the same result here at a quarter of the time.
      return String.raw`replace(encode(${v}, 'base64'), E'\n', '')`;
    default:
      if (c.oid === 25 || c.oid === 1043) return v;
      return TEXT_BY_CAST.has(c.oid) ? `${v}::text` : `CASE WHEN ${v} IS NOT NULL THEN format('%s', ${v}) END`;
  }
}

/** The text of a value from the inner query's column `t` (render.ts's csvText of its cell). */
function outputText(t: string, kind: Kind): string {
  return kind === 'time' ? `CASE WHEN ${t} ~ ${ISO_TIME_SQL} THEN replace(replace(${t}, ' ', 'T'), '+00', 'Z') ELSE ${t} END` : t;
}

function jsonOf(t: string, kind: Kind): string {
  switch (kind) {
    case 'bool':
    case 'int':
    case 'json':
      return `COALESCE(${t}, 'null')`;
    case 'decimal':
      return `CASE WHEN ${t} IS NULL THEN 'null' WHEN ${t} ~ ${JSON_NUMBER_SQL} THEN ${t} ELSE to_json(${t})::text END`;
    case 'bytea':
      return `COALESCE('"' || ${t} || '"', 'null')`;
    default:
      return `COALESCE(to_json(${outputText(t, kind)})::text, 'null')`;
  }
}

function csvOf(t: string, kind: Kind): string {
  const text = outputText(t, kind);
  const x = kind === 'time' ? `(${text})` : text;
  return String.raw`CASE WHEN ${t} IS NULL THEN '' WHEN ${x} = '' OR strpos(${x}, '"') > 0 OR strpos(${x}, ',') > 0 OR strpos(${x}, E'\r') > 0 OR strpos(${x}, E'\n') > 0 OR left(${x}, 1) IN ${CSV_BLANKS_SQL} OR right(${x}, 1) IN ${CSV_BLANKS_SQL} THEN '"' || replace(${x}, '"', '""') || '"' ELSE ${x} END`;
}

/**
 * The data of COPY … (FORMAT binary) of one text column, without the format's framing: the
 * signature and header, each row's field count and length, the trailer. Each row's text is
 * passed on as it arrives, whole or in parts; `rows` counts the rows ended so far.
 */
export class CopyTextRows {
  rows = 0;
  private header = true;
  /** Bytes still to come of the current row's text. */
  private left = 0;
  /** A frame (header, or a row's count and length) split across chunks. */
  private carry: Buffer = Buffer.alloc(0);
  ended = false;

  /** The text bytes in `chunk`. */
  take(chunk: Buffer): Buffer {
    const out: Buffer[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.left > 0) {
        const n = Math.min(this.left, chunk.length - at);
        out.push(chunk.subarray(at, at + n));
        at += n;
        this.left -= n;
        if (this.left === 0) this.rows++;
        continue;
      }
      if (this.ended) throw new Error('COPY data after its trailer');
      // A frame: the 19-byte header (signature, flags, extension length) or a row's 6 bytes.
      const need = this.header ? 19 : this.carry.length >= 2 && this.carry.readInt16BE(0) === -1 ? 2 : 6;
      const n = Math.min(need - this.carry.length, chunk.length - at);
      this.carry = Buffer.concat([this.carry, chunk.subarray(at, at + n)]);
      at += n;
      if (this.carry.length >= 2 && !this.header && this.carry.readInt16BE(0) === -1) {
        this.ended = true;
        this.carry = Buffer.alloc(0);
        continue;
      }
      if (this.carry.length < need) continue;
      if (this.header) {
        if (!this.carry.subarray(0, 11).equals(COPY_SIGNATURE) || this.carry.readInt32BE(15) !== 0) throw new Error('not a binary COPY stream this reader knows');
        this.header = false;
      } else {
        const fields = this.carry.readInt16BE(0);
        const length = this.carry.readInt32BE(2);
        if (fields !== 1 || length < 0) throw new Error(`a COPY row of ${fields} field(s), length ${length}: expected one line of text`);
        this.left = length;
        if (length === 0) this.rows++;
      }
      this.carry = Buffer.alloc(0);
    }
    return out.length === 1 ? out[0] : Buffer.concat(out);
  }
}

const COPY_SIGNATURE = Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1');

/**
 * One line of `format` per row, rendered by the server (see above) and streamed out through COPY:
 * the bytes go from the socket to the sink without a string or an object per row.
 */
export async function readRendered(target: Target, table: TableRef, opts: { format: RowFormat; where?: string; limit?: number; signal: AbortSignal }): Promise<RenderedSource> {
  return openSession(target, table, opts.signal, true, async (client, columns, close) => {
    const kinds = columns.map(kindOf);
    const inner = columns.map((c, i) => `${textOf(c, kinds[i])} AS t${i}`).join(', ') || 'NULL';
    const line =
      opts.format === 'jsonl'
        ? `'{' || ${columns.map((c, i) => `${quoteLiteral(`${JSON.stringify(c.name)}:`)} || ${jsonOf(`t${i}`, kinds[i])}`).join(` || ',' || `) || `''`} || E'}\\n'`
        : `${columns.map((_, i) => csvOf(`t${i}`, kinds[i])).join(` || ',' || `) || `''`} || E'\\r\\n'`;
    const select = `SELECT ${line} FROM (SELECT ${inner} FROM ${sourceOf(table, opts)}) r`;
    // Planned first, so that a condition that does not parse is the user's error, said as such.
    await client.query(`EXPLAIN ${select}`).catch((err: Error) => {
      throw whereError(table, opts, err);
    });
    const stream = copyTo(`COPY (${select}) TO STDOUT (FORMAT binary)`);
    client.query(stream);
    async function* pieces(): AsyncGenerator<{ bytes: Buffer; rows: number }> {
      const frames = new CopyTextRows();
      try {
        for await (const chunk of stream) {
          const before = frames.rows;
          const bytes = frames.take(chunk as Buffer);
          yield { bytes, rows: frames.rows - before };
        }
        if (!frames.ended || frames.rows !== stream.rowCount) throw new Error(`COPY ended after ${frames.rows} row(s), the server sent ${stream.rowCount}`);
      } catch (err) {
        throw opts.signal.aborted ? opts.signal.reason : err;
      } finally {
        stream.destroy();
        await close();
      }
    }
    return { columns: columns.map((c) => ({ name: c.name, type: c.type })), pieces: pieces(), close };
  });
}
