// The per-database lock in the stash: exclusive, stale locks replaced with a warning, --force-unlock.

import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { LockedError } from '../../src/core/errors.js';
import { acquireLock, isStale, lockKey, readLock, type HeldLock, type LockInfo } from '../../src/catalog/lock.js';
import { createMemoryStorage, resetMemoryStorage } from '../../src/storage/memory.js';
import type { Storage } from '../../src/storage/storage.js';

function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '0']);
  assert.ok(r.pid > 0);
  return r.pid;
}

function lockOf(pid: number, host = os.hostname()): Buffer {
  const info: LockInfo = { owner: 'someone', pid, host, startedAt: '2026-11-23T08:00:00.000Z', command: 'dbstash backup shop' };
  return Buffer.from(JSON.stringify(info));
}

let storage: Storage;
beforeEach(() => {
  resetMemoryStorage('lock-test');
  storage = createMemoryStorage('lock-test');
});

describe('lock', () => {
  it('is exclusive: a second acquire fails with LockedError naming the holder; release frees it', async () => {
    const warnings: string[] = [];
    const held = await acquireLock(storage, 'shop', { command: 'first', warn: (m) => warnings.push(m) });
    const info = await readLock(storage, 'shop');
    assert.equal(info?.pid, process.pid);
    assert.equal(info?.host, os.hostname());
    assert.equal(info?.command, 'first');
    await assert.rejects(acquireLock(storage, 'shop', { command: 'second', warn: (m) => warnings.push(m) }), (err: unknown) => {
      assert.ok(err instanceof LockedError);
      assert.equal(err.exitCode, 6);
      assert.match(err.message, new RegExp(`pid ${process.pid}`));
      assert.match(err.hint ?? '', /--force-unlock/);
      return true;
    });
    assert.deepEqual(warnings, []);
    await held.release();
    await held.release();
    assert.equal(await readLock(storage, 'shop'), undefined);
    const again = await acquireLock(storage, 'shop', { command: 'third', warn: () => {} });
    await again.release();
  });

  it('locks databases independently', async () => {
    const a = await acquireLock(storage, 'shop', { command: 'a', warn: () => {} });
    const b = await acquireLock(storage, 'crm', { command: 'b', warn: () => {} });
    await a.release();
    await b.release();
  });

  it('replaces a stale lock (same host, process gone) with a warning', async () => {
    const pid = deadPid();
    await storage.put(lockKey('shop'), lockOf(pid));
    assert.equal(isStale(JSON.parse(lockOf(pid).toString())), true);
    const warnings: string[] = [];
    const held = await acquireLock(storage, 'shop', { command: 'mine', warn: (m) => warnings.push(m) });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], new RegExp(`stale lock: pid ${pid} .* no longer running`));
    assert.equal((await readLock(storage, 'shop'))?.pid, process.pid);
    await held.release();
  });

  it('does not treat a live process or another host\'s lock as stale', async () => {
    await storage.put(lockKey('shop'), lockOf(1));
    await assert.rejects(acquireLock(storage, 'shop', { command: 'x', warn: () => {} }), LockedError);
    await storage.put(lockKey('shop'), lockOf(deadPid(), 'some-other-host'));
    await assert.rejects(acquireLock(storage, 'shop', { command: 'x', warn: () => {} }), LockedError);
  });

  it('--force-unlock removes a live lock with a warning', async () => {
    await storage.put(lockKey('shop'), lockOf(1, 'some-other-host'));
    const warnings: string[] = [];
    const held = await acquireLock(storage, 'shop', { command: 'forced', force: true, warn: (m) => warnings.push(m) });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /removing the lock held by pid 1 on some-other-host .*--force-unlock/);
    assert.equal((await readLock(storage, 'shop'))?.command, 'forced');
    await held.release();
  });

  it('an unreadable lock blocks until forced', async () => {
    await storage.put(lockKey('shop'), Buffer.from('{ not json'));
    await assert.rejects(acquireLock(storage, 'shop', { command: 'x', warn: () => {} }), LockedError);
    const held = await acquireLock(storage, 'shop', { command: 'x', force: true, warn: () => {} });
    await held.release();
  });

  it('of concurrent acquires exactly one wins', async () => {
    const results = await Promise.allSettled([1, 2, 3, 4].map((n) => acquireLock(storage, 'shop', { command: `c${n}`, warn: () => {} })));
    assert.equal(results.filter((r) => r.status === 'fulfilled').length, 1);
    assert.ok(results.filter((r) => r.status === 'rejected').every((r) => (r as PromiseRejectedResult).reason instanceof LockedError));
  });

  it('lives in the series folder it is given', () => {
    assert.equal(lockKey('shop'), 'shop/dbstash.lock');
    assert.equal(lockKey('shop~1a2b3c4d'), 'shop~1a2b3c4d/dbstash.lock');
  });

  it('a stale lock is taken over by one run only, however the runs interleave', async () => {
    // B reads the stale lock, then stalls; A takes it over and holds a fresh lock; then B goes on.
    // Deleting "the lock" at that point would delete A's: B must find the lock changed and stop.
    await storage.put(lockKey('shop'), lockOf(deadPid()));
    let stalled!: () => void;
    const gate = new Promise<void>((resolve) => (stalled = resolve));
    let reads = 0;
    const slow: Storage = {
      ...storage,
      async get(key, opts) {
        const stream = await storage.get(key, opts);
        if (key === lockKey('shop') && ++reads === 1) await gate;
        return stream;
      },
    };
    const b = acquireLock(slow, 'shop', { command: 'b', warn: () => {} });
    await new Promise((r) => setTimeout(r, 20));
    const a = await acquireLock(storage, 'shop', { command: 'a', warn: () => {} });
    stalled();
    await assert.rejects(b, LockedError);
    assert.equal((await readLock(storage, 'shop'))?.command, 'a', 'A still holds the lock');
    await a.release();
    assert.equal(await readLock(storage, 'shop'), undefined);
    assert.deepEqual((await storage.list('shop/')).map((o) => o.key), [], 'no takeover marker is left');
  });

  it('of many runs over one stale lock exactly one wins, and its lock survives', async () => {
    const pause = () => new Promise((r) => setTimeout(r, Math.random() * 5));
    for (let round = 0; round < 20; round++) {
      await storage.put(lockKey('shop'), lockOf(deadPid()));
      const jittery: Storage = {
        ...storage,
        get: async (key, opts) => (await pause(), storage.get(key, opts)),
        delete: async (key) => (await pause(), storage.delete(key)),
      };
      const results = await Promise.allSettled([1, 2, 3, 4, 5].map((n) => acquireLock(jittery, 'shop', { command: `r${n}`, warn: () => {} })));
      const winners = results.filter((r): r is PromiseFulfilledResult<HeldLock> => r.status === 'fulfilled');
      assert.equal(winners.length, 1, `round ${round}: ${winners.length} runs hold the lock`);
      assert.equal((await readLock(storage, 'shop'))?.token, winners[0].value.info.token);
      await winners[0].value.release();
    }
  });

  it('a retried put whose first answer was lost finds its own lock and holds it', async () => {
    let first = true;
    const lossy: Storage = {
      ...storage,
      async put(key, data, opts) {
        const result = await storage.put(key, data, opts);
        if (first && key === lockKey('shop')) {
          first = false;
          // Stored, but the answer never came: the caller tries again and meets its own lock.
          return storage.put(key, data, opts);
        }
        return result;
      },
    };
    const held = await acquireLock(lossy, 'shop', { command: 'mine', warn: () => {} });
    assert.equal((await readLock(storage, 'shop'))?.token, held.info.token);
    await held.release();
    assert.equal(await readLock(storage, 'shop'), undefined);
  });

  it('release leaves a lock that is no longer ours', async () => {
    const held = await acquireLock(storage, 'shop', { command: 'mine', warn: () => {} });
    const forced = await acquireLock(storage, 'shop', { command: 'forced', force: true, warn: () => {} });
    await held.release();
    assert.equal((await readLock(storage, 'shop'))?.command, 'forced');
    await forced.release();
  });
});
