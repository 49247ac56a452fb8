// Pass-through stream that counts bytes and, optionally, hashes them (SHA-256 with Node's native
// crypto). One meter sits on the raw dump (raw size, progress) and one on the stored bytes
// (stored size and the checksum that goes into the manifest).

import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

export class Meter extends Transform {
  bytes = 0;
  private readonly hash?: Hash;
  private digest?: string;

  constructor(opts: { hash?: boolean; onBytes?: (total: number) => void } = {}) {
    super({ highWaterMark: 1 << 20 });
    if (opts.hash) this.hash = createHash('sha256');
    this.onBytes = opts.onBytes;
  }

  private readonly onBytes?: (total: number) => void;

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.update(chunk);
    done(null, chunk);
  }

  /** Counts (and hashes) bytes that reach their consumer some other way than through this stream. */
  update(chunk: Buffer): void {
    this.bytes += chunk.length;
    this.hash?.update(chunk);
    this.onBytes?.(this.bytes);
  }

  /** The hex SHA-256 of everything that passed; only valid once the stream has finished. */
  sha256(): string {
    if (!this.hash) throw new Error('meter was created without hashing');
    this.digest ??= this.hash.digest('hex');
    return this.digest;
  }
}
