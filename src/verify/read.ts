// Reading an artifact back: the one path every verify and restore takes. The stored bytes are
// counted and hashed as they stream by, the stages named in the manifest decode them, and the
// stream errors with an IntegrityError instead of ending when the size, the SHA-256 or the raw
// size differs from the manifest, or when a stage does not decode to its end.
//
// A hash mismatch is only known at the end of the stream: whatever consumes it must not trust
// what it read until the stream has ended cleanly (restore writes into a new database and only
// swaps afterwards).
//
// A dump that zstd decodes last (the default compression) may also be drawn into the reader's own
// buffers (draw(), as the feed into a restore tool does), with the same checks. Every decoded
// piece of the stream path is a fresh buffer, and V8 frees dead ones only in bulk: a MariaDB
// restore held 30-50 MB of them at any time. Drawn, a local artifact is read into two reused
// buffers and decoded straight into the reader's (docs/performance.md).

import { pipeline } from 'node:stream/promises';
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import { DbstashError, IntegrityError, isNotFound } from '../core/errors.js';
import { artifactKey } from '../core/id.js';
import type { ArtifactEntry, Manifest } from '../catalog/manifest.js';
import { Meter } from '../pipeline/meter.js';
import { ZstdInto } from '../pipeline/compress.js';
import { decoders, type StageContext } from '../pipeline/stage.js';
import { eachPiece, isDrawable, type Drawable, type DrawSource } from '../storage/drawable.js';
import type { Storage } from '../storage/storage.js';

/** Fails the stream at its end unless the bytes that passed match the expected size and hash. */
class EndCheck extends Transform {
  constructor(private readonly expected: () => IntegrityError | undefined) {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    done(null, chunk);
  }

  override _flush(done: TransformCallback): void {
    done(this.expected());
  }
}

/** Errors that already say what is wrong with the stored bytes (nothing to explain further). */
const storedErrors = new WeakSet<Error>();

function storedMismatch(artifact: ArtifactEntry, size: number, sha256: () => string): IntegrityError | undefined {
  const err = describeStoredMismatch(artifact, size, sha256);
  if (err) storedErrors.add(err);
  return err;
}

function describeStoredMismatch(artifact: ArtifactEntry, size: number, sha256: () => string): IntegrityError | undefined {
  if (size !== artifact.size) {
    return new IntegrityError(`artifact ${artifact.file} is ${size} bytes, manifest says ${artifact.size}`, {
      hint: 'the stored file was truncated or replaced; use another copy of this backup, or an older backup',
    });
  }
  const actual = sha256();
  if (actual !== artifact.sha256) {
    return new IntegrityError(`checksum mismatch: ${artifact.file} has sha256 ${actual}, manifest says ${artifact.sha256}`, {
      hint: 'the stored bytes changed after the backup was written; use another copy of this backup, or an older backup',
    });
  }
  return undefined;
}

async function getArtifact(storage: Storage, key: string, artifact: ArtifactEntry, signal?: AbortSignal): Promise<Readable> {
  try {
    return await storage.get(key, { signal });
  } catch (err) {
    if (isNotFound(err)) {
      throw new IntegrityError(`artifact ${artifact.file} is missing from ${storage.url}`, {
        hint: 'the manifest exists but its data does not; use another copy of this backup, or an older backup',
      });
    }
    throw err;
  }
}

/** Hashes the stored object on its own, to tell a damaged artifact from a decoder problem. */
async function storedBytesMatch(storage: Storage, key: string, artifact: ArtifactEntry, signal?: AbortSignal): Promise<IntegrityError | undefined> {
  const meter = new Meter({ hash: true });
  // A local artifact is drawn into one buffer: reading a whole stored dump through fresh chunks
  // left tens of MB of dead buffers for V8 to collect (docs/performance.md).
  await eachPiece(await getArtifact(storage, key, artifact, signal), (piece) => meter.update(piece), signal);
  return storedMismatch(artifact, meter.bytes, () => meter.sha256());
}

export interface OpenOptions {
  signal?: AbortSignal;
  /** Called with the count of stored bytes read so far (progress). */
  onBytes?: (stored: number) => void;
}

/**
 * Streams one artifact of a backup as the raw dump. The returned stream ends only when the
 * stored size and SHA-256, every stage's decoding and the raw size all matched the manifest;
 * otherwise it errors with an IntegrityError naming the first broken thing. When zstd decodes last
 * (it compressed first) the stream can also be drawn (DrawableStream), with the same checks:
 * draw() resolves to 0 only when all of them passed, and rejects with the same errors.
 */
