// PostgreSQL connections for dbstash's own queries (probe, snapshot, row counts), cancelling what
// they run on the server, and the environment handed to libpq tools. Errors are classified here,
// once, for every PostgreSQL path.

import net from 'node:net';
import path from 'node:path';
import type { Client, ClientConfig } from 'pg';
import pg from './driver.js';
import { onAbort } from '../../core/abort.js';
import { ConnectionError, DbstashError, PreflightError } from '../../core/errors.js';
import type { Target } from '../engine.js';

export type PgClient = Client;

function sslOption(target: Target): ClientConfig['ssl'] {
  const mode = target.params.sslmode;
  if (!mode || mode === 'disable' || mode === 'allow' || mode === 'prefer') return undefined;
  return { rejectUnauthorized: mode === 'verify-ca' || mode === 'verify-full' };
}

export function clientConfig(target: Target, database = target.database): ClientConfig {
  return {
    host: target.host,
    port: target.port,
    user: target.user,
    password: target.password,
    database,
    ssl: sslOption(target),
    application_name: 'dbstash',
    connectionTimeoutMillis: 15_000,
  };
}

/** libpq environment for pg_dump/pg_restore/psql: no secret ever goes on a command line. */
export function libpqEnv(target: Target, database = target.database): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PGAPPNAME: 'dbstash', PGCONNECT_TIMEOUT: '15', PGDATABASE: database };
  if (target.host) env.PGHOST = target.host;
  if (target.port) env.PGPORT = String(target.port);
  if (target.user) env.PGUSER = target.user;
  if (target.password) env.PGPASSWORD = target.password;
  if (target.params.sslmode) env.PGSSLMODE = target.params.sslmode;
  return env;
}

/**
 * The environment pg_restore and psql restore with. The database may carry the backup's
 * `ALTER DATABASE … SET default_transaction_read_only = on` already; the restoring session
 * overrides it (as pg_dumpall's scripts do), since a client's options outrank database settings.
 */
export function restoreEnv(target: Target): NodeJS.ProcessEnv {
  const env = libpqEnv(target);
  env.PGOPTIONS = [env.PGOPTIONS, '-c default_transaction_read_only=off'].filter(Boolean).join(' ');
  return env;
}

function where(target: Target): string {
  return `${target.host ?? 'localhost'}:${target.port ?? 5432}`;
}

export function classifyPgError(err: unknown, target: Target, database = target.database): DbstashError {
  const e = err as { code?: string; message?: string };
  const msg = e.message ?? String(err);
  switch (e.code) {
    case '28P01':
    case '28000': {
      const role = /role "((?:[^"]|"")*)" does not exist/.exec(msg)?.[1];
      if (role !== undefined) {
        return new ConnectionError(`[postgres] role "${role}" does not exist at ${where(target)}`, {
          hint: 'check the user name in the URL (or PGUSER), or create the role on the server (CREATE ROLE … LOGIN)',
          cause: err,
        });
      }
      if (/no pg_hba\.conf entry/.test(msg)) {
        return new ConnectionError(`[postgres] the server at ${where(target)} does not let user "${target.user ?? process.env.PGUSER ?? 'default'}" connect to "${database}" from here (pg_hba.conf)`, {
          hint: 'add a pg_hba.conf line for this user, database and address on the server, then reload it',
          cause: err,
        });
      }
      return new ConnectionError(`[postgres] authentication failed for user "${target.user ?? process.env.PGUSER ?? 'default'}" at ${where(target)}`, {
        hint: 'check the password in the URL, DATABASE_URL or PGPASSWORD',
        cause: err,
      });
    }
    case '3D000':
      return new PreflightError(`[postgres] database "${database}" does not exist at ${where(target)}`, {
        hint: 'check the database name, or create it first (createdb)',
        cause: err,
      });
    case 'ECONNREFUSED':
      return new ConnectionError(`[postgres] connection refused at ${where(target)}`, {
        hint: 'is the server running and listening on that host and port?',
        cause: err,
      });
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ConnectionError(`[postgres] host "${target.host}" not found`, { hint: 'check the host name in the URL', cause: err });
    case 'ETIMEDOUT':
      return new ConnectionError(`[postgres] connection to ${where(target)} timed out`, { hint: 'check the host, port and firewall', cause: err });
    default:
      if (/timeout/i.test(msg)) {
        return new ConnectionError(`[postgres] connection to ${where(target)} timed out`, { hint: 'check the host, port and firewall', cause: err });
      }
      if (/password authentication|SASL|no password/i.test(msg)) {
        return new ConnectionError(`[postgres] authentication failed at ${where(target)}: ${msg}`, {
          hint: 'check the password in the URL, DATABASE_URL or PGPASSWORD',
          cause: err,
        });
      }
      return new ConnectionError(`[postgres] cannot connect to ${where(target)}: ${msg}`, { cause: err });
  }
}

