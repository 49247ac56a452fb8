// Reading an artifact back: the one path every verify and restore takes. The stored bytes are
// counted and hashed as they stream by, the stages named in the manifest decode them, and the
// stream errors with an IntegrityError instead of ending when the size, the SHA-256 or the raw
// size differs from the manifest, or when a stage does not decode to its end.
//
// A hash mismatch is only known at the end of the stream: whatever consumes it must not trust
// what it read until the stream has ended cleanly (restore writes into a new database and only
// swaps afterwards).

import { pipeline } from 'node:stream/promises';
import { PassThrough, Transform, type Readable, type TransformCallback } from 'node:stream';
import { DbstashError, IntegrityError, isNotFound } from '../core/errors.js';
import { artifactKey } from '../core/id.js';
import type { ArtifactEntry, Manifest } from '../catalog/manifest.js';
import { Meter } from '../pipeline/meter.js';
import { decoders, type StageContext } from '../pipeline/stage.js';
import { eachPiece } from '../storage/drawable.js';
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
 * otherwise it errors with an IntegrityError naming the first broken thing.
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
  const rawCheck = new EndCheck(() =>
    raw.bytes === artifact.rawSize
      ? undefined
      : new IntegrityError(`${artifact.file} decodes to ${raw.bytes} bytes, manifest says ${artifact.rawSize}`),
  );
  let decoding;
  try {
    decoding = decoders(artifact.stages, stageContext);
  } catch (err) {
    source.destroy();
    throw err;
  }
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  // The consumer may attach only later (after spawning its tool); it still sees the error then,
  // from the stream's errored state, so an error before that must not crash the process.
  out.on('error', () => {});
  const chain = [source, stored, storedCheck, ...decoding, raw, rawCheck] as unknown as [Readable, NodeJS.ReadWriteStream];
  // `out` stays outside the pipeline so that it errors with the explained error, not the raw one.
  rawCheck.pipe(out);
  out.on('close', () => {
    if (!rawCheck.readableEnded) rawCheck.destroy();
  });
  pipeline(chain, { signal: opts.signal }).catch(async (err: unknown) => {
    if (out.destroyed) return;
    out.destroy((await explain(err, storage, key, artifact, opts.signal)) as Error);
  });
  return out;
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
