// The verify/restore half of the SQLite engine. A "database" is a file; another database on the
// same "server" is a file with another name in the same directory (app.db → app_before_<stamp>.db).
// A restore writes the raw artifact to a hidden temp file beside the target, checks it with
// PRAGMA integrity_check, and publishes it under the final name only if that name is free. An
// in-place restore (the target is in use) copies the checked file into the live database with
// SQLite's online backup API, which takes the database's own locks.

import { createWriteStream, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import Database from 'better-sqlite3';
import { IntegrityError, RestoreError } from '../../core/errors.js';
import type { Engine, RestoreOptions, ScratchServer, StructureReport, TableStat, Target } from '../engine.js';
import { sqliteTableStats } from './index.js';

function sibling(target: Target, name: string): Target {
  const file = path.join(path.dirname(target.path!), name + path.extname(target.path!));
  return { ...target, database: name, displayUrl: file, path: file };
}

async function writeTemp(raw: Readable, dir: string, base: string, signal: AbortSignal): Promise<string> {
  const file = path.join(dir, `.dbstash-${base}-${randomBytes(6).toString('hex')}.sqlite`);
  try {
    await pipeline(raw, createWriteStream(file, { flags: 'wx', mode: 0o600 }), { signal });
    return file;
  } catch (err) {
    await fsp.rm(file, { force: true });
    throw err;
  }
}

/** integrity_check of a file; returns its tables' row counts. */
function checkFile(file: string): TableStat[] {
  let db: Database.Database;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
  } catch (err) {
    throw new IntegrityError(`[sqlite] the artifact is not a SQLite database: ${(err as Error).message}`);
  }
  try {
    const rows = db.prepare('PRAGMA integrity_check').all() as { integrity_check: string }[];
    if (rows.length !== 1 || rows[0].integrity_check !== 'ok') {
      throw new IntegrityError(`[sqlite] PRAGMA integrity_check failed: ${rows.slice(0, 3).map((r) => r.integrity_check).join('; ')}`);
    }
    return sqliteTableStats(db, false);
  } catch (err) {
    if (err instanceof IntegrityError) throw err;
    throw new IntegrityError(`[sqlite] the artifact is not a readable SQLite database: ${(err as Error).message}`);
  } finally {
    db.close();
  }
}

async function removeDatabaseFiles(file: string): Promise<void> {
  for (const suffix of ['', '-wal', '-shm', '-journal']) await fsp.rm(file + suffix, { force: true });
}

async function exists(file: string): Promise<boolean> {
  return fsp.stat(file).then(
    () => true,
    () => false,
  );
}

/** Processes (other than this one) holding the file or its WAL open, from /proc on Linux. */
async function openers(file: string): Promise<string[]> {
  const wanted = new Set([file, `${file}-wal`, `${file}-journal`]);
  const found: string[] = [];
  const pids = await fsp.readdir('/proc').catch(() => [] as string[]);
  for (const pid of pids) {
    if (!/^\d+$/.test(pid) || Number(pid) === process.pid) continue;
    const fds = await fsp.readdir(`/proc/${pid}/fd`).catch(() => [] as string[]);
    for (const fd of fds) {
      const link = await fsp.readlink(`/proc/${pid}/fd/${fd}`).catch(() => '');
      if (wanted.has(link)) {
        const comm = (await fsp.readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim();
        found.push(`pid ${pid} (${comm})`);
        break;
      }
    }
  }
  return found;
}

async function restore(target: Target, raw: Readable, opts: RestoreOptions): Promise<void> {
  const file = target.path!;
  const temp = await writeTemp(raw, path.dirname(file), path.basename(file), opts.signal);
  try {
    checkFile(temp);
    if (opts.clean) {
      const source = new Database(temp, { readonly: true });
      try {
        await source.backup(file);
      } catch (err) {
        throw new RestoreError(`[sqlite] copying into ${file} failed: ${(err as Error).message}`, { cause: err });
      } finally {
        source.close();
      }
      return;
    }
    try {
      await fsp.link(temp, file);
    } catch (err) {
      throw new RestoreError(`[sqlite] cannot create ${file}: ${(err as NodeJS.ErrnoException).code === 'EEXIST' ? 'it already exists' : (err as Error).message}`, { cause: err });
    }
  } finally {
    await fsp.rm(temp, { force: true });
  }
}

export const sqliteRestoreMethods: Partial<Engine> = {
  async checkStructure(raw: Readable, opts: RestoreOptions): Promise<StructureReport> {
    const temp = await writeTemp(raw, opts.tempDir, 'verify', opts.signal);
    try {
      const tables = checkFile(temp);
      return { summary: `integrity_check ok, ${tables.length} tables` };
    } finally {
      await fsp.rm(temp, { force: true });
    }
  },

  restore,

  async tableStats(target: Target, opts: { checksums: boolean }): Promise<TableStat[]> {
    const db = new Database(target.path!, { readonly: true, fileMustExist: true });
    try {
      return sqliteTableStats(db, opts.checksums);
    } finally {
      db.close();
    }
  },

  async databaseExists(target: Target): Promise<boolean> {
    return exists(target.path!);
  },

  async listDatabases(target: Target): Promise<string[]> {
    const ext = path.extname(target.path!);
    const files = await fsp.readdir(path.dirname(target.path!)).catch(() => [] as string[]);
    return files.filter((f) => f.endsWith(ext) && !f.startsWith('.')).map((f) => f.slice(0, f.length - ext.length)).sort();
  },

  async createDatabase(target: Target, name: string): Promise<Target> {
    const created = sibling(target, name);
    if (await exists(created.path!)) throw new RestoreError(`[sqlite] ${created.path} already exists`);
    return created;
  },

  async dropDatabase(target: Target): Promise<void> {
    await removeDatabaseFiles(target.path!);
  },

  async renameDatabase(target: Target, newName: string): Promise<Target> {
    const renamed = sibling(target, newName);
    if (await exists(renamed.path!)) throw new RestoreError(`[sqlite] cannot rename ${target.path}: ${renamed.path} exists`);
    await fsp.rename(target.path!, renamed.path!);
    return renamed;
  },

  async listSessions(target: Target): Promise<string[]> {
    return openers(target.path!);
  },

  async swapBlocker(target: Target): Promise<string | undefined> {
    const file = target.path!;
    const users = await openers(file);
    if (users.length > 0) return `${file} is in use by ${users.join(', ')}`;
    for (const side of ['-wal', '-journal']) {
      if (await exists(file + side)) return `${file}${side} exists (the database is open or was not closed cleanly)`;
    }
    try {
      await fsp.access(path.dirname(file), 2 /* W_OK */);
    } catch {
      return `the directory ${path.dirname(file)} is not writable`;
    }
    return undefined;
  },

  /** No server needed: a scratch "server" is a private temp directory. */
  async startScratchServer(opts: { tempDir: string }): Promise<ScratchServer> {
    const dir = await fsp.mkdtemp(path.join(opts.tempDir, 'dbstash-scratch-'));
    const file = path.join(dir, 'scratch.sqlite');
    return {
      target: { engine: 'sqlite', database: 'scratch', displayUrl: file, path: file, params: {}, options: {} },
      stop: () => fsp.rm(dir, { recursive: true, force: true }),
    };
  },
};
