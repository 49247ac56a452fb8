// Scratch names in the temp dir and the leftovers of dead runs: which names count as whose, which
// processes count as alive (a reused pid does not), and that removal spares what a live process
// still has open. Real processes stand in for the runs.

import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { findLeftovers, makeScratchDir, parseScratchName, removeLeftovers, scratchFile, scratchName } from '../../src/core/scratch.js';
import { tempDir } from '../harness/tmp.js';
import { isAlive, waitFor } from '../postgres/helpers.js';

const ours = parseScratchName(scratchName('probe'))!;

/** A name as another run (pid, start time, host) would have made it. */
function nameOf(kind: string, pid: number, start: number, host = ours.host, ext = ''): string {
  return `.dbstash-${kind}_${pid}_${start.toString(36)}_${host}_0123abcd${ext}`;
}

function startOf(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
}

/** A process that ran and exited: its pid is (for now) free. */
async function deadPid(): Promise<number> {
  const child = spawn('true');
  await new Promise((r) => child.once('exit', r));
  return child.pid!;
}

const sleepers: number[] = [];
after(() => sleepers.forEach((pid) => isAlive(pid) && process.kill(pid, 'SIGKILL')));

function sleeper(cwd?: string): number {
  const child = spawn('sleep', ['60'], { cwd, stdio: 'ignore' });
  sleepers.push(child.pid!);
  return child.pid!;
}

describe('scratch names', () => {
  it('carry this process: pid, start time and host; kind and extension round-trip', () => {
    const name = scratchName('sqlite', '.sqlite');
    assert.match(name, /^\.dbstash-sqlite_\d+_[0-9a-z]+_[A-Za-z0-9.-]+_[0-9a-f]{8}\.sqlite$/);
    const owner = parseScratchName(name)!;
    assert.equal(owner.kind, 'sqlite');
    assert.equal(owner.pid, process.pid);
    assert.equal(owner.start, startOf(process.pid));
    assert.deepEqual(parseScratchName(name + '-wal'), owner, "SQLite's side files belong to the same owner");
    assert.equal(parseScratchName('.dbstash-pgdir-a1b2c3'), undefined, 'names without an owner are not ours to judge');
    assert.equal(parseScratchName('app.db'), undefined);
  });

  it('directories are created 0700', async () => {
    const dir = await makeScratchDir(tempDir('dbstash-scratch-mode'), 'pgdir');
    assert.equal(statSync(dir).mode & 0o777, 0o700);
    assert.equal(path.dirname(scratchFile('/x', 'sqlite', '.sqlite')), '/x');
  });
});

describe('leftovers', () => {
  it('are what dead runs of this host left: not a live run, not this run, not another host', async () => {
    const dir = tempDir('dbstash-leftovers');
    const dead = await deadPid();
    const live = sleeper();
    const deadDir = path.join(dir, nameOf('pgdir', dead, 12345));
    mkdirSync(deadDir);
    writeFileSync(path.join(deadDir, 'toc.dat'), Buffer.alloc(3000));
    mkdirSync(path.join(deadDir, 'sub'));
    writeFileSync(path.join(deadDir, 'sub', '1.dat'), Buffer.alloc(1000));
    writeFileSync(path.join(dir, nameOf('sqlite', dead, 12345, ours.host, '.sqlite')), Buffer.alloc(4096));
    writeFileSync(path.join(dir, nameOf('sqlite', dead, 12345, ours.host, '.sqlite') + '-wal'), Buffer.alloc(10));
    // The live process's pid with its real start time: its own; with another start time: a
    // process that got the pid of a dead run later (every run is pid 1 in a container).
    mkdirSync(path.join(dir, nameOf('pgdir', live, startOf(live))));
    mkdirSync(path.join(dir, nameOf('pgrestore', live, startOf(live) + 1)));
    mkdirSync(path.join(dir, nameOf('pgdir', dead, 12345, 'another-host')));
    const mine = await makeScratchDir(dir, 'pgdir');
    writeFileSync(path.join(dir, 'unrelated.txt'), 'x');

    const found = await findLeftovers(dir);
    assert.deepEqual(
      found.map((l) => [path.basename(l.path), l.kind, l.pid, l.size, l.directory]),
      [
        [nameOf('pgdir', dead, 12345), 'pgdir', dead, 4000, true],
        [nameOf('pgrestore', live, startOf(live) + 1), 'pgrestore', live, 0, true],
        [nameOf('sqlite', dead, 12345, ours.host, '.sqlite'), 'sqlite', dead, 4096, false],
        [nameOf('sqlite', dead, 12345, ours.host, '.sqlite') + '-wal', 'sqlite', dead, 10, false],
      ],
    );
    assert.ok(found.every((l) => l.host === ours.host));
    assert.equal(found.some((l) => l.path === mine), false);
    assert.deepEqual(await findLeftovers(path.join(dir, 'missing')), []);
  });

  it('removal takes the dead runs\' leftovers and spares one a live process still works in', async () => {
    const dir = tempDir('dbstash-leftovers-rm');
    const dead = await deadPid();
    const busy = path.join(dir, nameOf('pgdrill', dead, 777));
    const idle = path.join(dir, nameOf('pgdir', dead, 777));
    mkdirSync(path.join(busy, 'data'), { recursive: true });
    mkdirSync(idle);
    writeFileSync(path.join(idle, '3362.dat'), Buffer.alloc(2048));
    // A server the dead run started, still running in its data directory.
    const server = sleeper(path.join(busy, 'data'));
    await waitFor('the process to start', () => isAlive(server));

    const { removed, kept } = await removeLeftovers(dir);
    assert.deepEqual(removed.map((l) => [l.path, l.size]), [[idle, 2048]]);
    assert.equal(kept.length, 1);
    assert.equal(kept[0].path, busy);
    assert.match(kept[0].reason, new RegExp(`^still open in pid ${server} \\(sleep\\)$`));
    assert.throws(() => statSync(idle), /ENOENT/);
    assert.ok(statSync(busy).isDirectory());

    process.kill(server, 'SIGKILL');
    await waitFor('the process to end', () => !isAlive(server));
    assert.deepEqual((await removeLeftovers(dir)).removed.map((l) => l.path), [busy]);
    assert.deepEqual(await findLeftovers(dir), []);
  });
});
