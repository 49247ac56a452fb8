// startTool's larger output buffer (coreutils stdbuf) must be invisible to its callers: the same
// bytes, the tool's own exit status and signal, and a child pid that is the tool itself. And the
// tools die with the process that started them, also when it is killed with SIGKILL: a real
// parent process starts real tools and is killed, and /proc tells what is left.

import { strict as assert } from 'node:assert';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { BULK_OUTPUT_MIN_BYTES, bulkOutputFor, childGuard, lookupUser, startTool, type RunAs, type RunningTool } from '../../src/engines/process.js';
import { isAlive, waitFor } from '../postgres/helpers.js';
import { tempDir } from '../harness/tmp.js';

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
    if (!process.env.DBSTASH_NO_STDBUF) assert.ok(bulkTool.child.spawnargs.some((a) => a.endsWith('/stdbuf')), bulkTool.child.spawnargs.join(' '));
    const bulk = await drain(bulkTool);
    assert.equal(bulk.bytes, plain.bytes);
    assert.equal(bulk.sha, plain.sha);
    assert.ok(bulk.bytes > 1_000_000);
  });

  it('is asked for large databases and those of unknown size only', () => {
    // A small dump stalls on the 1 MiB writes into a 64 KiB pipe (see BULK_OUTPUT_MIN_BYTES).
    assert.equal(BULK_OUTPUT_MIN_BYTES, 64 * 2 ** 20);
    assert.equal(bulkOutputFor(0), false);
    assert.equal(bulkOutputFor(7_500_000), false);
    assert.equal(bulkOutputFor(BULK_OUTPUT_MIN_BYTES - 1), false);
    assert.equal(bulkOutputFor(BULK_OUTPUT_MIN_BYTES), true);
    assert.equal(bulkOutputFor(2 ** 40), true);
    assert.equal(bulkOutputFor(undefined), true);
    assert.equal(bulkOutputFor(Number.NaN), true);
    const small = startTool('true', [], { bulkOutput: bulkOutputFor(1024) });
    assert.ok(!small.child.spawnargs.some((a) => a.endsWith('/stdbuf')), small.child.spawnargs.join(' '));
    return small.exit.then((exit) => assert.equal(exit.code, 0));
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

const PROCESS_JS = fileURLToPath(new URL('../../src/engines/process.js', import.meta.url));

/** A node process that starts one tool with startTool and passes the tool's output on. */
const PARENT = `
const { startTool } = await import(process.argv[1]);
const tool = startTool(process.argv[2], JSON.parse(process.argv[3]), JSON.parse(process.argv[4]));
process.stdout.write('tool ' + tool.child.pid + '\\n');
tool.stdout.setEncoding('utf8').on('data', (d) => process.stdout.write(d));
setInterval(() => {}, 1000);`;

interface Parent {
  child: ChildProcessWithoutNullStreams;
  /** Waits for `n` lines of output (the first is "tool <pid>"). */
  lines(n: number): Promise<string[]>;
}

const leftRunning: number[] = [];
after(() => leftRunning.forEach((pid) => isAlive(pid) && process.kill(pid, 'SIGKILL')));

function startParent(bin: string, args: string[], opts: object = {}, env: NodeJS.ProcessEnv = process.env): Parent {
  const child = spawn(process.execPath, ['--input-type=module', '-e', PARENT, PROCESS_JS, bin, JSON.stringify(args), JSON.stringify(opts)], { env });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.resume();
  return {
    child,
    lines: (n) => waitFor(`${n} lines from the parent`, () => {
      const lines = out.split('\n').filter(Boolean);
      return lines.length >= n && lines.slice(0, n);
    }),
  };
}

/** Kills the parent with SIGKILL and returns which of `pids` are still alive one second later. */
async function survivorsOfKill(parent: Parent, pids: number[]): Promise<number[]> {
  leftRunning.push(...pids);
  pids.forEach((pid) => assert.ok(isAlive(pid), `pid ${pid} runs before the kill`));
  const exited = new Promise((r) => parent.child.once('exit', r));
  parent.child.kill('SIGKILL');
  await exited;
  await waitFor('the tools to die', () => pids.every((pid) => !isAlive(pid)), 1000).catch(() => undefined);
  return pids.filter(isAlive);
}

const WORKERS = 'sleep 60 & echo $!; sleep 60 & echo $!; wait';

/**
 * childGuard() in a fresh process, found by the blocking probe, by the background one
 * (probeChildGuard, then settledChildGuard), or asked at once while the background one runs.
 */
async function guardIn(way: 'blocking' | 'background' | 'both', env: NodeJS.ProcessEnv): Promise<unknown> {
  const script = `
const m = await import(process.argv[1]);
const way = process.argv[2];
if (way !== 'blocking') m.probeChildGuard();
const guard = way === 'background' ? await m.settledChildGuard() : m.childGuard();
process.stdout.write(JSON.stringify(guard));`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, PROCESS_JS, way], { env });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.resume();
  const code = await new Promise((resolve) => child.once('exit', resolve));
  assert.equal(code, 0, `the ${way} probe's process exited with ${String(code)}`);
  return JSON.parse(out);
}

