// MySQL/MariaDB engine. A backup is mariadb-dump's (or mysqldump's) plain SQL for one database,
// without CREATE DATABASE/USE so that it restores into a database of any name, streamed through
// the same stages as every dump. The password reaches the tools only through a 0600 option file.
//
// Row counts: when the user holds RELOAD, dbstash takes FLUSH TABLES WITH READ LOCK for a moment,
// starts its own consistent snapshot, starts the dump and waits until the dump's snapshot is
// open, then unlocks: both snapshots start while no writer can commit, so they see the same
// data ("aligned"). Without RELOAD the two snapshots are taken back to back ("separate") and the
// counts may differ from the dump by what writers committed in between (docs/mysql.md).
// A dump that lacks the tool's "-- Dump completed" trailer is truncated and fails the backup.
//
// Every table type is dumped and counted; MariaDB's system-versioned tables with their history
// (--dump-history) where the tool can (mariadb-dump 10.11+, and no table versioned by
// transaction id, whose history it refuses): otherwise with their current rows and a warning, and
// the counts say the same. The database's default character set and collation are recorded, so a
// restore creates the new database with them.

import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { Readable } from 'node:stream';
import { BackupError, DbstashError } from '../../core/errors.js';
import type { DatabaseProperties, DumpOptions, DumpSession, Engine, Probe, TableStat, Target, ToolInfo } from '../engine.js';
import { bulkOutputFor, describeExit, gateOnExit, startTool } from '../process.js';
import { classifyMyError, closeOnAbort, connect, globalPrivileges, quoteIdent, recordedArgs, toolConnectionArgs, writeOptionFile, type MyConnection } from './connection.js';
import { TrailerWatch } from './sqlscan.js';
import { readProperties, type MyDatabaseProperties } from './properties.js';
import { countTables, dataTables, type DataTable } from './stats.js';
import { DUMP_TOOLS, findMyTool, versionParts } from './tools.js';
import { verifyRestoreHalf } from './restore.js';

const TRANSACTIONAL = new Set(['innodb', 'xtradb', 'rocksdb', 'tokudb', 'ndbcluster', 'ndb']);
const ALIGN_TIMEOUT_MS = 30_000;

interface ServerFacts {
  version: string;
  sizeBytes: number;
  /** Global privileges of the current user (upper case), "ALL PRIVILEGES" included as is. */
  privileges: Set<string>;
  nonTransactional: { name: string; engine: string }[];
  systemVersioned: DataTable[];
  properties?: MyDatabaseProperties;
}

function has(facts: ServerFacts, privilege: string): boolean {
  return facts.privileges.has('ALL PRIVILEGES') || facts.privileges.has(privilege);
}

async function serverFacts(conn: MyConnection, database: string): Promise<ServerFacts> {
  const [v] = await conn.query(`SELECT VERSION() AS version`);
  const [size] = await conn.query(
    `SELECT COALESCE(SUM(DATA_LENGTH + INDEX_LENGTH), 0) AS size FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?`,
    [database],
  );
  const privileges = await globalPrivileges(conn);
  const tables = await dataTables(conn, database);
  const nonTransactional = tables.filter((t) => t.engine && !TRANSACTIONAL.has(t.engine.toLowerCase())).map((t) => ({ name: t.name, engine: t.engine! }));
  return {
    version: (v as { version: string }[])[0].version,
    sizeBytes: Number((size as { size: string }[])[0].size),
    privileges,
    nonTransactional,
    systemVersioned: tables.filter((t) => t.versioning),
    properties: await readProperties(conn, database),
  };
}

