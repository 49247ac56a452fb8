// Moving the contents of MySQL/MariaDB databases to other names — renameDatabase() and
// swapDatabases() — since MySQL has no RENAME DATABASE. All or nothing:
//
//   1. capture: every table (of every type: base, system-versioned, sequence, …), view, trigger,
//      routine (procedures, functions, packages) and event of each source, with the session
//      settings each object was created with (character_set_client, collation_connection,
//      sql_mode, definer, security type, database collation) and its SHOW CREATE text as the
//      bytes it was written in (character_set_results = binary);
//   2. check before anything moves: the privileges the move needs, the right to give every
//      object its definer (SET USER or SUPER, unless the definer is the current user), readable
//      definitions and valid views; a refusal says that nothing moved;
//   3. move: triggers, views and routines are dropped at the source; events move with
//      ALTER EVENT … RENAME; every table moves in one atomic RENAME TABLE (a swap moves the old
//      tables out and the restored ones in within the same statement); the database properties
//      follow; views, triggers and routines are re-created at the destination, each in a session
//      with its own settings, from its original bytes (sent unchanged over a binary connection);
//   4. check: each destination must hold exactly what its source held, setting for setting, and
//      a source that is not also a destination must be empty before it is dropped.
//
// Each step records how to undo it; any failure undoes every step taken, in reverse, on a fresh
// connection, and the error names the databases and says where everything is.

import { format, type SqlValue } from 'mysql2';
import { DbstashError, RestoreError } from '../../core/errors.js';
import { withDatabase, type Target } from '../engine.js';
import { classifyMyError, connect, globalPrivileges, quoteIdent, type MyConnection } from './connection.js';
import { propertyClauses, propertyDifferences, type MyDatabaseProperties } from './properties.js';

/** Global privileges a move needs (MySQL checks RENAME TABLE, CREATE VIEW, … against these). */
export const MOVE_PRIVILEGES = ['CREATE', 'DROP', 'ALTER', 'INSERT', 'CREATE VIEW', 'TRIGGER', 'CREATE ROUTINE', 'ALTER ROUTINE', 'EVENT', 'SELECT', 'SHOW VIEW'];
/** Any of these lets the user give an object another user as its definer. */
const DEFINER_PRIVILEGES = ['ALL PRIVILEGES', 'SUPER', 'SET USER', 'SET_USER_ID', 'SET_ANY_DEFINER'];
/** Seconds a move waits for a table another session holds (lock_wait_timeout) before it gives up. */
const MOVE_LOCK_WAIT_S = 30;
/** Table types RENAME TABLE does not move (views are re-created; the rest are not the database's). */
const UNMOVED_TYPES = ['VIEW', 'SYSTEM VIEW', 'TEMPORARY'];

type ObjectKind = 'VIEW' | 'TRIGGER' | 'PROCEDURE' | 'FUNCTION' | 'PACKAGE' | 'PACKAGE BODY' | 'EVENT';

interface StoredObject {
  kind: ObjectKind;
  name: string;
  /** SHOW CREATE output in the object's own character_set_client; null when the server hid it. */
  create: Buffer | null;
  characterSetClient: string;
  collationConnection: string;
  definer: string;
  sqlMode?: string;
  securityType?: string;
  databaseCollation?: string;
  timeZone?: string;
  status?: string;
  /** A view the server reports as invalid (it cannot be re-created). */
  invalid?: string;
}

interface Contents {
  database: string;
  properties: MyDatabaseProperties;
  tables: { name: string; type: string }[];
  /** In creation order: routines (package before body), views, triggers (by table and order), events. */
  objects: StoredObject[];
}

/** A swap or rename: each source's contents go to its destination; `drop` sources end up removed. */
interface MovePlan {
  moves: { from: string; to: string; create: boolean }[];
  drop: string[];
  /** "swapping shop and shop_restoring_…" — for messages. */
  what: string;
  /** Where things are when nothing moved (the refusal and a complete rollback). */
  unchanged: string;
}

/** Test hook: called after each step; a throw there fails the move at that point. */
export interface MoveHooks {
  afterStep?(step: string): void | Promise<void>;
}

