// Streaming multipart upload to S3 with strictly bounded memory, used by the S3 driver for every
// streamed put. A Writable: pipe the artifact into it; it resolves (finishes) once the object is
// published, and on any failure or destroy() it aborts the multipart upload so no partial object
// is ever visible.
//
// The algorithm:
// - At most `parallelParts + 1` part buffers exist per upload, allocated when first needed and
//   reused for every later part: one is being filled, the others are in flight. Incoming chunks
//   are copied into the buffer being filled; a full buffer becomes a part and is sent as soon as
//   fewer than `parallelParts` requests are in flight. The SDK sends a Buffer body as it is (no
//   copy, no aws-chunked re-encoding: a checksum, where one is computed, is a header).
// - Back-pressure: when every buffer is in flight or full, the write callback is held until a
//   part completes, so the stream feeding the upload (and through it the dump and every other
//   destination) goes at the store's pace instead of filling memory.
// - An object smaller than one part is sent as one PutObject, without a multipart upload.
// - Each part is retried from the buffer it still holds: first by the SDK (its maxAttempts), then,
//   for a transient error, by retryTransient() after a longer backoff. A buffer is reused only
//   once its request has settled.
// - Part sizes: see partSizeFor(). Parts 1–5,000 have the size chosen from the expected size, so
//   an artifact up to the estimate never needs more; beyond, the size doubles every 1,000 parts.
// - Failure, abort or destroy(): the requests in flight are cancelled and awaited (so no part
//   lands after the abort), then AbortMultipartUpload is sent (retried, never cancelled).
//   CreateMultipartUpload, CompleteMultipartUpload and the single PutObject are never cancelled: a
//   cancelled create could leave an upload whose id we never learn, a cancelled publish an object
//   we think absent. If the publish succeeds after all, `published` tells the caller to remove it.

import { Writable } from 'node:stream';
import {
  AbortMultipartUploadCommand,
  CompleteMultipartUploadCommand,
  CreateMultipartUploadCommand,
  PutObjectCommand,
  UploadPartCommand,
  type ChecksumAlgorithm,
  type CompletedPart,
  type PutObjectCommandInput,
  type S3Client,
} from '@aws-sdk/client-s3';
import { StorageError } from '../core/errors.js';
import { retryTransient } from './retry.js';

const MiB = 1024 * 1024;
export const MIN_PART_SIZE = 5 * MiB;
export const MAX_PART_SIZE = 5 * 1024 * MiB;
export const MAX_PARTS = 10_000;
/** Parts that keep the initial size; from here on the size doubles every GROWTH_STEP parts. */
const STEADY_PARTS = 5_000;
const GROWTH_STEP = 1_000;

/**
 * Size of the first parts: the configured minimum (at least S3's 5 MiB), or enough for 5,000
 * parts to hold the expected size (10,000 parts, twice the expected size), rounded up to a MiB.
 */
export function choosePartSize(sizeHint: number | undefined, minPartSize: number): number {
  const needed = sizeHint ? Math.ceil(sizeHint / STEADY_PARTS) : 0;
  return Math.min(MAX_PART_SIZE, Math.ceil(Math.max(minPartSize, needed, MIN_PART_SIZE) / MiB) * MiB);
}

/**
 * Size of part `n` (1-based) of an upload whose first parts have `initial` bytes: `initial` up to
 * part 5,000, then doubling every 1,000 parts (×2 from 5,001, … ×32 for 9,001–10,000), capped at
 * S3's 5 GiB. The parts hold 67,000 × `initial` in all: with 5 MiB parts, 327 GiB. Memory grows
 * with the part size only for an artifact larger than its estimate.
 */
export function partSizeFor(n: number, initial: number): number {
  const steps = n <= STEADY_PARTS ? 0 : Math.ceil((n - STEADY_PARTS) / GROWTH_STEP);
  return Math.min(MAX_PART_SIZE, initial * 2 ** steps);
}

/** What the object is: S3's name for it and the attributes given at creation. */
export type ObjectParams = Pick<
  PutObjectCommandInput,
  'Bucket' | 'Key' | 'Metadata' | 'StorageClass' | 'ServerSideEncryption' | 'SSEKMSKeyId' | 'ACL' | 'ObjectLockMode' | 'ObjectLockRetainUntilDate'
