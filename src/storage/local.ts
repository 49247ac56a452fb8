// Local directory driver. Keys map to paths below the root. put() writes to a hidden temporary
// file beside the target (".tmp-<name>.<random>"), fsyncs it, then publishes with rename()
// (or link() for exclusive puts, which fails when the key exists) and fsyncs the directory, so a
// crash at any point leaves either nothing or a complete file under the final name.

import { eachLimited } from '../core/limit.js';
import { createWriteStream, fdatasync, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ConfigError, describeFsError, StorageError, type StorageErrorReason } from '../core/errors.js';
import { TEMP_PREFIX } from '../core/id.js';
import { byKey, type ObjectInfo, type PutOptions, type PutResult, type Storage } from './storage.js';
import { makeDirs, modeText } from '../core/fs.js';
import { Drawable, fileSource } from './drawable.js';

export interface LocalStorageOptions {
  /** The stash root directory; created on first write. */
  root: string;
  /** Mode of every file written (default 0600: a backup is as private as the database). */
  fileMode?: number;
  /** Mode of every directory made (default 0700). */
  dirMode?: number;
}

export const DEFAULT_FILE_MODE = 0o600;
export const DEFAULT_DIR_MODE = 0o700;
/** The widest modes a stash may have without allowWorldReadable: a group of operators, no one else. */
const MAX_FILE_MODE = 0o640;
const MAX_DIR_MODE = 0o750;

function parseMode(value: unknown, what: string): number | undefined {
  if (value === undefined) return undefined;
  const text = typeof value === 'number' ? value.toString(8) : String(value);
  if (!/^0?[0-7]{3}$/.test(text)) throw new ConfigError(`[local] option "${what}": "${value}" is not a mode`, { hint: `write it in octal as a string, e.g. ${what}: "0640"` });
  return parseInt(text, 8);
}

/** Local storage options from a config entry (fileMode, dirMode, allowWorldReadable); anything else is an error. */
export function localOptions(root: string, options: Record<string, unknown>): LocalStorageOptions {
  const { fileMode, dirMode, allowWorldReadable, ...rest } = options;
  const unknown = Object.keys(rest);
  if (unknown.length > 0) {
    throw new ConfigError(`[local] option "${unknown[0]}" is not known for a local directory`, { hint: 'valid options: fileMode, dirMode, allowWorldReadable (docs/security.md)' });
  }
  const file = parseMode(fileMode, 'fileMode') ?? DEFAULT_FILE_MODE;
  const dir = parseMode(dirMode, 'dirMode') ?? DEFAULT_DIR_MODE;
  if (file & 0o111) throw new ConfigError(`[local] option "fileMode": ${modeText(file)} makes backups executable`, { hint: 'e.g. fileMode: "0640"' });
  if (!allowWorldReadable && ((file & ~MAX_FILE_MODE) !== 0 || (dir & ~MAX_DIR_MODE) !== 0)) {
    throw new ConfigError(`[local] fileMode ${modeText(file)} / dirMode ${modeText(dir)} would let others read the stash (at most ${modeText(MAX_FILE_MODE)} / ${modeText(MAX_DIR_MODE)})`, {
      hint: 'a backup holds the whole database; for a group of operators use fileMode "0640" and dirMode "0750"; wider only with --allow-world-readable (or allowWorldReadable: true)',
    });
  }
  return { root, fileMode: file, dirMode: dir };
}

function classify(err: unknown, what: string): StorageError {
  if (err instanceof StorageError) return err;
  const code = (err as NodeJS.ErrnoException).code;
  let reason: StorageErrorReason = 'permanent';
  if (code === 'ENOENT') reason = 'not-found';
  else if (code === 'EEXIST') reason = 'exists';
  else if (code === 'EAGAIN' || code === 'EBUSY' || code === 'EINTR' || code === 'EMFILE') reason = 'transient';
  const detail = describeFsError(err) ?? (err as Error).message;
  const hint =
    code === 'ENOSPC' || code === 'EDQUOT'
      ? 'free space on the destination, or choose another with --output-dir'
      : code === 'EACCES' || code === 'EPERM' || code === 'EROFS'
        ? 'make the directory writable for this user, or choose another with --output-dir'
        : code === 'ENOTDIR'
          ? 'choose a directory path with --output-dir'
          : undefined;
  return new StorageError(reason, `[local] ${what}: ${detail}`, { cause: err, hint });
}

