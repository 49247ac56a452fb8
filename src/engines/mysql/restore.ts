// The verify/restore half of the MySQL/MariaDB engine: structure check of a SQL dump, restore
// through the mariadb/mysql client (stops at the first error and names the failing statement),
// row counts of a live database, scratch databases with the backup's database properties, the
// restore lock (lock.ts), and renaming and swapping databases (move.ts: MySQL has no RENAME
// DATABASE, so tables are moved and views, triggers and routines re-created, all or nothing).
// Limits (docs/mysql.md): routines or views that name the old database explicitly still point
// at it; grants given on the old database name (db.*) are not moved.

import type { Readable } from 'node:stream';
import { DbstashError, IntegrityError, RestoreError, VerifyUnavailableError } from '../../core/errors.js';
import { withDatabase, type CreateDatabaseOptions, type DatabaseProperties, type Engine, type RestoreOptions, type StructureReport, type TableStat, type Target } from '../engine.js';
import { startTool } from '../process.js';
import { feed } from '../feed.js';
import { globalPrivileges, quoteIdent, toolConnectionArgs, withConnection, writeOptionFile, type MyConnection } from './connection.js';
import { lockRestoreTarget } from './lock.js';
import { MOVE_PRIVILEGES, renameMyDatabase, swapMyDatabases } from './move.js';
import { myProperties, propertyClauses, propertyDifferences, readProperties } from './properties.js';
import { startScratchServer } from './scratch.js';
import { readLine, SqlScanner, type ScanSummary } from './sqlscan.js';
import { countTables, ROWLESS_TYPES } from './stats.js';
import { InsertFilter, placeBeside, readRows, replaceImpact, replaceTables } from './tables.js';
import { CLIENT_TOOLS, findMyTool } from './tools.js';

const DUMP_HEADER = /^(\/\*M!\d+\\- enable the sandbox mode \*\/|-- (MariaDB|MySQL) dump|-- dbstash: users)/;

async function scanAll(raw: Readable, scanner: SqlScanner): Promise<ScanSummary> {
  for await (const chunk of raw) scanner.push(chunk as Buffer);
  return scanner.finish();
}

/**
 * The first characters of line `line` of the dump, read again from a fresh stream of the artifact
 * (after a failure only: the restore itself passes the SQL through untouched).
 */
async function lineOf(reread: (() => Promise<Readable>) | undefined, line: number): Promise<string | undefined> {
  const stream = await reread?.().catch(() => undefined);
  if (!stream) return undefined;
  try {
    return await readLine(stream, line);
  } catch {
    return undefined;
  } finally {
    stream.destroy();
  }
}


