// The verify/restore half of the PostgreSQL engine: structure checks with pg_restore, restores
// with pg_restore --exit-on-error (streamed into its stdin, or from a temp file for --jobs), the
// globals artifact with psql, and the database-level operations a restore swap needs. dbstash's
// own queries run on the server's maintenance database, never inside the database they change.

import { createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { Transform, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { StringDecoder } from 'node:string_decoder';
import { IntegrityError, PreflightError, RestoreError } from '../../core/errors.js';
import { makeScratchDir } from '../../core/scratch.js';
import { withDatabase, type Engine, type RestoreOptions, type TableStat, type Target } from '../engine.js';
import { feed } from '../feed.js';
import { describeExit, runTool, startTool, stderrSummary, type ToolExit } from '../process.js';
import { classifyPgError, connect, dbnameArg, libpqEnv, quoteIdent, type PgClient } from './connection.js';
import { countTables, USER_TABLES_SQL } from './index.js';
import { DIRECTORY_FORMAT, unpackDirectoryDump } from './parallel.js';
import { rewriteRoles } from './roles.js';
import { startScratchPostgres } from './scratch.js';
import { findPgTool, majorOf } from './tools.js';

/** A connection to the server's maintenance database ("postgres", else "template1"). */
async function maintenance(target: Target): Promise<PgClient> {
  try {
    return await connect(target, 'postgres');
  } catch (err) {
    if (err instanceof PreflightError) return connect(target, 'template1');
    throw err;
  }
}

async function onServer<T>(target: Target, work: (client: PgClient) => Promise<T>): Promise<T> {
  const client = await maintenance(target);
  try {
    return await work(client);
  } catch (err) {
    if (err instanceof RestoreError || err instanceof PreflightError) throw err;
    const code = (err as { code?: string }).code;
    if (code && /^[0-9A-Z]{5}$/.test(code) && !code.startsWith('28')) {
      throw new RestoreError(`[postgres] ${(err as Error).message}`, { cause: err });
    }
    throw classifyPgError(err, target);
  } finally {
    await client.end().catch(() => {});
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
 * Feeds `raw` to a tool's stdin; a tool that exits non-zero is a RestoreError. On an input error
 * the tool is killed before its input is closed, so it never mistakes damaged input for a clean end.
 */
async function runFed(bin: string, args: string[], raw: Readable, env: NodeJS.ProcessEnv, opts: RestoreOptions, what: string): Promise<ToolExit> {
  const tool = startTool(bin, args, { env, signal: opts.signal, stdin: 'pipe' });
  tool.stdout.resume();
  try {
    await feed(raw, [tool.child.stdin]);
  } catch (err) {
    tool.child.kill('SIGKILL');
    await tool.exit;
    throw err;
  }
  const exit = await tool.exit;
  if (exit.code !== 0) throw new RestoreError(`[postgres] ${describeExit(what, exit)}`);
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
  if (format !== 'dump' && format !== DIRECTORY_FORMAT) throw new IntegrityError(`[postgres] unknown artifact format "${format}"`);
}

function notReadable(exit: { code: number | null; stderr: string }): IntegrityError {
  return new IntegrityError(`[postgres] the dump does not read back: pg_restore: ${stderrSummary(exit.stderr) || `exit code ${exit.code}`}`);
}

async function checkStructure(raw: Readable, opts: RestoreOptions): Promise<string> {
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
      return count(list.stdout);
    } finally {
      await input.cleanup();
    }
  }
  // --list reads the table of contents; --file=/dev/null reads every data block to the end.
  const list = startTool(bin, ['--list'], { signal: opts.signal, stdin: 'pipe' });
  const full = startTool(bin, ['--file=/dev/null'], { signal: opts.signal, stdin: 'pipe' });
  let toc = '';
  list.stdout.setEncoding('utf8').on('data', (d: string) => (toc += d));
  full.stdout.resume();
  try {
    await feed(raw, [list.child.stdin, full.child.stdin]);
  } catch (err) {
    list.child.kill('SIGKILL');
    full.child.kill('SIGKILL');
    await Promise.all([list.exit, full.exit]);
    throw err;
  }
  const [listExit, fullExit] = await Promise.all([list.exit, full.exit]);
  for (const exit of [listExit, fullExit]) if (exit.code !== 0) throw notReadable(exit);
  return count(toc);
}

function restoreArgs(target: Target, opts: RestoreOptions): string[] {
  const args = ['--no-password', '--exit-on-error', `--dbname=${dbnameArg(target.database)}`];
  if (opts.noOwner) args.push('--no-owner');
  if (opts.noPrivileges) args.push('--no-privileges');
  if (opts.clean) args.push('--clean', '--if-exists', '--single-transaction');
  return args;
}

async function restore(target: Target, raw: Readable, opts: RestoreOptions): Promise<void> {
  checkFormat(opts.format);
  const bin = await pgTool('pg_restore', target);
  const roleMap = opts.roleMap && Object.keys(opts.roleMap).length > 0 ? opts.roleMap : undefined;
  // --single-transaction (in-place restores) and the role-mapping script cannot run in parallel.
  const jobs = opts.clean || roleMap ? 1 : (opts.jobs ?? 1);
  const input = await materialize(raw, opts, jobs > 1);
  try {
    if (roleMap) return await restoreWithRoleMap(bin, target, input.path ? undefined : raw, input.path, roleMap, opts);
    const args = restoreArgs(target, opts);
    if (!input.path) {
      await runFed(bin, args, raw, libpqEnv(target), opts, 'pg_restore');
      return;
    }
    const tool = startTool(bin, [...args, ...(jobs > 1 ? [`--jobs=${jobs}`] : []), input.path], { env: libpqEnv(target), signal: opts.signal, workers: jobs > 1 });
    tool.stdout.resume();
    const exit = await tool.exit;
    if (exit.code !== 0) throw new RestoreError(`[postgres] ${describeExit('pg_restore', exit)}`);
  } finally {
    await input.cleanup();
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
): Promise<void> {
  const psql = await pgTool('psql', target);
  const scriptArgs = [...(opts.noOwner ? ['--no-owner'] : []), ...(opts.noPrivileges ? ['--no-privileges'] : []), ...(opts.clean ? ['--clean', '--if-exists'] : []), '--file=-'];
  const script = startTool(bin, inputPath ? [...scriptArgs, inputPath] : scriptArgs, { signal: opts.signal, stdin: raw ? 'pipe' : 'ignore', bulkOutput: true });
  const args = ['-X', '-q', '-v', 'ON_ERROR_STOP=1', ...(opts.clean ? ['--single-transaction'] : []), '--no-password', '-f', '-'];
  const apply = startTool(psql, args, { env: libpqEnv(target), signal: opts.signal, stdin: 'pipe' });
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
  if (scriptExit.code !== 0) throw new RestoreError(`[postgres] ${describeExit('pg_restore', scriptExit)}`);
  if (applyExit.code !== 0) throw new RestoreError(`[postgres] ${describeExit('psql', applyExit)}`);
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

/** Planner statistics instead of count(*); a table without statistics is probed for one row. */
async function estimateTables(client: PgClient): Promise<TableStat[]> {
  const { rows } = await client.query<{ schema: string; name: string; estimate: string }>(
    `SELECT t.schema, t.name, c.reltuples::bigint AS estimate FROM (${USER_TABLES_SQL}) t
     JOIN pg_namespace n ON n.nspname = t.schema JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = t.name`,
  );
  const stats: TableStat[] = [];
  for (const { schema, name, estimate } of rows) {
    let n = Number(estimate);
    if (n <= 0) {
      const probe = await client.query(`SELECT 1 FROM ONLY ${quoteIdent(schema)}.${quoteIdent(name)} LIMIT 1`);
      n = probe.rowCount ?? 0;
    }
    stats.push({ schema, name, rows: n });
  }
  return stats;
}

async function tableStats(target: Target, opts: { checksums: boolean; estimate?: boolean }): Promise<TableStat[]> {
  const client = await connect(target);
  try {
    return opts.estimate && !opts.checksums ? await estimateTables(client) : await countTables(client, opts.checksums);
  } catch (err) {
    throw classifyPgError(err, target);
  } finally {
    await client.end().catch(() => {});
  }
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

export const postgresRestoreMethods: Partial<Engine> = {
  checkStructure,
  restore,
  restoreGlobals,
  tableStats,

  async databaseExists(target: Target): Promise<boolean> {
    return onServer(target, async (c) => (await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [target.database])).rowCount === 1);
  },

  async listDatabases(target: Target): Promise<string[]> {
    return onServer(target, async (c) => (await c.query<{ datname: string }>('SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1')).rows.map((r) => r.datname));
  },

  /** A database that will replace target gets target's owner, where this user may give it. */
  async createDatabase(target: Target, name: string): Promise<Target> {
    await onServer(target, async (c) => {
      const current = await c.query<{ owner: string; may: boolean }>(
        `SELECT pg_get_userbyid(datdba) AS owner, pg_has_role(current_user, datdba, 'MEMBER') AS may FROM pg_database WHERE datname = $1`,
        [target.database],
      );
      const owner = current.rows[0]?.may ? ` OWNER ${quoteIdent(current.rows[0].owner)}` : '';
      await c.query(`CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0${owner}`);
    });
    return withDatabase(target, name);
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