const rowsOf = (r: unknown) => (r as [Record<string, unknown>[]])[0];
const str = (v: unknown): string => (Buffer.isBuffer(v) ? v.toString('utf8') : v === null || v === undefined ? '' : String(v));

/**
 * A session whose query text reaches the server byte for byte (connect()'s `raw`: the driver
 * sends one byte per character code). SQL written here is UTF-8 (and the session's
 * character_set_client says so); an object's definition is sent as its own bytes.
 */
class RawSession {
  private neutralMode = '';
  private constructor(readonly conn: MyConnection) {}

  /**
   * `lockWaitS`: how long a statement may wait for a table another session holds. A RENAME TABLE
   * that waits also holds up every new query of that table, so the move gives up early; undoing
   * it waits as long as the server allows.
   */
  static async open(target: Target, lockWaitS?: number): Promise<RawSession> {
    const s = new RawSession(await connect(target, null, undefined, { raw: true }));
    try {
      // Statements are formatted with backslash escapes: the session must read them so.
      const mode = str((await s.rows('SELECT @@SESSION.sql_mode AS m'))[0].m);
      s.neutralMode = mode.split(',').filter((m) => m !== 'NO_BACKSLASH_ESCAPES').join(',');
      await s.plain(lockWaitS);
      return s;
    } catch (err) {
      await s.close();
      throw err;
    }
  }

  async rows(sql: string, params?: SqlValue[]): Promise<Record<string, unknown>[]> {
    return rowsOf(await this.conn.query(Buffer.from(params ? format(sql, params) : sql, 'utf8').toString('latin1')));
  }

  async run(sql: string, params?: SqlValue[]): Promise<void> {
    await this.rows(sql, params);
  }

  /**
   * Runs `read` with results as raw bytes (character_set_results = binary): SHOW CREATE then gives
   * each definition as the object's own client character set wrote it. Every text column comes
   * as bytes meanwhile (str() reads them as the UTF-8 the server stores names in). One switch for
   * a whole read, not two per definition: each round trip costs a query's latency.
   */
  async binaryResults<T>(read: () => Promise<T>): Promise<T> {
    await this.run('SET character_set_results = binary');
    try {
      return await read();
    } finally {
      await this.run('SET character_set_results = utf8mb4');
    }
  }

  /** SHOW CREATE … inside binaryResults(); `warnings`: also the warnings it raised (a view's 1356, invalid). */
  async showCreate(sql: string, column: number, opts: { warnings?: boolean } = {}): Promise<{ create: Buffer | null; warnings: string[] }> {
    const [rows] = await this.conn.query({ sql: Buffer.from(sql, 'utf8').toString('latin1'), rowsAsArray: true });
    const value = (rows as unknown[][])[0]?.[column];
    const warnings = opts.warnings ? rowsOf(await this.conn.query('SHOW WARNINGS')).map((w) => `${str(w.Code)}: ${str(w.Message)}`) : [];
    return { create: value === null || value === undefined ? null : Buffer.isBuffer(value) ? value : Buffer.from(String(value), 'utf8'), warnings };
  }

  /** Runs an object's definition in a session with the object's own settings. */
  async create(database: string, obj: StoredObject, statement: Buffer): Promise<void> {
    await this.run(`USE ${quoteIdent(database)}`);
    await this.settings(obj);
    try {
      await this.conn.query(statement.toString('latin1'));
    } finally {
      await this.plain();
    }
  }

  async settings(obj: StoredObject): Promise<void> {
    const sets = ['character_set_client = ?', 'collation_connection = ?'];
    const values: SqlValue[] = [obj.characterSetClient, obj.collationConnection];
    if (obj.sqlMode !== undefined) (sets.push('sql_mode = ?'), values.push(obj.sqlMode));
    if (obj.timeZone !== undefined) (sets.push('time_zone = ?'), values.push(obj.timeZone));
    await this.run(`SET ${sets.join(', ')}`, values);
  }

  /** Back to the session dbstash's own statements are written for, in one statement (at open: with the lock wait). */
  async plain(lockWaitS?: number): Promise<void> {
    const lockWait = lockWaitS ? `, SESSION lock_wait_timeout = ${Number(lockWaitS)}` : '';
    await this.run(`SET NAMES utf8mb4 COLLATE utf8mb4_general_ci, sql_mode = ?, time_zone = '+00:00'${lockWait}`, [this.neutralMode]);
  }

