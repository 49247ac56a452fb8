// Tools started through the launcher of a long-running dbstash (src/engines/launcher.ts) behave
// as tools spawned directly: every byte of their output arrives (also what they write at once),
// input fed to them arrives whole, exit codes, signals, spawn errors and stderr are reported,
// an abort kills them, and they are children of the launcher, which dies with dbstash and takes
// its tools with it.

import { describe, it, before } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { feed } from '../../src/engines/feed.js';
import { launcherPid, toolLauncherWanted, useToolLauncher } from '../../src/engines/launcher.js';
import { childGuard, runTool, startTool } from '../../src/engines/process.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function collect(stream: Readable): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c as Buffer);
  return Buffer.concat(parts);
}

function parentOf(pid: number): number {
  return Number(/^PPid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

/** Whether a process runs (a zombie, dead and not yet reaped by its new parent, does not). */
function alive(pid: number): boolean {
  try {
    return !/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'));
  } catch {
    return false;
  }
}

before(() => {
  delete process.env.DBSTASH_NO_LAUNCHER;
  useToolLauncher();
  assert.ok(toolLauncherWanted());
});

describe('tools started through the launcher', () => {
  it('every byte of a tool\'s output arrives, also what it writes at once, and it is the launcher\'s child', async () => {
    const first = await runTool('echo', ['at once']);
    assert.equal(first.code, 0);
    assert.equal(first.stdout, 'at once\n');
    const tool = startTool('sh', ['-c', 'yes "row of a dump" | head -c 5000000']);
    assert.ok(launcherPid(), 'the launcher runs');
    const out = collect(tool.stdout);
    const exit = await tool.exit;
    assert.equal(exit.code, 0);
    const bytes = await out;
    assert.equal(bytes.length, 5_000_000);
    assert.equal(sha(bytes), sha(Buffer.from('row of a dump\n'.repeat(Math.ceil(5_000_000 / 14))).subarray(0, 5_000_000)));
    const sleeper = startTool('sleep', ['5']);
    await sleep(300);
    const pid = (sleeper.child as unknown as { pid: number }).pid;
    assert.equal(parentOf(pid), launcherPid(), 'started by the launcher, not by dbstash');
    sleeper.child.kill('SIGTERM');
    assert.equal((await sleeper.exit).signal, 'SIGTERM');
  });

  it('input fed to a tool arrives whole; exit codes, stderr and spawn errors are reported', async () => {
    const data = Buffer.alloc(3_000_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 2654435761) >>> 24;
    const cat = startTool('sh', ['-c', 'cat | sha256sum'], { stdin: 'pipe' });
    const out = collect(cat.stdout);
    await feed(Readable.from([data.subarray(0, 1_000_000), data.subarray(1_000_000)]), [cat.child.stdin]);
    assert.equal((await cat.exit).code, 0);
    assert.equal((await out).toString().split(' ')[0], sha(data));
    // A writer that reuses one buffer once each write is called back (as the restore's feed does)
    // sends every version of it, in order.
    const reused = startTool('sh', ['-c', 'cat | sha256sum'], { stdin: 'pipe' });
    const reusedOut = collect(reused.stdout);
    const buffer = Buffer.alloc(1 << 20);
    const expected = createHash('sha256');
    for (let i = 0; i < 40; i++) {
      buffer.fill(i);
      expected.update(buffer);
      await new Promise<void>((resolve, reject) => reused.child.stdin.write(buffer, (err) => (err ? reject(err) : resolve())));
    }
    reused.child.stdin.end();
    assert.equal((await reused.exit).code, 0);
    assert.equal((await reusedOut).toString().split(' ')[0], expected.digest('hex'));
    const failing = await runTool('sh', ['-c', 'echo "what went wrong" >&2; exit 3']);
    assert.equal(failing.code, 3);
    assert.match(failing.stderr, /what went wrong/);
    const missing = await runTool('/nonexistent/dbstash-tool', []);
    assert.equal(missing.code, 127);
    assert.match(missing.stderr, /No such file|ENOENT/);
  });

  it('a reader that stops early closes the pipe: the tool sees it and its exit is reported', { timeout: 20_000 }, async () => {
    const tool = startTool('sh', ['-c', 'yes "more than anyone reads" | head -c 200000000']);
    await new Promise((resolve) => tool.stdout.once('data', resolve));
    tool.stdout.destroy();
    const exit = await tool.exit;
    assert.ok(exit.code !== 0 || exit.signal !== null, `the tool noticed: ${JSON.stringify(exit)}`);
  });

  it('an abort kills the tool; the launcher dies with dbstash and takes its tools along', { skip: !childGuard().active && 'setpriv --pdeathsig is not available' }, async () => {
    const controller = new AbortController();
    const aborted = startTool('sleep', ['30'], { signal: controller.signal });
    setTimeout(() => controller.abort(), 200);
    assert.equal((await aborted.exit).signal, 'SIGTERM');
    const orphan = startTool('sleep', ['30']);
    await sleep(300);
    const toolPid = (orphan.child as unknown as { pid: number }).pid;
    const launcher = launcherPid()!;
    // The launcher killed as dbstash would be: its death signal reaches the tool.
    process.kill(launcher, 'SIGKILL');
    const exit = await orphan.exit;
    assert.equal(exit.signal, 'SIGKILL');
    for (let i = 0; i < 50 && alive(toolPid); i++) await sleep(20);
    assert.ok(!alive(toolPid), 'the tool died with the launcher');
    // The next tool starts a new launcher.
    const again = await runTool('echo', ['again']);
    assert.equal(again.stdout, 'again\n');
    assert.notEqual(launcherPid(), launcher);
  });
});
