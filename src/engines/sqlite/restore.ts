// The verify/restore half of the SQLite engine. A "database" is a file; another database on the
// same "server" is a file with another name in the same directory (app.db → app_before_<stamp>.db).
// A restore writes the raw artifact to a hidden temp file beside the target, checks it with
// PRAGMA integrity_check, and publishes it under the final name only if that name is free. An
// in-place restore (the target is in use) copies the checked file into the live database with
// SQLite's online backup API, which takes the database's own locks.
//
// "In use" is the operating system's view, not the presence of -wal/-shm files (which a crashed
// writer or a read-only reader leaves behind): a process with the file open (/proc/<pid>/fd), or
// holding a lock on it or its -shm (/proc/locks; a WAL connection holds one on -shm for its whole
// life, for any user). A database merely left with -wal/-shm files is swapped, and its files
// move with it.

import { createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import Database from 'better-sqlite3';
import { IntegrityError, RestoreError } from '../../core/errors.js';
import os from 'node:os';
import { onForcedExit } from '../../core/forced-exit.js';
import { makeScratchDir, processAlive, scratchFile } from '../../core/scratch.js';
import type { Engine, RestoreOptions, ScratchServer, StructureReport, TableStat, Target } from '../engine.js';
import { databaseFiles, openForReading, removeDatabaseFiles, SIDECARS, sqliteTableStats } from './db.js';
import { placeBeside, readRows, replaceImpact, replaceTables } from './tables.js';

function sibling(target: Target, name: string): Target {
  const file = path.join(path.dirname(target.path!), name + path.extname(target.path!));
  return { ...target, database: name, displayUrl: file, path: file };
}

async function writeTemp(raw: Readable, dir: string, signal: AbortSignal): Promise<string> {
  const file = scratchFile(dir, 'sqlite', '.sqlite');
  try {
    await pipeline(raw, createWriteStream(file, { flags: 'wx', mode: 0o600 }), { signal });
    return file;
  } catch (err) {
    await removeDatabaseFiles(file);
    throw err;
  }
}

/** integrity_check of a file; returns its tables' row counts. */
function checkFile(file: string): TableStat[] {
  let db: Database.Database;
  try {
    db = openForReading(file);
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

async function exists(file: string): Promise<boolean> {
  return fsp.stat(file).then(
    () => true,
    () => false,
  );
}

/** Processes (other than this one) holding the file or its WAL open, from /proc on Linux. */
async function openers(file: string): Promise<string[]> {
  const wanted = new Set(databaseFiles(file));
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

/** The device numbers /proc/locks prints for a st_dev (glibc's encoding of dev_t). */
function majorMinor(dev: bigint): string {
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

const LOCK_LINE = /^\d+:\s+(?:->\s+)?\S+\s+\S+\s+\S+\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/;

/**
 * Processes (other than this one) holding a lock on the database or one of its side files, from
 * /proc/locks on Linux, which shows every user's locks. A WAL connection holds a shared lock on
 * the -shm file as long as it is open; any connection holds one on the database file while it
 * reads or writes.
 */
export async function lockHolders(file: string): Promise<string[]> {
  const text = await fsp.readFile('/proc/locks', 'utf8').catch(() => '');
  if (!text) return [];
  const ids = new Set<string>();
  for (const name of databaseFiles(file)) {
    const st = await fsp.stat(name, { bigint: true }).catch(() => undefined);
    if (st) ids.add(`${majorMinor(st.dev)}:${st.ino}`);
  }
  const holders = new Set<string>();
  for (const line of text.split('\n')) {
    const m = LOCK_LINE.exec(line);
    if (!m || !ids.has(`${parseInt(m[2], 16)}:${parseInt(m[3], 16)}:${m[4]}`)) continue;
    const pid = Number(m[1]);
    if (pid === process.pid) continue;
    // An open file description lock (OFD) has no owning process: pid -1.
    if (pid <= 0) {
      holders.add('a process holding an open-file-description lock');
      continue;
    }
    const comm = (await fsp.readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '?')).trim();
    holders.add(`pid ${pid} (${comm})`);
  }
  return [...holders];
}

/** Who has the database open or locked, as the operating system sees it (Linux). */
async function users(file: string): Promise<string[]> {
  const [open, locking] = await Promise.all([openers(file), lockHolders(file)]);
  return [...new Set([...open, ...locking])];
}

async function restore(target: Target, raw: Readable, opts: RestoreOptions): Promise<void> {
  const file = target.path!;
  const temp = await writeTemp(raw, path.dirname(file), opts.signal);
  try {
    checkFile(temp);
    if (opts.clean) {
      const source = openForReading(temp);
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
    await removeDatabaseFiles(temp);
  }
}

/**
 * One restore into a SQLite file at a time: a lock file beside it, created exclusively and holding
 * the pid and host. A lock whose process is gone (kill -9) is taken over; the lock goes with a
 * forced exit too.
 */
async function lockRestoreTarget(target: Target): Promise<{ release(): Promise<void> }> {
  const file = target.path!;
  const lock = path.join(path.dirname(file), `.${path.basename(file)}.dbstash-restore`);
  const me = JSON.stringify({ pid: process.pid, host: os.hostname(), startedAt: new Date().toISOString() });
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await fsp.writeFile(lock, me, { flag: 'wx', mode: 0o600 });
      let released = false;
      const release = async () => {
        if (released) return;
        released = true;
        unregister();
        await fsp.rm(lock, { force: true });
      };
      const unregister = onForcedExit(release);
      return { release };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder: { pid?: number; host?: string; startedAt?: string } = {};
    try {
      holder = JSON.parse(await fsp.readFile(lock, 'utf8'));
    } catch {
      /* unreadable: treated as held */
    }
    const gone = holder.host === os.hostname() && typeof holder.pid === 'number' && !processAlive(holder.pid);
    if (!gone) {
      throw new RestoreError(`another restore into ${file} is running (pid ${holder.pid ?? '?'} on ${holder.host ?? '?'} since ${holder.startedAt ?? '?'})`, {
        hint: `wait for it to finish; if it is not running any more, remove ${lock}`,
      });
    }
    await fsp.rm(lock, { force: true });
  }
  throw new RestoreError(`could not take the restore lock of ${file}`, { hint: 'another restore keeps taking it; retry later' });
}

export const sqliteRestoreMethods: Partial<Engine> = {
  lockRestoreTarget,
  placeBeside,
  readRows,
  replaceImpact,
  replaceTables,
  async checkStructure(raw: Readable, opts: RestoreOptions): Promise<StructureReport> {
    const temp = await writeTemp(raw, opts.tempDir, opts.signal);
    try {
      const tables = checkFile(temp);
      return { summary: `integrity_check ok, ${tables.length} tables` };
    } finally {
      await removeDatabaseFiles(temp);
    }
  },

  restore,

  async tableStats(target: Target, opts: { checksums: boolean }): Promise<TableStat[]> {
    const db = openForReading(target.path!);
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
    // A -wal or -journal left beside the old name belongs to the old file: left there, SQLite
    // would apply it to whatever file takes that name next.
    for (const side of SIDECARS) {
      await fsp.rename(target.path! + side, renamed.path! + side).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw new RestoreError(`[sqlite] renamed ${target.path} but not its ${side} file: ${err.message}`, { cause: err });
      });
    }
    return renamed;
  },

  async listSessions(target: Target): Promise<string[]> {
    return users(target.path!);
  },

  async swapBlocker(target: Target): Promise<string | undefined> {
    const file = target.path!;
    const using = await users(file);
    if (using.length > 0) return `${file} is in use by ${using.join(', ')}`;
    // Without /proc there is no telling who has it open: side files are taken as a sign of use.
    if (process.platform !== 'linux') {
      for (const side of ['-wal', '-journal']) {
        if (await exists(file + side)) return `${file}${side} exists (the database is open or was not closed cleanly)`;
      }
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
    const dir = await makeScratchDir(opts.tempDir, 'sqlitedrill');
    const file = path.join(dir, 'scratch.sqlite');
    return {
      target: { engine: 'sqlite', database: 'scratch', displayUrl: file, path: file, params: {}, options: {} },
      stop: () => fsp.rm(dir, { recursive: true, force: true }),
    };
  },
};