  async close(): Promise<void> {
    await this.conn.end().catch(() => this.conn.destroy());
  }
}

function objectKey(o: StoredObject): string {
  return `${o.kind.toLowerCase()} ${o.name}`;
}

function qualified(database: string, name: string): string {
  return `${quoteIdent(database)}.${quoteIdent(name)}`;
}

/** 'user'@'host' (or a role) for a DEFINER clause, from information_schema's user@host. */
function definerClause(definer: string): string {
  const at = definer.lastIndexOf('@');
  if (at < 0) return quoteIdent(definer);
  return `${format('?', [definer.slice(0, at)])}@${format('?', [definer.slice(at + 1)])}`;
}

async function readContents(s: RawSession, database: string): Promise<Contents | undefined> {
  const schema = (await s.rows(`SELECT * FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?`, [database]))[0];
  if (!schema) return undefined;
  const properties: MyDatabaseProperties = { characterSet: str(schema.DEFAULT_CHARACTER_SET_NAME), collation: str(schema.DEFAULT_COLLATION_NAME) };
  if (schema.SCHEMA_COMMENT !== undefined && schema.SCHEMA_COMMENT !== null) properties.comment = str(schema.SCHEMA_COMMENT);
  await s.run(`USE ${quoteIdent(database)}`);
  return s.binaryResults(() => readObjects(s, database, properties));
}

/** The tables and stored objects of `database`, the session's default database, inside binaryResults(). */
async function readObjects(s: RawSession, database: string, properties: MyDatabaseProperties): Promise<Contents> {
  const tables = (
    await s.rows(
      `SELECT TABLE_NAME AS name, TABLE_TYPE AS type FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE NOT IN (?) ORDER BY BINARY TABLE_NAME`,
      [database, UNMOVED_TYPES],
    )
  ).map((r) => ({ name: str(r.name), type: str(r.type) }));
  const objects: StoredObject[] = [];
  const routines = await s.rows(
    `SELECT ROUTINE_NAME AS name, ROUTINE_TYPE AS kind, SQL_MODE AS sqlMode, SECURITY_TYPE AS securityType, DEFINER AS definer,
       CHARACTER_SET_CLIENT AS cs, COLLATION_CONNECTION AS co, DATABASE_COLLATION AS dbco
     FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? ORDER BY ROUTINE_TYPE = 'PACKAGE BODY', BINARY ROUTINE_NAME, ROUTINE_TYPE`,
    [database],
  );
  for (const r of routines) {
    const kind = str(r.kind) as ObjectKind;
    const { create } = await s.showCreate(`SHOW CREATE ${kind} ${quoteIdent(str(r.name))}`, 2);
    objects.push({
      kind, name: str(r.name), create, characterSetClient: str(r.cs), collationConnection: str(r.co), definer: str(r.definer),
      sqlMode: str(r.sqlMode), securityType: str(r.securityType), databaseCollation: str(r.dbco),
    });
  }
  const views = await s.rows(
    `SELECT TABLE_NAME AS name, DEFINER AS definer, SECURITY_TYPE AS securityType, CHARACTER_SET_CLIENT AS cs, COLLATION_CONNECTION AS co
     FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ? ORDER BY BINARY TABLE_NAME`,
    [database],
  );
  for (const v of views) {
    // With this database as the default one, SHOW CREATE VIEW leaves its tables unqualified.
    const { create, warnings } = await s.showCreate(`SHOW CREATE VIEW ${quoteIdent(str(v.name))}`, 1, { warnings: true });
    const invalid = warnings.find((w) => w.startsWith('1356:'));
    objects.push({
      kind: 'VIEW', name: str(v.name), create, characterSetClient: str(v.cs), collationConnection: str(v.co), definer: str(v.definer),
      securityType: str(v.securityType), ...(invalid ? { invalid: invalid.slice(6) } : {}),
    });
  }
  const triggers = await s.rows(
    `SELECT TRIGGER_NAME AS name, SQL_MODE AS sqlMode, DEFINER AS definer, CHARACTER_SET_CLIENT AS cs, COLLATION_CONNECTION AS co, DATABASE_COLLATION AS dbco
     FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ? ORDER BY BINARY EVENT_OBJECT_TABLE, EVENT_MANIPULATION, ACTION_TIMING, ACTION_ORDER`,
    [database],
  );
  for (const t of triggers) {
    const { create } = await s.showCreate(`SHOW CREATE TRIGGER ${quoteIdent(str(t.name))}`, 2);
    objects.push({
      kind: 'TRIGGER', name: str(t.name), create, characterSetClient: str(t.cs), collationConnection: str(t.co), definer: str(t.definer),
      sqlMode: str(t.sqlMode), databaseCollation: str(t.dbco),
    });
  }
  const events = await s.rows(
    `SELECT EVENT_NAME AS name, DEFINER AS definer, TIME_ZONE AS tz, SQL_MODE AS sqlMode, CHARACTER_SET_CLIENT AS cs, COLLATION_CONNECTION AS co,
       DATABASE_COLLATION AS dbco, STATUS AS status
     FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ? ORDER BY BINARY EVENT_NAME`,
    [database],
  );
  for (const e of events) {
    const { create } = await s.showCreate(`SHOW CREATE EVENT ${quoteIdent(str(e.name))}`, 3);
    objects.push({
      kind: 'EVENT', name: str(e.name), create, characterSetClient: str(e.cs), collationConnection: str(e.co), definer: str(e.definer),
      sqlMode: str(e.sqlMode), timeZone: str(e.tz), databaseCollation: str(e.dbco), status: str(e.status),
    });
  }
  return { database, properties, tables, objects };
}

