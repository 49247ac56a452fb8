// The S3 driver's streaming multipart upload (src/storage/s3-multipart.ts) against a real S3 HTTP
// server (s3rver) on loopback: parts and their sizes as seen on the wire, the memory bound and
// back-pressure, per-part retries, and that every way an upload can fail (a part refused, the
// source breaking, the put's signal, the stream destroyed) leaves neither an object nor a pending
// multipart upload. A counting TCP proxy in front of the server shows the requests sent.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { pipeline } from 'node:stream/promises';
import type { S3Client } from '@aws-sdk/client-s3';
import { StorageError } from '../../src/core/errors.js';
import { withFaults } from '../../src/storage/faults.js';
import { openStorage } from '../../src/storage/index.js';
import { choosePartSize, MAX_PARTS, MultipartUpload, partSizeFor } from '../../src/storage/s3-multipart.js';
import { classifyS3Error } from '../../src/storage/s3.js';
import { getBytes, readAll, type Storage } from '../../src/storage/storage.js';
import { startS3, type S3Server } from '../harness/s3.js';
import { bucketKeys, pendingUploads, pseudoRandomStream, rawClient, sha256Of, startCutProxy, type CutProxy } from './helpers.js';

const MiB = 1024 * 1024;
const BUCKET = 'parts';
let server: S3Server;
let client: S3Client;
let n = 0;

before(async () => {
  server = await startS3({ buckets: [BUCKET] });
  client = rawClient(server);
});
after(async () => {
  client?.destroy();
  await server?.stop();
});

/** A storage under a fresh prefix, reached through `proxy` (or directly). */
async function storageAt(prefix: string, proxy?: CutProxy, options: Record<string, unknown> = {}): Promise<Storage> {
  return openStorage(`s3://${BUCKET}/${prefix}`, {
    endpoint: proxy?.endpoint ?? server.endpoint,
    region: server.region,
    accessKeyId: server.accessKeyId,
    secretAccessKey: server.secretAccessKey,
    partSizeMiB: 5,
    parallelParts: 2,
    ...options,
  });
}

function fresh(): string {
  return `t${++n}`;
}

/** A fresh prefix and a storage on it, reached through a proxy of its own; both closed after `body`. */
async function throughProxy(
  body: (t: { prefix: string; proxy: CutProxy; storage: Storage }) => Promise<void>,
  bytesPerSecond?: number,
): Promise<void> {
  const prefix = fresh();
  const proxy = await startCutProxy(server, Infinity, bytesPerSecond);
  const storage = await storageAt(prefix, proxy);
  try {
    await body({ prefix, proxy, storage });
  } finally {
    await storage.close?.();
    await proxy.close();
  }
}

/** The Content-Length of each UploadPart request, by part number. */
function partLengths(proxy: CutProxy): Map<number, number> {
  const lengths = new Map<number, number>();
  for (const head of proxy.heads()) {
    const part = /^PUT \S+[?&]partNumber=(\d+)/.exec(head);
    const length = /^content-length: (\d+)$/m.exec(head);
    if (part && length) lengths.set(Number(part[1]), Number(length[1]));
  }
  return lengths;
}

async function assertNothingLeft(prefix: string): Promise<void> {
  assert.deepEqual(await bucketKeys(client, BUCKET, `${prefix}/`), [], 'no object is visible');
  assert.deepEqual(await pendingUploads(client, BUCKET, `${prefix}/`), [], 'no multipart upload is left pending');
}

function classify(err: unknown, what: string): StorageError {
  return classifyS3Error(err, what, { bucket: BUCKET, prefix: '' }, server.endpoint);
}