/** Whether the dump holds the history of system-versioned tables, and why not when it does not. */
function historyPlan(facts: ServerFacts, toolVersion: string): { dump: boolean; warning?: string } {
  if (facts.systemVersioned.length === 0) return { dump: false };
  const names = facts.systemVersioned.map((t) => t.name).join(', ');
  const tool = versionParts(toolVersion);
  if (!tool.mariadb || tool.major * 1000 + tool.minor < 10_011) {
    return { dump: false, warning: `[mysql] the history of the system-versioned tables ${names} is not dumped: the dump tool (${toolVersion}) cannot (mariadb-dump 10.11 or later can); their current rows are` };
  }
  const byTransaction = facts.systemVersioned.filter((t) => t.versioning === 'transaction').map((t) => t.name);
  if (byTransaction.length > 0) {
    return {
      dump: false,
      warning: `[mysql] the history of the system-versioned tables ${names} is not dumped: mariadb-dump cannot dump the history of tables versioned by transaction id (${byTransaction.join(', ')}), and then dumps none; their current rows are`,
    };
  }
  return { dump: true };
}

function lockTablesWanted(target: Target): boolean {
  return target.options.lockTables === true;
}

function preflightWarnings(target: Target, facts: ServerFacts, toolVersion: string): string[] {
  const warnings: string[] = [];
  if (facts.nonTransactional.length > 0 && !lockTablesWanted(target)) {
    const list = facts.nonTransactional.map((t) => `${t.name} (${t.engine})`).join(', ');
    warnings.push(
      `[mysql] non-transactional tables that --single-transaction cannot keep consistent: ${list}; ` +
        `a writer changing them during the dump makes them inconsistent with the rest (use --lock-tables, or lockTables: true in the config, to lock instead)`,
    );
  }
  if (!has(facts, 'PROCESS')) {
    warnings.push('[mysql] the user lacks the PROCESS privilege: tablespaces are not dumped (--no-tablespaces)');
  }
  const history = historyPlan(facts, toolVersion);
  if (history.warning) warnings.push(history.warning);
  const tool = versionParts(toolVersion);
  const server = versionParts(facts.version);
  if (tool.major * 1000 + tool.minor < server.major * 1000 + server.minor && tool.mariadb === server.mariadb) {
    warnings.push(`[mysql] the dump tool (${toolVersion}) is older than the server (${facts.version}): newer syntax may be dumped wrongly; install a client at least as new as the server`);
  } else if (tool.mariadb !== server.mariadb) {
    warnings.push(`[mysql] the dump tool (${toolVersion}) and the server (${facts.version}) are different products; prefer the server's own client tools`);
  }
  return warnings;
}

function dumpArgs(target: Target, facts: ServerFacts, lockTables: boolean, history: boolean): string[] {
  const args = [
    lockTables ? '--lock-tables' : '--single-transaction',
    ...(lockTables ? ['--skip-single-transaction'] : ['--skip-lock-tables']),
    '--routines',
    '--triggers',
    '--events',
    '--hex-blob',
    '--default-character-set=utf8mb4',
    '--max-allowed-packet=1G',
  ];
  if (!has(facts, 'PROCESS')) args.push('--no-tablespaces');
  if (history) args.push('--dump-history');
  args.push(target.database);
  return args;
}

/**
 * The probe's connection and facts, taken over by the dump of the same backup: the dump then does
 * not connect and ask the same questions a second time (a few ms apart; both before its lock).
 */
const heldForDump = new WeakMap<Probe, { conn: MyConnection; facts: ServerFacts; tool: ToolInfo }>();

