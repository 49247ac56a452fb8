// PostgreSQL engine. A backup is pg_dump's custom format with pg_dump's own compression off
// (compression happens in our pipeline). For exact row counts we open a REPEATABLE READ
// transaction, export its snapshot, start pg_dump with --snapshot, and count every table inside
// that same transaction while pg_dump runs: the counts describe exactly what the dump holds. The
// database's own properties (encoding, owner, grants, settings, …; see properties.ts), which the
// archive leaves out, are read in that transaction too and recorded in the manifest. Waits for
// table locks are bounded on both sides by the backup's lock-wait timeout (snapshot.ts, locks.ts).

import { BackupError, DbstashError, PreflightError } from '../../core/errors.js';
import { DEFAULT_LOCK_WAIT_TIMEOUT_MS, type DumpOptions, type DumpSession, type Engine, type Probe, type Target } from '../engine.js';
import { bulkOutputFor, describeExit, gateOnExit, startTool } from '../process.js';
import { classifyPgError, dbnameArg, libpqEnv } from './connection.js';
import { dumpDirectory } from './parallel.js';
import { postgresRestoreMethods } from './restore.js';
import { countWhileDumping, exportSnapshot, lockWaitArgs, propertiesInSnapshot, snapshotReleaser } from './snapshot.js';
import { holdForDump, openSource, sourceForDump } from './source.js';
import { dumpPhysical, probePhysical } from './physical.js';

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
      const running = startTool(tool.path, args, { env: libpqEnv(target), signal: opts.signal, bulkOutput: bulkOutputFor(facts.sizeBytes), pooled: true });
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

  probePhysical,
  dumpPhysical,

  ...postgresRestoreMethods,
};