describe('S3 streaming multipart upload', () => {
  it('an artifact of several parts round-trips byte-exact: 5 MiB parts, the last one shorter, nothing pending', async () => {
    await throughProxy(async ({ prefix, proxy, storage }) => {
      const size = 23 * MiB + 12345;
      const expected = sha256Of(await readAll(pseudoRandomStream(size)));
      const res = await storage.put('db/multi.bin', pseudoRandomStream(size), { sizeHint: 1000 });
      assert.equal(res.size, size);
      assert.equal(sha256Of(await getBytes(storage, 'db/multi.bin')), expected);
      const lengths = partLengths(proxy);
      assert.deepEqual(
        [...lengths.entries()].sort((a, b) => a[0] - b[0]),
        [
          [1, 5 * MiB],
          [2, 5 * MiB],
          [3, 5 * MiB],
          [4, 5 * MiB],
          [5, 3 * MiB + 12345],
        ],
      );
      assert.equal(proxy.requests().filter((r) => /^POST \S+\?uploads/.test(r)).length, 1, 'one multipart upload');
      assert.equal(proxy.requests().filter((r) => /^POST \S+\?uploadId=/.test(r)).length, 1, 'one CompleteMultipartUpload');
      assert.deepEqual(await pendingUploads(client, BUCKET, `${prefix}/`), []);
    });
  });

  it('an artifact smaller than one part is sent as one PutObject, without a multipart upload', async () => {
    await throughProxy(async ({ prefix, proxy, storage }) => {
      const size = 5 * MiB - 1;
      const expected = sha256Of(await readAll(pseudoRandomStream(size, 3)));
      assert.equal((await storage.put('db/small.bin', pseudoRandomStream(size, 3))).size, size);
      assert.equal(sha256Of(await getBytes(storage, 'db/small.bin')), expected);
      const writes = proxy.requests().filter((r) => /^(PUT|POST) /.test(r));
      assert.equal(writes.length, 1, writes.join('\n'));
      assert.match(writes[0], new RegExp(`^PUT /${BUCKET}/${prefix}/db/small\\.bin(\\?x-id=PutObject)? `));
      assert.equal((await storage.put('db/empty.bin', pseudoRandomStream(0))).size, 0);
      assert.equal((await storage.stat('db/empty.bin'))?.size, 0);
    });
  });

  it('memory is bounded: parallelParts + 1 part buffers, parallelParts requests at once, and a slow store paces the source', async () => {
    const prefix = fresh();
    const proxy = await startCutProxy(server, Infinity, 6 * MiB);
    const s3 = rawClient(server, proxy.endpoint);
    try {
      const size = 40 * MiB;
      const source = pseudoRandomStream(size, 5);
      const upload = new MultipartUpload({ client: s3, object: { Bucket: BUCKET, Key: `${prefix}/slow.bin` }, partSize: 5 * MiB, parallelParts: 2, classify });
      // Bytes taken from the source but not yet received by the store: what the upload holds.
      let ahead = 0;
      const timer = setInterval(() => (ahead = Math.max(ahead, source.pulled() - proxy.uploaded())), 5);
      try {
        await pipeline(source, upload);
      } finally {
        clearInterval(timer);
      }
      assert.equal(upload.bytes, size);
      assert.equal(upload.stats.parts, 8);
      assert.equal(upload.stats.peakBuffers, 3, 'three 5 MiB buffers, reused for eight parts');
      assert.equal(upload.stats.peakInFlight, 2);
      assert.ok(ahead > 10 * MiB, `the buffers were used (${(ahead / MiB).toFixed(1)} MiB ahead)`);
      assert.ok(ahead <= 15 * MiB + 256 * 1024, `the source ran ${(ahead / MiB).toFixed(1)} MiB ahead of the store: more than three parts`);
      assert.equal(sha256Of(await getBytes(await storageAt(prefix), 'slow.bin')), sha256Of(await readAll(pseudoRandomStream(size, 5))));
    } finally {
      s3.destroy();
      await proxy.close();
    }
  });

  it('a part failing transiently is sent again from its buffer, and the object is intact', async () => {
    const prefix = fresh();
    // The SDK's own retries off, so what is tested is the driver's per-part retry.
    const storage = await storageAt(prefix, undefined, { maxAttempts: 1 });
    const hits = server.failRequests({
      when: (r) => r.method === 'PUT' && r.path.startsWith(`/${BUCKET}/${prefix}/`) && r.query.partNumber === '2',
      status: 500,
      code: 'InternalError',
      times: 2,
    });
    try {
      const size = 12 * MiB;
      assert.equal((await storage.put('db/retried.bin', pseudoRandomStream(size, 9))).size, size);
      assert.equal(hits(), 2, 'part 2 failed twice before it was stored');
      assert.equal(sha256Of(await getBytes(storage, 'db/retried.bin')), sha256Of(await readAll(pseudoRandomStream(size, 9))));
      assert.deepEqual(await pendingUploads(client, BUCKET, `${prefix}/`), []);
    } finally {
      await storage.close?.();
    }
  });

  it('a part refused for good: the put fails with a StorageError, the upload is aborted, nothing remains', async () => {
    await throughProxy(async ({ prefix, proxy, storage }) => {
      const hits = server.failRequests({
        when: (r) => r.method === 'PUT' && r.path.startsWith(`/${BUCKET}/${prefix}/`) && r.query.partNumber === '3',
        status: 403,
        code: 'AccessDenied',
      });
      await assert.rejects(storage.put('db/refused.bin', pseudoRandomStream(30 * MiB, 11)), (err: unknown) => {
        assert.ok(err instanceof StorageError, String(err));
        assert.equal(err.reason, 'permanent');
        assert.match(err.message, /access denied/);
        return true;
      });
      assert.equal(hits(), 1, 'a permanent error is not retried');
      assert.ok(
        proxy.requests().some((r) => new RegExp(`^DELETE /${BUCKET}/${prefix}/db/refused\\.bin\\?uploadId=`).test(r)),
        `AbortMultipartUpload was sent: ${proxy.requests().join('\n')}`,
      );
      await assertNothingLeft(prefix);
    });
  });

  it('the source failing after several parts (fault-injecting wrapper): the put fails, nothing remains', async () => {
    await throughProxy(async ({ prefix, proxy, storage }) => {
      const faulty = withFaults(storage, [{ method: 'put', afterBytes: 17 * MiB, error: () => new Error('the dump died') }]);
      await assert.rejects(faulty.put('db/broken.bin', pseudoRandomStream(30 * MiB, 13)), /the dump died/);
      assert.ok(partLengths(proxy).size >= 2, `parts were uploaded before the failure: ${proxy.requests().join('\n')}`);
      assert.ok(proxy.requests().some((r) => /^DELETE \S+\?uploadId=/.test(r)), 'AbortMultipartUpload was sent');
      await assertNothingLeft(prefix);
    });
  });

  it('a put aborted by its signal while parts are in flight: the upload is aborted, nothing remains', async () => {
    await throughProxy(async ({ prefix, proxy, storage }) => {
      const controller = new AbortController();
      const put = storage.put('db/aborted.bin', pseudoRandomStream(40 * MiB, 15), { signal: controller.signal });
      const deadline = Date.now() + 20_000;
      while (!proxy.requests().some((r) => /partNumber=2&/.test(r))) {
        assert.ok(Date.now() < deadline, 'no second part upload started');
        await new Promise((r) => setTimeout(r, 20));
      }
      controller.abort(new Error('interrupted'));
      await assert.rejects(put, /interrupted/);
      assert.ok(proxy.requests().some((r) => /^DELETE \S+\?uploadId=/.test(r)), 'AbortMultipartUpload was sent');
      assert.ok(!proxy.requests().some((r) => /^POST \S+\?uploadId=/.test(r)), 'no CompleteMultipartUpload');
      await assertNothingLeft(prefix);
    }, 2 * MiB);
  });

  it('destroying the upload stream (what a SIGINT does to the pipeline) aborts the multipart upload', async () => {
    const prefix = fresh();
    const proxy = await startCutProxy(server, Infinity, 4 * MiB);
    const s3 = rawClient(server, proxy.endpoint);
    try {
      const upload = new MultipartUpload({ client: s3, object: { Bucket: BUCKET, Key: `${prefix}/destroyed.bin` }, partSize: 5 * MiB, parallelParts: 2, classify });
      const done = pipeline(pseudoRandomStream(40 * MiB, 17), upload);
      const deadline = Date.now() + 20_000;
      while (!proxy.requests().some((r) => /partNumber=1&/.test(r))) {
        assert.ok(Date.now() < deadline, 'no part upload started');
        await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal((await pendingUploads(client, BUCKET, `${prefix}/`)).length, 1, 'the upload is pending while it runs');
      upload.destroy();
      await assert.rejects(done);
      await new Promise((resolve) => (upload.closed ? resolve(undefined) : upload.once('close', resolve)));
      assert.ok(proxy.requests().some((r) => /^DELETE \S+\?uploadId=/.test(r)), 'AbortMultipartUpload was sent');
      assert.equal(upload.published, false);
      await assertNothingLeft(prefix);
    } finally {
      s3.destroy();
      await proxy.close();
    }
  });
});

describe('multipart part sizes', () => {
  it('the first part size makes 10,000 parts hold twice the expected size, at least the configured minimum', () => {
    assert.equal(choosePartSize(undefined, 5 * MiB), 5 * MiB);
    assert.equal(choosePartSize(0, 8 * MiB), 8 * MiB);
    assert.equal(choosePartSize(1024 * MiB, 5 * MiB), 5 * MiB);
    const hint = 100 * 1024 * MiB;
    const size = choosePartSize(hint, 5 * MiB);
    assert.equal(size, 21 * MiB);
    assert.ok(size * MAX_PARTS >= 2 * hint);
    assert.equal(choosePartSize(100 * 1024 * 1024 * MiB, 5 * MiB), 5 * 1024 * MiB, 'capped at 5 GiB');
  });

  it('beyond part 5,000 the size doubles every 1,000 parts, so an underestimated artifact still fits in 10,000 parts', () => {
    const s = 5 * MiB;
    assert.deepEqual(
      [1, 5000, 5001, 6000, 6001, 7001, 8001, 9001, 10000].map((p) => partSizeFor(p, s) / s),
      [1, 1, 2, 2, 4, 8, 16, 32, 32],
    );
    let total = 0;
    for (let p = 1; p <= MAX_PARTS; p++) total += partSizeFor(p, s);
    assert.equal(total, 67_000 * s, '67,000 × the first part size in all: 13.4 × the 5,000-part estimate');
    assert.equal(partSizeFor(10_000, 1024 * MiB), 5 * 1024 * MiB, 'capped at 5 GiB');
  });
});