function isEmpty(c: Contents): boolean {
  return c.tables.length === 0 && c.objects.length === 0;
}

/**
 * What `database` still holds, read in full only when one question (one round trip, against the
 * nine of readContents) finds anything in it: tables and views, routines, events. Triggers are
 * not asked for: each belongs to a table, and information_schema.TRIGGERS takes ~2 ms even for
 * an empty database. Undefined when the database does not exist or holds nothing.
 */
async function leftIn(s: RawSession, database: string): Promise<Contents | undefined> {
  const [row] = await s.rows(
    `SELECT (SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?) AS present,
       (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?) + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ?)
       + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?) AS held`,
    [database, database, database, database],
  );
  if (Number(row.present) === 0 || Number(row.held) === 0) return undefined;
  return readContents(s, database);
}

const PLURAL: Record<string, string> = { 'package body': 'package bodies' };

/** "holds 3 tables, 1 view, 2 triggers" — what a database holds, for messages. */
function summary(c: Contents | undefined): string {
  if (!c) return 'does not exist';
  if (isEmpty(c)) return 'is empty';
  const counts = new Map<string, number>(['table', 'view', 'trigger', 'procedure', 'function', 'package', 'package body', 'event'].map((k) => [k, 0]));
  counts.set('table', c.tables.length);
  for (const o of c.objects) counts.set(o.kind.toLowerCase(), counts.get(o.kind.toLowerCase())! + 1);
  const parts = [...counts].filter(([, n]) => n > 0).map(([kind, n]) => `${n} ${n === 1 ? kind : (PLURAL[kind] ?? `${kind}s`)}`);
  return `holds ${parts.join(', ')}`;
}

/** What `actual` lacks or has otherwise than `expected`, one line each (the check after a move). */
function contentDifferences(expected: Contents, actual: Contents): string[] {
  const out: string[] = [];
  const tableKey = (t: { name: string; type: string }) => `${t.type.toLowerCase()} ${t.name}`;
  const want = new Set(expected.tables.map(tableKey));
  const got = new Set(actual.tables.map(tableKey));
  for (const t of want) if (!got.has(t)) out.push(`${t} is missing`);
  for (const t of got) if (!want.has(t)) out.push(`${t} should not be there`);
  const gotObjects = new Map(actual.objects.map((o) => [objectKey(o), o]));
  for (const o of expected.objects) {
    const a = gotObjects.get(objectKey(o));
    gotObjects.delete(objectKey(o));
    if (!a) {
      out.push(`${objectKey(o)} is missing`);
      continue;
    }
    for (const field of ['characterSetClient', 'collationConnection', 'sqlMode', 'definer', 'securityType', 'databaseCollation', 'timeZone', 'status'] as const) {
      if (o[field] !== a[field]) out.push(`${objectKey(o)}: ${field} ${JSON.stringify(a[field])}, was ${JSON.stringify(o[field])}`);
    }
    if (o.create && a.create && !o.create.equals(a.create)) out.push(`${objectKey(o)}: its definition differs from the original`);
  }
  for (const o of gotObjects.values()) out.push(`${objectKey(o)} should not be there`);
  return out;
}

