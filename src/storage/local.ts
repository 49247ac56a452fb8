// Local directory driver. Keys map to paths below the root. put() writes to a hidden temporary
// file beside the target (".tmp-<name>.<random>"), fsyncs it, then publishes with rename()
// (or link() for exclusive puts, which fails when the key exists) and fsyncs the directory, so a
// crash at any point leaves either nothing or a complete file under the final name.

import { createWriteStream, fdatasync, promises as fsp } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describeFsError, StorageError, type StorageErrorReason } from '../core/errors.js';
import { TEMP_PREFIX } from '../core/id.js';
import { byKey, type ObjectInfo, type PutOptions, type PutResult, type Storage } from './storage.js';
import { makeDirs } from '../core/fs.js';

export interface LocalStorageOptions {
  /** The stash root directory; created on first write. */
  root: string;
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
      await makeDirs(dir);
      const source = data instanceof Uint8Array ? Readable.from([Buffer.from(data)]) : data;
      file = createWriteStream(temp, { flags: 'wx', flush: true });
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
      return handle.createReadStream();
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
      for (const entry of entries) {
        const key = rel ? `${rel}/${entry.name}` : entry.name;
        if (entry.isFile() && entry.name.startsWith(TEMP_PREFIX) !== temporaries) continue;
        if (entry.isDirectory()) {
          if (prefix.startsWith(key + '/') || key.startsWith(prefix) || prefix === '') await walk(path.join(dir, entry.name), key);
        } else if (entry.isFile() && key.startsWith(prefix)) {
          const st = await fsp.stat(path.join(dir, entry.name)).catch(() => undefined);
          if (st) out.push({ key, size: st.size, modifiedAt: st.mtime });
        }
      }
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

  return {
    url: root,
    properties: { kind: 'local', local: true, maxParallelism: 4 },
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
        await makeDirs(root);
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
