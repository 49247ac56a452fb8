// MySQL/MariaDB connections for dbstash's own queries (probe, snapshot, row counts) and the
// option file handed to the command-line tools. Errors are classified here, once, for every
// MySQL path. The password never reaches a command line: the tools read it from a 0600 option
// file in a private directory that is removed when the tool is done (also on failure).

import { rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import type { Socket } from 'node:net';
import path from 'node:path';
import { createConnection } from 'mysql2';
import type mysql from 'mysql2/promise';
import { onAbort } from '../../core/abort.js';
import { ConnectionError, DbstashError, PreflightError } from '../../core/errors.js';
import { makeScratchDir } from '../../core/scratch.js';
import type { Target } from '../engine.js';
import { IdleSessions } from '../idle.js';

export type MyConnection = mysql.Connection;

function isSocket(target: Target): string | undefined {
  if (target.params.socket) return target.params.socket;
  if (target.host?.startsWith('/')) return target.host;
  return undefined;
}

export function where(target: Target): string {
  return isSocket(target) ?? `${target.host ?? 'localhost'}:${target.port ?? 3306}`;
}

export function classifyMyError(err: unknown, target: Target, database: string | undefined = target.database): DbstashError {
  const e = err as { code?: string; errno?: number; message?: string };
  const msg = e.message ?? String(err);
  switch (e.code) {
    case 'ER_ACCESS_DENIED_ERROR':
    case 'ER_ACCESS_DENIED_NO_PASSWORD_ERROR':
    case 'ER_NOT_SUPPORTED_AUTH_MODE':
      return new ConnectionError(`[mysql] authentication failed for user "${target.user ?? 'root'}" at ${where(target)}`, {
        hint: 'check the user and password in the URL, DATABASE_URL or DB_USER/DB_PASSWORD',
        cause: err,
      });
    case 'ER_BAD_DB_ERROR':
      return new PreflightError(`[mysql] database "${database}" does not exist at ${where(target)}`, {
        hint: 'check the database name, or create it first (CREATE DATABASE …)',
        cause: err,
      });
    case 'ER_DBACCESS_DENIED_ERROR':
      return new ConnectionError(`[mysql] user "${target.user ?? 'root'}" may not access database "${database}" at ${where(target)}`, {
        hint: 'grant the user access to the database (GRANT SELECT, SHOW VIEW, TRIGGER, EVENT, LOCK TABLES ON db.* TO …)',
        cause: err,
      });
    case 'ECONNREFUSED':
      return new ConnectionError(`[mysql] connection refused at ${where(target)}`, { hint: 'is the server running and listening on that host and port?', cause: err });
    case 'ENOENT':
      return new ConnectionError(`[mysql] no server socket at ${where(target)}`, { hint: 'is the server running? check the socket path', cause: err });
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ConnectionError(`[mysql] host "${target.host}" not found`, { hint: 'check the host name in the URL', cause: err });
    case 'ETIMEDOUT':
      return new ConnectionError(`[mysql] connection to ${where(target)} timed out`, { hint: 'check the host, port and firewall', cause: err });
    default:
      return new ConnectionError(`[mysql] cannot connect to ${where(target)}: ${msg}`, { cause: err });
  }
}

/**
 * A connection to `database` (null: no default database), utf8mb4, dates and big numbers as
 * strings. An abort of `signal` closes it at once, while connecting too (an unresponsive server
 * would otherwise hold the run for the 15 s connect timeout), and rejects with the signal's reason.
 * `raw`: the driver sends every query string as bytes, one per character code (binary character
 * set, and no session tracking, which would make the driver follow SET character_set_client) —
 * for statements that must reach the server in the bytes of another character set.
 */
export async function connect(target: Target, database: string | null = target.database, signal?: AbortSignal, opts: { raw?: boolean } = {}): Promise<MyConnection> {
  signal?.throwIfAborted();
  const socket = isSocket(target);
  const core = createConnection({
    ...(socket ? { socketPath: socket } : { host: target.host, port: target.port }),
    user: target.user,
    password: target.password,
    database: database ?? undefined,
    charset: opts.raw ? 'BINARY' : 'utf8mb4_general_ci',
    ...(opts.raw ? { flags: ['-SESSION_TRACK'] } : {}),
    connectTimeout: 15_000,
    // dbstash sends no prepared statements; mysql2's cache of them takes four arrays of this many
    // slots per connection (16000 by default: ~0.5 MB allocated and filled per connection).
    maxPreparedStatements: 1,
    supportBigNumbers: true,
    bigNumberStrings: true,
    dateStrings: true,
  });
  let abortConnecting: ((reason: unknown) => void) | undefined;
  const unhook = onAbort(signal, () => {
    core.destroy();
    abortConnecting?.(signal?.reason);
  });
  try {
    const conn = await new Promise<MyConnection>((resolve, reject) => {
      abortConnecting = reject;
      core.once('connect', () => resolve(core.promise()));
      core.once('error', reject);
    });
    conn.on('error', () => {
      /* reported through the pending query instead */
    });
    // TIMESTAMP values read the same on every server (content checksums compare across servers).
    await conn.query(`SET time_zone = '+00:00'`);
    return conn;
  } catch (err) {
    core.destroy();
    signal?.throwIfAborted();
    throw classifyMyError(err, target, database ?? undefined);
  } finally {
    unhook();
  }
}

/**
 * One idle session without a default database is kept per server for the next question (idle.ts).
 * Sessions with a database are never kept: the server would list them as that database's.
 */
const idle = new IdleSessions<MyConnection>(2000, {
  socket: (conn) => streamOf(conn) as Partial<Socket> | undefined,
  close: (conn) => closeConnection(conn),
});

function streamOf(conn: MyConnection): (NodeJS.EventEmitter & { destroyed?: boolean }) | undefined {
  return (conn as unknown as { connection: { stream?: NodeJS.EventEmitter & { destroyed?: boolean } } }).connection.stream;
}

function idleKey(target: Target): string {
  return JSON.stringify([isSocket(target) ?? target.host, target.port, target.user, target.password]);
}

/**
 * Runs `fn` on a connection (to `database`, or none) and classifies its errors. Without a
 * database, the session kept idle by an earlier call is taken, and given back if `fn` succeeds;
 * every other connection is closed. `fn` must leave the session as it found it.
 */
export async function withConnection<T>(target: Target, database: string | null, fn: (conn: MyConnection) => Promise<T>): Promise<T> {
  const conn = (database === null ? await idle.take(idleKey(target)) : undefined) ?? (await connect(target, database));
  let done = false;
  try {
    const result = await fn(conn);
    done = true;
    return result;
  } catch (err) {
    if (err instanceof DbstashError) throw err;
    throw classifyMyError(err, target, database ?? undefined);
  } finally {
    await (done && database === null ? idle.giveBack(idleKey(target), conn) : closeConnection(conn));
  }
}

/**
 * Ends `conn` and waits until the server has closed it: the driver's end() returns before it has
 * even sent its goodbye, and a connection the server still lists would count as another session
 * of the database (a restore would refuse because of its own connection). Never throws.
 */
export async function closeConnection(conn: MyConnection): Promise<void> {
  const socket = streamOf(conn);
  const closed = socket && !socket.destroyed ? new Promise<void>((resolve) => socket.once('close', () => resolve())) : Promise.resolve();
  await conn.end().catch(() => conn.destroy());
  const timer = setTimeout(() => conn.destroy(), 5_000);
  await closed;
  clearTimeout(timer);
}

/** Closes `conn` when `signal` aborts, so a query that hangs ends at once. Returns the unhook. */
export function closeOnAbort(conn: MyConnection, signal: AbortSignal | undefined): () => void {
  return onAbort(signal, () => conn.destroy());
}

/** The current user's global privileges (upper case; "ALL PRIVILEGES" as such), from SHOW GRANTS. */
export async function globalPrivileges(conn: MyConnection): Promise<Set<string>> {
  const [grants] = await conn.query(`SHOW GRANTS`);
  const privileges = new Set<string>();
  for (const row of grants as Record<string, string>[]) {
    const m = /^GRANT (.+?) ON \*\.\* TO /i.exec(Object.values(row)[0]);
    if (m) for (const p of m[1].split(',')) privileges.add(p.trim().toUpperCase());
  }
  return privileges;
}

export function quoteIdent(name: string): string {
  return '`' + name.replace(/`/g, '``') + '`';
}

function optionValue(value: string): string {
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`;
}

/** A 0600 option file with the password, in a private directory; `remove()` is idempotent. */
export interface OptionFile {
  path: string;
  remove(): Promise<void>;
}

export async function writeOptionFile(target: Target, tempDir: string = os.tmpdir()): Promise<OptionFile> {
  const dir = await makeScratchDir(tempDir, 'mycnf');
  const file = path.join(dir, 'client.cnf');
  const lines = ['[client]'];
  if (target.password !== undefined) lines.push(`password=${optionValue(target.password)}`);
  await writeFile(file, lines.join('\n') + '\n', { mode: 0o600 });
  let removed = false;
  return {
    path: file,
    async remove() {
      if (removed) return;
      removed = true;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Command-line arguments for mariadb/mysql/mariadb-dump: the option file first (the tools insist),
 * then where to connect. Nothing secret: safe to record in the manifest. --defaults-file, not
 * --defaults-extra-file: the tools then read no other option file, so a ~/.my.cnf (often root's,
 * with its own password, or [mysqldump] settings such as skip-triggers) can neither replace the
 * URL's password nor change what the dump holds.
 */
export function toolConnectionArgs(target: Target, optionFile: string): string[] {
  const args = [`--defaults-file=${optionFile}`];
  const socket = isSocket(target);
  if (socket) args.push('--protocol=SOCKET', `--socket=${socket}`);
  else args.push('--protocol=TCP', `--host=${target.host ?? 'localhost'}`, `--port=${target.port ?? 3306}`);
  if (target.user) args.push(`--user=${target.user}`);
  return args;
}

/** The arguments as recorded: the option file's temporary path is replaced by a placeholder. */
export function recordedArgs(args: string[]): string[] {
  return args.map((a) => (a.startsWith('--defaults-file=') ? '--defaults-file=<temporary 0600 file>' : a));
}
