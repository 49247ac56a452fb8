// A minimal POSIX ustar writer and reader for flat directories of regular files (pg_dump's
// directory format: toc.dat and one file per table). The writer streams each file in turn with
// bounded memory; sizes of 8 GiB and more use GNU tar's base-256 size field. The reader refuses
// anything but plain files in the one directory (no links, no paths, no "..") and checks every
// header's checksum, so a damaged or truncated archive is an IntegrityError, never a partial
// directory that looks complete.

import { createReadStream, createWriteStream, promises as fsp } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { once } from 'node:events';
import { IntegrityError } from '../../core/errors.js';
import { piecesOf } from '../../storage/drawable.js';

const BLOCK = 512;
const OCTAL_SIZE_LIMIT = 0o77777777777; // 11 octal digits

function writeString(header: Buffer, offset: number, length: number, value: string): void {
  const bytes = Buffer.from(value, 'utf8');
  if (bytes.length > length) throw new Error(`tar: "${value}" does not fit in ${length} bytes`);
  bytes.copy(header, offset);
}

function writeOctal(header: Buffer, offset: number, length: number, value: number): void {
  writeString(header, offset, length, value.toString(8).padStart(length - 1, '0') + '\0');
}

function writeSize(header: Buffer, size: number): void {
  if (size <= OCTAL_SIZE_LIMIT) return writeOctal(header, 124, 12, size);
  // GNU base-256: high bit of the first byte set, big-endian binary in the 12 bytes.
  header.fill(0, 124, 136);
  header[124] = 0x80;
  let v = BigInt(size);
  for (let i = 135; i > 124; i--) {
    header[i] = Number(v & 0xffn);
    v >>= 8n;
  }
}

function checksum(header: Buffer): number {
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : header[i];
  return sum;
}

/** Writes a header's checksum field, after its other fields are set (or changed). */
export function sealHeader(header: Buffer): void {
  writeString(header, 148, 8, checksum(header).toString(8).padStart(6, '0') + '\0 ');
}

export function tarHeader(name: string, size: number, mtime: number, mode = 0o600): Buffer {
  const header = Buffer.alloc(BLOCK);
  writeString(header, 0, 100, name);
  writeOctal(header, 100, 8, mode);
  writeOctal(header, 108, 8, 0);
  writeOctal(header, 116, 8, 0);
  writeSize(header, size);
  writeOctal(header, 136, 12, Math.floor(mtime));
  header[156] = 0x30; // '0': regular file
  writeString(header, 257, 6, 'ustar\0');
  writeString(header, 263, 2, '00');
  sealHeader(header);
  return header;
}

/** A tar stream of every regular file directly in `dir`, in name order. */
export function packDirectory(dir: string): Readable {
  async function* generate(): AsyncGenerator<Buffer> {
    const names = (await fsp.readdir(dir, { withFileTypes: true })).filter((e) => e.isFile()).map((e) => e.name).sort();
    for (const name of names) {
      const file = path.join(dir, name);
      const st = await fsp.stat(file);
      yield tarHeader(name, st.size, st.mtimeMs / 1000);
      let written = 0;
      for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
        written += (chunk as Buffer).length;
        yield chunk as Buffer;
      }
      if (written !== st.size) throw new Error(`tar: ${name} changed size while being packed (${st.size} → ${written} bytes)`);
      if (written % BLOCK) yield Buffer.alloc(BLOCK - (written % BLOCK));
    }
    yield Buffer.alloc(BLOCK * 2);
  }
  return Readable.from(generate(), { objectMode: false, highWaterMark: 1 << 20 });
}

function readString(header: Buffer, offset: number, length: number): string {
  const field = header.subarray(offset, offset + length);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? length : end).toString('utf8');
}

/** A header's size field: octal, or GNU base-256 for 8 GiB and more. */
export function readSize(header: Buffer): number {
  if (header[124] & 0x80) {
    let v = 0n;
    for (let i = 125; i < 136; i++) v = (v << 8n) | BigInt(header[i]);
    return Number(v);
  }
  return parseInt(readString(header, 124, 12).trim() || '0', 8);
}

/** A header's entry name: the name field, after the ustar prefix field where the header has one. */
export function entryName(header: Buffer): string {
  const name = readString(header, 0, 100);
  const prefix = header.toString('latin1', 257, 263).startsWith('ustar') ? readString(header, 345, 155) : '';
  return prefix ? `${prefix}/${name}` : name;
}

/**
 * Splits a tar stream, fed in chunks of any size, into its entries' headers, contents and
 * padding, up to the end-of-archive block; what follows that block is ignored. It passes on
 * slices of the chunks it is fed (and each header as a buffer of its own); it keeps nothing.
 */
export class TarSplitter {
  private header = Buffer.alloc(0);
  private remaining = 0;
  private padding = 0;
  ended = false;
  entries = 0;