> & {
  Bucket: string;
  Key: string;
};

export interface MultipartUploadOptions {
  client: S3Client;
  object: ObjectParams;
  /** Publish only if the key does not exist (If-None-Match: * on PutObject / CompleteMultipartUpload). */
  ifNoneMatch?: boolean;
  /** Size of the first parts (choosePartSize()). */
  partSize: number;
  /** Part uploads in flight at once; memory is (parallelParts + 1) × part size. */
  parallelParts: number;
  /** Attempts per request after the SDK's own retries, for transient errors (default 3). */
  attempts?: number;
  /** First backoff delay of those attempts (default 500 ms). */
  retryDelayMs?: number;
  /** Turns an SDK error into a classified StorageError (the driver's classification). */
  classify: (err: unknown, what: string) => StorageError;
}

interface Part {
  number: number;
  /** The whole buffer, returned to the free list once the part's request has settled. */
  buffer: Buffer;
  body: Buffer;
}

export interface UploadStats {
  /** Part buffers allocated at once, at most (parallelParts + 1 unless the part size grew). */
  peakBuffers: number;
  /** Parts sent; 0 for an object sent as one PutObject. */
  parts: number;
  /** Most part requests in flight at once. */
  peakInFlight: number;
}

function destroyedError(): Error {
  return Object.assign(new Error('the upload was cancelled before it completed'), { name: 'AbortError' });
}

export class MultipartUpload extends Writable {
  /** Bytes accepted so far; the object's size once finished. */
  bytes = 0;
  readonly stats: UploadStats = { peakBuffers: 0, parts: 0, peakInFlight: 0 };

  private readonly o: MultipartUploadOptions;
  private readonly maxBuffers: number;
  private readonly free: Buffer[] = [];
  private allocated = 0;
  private partNumber = 0;
  private current: Part | undefined;
  private filled = 0;
  /** A full part waiting for a request slot. */
  private ready: Part | undefined;
  private inFlight = 0;
  private readonly tasks = new Set<Promise<void>>();
  private readonly parts: CompletedPart[] = [];
  private uploadId: Promise<string> | undefined;
  private readonly requests = new AbortController();
  private failure: Error | undefined;
  /** The write whose callback is held until a buffer is free. */
  private resume: (() => void) | undefined;
  private drained: { resolve: () => void; reject: (err: Error) => void } | undefined;
  /** The object is visible: PutObject or CompleteMultipartUpload succeeded. */
  published = false;
  /** The publishing request (PutObject or CompleteMultipartUpload), once sent. */
  private publishing: Promise<unknown> | undefined;
  private checksum: Promise<ChecksumAlgorithm | undefined> | undefined;

  constructor(options: MultipartUploadOptions) {
    // A small write queue: what waits here is on top of the part buffers.
    super({ highWaterMark: 64 * 1024 });
    this.o = options;
    this.maxBuffers = options.parallelParts + 1;
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (err?: Error | null) => void): void {
    this.fill(chunk, 0, done);
  }

  private fill(chunk: Buffer, offset: number, done: (err?: Error | null) => void): void {
    while (offset < chunk.length) {
      if (this.failure) return done(this.failure);
      if (!this.current) {
        if (this.partNumber === MAX_PARTS) {
          // Part 10,000 is full and bytes keep coming: S3 takes no part 10,001. The upload fails
          // (and is aborted) rather than publishing a truncated object.
          return done(
            new StorageError('permanent', `[s3] ${this.o.object.Key}: the artifact outgrew ${MAX_PARTS} parts (${this.bytes} bytes so far)`, {
              hint: 'set a larger partSizeMiB in the storage\'s config entry',
            }),
          );
        }
        const part = this.nextPart();
        if (!part) {
          // Every buffer is in flight or full: hold the callback until a part completes.
          this.resume = () => this.fill(chunk, offset, done);
          return;
        }
        this.current = part;
        this.filled = 0;
      }
      const n = chunk.copy(this.current.buffer, this.filled, offset, Math.min(chunk.length, offset + this.current.body.length - this.filled));
      this.filled += n;
      this.bytes += n;
      offset += n;
      if (this.filled === this.current.body.length) this.seal();
    }
    done();
  }

