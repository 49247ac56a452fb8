// One backup of a database into a stash at a time. The lock is an object "<database>/dbstash.lock"
// created exclusively in the stash, holding who took it. A lock whose process is gone (same host,
// pid no longer alive) is stale: it is replaced with a warning. --force-unlock removes any lock.

import os from 'node:os';
import { LockedError, StorageError } from '../core/errors.js';
import { onForcedExit } from '../core/forced-exit.js';
import { safeName } from '../core/id.js';
import { getBytes, type Storage } from '../storage/storage.js';

export interface LockInfo {
  owner: string;
  pid: number;
  host: string;
  startedAt: string;
  command: string;
}

export interface HeldLock {
  key: string;
  info: LockInfo;
  release(): Promise<void>;
}

export function lockKey(database: string): string {
  return `${safeName(database)}/dbstash.lock`;
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export async function readLock(storage: Storage, database: string): Promise<LockInfo | undefined> {
  try {
    return JSON.parse((await getBytes(storage, lockKey(database))).toString()) as LockInfo;
  } catch (err) {
    if (err instanceof StorageError && err.reason === 'not-found') return undefined;
    if (err instanceof SyntaxError) return { owner: '?', pid: 0, host: '?', startedAt: '?', command: 'unreadable lock' };
    throw err;
  }
}

export function isStale(info: LockInfo): boolean {
  return info.host === os.hostname() && info.pid > 0 && !processAlive(info.pid);
}

export async function acquireLock(
  storage: Storage,
  database: string,
  opts: { command: string; force?: boolean; warn: (msg: string) => void },
): Promise<HeldLock> {
  const key = lockKey(database);
  const info: LockInfo = {
    owner: os.userInfo().username,
    pid: process.pid,
    host: os.hostname(),
    startedAt: new Date().toISOString(),
    command: opts.command,
  };
  const body = Buffer.from(JSON.stringify(info, null, 2) + '\n');
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      await storage.put(key, body, { exclusive: true });
      let released = false;
      const release = async () => {
        if (released) return;
        released = true;
        unregister();
        await storage.delete(key);
      };
      const unregister = onForcedExit(release);
      return { key, info, release };
    } catch (err) {
      if (!(err instanceof StorageError && err.reason === 'exists')) throw err;
    }
    const holder = await readLock(storage, database);
    if (!holder) continue; // released meanwhile: try again
    const who = `pid ${holder.pid} on ${holder.host} (${holder.owner}) since ${holder.startedAt}, running "${holder.command}"`;
    if (opts.force) {
      opts.warn(`removing the lock held by ${who} (--force-unlock)`);
    } else if (isStale(holder)) {
      opts.warn(`replacing a stale lock: ${who} is no longer running`);
    } else {
      throw new LockedError(`another dbstash is working on database "${database}" in ${storage.url}: ${who}`, {
        hint: 'wait for it to finish; if it is not running any more, run again with --force-unlock',
      });
    }
    await storage.delete(key);
  }
  throw new LockedError(`could not take the lock for database "${database}" in ${storage.url}`, {
    hint: 'another process keeps taking it; retry later',
  });
}