/** Everything that would stop the move half-way, found before anything moves. */
async function preflight(s: RawSession, plan: MovePlan, sources: Contents[]): Promise<string[]> {
  const problems: string[] = [];
  const privileges = await globalPrivileges(s.conn);
  if (!privileges.has('ALL PRIVILEGES')) {
    const missing = MOVE_PRIVILEGES.filter((p) => !privileges.has(p));
    if (missing.length > 0) problems.push(`the user lacks ${missing.join(', ')} on *.*`);
  }
  const currentUser = str((await s.rows('SELECT CURRENT_USER() AS u'))[0].u);
  const anyDefiner = DEFINER_PRIVILEGES.some((p) => privileges.has(p));
  const foreign: string[] = [];
  for (const c of sources) {
    for (const o of c.objects) {
      const where = `${o.kind.toLowerCase()} ${c.database}.${o.name}`;
      if (o.create === null) problems.push(`the definition of ${where} is not readable by ${currentUser} (it needs to be its definer, or SELECT on mysql.proc)`);
      if (o.invalid) problems.push(`${where} is invalid and could not be re-created (${o.invalid}); fix or drop it first`);
      if (!anyDefiner && o.definer !== currentUser) foreign.push(`${where} (DEFINER ${o.definer})`);
    }
  }
  if (foreign.length > 0) {
    const list = foreign.length > 5 ? `${foreign.slice(0, 5).join(', ')} and ${foreign.length - 5} more` : foreign.join(', ');
    problems.push(`${currentUser} may not re-create objects with another definer (it lacks SET USER and SUPER): ${list}`);
  }
  for (const m of plan.moves.filter((m) => m.create)) {
    const [exists] = await s.rows(`SELECT 1 AS x FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?`, [m.to]);
    if (exists) problems.push(`database ${m.to} exists already`);
  }
  return problems;
}

class Journal {
  step = 'starting';
  private readonly undos: { what: string; undo: (s: RawSession) => Promise<void> }[] = [];

  push(what: string, undo: (s: RawSession) => Promise<void>): void {
    this.undos.push({ what, undo });
  }

  get empty(): boolean {
    return this.undos.length === 0;
  }

  /** Undoes every recorded step, newest first; returns what could not be undone. */
  async rollback(s: RawSession): Promise<string[]> {
    const failed: string[] = [];
    for (const u of this.undos.reverse()) {
      try {
        await u.undo(s);
      } catch (err) {
        failed.push(`${u.what}: ${(err as Error).message}`);
      }
    }
    return failed;
  }
}

/**
 * Re-creates `objects` in `database`, whose properties are `props`; views that need a later view
 * are retried until none is left. Routines, triggers and events keep the default collation of the
 * database they were created in: the database's is switched to theirs meanwhile, and back.
 */
async function recreate(s: RawSession, database: string, props: MyDatabaseProperties, objects: StoredObject[], created: StoredObject[]): Promise<void> {
  let collation = props.collation;
  try {
    let pending = objects;
    while (pending.length > 0) {
      const failed: { obj: StoredObject; err: Error }[] = [];
      for (const obj of pending) {
        try {
          if (obj.databaseCollation && obj.databaseCollation !== collation) {
            await alterDatabase(s, database, { collation: obj.databaseCollation });
            collation = obj.databaseCollation;
          }
          await s.create(database, obj, obj.create!);
          created.push(obj);
        } catch (err) {
          failed.push({ obj, err: err as Error });
        }
      }
      if (failed.length === pending.length) {
        const list = failed.slice(0, 3).map((f) => `${objectKey(f.obj)}: ${f.err.message}`);
        if (failed.length > 3) list.push(`and ${failed.length - 3} more`);
        throw new RestoreError(`[mysql] re-creating in ${database} failed: ${list.join('; ')}`);
      }
      pending = failed.map((f) => f.obj);
    }
  } finally {
    if (collation !== props.collation) await alterDatabase(s, database, props);
  }
}

