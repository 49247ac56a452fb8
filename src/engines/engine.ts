// The engine interface: everything database-specific lives behind it (PostgreSQL, MySQL/MariaDB,
// SQLite). Orchestration code (backup, verify, restore) talks only to this interface.
//
// Contract:
// - dump() returns a stream that ends cleanly ONLY if the dump tool succeeded: the tool's exit
//   status and stderr are checked before the stream's end is signalled (see gateOnExit), so a
//   dump that dies half-way errors the stream and nothing is published.
// - tables are counted inside the same snapshot the dump reads, where the engine can do so.
// - secrets never reach a child's command line: they travel in the child's environment or in a
//   0600 file that is removed afterwards.

import type { Readable } from 'node:stream';
import { ConfigError } from '../core/errors.js';

export type EngineId = 'postgres' | 'mysql' | 'sqlite';

export interface Target {
  engine: EngineId;
  /** Name used in backup ids and the stash layout. */
  database: string;
  /** Connection URL or file path, password removed: safe to print and to store. */
  displayUrl: string;
  host?: string;
  port?: number;
  user?: string;
  password?: string;
  /** SQLite file path. */
  path?: string;
  /** Extra connection parameters (sslmode, …) from the URL's query string. */
  params: Record<string, string>;
  /** Engine options from the config file (binDir, …). */
  options: EngineOptions;
}

export interface EngineOptions {
  /** Directory holding the dump tools (pg_dump, mariadb-dump); default: looked up. */
  binDir?: string;
  [key: string]: unknown;
}

export interface ToolInfo {
  name: string;
  version: string;
  path: string;
}

export interface Probe {
  serverVersion: string;
  /** On-disk size of the database in bytes (an estimate for the free-space check). */
  sizeBytes: number;
  tool: ToolInfo;
  warnings: string[];
  /**
   * Frees what the probe holds for the dump that follows it (PostgreSQL keeps its connection, so
   * the dump does not connect and authenticate a second time). Idempotent; a dump given this
   * probe in its options takes the resources over instead.
   */
  release?(): Promise<void>;
}

export interface TableStat {
  schema: string;
  name: string;
  rows: number;
  /** Order-independent content checksum taken in the dump's snapshot (with --checksums). */
  checksum?: string;
  /** An estimate that could not be made (a large table never analyzed): rows means nothing. */
  rowsUnknown?: boolean;
}

export interface DumpOptions {
  signal: AbortSignal;
  /** Also compute per-table content checksums in the snapshot. */
  checksums?: boolean;
  /** Parallel workers (engines that support it). */
  jobs?: number;
  /** Directory for scratch files (SQLite snapshot copy, directory-format dumps). */
  tempDir: string;
  warn: (message: string) => void;
  /** The probe of this same backup, whose connection the dump may take over. */
  probe?: Probe;
  /**
   * How long the dump and the row counts may wait for a lock on one table, in ms, before the
   * backup fails naming the table and the session holding it; 0 waits for ever. Default
   * DEFAULT_LOCK_WAIT_TIMEOUT_MS (engines whose dump tool can bound its lock waits).
   */
  lockWaitTimeout?: number;
}

/** A minute: a DDL statement or a migration rarely holds a table longer; a backup must not stall for ever. */
export const DEFAULT_LOCK_WAIT_TIMEOUT_MS = 60_000;

/**
 * Database-level properties, engine-specific and JSON-serialisable, recorded in the manifest so a
 * restore into a new database carries them: PostgreSQL encoding, collation, ctype, locale
 * provider, owner, grants (ACL), settings (ALTER DATABASE … SET), comment, connection limit;
 * MySQL/MariaDB default character set and collation.
 */
export type DatabaseProperties = Record<string, unknown>;

