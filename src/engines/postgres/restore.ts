// The verify/restore half of the PostgreSQL engine: structure checks with pg_restore (which also
// read what the dump needs from the server it goes into; drill.ts), restores with pg_restore
// --exit-on-error (streamed into its stdin, or from a temp file for --jobs) whose failures tell the
// server's fault (RestoreEnvironmentError) from the dump's, the globals artifact with psql, and the database-level operations a restore swap needs: creating
// the new database with the backup's own properties (properties.ts), swapping names in one
// transaction, and the restore-target lock (a session-level advisory lock that the server releases
// when the holding connection ends, however dbstash ends). dbstash's own queries run on the
// server's maintenance database, never inside the database they change.

import { BASE_FORMAT, checkBaseStructure } from './physical.js';
import { createWriteStream, promises as fsp } from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { StringDecoder } from 'node:string_decoder';
import { IntegrityError, PreflightError, RestoreEnvironmentError, RestoreError, UsageError } from '../../core/errors.js';
import { makeScratchDir } from '../../core/scratch.js';
import {
  withDatabase,
  type CreateDatabaseOptions,
  type DatabaseProperties,
  type DumpNeeds,
  type Engine,
  type RestoreOptions,
  type StructureReport,
  type TableStat,
  type Target,
} from '../engine.js';
import { feed } from '../feed.js';
import { IdleSessions } from '../idle.js';
import { describeExit, runTool, startTool, stderrSummary, type ToolExit } from '../process.js';
import { classifyPgError, clientConfig, connect, dbnameArg, libpqEnv, quoteIdent, restoreEnv, type PgClient } from './connection.js';
import { countTables, countThese, USER_TABLES_SQL } from './counts.js';
import { DIRECTORY_FORMAT, unpackDirectoryDump } from './parallel.js';
import { asPgProperties, createWithProperties, differences, readProperties, type PgDatabaseProperties } from './properties.js';
import { globalsReader, prepareDrill, scriptReader } from './drill.js';
import { rewriteRoles } from './roles.js';
import { startScratchPostgres } from './scratch.js';
import { findPgTool, majorOf } from './tools.js';
import { dumpTables, isHead, placeBeside, readHead, readRendered, readRows, writeOnlyList } from './tables.js';
import { replaceImpact, replaceTables } from './replace.js';

/**
 * A connection to the server's maintenance database: "postgres", else "template1"; "template1"
 * also when the target is "postgres" itself, which cannot be renamed from inside. An idle session
 * left by an earlier question to the same server is taken first (see giveBack).
 */
async function maintenance(target: Target, signal?: AbortSignal): Promise<PgClient> {
  if (target.database === 'postgres') return connect(target, 'template1', signal);
  const reused = await idle.take(idleKey(target));
  if (reused) return reused;
  try {
    return await connect(target, 'postgres', signal);
  } catch (err) {
    if (err instanceof PreflightError) return connect(target, 'template1', signal);
    throw err;
  }
}

/**
 * One idle maintenance session per server is kept for the next question (idle.ts). Only one on
 * "postgres": an idle session on template1 would stop others' CREATE DATABASE, which copies it.
 */
const idle = new IdleSessions<PgClient>(2000, {
  socket: (client) => client.connection.stream as Partial<Socket>,
  close: (client) => client.end().catch(() => {}),
});

function idleKey(target: Target): string {
  const c = clientConfig(target, 'postgres');
  return JSON.stringify([c.host, c.port, c.user, c.password, c.ssl]);
}

function giveBack(target: Target, client: PgClient): Promise<void> {
  if (client.database !== 'postgres') return client.end().catch(() => {});
  return idle.giveBack(idleKey(target), client);
}

function where(target: Target): string {
  return `${target.host ?? 'localhost'}:${target.port ?? 5432}`;
}

/** Runs `work` in a maintenance session, which is kept for the next question if `work` succeeds. */
async function onServer<T>(target: Target, work: (client: PgClient) => Promise<T>): Promise<T> {
  const client = await maintenance(target);
  let done = false;
  try {
    const result = await work(client);
    done = true;
    return result;
  } catch (err) {
    if (err instanceof RestoreError || err instanceof PreflightError) throw err;
    const code = (err as { code?: string }).code;
    if (code && /^[0-9A-Z]{5}$/.test(code) && !code.startsWith('28')) {
      throw new RestoreError(`[postgres] ${(err as Error).message}`, { cause: err });
    }
    throw classifyPgError(err, target);
  } finally {
    await (done ? giveBack(target, client) : client.end().catch(() => {}));
  }
}

