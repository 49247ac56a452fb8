// A Readable that a consumer may also read into buffers of its own (draw()), so that a long copy
// allocates nothing per chunk. Each chunk a stream hands out is a new buffer outside V8's heap, and
// V8 collects dead ones only after about 64 MB of them have piled up (its external-memory
// allowance, which no flag changes): a 1 GiB upload from a file stream peaked 30-60 MB higher than
// the same upload drawn into the driver's reused block buffers (docs/performance.md). A consumer
// that does not know draw() pipes it like any other stream.

import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';

/** Where the bytes come from: read() places up to `length` bytes at `offset` and resolves to how many, 0 at the end. */
export interface DrawSource {
  read(into: Buffer, offset: number, length: number): Promise<number>;
  close(): Promise<void>;
}

export class Drawable extends Readable {
  private observer?: (bytes: Buffer) => void;
  private drawing = false;

  constructor(
    private readonly source: DrawSource,
    /** Bytes per chunk when it is read as a stream. */
    private readonly chunkSize: number,
  ) {
    super({ highWaterMark: chunkSize });
  }

  /** `fn` sees every byte once, in order, as it is read by either path (a hash, a count); one observer. */
  observe(fn: (bytes: Buffer) => void): this {
    if (this.observer) throw new Error('a Drawable takes one observer');
    this.observer = fn;
    return this;
  }

  override _read(): void {
    const buffer = Buffer.allocUnsafeSlow(this.chunkSize);
    this.source.read(buffer, 0, buffer.length).then(
      (n) => {
        if (this.destroyed) return;
        if (n === 0) return void this.push(null);
        const bytes = buffer.subarray(0, n);
        this.observer?.(bytes);
        this.push(bytes);
      },
      (err: Error) => this.destroy(err),
    );
  }

  /**
   * Reads the next bytes into `into` at `offset`; resolves to how many were placed, 0 at the end.
   * For a consumer that takes the whole stream this way: refused once it has been read as a stream.
   * The consumer destroys the Drawable when it is done with it, which closes the source.
   */
  async draw(into: Buffer, offset: number, length: number): Promise<number> {
    if (this.destroyed) throw this.errored ?? new Error('the stream was destroyed before it was read to its end');
    if (this.drawing) throw new Error('draw() was called again before the last call settled');
    if (this.readableDidRead || this.readableLength > 0) throw new Error('draw() on a stream that was already read as a stream');
    this.drawing = true;
    try {
      const n = await this.source.read(into, offset, length);
      if (this.destroyed) throw this.errored ?? new Error('the stream was destroyed while it was read');
      if (n > 0) this.observer?.(into.subarray(offset, offset + n));
      return n;
    } finally {
      this.drawing = false;
    }
  }

  override _destroy(err: Error | null, done: (err?: Error | null) => void): void {
    this.source.close().then(
      () => done(err),
      (closeErr: Error) => done(err ?? closeErr),
    );
  }
}

/** Whether `data` can be drawn into the consumer's own buffers. */
export function isDrawable(data: unknown): data is Drawable {
  return data instanceof Drawable;
}

/** A stream that can also be drawn: a Drawable, or an artifact read back as its raw dump (openArtifact). */
export interface DrawableStream extends Readable {
  draw(into: Buffer, offset: number, length: number): Promise<number>;
}

/** Whether `data` is a stream whose reader may draw it instead (see DrawableStream). */
export function canDraw(data: unknown): data is DrawableStream {
  return data instanceof Readable && typeof (data as Partial<DrawableStream>).draw === 'function';
}

/** A file read from its start, sequentially, through an open handle (which close() closes). */
export function fileSource(handle: FileHandle): DrawSource {
  let position = 0;
  return {
    async read(into, offset, length) {
      const { bytesRead } = await handle.read(into, offset, length, position);
      position += bytesRead;
      return bytesRead;
    },
    close: () => handle.close(),
  };
}

/** Bytes per draw of eachPiece(). */
const PIECE = 1 << 20;

/**
 * Reads `source` to its end, handing each piece to `fn` (which must be done with it when it
 * returns). A Drawable is drawn into one buffer, reused for every piece; any other stream is
 * iterated. The source is destroyed when this settles.
 */
export async function eachPiece(source: Readable, fn: (bytes: Buffer) => void, signal?: AbortSignal): Promise<void> {
  try {
    if (isDrawable(source)) {
      const buffer = Buffer.allocUnsafe(PIECE);
      for (;;) {
        signal?.throwIfAborted();
        const n = await source.draw(buffer, 0, buffer.length);
        if (n === 0) return;
        fn(buffer.subarray(0, n));
      }
    }
    for await (const chunk of source) {
      signal?.throwIfAborted();
      fn(chunk as Buffer);
    }
  } finally {
    source.destroy();
  }
}

/**
 * The pieces of `source` in order: drawn into two buffers in turn where it can be drawn
 * (canDraw), else its chunks. A drawn piece stays valid until the piece after the next is asked
 * for: the reader must be done with it (writes of it completed) by then.
 */
export async function* piecesOf(source: Readable, size = PIECE): AsyncGenerator<Buffer> {
  if (!canDraw(source)) {
    for await (const chunk of source) yield chunk as Buffer;
    return;
  }
  const buffers = [Buffer.allocUnsafe(size), Buffer.allocUnsafe(size)];
  for (let turn = 0; ; turn ^= 1) {
    const n = await source.draw(buffers[turn], 0, size);
    if (n === 0) return;
    yield buffers[turn].subarray(0, n);
  }
}
