// Could Node's built-in zstd (node:zlib, Node ≥ 22.15) replace zstd-napi in the compression stage?
// Compresses the same ~200 MB of dump-like text (COPY lines of ids, names, timestamps, JSON and
// hex, built once in memory from a fixed seed) through:
//   - zstd-napi, exactly as dbstash's zstd stage builds it (src/pipeline/compress.ts: level 3, one
//     libzstd worker thread, 2 MiB jobs);
//   - node:zlib's createZstdCompress at level 3, single-threaded (how Node runs it by default);
//   - node:zlib with ZSTD_c_nbWorkers=1, the same threading as dbstash's stage.
// Per variant: wall time and process CPU (median of the rounds, min–max), output size, and
// whether `zstd -dc`'s round trip gives the input back (checked once per variant).
//
//   npx tsc -p tsconfig.json && node dist/bench/zstd-builtin.js [--rounds 3] [--size-mb 200] [--json]

import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import zlib from 'node:zlib';
import { zstdStage } from '../src/pipeline/compress.js';

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '3' }, 'size-mb': { type: 'string', default: '200' }, json: { type: 'boolean', default: false } } });
const rounds = Number(values.rounds);
const sizeMb = Number(values['size-mb']);

/** Deterministic dump-like text: COPY rows of a few typical column kinds. */
function dumpText(bytes: number): Buffer[] {
  let x = 42; // xorshift32
  const rand = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
  const words = ['alpha', 'beta', 'gamma', 'delta', 'north', 'south', 'order', 'paid', 'open', 'shipped', 'Berlin', 'Lisbon', 'Osaka'];
  const chunks: Buffer[] = [];
  let total = 0;
  let id = 0;
  while (total < bytes) {
    const lines: string[] = [];
    for (let i = 0; i < 4096; i++) {
      id++;
      const w = () => words[Math.floor(rand() * words.length)];
      const ts = new Date(1_700_000_000_000 + Math.floor(rand() * 3e10)).toISOString();
      const hex = Math.floor(rand() * 2 ** 52).toString(16).padStart(13, '0');
      lines.push(`${id}\t${w()} ${w()}\t${(rand() * 10000).toFixed(2)}\t${ts}\t{"status": "${w()}", "city": "${w()}", "n": ${Math.floor(rand() * 100)}}\t\\\\x${hex}${hex}`);
    }
    const chunk = Buffer.from(lines.join('\n') + '\n');
    chunks.push(chunk);
    total += chunk.length;
  }
  return chunks;
}

interface Variant {
  id: string;
  make: () => NodeJS.ReadWriteStream;
}

const variants: Variant[] = [
  { id: 'zstd-napi (dbstash stage)', make: () => zstdStage({ level: 3 }).encode() },
  { id: 'node:zlib zstd, 1 thread', make: () => zlib.createZstdCompress({ params: { [zlib.constants.ZSTD_c_compressionLevel]: 3, [zlib.constants.ZSTD_c_checksumFlag]: 1 } }) },
  {
    id: 'node:zlib zstd, nbWorkers=1',
    make: () => zlib.createZstdCompress({ params: { [zlib.constants.ZSTD_c_compressionLevel]: 3, [zlib.constants.ZSTD_c_checksumFlag]: 1, [zlib.constants.ZSTD_c_nbWorkers]: 1 } }),
  },
];

async function once(v: Variant, input: Buffer[], keep: boolean): Promise<{ wallMs: number; cpuMs: number; size: number; out?: Buffer[]; error?: string }> {
  const out: Buffer[] = [];
  let size = 0;
  const sink = new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _enc, done) {
      size += chunk.length;
      if (keep) out.push(chunk);
      done();
    },
  });
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  try {
    await pipeline(Readable.from(input, { objectMode: false }), v.make(), sink);
  } catch (err) {
    return { wallMs: performance.now() - t0, cpuMs: 0, size, error: (err as Error).message };
  }
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { wallMs, cpuMs: (cpu.user + cpu.system) / 1000, size, out: keep ? out : undefined };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

const input = dumpText(sizeMb * 1e6);
const inputBytes = input.reduce((n, b) => n + b.length, 0);
const inputSha = createHash('sha256');
for (const b of input) inputSha.update(b);
const want = inputSha.digest('hex');
process.stderr.write(`input: ${(inputBytes / 1e6).toFixed(1)} MB of dump-like text; node ${process.version}\n`);

const results: Record<string, { wall: number[]; cpu: number[]; size: number; roundTrip: string; error?: string }> = {};
for (const v of variants) results[v.id] = { wall: [], cpu: [], size: 0, roundTrip: 'not checked' };
for (let r = 0; r < rounds; r++) {
  for (const v of variants) {
    const res = results[v.id];
    if (res.error) continue;
    const got = await once(v, input, r === 0);
    if (got.error) {
      res.error = got.error;
      process.stderr.write(`${v.id}: failed: ${got.error}\n`);
      continue;
    }
    res.wall.push(got.wallMs);
    res.cpu.push(got.cpuMs);
    res.size = got.size;
    if (got.out) {
      const back = spawnSync('zstd', ['-dc'], { input: Buffer.concat(got.out), maxBuffer: inputBytes * 2 });
      res.roundTrip = back.status === 0 && createHash('sha256').update(back.stdout).digest('hex') === want ? 'ok' : `FAILED (${back.stderr.toString().trim()})`;
    }
    process.stderr.write(`round ${r + 1} ${v.id}: ${(got.wallMs / 1000).toFixed(2)} s\n`);
  }
}

if (values.json) {
  process.stdout.write(JSON.stringify({ node: process.version, inputBytes, results }, null, 2) + '\n');
} else {
  const base = median(results[variants[0].id].wall);
  console.log(`${'variant'.padEnd(30)} ${'wall (median, min–max)'.padEnd(26)} ${'CPU'.padEnd(8)} ${'vs stage'.padEnd(9)} ${'size'.padEnd(10)} round trip`);
  for (const v of variants) {
    const r = results[v.id];
    if (r.error) {
      console.log(`${v.id.padEnd(30)} failed: ${r.error}`);
      continue;
    }
    const s = (ms: number) => (ms / 1000).toFixed(2);
    console.log(
      `${v.id.padEnd(30)} ${`${s(median(r.wall))} s (${s(Math.min(...r.wall))}–${s(Math.max(...r.wall))})`.padEnd(26)} ${`${s(median(r.cpu))} s`.padEnd(8)} ${`${(median(r.wall) / base).toFixed(2)}×`.padEnd(9)} ${`${(r.size / 1e6).toFixed(1)} MB`.padEnd(10)} ${r.roundTrip}`,
    );
  }
}
