// Waiting for table locks during a dump. pg_dump takes ACCESS SHARE on every table it dumps and
// the row counts take it on every table they count; a session holding ACCESS EXCLUSIVE (an ALTER
// TABLE, a LOCK TABLE in a migration) would stall both for as long as it holds it. Both waits are
// bounded by the backup's lock-wait timeout (pg_dump --lock-wait-timeout, SET lock_timeout on the
// snapshot's transaction); when one runs out, the backup fails with one line that names the table
// and the session in the way, found in pg_locks and pg_stat_activity (pg_blocking_pids of whoever
// still waits for the table, and the holders of ACCESS EXCLUSIVE on it).

import { BackupError } from '../../core/errors.js';
import type { Target } from '../engine.js';
import { connect, quoteIdent } from './connection.js';

export interface TableName {
  schema: string;
  name: string;
}

/** A row count that gave up waiting for its table's lock (SQLSTATE 55P03, lock_not_available). */
export class CountLockTimeout extends Error {
  constructor(
    readonly table: TableName,
    cause: unknown,
  ) {
    super((cause as Error).message, { cause });
  }
}

export function isLockTimeout(err: unknown): boolean {
  return (err as { code?: string } | undefined)?.code === '55P03';
}

/** "30s", "1.5s", "800ms", "2m" — as a person would write the timeout. */
export function formatTimeout(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms >= 1000) return `${Number((ms / 1000).toFixed(3))}s`;
  return `${ms}ms`;
}

/** The value of SET lock_timeout for a timeout in ms (0: no limit). */
export function lockTimeoutSetting(ms: number): string {
  return `${Math.round(ms)}ms`;
}

const IDENT = /^(?:"((?:[^"]|"")*)"|([^".\s,]+))/;

/** "public.\"order line\"" → { schema: 'public', name: 'order line' }, as pg_dump prints qualified names. */
export function parseQualifiedName(text: string): { table: TableName; rest: string } | undefined {
  const part = (s: string): [string, string] | undefined => {
    const m = IDENT.exec(s);
    return m ? [m[1] !== undefined ? m[1].replace(/""/g, '"') : m[2], s.slice(m[0].length)] : undefined;
  };
  const schema = part(text);
  if (!schema || !schema[1].startsWith('.')) return undefined;
  const name = part(schema[1].slice(1));
  return name ? { table: { schema: schema[0], name: name[0] }, rest: name[1] } : undefined;
}

/**
 * The tables of a LOCK TABLE that pg_dump gave up on, from its stderr ("canceling statement due to
 * statement timeout" / "Query was: LOCK TABLE public.a[, public.b] IN ACCESS SHARE MODE"), or
 * undefined when pg_dump failed for another reason.
 */
export function pgDumpLockTimeout(stderr: string): TableName[] | undefined {
  if (!/canceling statement due to (statement|lock) timeout/.test(stderr)) return undefined;
  const m = /Query was: LOCK TABLE (.+) IN ACCESS SHARE MODE/.exec(stderr);
  if (!m) return undefined;
  const tables: TableName[] = [];
  let rest = m[1].replace(/^ONLY /, '');
  for (;;) {
    const parsed = parseQualifiedName(rest);
    if (!parsed) break;
    tables.push(parsed.table);
    if (!parsed.rest.startsWith(', ')) break;
    rest = parsed.rest.slice(2).replace(/^ONLY /, '');
  }
  return tables.length > 0 ? tables : undefined;
}

export function qualifiedName(t: TableName): string {
  const ident = (s: string) => (/^[a-z_][a-z0-9_$]*$/.test(s) ? s : quoteIdent(s));
  return `${ident(t.schema)}.${ident(t.name)}`;
}

interface BlockerRow {
  schema: string;
  name: string;
  pid: number;
  usename: string | null;
  application_name: string | null;
  client_addr: string | null;
  state: string | null;
  query: string | null;
  seconds: number | null;
  waiting: boolean;
}

