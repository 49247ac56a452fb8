// SQLite engine. A backup is a consistent copy made with SQLite's online backup API (never a file
// copy, which tears under WAL), checked with PRAGMA integrity_check and counted, then streamed
// through the same stages as any dump. The copy is a scratch file that is always removed.
// Every connection dbstash opens on a database is closed the way SQLite cleans up after itself
// (see openForReading): dbstash leaves no -wal or -shm file that would look like another user.

import { createReadStream, promises as fsp } from 'node:fs';
import Database from 'better-sqlite3';
import { BackupError, ConnectionError, PreflightError } from '../../core/errors.js';
import { scratchFile } from '../../core/scratch.js';
import type { DumpOptions, DumpSession, Engine, Probe, TableStat, Target } from '../engine.js';
import { gateOnExit } from '../process.js';
import { openForReading, removeDatabaseFiles, sqliteTableStats } from './db.js';
import { sqliteRestoreMethods } from './restore.js';

const TOOL = { name: 'sqlite-backup-api', path: 'better-sqlite3' };

function sqliteVersion(): string {
  const db = new Database(':memory:');
  try {
    return (db.prepare('SELECT sqlite_version() AS v').get() as { v: string }).v;
  } finally {
    db.close();
  }
}

function openSource(target: Target): Database.Database {
  try {
    return openForReading(target.path!);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'SQLITE_CANTOPEN' || /does not exist|unable to open/i.test((err as Error).message)) {
      throw new PreflightError(`[sqlite] database file ${target.path} does not exist or cannot be opened`, {
        hint: 'check the path; dbstash backs up an existing SQLite file',
        cause: err,
      });
    }
    throw new ConnectionError(`[sqlite] cannot open ${target.path}: ${(err as Error).message}`, { cause: err });
  }
}

export const sqliteEngine: Engine = {
  id: 'sqlite',

  async probe(target: Target): Promise<Probe> {
    const db = openSource(target);
    try {
      db.prepare('SELECT count(*) FROM sqlite_schema').get();
      const st = await fsp.stat(target.path!);
      return {
        serverVersion: sqliteVersion(),
        sizeBytes: st.size,
        tool: { ...TOOL, version: sqliteVersion() },
        warnings: [],
      };
    } catch (err) {
      if (err instanceof PreflightError) throw err;
      throw new PreflightError(`[sqlite] ${target.path} is not a readable SQLite database: ${(err as Error).message}`, {
        hint: 'check that the path names a SQLite database file',
        cause: err,
      });
    } finally {
      db.close();
    }
  },

  async dump(target: Target, opts: DumpOptions): Promise<DumpSession> {
    const copy = scratchFile(opts.tempDir, 'sqlite', '.sqlite');
    // The copy keeps the source's journal mode: a WAL copy may get -wal and -shm beside it.
    const removeCopy = () => removeDatabaseFiles(copy);
    const source = openSource(target);
    let tables: TableStat[];
    try {
      // The backup API copies page by page and starts over whenever another connection commits,
      // so under a busy writer it would never finish. A read transaction held on the source pins
      // one snapshot (WAL: writers go on; rollback journal: writers wait, as with sqlite3's
      // .backup), and the copy is that snapshot. The progress callback makes it abortable.
      // Private to this run (0600); the backup API writes into the empty file.
      await (await fsp.open(copy, 'wx', 0o600)).close();
      source.exec('BEGIN');
      source.prepare('SELECT count(*) FROM sqlite_schema').get();
      await source.backup(copy, {
        progress: () => {
          opts.signal.throwIfAborted();
          return 1024;
        },
      });
      source.exec('COMMIT');
      const db = openForReading(copy);
      try {
        const check = db.prepare('PRAGMA integrity_check').all() as { integrity_check: string }[];
        if (check.length !== 1 || check[0].integrity_check !== 'ok') {
          throw new BackupError(`[sqlite] the snapshot failed PRAGMA integrity_check: ${check.slice(0, 3).map((r) => r.integrity_check).join('; ')}`, {
            hint: 'the source database is damaged; run PRAGMA integrity_check on it and repair it first',
          });
        }
        tables = sqliteTableStats(db, opts.checksums ?? false);
      } finally {
        db.close();
      }
    } catch (err) {
      await removeCopy();
      if (err instanceof BackupError) throw err;
      throw new BackupError(`[sqlite] online backup of ${target.path} failed: ${(err as Error).message}`, { cause: err });
    } finally {
      source.close();
    }
    const file = createReadStream(copy, { highWaterMark: 1 << 20 });
    const stream = gateOnExit(file, async () => {});
    stream.on('close', () => {
      removeCopy().catch(() => {});
    });
    const version = sqliteVersion();
    return {
      format: 'sqlite',
      stream,
      tables: Promise.resolve(tables),
      tool: { ...TOOL, version, args: ['backup()'] },
      details: { method: 'online backup API', integrityCheck: 'ok' },
    };
  },

  ...sqliteRestoreMethods,
};
