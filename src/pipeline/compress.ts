// Compression stages. zstd (default) runs in libzstd's own worker thread through zstd-napi, so
// compression overlaps with the dump and with our hashing. Its jobs are 2 MiB (libzstd's default at
// level 3 is 8 MiB), which keeps libzstd's buffers ~30 MB smaller. Each job starts with the whole
// window of the data before it (overlapLog 9): a job that saw only a little of it (32 KiB before)
// lost every match further back, and a SQL dump whose tables repeat values (a MariaDB dump of 16
// tables, 6.8 MB) came out at 1037 KB where `zstd -3` makes 666 KB; it is 759 KB now, and pgbench
// scale 10 (101 MB raw) 847 KB instead of 1027 KB (`zstd -3`: 948 KB). On the benchmark's database
// at scale 100 (1.8 GB) the artifact is 0.7% smaller for ~2% more CPU, at the same wall time.
// gzip uses Node's zlib thread pool.
// Both write standard formats: `zstd -d` and `gunzip` read our artifacts.
//
// zstd-napi (a native module) and zlib load when a stage first builds a stream: for a backup that
// is once pg_dump runs, so loading them overlaps with pg_dump's own start-up instead of
// delaying it.

import { createRequire } from 'node:module';
import { Transform, type Duplex, type TransformCallback } from 'node:stream';
import type * as Zlib from 'node:zlib';
import type * as ZstdNapi from 'zstd-napi';
import type * as ZstdBinding from 'zstd-napi/binding.js';
import { ConfigError, IntegrityError } from '../core/errors.js';
import { releaseChunk } from './pooled.js';
import { registerStage, type Stage } from './stage.js';

const require = createRequire(import.meta.url);
let zstdModule: typeof ZstdNapi | undefined;
const zstd = (): typeof ZstdNapi => (zstdModule ??= require('zstd-napi') as typeof ZstdNapi);
let bindingModule: typeof ZstdBinding | undefined;
const zstdBinding = (): typeof ZstdBinding => (bindingModule ??= require('zstd-napi/binding.js') as typeof ZstdBinding);
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
        if (err) return done(zstdCorrupt(err, this.consumed, this.decoded));
        done();
      });
    }

    override _flush(done: TransformCallback): void {
      super._flush((err?: Error | null) => {
        if (err) return done(zstdTruncated(this.consumed, this.decoded));
        done();
      });
    }
  };
  return new CheckedZstdDecode();
}

function zstdCorrupt(err: Error, consumed: number, decoded: number): IntegrityError {
  return new IntegrityError(`zstd data corrupt (${err.message}): the decoder stopped after reading ${consumed} bytes of compressed data, having decoded ${decoded} bytes`);
}

function zstdTruncated(consumed: number, decoded: number): IntegrityError {
  return new IntegrityError(`zstd frame truncated: the compressed data ends inside a frame after ${consumed} bytes (${decoded} bytes decoded)`);
}

/**
 * zstd decoding into buffers the caller owns, for a reader that draws the raw dump into buffers of
 * its own (openArtifact): the stream decoder above allocates a fresh 128 KiB buffer for every
 * piece it decodes, and V8 frees dead ones only in bulk, once some 30 MB of them have piled up,
 * so a restore held that much garbage at any time; decoding into the reader's reused buffers
 * allocates nothing per piece. Its errors are the stream decoder's.
 */
export class ZstdInto {
  private dctx: ZstdBinding.DCtx = idleDecoders.take() ?? new (zstdBinding().DCtx)();
  /** The context went back to the pool (keep()): this decoder decodes nothing more. */
  private kept = false;
  private consumed = 0;
  private decoded = 0;
  private inFrame = false;

  /** Decodes from `src` into `into`: [bytes placed in `into`, bytes of `src` used]. */
  decode(into: Buffer, src: Buffer): [number, number] {
    if (this.kept) return [0, 0];
    let result: [number, number, number];
    try {
      result = this.dctx.decompressStream(into, src);
    } catch (err) {
      throw zstdCorrupt(err as Error, this.consumed + src.length, this.decoded);
    }
    const [ret, produced, used] = result;
    this.consumed += used;
    this.decoded += produced;
    // 0: a frame ended and all of it is out. A call that took and gave nothing (no input, and the
    // decoder between frames) says nothing: its hint is the size of the next frame's header.
    if (used > 0 || produced > 0) this.inFrame = ret !== 0;
    return [produced, used];
  }

  /** At the end of the compressed data: the error when it ended inside a frame. */
  end(): IntegrityError | undefined {
    return this.inFrame ? zstdTruncated(this.consumed, this.decoded) : undefined;
  }