async function dropObject(s: RawSession, database: string, o: StoredObject): Promise<void> {
  // Before MariaDB 11.4, packages exist only in Oracle mode.
  if (o.kind !== 'PACKAGE' && o.kind !== 'PACKAGE BODY') return s.run(`DROP ${o.kind} ${qualified(database, o.name)}`);
  await s.run(`SET sql_mode = 'ORACLE'`);
  try {
    await s.run(`DROP ${o.kind} ${qualified(database, o.name)}`);
  } finally {
    await s.plain();
  }
}

async function moveEvent(s: RawSession, e: StoredObject, from: string, to: string): Promise<void> {
  await s.run(`USE ${quoteIdent(to)}`);
  await s.settings(e);
  try {
    await s.run(`ALTER DEFINER = ${definerClause(e.definer)} EVENT ${qualified(from, e.name)} RENAME TO ${qualified(to, e.name)}`);
  } finally {
    await s.plain();
  }
}

async function alterDatabase(s: RawSession, database: string, props: Partial<MyDatabaseProperties>): Promise<void> {
  await s.run(`ALTER DATABASE ${quoteIdent(database)}${propertyClauses(props)}`);
}

async function execute(s: RawSession, plan: MovePlan, sources: Map<string, Contents>, journal: Journal, hooks: MoveHooks): Promise<void> {
  const step = async (name: string) => {
    journal.step = name;
    await hooks.afterStep?.(name);
  };
  const contentsOf = (db: string) => sources.get(db)!;
  // The properties each database has at this point of the move.
  const current = new Map<string, MyDatabaseProperties>(plan.moves.map((m) => [m.from, contentsOf(m.from).properties]));

  journal.step = 'creating the new databases';
  for (const m of plan.moves.filter((m) => m.create)) {
    const props = contentsOf(m.from).properties;
    await s.run(`CREATE DATABASE ${quoteIdent(m.to)}${propertyClauses(props)}`);
    current.set(m.to, props);
    journal.push(`dropping ${m.to}`, async (r) => {
      const left = await leftIn(r, m.to);
      if (left && !isEmpty(left)) throw new RestoreError(`${m.to} is not empty (${summary(left)}); it was left in place`);
      await r.run(`DROP DATABASE IF EXISTS ${quoteIdent(m.to)}`);
    });
  }
  await step('databases created');

  // Triggers stop RENAME TABLE across databases, and views cannot move: both are dropped at the
  // source and re-created at the destination; routines too, so that a swap's names never clash.
  const groups: [string, ObjectKind[]][] = [
    ['triggers', ['TRIGGER']],
    ['views', ['VIEW']],
    ['routines', ['PACKAGE BODY', 'PACKAGE', 'FUNCTION', 'PROCEDURE']],
  ];
  for (const [group, kinds] of groups) {
    for (const m of plan.moves) {
      const objects = contentsOf(m.from).objects.filter((o) => kinds.includes(o.kind));
      if (objects.length === 0) continue;
      journal.step = `dropping the ${group} of ${m.from}`;
      const dropped: StoredObject[] = [];
      journal.push(`re-creating the ${group} of ${m.from}`, (r) => recreate(r, m.from, current.get(m.from)!, objects.filter((o) => dropped.includes(o)), []));
      // Packages go before their bodies when re-created, so bodies are dropped first.
      for (const o of [...objects].sort((a, b) => Number(b.kind === 'PACKAGE BODY') - Number(a.kind === 'PACKAGE BODY'))) {
        await dropObject(s, m.from, o);
        dropped.push(o);
      }
      await step(`${group} dropped from ${m.from}`);
    }
  }

  // Events, tables and properties move in plan order: a swap's old database is out of the way
  // before the restored one takes its name.
  const eventsOut = async (m: MovePlan['moves'][number]) => {
    for (const e of contentsOf(m.from).objects.filter((o) => o.kind === 'EVENT')) {
      journal.step = `moving event ${m.from}.${e.name} to ${m.to}`;
      await moveEvent(s, e, m.from, m.to);
      journal.push(`moving event ${e.name} back to ${m.from}`, (r) => moveEvent(r, e, m.to, m.from));
    }
  };
  const pairs = plan.moves.flatMap((m) => contentsOf(m.from).tables.map((t) => ({ from: m.from, to: m.to, name: t.name })));
  const sourcesAlsoDestinations = new Set(plan.moves.filter((m) => !m.create).map((m) => m.to));
  for (const m of plan.moves.filter((m) => sourcesAlsoDestinations.has(m.from))) await eventsOut(m);
  await step('events moved out of the way');
  if (pairs.length > 0) {
    journal.step = 'moving the tables';
    await s.run(`RENAME TABLE ${pairs.map((p) => `${qualified(p.from, p.name)} TO ${qualified(p.to, p.name)}`).join(', ')}`);
    journal.push('moving the tables back', (r) =>
      r.run(`RENAME TABLE ${[...pairs].reverse().map((p) => `${qualified(p.to, p.name)} TO ${qualified(p.from, p.name)}`).join(', ')}`),
    );
  }
  await step('tables moved');
  for (const m of plan.moves.filter((m) => !m.create)) {
    journal.step = `giving ${m.to} the properties of ${m.from}`;
    const before = current.get(m.to)!;
    const after = contentsOf(m.from).properties;
    await alterDatabase(s, m.to, after);
    current.set(m.to, after);
    journal.push(`giving ${m.to} its own properties again`, async (r) => {
      await alterDatabase(r, m.to, before);
      current.set(m.to, before);
    });
  }
  await step('properties moved');
  for (const m of plan.moves.filter((m) => !sourcesAlsoDestinations.has(m.from))) await eventsOut(m);
  await step('events moved');

  for (const m of plan.moves) {
    const objects = contentsOf(m.from).objects.filter((o) => o.kind !== 'EVENT');
    if (objects.length === 0) continue;
    journal.step = `re-creating the views, triggers and routines of ${m.from} in ${m.to}`;
    const created: StoredObject[] = [];
    journal.push(`dropping what was re-created in ${m.to}`, async (r) => {
      for (const o of [...created].reverse()) await dropObject(r, m.to, o);
    });
    const routines = objects.filter((o) => o.kind !== 'VIEW' && o.kind !== 'TRIGGER');
    for (const group of [routines, objects.filter((o) => o.kind === 'VIEW'), objects.filter((o) => o.kind === 'TRIGGER')]) {
      await recreate(s, m.to, current.get(m.to)!, group, created);
    }
    await step(`objects re-created in ${m.to}`);
  }

  journal.step = 'checking the result';
  const problems: string[] = [];
  for (const m of plan.moves) {
    const now = await readContents(s, m.to);
    const diff = now ? [...propertyDifferences(now.properties, contentsOf(m.from).properties), ...contentDifferences(contentsOf(m.from), now)] : [`${m.to} does not exist`];
    problems.push(...diff.map((d) => `${m.to}: ${d}`));
  }
  for (const db of plan.drop) {
    const left = await leftIn(s, db);
    if (left && !isEmpty(left)) problems.push(`${db} still ${summary(left)}`);
  }
  if (problems.length > 0) {
    throw new RestoreError(`[mysql] after moving, the databases do not hold what they should: ${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` (and ${problems.length - 5} more)` : ''}`);
  }
  await step('checked');

  for (const db of plan.drop) {
    journal.step = `dropping the emptied ${db}`;
    await s.run(`DROP DATABASE ${quoteIdent(db)}`);
    const props = contentsOf(db).properties;
    journal.push(`creating ${db} again`, (r) => r.run(`CREATE DATABASE ${quoteIdent(db)}${propertyClauses(props)}`));
  }
  await step('emptied databases dropped');
}

