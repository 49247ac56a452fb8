// Compression stages. zstd (default) runs in libzstd's own worker thread through zstd-napi, so
// compression overlaps with the dump and with our hashing. Its jobs are 2 MiB (libzstd's default at
// level 3 is 8 MiB), which keeps libzstd's buffers ~30 MB smaller, and consecutive jobs share a
// 32 KiB overlap (overlapLog 3) instead of the default 256 KiB, which every job would index again:
// on the benchmark's dump (pgbench scale 100, 1.46 GB) the worker spends ~5% less CPU than with
// 1 MiB jobs and the default overlap, and the artifact is 0.4% smaller; within 0.3% of `zstd -3`.
// gzip uses Node's zlib thread pool.
// Both write standard formats: `zstd -d` and `gunzip` read our artifacts.
//
// zstd-napi (a native module) and zlib load when a stage first builds a stream: for a backup that
// is once pg_dump runs, so loading them overlaps with pg_dump's own start-up instead of
// delaying it.

import { createRequire } from 'node:module';
import type { Duplex, TransformCallback } from 'node:stream';
import type * as Zlib from 'node:zlib';
import type * as ZstdNapi from 'zstd-napi';
import { ConfigError, IntegrityError } from '../core/errors.js';
import { registerStage, type Stage } from './stage.js';

const require = createRequire(import.meta.url);
let zstdModule: typeof ZstdNapi | undefined;
const zstd = (): typeof ZstdNapi => (zstdModule ??= require('zstd-napi') as typeof ZstdNapi);
const zlib = (): typeof Zlib => require('node:zlib') as typeof Zlib;

export type CompressionAlgorithm = 'zstd' | 'gzip' | 'none';

const levelRange: Record<'zstd' | 'gzip', [number, number]> = { zstd: [1, 19], gzip: [1, 9] };

function checkLevel(algorithm: 'zstd' | 'gzip', level: unknown): number {
  const [min, max] = levelRange[algorithm];
  const n = Number(level);
  if (!Number.isInteger(n) || n < min || n > max) {
    throw new ConfigError(`${algorithm} level must be a whole number from ${min} to ${max}, got "${String(level)}"`);
  }
  return n;
}

let CheckedZstdDecode: (new () => Duplex) | undefined;
/** Compressed bytes given to the decoder at a time (see checkedZstdDecoder). */
const DECODE_SLICE = 16 * 1024;

/**
 * A zstd decoder whose errors are IntegrityErrors that say only what is known for sure. The
 * decoder notices damage where the data stops making sense, which may be far after the damaged
 * byte: a flipped bit in a literal decodes to wrong bytes without complaint, and only the frame's
 * checksum at its very end tells. So an error names how much compressed data the decoder had been
 * given and how much it had decoded, never a range as the place of the damage.
 */
function checkedZstdDecoder(): Duplex {
  CheckedZstdDecode ??= class extends zstd().DecompressStream {
    private consumed = 0;
    private decoded = 0;

    override push(chunk: unknown, encoding?: BufferEncoding): boolean {
      if (chunk) this.decoded += (chunk as Buffer).length;
      return super.push(chunk, encoding);
    }

    // zstd-napi decodes all of a chunk at once, however much it expands, before back-pressure can
    // act: 256 KiB of a well-compressed dump made tens of MB in one go. Each chunk goes in as
    // slices of DECODE_SLICE, and the stream's own back-pressure (Transform._write holds the next
    // slice until the reader has taken what the last one decoded) paces them.
    override _write(chunk: Buffer, enc: BufferEncoding, done: (err?: Error | null) => void): void {
      let offset = 0;
      const next = (err?: Error | null): void => {
        if (err || offset >= chunk.length) return done(err);
        const slice = chunk.subarray(offset, offset + DECODE_SLICE);
        offset += slice.length;
        super._write(slice, enc, next);
      };
      next();
    }

    override _transform(chunk: Buffer, enc: BufferEncoding, done: TransformCallback): void {
      super._transform(chunk, enc, (err?: Error | null) => {
        this.consumed += chunk.length;
        if (err) {
          return done(new IntegrityError(`zstd data corrupt (${err.message}): the decoder stopped after reading ${this.consumed} bytes of compressed data, having decoded ${this.decoded} bytes`));
        }
        done();
      });
    }

    override _flush(done: TransformCallback): void {
      super._flush((err?: Error | null) => {
        if (err) return done(new IntegrityError(`zstd frame truncated: the compressed data ends inside a frame after ${this.consumed} bytes (${this.decoded} bytes decoded)`));
        done();
      });
    }
  };
  return new CheckedZstdDecode();
}

const ZSTD_JOB_SIZE = 2 << 20;
const ZSTD_OVERLAP_LOG = 3;

export function zstdStage(params: Record<string, unknown>): Stage {
  const level = checkLevel('zstd', params.level ?? 3);
  return {
    id: 'zstd',
    params: { level },
    suffix: '.zst',
    encode: () => new (zstd().CompressStream)({ compressionLevel: level, nbWorkers: 1, jobSize: ZSTD_JOB_SIZE, overlapLog: ZSTD_OVERLAP_LOG, checksumFlag: true }),
    decode: checkedZstdDecoder,
  };
}

export function gzipStage(params: Record<string, unknown>): Stage {
  const level = checkLevel('gzip', params.level ?? 6);
  return {
    id: 'gzip',
    params: { level },
    suffix: '.gz',
    encode: () => zlib().createGzip({ level, chunkSize: 256 * 1024 }),
    decode: () => zlib().createGunzip({ chunkSize: 256 * 1024, finishFlush: zlib().constants.Z_SYNC_FLUSH }),
  };
}

registerStage('zstd', zstdStage);
registerStage('gzip', gzipStage);

export function compressionStage(algorithm: CompressionAlgorithm, level?: number): Stage | undefined {
  if (algorithm === 'none') return undefined;
  if (algorithm === 'zstd') return zstdStage({ level });
  if (algorithm === 'gzip') return gzipStage({ level });
  throw new ConfigError(`unknown compression "${String(algorithm)}"; valid values: zstd, gzip, none`);
}
