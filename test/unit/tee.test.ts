// The fan-out tee: every branch gets every byte at the pace of the slowest, and a branch destroyed
// while it is full (its destination failed mid-stream) no longer holds the others back.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable, type PassThrough } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { tee } from '../../src/pipeline/tee.js';

const CHUNK = 64 * 1024;
const CHUNKS = 128; // 8 MiB: several times what a branch buffers (1 MiB writable + 1 MiB readable)

function source(): { stream: Readable; sha256: string; produced: () => number } {
  const chunks = Array.from({ length: CHUNKS }, (_, i) => Buffer.alloc(CHUNK, i));
  let produced = 0;
  const stream = new Readable({
    read() {
      this.push(produced < CHUNKS ? chunks[produced++] : null);
    },
  });
  return { stream, sha256: createHash('sha256').update(Buffer.concat(chunks)).digest('hex'), produced: () => produced };
}

async function drainSlowly(branch: PassThrough): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of branch) {
    hash.update(chunk as Buffer);
    await sleep(1);
  }
  return hash.digest('hex');
}

/** Rejects when `promise` has not settled within `ms` (a hang is a failure, not a stuck test run). */
function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([promise, sleep(ms).then(() => Promise.reject(new Error(`${what}: still pending after ${ms} ms`)))]);
}

describe('tee', () => {
  it('gives every branch all bytes, in order, and never runs ahead of the slowest by more than its buffers', async () => {
    const src = source();
    const [a, b] = tee(src.stream, 2);
    const slow = drainSlowly(b);
    await sleep(50);
    // a reads nothing yet: the source is held back once a's buffers (2 MiB, 32 chunks) are full.
    assert.ok(src.produced() <= 34, `produced ${src.produced()} of ${CHUNKS} chunks while a branch read nothing`);
    const [ha, hb] = await within(Promise.all([drainSlowly(a), slow]), 10_000, 'both branches');
    assert.equal(ha, src.sha256);
    assert.equal(hb, src.sha256);
  });

  it('a branch destroyed while full is dropped: the others still get everything and end', async () => {
    const src = source();
    const [kept, dropped] = tee(src.stream, 2);
    const reading = drainSlowly(kept);
    // Nobody reads `dropped`: it fills up and the source waits for its 'drain'. Then it fails.
    await sleep(50);
    assert.ok(dropped.writableNeedDrain, 'the dropped branch is full before it is destroyed');
    dropped.destroy(new Error('destination failed'));
    assert.equal(await within(reading, 10_000, 'the remaining branch'), src.sha256);
  });

  it('an error of the source reaches every live branch', async () => {
    const broken = new Readable({ read() {} });
    const branches = tee(broken, 2);
    const errors = branches.map((b) => new Promise<Error>((resolve) => b.on('error', resolve)));
    broken.destroy(new Error('dump tool died'));
    for (const err of await within(Promise.all(errors), 5_000, 'branch errors')) assert.equal(err.message, 'dump tool died');
  });
});