/** Moves per `plan`, all or nothing (see the header). */
async function move(target: Target, plan: MovePlan, hooks: MoveHooks = {}): Promise<void> {
  const s = await RawSession.open(target, MOVE_LOCK_WAIT_S).catch((err) => {
    throw err instanceof DbstashError ? err : classifyMyError(err, target, undefined);
  });
  const journal = new Journal();
  try {
    const sources = new Map<string, Contents>();
    for (const m of plan.moves) {
      const c = await readContents(s, m.from);
      if (!c) throw new RestoreError(`[mysql] cannot start ${plan.what}: database ${m.from} does not exist`, { hint: `nothing moved: ${plan.unchanged}` });
      sources.set(m.from, c);
    }
    const problems = await preflight(s, plan, [...sources.values()]);
    if (problems.length > 0) {
      throw new RestoreError(`[mysql] refused ${plan.what} before moving anything: ${problems.join('; ')}`, {
        hint: `nothing moved: ${plan.unchanged}. Grant what is missing (for other definers: SET USER on MariaDB, SET_USER_ID or SET_ANY_DEFINER on MySQL), or restore as a user who has it`,
      });
    }
    await execute(s, plan, sources, journal, hooks);
  } catch (err) {
    await s.close();
    if (journal.empty) {
      if (err instanceof DbstashError) throw err;
      throw new RestoreError(`[mysql] ${plan.what} failed before anything moved: ${(err as Error).message}`, { hint: `nothing moved: ${plan.unchanged}`, cause: err });
    }
    throw await rollback(target, plan, journal, err as Error);
  }
  await s.close();
}

