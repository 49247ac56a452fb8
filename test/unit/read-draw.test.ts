// An artifact read back by openArtifact and drawn into the reader's own buffers (as the feed into
// a restore tool does) instead of read as a stream: the same bytes, the same checks and errors,
// and no fresh buffer per decoded piece — a restore that iterated the stream held tens of MB of
// dead decoded buffers at a time.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Duplex } from 'node:stream';
import type { ArtifactEntry, Manifest } from '../../src/catalog/manifest.js';
import { IntegrityError } from '../../src/core/errors.js';
import { feed } from '../../src/engines/feed.js';
import { zstdStage } from '../../src/pipeline/compress.js';
import { ageStage } from '../../src/pipeline/age.js';
import { specOf, type Stage } from '../../src/pipeline/stage.js';
import { canDraw, type DrawableStream } from '../../src/storage/drawable.js';
import { createLocalStorage } from '../../src/storage/local.js';
import { readAll } from '../../src/storage/storage.js';
import { openArtifact } from '../../src/verify/read.js';
import { tempDir } from '../harness/tmp.js';

const ID = 'unit-draw_dev_2026-12-06T08-00-00Z';
const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** SQL-like rows: compresses about as a MariaDB dump does (a few times, not a hundredfold). */
function dump(rows: number): Buffer {
  const lines: string[] = [];
  for (let i = 0; i < rows; i++) lines.push(`INSERT INTO t VALUES (${i},${i % 97},'label ${i}',${(i * 1.25).toFixed(2)},'${((i * 2654435761) >>> 0).toString(36)}${(i * 40503).toString(16)}');\n`);
  return Buffer.from(lines.join(''));
}

async function encode(data: Buffer, stages: Stage[]): Promise<Buffer> {
  const out: Buffer[] = [];
  const pieces = Array.from({ length: Math.ceil(data.length / 65536) }, (_, i) => data.subarray(i * 65536, (i + 1) * 65536));
  await (pipeline as (...s: unknown[]) => Promise<void>)(Readable.from(pieces), ...stages.map((s) => s.encode() as Duplex), async (source: AsyncIterable<Buffer>) => {
    for await (const c of source) out.push(c);
  });
  return Buffer.concat(out);
}

let root: string;
const storage = () => createLocalStorage({ root });

interface Subject {
  manifest: Manifest;
  artifact: ArtifactEntry;
  stored: Buffer;
  raw: Buffer;
}

async function store(name: string, raw: Buffer, stages: Stage[]): Promise<Subject> {
  const stored = await encode(raw, stages);
  const file = `${ID}.${name}.sql${stages.map((s) => s.suffix).join('')}`;
  mkdirSync(path.join(root, 'unit-draw'), { recursive: true });
  writeFileSync(path.join(root, 'unit-draw', file), stored);
  const artifact = { role: 'main', file, format: 'sql', size: stored.length, sha256: sha256(stored), rawSize: raw.length, stages: stages.map(specOf) } as unknown as ArtifactEntry;
  return { manifest: { id: ID, artifacts: [artifact] } as unknown as Manifest, artifact, stored, raw };
}

let identity: string;
const open = (s: Subject, opts: { onBytes?: (n: number) => void } = {}) => openArtifact(storage(), s.manifest, s.artifact, { identities: [identity] }, opts);

/** Draws `stream` to its end in pieces of `piece` bytes. */
async function drawAll(stream: DrawableStream, piece = 100_000): Promise<Buffer> {
  const into = Buffer.alloc(piece);
  const out: Buffer[] = [];
  for (;;) {
    const n = await stream.draw(into, 0, piece);
    if (n === 0) return Buffer.concat(out);
    out.push(Buffer.from(into.subarray(0, n)));
  }
}

let plain: Subject;
let encrypted: Subject;
let big: Subject;

before(async () => {
  root = tempDir('dbstash-read-draw');
  const { generateX25519Identity, identityToRecipient } = await import('age-encryption');
  identity = await generateX25519Identity();
  const raw = dump(60_000);
  plain = await store('plain', raw, [zstdStage({})]);
  encrypted = await store('encrypted', raw, [zstdStage({}), ageStage({ recipients: [await identityToRecipient(identity)] })]);
  big = await store('big', dump(900_000), [zstdStage({})]);
});
after(() => rmSync(root, { recursive: true, force: true }));