async function serverMajor(target: Target): Promise<number> {
  return onServer(target, async (c) => majorOf((await c.query<{ v: string }>(`SELECT current_setting('server_version') AS v`)).rows[0].v));
}

async function pgTool(name: string, target: Target | undefined): Promise<string> {
  const min = target ? await serverMajor(target) : 0;
  return (await findPgTool(name, min, target?.options.binDir)).path;
}

/**
 * Server errors that come from the server restored into rather than from the dump: what it lacks
 * (a role, an extension, a C library, a tablespace, a collation or locale, an encoding able to
 * hold the data), what its user may not do, and the server itself failing (disk, memory,
 * connection). pg_restore and psql print the server's message text only, in the server's
 * lc_messages: these are PostgreSQL's English messages, which the drill's own server uses.
 */
const ENVIRONMENT_CAUSES = [
  /role "[^"]*" does not exist/,
  /extension "[^"]*" is not available|could not open extension control file|extension "[^"]*" does not exist/,
  /could not (?:access|load) (?:file|library)/,
  /tablespace "[^"]*" does not exist|invalid value for parameter "default_tablespace"/,
  /collation "[^"]*" for encoding "[^"]*" does not exist|could not create locale|ICU is not supported/,
  /invalid byte sequence for encoding|has no equivalent in encoding/,
  /permission denied|must be (?:superuser|owner|a member|member)|must have (?:CREATEROLE|admin|privileges)/,
  /No space left on device|could not extend file|out of memory|too many connections/,
  /server closed the connection unexpectedly|terminating connection|connection to server .* failed|could not connect to server|the database system is (?:shutting down|starting up|in recovery mode)/,
];

/** The server's own message and the statement it failed on, from a pg_restore or psql stderr. */
function serverError(stderr: string): string | undefined {
  const error = /ERROR:\s+(.+)/.exec(stderr) ?? /FATAL:\s+(.+)/.exec(stderr) ?? /(?:^|\n)pg_restore: error: (.+)/.exec(stderr);
  if (!error) return undefined;
  const command = /Command was: (.+)/.exec(stderr)?.[1];
  const context = /CONTEXT:\s+(.+)/.exec(stderr)?.[1];
  const cut = (text: string) => (text.length > 100 ? `${text.slice(0, 100)}…` : text);
  return `${error[1].trim()}${command ? ` (while running: ${cut(command)})` : context ? ` (${cut(context.trim())})` : ''}`;
}

/** A failed pg_restore/psql: a RestoreEnvironmentError when the server restored into caused it. */
export function restoreFailure(what: string, exit: ToolExit): RestoreError {
  const error = serverError(exit.stderr);
  const message = error ? `[postgres] ${what} ${exit.signal ? `was killed by ${exit.signal}` : `exited with code ${exit.code}`}: ${error}` : `[postgres] ${describeExit(what, exit)}`;
  const cause = ENVIRONMENT_CAUSES.find((re) => re.test(exit.stderr));
  if (!cause) return new RestoreError(message);
  return new RestoreEnvironmentError(message, {
    hint: 'the server restored into lacks something the dump needs, or failed itself; the dump was read completely before it was restored',
  });
}

/**
 * Feeds `raw` to a tool's stdin; a tool that exits non-zero is a RestoreError. On an input error
 * the tool is killed before its input is closed, so it never mistakes damaged input for a clean end.
 */
async function runFed(
  bin: string,
  args: string[],
  raw: Readable,
  env: NodeJS.ProcessEnv,
  opts: RestoreOptions,
  what: string,
  stderrLine?: (line: string) => boolean,
): Promise<ToolExit> {
  const tool = startTool(bin, args, { env, signal: opts.signal, stdin: 'pipe', stderrLine });
  tool.stdout.resume();
  try {
    // Some tables only: pg_restore stops reading once it has them, and so does the feed (the
    // caller then checks the stored bytes on their own; see RestoreOptions.only).
    await feed(raw, [tool.child.stdin], { untilUnread: !!opts.only });
  } catch (err) {
    tool.child.kill('SIGKILL');
    await tool.exit;
    throw err;
  }
  const exit = await tool.exit;
  if (exit.code !== 0) throw restoreFailure(what, exit);
  return exit;
}

const tocEntry = /^\d+;/;

interface Materialized {
  /** A file (custom format) or directory (directory format) for pg_restore; undefined: use stdin. */
  path?: string;
  cleanup(): Promise<void>;
}

