// A dump tool's stdout read into reused buffers (src/pipeline/pooled.ts): every byte arrives in
// order through a slow chain that ends in the zstd encoder, whose releases let the next reads go
// into the same buffers; a reader that keeps every chunk and releases none gets every byte too;
// and a chunk released while still held is overwritten (which is why only the encoder releases,
// once libzstd has copied it). Spawned directly and through the launcher of a long-running dbstash.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable, Transform, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { decompress } from 'zstd-napi';
import { useToolLauncher } from '../../src/engines/launcher.js';
import { startTool } from '../../src/engines/process.js';
import { zstdStage } from '../../src/pipeline/compress.js';
import { releaseChunk } from '../../src/pipeline/pooled.js';
import { tempDir } from '../harness/tmp.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** 6 MB that compress a little (random words), written by a child in pieces of random sizes with pauses. */
function writer(dir: string): { script: string; data: Buffer } {
  const words = Array.from({ length: 4096 }, () => randomBytes(6).toString('base64'));
  const parts: string[] = [];
  let length = 0;
  while (length < 6_000_000) {
    const line = `${words[Math.floor(Math.random() * words.length)]} ${randomBytes(12).toString('hex')}\n`;
    parts.push(line);
    length += line.length;
  }
  const data = Buffer.from(parts.join(''));
  const file = path.join(dir, 'data');
  writeFileSync(file, data);
  const script = path.join(dir, 'writer.cjs');
  writeFileSync(
    script,
    `const fs = require('fs'); const data = fs.readFileSync(${JSON.stringify(file)}); let at = 0;
     (async () => { while (at < data.length) { const n = 1 + Math.floor(Math.random() * 400000);
       fs.writeSync(1, data.subarray(at, at + n)); at += n; if (Math.random() < 0.1) await new Promise((r) => setTimeout(r, 2)); } })();`,
  );
  return { script, data };
}

/** Hands each chunk on as it is, now and then after a pause; records which memory each came in. */
class Slow extends Transform {
  readonly memory = new Set<ArrayBufferLike>();
  chunks = 0;
  constructor() {
    super({ highWaterMark: 64 * 1024 });
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.chunks++;
    this.memory.add(chunk.buffer);
    if (Math.random() < 0.05) setTimeout(() => done(null, chunk), 1);
    else done(null, chunk);
  }
}

async function collect(stream: Readable): Promise<Buffer[]> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return parts;
}

function cases(how: string): void {
  it(`${how}: every byte arrives through a slow chain into the zstd encoder, which lets the reads use its buffers again`, async () => {
    const dir = tempDir('dbstash-pooled');
    const { script, data } = writer(dir);
    const tool = startTool(process.execPath, [script], { pooled: true });
    if (how === 'direct') assert.notEqual(tool.stdout, tool.child.stdout, 'the pooled reader is in use on this Node');
    const slow = new Slow();
    const encoder = zstdStage({ level: 3 }).encode();
    const compressed: Buffer[] = [];
    await Promise.all([
      pipeline(tool.stdout, slow, encoder, async (source: AsyncIterable<Buffer>) => {
        for await (const c of source) compressed.push(c);
      }),
      tool.exit.then((e) => assert.equal(e.code, 0)),
    ]);
    const back = decompress(Buffer.concat(compressed));
    assert.equal(back.length, data.length);
    assert.equal(sha(back), sha(data));
    assert.ok(slow.chunks > 40, `${slow.chunks} chunks`);
    // Reads went into the same few buffers again (copies out of the scratch buffer are each new).
    assert.ok(slow.memory.size < slow.chunks / 3, `${slow.memory.size} distinct buffers for ${slow.chunks} chunks`);
  });

  it(`${how}: a reader that keeps every chunk and releases none gets every byte`, async () => {
    const dir = tempDir('dbstash-pooled');
    const { script, data } = writer(dir);
    const tool = startTool(process.execPath, [script], { pooled: true });
    const parts = await collect(tool.stdout);
    assert.equal((await tool.exit).code, 0);
    assert.equal(sha(Buffer.concat(parts)), sha(data));
  });

  it(`${how}: a chunk released while still held is overwritten by a later read`, async () => {
    const dir = tempDir('dbstash-pooled');
    const { script, data } = writer(dir);
    const tool = startTool(process.execPath, [script], { pooled: true });
    const held: Buffer[] = [];
    for await (const c of tool.stdout) {
      held.push(c as Buffer);
      releaseChunk(c as Buffer);
      await sleep(0);
    }
    assert.equal((await tool.exit).code, 0);
    assert.notEqual(sha(Buffer.concat(held)), sha(data), 'released memory was read into again');
  });
}

describe('pooled reads of a tool spawned directly', () => {
  cases('direct');

  it('DBSTASH_NO_POOLED_READS=1 leaves the tool\'s stdout as Node reads it', async () => {
    process.env.DBSTASH_NO_POOLED_READS = '1';
    try {
      const tool = startTool('echo', ['plain'], { pooled: true });
      assert.equal(tool.stdout, tool.child.stdout);
      const parts = await collect(tool.stdout);
      assert.equal(Buffer.concat(parts).toString(), 'plain\n');
      assert.equal((await tool.exit).code, 0);
    } finally {
      delete process.env.DBSTASH_NO_POOLED_READS;
    }
  });
});

describe('pooled reads of a tool started through the launcher', () => {
  it('turns the launcher on', () => useToolLauncher());
  cases('launcher');
});