  constructor(
    private readonly on: {
      header(header: Buffer, size: number): void;
      content(part: Buffer): void;
      /** After an entry's last byte of content (at once for an empty one). */
      entryEnd?(): void;
      padding?(part: Buffer): void;
    },
  ) {}

  /** The stream so far stops inside a header, an entry or its padding. */
  get partial(): boolean {
    return this.header.length > 0 || this.remaining > 0 || this.padding > 0;
  }

  write(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length && !this.ended) {
      if (this.remaining > 0) {
        const n = Math.min(this.remaining, chunk.length - at);
        this.on.content(chunk.subarray(at, at + n));
        this.remaining -= n;
        at += n;
        if (this.remaining === 0) this.on.entryEnd?.();
        continue;
      }
      if (this.padding > 0) {
        const n = Math.min(this.padding, chunk.length - at);
        this.on.padding?.(chunk.subarray(at, at + n));
        this.padding -= n;
        at += n;
        continue;
      }
      const need = BLOCK - this.header.length;
      this.header = Buffer.concat([this.header, chunk.subarray(at, at + need)]);
      at += Math.min(need, chunk.length - at);
      if (this.header.length < BLOCK) return;
      const header = this.header;
      this.header = Buffer.alloc(0);
      if (header.every((b) => b === 0)) {
        this.ended = true;
        return;
      }
      const size = readSize(header);
      if (!Number.isSafeInteger(size) || size < 0) throw new Error('a tar header\'s size field does not read');
      this.entries++;
      this.remaining = size;
      this.padding = (BLOCK - (size % BLOCK)) % BLOCK;
      this.on.header(header, size);
      if (size === 0) this.on.entryEnd?.();
    }
  }
}

/** Unpacks a tar stream of plain files into `dir` (which must exist). */
export async function unpackTar(raw: Readable, dir: string): Promise<{ files: number; bytes: number }> {
  let pending: Buffer = Buffer.alloc(0);
  let out: ReturnType<typeof createWriteStream> | undefined;
  let remaining = 0;
  let padding = 0;
  let files = 0;
  let bytes = 0;
  let ended = false;
  let offset = 0;

  const closeFile = async () => {
    if (!out) return;
    const file = out;
    out = undefined;
    file.end();
    await once(file, 'close');
  };

  try {
    // A raw dump that can be drawn is decoded into two reused buffers (piecesOf): each write of a
    // piece completes, and a header split across pieces is copied out, before its buffer returns.
    for await (const chunk of piecesOf(raw)) {
      pending = pending.length ? Buffer.concat([pending, chunk]) : chunk;
      for (;;) {
        if (ended) {
          pending = Buffer.alloc(0);
          break;
        }
        if (remaining > 0) {
          if (pending.length === 0) break;
          const part = pending.subarray(0, Math.min(remaining, pending.length));
          pending = pending.subarray(part.length);
          remaining -= part.length;
          offset += part.length;
          bytes += part.length;
          await new Promise<void>((resolve, reject) => out!.write(part, (err) => (err ? reject(err) : resolve())));
          if (remaining === 0) await closeFile();
          continue;
        }
        if (padding > 0) {
          const skip = Math.min(padding, pending.length);
          pending = pending.subarray(skip);
          padding -= skip;
          offset += skip;
          if (padding > 0) break;
          continue;
        }
        if (pending.length < BLOCK) break;
        const header = pending.subarray(0, BLOCK);
        pending = pending.subarray(BLOCK);
        offset += BLOCK;
        if (header.every((b) => b === 0)) {
          ended = true;
          continue;
        }
        const stored = parseInt(readString(header, 148, 8).trim(), 8);
        if (stored !== checksum(header)) throw new IntegrityError(`tar: the header at bytes ${offset - BLOCK}-${offset - 1} of the archive is damaged (checksum mismatch)`);
        const prefix = readString(header, 345, 155);
        const name = (prefix ? prefix + '/' : '') + readString(header, 0, 100);
        const type = String.fromCharCode(header[156] || 0x30);
        if (type !== '0') throw new IntegrityError(`tar: entry "${name}" is not a plain file (type ${type})`);
        if (name !== path.basename(name) || name === '..' || name === '.' || name === '') {
          throw new IntegrityError(`tar: entry "${name}" is not a plain file name`);
        }
        const size = readSize(header);
        out = createWriteStream(path.join(dir, name), { flags: 'wx', mode: 0o600 });
        files++;
        remaining = size;
        padding = size % BLOCK ? BLOCK - (size % BLOCK) : 0;
        if (size === 0) await closeFile();
      }
    }
  } finally {
    await closeFile().catch(() => {});
  }
  if (!ended || remaining > 0 || padding > 0) throw new IntegrityError(`tar: the archive is truncated at byte ${offset}`);
  return { files, bytes };
}