export interface DumpSession {
  /** Artifact format, used as the file extension: "dump" (pg custom), "sqlite", "sql", "tar". */
  format: string;
  stream: Readable;
  /** Row counts (and checksums) taken in the dump's snapshot. */
  tables: Promise<TableStat[]>;
  /** The database's own properties, read while the dump runs (engines that have any). */
  properties?: Promise<DatabaseProperties>;
  tool: ToolInfo & { args: string[] };
  /** Extra facts for the manifest (snapshot id, isolation level, …). */
  details: Record<string, unknown>;
}

export interface RestoreOptions {
  signal: AbortSignal;
  /** Artifact format from the manifest ("dump", "sqlite", "sql", "tar"). */
  format: string;
  jobs?: number;
  /** Do not restore object ownership (pg_restore --no-owner). */
  noOwner?: boolean;
  /** Role renames applied while restoring (old → new). */
  roleMap?: Record<string, string>;
  /** Do not restore grants (restore drills on a server without the backup's roles). */
  noPrivileges?: boolean;
  /** Create everything in the default tablespace (restore drills: the backup's tablespaces are not there). */
  noTablespaces?: boolean;
  /** The target exists and holds data: replace it in place, all or nothing where the engine can. */
  clean?: boolean;
  tempDir: string;
  warn: (message: string) => void;
  /**
   * Told, while the restore goes on, that a table's data is in (committed), so the caller can
   * count it beside the rest of the restore; by qualified name as the tool printed it
   * ("schema.table"), or by table name alone where the tool prints no schema. A hint only: a
   * count taken on it that does not match is taken again after the restore.
   */
  dataLoaded?: (table: { qualified?: string; name: string }) => void;
  /** A fresh stream of the same artifact, to quote the statement a tool failed on (after a failure only). */
  reread?: () => Promise<Readable>;
  /**
   * Restore the data of these tables only (a partial restore, an export): every other table is
   * created empty where the engine must create it for the dump's other objects, or left out.
   * The list is complete: a partitioned table comes with its partitions (see dumpTables). The
   * engine may stop reading `raw` once it has what it needs; the caller then proves the stored
   * artifact whole on its own (verify/read.ts checkStoredBytes) before trusting what was read.
   */
  only?: TableRef[];
  /** What dumpTables read of this dump's head (engine-specific), so a restore of `only` does not read it again. */
  toc?: unknown;
}

/** A table by schema and name (schema "main" for engines without schemas: MySQL, SQLite). */
export interface TableRef {
  schema: string;
  name: string;
}

/** A table a dump holds, with what belongs to it (dumpTables). */
export interface DumpTable extends TableRef {
  /** Partitions and inheritance children, direct ones (a partitioned table). */
  children: TableRef[];
  /** A partitioned table holds no rows of its own (it is not in the manifest's table list). */
  partitioned?: boolean;
  /** Its foreign keys: constraint name and the table each references. */
  references?: { constraint: string; table: TableRef }[];
}

/** Where a partial restore put one table beside the live ones (placeBeside). */
export interface PlacedTable {
  from: TableRef;
  to: TableRef;
  /** What did not come along (triggers, foreign keys to tables that were not restored, …). */
  left: string[];
  /** The primary key's columns, where it has one (for the copy-back example). */
  key?: string[];
}

/** What --replace does to what depends on a live table (Engine.replaceImpact). */
export interface ReplaceImpact {
  follow: string[];
  stay: string[];
  referencedBy: string[];
}

/**
 * One value read back from a table, faithfully: JSON-able values as they are; numbers as their
 * exact text (no float rounding), JSON documents as their text, binary as bytes, times as ISO
 * 8601 text (with the zone where the type has one).
 */
export type Cell = null | boolean | string | Buffer | { number: string } | { json: string } | { time: string };

export interface RowSource {
  columns: { name: string; type: string }[];
  rows: AsyncIterable<Cell[]>;
  close(): Promise<void>;
}

/** Export formats: JSON Lines, CSV (RFC 4180). */
export type RowFormat = 'jsonl' | 'csv';