describe('an artifact drawn instead of streamed', () => {
  for (const which of ['plain', 'encrypted'] as const) {
    it(`${which}: draws the same bytes as it streams, and counts the stored bytes for progress`, async () => {
      const s = which === 'plain' ? plain : encrypted;
      let progress = 0;
      const drawn = await open(s, { onBytes: (n) => (progress = n) });
      assert.ok(canDraw(drawn));
      const bytes = await drawAll(drawn);
      drawn.destroy();
      assert.ok(bytes.equals(s.raw), `${bytes.length} bytes drawn, ${s.raw.length} expected`);
      assert.equal(progress, s.stored.length);
      assert.ok((await readAll(await open(s))).equals(s.raw), 'as a stream');
    });
  }

  it('artifacts drawn one after the other (the decoder\'s context kept between them) each give their own bytes; a draw after the end gives nothing', async () => {
    const first = (await open(big)) as DrawableStream;
    const whole = await drawAll(first);
    assert.equal(await first.draw(Buffer.alloc(10), 0, 10), 0, 'nothing more after the end');
    // A draw broken off half-way: its context is not kept, and the next artifact is unharmed.
    const broken = (await open(big)) as DrawableStream;
    assert.ok((await broken.draw(Buffer.alloc(50_000), 0, 50_000)) > 0);
    broken.destroy();
    const [a, b] = [(await open(plain)) as DrawableStream, (await open(big)) as DrawableStream];
    assert.ok((await drawAll(a)).equals(plain.raw), 'the second artifact');
    assert.ok((await drawAll(b)).equals(big.raw), 'the third artifact');
    assert.equal(await first.draw(Buffer.alloc(10), 0, 10), 0, 'the first draws nothing while its context serves others');
    assert.ok(whole.equals(big.raw));
  });

  it('a stream read as one cannot be drawn, nor a drawn one read as a stream', async () => {
    const streamed = await open(plain);
    await new Promise((resolve) => streamed.once('readable', resolve));
    await assert.rejects((streamed as DrawableStream).draw(Buffer.alloc(10), 0, 10), /already read as a stream/);
    streamed.destroy();
    const drawn = (await open(plain)) as DrawableStream;
    assert.ok((await drawn.draw(Buffer.alloc(10), 0, 10)) > 0);
    await assert.rejects(readAll(drawn), /cannot also be read as a stream/);
  });

  for (const [what, damage, expect] of [
    ['a flipped byte', (b: Buffer) => ((b[b.length >> 1] ^= 0x01), b), /^checksum mismatch: .* has sha256 [0-9a-f]{64}, manifest says/],
    ['a cut artifact', (b: Buffer) => b.subarray(0, b.length - 1000), /is \d+ bytes, manifest says \d+/],
  ] as const) {
    it(`${what}: draw() rejects with the IntegrityError the stream gives`, async () => {
      const file = path.join(root, 'unit-draw', plain.artifact.file);
      writeFileSync(file, damage(Buffer.from(plain.stored)));
      try {
        const streamed = await readAll(await open(plain)).then(() => undefined, (err: Error) => err);
        const drawn = await drawAll((await open(plain)) as DrawableStream).then(() => undefined, (err: Error) => err);
        for (const err of [streamed, drawn]) {
          assert.ok(err instanceof IntegrityError, String(err));
          assert.match(err.message, expect);
        }
        // How much the decoder had read and decoded when it stopped depends on the pieces it got.
        const shape = (e: Error) => e.message.replace(/\d+ bytes/g, 'N bytes');
        assert.equal(shape(drawn!), shape(streamed!));
      } finally {
        writeFileSync(file, plain.stored);
      }
    });
  }

  it('a raw size other than the manifest\'s fails the draw at its end', async () => {
    const wrong = { ...plain, artifact: { ...plain.artifact, rawSize: plain.raw.length + 1 } };
    wrong.manifest = { ...plain.manifest, artifacts: [wrong.artifact] };
    await assert.rejects(drawAll((await open(wrong)) as DrawableStream), (err: unknown) => err instanceof IntegrityError && /decodes to \d+ bytes, manifest says \d+/.test(err.message));
  });

  it('fed to a slow sink, a drawn artifact holds a few MB of buffers; iterated as a stream, it held tens', async () => {
    // A sink that takes its time, as a restore tool does: what piles up is what was allocated.
    const slowSink = () =>
      new Writable({
        highWaterMark: 64 * 1024,
        write(_chunk, _enc, done) {
          setImmediate(done);
        },
      });
    const peakOf = async (run: () => Promise<void>): Promise<number> => {
      const base = process.memoryUsage().arrayBuffers;
      let peak = 0;
      const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().arrayBuffers - base)), 2);
      try {
        await run();
      } finally {
        clearInterval(timer);
      }
      return Math.max(peak, process.memoryUsage().arrayBuffers - base);
    };
    const drawn = await peakOf(async () => {
      const stream = await open(big);
      await feed(stream, [slowSink()]);
      stream.destroy();
    });
    // The same artifact read as a stream (what the feed did before), for the comparison.
    const streamed = await peakOf(async () => {
      const stream = await open(big);
      await feed({ [Symbol.asyncIterator]: () => stream[Symbol.asyncIterator]() }, [slowSink()]);
    });
    assert.ok(big.raw.length > 60 << 20 && big.stored.length * 2 < big.raw.length, `${big.raw.length} bytes, ${big.stored.length} compressed`);
    assert.ok(drawn < 12 << 20, `drawn: ${(drawn / 2 ** 20).toFixed(1)} MB of ArrayBuffers at once`);
    assert.ok(streamed > drawn * 2, `streamed: ${(streamed / 2 ** 20).toFixed(1)} MB, drawn: ${(drawn / 2 ** 20).toFixed(1)} MB`);
  });
});
