// startTool's larger output buffer (coreutils stdbuf) must be invisible to its callers: the same
// bytes, the tool's own exit status and signal, and a child pid that is the tool itself.

import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { startTool, type RunningTool } from '../../src/engines/process.js';

async function drain(tool: RunningTool): Promise<{ sha: string; bytes: number; chunks: number }> {
  const hash = createHash('sha256');
  let bytes = 0;
  let chunks = 0;
  for await (const chunk of tool.stdout as AsyncIterable<Buffer>) {
    hash.update(chunk);
    bytes += chunk.length;
    chunks++;
  }
  return { sha: hash.digest('hex'), bytes, chunks };
}

describe('startTool with bulk output', () => {
  it('passes the same bytes through as the plain tool', async () => {
    const plain = await drain(startTool('seq', ['1', '300000']));
    const bulkTool = startTool('seq', ['1', '300000'], { bulkOutput: true });
    // coreutils is part of every Debian system: the buffer must really be in place there.
    if (!process.env.DBSTASH_NO_STDBUF) assert.match(bulkTool.child.spawnfile, /\/stdbuf$/);
    const bulk = await drain(bulkTool);
    assert.equal(bulk.bytes, plain.bytes);
    assert.equal(bulk.sha, plain.sha);
    assert.ok(bulk.bytes > 1_000_000);
  });

  it("reports the tool's own exit code and stderr", async () => {
    const tool = startTool('sh', ['-c', 'echo out; echo "went wrong" >&2; exit 3'], { bulkOutput: true });
    const out = await drain(tool);
    const exit = await tool.exit;
    assert.equal(exit.code, 3);
    assert.match(exit.stderr, /went wrong/);
    assert.equal(out.bytes, 4);
  });

  it('runs the tool itself under the child pid, so signals reach it', async () => {
    const tool = startTool('sleep', ['30'], { bulkOutput: true });
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(readFileSync(`/proc/${tool.child.pid}/comm`, 'utf8').trim(), 'sleep');
    tool.child.kill('SIGKILL');
    const exit = await tool.exit;
    assert.equal(exit.signal, 'SIGKILL');
  });
});