/** Feeds raw SQL to the mariadb/mysql client; on failure names the line and statement it rejected. */
async function runSql(target: Target, database: string | undefined, raw: Readable, opts: RestoreOptions, what: string): Promise<void> {
  const client = await findMyTool(CLIENT_TOOLS, target.options.binDir).catch((err: DbstashError) => {
    throw new VerifyUnavailableError(err.message, { hint: err.hint, cause: err });
  });
  const optionFile = await writeOptionFile(target, opts.tempDir);
  try {
    const args = [
      ...toolConnectionArgs(target, optionFile.path),
      '--batch',
      '--binary-mode',
      '--default-character-set=utf8mb4',
      '--max-allowed-packet=1G',
      ...(database ? [`--database=${database}`] : []),
    ];
    const running = startTool(client.path, args, { signal: opts.signal, stdin: 'pipe' });
    let stderrTail = '';
    running.child.stderr.on('data', (d: string) => (stderrTail = (stderrTail + d).slice(-4096)));
    // When the client stops at an error it closes its input: the exit status tells what happened.
    // When the input fails (a damaged artifact, found at the latest at its end), the client is
    // killed before its input is closed, so it never takes the cut for the dump's clean end.
    const fed = feed(raw, [running.child.stdin]).catch((err: Error) => {
      running.child.kill('SIGKILL');
      return err;
    });
    const exit = await running.exit;
    const feedError = await fed;
    if (exit.code === 0 && !(feedError instanceof Error)) return;
    if (opts.signal.aborted) throw new RestoreError(`[mysql] ${what} was interrupted`);
    if (feedError instanceof DbstashError) throw feedError;
    const m = /ERROR (\d+) \(([\w]+)\)(?: at line (\d+))?: ([^\n]*)/.exec(stderrTail);
    if (m && m[3]) {
      const line = Number(m[3]);
      const text = (await lineOf(opts.reread, line))?.replace(/\s+/g, ' ') ?? '(statement not recorded)';
      const packet = /max_allowed_packet|packet bigger/i.test(m[4]);
      throw new RestoreError(`[mysql] ${what} stopped at line ${line}: ERROR ${m[1]} (${m[2]}): ${m[4]} — statement: ${text}`, {
        hint: packet ? 'raise the server\'s max_allowed_packet (SET GLOBAL max_allowed_packet = 1073741824) and retry' : 'nothing after this statement was restored',
      });
    }
    if (exit.code === 0 && feedError instanceof Error) throw new RestoreError(`[mysql] reading the dump failed during ${what}: ${feedError.message}`, { cause: feedError });
    const how = exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`;
    const detail = (m ? m[0] : stderrTail.trim().split('\n').slice(-2).join(' / ')) || (feedError instanceof Error ? feedError.message : '');
    throw new RestoreError(`[mysql] ${what}: ${client.name} ${how}${detail ? `: ${detail}` : ''}`);
  } finally {
    await optionFile.remove();
  }
}

/** Drops every table (of every type), view, routine and event of `database` (triggers go with their tables). */
async function emptyDatabase(conn: MyConnection, database: string): Promise<void> {
  const q = async (sql: string, params: unknown[] = []) => (await conn.query(sql, [database, ...params]))[0] as Record<string, string>[];
  await conn.query('SET SESSION FOREIGN_KEY_CHECKS = 0');
  for (const r of await q(`SELECT EVENT_NAME AS name FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ?`)) await conn.query(`DROP EVENT ${quoteIdent(r.name)}`);
  // A package body goes with its package; before MariaDB 11.4 packages exist only in Oracle mode.
  for (const r of await q(`SELECT ROUTINE_NAME AS name, ROUTINE_TYPE AS type FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ? AND ROUTINE_TYPE <> 'PACKAGE BODY'`)) {
    if (r.type !== 'PACKAGE') {
      await conn.query(`DROP ${r.type} ${quoteIdent(r.name)}`);
      continue;
    }
    await conn.query(`SET @dbstash_sql_mode = @@SESSION.sql_mode, SESSION sql_mode = 'ORACLE'`);
    await conn.query(`DROP PACKAGE ${quoteIdent(r.name)}`);
    await conn.query(`SET SESSION sql_mode = @dbstash_sql_mode`);
  }
  for (const r of await q(`SELECT TABLE_NAME AS name FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ?`)) await conn.query(`DROP VIEW ${quoteIdent(r.name)}`);
  const rowless = ROWLESS_TYPES.filter((t) => t !== 'SEQUENCE');
  for (const r of await q(`SELECT TABLE_NAME AS name, TABLE_TYPE AS type FROM information_schema.TABLES WHERE TABLE_SCHEMA = ? AND TABLE_TYPE NOT IN (?)`, [rowless])) {
    await conn.query(`DROP ${r.type === 'SEQUENCE' ? 'SEQUENCE' : 'TABLE'} ${quoteIdent(r.name)}`);
  }
}

export const verifyRestoreHalf: Pick<
  Engine,
  | 'checkStructure'
  | 'restore'
  | 'prepareRestore'
  | 'restoreGlobals'
  | 'tableStats'
  | 'databaseExists'
  | 'createDatabase'
  | 'databaseProperties'
  | 'compareProperties'
  | 'swapDatabases'
  | 'lockRestoreTarget'
  | 'dropDatabase'
  | 'renameDatabase'
  | 'listSessions'
  | 'terminateSessions'
  | 'listDatabases'
  | 'swapBlocker'
  | 'startScratchServer'
  | 'placeBeside'
  | 'readRows'
  | 'replaceImpact'
  | 'replaceTables'
> = {
  placeBeside,
  readRows,
  replaceImpact,
  replaceTables,
  async checkStructure(raw: Readable, opts: RestoreOptions): Promise<StructureReport> {
    const s = await scanAll(raw, new SqlScanner());
    if (!DUMP_HEADER.test(s.firstLine)) {
      throw new IntegrityError(`[mysql] the ${opts.format} artifact is not a mariadb-dump/mysqldump file (it starts with ${JSON.stringify(s.firstLine.slice(0, 60))})`);
    }
    if (!s.trailer) {
      throw new IntegrityError(`[mysql] the dump is truncated: no "-- Dump completed" trailer after line ${s.lines}`);
    }
    if (s.unterminated) {
      throw new IntegrityError(`[mysql] the dump ends inside the statement that starts at line ${s.unterminated.line}: ${s.unterminated.text.slice(0, 80)}`);
    }
    return { summary: `${s.statements} statements, ${s.tables} tables` };
  },

  prepareRestore(target: Target): void {
    findMyTool(CLIENT_TOOLS, target.options.binDir).catch(() => {});
  },

  async restore(target: Target, raw: Readable, opts: RestoreOptions): Promise<void> {
    // In place (opts.clean): MySQL DDL is not transactional, so the target is emptied first and the
    // caller's safety backup is what makes this all-or-nothing.
    if (opts.clean) await withConnection(target, target.database, (conn) => emptyDatabase(conn, target.database));
    if (opts.only) {
      // Some tables only: the other tables' INSERT lines are dropped on the way to the client.
      const filter = new InsertFilter(new Set(opts.only.map((t) => t.name)));
      raw.on('error', (err) => filter.destroy(err));
      raw.pipe(filter);
      await runSql(target, target.database, filter, { ...opts, reread: undefined }, `restore into ${target.database}`);
      return;
    }
    await runSql(target, target.database, raw, opts, `restore into ${target.database}`);
  },

  async restoreGlobals(target: Target, raw: Readable, opts: RestoreOptions): Promise<void> {
    await runSql(target, undefined, raw, opts, 'restoring users and grants');
  },

  async tableStats(target: Target, opts: { checksums: boolean }): Promise<TableStat[]> {
    return withConnection(target, target.database, (conn) => countTables(conn, target.database, opts.checksums));
  },

  async databaseExists(target: Target): Promise<boolean> {
    return withConnection(target, null, async (conn) => {
      const [rows] = await conn.query(`SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ?`, [target.database]);
      return (rows as unknown[]).length > 0;
    });
  },

  /** With the backup's properties: its default character set, collation and comment; else utf8mb4. */
  async createDatabase(target: Target, name: string, opts: CreateDatabaseOptions = {}): Promise<Target> {
    const props = myProperties(opts.properties);
    const clauses = props.characterSet || props.collation ? propertyClauses(props) : propertyClauses({ ...props, characterSet: 'utf8mb4' });
    await withConnection(target, null, (conn) => conn.query(`CREATE DATABASE ${quoteIdent(name)}${clauses}`));
    return withDatabase(target, name);
  },

  async databaseProperties(target: Target): Promise<DatabaseProperties> {
    return withConnection(target, null, async (conn) => {
      const props = await readProperties(conn, target.database);
      if (!props) throw new RestoreError(`[mysql] database ${target.database} does not exist`);
      return props;
    });
  },

  async compareProperties(target: Target, expected: DatabaseProperties): Promise<string[]> {
    return withConnection(target, null, async (conn) => {
      const props = await readProperties(conn, target.database);
      if (!props) return [`database ${target.database} does not exist`];
      return propertyDifferences(props, myProperties(expected));
    });
  },

  async swapDatabases(target: Target, restored: Target, keptName: string): Promise<Target> {
    return swapMyDatabases(target, restored, keptName);
  },

  lockRestoreTarget,

  async dropDatabase(target: Target): Promise<void> {
    await withConnection(target, null, (conn) => conn.query(`DROP DATABASE ${quoteIdent(target.database)}`));
  },

  async renameDatabase(target: Target, newName: string): Promise<Target> {
    return renameMyDatabase(target, newName);
  },

  async listSessions(target: Target): Promise<string[]> {
    return withConnection(target, null, async (conn) => {
      const [rows] = await conn.query(
        // A connection in the "Killed" state is already going away (a client that just disconnected).
        `SELECT ID AS id, USER AS user, HOST AS host, COMMAND AS command, TIME AS time FROM information_schema.PROCESSLIST
         WHERE DB = ? AND ID <> CONNECTION_ID() AND COMMAND <> 'Killed' ORDER BY ID`,
        [target.database],
      );
      return (rows as { id: number; user: string; host: string; command: string; time: number }[]).map(
        (r) => `connection ${r.id}: ${r.user}@${r.host} (${r.command}, ${r.time} s)`,
      );
    });
  },

  async terminateSessions(target: Target): Promise<number> {
    return withConnection(target, null, async (conn) => {
      const [rows] = await conn.query(`SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB = ? AND ID <> CONNECTION_ID() AND COMMAND <> 'Killed'`, [target.database]);
      let n = 0;
      for (const r of rows as { id: number }[]) {
        await conn.query(`KILL ${Number(r.id)}`).then(() => n++, () => {});
      }
      return n;
    });
  },

  async listDatabases(target: Target): Promise<string[]> {
    return withConnection(target, null, async (conn) => {
      const [rows] = await conn.query(`SELECT SCHEMA_NAME AS name FROM information_schema.SCHEMATA ORDER BY 1`);
      return (rows as { name: string }[]).map((r) => r.name);
    });
  },

  /** Swapping creates a database, moves tables and re-creates views, triggers and routines: it needs MOVE_PRIVILEGES on *.*. */
  async swapBlocker(target: Target): Promise<string | undefined> {
    return withConnection(target, null, async (conn) => {
      const privileges = await globalPrivileges(conn);
      if (privileges.has('ALL PRIVILEGES')) return undefined;
      const missing = MOVE_PRIVILEGES.filter((p) => !privileges.has(p));
      if (missing.length === 0) return undefined;
      return `user "${target.user ?? 'current'}" lacks ${missing.join(', ')} on *.* (needed to create a database and move the tables into it; MySQL has no RENAME DATABASE)`;
    });
  },

  startScratchServer,
};

