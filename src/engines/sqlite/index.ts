// SQLite engine. A backup is a consistent copy made with SQLite's online backup API (never a file
// copy, which tears under WAL), checked with PRAGMA integrity_check and counted, then streamed
// through the same stages as any dump. The copy is a scratch file that is always removed.

import { createReadStream, promises as fsp } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import path from 'node:path';
import Database from 'better-sqlite3';
import { BackupError, ConnectionError, PreflightError } from '../../core/errors.js';
import type { DumpOptions, DumpSession, Engine, Probe, TableStat, Target } from '../engine.js';
import { gateOnExit } from '../process.js';
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

function quote(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function sqliteTableStats(db: Database.Database, checksums: boolean): TableStat[] {
  const tables = db
    .prepare(`SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
    .all() as { name: string }[];
  return tables.map(({ name }) => {
    const rows = Number((db.prepare(`SELECT count(*) AS n FROM ${quote(name)}`).get() as { n: number }).n);
    const stat: TableStat = { schema: 'main', name, rows };
    if (checksums) stat.checksum = sqliteChecksum(db, name);
    return stat;
  });
}

/** Order-independent checksum: sum of the first 8 bytes of each row's SHA-256, modulo 2^64. */
function sqliteChecksum(db: Database.Database, table: string): string {
  const cols = (db.prepare(`PRAGMA table_info(${quote(table)})`).all() as { name: string }[]).map((c) => quote(c.name));
  let sum = 0n;
  for (const row of db.prepare(`SELECT ${cols.join(', ') || '1'} FROM ${quote(table)}`).raw().iterate() as Iterable<unknown[]>) {
    const h = createHash('sha256').update(JSON.stringify(row, (_k, v) => (typeof v === 'bigint' ? v.toString() : Buffer.isBuffer(v) ? v.toString('base64') : v))).digest();
    sum = (sum + h.readBigUInt64BE(0)) & 0xffffffffffffffffn;
  }
  return sum.toString();
}

function openSource(target: Target): Database.Database {
  try {
    return new Database(target.path!, { readonly: true, fileMustExist: true });
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
    const copy = path.join(opts.tempDir, `.dbstash-${path.basename(target.path!)}-${randomBytes(6).toString('hex')}.sqlite`);
    // The copy keeps the source's journal mode: opening a WAL copy leaves -wal and -shm beside it.
    const removeCopy = () => Promise.all(['', '-wal', '-shm'].map((suffix) => fsp.rm(copy + suffix, { force: true })));
    const source = openSource(target);
    let tables: TableStat[];
    try {
      // The backup API copies page by page and starts over whenever another connection commits,
      // so under a busy writer it would never finish. A read transaction held on the source pins
      // one snapshot (WAL: writers go on; rollback journal: writers wait, as with sqlite3's
      // .backup), and the copy is that snapshot. The progress callback makes it abortable.
      source.exec('BEGIN');
      source.prepare('SELECT count(*) FROM sqlite_schema').get();
      await source.backup(copy, {
        progress: () => {
          opts.signal.throwIfAborted();
          return 1024;
        },
      });
      source.exec('COMMIT');
      const db = new Database(copy, { readonly: true });
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
