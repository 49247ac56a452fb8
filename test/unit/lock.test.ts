// The per-series lock in a stash: one holder at a time, taken, released and overridden by
// creating objects only (append-only credentials can lock), stale locks ignored with a warning,
// --force-unlock, and runs that interleave in every way still never hold it together.

import { describe, it, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import os from 'node:os';
import { LockedError, StorageError } from '../../src/core/errors.js';
import { acquireLock, activeLocks, locksPrefix, readLock, type HeldLock, type LockInfo } from '../../src/catalog/lock.js';
import { createMemoryStorage, resetMemoryStorage } from '../../src/storage/memory.js';
import type { Storage } from '../../src/storage/storage.js';

function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '0']);
  assert.ok(r.pid > 0);
  return r.pid;
}

function lockOf(pid: number, host = os.hostname(), startedAt = '2026-11-23T08:00:00.000Z'): Buffer {
  const info: LockInfo = { owner: 'someone', pid, host, startedAt, command: 'dbstash backup shop' };
  return Buffer.from(JSON.stringify(info));
}

/** A lock object as another run would have left it. */
async function placeLock(storage: Storage, body: Buffer, name = `20261123T080000000Z-${Math.random().toString(16).slice(2)}`): Promise<string> {
  const key = `${locksPrefix('shop')}${name}.lock`;
  await storage.put(key, body, { exclusive: true });
  return key;
}