export async function openArtifact(
  storage: Storage,
  manifest: Manifest,
  artifact: ArtifactEntry,
  stageContext: StageContext,
  opts: OpenOptions = {},
): Promise<Readable> {
  const key = artifactKey(manifest.id, artifact.file);
  const source = await getArtifact(storage, key, artifact, opts.signal);
  const stored = new Meter({ hash: true, onBytes: opts.onBytes });
  const storedCheck = new EndCheck(() => storedMismatch(artifact, stored.bytes, () => stored.sha256()));
  const raw = new Meter();
  const rawMismatch = () =>
    raw.bytes === artifact.rawSize ? undefined : new IntegrityError(`${artifact.file} decodes to ${raw.bytes} bytes, manifest says ${artifact.rawSize}`);
  const rawCheck = new EndCheck(rawMismatch);
  let decoding;
  try {
    decoding = decoders(artifact.stages, stageContext);
  } catch (err) {
    source.destroy();
    throw err;
  }
  const explained = (err: unknown) => explain(err, storage, key, artifact, opts.signal);
  const chain = [source, stored, storedCheck, ...decoding, raw, rawCheck] as unknown as [Readable, NodeJS.ReadWriteStream];
  // `out` stays outside the pipeline so that it errors with the explained error, not the raw one.
  const streamInto = (out: Readable & NodeJS.WritableStream): void => {
    rawCheck.pipe(out);
    pipeline(chain, { signal: opts.signal }).catch(async (err: unknown) => {
      if (out.destroyed) return;
      out.destroy((await explained(err)) as Error);
    });
  };
  // Stages decode in reverse order: zstd, when it compressed first, decodes last.
  if (artifact.stages[0]?.id !== 'zstd') {
    const out = new PassThrough({ highWaterMark: 1 << 20 });
    // The consumer may attach only later (after spawning its tool); it still sees the error then,
    // from the stream's errored state, so an error before that must not crash the process.
    out.on('error', () => {});
    out.on('close', () => {
      if (!rawCheck.readableEnded) rawCheck.destroy();
    });
    streamInto(out);
    return out;
  }
  // The zstd decoder of the chain is only used when the dump is read as a stream.
  const before = [source, stored, storedCheck, ...decoding.slice(0, -1)] as unknown as [Readable, ...NodeJS.ReadWriteStream[]];
  const out: ArtifactStream = new ArtifactStream({
    stream: () => {
      out.on('close', () => {
        if (!rawCheck.readableEnded) rawCheck.destroy();
      });
      streamInto(out);
    },
    draw: () => {
      const input =
        before.length === 3 && isDrawable(source)
          ? drawnInput(source, stored, () => storedMismatch(artifact, stored.bytes, () => stored.sha256()), opts.signal)
          : streamedInput(before, opts.signal);
      out.on('close', () => input.close());
      return drawDecoded(input, new ZstdInto(), raw, rawMismatch, opts.signal);
    },
    unread: () => source.destroy(),
    explain: explained,
  });
  out.on('error', () => {});
  return out;
}

/**
 * The raw dump of an artifact that zstd decodes last, read as a stream (the whole chain, piped in
 * at the first read) or drawn (draw()); nothing is read from storage before one of the two begins,
 * and a stream read as one cannot be drawn, nor the other way round.
 */
class ArtifactStream extends PassThrough {
  private mode?: 'stream' | 'draw';
  private drawn?: DrawSource;
  private drawing = false;

  constructor(
    private readonly begin: {
      stream(): void;
      draw(): DrawSource;
      /** Neither began: releases the stored object. */
      unread(): void;
      explain(err: unknown): Promise<unknown>;
    },
  ) {
    super({ highWaterMark: 1 << 20 });
    this.once('close', () => {
      if (!this.mode) begin.unread();
    });
  }

  override _read(size: number): void {
    if (this.mode === 'draw') return void this.destroy(new Error('an artifact that is drawn cannot also be read as a stream'));
    if (!this.mode) {
      this.mode = 'stream';
      this.begin.stream();
    }
    super._read(size);
  }

  /** Decodes the next bytes into `into` at `offset`; resolves to how many, 0 once every check passed. */
  async draw(into: Buffer, offset: number, length: number): Promise<number> {
    if (this.destroyed) throw this.errored ?? new Error('the stream was destroyed before it was read to its end');
    if (this.mode === 'stream' || this.readableDidRead) throw new Error('draw() on a stream that was already read as a stream');
    if (this.drawing) throw new Error('draw() was called again before the last call settled');
    if (!this.drawn) {
      this.mode = 'draw';
      this.drawn = this.begin.draw();
    }
    this.drawing = true;
    try {
      const n = await this.drawn.read(into, offset, length);
      if (this.destroyed) throw this.errored ?? new Error('the stream was destroyed while it was read');
      return n;
    } catch (err) {
      if (this.destroyed) throw this.errored ?? err;
      const why = (await this.begin.explain(err)) as Error;
      this.destroy(why);
      throw why;
    } finally {
      this.drawing = false;
    }
  }
}

/** Compressed bytes for the draw path, a piece at a time (null at their end, once checked). */
interface Input {
  next(): Promise<Buffer | null>;
  close(): void;
}