  /** A buffer for the next part: a free one of the right size, a new one within the bound, or none. */
  private nextPart(): Part | undefined {
    const size = partSizeFor(this.partNumber + 1, this.o.partSize);
    let buffer = this.free.pop();
    if (buffer && buffer.length < size) {
      buffer = undefined; // outgrown: replaced by a larger one, so the count stays bounded
      this.allocated--;
    }
    if (!buffer) {
      if (this.allocated >= this.maxBuffers) return undefined;
      buffer = Buffer.allocUnsafeSlow(size);
      this.allocated++;
      this.stats.peakBuffers = Math.max(this.stats.peakBuffers, this.allocated);
    }
    this.partNumber++;
    return { number: this.partNumber, buffer, body: buffer.subarray(0, size) };
  }

  /** The part being filled is complete (full, or the last one): send it, or queue it for a slot. */
  private seal(): void {
    const part = this.current!;
    part.body = part.buffer.subarray(0, this.filled);
    this.current = undefined;
    this.filled = 0;
    this.stats.parts++;
    if (this.inFlight < this.o.parallelParts) this.send(part);
    else this.ready = part;
  }

  private send(part: Part): void {
    this.inFlight++;
    this.stats.peakInFlight = Math.max(this.stats.peakInFlight, this.inFlight);
    this.uploadId ??= this.create();
    const task = this.uploadPart(part).then(
      () => this.partDone(part),
      (err: unknown) => {
        this.inFlight--;
        this.fail(err);
      },
    );
    this.tasks.add(task);
    void task.finally(() => this.tasks.delete(task));
  }

  private partDone(part: Part): void {
    this.inFlight--;
    this.free.push(part.buffer);
    if (this.failure) return;
    if (this.ready) {
      const next = this.ready;
      this.ready = undefined;
      this.send(next);
    }
    if (this.resume) {
      const resume = this.resume;
      this.resume = undefined;
      resume();
    }
    if (this.inFlight === 0 && !this.ready) this.drained?.resolve();
  }

  private fail(err: unknown): void {
    if (this.failure) return;
    this.failure = err instanceof Error ? err : new Error(String(err));
    this.drained?.reject(this.failure);
    this.destroy(this.failure);
  }

  /** The checksum algorithm to declare: CRC32 where the client computes checksums by default (AWS), as the SDK does for parts. */
  private checksumAlgorithm(): Promise<ChecksumAlgorithm | undefined> {
    this.checksum ??= (async () => {
      const setting = this.o.client.config.requestChecksumCalculation;
      const value = typeof setting === 'function' ? await setting() : setting;
      return value === 'WHEN_SUPPORTED' ? 'CRC32' : undefined;
    })();
    return this.checksum;
  }

  /** Sends with retries; once the upload has failed, no request is retried but the abort itself. */
  private async request<T>(what: string, run: () => Promise<T>, opts: { retryAfterFailure?: boolean } = {}): Promise<T> {
    return retryTransient(
      what,
      () =>
        run().catch((err: unknown) => {
          throw this.o.classify(err, what);
        }),
      { attempts: this.o.attempts, baseDelayMs: this.o.retryDelayMs, signal: opts.retryAfterFailure ? undefined : this.requests.signal },
    );
  }

  /** For part uploads only: cancelled when the upload fails. */
  private get cancellable() {
    return { abortSignal: this.requests.signal as never };
  }

  private async create(): Promise<string> {
    const algorithm = await this.checksumAlgorithm();
    const res = await this.request(`cannot start the multipart upload of ${this.o.object.Key}`, () =>
      this.o.client.send(new CreateMultipartUploadCommand({ ...this.o.object, ...(algorithm ? { ChecksumAlgorithm: algorithm } : {}) })),
    );
    if (!res.UploadId) throw new StorageError('permanent', `[s3] ${this.o.object.Key}: the store returned no upload id`);
    return res.UploadId;
  }

