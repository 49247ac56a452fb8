// PostgreSQL engine. A backup is pg_dump's custom format with pg_dump's own compression off
// (compression happens in our pipeline). For exact row counts we open a REPEATABLE READ
// transaction, export its snapshot, start pg_dump with --snapshot, and count every table inside
// that same transaction while pg_dump runs: the counts describe exactly what the dump holds. The
// database's own properties (encoding, owner, grants, settings, …; see properties.ts), which the
// archive leaves out, are read in that transaction too and recorded in the manifest. Waits for
// table locks are bounded on both sides by the backup's lock-wait timeout (snapshot.ts, locks.ts).

import { BackupError, DbstashError, PreflightError } from '../../core/errors.js';
import { DEFAULT_LOCK_WAIT_TIMEOUT_MS, type DumpOptions, type DumpSession, type Engine, type Probe, type TableStat, type Target } from '../engine.js';
import { describeExit, gateOnExit, startTool } from '../process.js';
import { classifyPgError, dbnameArg, libpqEnv, quoteIdent, type PgClient } from './connection.js';
import { CountLockTimeout, isLockTimeout } from './locks.js';
import { dumpDirectory } from './parallel.js';
import { postgresRestoreMethods } from './restore.js';
import { countWhileDumping, exportSnapshot, lockWaitArgs, propertiesInSnapshot, snapshotReleaser } from './snapshot.js';
import { holdForDump, openSource, sourceForDump } from './source.js';

export const USER_TABLES_SQL = `
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2`;

/** Order-independent checksum of a table's rows: the sum of 64-bit prefixes of each row's md5. */
export function tableChecksumSql(schema: string, name: string): string {
  return `SELECT count(*)::bigint AS rows,
    coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text AS checksum
    FROM ONLY ${quoteIdent(schema)}.${quoteIdent(name)} t`;
}

/**
 * Counts (and with `checksums`, checksums) every user table on `client`. A count that gives up
 * waiting for its table's lock (lock_timeout) throws CountLockTimeout naming the table; once
 * `stopped()` says so, no further table is started.
 */
export async function countTables(client: PgClient, checksums: boolean, stopped: () => boolean = () => false): Promise<TableStat[]> {
  const { rows } = await client.query<{ schema: string; name: string }>(USER_TABLES_SQL);
  const stats: TableStat[] = [];
  for (const { schema, name } of rows) {
    if (stopped()) throw new Error('the row counts were stopped');
    try {
      if (checksums) {
        const r = await client.query<{ rows: string; checksum: string }>(tableChecksumSql(schema, name));
        stats.push({ schema, name, rows: Number(r.rows[0].rows), checksum: r.rows[0].checksum });
      } else {
        const r = await client.query<{ rows: string }>(`SELECT count(*)::bigint AS rows FROM ONLY ${quoteIdent(schema)}.${quoteIdent(name)}`);
        stats.push({ schema, name, rows: Number(r.rows[0].rows) });
      }
    } catch (err) {
      throw isLockTimeout(err) ? new CountLockTimeout({ schema, name }, err) : err;
    }
  }
  return stats;
}

function poolerWarning(target: Target): string | undefined {
  const host = target.host ?? '';
  if (target.port === 6543 || /(^|\.)pooler\./.test(host)) {
    return `[postgres] ${host}:${target.port} looks like a transaction-mode pooler (PgBouncer/Supavisor); pg_dump needs the direct connection (port 5432 on the database host) or a session-mode pooler (port 5432 on the pooler)`;
  }
  return undefined;
}

export const postgresEngine: Engine = {
  id: 'postgres',

  async probe(target: Target, signal?: AbortSignal): Promise<Probe> {
    const warnings: string[] = [];
    const pooler = poolerWarning(target);
    if (pooler) warnings.push(pooler);
    try {
      const source = await openSource(target, 'pg_dump', signal);
      const { facts, tool } = source;
      return holdForDump({ serverVersion: facts.version, sizeBytes: facts.sizeBytes, tool, warnings }, source);
    } catch (err) {
      if (err instanceof DbstashError) throw err;
      throw classifyPgError(err, target);
    }
  },

  async dump(target: Target, opts: DumpOptions): Promise<DumpSession> {
    if (opts.jobs !== undefined && opts.jobs > 1) return dumpDirectory(target, { ...opts, jobs: opts.jobs });
    const { client, facts, tool } = await sourceForDump(target, opts.probe).catch((err: unknown) => {
      throw err instanceof DbstashError ? err : classifyPgError(err, target);
    });
    const release = snapshotReleaser(client);
    try {
      const lockWaitTimeout = opts.lockWaitTimeout ?? DEFAULT_LOCK_WAIT_TIMEOUT_MS;
      const snapshot = await exportSnapshot(client, lockWaitTimeout);
      const args = ['--format=custom', '--compress=0', `--snapshot=${snapshot}`, ...lockWaitArgs(lockWaitTimeout), '--no-password', `--dbname=${dbnameArg(target.database)}`];
      const properties = propertiesInSnapshot(client);
      const running = startTool(tool.path, args, { env: libpqEnv(target), signal: opts.signal, bulkOutput: true });
      const { tables, finished } = countWhileDumping(client, running, { target, checksums: opts.checksums ?? false, lockWaitTimeout, signal: opts.signal, release });
      const stream = gateOnExit(running.stdout, () => finished);
      // Whatever ends the stream early (abort, error downstream), the snapshot transaction ends too.
      stream.on('close', () => {
        running.exit.then(() => release(false)).catch(() => {});
      });
      return {
        format: 'dump',
        stream,
        tables,
        properties,
        tool: { ...tool, args },
        details: { snapshot, isolation: 'repeatable read', serverVersion: facts.version },
      };
    } catch (err) {
      await release(false);
      if (err instanceof PreflightError || err instanceof BackupError) throw err;
      throw classifyPgError(err, target);
    }
  },

  async dumpGlobals(target: Target, opts: DumpOptions): Promise<DumpSession> {
    const { client, facts, tool } = await openSource(target, 'pg_dumpall');
    await client.end().catch(() => {});
    const args = ['--globals-only', '--no-password', `--database=${dbnameArg(target.database)}`];
    if (!facts.superuser) {
      args.push('--no-role-passwords');
      opts.warn('[postgres] not a superuser: roles are captured without their passwords (--no-role-passwords)');
    }
    const running = startTool(tool.path, args, { env: libpqEnv(target), signal: opts.signal });
    const stream = gateOnExit(running.stdout, async () => {
      const exit = await running.exit;
      if (exit.code !== 0) throw new BackupError(`[postgres] ${describeExit('pg_dumpall', exit)}`);
    });
    return { format: 'globals.sql', stream, tables: Promise.resolve([]), tool: { ...tool, args }, details: {} };
  },

  ...postgresRestoreMethods,
};