/** Undoes a failed move on a fresh connection and says where everything is now. */
async function rollback(target: Target, plan: MovePlan, journal: Journal, err: Error): Promise<RestoreError> {
  const cause = `${plan.what} failed (${journal.step}): ${err.message.replace(/^\[mysql\] /, '')}`;
  let failures: string[];
  let r: RawSession | undefined;
  try {
    r = await RawSession.open(target);
    failures = await journal.rollback(r);
  } catch (e) {
    failures = [`cannot connect to undo it: ${(e as Error).message}`];
  }
  if (failures.length === 0) {
    await r?.close();
    return new RestoreError(`[mysql] ${cause}; everything was put back: ${plan.unchanged}`, { hint: 'fix the cause above and run the restore again', cause: err });
  }
  const names = [...new Set(plan.moves.flatMap((m) => [m.from, m.to]))];
  let where: string;
  try {
    r ??= await RawSession.open(target);
    const parts: string[] = [];
    for (const db of names) parts.push(`${db} ${summary(await readContents(r, db))}`);
    where = parts.join('; ');
  } catch (e) {
    where = `unknown (${(e as Error).message})`;
  } finally {
    await r?.close();
  }
  return new RestoreError(`[mysql] ${cause}; putting everything back failed too (${failures.join('; ')}); now ${where}`, {
    hint: `nothing was dropped: move the objects back by hand (docs/mysql.md, "Swapping databases")`,
    cause: err,
  });
}

/**
 * Replaces `target` by `restored`: target's contents go to the new database `keptName`, then
 * restored's to target's name, and `restored` is dropped. Returns the kept database.
 */
export async function swapMyDatabases(target: Target, restored: Target, keptName: string, hooks?: MoveHooks): Promise<Target> {
  const [live, copy] = [target.database, restored.database];
  await move(
    target,
    {
      moves: [
        { from: live, to: keptName, create: true },
        { from: copy, to: live, create: false },
      ],
      drop: [copy],
      what: `swapping ${live} and ${copy} (keeping the old one as ${keptName})`,
      unchanged: `${live} is as it was, the restored copy is still in ${copy}, and ${keptName} does not exist`,
    },
    hooks,
  );
  return withDatabase(target, keptName);
}

/** Gives `target`'s database the name `newName` (a new database; the old one is dropped once empty). */
export async function renameMyDatabase(target: Target, newName: string, hooks?: MoveHooks): Promise<Target> {
  const from = target.database;
  await move(
    target,
    {
      moves: [{ from, to: newName, create: true }],
      drop: [from],
      what: `renaming ${from} to ${newName}`,
      unchanged: `${from} is as it was and ${newName} does not exist`,
    },
    hooks,
  );
  return withDatabase(target, newName);
}