// Sessions in the way of an ACCESS SHARE lock on the tables: whoever pg_blocking_pids() names for
// a session still waiting on them, and whoever holds ACCESS EXCLUSIVE on them (the only mode that
// conflicts with ACCESS SHARE). dbstash's own sessions (pg_dump's included) are left out.
const BLOCKERS_SQL = `
WITH rel AS (
  SELECT c.oid, n.nspname AS schema, c.relname AS name
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN unnest($1::text[], $2::text[]) AS t(schema, name) ON t.schema = n.nspname AND t.name = c.relname
), waiting AS (
  SELECT l.pid, rel.oid FROM pg_locks l JOIN rel ON l.relation = rel.oid
  WHERE l.locktype = 'relation' AND NOT l.granted AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
), blockers AS (
  SELECT w.oid, unnest(pg_blocking_pids(w.pid)) AS pid FROM waiting w
  UNION
  SELECT rel.oid, l.pid FROM pg_locks l JOIN rel ON l.relation = rel.oid
  WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'AccessExclusiveLock'
    AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
)
SELECT DISTINCT ON (b.pid) rel.schema, rel.name, a.pid, a.usename, a.application_name, host(a.client_addr) AS client_addr, a.state,
       left(regexp_replace(a.query, '\\s+', ' ', 'g'), 120) AS query,
       extract(epoch FROM now() - a.state_change)::int AS seconds, a.wait_event_type = 'Lock' AS waiting
FROM blockers b JOIN rel ON rel.oid = b.oid JOIN pg_stat_activity a ON a.pid = b.pid
WHERE a.pid <> pg_backend_pid() AND a.application_name IS DISTINCT FROM 'dbstash'
ORDER BY b.pid`;

/** A statement as the message shows it: a password literal (ALTER ROLE … PASSWORD '…') is masked. */
export function showQuery(query: string): string {
  return query.replace(/(password\s+)(E?'(?:[^']|'')*'?)/gi, "$1'***'");
}

function describeSession(r: BlockerRow): string {
  const parts = [`pid ${r.pid}`, `user ${r.usename ?? '?'}`];
  if (r.application_name) parts.push(`application "${r.application_name}"`);
  parts.push(r.client_addr ? `from ${r.client_addr}` : 'local');
  const since = r.seconds !== null ? ` for ${r.seconds}s` : '';
  const query = r.query ? `"${showQuery(r.query)}"` : '';
  if (r.state === 'active') parts.push(`running ${query}${since}${r.waiting ? ' (itself waiting for a lock)' : ''}`);
  else if (r.state) parts.push(`${r.state}${since}${query ? `, last query ${query}` : ''}`);
  return parts.join(', ');
}

/**
 * Looks up, on a connection of its own, who is in the way of the tables: the first session found,
 * with the count of others. Never throws: a lookup that fails or finds nobody says so.
 */
export async function describeBlockers(target: Target, tables: TableName[]): Promise<{ table: TableName; phrase: string }> {
  let client;
  try {
    client = await connect(target);
    await client.query(`SET statement_timeout = '5s'`);
    const { rows } = await client.query<BlockerRow>(BLOCKERS_SQL, [tables.map((t) => t.schema), tables.map((t) => t.name)]);
    if (rows.length === 0) return { table: tables[0], phrase: 'was locked by another session, which no longer holds it' };
    const more = rows.length > 1 ? ` (and ${rows.length - 1} more session${rows.length > 2 ? 's' : ''})` : '';
    return { table: { schema: rows[0].schema, name: rows[0].name }, phrase: `is locked by another session: ${describeSession(rows[0])}${more}` };
  } catch (err) {
    return { table: tables[0], phrase: `is locked by another session (which one could not be looked up: ${(err as Error).message})` };
  } finally {
    await client?.end().catch(() => {});
  }
}

/** The backup's failure: one line naming the table and who holds it. */
export async function lockWaitFailure(target: Target, tables: TableName[], timeoutMs: number, cause?: unknown): Promise<BackupError> {
  const { table, phrase } = await describeBlockers(target, tables);
  return new BackupError(`[postgres] table ${qualifiedName(table)} ${phrase}; gave up after waiting ${formatTimeout(timeoutMs)} for the lock`, {
    hint:
      'run the backup again once that session has committed or ended (pg_terminate_backend(pid) ends it); ' +
      '--lock-wait-timeout (lockWaitTimeout in the config) sets how long a backup waits for a lock (default 60s, 0 waits for ever)',
    cause,
  });
}