/**
 * A table's rows already rendered as lines of `format` (no CSV header): the same text
 * tables/render.ts makes of readRows' cells, written by the engine's server.
 */
export interface RenderedSource {
  columns: { name: string; type: string }[];
  /** The lines' bytes (UTF-8) as they come, with the count of rows each piece ends. */
  pieces: AsyncIterable<{ bytes: Buffer; rows: number }>;
  close(): Promise<void>;
}

export interface CreateDatabaseOptions {
  properties?: DatabaseProperties;
  noOwner?: boolean;
  noPrivileges?: boolean;
  /** Role renames (old → new) applied to the owner and grants. */
  roleMap?: Record<string, string>;
}

/** What reading a dump's structure found. */
export interface StructureReport {
  /** One line, e.g. "pg_restore read 412 TOC entries and every data block". */
  summary: string;
  /** What the dump needs from the server it is restored into, where the engine can tell. */
  needs?: DumpNeeds;
}

/** What a dump refers to without creating it: a restore drill's server must have these. */
export interface DumpNeeds {
  /** Every role the dump names (owners, grantees, policy roles, …). */
  roles: string[];
  /** The roles it needs even when ownership and grants are not restored (policies, user mappings). */
  rolesWithoutOwnership: string[];
  /** Extensions it installs. */
  extensions: string[];
}

/** A drill's server made ready for one dump (see Engine.prepareDrill). */
export interface DrillEnvironment {
  /** Roles created for the drill (cleanup() removes them). */
  created: string[];
  /** Whether ownership and grants can be restored there (else the drill skips them). */
  ownership: boolean;
  cleanup(): Promise<void>;
}

/** A server dbstash started itself for a restore drill; stop() removes every trace of it. */
export interface ScratchServer {
  /** Target of the server's maintenance database; use withDatabase() for others. */
  target: Target;
  /** The server's version, when known: a drill refuses a server older than the backup's. */
  serverVersion?: string;
  stop(): Promise<void>;
}

export interface Engine {
  readonly id: EngineId;
  /**
   * Checks tools, connection, credentials, database existence and size. An abort of `signal` must
   * end it promptly (a hung connection included) and reject with the signal's reason.
   */
  probe(target: Target, signal?: AbortSignal): Promise<Probe>;
  dump(target: Target, opts: DumpOptions): Promise<DumpSession>;
  /** Roles/users and grants, as a second artifact of the same backup. */
  dumpGlobals?(target: Target, opts: DumpOptions): Promise<DumpSession>;
  /** Physical base backups (PostgreSQL): the preflight, and the cluster's files as one tar stream. */
  probePhysical?(target: Target, opts: { selfContained?: boolean; signal?: AbortSignal }): Promise<Probe>;
  dumpPhysical?(target: Target, opts: DumpOptions & { selfContained?: boolean; archiveWaitMs?: number }): Promise<DumpSession>;

