/**
 * Decoder for the `aws-chunked` content encoding that the AWS SDK uses for
 * streaming uploads with checksums: `<hex size>[;chunk-signature=…]\r\n<data>\r\n`
 * repeated, a zero-size chunk, then trailer lines (e.g. x-amz-checksum-crc32)
 * and an empty line. Real S3 strips this framing; s3rver does not, so the S3
 * harness decodes request bodies with this before s3rver stores them.
 * Chunk signatures and trailing checksums are not verified.
 */
import { Transform, type TransformCallback } from 'node:stream';

type State = 'size' | 'data' | 'data-end' | 'trailer' | 'done';

export class AwsChunkedDecoder extends Transform {
  private pending: Buffer = Buffer.alloc(0);
  private state: State = 'size';
  private remaining = 0;

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.pending = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    try {
      this.decode();
      callback();
    } catch (err) {
      callback(err as Error);
    }
  }

  override _flush(callback: TransformCallback): void {
    callback(this.state === 'done' ? null : new Error(`aws-chunked body ended early (while reading ${this.state})`));
  }

  private decode(): void {
    while (this.pending.length && this.state !== 'done') {
      if (this.state === 'data') {
        const data = this.pending.subarray(0, this.remaining);
        this.push(data);
        this.pending = this.pending.subarray(data.length);
        this.remaining -= data.length;
        if (this.remaining === 0) this.state = 'data-end';
        continue;
      }
      const eol = this.pending.indexOf('\r\n');
      if (eol < 0) return;
      const line = this.pending.subarray(0, eol).toString('latin1');
      this.pending = this.pending.subarray(eol + 2);
      this.readLine(line);
    }
  }

  private readLine(line: string): void {
    switch (this.state) {
      case 'size': {
        const size = Number.parseInt(line.split(';')[0], 16);
        if (!Number.isSafeInteger(size) || size < 0) throw new Error(`aws-chunked: bad chunk size line ${JSON.stringify(line)}`);
        this.remaining = size;
        this.state = size === 0 ? 'trailer' : 'data';
        break;
      }
      case 'data-end':
        if (line !== '') throw new Error('aws-chunked: chunk data longer than its declared size');
        this.state = 'size';
        break;
      case 'trailer':
        if (line === '') this.state = 'done';
        break;
    }
  }
}