const quiet = { warn: () => {} };
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
    await assert.rejects(acquireLock(storage, 'shop', { command: 'second', warn: (m) => warnings.push(m), attempts: 2 }), (err: unknown) => {
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
    assert.deepEqual(await storage.list('shop/'), [], 'released locks are tidied away where deleting is allowed');
    const again = await acquireLock(storage, 'shop', { command: 'third', ...quiet });
    await again.release();
  });

  it('locks series independently', async () => {
    const a = await acquireLock(storage, 'shop', { command: 'a', ...quiet });
    const b = await acquireLock(storage, 'crm', { command: 'b', ...quiet });
    await a.release();
    await b.release();
  });

  it('ignores a stale lock (same host, process gone) with a warning, and clears it once it holds', async () => {
    const pid = deadPid();
    await placeLock(storage, lockOf(pid));
    const warnings: string[] = [];
    const held = await acquireLock(storage, 'shop', { command: 'mine', warn: (m) => warnings.push(m) });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], new RegExp(`ignoring a stale lock: pid ${pid} .* no longer running`));
    assert.equal((await readLock(storage, 'shop'))?.pid, process.pid);
    assert.deepEqual((await activeLocks(storage, 'shop')).map((l) => l.info.command), ['mine'], 'the stale lock is released');
    await held.release();
  });

  it('does not treat a live process or another host\'s lock as stale', async () => {
    await placeLock(storage, lockOf(1));
    await assert.rejects(acquireLock(storage, 'shop', { command: 'x', ...quiet, attempts: 1 }), LockedError);
    resetMemoryStorage('lock-test');
    await placeLock(storage, lockOf(deadPid(), 'some-other-host'));
    await assert.rejects(acquireLock(storage, 'shop', { command: 'x', ...quiet, attempts: 1 }), LockedError);
  });

  it('a fleet job\'s retry passes over the lock of its own earlier attempt on another host, and no other lock', async () => {
    const attempt1 = { owner: 'worker', pid: 4242, host: 'other-host', startedAt: '2026-11-23T08:00:00.000Z', command: 'dbstash worker', job: { id: 'job-1', attempt: 1 } };
    await placeLock(storage, Buffer.from(JSON.stringify(attempt1)));
    // Another job (or a run outside the fleet) still waits for it: that worker may be alive.
    await assert.rejects(acquireLock(storage, 'shop', { command: 'backup', warn: () => {}, attempts: 2, job: { id: 'job-2', attempt: 2 } }), LockedError);
    await assert.rejects(acquireLock(storage, 'shop', { command: 'backup', warn: () => {}, attempts: 2 }), LockedError);
    // The same job's first attempt again (a duplicate delivery) does not pass over it either.
    await assert.rejects(acquireLock(storage, 'shop', { command: 'backup', warn: () => {}, attempts: 2, job: { id: 'job-1', attempt: 1 } }), LockedError);
    const warnings: string[] = [];
    const held = await acquireLock(storage, 'shop', { command: 'backup', warn: (m) => warnings.push(m), job: { id: 'job-1', attempt: 2 } });
    assert.match(warnings.join('\n'), /ignoring the lock of attempt 1 of this job: pid 4242 on other-host .* stopped sending heartbeats/);
    assert.deepEqual(held.info.job, { id: 'job-1', attempt: 2 });
    await held.release();
    assert.deepEqual(await activeLocks(storage, 'shop'), [], 'the dead attempt\'s lock is marked released too');
  });

  it('--force-unlock releases a live lock with a warning; the overridden run\'s own release does no harm', async () => {
    const theirs = await acquireLock(storage, 'shop', { command: 'theirs', ...quiet });
    const warnings: string[] = [];
    const held = await acquireLock(storage, 'shop', { command: 'forced', force: true, warn: (m) => warnings.push(m) });
    assert.equal(warnings.length, 1);
    assert.match(warnings[0], /removing the lock held by pid \d+ .*--force-unlock/);
    assert.equal((await readLock(storage, 'shop'))?.command, 'forced');
    await theirs.release();
    assert.equal((await readLock(storage, 'shop'))?.command, 'forced', 'the other run releasing its own lock leaves ours');
    await held.release();
  });

  it('an unreadable lock blocks until forced', async () => {
    await placeLock(storage, Buffer.from('{ not json'));
    await assert.rejects(acquireLock(storage, 'shop', { command: 'x', ...quiet, attempts: 1 }), LockedError);
    const held = await acquireLock(storage, 'shop', { command: 'x', force: true, ...quiet });
    await held.release();
  });

  it('of runs that arrive together, one holds at a time and one of them gets it', async () => {
    for (let round = 0; round < 10; round++) {
      let holding = 0;
      let most = 0;
      const run = async (n: number) => {
        const held = await acquireLock(storage, 'shop', { command: `c${n}`, ...quiet, attempts: 8 });
        most = Math.max(most, ++holding);
        await new Promise((r) => setTimeout(r, 5));
        holding--;
        await held.release();
        return held;
      };
      const results = await Promise.allSettled([1, 2, 3, 4, 5].map(run));
      assert.ok(results.some((r) => r.status === 'fulfilled'), `round ${round}: nobody got the lock`);
      assert.ok(results.filter((r) => r.status === 'rejected').every((r) => (r as PromiseRejectedResult).reason instanceof LockedError));
      assert.equal(most, 1, `round ${round}: ${most} runs held the lock at once`);
    }
  });

  it('never two holders, however the runs interleave (one stalls between creating its lock and looking)', async () => {
    // B creates its lock and stalls before listing; A arrives, sees B and steps back; B goes on.
    let stalled!: () => void;
    const gate = new Promise<void>((resolve) => (stalled = resolve));
    let lists = 0;
    const slow: Storage = {
      ...storage,
      async list(prefix, o) {
        if (prefix === locksPrefix('shop') && ++lists === 1) await gate;
        return storage.list(prefix, o);
      },
    };
    const b = acquireLock(slow, 'shop', { command: 'b', ...quiet, attempts: 1 });
    await new Promise((r) => setTimeout(r, 20));
    const a = acquireLock(storage, 'shop', { command: 'a', ...quiet, attempts: 1 });
    const [ra] = await Promise.allSettled([a]);
    stalled();
    const [rb] = await Promise.allSettled([b]);
    const holders = [ra, rb].filter((r): r is PromiseFulfilledResult<HeldLock> => r.status === 'fulfilled');
    assert.ok(holders.length <= 1, 'at most one holds');
    for (const h of holders) await h.value.release();
  });

  it('a retried put whose first answer was lost finds its own lock and holds it', async () => {
    let first = true;
    const lossy: Storage = {
      ...storage,
      async put(key, data, opts) {
        const result = await storage.put(key, data, opts);
        if (first && key.endsWith('.lock')) {
          first = false;
          return storage.put(key, data, opts); // stored, but the answer never came: the retry meets it
        }
        return result;
      },
    };
    const held = await acquireLock(lossy, 'shop', { command: 'mine', ...quiet });
    assert.equal((await readLock(storage, 'shop'))?.token, held.info.token);
    await held.release();
    assert.equal(await readLock(storage, 'shop'), undefined);
  });

  it('append-only credentials: taking, releasing and getting past a stale lock never need a delete', async () => {
    const appendOnly: Storage = {
      ...storage,
      async delete(key) {
        throw new StorageError('permanent', `[memory] AccessDenied: delete ${key}`);
      },
    };
    await placeLock(storage, lockOf(deadPid()));
    const held = await acquireLock(appendOnly, 'shop', { command: 'one', ...quiet });
    await held.release();
    assert.equal(await readLock(storage, 'shop'), undefined, 'released without deleting anything');
    const again = await acquireLock(appendOnly, 'shop', { command: 'two', ...quiet });
    assert.equal((await readLock(storage, 'shop'))?.command, 'two');
    await again.release();
    assert.ok((await storage.list('shop/')).length >= 4, 'the released pairs stay for prune');
  });

  it('on a local file system deleting the lock is its release; a refused delete falls back to the marker', async () => {
    const puts: string[] = [];
    const local = (deletes: boolean): Storage => ({
      ...storage,
      properties: { ...storage.properties, local: true },
      async put(key, data, opts) {
        puts.push(key);
        return storage.put(key, data, opts);
      },
      async delete(key) {
        if (!deletes) throw new StorageError('permanent', `EPERM: operation not permitted, unlink ${key}`);
        return storage.delete(key);
      },
    });
    const held = await acquireLock(local(true), 'shop', { command: 'one', ...quiet });
    await held.release();
    assert.equal(await readLock(storage, 'shop'), undefined);
    assert.deepEqual(puts.filter((k) => k.endsWith('.released')), [], 'no marker is written');
    assert.deepEqual(await storage.list('shop/'), [], 'nothing is left');
    const kept = await acquireLock(local(false), 'shop', { command: 'two', ...quiet });
    await kept.release();
    assert.equal(await readLock(storage, 'shop'), undefined, 'released by its marker');
    assert.equal(puts.filter((k) => k.endsWith('.released')).length, 1, 'the marker is written when the delete is refused');
  });
});
