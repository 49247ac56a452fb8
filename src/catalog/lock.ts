// One backup of a series into a stash at a time, with nothing but creating objects: taking,
// releasing and overriding the lock never needs to delete or overwrite anything, so a backup host
// with append-only credentials (S3 put without delete, a rest-server in append-only mode) can
// lock, and a lock left by a crash never needs a delete to get past.
//
// A run's lock is an object of its own, created exclusively:
//   <series>/locks/<YYYYMMDDTHHMMSSmmmZ>-<token>.lock      who holds it (owner, pid, host, command)
//   <series>/locks/<same>.released                         written when the run ends (or is overridden)
// Taking the lock:
//   1. create my lock object;
//   2. list the locks: every other lock without its ".released" is active, unless its process is
//      known to be gone (same host, dead pid: stale, and ignored with a warning);
//   3. no other active lock: I hold it. Another active lock: I write my ".released", look again a
//      moment later, and report who holds it if its lock is still there; if it was released, it
//      was a run that arrived with me and stepped back too: try again.
// At most one run holds the lock: of two runs that both hold, the one that listed first did so
// before the other created its lock — whose later listing then saw the first lock. Two runs that
// arrive together may both back off; they retry after a random delay.
// --force-unlock writes ".released" for the locks that block it (and tidies them away where it may). Released and stale locks are
// clutter, not state: the run that releases deletes its two objects when it may (append-only
// credentials may not; on a local file system deleting the lock is the release, with no marker
// written), and prune removes old ones.

import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { LockedError, StorageError } from '../core/errors.js';
import { onForcedExit } from '../core/forced-exit.js';
import { processAlive } from '../core/scratch.js';
import { getBytes, putOwnBytes, type ObjectInfo, type Storage } from '../storage/storage.js';

export interface LockInfo {
  owner: string;
  pid: number;
  host: string;
  startedAt: string;
  command: string;
  /** Random, per run. */
  token?: string;
  /** A fleet worker's run: the queue's job and attempt (docs/fleet.md). */
  job?: { id: string; attempt: number };
}

export interface HeldLock {
  key: string;
  info: LockInfo;
  /** Locks of runs that died (or earlier attempts of this fleet job) that this run passed over. */
  passedOver: LockInfo[];
  release(): Promise<void>;
}

export const LOCKS_DIR = 'locks';
const LOCK_SUFFIX = '.lock';
const RELEASED_SUFFIX = '.released';
/** The pre-series lock file, still honoured as a lock when an older version holds it. */
const LEGACY_LOCK = 'dbstash.lock';

export function locksPrefix(folder: string): string {
  return `${folder}/${LOCKS_DIR}/`;
}

/** Whether a key belongs to the locking (a lock, its release, or an old-style lock file). */
export function isLockKey(key: string): boolean {
  return key.includes(`/${LOCKS_DIR}/`) || key.endsWith(`/${LEGACY_LOCK}`);
}

export { processAlive };

export function isStale(info: LockInfo): boolean {
  return info.host === os.hostname() && info.pid > 0 && !processAlive(info.pid);
}

function stamp(at: Date): string {
  return at.toISOString().replace(/[-:]/g, '').replace('.', '');
}

function body(info: LockInfo): Buffer {
  return Buffer.from(JSON.stringify(info, null, 2) + '\n');
}

async function readInfo(storage: Storage, key: string): Promise<LockInfo | undefined> {
  try {
    const parsed = JSON.parse((await getBytes(storage, key)).toString()) as Partial<LockInfo>;
    return { owner: '?', pid: 0, host: '?', startedAt: '?', command: '?', ...parsed };
  } catch (err) {
    if (err instanceof StorageError && err.reason === 'not-found') return undefined;
    if (err instanceof SyntaxError) return { owner: '?', pid: 0, host: '?', startedAt: '?', command: 'unreadable lock' };
    throw err;
  }
}

export interface ActiveLock {
  key: string;
  info: LockInfo;
  stale: boolean;
}

/** The locks of a folder that have not been released (stale ones included, marked). */
export async function activeLocks(storage: Storage, folder: string, objects?: ObjectInfo[]): Promise<ActiveLock[]> {
  const listed = objects?.filter((o) => o.key.startsWith(locksPrefix(folder))) ?? (await storage.list(locksPrefix(folder)));
  const keys = new Set(listed.map((o) => o.key));
  const out: ActiveLock[] = [];
  for (const key of [...keys].filter((k) => k.endsWith(LOCK_SUFFIX)).sort()) {
    if (keys.has(key.slice(0, -LOCK_SUFFIX.length) + RELEASED_SUFFIX)) continue;
    const info = await readInfo(storage, key);
    if (info) out.push({ key, info, stale: isStale(info) });
  }
  const legacy = `${folder}/${LEGACY_LOCK}`;
  if (!objects || objects.some((o) => o.key === legacy)) {
    const info = await readInfo(storage, legacy);
    if (info) out.push({ key: legacy, info, stale: isStale(info) });
  }
  return out;
}

