// The Drawable: a stash artifact read either as a stream (fresh chunks) or drawn into the
// consumer's own buffers, with its observer seeing every byte once either way, and its source
// closed when it is done; a failing source fails both paths.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { buffer } from 'node:stream/consumers';
import { Readable } from 'node:stream';
import { Meter } from '../../src/pipeline/meter.js';
import { Drawable, eachPiece, fileSource, isDrawable, piecesOf, type DrawSource } from '../../src/storage/drawable.js';
import { createLocalStorage } from '../../src/storage/local.js';
import { tempDir } from '../harness/tmp.js';

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A source over `data` that counts its closes and can fail at byte `failAt`. */
function memorySource(data: Buffer, failAt = Infinity): DrawSource & { closed: number } {
  let position = 0;
  const src = {
    closed: 0,
    async read(into: Buffer, offset: number, length: number) {
      await new Promise((r) => setImmediate(r));
      if (position >= failAt) throw new Error('the disk went away');
      const n = data.copy(into, offset, position, Math.min(data.length, position + length, failAt));
      position += n;
      return n;
    },
    async close() {
      src.closed++;
    },
  };
  return src;
}

async function drawAll(d: Drawable, into: Buffer, piece: number): Promise<number> {
  let filled = 0;
  for (;;) {
    const n = await d.draw(into, filled, Math.min(piece, into.length - filled));
    if (n === 0) return filled;
    filled += n;
  }
}

describe('Drawable', () => {
  const data = randomBytes(1024 * 1024 + 333);

  it('read as a stream: every byte in order, seen once by the observer, the source closed at the end', async () => {
    const src = memorySource(data);
    const seen = new Meter({ hash: true });
    const d = new Drawable(src, 64 * 1024).observe((b) => seen.update(b));
    const out = await buffer(d);
    assert.equal(sha256(out), sha256(data));
    assert.equal(seen.bytes, data.length);
    assert.equal(seen.sha256(), sha256(data));
    await new Promise((r) => setImmediate(r));
    assert.equal(src.closed, 1);
  });

  it('drawn into the caller\'s buffer: the same bytes, seen once, no chunk handed out; destroy closes the source', async () => {
    const src = memorySource(data);
    const seen = new Meter({ hash: true });
    const d = new Drawable(src, 64 * 1024).observe((b) => seen.update(b));
    const into = Buffer.alloc(data.length + 10);
    const filled = await drawAll(d, into, 100_000);
    assert.equal(filled, data.length);
    assert.equal(sha256(into.subarray(0, filled)), sha256(data));
    assert.equal(seen.bytes, data.length);
    assert.equal(seen.sha256(), sha256(data));
    assert.equal(d.readableDidRead, false);
    d.destroy();
    await new Promise((r) => d.once('close', r));
    assert.equal(src.closed, 1);
    await assert.rejects(d.draw(into, 0, 10), /destroyed/);
  });

  it('refuses to be drawn once read as a stream, and a second draw before the first settled', async () => {
    const d = new Drawable(memorySource(data), 64 * 1024);
    const first = d.draw(Buffer.alloc(10), 0, 10);
    await assert.rejects(d.draw(Buffer.alloc(10), 0, 10), /again before the last call settled/);
    assert.equal(await first, 10);

    const read = new Drawable(memorySource(data), 64 * 1024);
    await new Promise((r) => read.once('readable', r));
    assert.ok(read.read(), 'a chunk');
    await assert.rejects(read.draw(Buffer.alloc(10), 0, 10), /already read as a stream/);
    read.destroy();
  });

  it('a source that fails mid-way fails either path with its error', async () => {
    const streamed = new Drawable(memorySource(data, 300_000), 64 * 1024);
    await assert.rejects(buffer(streamed), /the disk went away/);

    const drawn = new Drawable(memorySource(data, 300_000), 64 * 1024);
    await assert.rejects(drawAll(drawn, Buffer.alloc(data.length), 100_000), /the disk went away/);
  });

  it('eachPiece draws a Drawable through one reused buffer, iterates any other stream, and closes both', async () => {
    const drawn = new Drawable(memorySource(data), 64 * 1024);
    const hash = createHash('sha256');
    const buffers = new Set<ArrayBufferLike>();
    await eachPiece(drawn, (piece) => {
      hash.update(piece);
      buffers.add(piece.buffer);
    });
    assert.equal(hash.digest('hex'), sha256(data));
    assert.equal(buffers.size, 1, 'every piece in the same buffer');
    assert.equal(drawn.readableDidRead, false);
    assert.ok(drawn.destroyed);

    const streamed = Readable.from([data.subarray(0, 1000), data.subarray(1000)]);
    const again = createHash('sha256');
    await eachPiece(streamed, (piece) => void again.update(piece));
    assert.equal(again.digest('hex'), sha256(data));

    const aborted = new Drawable(memorySource(data), 64 * 1024);
    await assert.rejects(eachPiece(aborted, () => {}, AbortSignal.abort(new Error('stop'))), /stop/);
    assert.ok(aborted.destroyed);
  });

  it('a local stash hands out its artifacts as Drawables over the file', async () => {
    const dir = tempDir('drawable');
    const file = path.join(dir, 'f.bin');
    writeFileSync(file, data);
    const drawn = new Drawable(fileSource(await open(file, 'r')), 256 * 1024);
    const into = Buffer.alloc(data.length);
    assert.equal(await drawAll(drawn, into, 128 * 1024), data.length);
    assert.equal(sha256(into), sha256(data));
    drawn.destroy();

    const storage = createLocalStorage({ root: dir });
    await storage.put('db/a.dump', data);
    const got = await storage.get('db/a.dump');
    assert.ok(isDrawable(got));
    assert.equal(sha256(await buffer(got)), sha256(data), 'read as a stream, as every other consumer reads it');
  });

  it('piecesOf draws into two buffers in turn, and iterates a stream that cannot be drawn', async () => {
    const drawn = new Drawable(memorySource(data), 64 * 1024);
    const pieces: Buffer[] = [];
    const copies: Buffer[] = [];
    for await (const piece of piecesOf(drawn, 100_000)) {
      pieces.push(piece);
      copies.push(Buffer.from(piece));
    }
    assert.equal(sha256(Buffer.concat(copies)), sha256(data));
    assert.ok(pieces.length >= 3);
    assert.ok(pieces.every((p) => p.length <= 100_000));
    assert.equal(pieces[0].buffer, pieces[2].buffer, 'the third piece reuses the first one\'s buffer');
    assert.notEqual(pieces[0].buffer, pieces[1].buffer);

    const chunks = [Buffer.from('ab'), Buffer.from('cd')];
    const got: string[] = [];
    for await (const piece of piecesOf(Readable.from(chunks))) got.push(piece.toString());
    assert.deepEqual(got, ['ab', 'cd']);
  });
});