/**
 * Closes the client's socket when `signal` aborts, so that a connection attempt or a query that
 * hangs (an unresponsive server, a firewall dropping packets) ends at once instead of after the
 * 15 s connect timeout or never. Returns the function that unhooks it.
 */
export function closeOnAbort(client: PgClient, signal: AbortSignal | undefined): () => void {
  return onAbort(signal, () => client.connection.stream.destroy());
}

/** The protocol's CancelRequest code (1234 << 16 | 5678). */
const CANCEL_REQUEST_CODE = 80877102;

/**
 * Asks the server to cancel whatever `client`'s backend is running, as libpq's PQcancel does: a
 * CancelRequest with the backend's pid and secret key over a connection of its own, which needs
 * no authentication. A backend waiting for a lock or counting rows does not notice that its client
 * went away, so closing our socket alone would leave the query running on the server. Resolves
 * once the server has taken the request (it closes that connection), or after `timeoutMs`;
 * never rejects: a cancel that could not be delivered leaves the server-side timeouts to end it.
 */
export function cancelRunningQuery(client: PgClient, timeoutMs = 2000): Promise<void> {
  const { processID, secretKey, host, port } = client as PgClient & { processID: number | null; secretKey: number | null };
  if (processID === null || processID === undefined || secretKey === null || secretKey === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const socket = host?.startsWith('/') ? net.connect(path.join(host, `.s.PGSQL.${port}`)) : net.connect(port, host || 'localhost');
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    };
    const timer = setTimeout(done, timeoutMs);
    socket.once('connect', () => {
      const request = Buffer.alloc(16);
      request.writeInt32BE(16, 0);
      request.writeInt32BE(CANCEL_REQUEST_CODE, 4);
      request.writeInt32BE(processID | 0, 8);
      request.writeInt32BE(secretKey | 0, 12);
      socket.end(request);
    });
    socket.once('close', done);
    socket.once('error', done);
  });
}

/** A connected client; with `signal`, an abort while connecting rejects with the signal's reason. */
export async function connect(target: Target, database = target.database, signal?: AbortSignal): Promise<PgClient> {
  signal?.throwIfAborted();
  const client = new pg.Client(clientConfig(target, database));
  client.on('error', () => {
    /* reported through the pending query instead */
  });
  const unhook = closeOnAbort(client, signal);
  try {
    await client.connect();
    return client;
  } catch (err) {
    await client.end().catch(() => {});
    signal?.throwIfAborted();
    throw classifyPgError(err, target, database);
  } finally {
    unhook();
  }
}

/**
 * Runs `work` on a new connection to target's database and always closes it; an error of
 * dbstash's own passes through, any other is classified.
 */
export async function onDatabase<T>(target: Target, work: (c: PgClient) => Promise<T>, signal?: AbortSignal): Promise<T> {
  const client = await connect(target, target.database, signal);
  try {
    return await work(client);
  } catch (err) {
    throw err instanceof DbstashError ? err : classifyPgError(err, target);
  } finally {
    await client.end().catch(() => {});
  }
}

/**
 * The database for a libpq tool's --dbname/--database: libpq reads that value as a connection
 * string when it contains "=" or starts with postgres://, so a database named "a=b" must be
 * passed as dbname='a=b' (quoted and escaped), never as is.
 */
export function dbnameArg(database: string): string {
  return `dbname='${database.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** A string literal that reads the same whatever standard_conforming_strings says. */
export function quoteLiteral(value: string): string {
  const quoted = `'${value.replace(/'/g, "''")}'`;
  return value.includes('\\') ? `E${quoted.replace(/\\/g, '\\\\')}` : quoted;
}
