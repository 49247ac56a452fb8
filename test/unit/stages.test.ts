// Compression stages: round-trips, stage rebuilding from manifest specs, truncation reported as an
// IntegrityError, and interoperability with the standard zstd and gzip command-line tools.

import { describe, it, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createCipheriv, createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { Duplex } from 'node:stream';
import { ConfigError, IntegrityError } from '../../src/core/errors.js';
import { compressionStage, gzipStage, zstdStage } from '../../src/pipeline/compress.js';
import { decoders, specOf, stageFromSpec, suffixOf } from '../../src/pipeline/stage.js';

/** Half incompressible, half repetitive: exercises both paths of a compressor. */
function sample(size: number): Buffer {
  const noise = createCipheriv('aes-256-ctr', Buffer.alloc(32, 9), Buffer.alloc(16)).update(Buffer.alloc(size / 2));
  const text = Buffer.from('INSERT INTO t VALUES (1, \'hello\');\n'.repeat(Math.ceil(size / 2 / 36))).subarray(0, size / 2);
  return Buffer.concat([noise, text]);
}

async function through(input: Buffer, transforms: Duplex[], chunk = 64 * 1024): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < input.length; i += chunk) pieces.push(input.subarray(i, i + chunk));
  const out: Buffer[] = [];
  const sink = async function (source: AsyncIterable<Buffer>) {
    for await (const c of source) out.push(c);
  };
  await (pipeline as (...streams: unknown[]) => Promise<void>)(Readable.from(pieces), ...transforms, sink);
  return Buffer.concat(out);
}