describe('children die with dbstash', () => {
  it('setpriv with --pdeathsig is in use here (util-linux is part of every Debian system)', () => {
    if (process.env.DBSTASH_NO_SETPRIV) return;
    assert.deepEqual(childGuard(), { active: true });
    const tool = startTool('true', []);
    assert.match(tool.child.spawnfile, /\/setpriv$/);
    assert.deepEqual(tool.child.spawnargs.slice(1), ['--pdeathsig', 'KILL', '--', 'true']);
  });

  it('the probe run in the background while a command loads finds what the blocking probe finds', async () => {
    // A setpriv without --pdeathsig (util-linux before 2.33) refuses the probe's arguments.
    const old = tempDir('dbstash-old-setpriv');
    writeFileSync(path.join(old, 'setpriv'), '#!/bin/sh\necho "setpriv: unrecognized option \'--pdeathsig\'" >&2\nexit 1\n', { mode: 0o755 });
    const environments: [string, NodeJS.ProcessEnv][] = [
      ['setpriv', process.env],
      ['an old setpriv', { ...process.env, PATH: `${old}:${process.env.PATH}` }],
      ['DBSTASH_NO_SETPRIV', { ...process.env, DBSTASH_NO_SETPRIV: '1' }],
    ];
    for (const [what, env] of environments) {
      const found: Record<string, unknown> = {};
      for (const way of ['blocking', 'background', 'both'] as const) found[way] = await guardIn(way, env);
      if (what === 'setpriv' && !process.env.DBSTASH_NO_SETPRIV) assert.deepEqual(found.blocking, { active: true });
      if (what === 'an old setpriv') assert.match(String((found.blocking as { reason: string }).reason), new RegExp(`^${old}/setpriv has no --pdeathsig`));
      if (what === 'DBSTASH_NO_SETPRIV') assert.deepEqual(found.blocking, { active: false, reason: 'DBSTASH_NO_SETPRIV is set' });
      assert.deepEqual(found.background, found.blocking, `${what}: the background probe`);
      assert.deepEqual(found.both, found.blocking, `${what}: asked while the background probe runs`);
    }
  });

  it('a tool dies within a second when its parent is killed with SIGKILL; without setpriv it lives on', async () => {
    const guarded = startParent('sleep', ['60']);
    const [line] = await guarded.lines(1);
    assert.deepEqual(await survivorsOfKill(guarded, [Number(line.split(' ')[1])]), []);

    const plain = startParent('sleep', ['60'], {}, { ...process.env, DBSTASH_NO_SETPRIV: '1' });
    const [plainLine] = await plain.lines(1);
    const pid = Number(plainLine.split(' ')[1]);
    assert.deepEqual(await survivorsOfKill(plain, [pid]), [pid], 'the check sees a tool that outlives its parent');
  });

  it("a tool's workers die with it: its process group is killed when the parent is killed", async () => {
    const grouped = startParent('sh', ['-c', WORKERS], { workers: true });
    const [leader, ...workers] = (await grouped.lines(3)).map((l) => Number(l.replace(/^tool /, '')));
    assert.deepEqual(await survivorsOfKill(grouped, [leader, ...workers]), []);

    // The death signal alone reaches the tool, not the processes it started.
    const ungrouped = startParent('sh', ['-c', WORKERS]);
    const [leader2, ...workers2] = (await ungrouped.lines(3)).map((l) => Number(l.replace(/^tool /, '')));
    assert.deepEqual(await survivorsOfKill(ungrouped, [leader2, ...workers2]), workers2);
  });

  it('workers a tool leaves behind when it exits are killed', async () => {
    const tool = startTool('sh', ['-c', 'sleep 60 & echo $!'], { workers: true });
    let out = '';
    tool.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
    const exit = await tool.exit;
    assert.equal(exit.code, 0);
    const worker = Number(out.trim());
    leftRunning.push(worker);
    await waitFor(`worker ${worker} to be killed`, () => !isAlive(worker), 1000);
  });

  it('a tool run as another OS user (drill servers under root) still dies with its parent', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root');
    const runAs = (await lookupUser('postgres')) as RunAs;
    assert.ok(runAs, 'the postgres OS user exists where the tests run');
    const parent = startParent('sh', ['-c', 'id -u; exec sleep 60'], { runAs });
    const [line, uid] = await parent.lines(2);
    assert.equal(Number(uid), runAs.uid);
    assert.deepEqual(await survivorsOfKill(parent, [Number(line.split(' ')[1])]), []);
  });
});
