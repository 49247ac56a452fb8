// The storage contract suite: every rule written in src/storage/storage.ts, as tests that any
// driver must pass. A driver's test file calls it once:
//
//   storageContract('local', async () => ({ storage: createLocalStorage({ root }), allKeys, cleanup }));
//
// makeStorage() is called once per test and must return an EMPTY storage, plus optionally:
// - allKeys(): every object the backend holds, temporaries and unfinished uploads included, so
//   the suite can prove that failed or aborted puts leave nothing behind (local: every file
//   under the root; S3: objects plus pending multipart uploads);
// - cleanup(): called after the test;
// - buffersObjects: the driver keeps objects in memory (memory://), so the bounded-memory check
//   of the large-object test is not applicable; byte-exactness is still checked.

import { after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createCipheriv, createHash } from 'node:crypto';
import { PassThrough, Readable } from 'node:stream';
import { StorageError } from '../../src/core/errors.js';
import { getBytes, type Storage } from '../../src/storage/storage.js';

export interface ContractSubject {
  storage: Storage;
  allKeys?: () => Promise<string[]>;
  cleanup?: () => Promise<void>;
  buffersObjects?: boolean;
}

const tick = (ms = 20) => new Promise((r) => setTimeout(r, ms));

/** Rejects when `promise` takes longer than `ms`: a put that hangs fails the test instead of stalling the run. */
class Hung extends Error {}

function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<T>((_r, reject) => {
      timer = setTimeout(() => reject(new Hung(`${what} did not settle within ${ms}ms`)), ms);
    }),
  ]);
}

/** The put rejected by itself (not because it hung). */
async function assertFails(promise: Promise<unknown>, ms: number, what: string): Promise<void> {
  await assert.rejects(within(promise, ms, what), (err: unknown) => {
    if (err instanceof Hung) throw err;
    return true;
  });
}

async function assertStorageError(promise: Promise<unknown>, reason: StorageError['reason']): Promise<void> {
  await assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof StorageError, `expected a StorageError, got ${String(err)}`);
    assert.equal(err.reason, reason);
    return true;
  });
}

/** Deterministic pseudo-random bytes (AES-CTR keystream), produced chunk by chunk. */
function pseudoRandomStream(size: number, chunk = 1 << 20): Readable {
  const cipher = createCipheriv('aes-256-ctr', Buffer.alloc(32, 7), Buffer.alloc(16, 1));
  const zeros = Buffer.alloc(chunk);
  let left = size;
  return new Readable({
    read() {
      if (left === 0) return this.push(null);
      const n = Math.min(chunk, left);
      left -= n;
      this.push(cipher.update(n === chunk ? zeros : zeros.subarray(0, n)));
    },
  });
}

async function sha256Of(stream: Readable): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const c of stream) {
    hash.update(c as Buffer);
    size += (c as Buffer).length;
  }
  return { sha256: hash.digest('hex'), size };
}

/** Samples RSS while `work` runs; returns the peak growth over the level before it started. */
async function peakRssGrowth(work: () => Promise<void>): Promise<number> {
  (globalThis as { gc?: () => void }).gc?.();
  const base = process.memoryUsage.rss();
  let peak = base;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, 10);
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  peak = Math.max(peak, process.memoryUsage.rss());
  return peak - base;
}