/**
 * While a file is written, its data is flushed to disk every WRITEBACK_EVERY bytes in the
 * background (one fdatasync at a time), so the fsync before publishing finds at most that much
 * left to write instead of the whole artifact: that fsync is on the critical path of every backup
 * (with 64 MiB it took ~14 ms of a 20 MB artifact's tail, with 8 MiB ~8 ms). The final fsync still
 * decides: errors here are left to it.
 */
const WRITEBACK_EVERY = 8 << 20;
/** Bytes per read of a get(): larger than the default 64 KiB, see get(). */
const READ_CHUNK = 256 * 1024;

function writeback(file: ReturnType<typeof createWriteStream>): (bytes: number) => void {
  let fd: number | undefined;
  let syncing = false;
  let flushedAt = 0;
  file.once('open', (opened: number) => (fd = opened));
  return (bytes) => {
    if (fd === undefined || syncing || bytes - flushedAt < WRITEBACK_EVERY) return;
    syncing = true;
    flushedAt = bytes;
    fdatasync(fd, () => (syncing = false));
  };
}

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fsp.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

export function createLocalStorage(opts: LocalStorageOptions): Storage {
  const root = path.resolve(opts.root);
  const fileMode = opts.fileMode ?? DEFAULT_FILE_MODE;
  const dirMode = opts.dirMode ?? DEFAULT_DIR_MODE;

  const resolveKey = (key: string): string => {
    const full = path.resolve(root, key);
    if (full !== root && !full.startsWith(root + path.sep)) {
      throw new StorageError('permanent', `[local] key escapes the stash root: ${key}`);
    }
    return full;
  };

  async function put(key: string, data: Readable | Uint8Array, putOpts: PutOptions = {}): Promise<PutResult> {
    const target = resolveKey(key);
    const dir = path.dirname(target);
    const temp = path.join(dir, `${TEMP_PREFIX}${path.basename(target)}.${randomBytes(6).toString('hex')}`);
    let size = 0;
    let file: ReturnType<typeof createWriteStream> | undefined;
    try {
      await makeDirs(dir, dirMode);
      const source = data instanceof Uint8Array ? Readable.from([Buffer.from(data)]) : data;
      file = createWriteStream(temp, { flags: 'wx', flush: true, mode: fileMode });
      const written = writeback(file);
      const counter = async function* (chunks: AsyncIterable<Buffer>) {
        for await (const chunk of chunks) {
          size += chunk.length;
          written(size);
          yield chunk;
        }
      };
      await pipeline(source, counter, file, {
        signal: putOpts.signal,
      });
      // The umask can only take bits away from the mode asked for: set exactly that mode.
      if (fileMode !== DEFAULT_FILE_MODE) await fsp.chmod(temp, fileMode);
      if (putOpts.exclusive) {
        await fsp.link(temp, target);
        await fsp.unlink(temp);
      } else {
        await fsp.rename(temp, target);
      }
      await fsyncDir(dir);
      return { size };
    } catch (err) {
      // An abort can fail the pipeline while the temporary's open() is still under way: removing
      // it before the stream has closed would let that open() create it again afterwards.
      const opened = file;
      if (opened && !opened.closed) await new Promise<void>((resolve) => opened.once('close', () => resolve()));
      await fsp.rm(temp, { force: true }).catch(() => {});
      if ((err as Error).name === 'AbortError') throw err;
      throw classify(err, `cannot write ${key}`);
    }
  }

  async function get(key: string): Promise<Readable> {
    const file = resolveKey(key);
    try {
      const handle = await fsp.open(file, 'r');
      // 256 KiB reads, not the default 64 KiB: each read is a trip through libuv's thread pool, and
      // `dbstash copy` to SFTP went at 0.65-0.78x of `sftp put` with 64 KiB reads (docs/performance.md).
      // A driver that can draws it into its own buffers instead (Drawable).
      return new Drawable(fileSource(handle), READ_CHUNK);
    } catch (err) {
      throw classify(err, `cannot read ${key}`);
    }
  }

  async function stat(key: string): Promise<ObjectInfo | undefined> {
    try {
      const st = await fsp.stat(resolveKey(key));
      if (!st.isFile()) return undefined;
      return { key, size: st.size, modifiedAt: st.mtime };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw classify(err, `cannot stat ${key}`);
    }
  }

  const STAT_AHEAD = 32;

  async function list(prefix: string, temporaries = false): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const walk = async (dir: string, rel: string): Promise<void> => {
      let entries;
      try {
        entries = await fsp.readdir(dir, { withFileTypes: true });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
        throw classify(err, `cannot list ${rel || '/'}`);
      }
      const files: { key: string; file: string }[] = [];
      for (const entry of entries) {
        const key = rel ? `${rel}/${entry.name}` : entry.name;
        if (entry.isFile() && entry.name.startsWith(TEMP_PREFIX) !== temporaries) continue;
        if (entry.isDirectory()) {
          if (prefix.startsWith(key + '/') || key.startsWith(prefix) || prefix === '') await walk(path.join(dir, entry.name), key);
        } else if (entry.isFile() && key.startsWith(prefix)) {
          files.push({ key, file: path.join(dir, entry.name) });
        }
      }
      // Stats side by side: one at a time, a folder of 50,000 files took seconds.
      await eachLimited(files, STAT_AHEAD, async ({ key, file }) => {
        const st = await fsp.stat(file).catch(() => undefined);
        if (st) out.push({ key, size: st.size, modifiedAt: st.mtime });
      });
    };
    await walk(root, '');
    return out.sort(byKey);
  }

  async function del(key: string): Promise<void> {
    try {
      await fsp.unlink(resolveKey(key));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw classify(err, `cannot delete ${key}`);
    }
  }

  async function nearestExisting(dir: string): Promise<string> {
    let current = dir;
    for (;;) {
      try {
        await fsp.access(current);
        return current;
      } catch {
        const parent = path.dirname(current);
        if (parent === current) return current;
        current = parent;
      }
    }
  }

  /**
   * What others may read in the stash beyond the configured modes: the root, and below it every
   * folder and file (or one folder's). Group or other bits the modes do not grant are a problem.
   */
  async function permissionProblems(folder?: string): Promise<string[]> {
    const tooWide = { dirs: [] as string[], files: [] as string[] };
    const look = async (p: string, depth: number): Promise<void> => {
      let st;
      try {
        st = await fsp.lstat(p);
      } catch {
        return;
      }
      if (st.isDirectory()) {
        if (st.mode & 0o077 & ~dirMode) tooWide.dirs.push(`${p} (${modeText(st.mode)})`);
        if (depth === 0) return;
        let names: string[] = [];
        try {
          names = await fsp.readdir(p);
        } catch {
          return;
        }
        for (const name of names) await look(path.join(p, name), depth - 1);
      } else if (st.isFile() && st.mode & 0o077 & ~fileMode) {
        tooWide.files.push(`${p} (${modeText(st.mode)})`);
      }
    };
    await look(root, 0);
    if (folder) await look(resolveKey(folder), 1);
    else await look(root, 2);
    const count = tooWide.dirs.length + tooWide.files.length;
    if (count === 0) return [];
    const fix = (dirMode & 0o070) !== 0 ? 'chmod -R g-w,o-rwx' : 'chmod -R go-rwx';
    const examples = [...tooWide.dirs, ...tooWide.files].slice(0, 3).join(', ');
    return [
      `${count} item${count === 1 ? '' : 's'} of the stash ${root} can be read by other users (${examples}${count > 3 ? ', …' : ''}): every backup holds a whole database; to fix: ${fix} ${root}`,
    ];
  }

  return {
    url: root,
    properties: { kind: 'local', local: true, maxParallelism: 4 },
    permissionProblems,
    put,
    get,
    stat,
    list: (prefix) => list(prefix),
    listTemporaries: (prefix) => list(prefix, true),
    delete: del,
    async freeSpace() {
      const st = await fsp.statfs(await nearestExisting(root));
      return st.bavail * st.bsize;
    },
    async check() {
      try {
        await makeDirs(root, dirMode);
        await fsp.access(root, 2 /* W_OK */);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
          // The parent exists, yet the directory cannot be made in it (/proc, /sys, a vanished mount).
          throw new StorageError('permanent', `[local] cannot create the stash directory ${root}: this file system refuses it`, {
            cause: err,
            hint: 'choose a directory on a writable disk with --output-dir',
          });
        }
        throw classify(err, `stash directory ${root} is not writable`);
      }
    },
  };

}