  private async uploadPart(part: Part): Promise<void> {
    const UploadId = await this.uploadId!;
    if (this.failure) throw this.failure;
    const algorithm = await this.checksumAlgorithm();
    const what = `cannot upload part ${part.number} of ${this.o.object.Key}`;
    const res = await this.request(what, () =>
      this.o.client.send(
        new UploadPartCommand({
          Bucket: this.o.object.Bucket,
          Key: this.o.object.Key,
          UploadId,
          PartNumber: part.number,
          Body: part.body,
          ContentLength: part.body.length,
          ...(algorithm ? { ChecksumAlgorithm: algorithm } : {}),
        }),
        this.cancellable,
      ),
    );
    if (!res.ETag) throw new StorageError('permanent', `[s3] ${what}: the store returned no ETag for the part`);
    this.parts.push({
      PartNumber: part.number,
      ETag: res.ETag,
      ...(res.ChecksumCRC32 ? { ChecksumCRC32: res.ChecksumCRC32 } : {}),
      ...(res.ChecksumCRC32C ? { ChecksumCRC32C: res.ChecksumCRC32C } : {}),
      ...(res.ChecksumSHA1 ? { ChecksumSHA1: res.ChecksumSHA1 } : {}),
      ...(res.ChecksumSHA256 ? { ChecksumSHA256: res.ChecksumSHA256 } : {}),
    });
  }

  override _final(done: (err?: Error | null) => void): void {
    this.finish().then(() => done(), (err: Error) => done(err));
  }

  private async finish(): Promise<void> {
    if (this.failure) throw this.failure;
    const conditional = this.o.ifNoneMatch ? { IfNoneMatch: '*' } : {};
    if (this.stats.parts === 0) {
      // The whole object fits in one part: a plain PutObject from the one buffer.
      const body = this.current ? this.current.buffer.subarray(0, this.filled) : Buffer.alloc(0);
      await this.publish(
        this.request(`cannot write ${this.o.object.Key}`, () =>
          this.o.client.send(new PutObjectCommand({ ...this.o.object, ...conditional, Body: body, ContentLength: body.length })),
        ),
      );
      return;
    }
    if (this.current && this.filled > 0) this.seal();
    if (this.inFlight > 0 || this.ready) {
      await new Promise<void>((resolve, reject) => (this.drained = { resolve, reject }));
    }
    if (this.failure) throw this.failure;
    const UploadId = await this.uploadId!;
    const Parts = [...this.parts].sort((a, b) => a.PartNumber! - b.PartNumber!);
    if (Parts.length !== this.stats.parts) {
      throw new StorageError('permanent', `[s3] ${this.o.object.Key}: ${Parts.length} of ${this.stats.parts} parts were uploaded`);
    }
    // Not retried here beyond the SDK's attempts: a complete that succeeded but whose answer was
    // lost would, sent again with If-None-Match, report the object as already existing.
    await this.publish(
      this.o.client
        .send(new CompleteMultipartUploadCommand({ Bucket: this.o.object.Bucket, Key: this.o.object.Key, UploadId, MultipartUpload: { Parts }, ...conditional }))
        .catch((err: unknown) => {
          throw this.o.classify(err, `cannot complete the multipart upload of ${this.o.object.Key}`);
        }),
    );
  }

  /** The request that makes the object visible; never cancelled, so its outcome is always known. */
  private async publish(request: Promise<unknown>): Promise<void> {
    this.publishing = request;
    await request;
    this.published = true;
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    if (this.published) return done(err);
    this.failure ??= err ?? destroyedError();
    this.resume = undefined;
    this.ready = undefined;
    this.current = undefined;
    this.drained?.reject(this.failure);
    this.requests.abort(this.failure);
    this.abortUpload().then(
      () => done(err),
      () => done(err),
    );
  }

  /**
   * Waits for every request in flight to settle, then aborts the multipart upload, if one was
   * started and not completed. A publishing request that succeeded meanwhile leaves `published`
   * set: the object is visible, and the caller removes it.
   */
  private async abortUpload(): Promise<void> {
    await Promise.allSettled([...this.tasks, this.publishing]);
    if (this.published) return;
    const UploadId = await this.uploadId?.catch(() => undefined);
    if (!UploadId) return;
    await this.request(
      `cannot abort the multipart upload of ${this.o.object.Key}`,
      () => this.o.client.send(new AbortMultipartUploadCommand({ Bucket: this.o.object.Bucket, Key: this.o.object.Key, UploadId })),
      { retryAfterFailure: true },
    );
  }
}