export function storageContract(name: string, makeStorage: () => Promise<ContractSubject>): void {
  describe(`storage contract: ${name}`, () => {
    const cleanups: (() => Promise<void>)[] = [];
    after(async () => {
      for (const c of cleanups) await c();
    });
    const subject = async (): Promise<ContractSubject> => {
      const s = await makeStorage();
      if (s.cleanup) cleanups.push(s.cleanup);
      return s;
    };
    /** Keys the backend holds, temporaries included where the driver can show them. */
    const everything = async (s: ContractSubject) => (s.allKeys ? s.allKeys() : (await s.storage.list('')).map((o) => o.key));

    it('put then get returns the same bytes; stat and list see the published key', async () => {
      const { storage } = await subject();
      const res = await storage.put('db/a.bin', Buffer.from('hello world'));
      assert.equal(res.size, 11);
      assert.equal((await getBytes(storage, 'db/a.bin')).toString(), 'hello world');
      const st = await storage.stat('db/a.bin');
      assert.equal(st?.key, 'db/a.bin');
      assert.equal(st?.size, 11);
      assert.deepEqual(
        (await storage.list('db/')).map((o) => o.key),
        ['db/a.bin'],
      );
    });

    it('put is atomic: while the stream is still flowing nothing is visible under the key', async () => {
      const s = await subject();
      const { storage } = s;
      const source = new PassThrough();
      const put = storage.put('db/slow.bin', source);
      source.write(Buffer.alloc(64 * 1024, 1));
      await tick(100);
      assert.equal(await storage.stat('db/slow.bin'), undefined);
      await assertStorageError(storage.get('db/slow.bin'), 'not-found');
      assert.deepEqual(await storage.list('db/'), [], 'list shows neither the key nor a temporary');
      source.end(Buffer.alloc(1000, 2));
      const res = await within(put, 10_000, 'put');
      assert.equal(res.size, 64 * 1024 + 1000);
      assert.equal((await storage.stat('db/slow.bin'))?.size, 64 * 1024 + 1000);
      assert.deepEqual(await everything(s), ['db/slow.bin'], 'no temporary remains after the publish');
    });

    it('an aborted put rejects and leaves nothing, not even a temporary', async () => {
      const s = await subject();
      const source = new PassThrough();
      const controller = new AbortController();
      const put = s.storage.put('db/aborted.bin', source, { signal: controller.signal });
      source.write(Buffer.alloc(256 * 1024, 3));
      await tick(100);
      controller.abort(new Error('stop'));
      await assertFails(put, 10_000, 'aborted put');
      assert.equal(await s.storage.stat('db/aborted.bin'), undefined);
      assert.deepEqual(await everything(s), []);
    });

    it('a put aborted before its first byte (SIGINT as the dump starts) leaves no temporary', async () => {
      const s = await subject();
      for (let i = 0; i < 20; i++) {
        const controller = new AbortController();
        const put = s.storage.put(`db/early-${i}.bin`, new PassThrough(), { signal: controller.signal });
        // Aborted within the put's first steps: directory creation, opening the temporary.
        await tick(i % 4);
        controller.abort(new Error('stop'));
        await assertFails(put, 10_000, 'early-aborted put');
      }
      await tick(50);
      assert.deepEqual(await everything(s), []);
    });

    it('a stream error from the source fails the put and leaves nothing', async () => {
      const s = await subject();
      const source = new PassThrough();
      const put = s.storage.put('db/broken.bin', source);
      source.write(Buffer.alloc(128 * 1024, 4));
      await tick(50);
      source.destroy(new Error('the dump died'));
      await assertFails(put, 10_000, 'put of a failing source');
      assert.equal(await s.storage.stat('db/broken.bin'), undefined);
      await assertStorageError(s.storage.get('db/broken.bin'), 'not-found');
      assert.deepEqual(await everything(s), []);
    });

    it('an exclusive put refuses to overwrite (reason "exists") and keeps the original', async () => {
      const s = await subject();
      await s.storage.put('db/once.txt', Buffer.from('first'), { exclusive: true });
      await assertStorageError(s.storage.put('db/once.txt', Buffer.from('second'), { exclusive: true }), 'exists');
      assert.equal((await getBytes(s.storage, 'db/once.txt')).toString(), 'first');
      assert.deepEqual(await everything(s), ['db/once.txt']);
    });

    it('a plain put replaces an existing key', async () => {
      const { storage } = await subject();
      await storage.put('db/x.txt', Buffer.from('old'));
      await storage.put('db/x.txt', Buffer.from('new content'));
      assert.equal((await getBytes(storage, 'db/x.txt')).toString(), 'new content');
    });

    it('of concurrent exclusive puts of one key at most one succeeds, and its bytes are what is stored', async () => {
      const s = await subject();
      for (let round = 0; round < 5; round++) {
        const key = `db/lock-${round}`;
        const sources = [new PassThrough(), new PassThrough(), new PassThrough()];
        const puts = sources.map((src) => s.storage.put(key, src, { exclusive: true }));
        sources.forEach((src, i) => src.write(`writer ${i} `));
        await tick(5);
        sources.forEach((src, i) => src.end(`done ${i}`));
        const results = await within(Promise.allSettled(puts), 10_000, 'concurrent exclusive puts');
        const winners = results.map((r, i) => (r.status === 'fulfilled' ? i : -1)).filter((i) => i >= 0);
        assert.ok(winners.length <= 1, `round ${round}: ${winners.length} exclusive puts succeeded`);
        for (const r of results) {
          if (r.status === 'rejected') {
            assert.ok(r.reason instanceof StorageError, `a losing put fails with a StorageError, got ${String(r.reason)}`);
            assert.equal(r.reason.reason, 'exists');
          }
        }
        if (winners.length === 1) {
          assert.equal((await getBytes(s.storage, key)).toString(), `writer ${winners[0]} done ${winners[0]}`);
        }
      }
      assert.deepEqual((await everything(s)).filter((k) => !/^db\/lock-\d$/.test(k)), [], 'losers leave no temporaries');
    });

    it('get of a missing key rejects with reason "not-found"; stat returns undefined', async () => {
      const { storage } = await subject();
      await assertStorageError(storage.get('db/nothing-here'), 'not-found');
      await assertStorageError(storage.get('missing-dir/deeper/file'), 'not-found');
      assert.equal(await storage.stat('db/nothing-here'), undefined);
    });

    it('list(prefix) returns every published key under the prefix, sorted, and nothing else', async () => {
      const { storage } = await subject();
      for (const key of ['shop/b.dump.zst', 'shop/a.manifest.json', 'shopping/c.txt', 'other/d.txt', 'shop/nested/e.txt']) {
        await storage.put(key, Buffer.from(key));
      }
      assert.deepEqual(
        (await storage.list('shop/')).map((o) => o.key),
        ['shop/a.manifest.json', 'shop/b.dump.zst', 'shop/nested/e.txt'],
      );
      assert.deepEqual(
        (await storage.list('shop')).map((o) => o.key),
        ['shop/a.manifest.json', 'shop/b.dump.zst', 'shop/nested/e.txt', 'shopping/c.txt'],
      );
      assert.equal((await storage.list('')).length, 5);
      assert.deepEqual(await storage.list('absent/'), []);
      const info = (await storage.list('other/'))[0];
      assert.equal(info.size, 'other/d.txt'.length);
      assert.ok(info.modifiedAt instanceof Date && !Number.isNaN(info.modifiedAt.getTime()));
    });

    it('delete removes a key and is idempotent', async () => {
      const { storage } = await subject();
      await storage.put('db/gone.txt', Buffer.from('x'));
      await storage.delete('db/gone.txt');
      await assertStorageError(storage.get('db/gone.txt'), 'not-found');
      await storage.delete('db/gone.txt');
      await storage.delete('never/existed.txt');
      assert.deepEqual(await storage.list(''), []);
    });

    it('a large streamed object round-trips byte-exact with bounded memory', async () => {
      const s = await subject();
      const size = s.buffersObjects ? 24 * 1024 * 1024 : 192 * 1024 * 1024;
      const expected = await sha256Of(pseudoRandomStream(size));
      let putSize = 0;
      let read = { sha256: '', size: 0 };
      const growth = await peakRssGrowth(async () => {
        putSize = (await s.storage.put('db/large.bin', pseudoRandomStream(size), { sizeHint: size })).size;
        read = await sha256Of(await s.storage.get('db/large.bin'));
      });
      assert.equal(putSize, size);
      assert.equal((await s.storage.stat('db/large.bin'))?.size, size);
      assert.deepEqual(read, expected);
      if (!s.buffersObjects) {
        assert.ok(growth < size / 3, `RSS grew by ${Math.round(growth / 2 ** 20)} MiB while streaming ${size / 2 ** 20} MiB`);
      }
    });
  });
}