/**
 * What pg_restore reads. A custom-format dump streams into its stdin; --jobs needs a seekable
 * file, and a "tar" artifact (pg_dump --jobs) is unpacked into its directory. A file or directory
 * is written completely — so the artifact's checksum has been confirmed — before pg_restore
 * starts, and is always removed.
 */
async function materialize(raw: Readable, opts: RestoreOptions, parallel: boolean): Promise<Materialized> {
  if (opts.format !== DIRECTORY_FORMAT && !(opts.format === 'dump' && parallel)) return { cleanup: async () => {} };
  const work = await makeScratchDir(opts.tempDir, 'pgrestore');
  const cleanup = () => fsp.rm(work, { recursive: true, force: true });
  try {
    if (opts.format === DIRECTORY_FORMAT) {
      const dir = path.join(work, 'dump');
      await unpackDirectoryDump(raw, dir);
      return { path: dir, cleanup };
    }
    const file = path.join(work, 'dump');
    await pipeline(raw, createWriteStream(file, { flags: 'wx', mode: 0o600 }), { signal: opts.signal });
    return { path: file, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

function checkFormat(format: string): void {
  if (format === BASE_FORMAT) {
    throw new UsageError('this is a physical base backup: it restores as a whole cluster into a new data directory, not into a database', {
      hint: 'dbstash restore --database NAME --at TIME|latest --pgdata DIR (see docs/pitr.md)',
    });
  }
  if (format !== 'dump' && format !== DIRECTORY_FORMAT) throw new IntegrityError(`[postgres] unknown artifact format "${format}"`);
}

function notReadable(exit: { code: number | null; stderr: string }): IntegrityError {
  return new IntegrityError(`[postgres] the dump does not read back: pg_restore: ${stderrSummary(exit.stderr) || `exit code ${exit.code}`}`);
}

/**
 * Reads the dump's whole structure back, and what it needs from the server it is restored into
 * (drill.ts): pg_restore --list reads the table of contents, --file=/dev/null every data block, and
 * --schema-only writes the DDL that the needs are read from (from the table of contents alone).
 */
async function checkStructure(raw: Readable, opts: RestoreOptions): Promise<StructureReport> {
  if (opts.format === BASE_FORMAT) return checkBaseStructure(raw, opts.signal);
  checkFormat(opts.format);
  const bin = await pgTool('pg_restore', undefined);
  const count = (toc: string) => `pg_restore read ${toc.split('\n').filter((l) => tocEntry.test(l)).length} TOC entries and every data block`;
  if (opts.format === DIRECTORY_FORMAT) {
    const input = await materialize(raw, opts, true);
    try {
      const list = await runTool(bin, ['--list', input.path!], { signal: opts.signal });
      if (list.code !== 0) throw notReadable(list);
      const full = await runTool(bin, ['--file=/dev/null', input.path!], { signal: opts.signal });
      if (full.code !== 0) throw notReadable(full);
      const script = scriptReader();
      const schema = startTool(bin, ['--schema-only', '--file=-', input.path!], { signal: opts.signal, bulkOutput: true });
      const scanned = pipeline(schema.stdout, script.sink);
      const [schemaExit] = await Promise.all([schema.exit, scanned]);
      if (schemaExit.code !== 0) throw notReadable(schemaExit);
      return { summary: count(list.stdout), needs: script.needs() };
    } finally {
      await input.cleanup();
    }
  }
  // --list reads the table of contents; --file=/dev/null reads every data block to the end.
  const list = startTool(bin, ['--list'], { signal: opts.signal, stdin: 'pipe' });
  const full = startTool(bin, ['--file=/dev/null'], { signal: opts.signal, stdin: 'pipe' });
  const schema = startTool(bin, ['--schema-only', '--file=-'], { signal: opts.signal, stdin: 'pipe', bulkOutput: true });
  const tools = [list, full, schema];
  let toc = '';
  list.stdout.setEncoding('utf8').on('data', (d: string) => (toc += d));
  full.stdout.resume();
  const script = scriptReader();
  const scanned = pipeline(schema.stdout, script.sink).catch(() => {});
  try {
    await feed(raw, tools.map((t) => t.child.stdin));
  } catch (err) {
    for (const t of tools) t.child.kill('SIGKILL');
    await Promise.all(tools.map((t) => t.exit));
    throw err;
  }
  const exits = await Promise.all(tools.map((t) => t.exit));
  for (const exit of exits) if (exit.code !== 0) throw notReadable(exit);
  await scanned;
  return { summary: count(toc), needs: script.needs() };
}

/** A globals artifact (pg_dumpall --globals-only) is complete, and creates these roles. */
async function checkGlobals(raw: Readable, opts: RestoreOptions): Promise<StructureReport> {
  const reader = globalsReader();
  await pipeline(raw, reader.sink, { signal: opts.signal });
  if (!reader.complete()) {
    throw new IntegrityError('[postgres] the globals artifact is incomplete: pg_dumpall\'s closing line "PostgreSQL database cluster dump complete" is missing');
  }
  const roles = reader.roles();
  return { summary: `${roles.length} roles`, needs: { roles, rolesWithoutOwnership: [], extensions: [] } satisfies DumpNeeds };
}

function restoreArgs(target: Target, opts: RestoreOptions): string[] {
  const args = ['--no-password', '--exit-on-error', `--dbname=${dbnameArg(target.database)}`];
  if (opts.noOwner) args.push('--no-owner');
  if (opts.noPrivileges) args.push('--no-privileges');
  if (opts.noTablespaces) args.push('--no-tablespaces');
  if (opts.clean) args.push('--clean', '--if-exists', '--single-transaction');
  return args;
}

/**
 * Reads pg_restore --verbose's progress lines (dropped from the kept stderr, which keeps the
 * errors) and tells `dataLoaded` of each table whose data is in. One job: "processing data for
 * table "s.t"" starts a table's COPY, and the next progress line means it has ended (pg_restore
 * commits each COPY on its own outside --single-transaction). Parallel jobs: "finished item N
 * TABLE DATA t" (the table name alone).
 */
function progressReader(dataLoaded: NonNullable<RestoreOptions['dataLoaded']>): { line(line: string): boolean; end(): void } {
  let loading: string | undefined;
  const done = () => {
    if (loading === undefined) return;
    const qualified = loading;
    loading = undefined;
    dataLoaded({ qualified, name: qualified.slice(qualified.lastIndexOf('.') + 1) });
  };
  return {
    line(line: string): boolean {
      if (!line.startsWith('pg_restore: ') || /^pg_restore: (error|warning|detail|hint):/.test(line)) return false;
      done();
      const data = /^pg_restore: processing data for table "(.*)"$/.exec(line);
      if (data) loading = data[1];
      const finished = /^pg_restore: finished item \d+ TABLE DATA (.*)$/.exec(line);
      if (finished) dataLoaded({ name: finished[1] });
      return true;
    },
    // At a clean exit only: a table whose COPY failed is not "loaded".
    end: () => done(),
  };
}

async function restore(target: Target, raw: Readable, opts: RestoreOptions): Promise<void> {
  checkFormat(opts.format);
  const bin = await pgTool('pg_restore', target);
  const roleMap = opts.roleMap && Object.keys(opts.roleMap).length > 0 ? opts.roleMap : undefined;
  // --single-transaction (in-place restores) and the role-mapping script cannot run in parallel.
  const jobs = opts.clean || roleMap ? 1 : (opts.jobs ?? 1);
  const input = await materialize(raw, opts, jobs > 1);
  const selection = opts.only ? await onlyList(bin, input.path, opts) : undefined;
  try {
    const listArgs = selection ? [`--use-list=${selection.file}`] : [];
    if (roleMap) return await restoreWithRoleMap(bin, target, input.path ? undefined : raw, input.path, roleMap, opts, listArgs);
    const progress = opts.dataLoaded ? progressReader(opts.dataLoaded) : undefined;
    const args = [...restoreArgs(target, opts), ...listArgs, ...(progress ? ['--verbose'] : [])];
    if (!input.path) {
      await runFed(bin, args, raw, restoreEnv(target), opts, 'pg_restore', progress?.line);
      progress?.end();
      return;
    }
    const tool = startTool(bin, [...args, ...(jobs > 1 ? [`--jobs=${jobs}`] : []), input.path], { env: restoreEnv(target), signal: opts.signal, workers: jobs > 1, stderrLine: progress?.line });
    tool.stdout.resume();
    const exit = await tool.exit;
    if (exit.code !== 0) throw restoreFailure('pg_restore', exit);
    progress?.end();
  } finally {
    await selection?.cleanup();
    await input.cleanup();
  }
}

/**
 * The --use-list file of a restore of some tables' data only (tables.ts): the table of contents
 * comes from the unpacked dump, else from the head of a second stream of the artifact.
 */
async function onlyList(bin: string, inputPath: string | undefined, opts: RestoreOptions): Promise<{ file: string; cleanup(): Promise<void> }> {
  let head: { list: string; ddl: string };
  if (inputPath) {
    const list = await runTool(bin, ['--list', inputPath], { signal: opts.signal });
    if (list.code !== 0) throw notReadable(list);
    const ddl = await runTool(bin, ['--schema-only', '--file=-', inputPath], { signal: opts.signal });
    if (ddl.code !== 0) throw notReadable(ddl);
    head = { list: list.stdout, ddl: ddl.stdout };
  } else if (isHead(opts.toc)) {
    head = opts.toc;
  } else {
    if (!opts.reread) throw new RestoreError('[postgres] a restore of some tables needs to read the dump\'s head first');
    const raw = await opts.reread();
    try {
      head = await readHead(raw, opts.signal);
    } finally {
      raw.destroy();
    }
  }
  const dir = await makeScratchDir(opts.tempDir, 'pglist');
  try {
    return { file: await writeOnlyList(head, opts.only!, dir), cleanup: () => fsp.rm(dir, { recursive: true, force: true }) };
  } catch (err) {
    await fsp.rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * --role-map: pg_restore writes the SQL script, ownership and grant statements naming a mapped
 * role are rewritten (COPY data is passed through untouched), and psql runs it stopping at the
 * first error. Slower than a direct restore (no --jobs), but every object keeps an owner.
 */
async function restoreWithRoleMap(
  bin: string,
  target: Target,
  raw: Readable | undefined,
  inputPath: string | undefined,
  roleMap: Record<string, string>,
  opts: RestoreOptions,
  listArgs: string[],
): Promise<void> {
  const psql = await pgTool('psql', target);
  const scriptArgs = [
    ...listArgs,
    ...(opts.noOwner ? ['--no-owner'] : []),
    ...(opts.noPrivileges ? ['--no-privileges'] : []),
    ...(opts.noTablespaces ? ['--no-tablespaces'] : []),
    ...(opts.clean ? ['--clean', '--if-exists'] : []),
    '--file=-',
  ];
  const script = startTool(bin, inputPath ? [...scriptArgs, inputPath] : scriptArgs, { signal: opts.signal, stdin: raw ? 'pipe' : 'ignore', bulkOutput: true });
  const args = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', ...(opts.clean ? ['--single-transaction'] : []), '--no-password', '-f', '-'];
  const apply = startTool(psql, args, { env: restoreEnv(target), signal: opts.signal, stdin: 'pipe' });
  apply.stdout.resume();
  const rewritten = pipeline(script.stdout, rewriteRoles(roleMap), apply.child.stdin).catch(() => {});
  if (raw) {
    try {
      await feed(raw, [script.child.stdin]);
    } catch (err) {
      apply.child.kill('SIGKILL');
      script.child.kill('SIGKILL');
      await Promise.all([script.exit, apply.exit]);
      throw err;
    }
  }
  const [scriptExit, applyExit] = await Promise.all([script.exit, apply.exit, rewritten]);
  if (scriptExit.code !== 0) throw restoreFailure('pg_restore', scriptExit);
  if (applyExit.code !== 0) throw restoreFailure('psql', applyExit);
}

/** Drops CREATE/ALTER ROLE statements for roles that already exist, so existing roles keep their passwords. */
class SkipExistingRoles extends Transform {
  private rest = '';
  private readonly text = new StringDecoder('utf8');
  skipped = 0;
  constructor(private readonly existing: Set<string>) {
    super();
  }
  private keep(line: string): boolean {
    const m = /^(?:CREATE|ALTER) ROLE ("(?:[^"]|"")+"|\S+?)[ ;]/.exec(line);
    if (!m) return true;
    const name = m[1].startsWith('"') ? m[1].slice(1, -1).replace(/""/g, '"') : m[1];
    if (!this.existing.has(name)) return true;
    if (line.startsWith('CREATE')) this.skipped++;
    return false;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    const lines = (this.rest + this.text.write(chunk)).split('\n');
    this.rest = lines.pop() ?? '';
    done(null, lines.filter((l) => this.keep(l)).map((l) => l + '\n').join(''));
  }
  override _flush(done: TransformCallback): void {
    this.rest += this.text.end();
    done(null, this.rest && this.keep(this.rest) ? this.rest : '');
  }
}

async function restoreGlobals(target: Target, raw: Readable, opts: RestoreOptions): Promise<void> {
  const existing = await onServer(target, async (c) => new Set((await c.query<{ rolname: string }>('SELECT rolname FROM pg_roles')).rows.map((r) => r.rolname)));
  const psql = await pgTool('psql', target);
  const filter = new SkipExistingRoles(existing);
  const env = libpqEnv(target, 'postgres');
  raw.on('error', (err) => filter.destroy(err));
  raw.pipe(filter);
  const exit = await runFed(psql, ['-X', '-q', '--no-password', '-f', '-'], filter, env, opts, 'psql (globals)');
  if (filter.skipped > 0) opts.warn(`[postgres] globals: ${filter.skipped} role(s) already exist on the target server and were left as they are`);
  const errors = exit.stderr.split('\n').filter((l) => /ERROR/.test(l));
  if (errors.length > 0) opts.warn(`[postgres] globals: ${errors.length} statement(s) failed, e.g. ${errors[0].trim()}`);
}

/** Tables up to this size are counted exactly for a plan: cheaper than being wrong. */
const EXACT_COUNT_BYTES = 64 << 20;

/**
 * Rows per table for a restore plan, cheaply but never wildly wrong: small tables are counted;
 * larger ones are estimated from the planner's rows per page times the table's pages now (as the
 * planner itself scales), and a large table never analyzed is marked unknown rather than guessed.
 */
async function estimateTables(client: PgClient): Promise<TableStat[]> {
  const { rows } = await client.query<{ schema: string; name: string; tuples: string; pages: string; bytes: string; blocksize: string }>(
    `SELECT t.schema, t.name, c.reltuples::bigint AS tuples, c.relpages AS pages, pg_relation_size(c.oid) AS bytes,
            current_setting('block_size') AS blocksize
     FROM (${USER_TABLES_SQL}) t
     JOIN pg_namespace n ON n.nspname = t.schema JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name`,
  );
  const stats: TableStat[] = [];
  for (const { schema, name, tuples, pages, bytes, blocksize } of rows) {
    const size = Number(bytes);
    if (size <= EXACT_COUNT_BYTES) {
      const r = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${quoteIdent(schema)}.${quoteIdent(name)}`);
      stats.push({ schema, name, rows: Number(r.rows[0].n) });
    } else if (Number(tuples) >= 0 && Number(pages) > 0) {
      stats.push({ schema, name, rows: Math.round((Number(tuples) / Number(pages)) * (size / Number(blocksize))) });
    } else {
      stats.push({ schema, name, rows: 0, rowsUnknown: true });
    }
  }
  return stats;
}

async function withClient<T>(target: Target, work: (client: PgClient) => Promise<T>): Promise<T> {
  const client = await connect(target);
  try {
    return await work(client);
  } catch (err) {
    throw classifyPgError(err, target);
  } finally {
    await client.end().catch(() => {});
  }
}

async function listTables(target: Target): Promise<{ schema: string; name: string }[]> {
  return withClient(target, async (c) => (await c.query<{ schema: string; name: string }>(USER_TABLES_SQL)).rows);
}

/** How long an early count runs before it starts watching for sessions it holds up, and how often it looks. */
const GIVE_WAY_AFTER_MS = 100;
const GIVE_WAY_EVERY_MS = 50;

/**
 * Exact counts of these tables on one connection. With `giveWay` (an early count, while the
 * restore goes on), the count gives way to the restore: a count holds its table's share lock,
 * and pg_restore's next step on a table just loaded is often `ADD CONSTRAINT … PRIMARY KEY`,
 * which needs an exclusive one and would wait for the whole count (a second on a 10-million-row
 * table). Once the count has run for GIVE_WAY_AFTER_MS, a second connection looks for a session
 * waiting on it; if there is one, the count is cancelled and fails, and its tables are counted
 * after the restore instead (restore/counts.ts).
 */
async function countRows(target: Target, tables: { schema: string; name: string }[], signal?: AbortSignal, opts: { giveWay?: boolean } = {}): Promise<TableStat[]> {
  if (!opts.giveWay) return withClient(target, (c) => countThese(c, tables, false, () => !!signal?.aborted));
  return withClient(target, async (c) => {
    const pid = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
    const watch = giveWay(target, pid);
    try {
      return await countThese(c, tables, false, () => !!signal?.aborted || watch.cancelled);
    } finally {
      await watch.stop();
    }
  });
}

/** Cancels backend `pid`'s query once another session waits for a lock it holds (see countRows). */
function giveWay(target: Target, pid: number): { readonly cancelled: boolean; stop(): Promise<void> } {
  const stopping = new AbortController();
  let cancelled = false;
  const watching = (async () => {
    let client: PgClient | undefined;
    try {
      await sleep(GIVE_WAY_AFTER_MS, undefined, { signal: stopping.signal });
      client = await connect(target, target.database, stopping.signal);
      for (;;) {
        const { rows } = await client.query<{ waiting: boolean }>('SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE $1 = ANY (pg_blocking_pids(pid))) AS waiting', [pid]);
        if (rows[0].waiting && !stopping.signal.aborted) {
          cancelled = true;
          await client.query('SELECT pg_cancel_backend($1)', [pid]);
          return;
        }
        await sleep(GIVE_WAY_EVERY_MS, undefined, { signal: stopping.signal });
      }
    } catch {
      // Stopped, or the watch itself failed: the count simply runs to its end.
    } finally {
      await client?.end().catch(() => {});
    }
  })();
  return {
    get cancelled() {
      return cancelled;
    },
    async stop() {
      stopping.abort();
      await watching;
    },
  };
}

async function tableStats(target: Target, opts: { checksums: boolean; estimate?: boolean }): Promise<TableStat[]> {
  return withClient(target, (c) => (opts.estimate && !opts.checksums ? estimateTables(c) : countTables(c, opts.checksums)));
}

async function sessions(client: PgClient, database: string) {
  return (
    await client.query<{ pid: number; usename: string | null; application_name: string; client_addr: string | null; state: string | null }>(
      `SELECT pid, usename, application_name, host(client_addr) AS client_addr, state FROM pg_stat_activity
       WHERE datname = $1 AND pid <> pg_backend_pid() ORDER BY pid`,
      [database],
    )
  ).rows;
}

/** The advisory lock's first key: "dbst", so dbstash's restore locks stay apart from other users' advisory locks. */
const RESTORE_LOCK_CLASS = 0x64627374;

export const postgresRestoreMethods: Partial<Engine> = {
  dumpTables,
  placeBeside,
  readRows,
  readRendered,
  replaceImpact,
  replaceTables,
  checkStructure,
  checkGlobals,
  prepareDrill,
  restore,
  prepareRestore(target: Target): void {
    findPgTool('pg_restore', 0, target.options.binDir).catch(() => {});
  },
  restoreGlobals,
  tableStats,
  listTables,
  countRows,

  async databaseExists(target: Target): Promise<boolean> {
    return onServer(target, async (c) => (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [target.database])).rowCount === 1);
  },

  async listDatabases(target: Target): Promise<string[]> {
    return onServer(target, async (c) => (await c.query<{ datname: string }>('SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1')).rows.map((r) => r.datname));
  },

  /**
   * With `properties` (the backup's), the new database gets them all: encoding and locale,
   * owner, settings, grants, comment, connection limit (see properties.ts). The owner is that
   * of the database it replaces, where this user may give it, when there are no properties or
   * with --no-owner; otherwise the restoring user.
   */
  async createDatabase(target: Target, name: string, opts: CreateDatabaseOptions = {}): Promise<Target> {
    await onServer(target, async (c) => {
      const current = await c.query<{ owner: string; may: boolean }>(
        `SELECT pg_get_userbyid(datdba) AS owner, pg_has_role(current_user, datdba, 'MEMBER') AS may FROM pg_database WHERE datname = $1`,
        [target.database],
      );
      const replacedOwner = current.rows[0]?.may ? current.rows[0].owner : undefined;
      if (opts.properties) {
        const fallback = replacedOwner ?? (await c.query<{ u: string }>('SELECT current_user AS u')).rows[0].u;
        await createWithProperties(c, name, asPgProperties(opts.properties), opts, fallback, where(target));
        return;
      }
      await c.query(`CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0${replacedOwner ? ` OWNER ${quoteIdent(replacedOwner)}` : ''}`);
    });
    return withDatabase(target, name);
  },

  async databaseProperties(target: Target): Promise<DatabaseProperties> {
    return onServer(target, async (c) => {
      const properties = await readProperties(c, target.database);
      if (!properties) throw new RestoreError(`[postgres] database "${target.database}" does not exist at ${where(target)}`);
      return properties as unknown as DatabaseProperties;
    });
  },

  async compareProperties(target: Target, expected: DatabaseProperties, opts: CreateDatabaseOptions = {}): Promise<string[]> {
    const actual = (await postgresRestoreMethods.databaseProperties!(target)) as unknown as PgDatabaseProperties;
    return differences(asPgProperties(expected), actual, opts);
  },

  /** Both renames in one transaction on one connection: either both happen or neither. */
  async swapDatabases(target: Target, restored: Target, keptName: string): Promise<Target> {
    await onServer(target, async (c) => {
      await c.query('BEGIN');
      try {
        await c.query(`ALTER DATABASE ${quoteIdent(target.database)} RENAME TO ${quoteIdent(keptName)}`);
        await c.query(`ALTER DATABASE ${quoteIdent(restored.database)} RENAME TO ${quoteIdent(target.database)}`);
      } catch (err) {
        await c.query('ROLLBACK').catch(() => {});
        throw new RestoreError(`[postgres] the swap was rolled back, ${target.database} and ${restored.database} keep their names: ${(err as Error).message}`, {
          hint: `${target.database} is as it was; remove the cause (a session connected to either database?) and run the restore again`,
          cause: err,
        });
      }
      try {
        await c.query('COMMIT');
      } catch (err) {
        throw new RestoreError(`[postgres] the swap's commit failed, so whether ${target.database} is the restored database is unknown: ${(err as Error).message}`, {
          hint: `look at the database names on the server: ${keptName} exists only if the swap happened`,
          cause: err,
        });
      }
    });
    return withDatabase(target, keptName);
  },

  /**
   * pg_try_advisory_lock on a connection to the maintenance database, held until release(): the
   * server drops the lock with the connection, so a restore killed with SIGKILL holds nothing.
   * Advisory locks belong to one database; every dbstash takes this one in the same maintenance
   * database, keyed by the target's name.
   */
  async lockRestoreTarget(target: Target, signal?: AbortSignal): Promise<{ release(): Promise<void> }> {
    const client = await maintenance(target, signal);
    const key = [RESTORE_LOCK_CLASS, target.database];
    try {
      const r = await client.query<{ got: boolean; version: string }>(
        `SELECT pg_try_advisory_lock($1, hashtext($2)) AS got, current_setting('server_version_num') AS version`,
        key,
      );
      if (!r.rows[0].got) {
        const holder = await client.query<{ pid: number; since: string; client_addr: string | null }>(
          `SELECT a.pid, to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') AS since, host(a.client_addr) AS client_addr
           FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
           WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = $1::oid
             AND l.objid::bigint = (hashtext($2)::bigint + 4294967296) % 4294967296`,
          key,
        );
        const h = holder.rows[0];
        const by = h ? ` (server session pid ${h.pid}${h.client_addr ? ` from ${h.client_addr}` : ''}, connected since ${h.since} UTC)` : '';
        throw new RestoreError(`[postgres] another restore into ${target.database} is running${by}`, {
          hint: 'wait for it to finish, then run again; the lock goes with that restore\'s connection, so a killed restore holds nothing',
        });
      }
      // The connection idles for the whole restore; a server-wide idle timeout must not end it.
      if (Number(r.rows[0].version) >= 140000) await client.query('SET idle_session_timeout = 0');
    } catch (err) {
      await client.end().catch(() => {});
      if (err instanceof RestoreError) throw err;
      throw classifyPgError(err, target);
    }
    return { release: () => client.end().catch(() => {}) };
  },

  async dropDatabase(target: Target): Promise<void> {
    await onServer(target, (c) => c.query(`DROP DATABASE IF EXISTS ${quoteIdent(target.database)}`));
  },

  async renameDatabase(target: Target, newName: string): Promise<Target> {
    await onServer(target, (c) => c.query(`ALTER DATABASE ${quoteIdent(target.database)} RENAME TO ${quoteIdent(newName)}`));
    return withDatabase(target, newName);
  },

  async listSessions(target: Target): Promise<string[]> {
    return onServer(target, async (c) =>
      (await sessions(c, target.database)).map(
        (s) => `pid ${s.pid} user ${s.usename ?? '?'}${s.client_addr ? ` from ${s.client_addr}` : ' (local)'}${s.application_name ? ` app "${s.application_name}"` : ''}${s.state ? `, ${s.state}` : ''}`,
      ),
    );
  },

  async terminateSessions(target: Target): Promise<number> {
    return onServer(target, async (c) => {
      const r = await c.query(
        `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()`,
        [target.database],
      );
      return r.rowCount ?? 0;
    });
  },

  async swapBlocker(target: Target): Promise<string | undefined> {
    return onServer(target, async (c) => {
      const r = await c.query<{ createdb: boolean; owner: boolean }>(
        `SELECT r.rolcreatedb OR r.rolsuper AS createdb,
                coalesce((SELECT pg_has_role(current_user, d.datdba, 'USAGE') OR r.rolsuper FROM pg_database d WHERE d.datname = $1), true) AS owner
         FROM pg_roles r WHERE r.rolname = current_user`,
        [target.database],
      );
      const row = r.rows[0];
      if (!row?.createdb) return `user "${target.user ?? 'current'}" has no CREATEDB privilege`;
      if (!row.owner) return `user "${target.user ?? 'current'}" does not own database "${target.database}", so it cannot rename it`;
      return undefined;
    });
  },

  startScratchServer: startScratchPostgres,
};
