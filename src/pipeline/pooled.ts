// A dump tool's stdout read into a few buffers of our own that are used again, instead of a fresh
// 64 KiB buffer for every read. On this machine, draining a 280 MB MariaDB dump the default way
// cost Node ~0.38 s of CPU (most of it the kernel faulting in fresh pages, and the garbage to
// collect); into reused buffers, ~0.07 s. A dump's bytes pass a few pass-through stages and then
// the zstd encoder, which copies them into libzstd's own buffers: once it has, it hands the chunk
// back (releaseChunk) and the next read goes into it.
//
// Nothing may read a chunk after it was handed back, so a buffer is only used again when exactly
// the chunk object it was read into is released; a chunk that was sliced, joined or kept by some
// stage is simply never released, and its buffer is not used again. While no buffer is free, a
// read goes into a scratch buffer and is copied out into one of its own size.
//
// Node's net.Socket reads into the caller's buffers when created with `onread` (documented); a
// socket that child_process made already exists, so the same fields are set on it here. Where
// this Node does not have them, or DBSTASH_NO_POOLED_READS=1, the stream is returned as it is.

import type { Socket } from 'node:net';
import { Readable } from 'node:stream';

/** Bytes per buffer: a read takes what the pipe holds, up to this. */
const POOLED_CHUNK = 256 * 1024;
/** Buffers per stream (2 MiB): what the stages between the tool and the encoder hold at most. */
const POOL_SIZE = 8;

/** The buffer each pooled chunk was read into, and the pool that buffer goes back to. */
const owners = new WeakMap<Buffer, { slot: Buffer; free: Buffer[] }>();

/**
 * Says that `chunk` has been consumed for good: its bytes may be overwritten by the next read. A
 * chunk that did not come from a pooled reader is left alone.
 */
export function releaseChunk(chunk: Buffer): void {
  const owner = owners.get(chunk);
  if (!owner) return;
  owners.delete(chunk);
  owner.free.push(owner.slot);
}

interface ReadHooks {
  buffer: symbol;
  callback: symbol;
  generator: symbol;
}

let hooks: ReadHooks | null | undefined;

function readHooks(socket: Socket): ReadHooks | null {
  if (hooks !== undefined) return hooks;
  const own = Object.getOwnPropertySymbols(socket);
  const find = (name: string) => own.find((s) => s.description === name);
  const [buffer, callback, generator] = [find('kBuffer'), find('kBufferCb'), find('kBufferGen')];
  hooks = buffer && callback && generator ? { buffer, callback, generator } : null;
  return hooks;
}

type Handle = { useUserBuffer?(buf: Uint8Array): void };

/**
 * `socket` (a child's stdout nobody has read from yet: child_process has asked for its first read,
 * which has not come back within this tick) as a Readable whose chunks are read into
 * reused buffers; undefined where this Node cannot (the caller then reads `socket` itself).
 */
export function pooledReader(socket: Socket): Readable | undefined {
  if (process.env.DBSTASH_NO_POOLED_READS === '1') return undefined;
  const handle = (socket as unknown as { _handle?: Handle })._handle;
  const found = readHooks(socket);
  if (!found || !handle || typeof handle.useUserBuffer !== 'function' || socket.readableFlowing !== null || socket.readableLength > 0) return undefined;
  const fields = socket as unknown as Record<symbol, unknown>;
  if (fields[found.buffer] !== null || fields[found.callback] !== null) return undefined;

  const free: Buffer[] = [];
  let made = 0;
  const scratch = Buffer.allocUnsafeSlow(POOLED_CHUNK);
  const next = (): Buffer => {
    const slot = free.pop();
    if (slot) return slot;
    if (made < POOL_SIZE) {
      made++;
      return Buffer.allocUnsafeSlow(POOLED_CHUNK);
    }
    return scratch;
  };

  const out = new Readable({
    highWaterMark: 1 << 20,
    read() {
      socket.resume();
    },
    destroy(err, done) {
      socket.destroy();
      done(err);
    },
  });
  const first = next();
  fields[found.buffer] = first;
  fields[found.callback] = (n: number, buf: Buffer): boolean => {
    let chunk: Buffer;
    if (buf === scratch) {
      chunk = Buffer.allocUnsafeSlow(n);
      scratch.copy(chunk, 0, 0, n);
    } else {
      chunk = buf.subarray(0, n);
      owners.set(chunk, { slot: buf, free });
    }
    return out.push(chunk);
  };
  fields[found.generator] = next;
  handle.useUserBuffer(first);
  let ended = false;
  socket.on('end', () => {
    ended = true;
    out.push(null);
  });
  socket.on('error', (err) => out.destroy(err));
  // After its end the socket closes while `out` may still hold chunks for its reader.
  socket.on('close', () => {
    if (!ended && !out.destroyed) out.destroy(new Error("the tool's output closed before its end"));
  });
  return out;
}
