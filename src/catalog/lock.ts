// One backup of a series into a stash at a time. The lock is an object "<series>/dbstash.lock"
// created exclusively in the stash, holding who took it and a random token of that run.
//
// Taking the lock: an exclusive put. When the key exists and its holder is a process that is gone
// (same host, pid no longer alive), the lock is stale and is taken over; --force-unlock takes over
// any lock. Taking over must be atomic on every storage, with nothing but exclusive puts: a
// run that reads lock T and then deletes "the lock" may delete a fresh lock another run has just
// taken after T was removed. So only the run that wins a takeover marker for T may delete T:
//   1. read the lock: T (its token, or its SHA-256 for a lock without one);
//   2. create "<series>/dbstash.lock.takeover-<T>.<n>" exclusively: of all runs that saw T, one wins;
//   3. the winner reads the lock again and deletes it only if it is still T (T can never come back:
//      tokens are random), then removes its marker and tries the exclusive put again.
// A marker whose owner died between 2 and 3 blocks nobody: the next run creates marker n+1.
// Markers are tiny and short-lived; prune removes abandoned ones.
//
// An exclusive put whose response was lost (S3) and that was retried reports "exists" for our own
// lock: a holder with our token is us. Release deletes the lock only while it still holds our token.

import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';
import { LockedError, StorageError } from '../core/errors.js';
import { getBytes, type Storage } from '../storage/storage.js';

export interface LockInfo {
  owner: string;
  pid: number;
  host: string;
  startedAt: string;
  command: string;
  /** Random, per run: tells this run's lock from any other (locks of older versions have none). */
  token?: string;
}

export interface HeldLock {
  key: string;
  info: LockInfo;
  release(): Promise<void>;
}

export const LOCK_FILE = 'dbstash.lock';
const TAKEOVER_INFIX = '.takeover-';
/** A takeover takes milliseconds; a marker this old was abandoned, whatever host left it. */
const MARKER_MAX_AGE_MS = 60_000;

export function lockKey(folder: string): string {
  return `${folder}/${LOCK_FILE}`;
}

/** Whether a key is a lock or a takeover marker (not a leftover of a backup). */
export function isLockKey(key: string): boolean {
  const name = key.split('/').pop() ?? '';
  return name === LOCK_FILE || name.startsWith(LOCK_FILE + TAKEOVER_INFIX);
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface ReadLock {
  info: LockInfo;
  /** The lock's token, or the SHA-256 of its bytes for a lock without one. */
  token: string;
}

async function readRaw(storage: Storage, key: string): Promise<ReadLock | undefined> {
  let bytes: Buffer;
  try {
    bytes = await getBytes(storage, key);
  } catch (err) {
    if (err instanceof StorageError && err.reason === 'not-found') return undefined;
    throw err;
  }
  const digest = createHash('sha256').update(bytes).digest('hex');
  try {
    const info = JSON.parse(bytes.toString()) as LockInfo;
    return { info, token: typeof info.token === 'string' && /^[0-9a-f]{16,64}$/.test(info.token) ? info.token : digest };
  } catch {
    return { info: { owner: '?', pid: 0, host: '?', startedAt: '?', command: 'unreadable lock' }, token: digest };
  }
}

export async function readLock(storage: Storage, folder: string): Promise<LockInfo | undefined> {
  return (await readRaw(storage, lockKey(folder)))?.info;
}

export function isStale(info: LockInfo): boolean {
  return info.host === os.hostname() && info.pid > 0 && !processAlive(info.pid);
}

function describeHolder(h: LockInfo): string {
  return `pid ${h.pid} on ${h.host} (${h.owner}) since ${h.startedAt}, running "${h.command}"`;
}

function lockBody(info: LockInfo): Buffer {
  return Buffer.from(JSON.stringify(info, null, 2) + '\n');
}

/**
 * Deletes the lock with token `stale` if, and only if, this run wins the takeover of that token.
 * Returns false when another run is taking it over right now.
 */
async function takeOver(storage: Storage, key: string, stale: string, me: LockInfo): Promise<boolean> {
  const prefix = `${key}${TAKEOVER_INFIX}${stale}.`;
  const markers = (await storage.list(prefix)).map((o) => ({ ...o, n: Number(o.key.slice(prefix.length)) })).filter((m) => Number.isInteger(m.n));
  const last = markers.sort((a, b) => b.n - a.n)[0];
  if (last) {
    const holder = await readRaw(storage, last.key);
    const abandoned = !holder || isStale(holder.info) || Date.now() - last.modifiedAt.getTime() > MARKER_MAX_AGE_MS;
    if (!abandoned) return false;
  }
  const marker = `${prefix}${(last?.n ?? 0) + 1}`;
  try {
    await storage.put(marker, lockBody(me), { exclusive: true });
  } catch (err) {
    if (err instanceof StorageError && err.reason === 'exists') return false;
    throw err;
  }
  try {
    const current = await readRaw(storage, key);
    if (current?.token === stale) await storage.delete(key);
  } finally {
    for (const m of [...markers.map((x) => x.key), marker]) await storage.delete(m).catch(() => {});
  }
  return true;
}

export async function acquireLock(
  storage: Storage,
  folder: string,
  opts: { command: string; force?: boolean; warn: (msg: string) => void; what?: string },
): Promise<HeldLock> {
  const key = lockKey(folder);
  const info: LockInfo = {
    owner: os.userInfo().username,
    pid: process.pid,
    host: os.hostname(),
    startedAt: new Date().toISOString(),
    command: opts.command,
    token: randomBytes(16).toString('hex'),
  };
  const held: HeldLock = {
    key,
    info,
    async release() {
      const current = await readRaw(storage, key);
      if (current?.token === info.token) await storage.delete(key);
    },
  };
  const what = opts.what ?? `"${folder}"`;
  let warned = false;
  for (let attempt = 0; attempt < 20; attempt++) {
    try {
      await storage.put(key, lockBody(info), { exclusive: true });
      return held;
    } catch (err) {
      if (!(err instanceof StorageError && err.reason === 'exists')) throw err;
    }
    const holder = await readRaw(storage, key);
    if (!holder) continue; // released meanwhile: try again
    if (holder.token === info.token) return held; // our own put, whose answer was lost and retried
    const who = describeHolder(holder.info);
    if (!opts.force && !isStale(holder.info)) {
      throw new LockedError(`another dbstash is working on ${what} in ${storage.url}: ${who}`, {
        hint: 'wait for it to finish; if it is not running any more, run again with --force-unlock',
      });
    }
    if (await takeOver(storage, key, holder.token, info)) {
      if (!warned) opts.warn(opts.force ? `removing the lock held by ${who} (--force-unlock)` : `replacing a stale lock: ${who} is no longer running`);
      warned = true;
    } else {
      // Another run is taking the same stale lock over: give it a moment, then look again.
      await new Promise((r) => setTimeout(r, 20 + Math.random() * 80));
    }
  }
  throw new LockedError(`could not take the lock for ${what} in ${storage.url}`, {
    hint: 'other runs keep taking it; retry later',
  });
}
