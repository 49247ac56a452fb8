// runBackup's fan-out and the storage wrappers, with in-memory destinations wrapped in fault
// injection: a destination whose stream breaks mid-way (optional → degraded, required → the whole
// backup fails promptly with that error and leaves nothing), and the retry wrapper's rules.

import { before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';
import { PassThrough } from 'node:stream';
import { StorageError } from '../../src/core/errors.js';
import { runBackup, type BackupPlan, type Destination } from '../../src/backup/backup.js';
import { parseTarget } from '../../src/engines/target.js';
import { zstdStage } from '../../src/pipeline/compress.js';
import { createMemoryStorage } from '../../src/storage/memory.js';
import { withFaults } from '../../src/storage/faults.js';
import { withRetry } from '../../src/storage/retry.js';
import { getBytes, type Storage } from '../../src/storage/storage.js';
import { tempDir } from '../harness/tmp.js';
import { makeSqliteDb } from './helpers.js';

let db: string;
const events = { info: () => {}, warn: () => {} };
const brokenPipe = () => new StorageError('transient', 'connection reset by the injected fault');

function plan(destinations: Destination[]): BackupPlan {
  return {
    target: parseTarget(db),
    env: 'dev',
    destinations,
    stages: [zstdStage({ level: 1 })],
    globals: false,
    checksums: false,
    labels: {},
    tempDir: os.tmpdir(),
    space: { ratio: 1, margin: 1 },
    forceUnlock: false,
  };
}

function memory(): Storage {
  return createMemoryStorage(`fanout-${randomBytes(4).toString('hex')}`);
}

before(() => {
  db = makeSqliteDb(tempDir('dbstash-fanout'), 'shop', 4);
});

describe('fan-out', () => {
  it('an optional destination whose stream breaks mid-way: degraded, the required copy intact, nothing left in the failed one', async () => {
    const required = memory();
    const flaky = withFaults(memory(), [{ method: 'put', key: /\.sqlite\.zst$/, afterBytes: 1 << 20, error: brokenPipe }]);
    const result = await runBackup(
      plan([
        { name: 'main', storage: required, optional: false },
        { name: 'flaky', storage: flaky, optional: true },
      ]),
      events,
    );
    assert.equal(result.degraded, true);
    assert.deepEqual(result.stored, ['main']);
    assert.deepEqual(result.failed.map((f) => f.name), ['flaky']);
    assert.deepEqual(result.manifest.extra.degraded, result.failed);
    const main = result.manifest.artifacts[0];
    const bytes = await getBytes(required, `${result.manifest.series!.key}/${main.file}`);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), main.sha256);
    assert.deepEqual(await flaky.list(''), []);
  });

  it('a required destination whose stream breaks: the backup fails with that error, promptly, and nothing is left anywhere', async () => {
    const other = memory();
    const broken = withFaults(memory(), [{ method: 'put', key: /\.sqlite\.zst$/, afterBytes: 1 << 20, error: brokenPipe }]);
    const started = Date.now();
    await assert.rejects(
      runBackup(
        plan([
          { name: 'other', storage: other, optional: false },
          { name: 'broken', storage: broken, optional: false },
        ]),
        events,
      ),
      (err: unknown) => err instanceof StorageError && /injected fault/.test(err.message),
    );
    assert.ok(Date.now() - started < 20_000);
    assert.deepEqual(await other.list(''), [], 'no artifact, manifest or lock in the healthy destination');
    assert.deepEqual(await broken.list(''), []);
  });

  it('an optional destination breaking mid-way never stalls the others (250 backups, each must finish)', async () => {
    // The failure lands at a different point of the stream each time. With Readable.pipe() to every
    // destination, about one run in a hundred hung for good: the source waited for the 'drain' of
    // the destination that had just been destroyed.
    for (let run = 0; run < 250; run++) {
      const required = memory();
      const flaky = withFaults(memory(), [{ method: 'put', key: /\.sqlite\.zst$/, afterBytes: (1 << 20) + run * 4099, error: brokenPipe }]);
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`backup ${run} still running after 10 s`)), 10_000);
      });
      try {
        const result = await Promise.race([
          runBackup(
            plan([
              { name: 'main', storage: required, optional: false },
              { name: 'flaky', storage: flaky, optional: true },
            ]),
            events,
          ),
          stalled,
        ]);
        assert.equal(result.degraded, true, `run ${run}`);
      } finally {
        clearTimeout(timer);
      }
    }
  });

  it('when every destination is optional and all fail, the backup fails', async () => {
    const a = withFaults(memory(), [{ method: 'put', key: /\.sqlite\.zst$/, afterBytes: 1000, error: brokenPipe }]);
    const b = withFaults(memory(), [{ method: 'put', key: /\.sqlite\.zst$/, error: brokenPipe }]);
    await assert.rejects(
      runBackup(
        plan([
          { name: 'a', storage: a, optional: true },
          { name: 'b', storage: b, optional: true },
        ]),
        events,
      ),
      /every destination failed/,
    );
    assert.deepEqual([...(await a.list('')), ...(await b.list(''))], []);
  });
});

describe('retry wrapper', () => {
  it('retries transient failures with backoff, and only those', async () => {
    const retries: number[] = [];
    const faulty = withFaults(memory(), [
      { method: 'stat', times: 2, error: brokenPipe },
      { method: 'list', error: () => new StorageError('permanent', 'access denied') },
    ]);
    const storage = withRetry(faulty, { attempts: 3, baseDelayMs: 5, onRetry: (r) => retries.push(r.attempt) });
    assert.equal(await storage.stat('x'), undefined);
    assert.equal(faulty.calls.stat, 3);
    assert.deepEqual(retries, [1, 2]);
    await assert.rejects(storage.list(''), /access denied/);
    assert.equal(faulty.calls.list, 1, 'a permanent error is not retried');
  });

  it('gives up after the last attempt, and never replays a streamed put', async () => {
    const faulty = withFaults(memory(), [
      { method: 'delete', error: brokenPipe },
      { method: 'put', times: 1, error: brokenPipe },
    ]);
    const storage = withRetry(faulty, { attempts: 3, baseDelayMs: 1 });
    await assert.rejects(storage.delete('k'), StorageError);
    assert.equal(faulty.calls.delete, 3);
    await assert.rejects(storage.put('s', new PassThrough().end('data')), StorageError);
    assert.equal(faulty.calls.put, 1, 'a stream cannot be read twice');
    await storage.put('b', Buffer.from('buffer'));
    assert.equal((await getBytes(storage, 'b')).toString(), 'buffer');
  });
});