/** Stored bytes drawn into the input's buffers (local storage). */
const INPUT_PIECE = 256 * 1024;

/**
 * A local artifact drawn into two buffers in turn (the next piece is read while one is decoded),
 * hashed as it is read; at its end, the stored size and SHA-256 are checked.
 */
function drawnInput(source: Drawable, stored: Meter, check: () => IntegrityError | undefined, signal?: AbortSignal): Input {
  const buffers = [Buffer.allocUnsafe(INPUT_PIECE), Buffer.allocUnsafe(INPUT_PIECE)];
  let turn = 0;
  let ahead: Promise<number> | undefined;
  let ended = false;
  const read = (i: number): Promise<number> => {
    const p = source.draw(buffers[i], 0, INPUT_PIECE);
    // Read ahead; a failure is seen when the piece is taken (or never, once closed).
    p.catch(() => {});
    return p;
  };
  return {
    async next() {
      if (ended) return null;
      signal?.throwIfAborted();
      const n = await (ahead ?? read(turn));
      ahead = undefined;
      if (n === 0) {
        ended = true;
        source.destroy();
        const mismatch = check();
        if (mismatch) throw mismatch;
        return null;
      }
      const piece = buffers[turn].subarray(0, n);
      stored.update(piece);
      turn ^= 1;
      // The other buffer is free: the piece before was decoded completely before this call.
      ahead = read(turn);
      return piece;
    },
    close: () => source.destroy(),
  };
}

/**
 * The stored bytes and the stages before zstd as a stream, read chunk by chunk (remote storage,
 * decryption); its end comes after the stored size and SHA-256 were checked (storedCheck).
 */
function streamedInput(streams: [Readable, ...NodeJS.ReadWriteStream[]], signal?: AbortSignal): Input {
  const last = streams[streams.length - 1] as unknown as Readable;
  const done = pipeline(streams as unknown as [Readable, NodeJS.ReadWriteStream], { signal });
  done.catch(() => {});
  const chunks = last[Symbol.asyncIterator]();
  return {
    async next() {
      const { value, done: end } = (await chunks.next()) as IteratorResult<Buffer>;
      if (!end) return value;
      await done;
      return null;
    },
    close: () => streams[0].destroy(),
  };
}

/**
 * Decodes `input` into the reader's buffers. A call fills `into` unless the dump ends first; 0 once
 * the input ended with all its checks passed, the last frame was complete and the raw size matched.
 */
function drawDecoded(input: Input, decoder: ZstdInto, raw: Meter, rawMismatch: () => IntegrityError | undefined, signal?: AbortSignal): DrawSource {
  let pending: Buffer = Buffer.alloc(0);
  let ended = false;
  return {
    async read(into, offset, length) {
      signal?.throwIfAborted();
      let filled = 0;
      for (;;) {
        // With no input left, this still takes what the decoder holds back for want of room.
        const [produced, used] = decoder.decode(into.subarray(offset + filled, offset + length), pending);
        pending = pending.subarray(used);
        filled += produced;
        if (filled === length) break;
        if (pending.length > 0) continue;
        if (ended) break;
        const next = await input.next();
        if (next) pending = next;
        else ended = true;
      }
      if (filled > 0) {
        raw.update(into.subarray(offset, offset + filled));
        return filled;
      }
      const mismatch = decoder.end() ?? rawMismatch();
      if (mismatch) throw mismatch;
      decoder.keep();
      return 0;
    },
    async close() {
      input.close();
    },
  };
}

/**
 * The stored object has the manifest's size and SHA-256, read on its own (not decoded). For a
 * consumer that stopped reading the artifact before its end (pg_restore of some tables has what
 * it needs): those bytes then are the backup's, so what it read decoded as the backup did.
 */
export async function checkStoredBytes(storage: Storage, manifest: Manifest, artifact: ArtifactEntry, signal?: AbortSignal): Promise<void> {
  const mismatch = await storedBytesMatch(storage, artifactKey(manifest.id, artifact.file), artifact, signal);
  if (mismatch) throw mismatch;
}

/**
 * A decoder that broke before the end usually means damaged stored bytes: say so ("checksum
 * mismatch") rather than report only the symptom, by hashing the stored object separately.
 */
async function explain(err: unknown, storage: Storage, key: string, artifact: ArtifactEntry, signal?: AbortSignal): Promise<unknown> {
  if (signal?.aborted) return signal.reason ?? err;
  if ((err instanceof Error && storedErrors.has(err)) || (err instanceof DbstashError && !(err instanceof IntegrityError))) return err;
  const stored = await storedBytesMatch(storage, key, artifact, signal).catch(() => undefined);
  if (stored) return new IntegrityError(`${stored.message} (decoding failed: ${(err as Error).message})`, { hint: stored.hint, cause: err });
  if (err instanceof IntegrityError) return err;
  return new IntegrityError(`${artifact.file} does not decode: ${(err as Error).message}`, { cause: err });
}