export const mysqlEngine: Engine = {
  id: 'mysql',

  /** Keeps its connection and the server's facts for the dump that follows (heldForDump). */
  async probe(target: Target, signal?: AbortSignal): Promise<Probe> {
    // The tool's --version runs while we connect (the lookup is remembered).
    findMyTool(DUMP_TOOLS, target.options.binDir).catch(() => {});
    const conn = await connect(target, target.database, signal);
    const unhook = closeOnAbort(conn, signal);
    try {
      const facts = await serverFacts(conn, target.database);
      const tool = await findMyTool(DUMP_TOOLS, target.options.binDir);
      const probe: Probe = { serverVersion: facts.version, sizeBytes: facts.sizeBytes, tool, warnings: preflightWarnings(target, facts, tool.version) };
      heldForDump.set(probe, { conn, facts, tool });
      probe.release = async () => {
        const held = heldForDump.get(probe);
        heldForDump.delete(probe);
        await held?.conn.end().catch(() => {});
      };
      return probe;
    } catch (err) {
      await conn.end().catch(() => {});
      signal?.throwIfAborted();
      if (err instanceof DbstashError) throw err;
      throw classifyMyError(err, target);
    } finally {
      unhook();
    }
  },

  async dump(target: Target, opts: DumpOptions): Promise<DumpSession> {
    const held = opts.probe && heldForDump.get(opts.probe);
    if (held) heldForDump.delete(opts.probe!);
    const conn = held?.conn ?? (await connect(target));
    let finished = false;
    const release = async () => {
      if (finished) return;
      finished = true;
      await conn.query('UNLOCK TABLES').catch(() => {});
      await conn.query('ROLLBACK').catch(() => {});
      await conn.end().catch(() => {});
    };
    const optionFile = await writeOptionFile(target, opts.tempDir).catch(async (err) => {
      await release();
      throw new BackupError(`[mysql] cannot write the temporary option file in ${opts.tempDir}: ${(err as Error).message}`, { cause: err });
    });
    let running: ReturnType<typeof startTool> | undefined;
    try {
      const facts = held?.facts ?? (await serverFacts(conn, target.database));
      const tool = held?.tool ?? (await findMyTool(DUMP_TOOLS, target.options.binDir));
      const lockTables = lockTablesWanted(target);
      let counts: 'aligned' | 'separate' | 'locked' = 'separate';
      if (lockTables || has(facts, 'RELOAD')) {
        try {
          await conn.query('SET SESSION lock_wait_timeout = 10');
          await conn.query('FLUSH TABLES WITH READ LOCK');
          counts = lockTables ? 'locked' : 'aligned';
        } catch (err) {
          opts.warn(`[mysql] FLUSH TABLES WITH READ LOCK failed (${(err as Error).message}); row counts come from a separate snapshot`);
        }
      }
      if (counts !== 'locked') await conn.query('START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY');

      const history = historyPlan(facts, tool.version).dump;
      const args = [...toolConnectionArgs(target, optionFile.path), ...dumpArgs(target, facts, lockTables, history)];
      const dumping = startTool(tool.path, args, { signal: opts.signal, bulkOutput: bulkOutputFor(facts.sizeBytes), pooled: true });
      running = dumping;
      // Attached at once: Node discards a child's unread output when the child exits.
      const watch = new TrailerWatch();
      dumping.stdout.on('error', (err) => watch.destroy(err));
      dumping.stdout.pipe(watch);
      // The tool reads its option file before it connects and writes its first line after: from
      // then on the password file is not needed, so it does not outlive the first output.
      dumping.stdout.once('data', () => void optionFile.remove().catch(() => {}));
      // Settled once counting is done; the stream's end waits for it (and for the dump's exit).
      let counted!: (p: Promise<TableStat[]>) => void;
      const tables = new Promise<TableStat[]>((resolve) => (counted = resolve));
      tables.catch(() => {});
      const stream = gateOnExit(watch, async () => {
        const exit = await dumping.exit;
        await optionFile.remove();
        try {
          await tables;
        } finally {
          await release();
        }
        if (exit.code !== 0) throw new BackupError(`[mysql] ${describeExit(tool.name, exit)}`);
        const last = watch.lastLine();
        if (!last.complete) {
          throw new BackupError(`[mysql] the dump is truncated: ${tool.name} output does not end with its "-- Dump completed" trailer (last line: ${JSON.stringify(last.text.slice(0, 80))})`);
        }
      });
      stream.on('close', () => {
        dumping.exit.then(() => Promise.all([optionFile.remove(), release()])).catch(() => {});
      });
      if (counts === 'aligned') {
        // The lock is held until the dump's output proves its snapshot is open; a dump that exited
        // meanwhile ran entirely under the lock, which is aligned as well.
        const timer = new AbortController();
        const aligned = await Promise.race([
          watch.snapshotOpen.then(() => true),
          once(dumping.child, 'exit').then(() => true),
          sleep(ALIGN_TIMEOUT_MS, false, { signal: timer.signal }).catch(() => false),
        ]);
        timer.abort();
        await conn.query('UNLOCK TABLES');
        if (!aligned) {
          counts = 'separate';
          opts.warn("[mysql] could not see the dump's snapshot start within 30 s; row counts come from a separate snapshot");
        }
      }
      counted(
        countTables(conn, target.database, opts.checksums ?? false, { history }).catch((err) => {
          dumping.child.kill('SIGTERM');
          throw new BackupError(`[mysql] counting rows failed: ${(err as Error).message}`, { cause: err });
        }),
      );
      return {
        format: 'sql',
        stream,
        tables,
        ...(facts.properties ? { properties: Promise.resolve<DatabaseProperties>(facts.properties) } : {}),
        tool: { ...tool, args: recordedArgs(args) },
        details: {
          serverVersion: facts.version,
          consistency: lockTables ? 'lock-tables' : 'single-transaction',
          counts,
          nonTransactionalTables: facts.nonTransactional.map((t) => `${t.name} (${t.engine})`),
          ...(facts.systemVersioned.length > 0 ? { systemVersionedHistory: history ? 'dumped' : 'current rows only' } : {}),
        },
      };
    } catch (err) {
      running?.child.kill('SIGTERM');
      await optionFile.remove();
      await release();
      if (err instanceof DbstashError) throw err;
      throw classifyMyError(err, target);
    }
  },

  async dumpGlobals(target: Target, opts: DumpOptions): Promise<DumpSession> {
    const conn = await connect(target);
    const lines: string[] = ['-- dbstash: users, roles and grants', ''];
    let version: string;
    try {
      version = ((await conn.query('SELECT VERSION() AS v'))[0] as { v: string }[])[0].v;
      const [accounts] = await conn.query(
        `SELECT User AS user, Host AS host, ${/mariadb/i.test(version) ? `is_role` : `'N'`} AS isRole FROM mysql.user ORDER BY isRole DESC, User, Host`,
      );
      for (const a of accounts as { user: string; host: string; isRole: string }[]) {
        if (/^(mariadb\.sys|mysql\.(sys|session|infoschema))$/.test(a.user) || a.user === 'PUBLIC') continue;
        try {
          const account = a.isRole === 'Y' ? quoteIdent(a.user) : `${quoteIdent(a.user)}@${quoteIdent(a.host)}`;
          const statements: string[] = [];
          if (a.isRole === 'Y') {
            statements.push(`CREATE ROLE IF NOT EXISTS ${account};`);
          } else {
            const [create] = await conn.query(`SHOW CREATE USER ${account}`);
            statements.push(Object.values((create as Record<string, string>[])[0])[0].replace(/^CREATE USER /i, 'CREATE USER IF NOT EXISTS ') + ';');
          }
          const [grants] = await conn.query(`SHOW GRANTS FOR ${account}`);
          for (const g of grants as Record<string, string>[]) statements.push(Object.values(g)[0] + ';');
          lines.push(...statements);
        } catch (err) {
          // Accounts the server does not load (e.g. host names under skip-name-resolve) cannot be shown.
          if ((err as { errno?: number }).errno !== 1133) throw err;
          opts.warn(`[mysql] --globals: skipped account '${a.user}'@'${a.host}': ${(err as Error).message}`);
          lines.push(`-- skipped '${a.user}'@'${a.host}': ${(err as Error).message}`);
        }
      }
    } catch (err) {
      await conn.end().catch(() => {});
      if (err instanceof DbstashError) throw err;
      throw new BackupError(`[mysql] reading users and grants failed: ${(err as Error).message}`, {
        hint: 'the user needs SELECT on mysql.user (and the right to SHOW GRANTS for other users) for --globals',
        cause: err,
      });
    }
    await conn.end().catch(() => {});
    lines.push('', '-- Dump completed', '');
    return {
      format: 'globals.sql',
      stream: Readable.from([Buffer.from(lines.join('\n'))]),
      tables: Promise.resolve([]),
      tool: { name: 'dbstash-grants', version, path: 'SHOW CREATE USER + SHOW GRANTS', args: [] },
      details: {},
    };
  },

  ...verifyRestoreHalf,
};