  // ---- verify and restore (every engine implements these) ----
  /**
   * Reads a whole raw dump (after the stages are decoded) and checks its own structure
   * (pg_restore --list, SQLite integrity_check, the SQL dump's completion trailer). Throws
   * IntegrityError naming what is broken. Returns a one-line summary (e.g. "412 TOC entries"),
   * and what the dump needs from the server it is restored into where the engine can tell.
   */
  checkStructure?(raw: Readable, opts: RestoreOptions): Promise<StructureReport>;
  /** Reads a globals artifact to its end: IntegrityError when it is incomplete; `needs.roles` are the roles it creates. */
  checkGlobals?(raw: Readable, opts: RestoreOptions): Promise<StructureReport>;
  /**
   * Restores a raw dump into `target`, which exists and is empty (SQLite: a file path that does not
   * exist yet). A failure the target server causes (a role, extension, library or permission it
   * lacks, a full disk, a lost connection) is a RestoreEnvironmentError; any other a RestoreError.
   */
  restore?(target: Target, raw: Readable, opts: RestoreOptions): Promise<void>;
  /**
   * Starts in the background what restore() will look up first (its tool and the tool's version),
   * so that this overlaps the plan's questions to the server. Never fails: a lookup that fails
   * fails again, with its message, when restore() makes it.
   */
  prepareRestore?(target: Target): void;
  /** Restores the globals artifact (roles/users); idempotent where the engine allows. */
  restoreGlobals?(target: Target, raw: Readable, opts: RestoreOptions): Promise<void>;
  /**
   * Row counts (and checksums, computed exactly as dump() does) of a live database. With
   * `estimate`, counts may come from the engine's statistics (cheap on a big database; a table
   * that holds rows never reports 0) — for plans, never for checks.
   */
  tableStats?(target: Target, opts: { checksums: boolean; estimate?: boolean; signal?: AbortSignal }): Promise<TableStat[]>;
  /** The user tables of a live database (those tableStats counts), without counting them. */
  listTables?(target: Target, signal?: AbortSignal): Promise<{ schema: string; name: string }[]>;
  /**
   * Exact row counts of these tables of a live database, on one connection. With `giveWay` (an
   * early count during a restore), the engine may cancel the count, which then fails, when it
   * holds up another session (the restore's next step on the table).
   */
  countRows?(target: Target, tables: { schema: string; name: string }[], signal?: AbortSignal, opts?: { giveWay?: boolean }): Promise<TableStat[]>;
  databaseExists?(target: Target): Promise<boolean>;
  /**
   * Creates database `name` on target's server and returns a Target for it. With `properties`
   * (from the backup's manifest) the new database gets them: encoding and collation at creation,
   * then owner (unless noOwner), grants (unless noPrivileges), settings and comment.
   */
  createDatabase?(target: Target, name: string, opts?: CreateDatabaseOptions): Promise<Target>;
  /** The properties of a live database, in the shape dump() records them. */
  databaseProperties?(target: Target): Promise<DatabaseProperties>;
  /** How a live database's properties differ from `expected`, one line each; [] when they match. */
  compareProperties?(target: Target, expected: DatabaseProperties, opts?: CreateDatabaseOptions): Promise<string[]>;
  /**
   * Replaces `target` by `restored` in one step: target is renamed to `keptName` and restored to
   * target's name, all or nothing; on failure everything is where it was and the error says so.
   * Returns the kept database. Engines without it get two renames.
   */
  swapDatabases?(target: Target, restored: Target, keptName: string): Promise<Target>;
  /**
   * Takes a lock on restores into target that the server (or the file system) releases when this
   * process ends, however it ends; a RestoreError "another restore into … is running" when held.
   */
  lockRestoreTarget?(target: Target, signal?: AbortSignal): Promise<{ release(): Promise<void> }>;
  dropDatabase?(target: Target): Promise<void>;
  renameDatabase?(target: Target, newName: string): Promise<Target>;
  /** Other sessions connected to the target database (descriptions for the refusal message). */
  listSessions?(target: Target): Promise<string[]>;
  terminateSessions?(target: Target): Promise<number>;
  /** Names of the databases on target's server (SQLite: database files beside target's file). */
  listDatabases?(target: Target): Promise<string[]>;
  /** Why restore-then-rename is impossible for this target (no CREATEDB, file in use), or undefined. */
  swapBlocker?(target: Target): Promise<string | undefined>;
  /**
   * Makes a drill's server ready for a dump with `needs` (creates the roles it lacks, checks the
   * extensions); throws VerifyUnavailableError when it cannot. The drill restores ownership and
   * grants only where the result says it can.
   */
  prepareDrill?(server: Target, needs: DumpNeeds, signal?: AbortSignal): Promise<DrillEnvironment>;
  /** Starts a throwaway local server with the installed binaries (restore drills). */
  startScratchServer?(opts: { tempDir: string; signal?: AbortSignal }): Promise<ScratchServer>;

