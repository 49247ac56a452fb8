// The per-database lock in the stash: exclusive, stale locks replaced with a warning, --force-unlock.

import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { LockedError } from '../../src/core/errors.js';
import { acquireLock, isStale, lockKey, readLock, type LockInfo } from '../../src/catalog/lock.js';
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

  it('lives in the same stash folder as the database\'s backups, whatever the name', () => {
    assert.equal(lockKey('shop'), 'shop/dbstash.lock');
    assert.equal(lockKey('my db'), 'my-db/dbstash.lock');
    assert.equal(lockKey('a/b'), 'a-b/dbstash.lock');
  });
});