/** The lock that holds a folder now (the oldest active one that is not stale), if any. */
export async function readLock(storage: Storage, folder: string): Promise<LockInfo | undefined> {
  const active = await activeLocks(storage, folder);
  return (active.find((l) => !l.stale) ?? active[0])?.info;
}

function describeHolder(h: LockInfo): string {
  return `pid ${h.pid} on ${h.host} (${h.owner}) since ${h.startedAt}, running "${h.command}"`;
}

const releasedKey = (lockKey: string) => lockKey.slice(0, -LOCK_SUFFIX.length) + RELEASED_SUFFIX;

/**
 * Marks a lock released (a new object), then tidies both away where deleting is allowed. On a
 * local file system that lets the run delete, removing the lock file is its release: the marker,
 * which would be written, made durable and deleted again at once, is written only when the
 * delete is refused (an append-only folder).
 */
async function releaseLock(storage: Storage, key: string, tidy: boolean): Promise<void> {
  if (tidy && storage.properties.local) {
    const deleted = await storage.delete(key).then(
      () => true,
      () => false,
    );
    if (deleted) {
      // One left by --force-unlock elsewhere, if any.
      await storage.delete(releasedKey(key)).catch(() => {});
      return;
    }
  }
  try {
    await putOwnBytes(storage, releasedKey(key), Buffer.from(`${new Date().toISOString()}\n`));
  } catch (err) {
    // Released already (by --force-unlock elsewhere): so much the better.
    if (!(err instanceof StorageError && err.reason === 'exists')) throw err;
  }
  if (!tidy) return;
  // Append-only credentials refuse deletes: the released pair stays for prune.
  await storage.delete(key).catch(() => {});
  await storage.delete(releasedKey(key)).catch(() => {});
}

export async function acquireLock(
  storage: Storage,
  folder: string,
  opts: { command: string; force?: boolean; warn: (msg: string) => void; what?: string; attempts?: number; job?: { id: string; attempt: number } },
): Promise<HeldLock> {
  const what = opts.what ?? `"${folder}"`;
  const warned = new Set<string>();
  const attempts = opts.attempts ?? 8;
  for (let attempt = 1; ; attempt++) {
    const info: LockInfo = {
      owner: os.userInfo().username,
      pid: process.pid,
      host: os.hostname(),
      startedAt: new Date().toISOString(),
      command: opts.command,
      token: randomBytes(16).toString('hex'),
      ...(opts.job ? { job: opts.job } : {}),
    };
    const key = `${locksPrefix(folder)}${stamp(new Date())}-${info.token}${LOCK_SUFFIX}`;
    await putOwnBytes(storage, key, body(info));
    const others = (await activeLocks(storage, folder))
      .filter((l) => l.key !== key)
      // The lock of an earlier attempt of the fleet job this run retries: the queue retried the job
      // because that attempt's worker failed or stopped sending heartbeats (on any host).
      .map((l) => (!l.stale && opts.job && l.info.job?.id === opts.job.id && l.info.job.attempt < opts.job.attempt ? { ...l, stale: true, earlierAttempt: true } : l));
    for (const l of others.filter((x) => x.stale && !warned.has(x.key))) {
      warned.add(l.key);
      opts.warn(
        'earlierAttempt' in l
          ? `ignoring the lock of attempt ${l.info.job!.attempt} of this job: ${describeHolder(l.info)} stopped sending heartbeats to the queue`
          : `ignoring a stale lock: ${describeHolder(l.info)} is no longer running`,
      );
    }
    const blocking = others.filter((l) => !l.stale);
    if (blocking.length > 0 && opts.force) {
      for (const l of blocking) {
        if (l.key.endsWith(LEGACY_LOCK)) await storage.delete(l.key);
        else await releaseLock(storage, l.key, true);
        opts.warn(`removing the lock held by ${describeHolder(l.info)} (--force-unlock)`);
      }
    } else if (blocking.length > 0) {
      await releaseLock(storage, key, true);
      // The other lock may be a run that arrived with us and stepped back too: look again a
      // moment later. A lock still there then is held; one that was released was such a run.
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 200 * attempt));
      const still = new Set((await activeLocks(storage, folder)).map((l) => l.key));
      const held = blocking.filter((l) => still.has(l.key));
      if (held.length > 0 || attempt >= attempts) {
        const holder = (held[0] ?? blocking[0]).info;
        throw new LockedError(`another dbstash is working on ${what} in ${storage.url}: ${describeHolder(holder)}`, {
          hint: 'wait for it to finish; if it is not running any more, run again with --force-unlock',
        });
      }
      continue;
    }
    // Locks of runs that died are clutter now that this run holds the folder: mark them released.
    for (const l of others.filter((x) => x.stale && !x.key.endsWith(LEGACY_LOCK))) await releaseLock(storage, l.key, true).catch(() => {});
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      unregister();
      await releaseLock(storage, key, true);
    };
    // A person's second Ctrl-C exits without the clean-up, but the lock still goes.
    const unregister = onForcedExit(release);
    return { key, info, passedOver: others.filter((x) => x.stale).map((x) => x.info), release };
  }
}