const data = sample(4 * 1024 * 1024);
let dir: string;
before(() => {
  dir = mkdtempSync(path.join(os.tmpdir(), 'dbstash-stages-'));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe('compression stages', () => {
  for (const make of [() => zstdStage({}), () => gzipStage({}), () => zstdStage({ level: 19 }), () => gzipStage({ level: 1 })]) {
    const stage = make();
    it(`${stage.id} level ${String(stage.params.level)} round-trips byte-exact and compresses`, async () => {
      const encoded = await through(data, [stage.encode()]);
      assert.ok(encoded.length < data.length * 0.6, `${encoded.length} bytes from ${data.length}`);
      assert.ok(encoded.length > data.length * 0.4, 'random half cannot shrink');
      assert.ok((await through(encoded, [stage.decode()])).equals(data));
    });
  }

  it('records id and params, and a manifest spec rebuilds the decoder', async () => {
    const stage = zstdStage({ level: 7 });
    assert.deepEqual(specOf(stage), { id: 'zstd', params: { level: 7 } });
    assert.equal(suffixOf([stage]), '.zst');
    assert.equal(suffixOf([gzipStage({})]), '.gz');
    assert.equal(stageFromSpec({ id: 'gzip', params: { level: 2 } }).params.level, 2);
    const encoded = await through(data, [zstdStage({ level: 7 }).encode(), gzipStage({}).encode()]);
    const decoded = await through(encoded, decoders([specOf(zstdStage({ level: 7 })), specOf(gzipStage({}))]));
    assert.ok(decoded.equals(data), 'decoders apply in reverse order');
  });

  it('refuses unknown stages and bad levels with a ConfigError', () => {
    assert.throws(() => stageFromSpec({ id: 'lz4', params: {} }), (e: unknown) => e instanceof ConfigError && /lz4/.test(e.message) && /zstd/.test(e.hint ?? ''));
    assert.throws(() => zstdStage({ level: 25 }), /zstd level must be a whole number from 1 to 19/);
    assert.throws(() => gzipStage({ level: 0 }), ConfigError);
    assert.throws(() => compressionStage('brotli' as never), /valid values: zstd, gzip, none/);
    assert.equal(compressionStage('none'), undefined);
  });

  it('a truncated zstd artifact fails with "zstd frame truncated": where the data ends, and how much it decoded to', async () => {
    const encoded = await through(data, [zstdStage({}).encode()]);
    const cut = encoded.subarray(0, Math.floor(encoded.length * 0.7));
    await assert.rejects(through(cut, [zstdStage({}).decode()], 10_000), (err: unknown) => {
      assert.ok(err instanceof IntegrityError, String(err));
      assert.match(err.message, new RegExp(`^zstd frame truncated: the compressed data ends inside a frame after ${cut.length} bytes \\(\\d+ bytes decoded\\)$`));
      return true;
    });
  });

  it('zstd decoding waits for its reader: a chunk that expands a hundredfold is not decoded all at once', async () => {
    // Rows like pgbench's: a number and 84 blanks. 32 MiB compress to about 1% of that.
    const rows = Buffer.from(Array.from({ length: 360_000 }, (_, i) => `${i}\t1\t0\t${' '.repeat(84)}\n`).join(''));
    const encoded = await through(rows, [zstdStage({}).encode()]);
    assert.ok(encoded.length * 20 < rows.length, `${rows.length} bytes compressed to ${encoded.length}`);
    const decoder = zstdStage({}).decode();
    let most = 0;
    const out: Buffer[] = [];
    const slowReader = async function (source: AsyncIterable<Buffer>) {
      for await (const c of source) {
        // The iterator reads all that was buffered at once.
        most = Math.max(most, c.length + decoder.readableLength);
        out.push(c);
        await new Promise((r) => setImmediate(r));
      }
    };
    // One chunk of 256 KiB, as the local stash reads, expands to several MiB.
    await (pipeline as (...streams: unknown[]) => Promise<void>)(Readable.from([encoded.subarray(0, 256 * 1024), encoded.subarray(256 * 1024)]), decoder, slowReader);
    assert.ok(Buffer.concat(out).equals(rows), 'every byte, in order');
    assert.ok(most < 8 * 1024 * 1024, `the decoder held ${most} decoded bytes at once`);
  });

  it('a corrupted zstd artifact fails with an IntegrityError that claims no place for the damage', async () => {
    const encoded = Buffer.from(await through(data, [zstdStage({}).encode()]));
    encoded.fill(0x55, 5000, 5100);
    await assert.rejects(through(encoded, [zstdStage({}).decode()]), (err: unknown) => {
      assert.ok(err instanceof IntegrityError, String(err));
      assert.match(err.message, /^zstd data corrupt \(.+\): the decoder stopped after reading \d+ bytes of compressed data, having decoded \d+ bytes$/);
      assert.doesNotMatch(err.message, /within|bytes \d+-\d+/);
      return true;
    });
  });

  it('zstd streams one after the other (the context kept between them) are each a whole frame of their own data, also after a stream that broke off', async () => {
    const other = Buffer.from('CREATE TABLE u (id int);\n'.repeat(50_000));
    const first = await through(data, [zstdStage({}).encode()]);
    // A stream destroyed half-way: its context is not kept.
    const broken = zstdStage({}).encode();
    broken.write(other.subarray(0, 300_000));
    broken.destroy();
    const second = await through(other, [zstdStage({}).encode()]);
    const third = await through(data, [zstdStage({}).encode()]);
    for (const [encoded, raw, what] of [[first, data, 'first'], [second, other, 'second'], [third, data, 'third']] as const) {
      const file = path.join(dir, `${what}.zst`);
      writeFileSync(file, encoded);
      assert.ok(execFileSync('zstd', ['-dc', file], { maxBuffer: 64 << 20 }).equals(raw), `${what} stream decodes to its own data with the zstd CLI`);
    }
    assert.ok(third.equals(first), 'the same data makes the same frame with a kept context');
  });

  it('our .zst decodes with the zstd CLI, and the CLI\'s .zst decodes with ours', async () => {
    const ours = path.join(dir, 'ours.zst');
    writeFileSync(ours, await through(data, [zstdStage({}).encode()]));
    assert.ok(execFileSync('zstd', ['-dc', ours], { maxBuffer: 64 << 20 }).equals(data));
    execFileSync('zstd', ['-t', '-q', ours]);
    const raw = path.join(dir, 'raw.bin');
    writeFileSync(raw, data);
    execFileSync('zstd', ['-q', '-f', '-19', raw, '-o', path.join(dir, 'cli.zst')]);
    assert.ok((await through(readFileSync(path.join(dir, 'cli.zst')), [zstdStage({}).decode()])).equals(data));
  });

  it('zstd keeps matches across its 2 MiB jobs: a dump whose tables repeat one another stays within 1.2× of `zstd -3`', async () => {
    // 16 tables of the same kind of rows, 5.6 MB: a table's values recur a table or two later, more
    // than 32 KiB but less than the 2 MiB window back. Jobs that started with only 32 KiB of what
    // came before made 2.2× what `zstd -3` makes.
    const lines: string[] = [];
    for (let t = 1; t <= 16; t++) {
      const rows = t <= 4 ? 10_000 : 800;
      for (let i = 1; i <= rows; i += 100) {
        const values: string[] = [];
        for (let j = i; j < Math.min(i + 100, rows + 1); j++) {
          values.push(`(${j},${j % 97},'label ${j}',${(j * 1.25).toFixed(2)},'${createHash('md5').update(String(j)).digest('hex').repeat(1 + (j % 4))}')`);
        }
        lines.push(`INSERT INTO \`t${t}\` VALUES ${values.join(',')};`);
      }
    }
    const dump = Buffer.from(lines.join('\n'));
    const ours = await through(dump, [zstdStage({}).encode()]);
    const cli = execFileSync('zstd', ['-3', '-q', '-c'], { input: dump, maxBuffer: 64 << 20 });
    assert.ok(ours.length <= cli.length * 1.2, `${ours.length} bytes against zstd -3's ${cli.length}`);
    assert.ok((await through(ours, [zstdStage({}).decode()])).equals(dump));
  });

  it('our .gz decodes with gunzip', async () => {
    const ours = path.join(dir, 'ours.gz');
    writeFileSync(ours, await through(data, [gzipStage({}).encode()]));
    assert.ok(execFileSync('gzip', ['-dc', ours], { maxBuffer: 64 << 20 }).equals(data));
  });
});