  // ---- single tables (partial restore, export) ----
  /**
   * The tables a dump holds, partitioned tables included with their partitions, read from the
   * dump's head where the engine can (the table of contents); engines without it use the
   * manifest's list (also when this engine returns undefined: an artifact format whose head it
   * does not read). Reads only as much of `raw` as it needs; the caller destroys it.
   */
  dumpTables?(raw: Readable, opts: RestoreOptions): Promise<{ tables: DumpTable[]; toc?: unknown } | undefined>;
  /**
   * Moves restored tables from `scratch` (a database on target's server, or a file, that a
   * partial restore filled) into `target` beside the live ones, under new names made with
   * `stamp`: PostgreSQL into a schema "dbstash_restored_<stamp>", the others as
   * "<table>__restored_<stamp>". All or nothing; nothing live is changed.
   */
  placeBeside?(scratch: Target, target: Target, tables: TableRef[], stamp: string, opts: { signal: AbortSignal; tempDir: string; noOwner?: boolean }): Promise<PlacedTable[]>;
  /**
   * What replacing live `table` (and `set`: it with its partitions) by a restored copy does to what
   * depends on it: `follow` (re-pointed or re-created on the restored table), `stay` (left with the
   * kept old table, or not carried), `referencedBy` (foreign keys of other tables pointing at it:
   * re-pointed only with --cascade-plan). Read from the live target; changes nothing.
   */
  replaceImpact?(target: Target, table: TableRef, set: TableRef[], stamp: string): Promise<ReplaceImpact>;
  /**
   * Swaps restored tables (placeBeside's) in for the live ones, in one transaction where the engine
   * can: each live table is kept as "<table>__before_<stamp>", the restored one takes its name, and
   * what replaceImpact said follows is re-pointed or re-created (checked: a foreign key the restored
   * rows break fails the whole swap). Returns the kept tables.
   */
  replaceTables?(target: Target, placed: PlacedTable[], stamp: string, opts: { cascade: boolean; signal: AbortSignal }): Promise<TableRef[]>;
  /** Streams one table's rows (with an SQL condition and a limit), values rendered faithfully. */
  readRows?(target: Target, table: TableRef, opts: { where?: string; limit?: number; signal: AbortSignal }): Promise<RowSource>;
  /**
   * The same rows rendered by the server itself, where it can render every value exactly as
   * tables/render.ts does: no value crosses into JavaScript on its own (export's fast path).
   */
  readRendered?(target: Target, table: TableRef, opts: { format: RowFormat; where?: string; limit?: number; signal: AbortSignal }): Promise<RenderedSource>;
}

/** The same server, another database. */
export function withDatabase(target: Target, database: string): Target {
  const url = target.displayUrl.replace(/\/[^/?]*(\?|$)/, `/${encodeURIComponent(database)}$1`);
  return { ...target, database, displayUrl: target.engine === 'sqlite' ? database : url, path: target.engine === 'sqlite' ? database : target.path };
}

/**
 * The name a table restored beside the live one gets (MySQL, SQLite): "<table>__restored_<stamp>",
 * inside PostgreSQL's 63 and MySQL's 64 characters.
 */
export function besideName(name: string, stamp: string): string {
  const suffix = `__restored_${stamp}`;
  return name.slice(0, 63 - suffix.length) + suffix;
}

/** The name a table replaced by --replace is kept under: "<table>__before_<stamp>". */
export function replacedName(name: string, stamp: string): string {
  const suffix = `__before_${stamp}`;
  return name.slice(0, 63 - suffix.length) + suffix;
}

const registry = new Map<EngineId, () => Promise<Engine>>();

export function registerEngine(id: EngineId, load: () => Promise<Engine>): void {
  registry.set(id, load);
}

export async function loadEngine(id: EngineId): Promise<Engine> {
  const load = registry.get(id);
  if (!load) throw new ConfigError(`engine "${id}" is not available; valid engines: ${[...registry.keys()].join(', ')}`);
  return load();
}
