// Throughput of the age stage's payload encryption and decryption on one core (MB/s, 10^6 bytes),
// for `npm run bench`. Rates are bytes per second of this process's CPU time (user + system), so
// they state what one core achieves even on a busy machine where wall time would understate it. The plaintext is streamed from a reused 1 MiB buffer; decryption replays an
// in-memory ciphertext of at most 64 MiB until it has processed as many bytes as encryption did.
// Header costs (X25519 wrapping) are paid once per stream and included.

import { randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { generateX25519Identity, identityToRecipient } from 'age-encryption';
import { ageStage } from '../src/pipeline/age.js';

const MiB = 1 << 20;

function repeat(chunk: Buffer, total: number): Readable {
  let left = total;
  return new Readable({
    highWaterMark: 4 * MiB,
    read() {
      if (left <= 0) return this.push(null);
      const n = Math.min(chunk.length, left);
      left -= n;
      this.push(n === chunk.length ? chunk : chunk.subarray(0, n));
    },
  });
}

function sink(keep?: Buffer[]): Writable {
  return new Writable({
    highWaterMark: 4 * MiB,
    write(chunk: Buffer, _enc, done) {
      keep?.push(chunk);
      done();
    },
  });
}

function cpuSeconds(since: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1e6;
}

export async function measureEncryption(bytes: number): Promise<{ encryptMBps: number; decryptMBps: number }> {
  const identity = await generateX25519Identity();
  const stage = ageStage({ recipients: [await identityToRecipient(identity)] }, { identities: [identity] });
  const block = randomBytes(MiB);

  let start = process.cpuUsage();
  await pipeline(repeat(block, bytes), stage.encode(), sink());
  const encryptSeconds = cpuSeconds(start);

  const sample: Buffer[] = [];
  const sampleBytes = Math.min(bytes, 64 * MiB);
  await pipeline(repeat(block, sampleBytes), stage.encode(), sink(sample));
  let decrypted = 0;
  start = process.cpuUsage();
  while (decrypted < bytes) {
    await pipeline(Readable.from(sample), stage.decode(), sink());
    decrypted += sampleBytes;
  }
  const decryptSeconds = cpuSeconds(start);
  return { encryptMBps: bytes / 1e6 / encryptSeconds, decryptMBps: decrypted / 1e6 / decryptSeconds };
}