  /**
   * After a clean end (end() found nothing): the context goes back for the next decoder, with its
   * window buffer, which a fresh context allocates and faults in again for every restore.
   */
  keep(): void {
    if (this.inFrame || this.kept) return;
    this.kept = true;
    this.dctx.reset(zstdBinding().ResetDirective.sessionOnly);
    idleDecoders.give(this.dctx);
  }
}

/**
 * Contexts kept after a clean use for the next stream of this process: at most `max`, each for
 * `ms`, never holding the process open. libzstd's contexts carry buffers (and an encoder its worker
 * thread) that a fresh context allocates and faults in again.
 */
class IdleContexts<T> {
  private readonly idle: { value: T; timer: NodeJS.Timeout }[] = [];

  constructor(
    private readonly max = 2,
    private readonly ms = 10_000,
  ) {}

  take(): T | undefined {
    const entry = this.idle.pop();
    if (!entry) return undefined;
    clearTimeout(entry.timer);
    return entry.value;
  }

  give(value: T): void {
    if (this.idle.length >= this.max) return;
    const entry = {
      value,
      timer: setTimeout(() => {
        const at = this.idle.indexOf(entry);
        if (at >= 0) this.idle.splice(at, 1);
      }, this.ms).unref(),
    };
    this.idle.push(entry);
  }
}

const idleDecoders = new IdleContexts<ZstdBinding.DCtx>();

const ZSTD_JOB_SIZE = 2 << 20;
const ZSTD_OVERLAP_LOG = 9;

/** Encoders' contexts kept for the next stream (see ZstdEncoder), per compression level. */
const idleEncoders = new Map<number, IdleContexts<{ cctx: ZstdBinding.CCtx; scratch: Buffer }>>();

/**
 * The zstd stage's encoder: zstd-napi's streaming compression, with the compression context kept
 * for the next stream of the same process. A context holds libzstd's worker thread and some 10
 * MB of buffers and tables; made afresh for every backup, each of its pages was faulted in again
 * (and the thread started), which cost a backup of a 7 MB database ~15 ms of CPU beside the dump
 * on this machine. A context is kept only after a stream that ended cleanly (its frame complete).
 * Compressed pieces are copied out of one scratch buffer instead of a fresh 128 KiB buffer each.
 */
class ZstdEncoder extends Transform {
  private cctx: ZstdBinding.CCtx | undefined;
  private scratch: Buffer;

  constructor(private readonly level: number) {
    super();
    const idle = idleEncoders.get(level)?.take();
    if (idle) {
      this.cctx = idle.cctx;
      this.scratch = idle.scratch;
      return;
    }
    const b = zstdBinding();
    this.cctx = new b.CCtx();
    for (const [param, value] of [
      [b.CParameter.compressionLevel, level],
      [b.CParameter.checksumFlag, 1],
      [b.CParameter.nbWorkers, 1],
      [b.CParameter.jobSize, ZSTD_JOB_SIZE],
      [b.CParameter.overlapLog, ZSTD_OVERLAP_LOG],
    ] as const) {
      this.cctx.setParameter(param, value);
    }
    this.scratch = Buffer.allocUnsafe(b.cStreamOutSize());
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.compress(chunk, false);
      // libzstd has copied all of it: a pooled read may go into its buffer now.
      releaseChunk(chunk);
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _flush(done: TransformCallback): void {
    try {
      this.compress(Buffer.alloc(0), true);
      this.keep();
      done();
    } catch (err) {
      done(err as Error);
    }
  }

  override _destroy(err: Error | null, done: (err: Error | null) => void): void {
    // Not kept (a stream that did not end cleanly): the context is freed with this stream.
    this.cctx = undefined;
    done(err);
  }

  private compress(input: Buffer, end: boolean): void {
    const cctx = this.cctx;
    if (!cctx) throw new Error('the zstd encoder was used after its end');
    const directive = end ? zstdBinding().EndDirective.end : zstdBinding().EndDirective.continue;
    for (;;) {
      const [remaining, produced, consumed] = cctx.compressStream2(this.scratch, input, directive);
      if (produced > 0) this.push(Buffer.from(this.scratch.subarray(0, produced)));
      input = input.subarray(consumed);
      if (input.length === 0 && (!end || remaining === 0)) return;
    }
  }

  /** After a complete frame: the context goes back for the next stream. */
  private keep(): void {
    const cctx = this.cctx;
    this.cctx = undefined;
    if (!cctx) return;
    cctx.reset(zstdBinding().ResetDirective.sessionOnly);
    let idle = idleEncoders.get(this.level);
    if (!idle) idleEncoders.set(this.level, (idle = new IdleContexts()));
    idle.give({ cctx, scratch: this.scratch });
  }
}

export function zstdStage(params: Record<string, unknown>): Stage {
  const level = checkLevel('zstd', params.level ?? 3);
  return {
    id: 'zstd',
    params: { level },
    suffix: '.zst',
    encode: () => new ZstdEncoder(level),
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
