// What interrupted and killed runs leave behind, against real components: a PostgreSQL cluster
// (pgbench scale 5) reached through a throttled link so that dumps run for seconds, real pg_dump
// and drill servers, real SQLite files written and held open by the sqlite3 CLI.
//
// - kill -9 of dbstash: pg_dump and its --jobs workers, and a drill's postmaster, die with it; the
//   next backup removes the directory dump / data directory the dead run left in --temp-dir.
// - Two SIGTERMs a few ms apart (GNU timeout signals the command, then its process group): one
//   interruption, cleaned up; a second Ctrl-C later, while the clean-up hangs, exits at once and
//   still releases what it holds.
// - SQLite in WAL mode: backup, dry-run and verify leave no -wal/-shm; a database someone else left
//   -wal/-shm beside is swapped safely; one that another process holds open is still seen as such.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chmodSync, existsSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import Database from 'better-sqlite3';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { runCli, spawnCli, type CliResult } from '../harness/run.js';
import { atExit, tempDir } from '../harness/tmp.js';
import { childrenOf, cmdlineOf, filesUnder, isAlive, PG_BIN, sh, shellQuote, waitFor } from '../postgres/helpers.js';
import { loadEngine } from '../../src/engines/index.js';
import { lockHolders } from '../../src/engines/sqlite/restore.js';
import { parseTarget } from '../../src/engines/target.js';

let server: PgServer;
let slow: Throttle;

/** A TCP proxy to the server that passes the server's replies on at `bytesPerSecond` per connection. */
interface Throttle {
  url(db: string): string;
  close(): void;
}

function throttle(pg: PgServer, bytesPerSecond: number): Promise<Throttle> {
  const sockets = new Set<net.Socket>();
  const proxy = net.createServer((client) => {
    const upstream = net.connect(pg.port, pg.host);
    sockets.add(client).add(upstream);
    client.pipe(upstream);
    upstream.on('data', (chunk: Buffer) => {
      upstream.pause();
      client.write(chunk);
      setTimeout(() => upstream.resume(), (chunk.length / bytesPerSecond) * 1000);
    });
    for (const [a, b] of [[client, upstream], [upstream, client]]) {
      a.on('error', () => b.destroy());
      a.on('close', () => {
        b.destroy();
        sockets.delete(a);
      });
    }
  });
  return new Promise((resolve) =>
    proxy.listen(0, '127.0.0.1', () => {
      const port = (proxy.address() as net.AddressInfo).port;
      resolve({
        url: (db) => pg.url(db).replace(`:${pg.port}/`, `:${port}/`),
        close: () => {
          proxy.close();
          sockets.forEach((s) => s.destroy());
        },
      });
    }),
  );
}

before(async () => {
  server = await startPostgres();
  await server.createDatabase('bench');
  // ~50 MB of rows, pgbench_accounts most of them: through an 8 MiB/s link a dump takes seconds.
  await sh(`${PG_BIN}/pgbench -i -s 5 -q ${shellQuote(server.url('bench'))}`);
  slow = await throttle(server, 8 << 20);
});
after(async () => {
  slow?.close();
  await server?.stop();
});

interface Running {
  child: ChildProcessWithoutNullStreams;
  pid: number;
  stderr(): string;
  done: Promise<CliResult>;
}

function start(args: string[]): Running {
  const child = spawnCli(args);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<CliResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { child, pid: child.pid!, stderr: () => stderr, done };
}

/** Live processes whose command line or working directory names a path below `dir`. */
function processesUsing(dir: string): string[] {
  const found: string[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name) || !isAlive(Number(name))) continue;
    let cwd = '';
    try {
      cwd = readlinkSync(`/proc/${name}/cwd`);
    } catch {
      /* gone, or not ours to see */
    }
    const args = cmdlineOf(Number(name));
    if (cwd.startsWith(dir + '/') || args.some((a) => a.includes(dir + '/'))) found.push(`${name} ${args.join(' ')}`);
  }
  return found;
}

/** The scratch entries (".dbstash-<kind>_<pid>_…") in a temp dir. */
const scratchIn = (dir: string, kind: string) => readdirSync(dir).filter((f) => f.startsWith(`.dbstash-${kind}_`));

/** Waits for a drill's postmaster under `temp` to accept connections; returns its pid and data dir. */
async function drillServer(temp: string): Promise<{ pid: number; data: string }> {
  return waitFor('the drill server to be ready', () => {
    for (const dir of scratchIn(temp, 'pgdrill')) {
      const data = path.join(temp, dir, 'data');
      try {
        const lines = readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n');
        if (lines[7]?.trim() === 'ready') return { pid: Number(lines[0]), data };
      } catch {
        /* not yet */
      }
    }
    return undefined;
  }, 60_000, 20);
}

describe('kill -9 of dbstash', () => {
  it('mid --jobs 2 backup: pg_dump and its workers are gone within a second; the next backup removes the directory dump', async () => {
    const temp = tempDir('dbstash-chaos-jobs');
    const cli = start(['backup', slow.url('bench'), '--jobs', '2', '--output-dir', tempDir('dbstash-chaos-stash'), '--temp-dir', temp]);
    const leader = await waitFor('pg_dump to start', () => childrenOf(cli.pid, 'pg_dump').find((pid) => cmdlineOf(pid).some((a) => a.startsWith('--snapshot='))));
    const workers = await waitFor('its two workers', () => {
      const found = childrenOf(leader, 'pg_dump');
      return found.length === 2 && found;
    });
    const [work] = await waitFor('table data in the directory dump', () => {
      const dirs = scratchIn(temp, 'pgdir');
      const big = dirs.length === 1 && filesUnder(path.join(temp, dirs[0])).some((f) => f.endsWith('.dat') && statSync(path.join(temp, dirs[0], f)).size > 1 << 20);
      return big && dirs;
    });
    assert.match(work, new RegExp(`^\\.dbstash-pgdir_${cli.pid}_`), 'the directory dump carries the pid of its run');

    cli.child.kill('SIGKILL');
    const res = await cli.done;
    assert.equal(res.signal, 'SIGKILL');
    await waitFor('pg_dump and its workers to die', () => [leader, ...workers].every((pid) => !isAlive(pid)), 1000).catch(() => {
      assert.fail(`still running a second after dbstash was killed: ${[leader, ...workers].filter(isAlive).join(', ')}`);
    });
    assert.deepEqual(processesUsing(temp), [], 'nothing works in the temp dir any more');
    const left = filesUnder(path.join(temp, work)).reduce((sum, f) => sum + statSync(path.join(temp, work, f)).size, 0);
    assert.ok(left > 1 << 20, `the killed run left its directory dump (${left} bytes)`);

    const next = await runCli(['backup', server.url('postgres'), '--output-dir', tempDir('dbstash-chaos-stash'), '--temp-dir', temp]);
    assert.equal(next.code, 0, next.stderr);
    const removed = new RegExp(`^warning: removed ${path.join(temp, work).replace(/[.]/g, '\\.')} \\([\\d.]+ MiB\\), left in the temp dir by dbstash pid ${cli.pid}, which did not finish$`, 'm');
    assert.match(next.stderr, removed);
    assert.deepEqual(readdirSync(temp), []);
  });

  it('mid drill: the scratch server dies with it; status reports its data directory and prune removes it', async () => {
    const stash = tempDir('dbstash-chaos-drill-stash');
    const backup = await runCli(['backup', server.url('bench'), '--output-dir', stash]);
    assert.equal(backup.code, 0, backup.stderr);
    const temp = tempDir('dbstash-chaos-drill');
    chmodSync(temp, 0o711); // the server runs as the postgres OS user when the tests run as root
    const cli = start(['verify', '--latest', '--drill', '--output-dir', stash, '--temp-dir', temp]);
    const postmaster = await drillServer(temp);
    assert.ok(isAlive(postmaster.pid));

    cli.child.kill('SIGKILL');
    await cli.done;
    await waitFor('the postmaster to die', () => !isAlive(postmaster.pid), 1000).catch(() => {
      assert.fail(`postmaster ${postmaster.pid} still runs a second after dbstash was killed`);
    });
    await waitFor('its server processes to end', () => processesUsing(temp).length === 0, 5000).catch(() => {
      assert.fail(`still running in the drill's directory: ${processesUsing(temp).join('; ')}`);
    });
    const [drillDir] = scratchIn(temp, 'pgdrill');
    assert.ok(drillDir, 'the killed run left its data directory');

    const config = path.join(tempDir('dbstash-chaos-drill-config'), 'dbstash.yaml');
    writeFileSync(config, `tempDir: ${temp}\n`);
    const left = path.join(temp, drillDir).replace(/[.]/g, '\\.');
    const status = await runCli(['status', '--output-dir', stash, '--config', config]);
    assert.match(status.stdout, new RegExp(`temp dir ${temp}\\n  warn +1 leftover of dbstash runs that died \\(.+, e\\.g\\. ${left}\\): the next backup or \`dbstash prune\` removes them`), status.stdout);
    const dry = await runCli(['prune', '--output-dir', stash, '--config', config, '--dry-run']);
    assert.match(dry.stdout, new RegExp(`remove  ${left}  .* left by dbstash pid ${cli.pid}, which is gone`), dry.stdout);
    assert.ok(readdirSync(temp).includes(drillDir), 'a dry run removes nothing');
    const prune = await runCli(['prune', '--output-dir', stash, '--config', config, '--json']);
    assert.equal(prune.code, 0, prune.stderr);
    assert.deepEqual(JSON.parse(prune.stdout).tempLeftovers.removed, [path.join(temp, drillDir)]);
    assert.deepEqual(readdirSync(temp), []);
  });
});

describe('a second signal', () => {
  it('two SIGTERMs a few ms apart mid-backup (as timeout sends them): one interruption, cleaned up, exit 143', async () => {
    const stash = tempDir('dbstash-chaos-sigterm');
    const temp = tempDir('dbstash-chaos-sigterm-tmp');
    // Straight to the server: a busy run (streaming and compressing) is where a second signal used
    // to cut the clean-up short.
    const cli = start(['backup', server.url('bench'), '--output-dir', stash, '--temp-dir', temp]);
    const pgDump = await waitFor('pg_dump to start', () => childrenOf(cli.pid, 'pg_dump').find((pid) => cmdlineOf(pid).some((a) => a.startsWith('--snapshot='))));
    await waitFor('bytes in a temporary file and the lock', () => {
      const files = filesUnder(stash);
      return files.some((f) => /\/locks\/[^/]+\.lock$/.test(f)) && files.some((f) => path.basename(f).startsWith('.tmp-') && statSync(path.join(stash, f)).size > 256 << 10);
    });
    cli.child.kill('SIGTERM');
    await sleep(5);
    cli.child.kill('SIGTERM');
    const res = await cli.done;
    assert.equal(res.code, 143, res.stderr);
    assert.deepEqual(filesUnder(stash), [], 'no lock, no .tmp- file, no artifact');
    assert.match(res.stderr, /^error: interrupted by SIGTERM; nothing was published and the lock was released$/m);
    assert.doesNotMatch(res.stderr, /received again/);
    assert.deepEqual(readdirSync(temp), []);
    assert.equal(isAlive(pgDump), false);
  });

  it('a second Ctrl-C later, while the clean-up hangs, exits at once and still releases the lease', async () => {
    const stash = tempDir('dbstash-chaos-force-stash');
    const backup = await runCli(['backup', server.url('bench'), '--output-dir', stash]);
    assert.equal(backup.code, 0, backup.stderr);
    const temp = tempDir('dbstash-chaos-force');
    chmodSync(temp, 0o711);
    const cli = start(['verify', '--latest', '--drill', '--output-dir', stash, '--temp-dir', temp]);
    const postmaster = await drillServer(temp);
    await waitFor('the lease', () => filesUnder(stash).some((f) => f.includes('.lease-')));
    // A drill server that no longer answers: the clean-up (drop the database, stop the server)
    // waits for it.
    process.kill(postmaster.pid, 'SIGSTOP');
    const unstop = atExit(() => {
      try {
        process.kill(postmaster.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
    });
    try {
      cli.child.kill('SIGINT');
      await sleep(1500);
      assert.equal(cli.child.exitCode, null, `the clean-up should still be waiting:\n${cli.stderr()}`);
      assert.ok(filesUnder(stash).some((f) => f.includes('.lease-')), 'the lease is still held');
      const second = Date.now();
      cli.child.kill('SIGINT');
      const res = await cli.done;
      assert.ok(Date.now() - second < 4000, `exited ${Date.now() - second} ms after the second SIGINT`);
      assert.equal(res.code, 130, res.stderr);
      assert.deepEqual(filesUnder(stash).filter((f) => f.includes('.lease-')), [], 'the lease was released');
      assert.match(res.stderr, /^warning: SIGINT received again: exiting now/m);
      // Stopped or not, the server is killed with dbstash.
      await waitFor('the stopped postmaster to be killed', () => !isAlive(postmaster.pid), 1000);
    } finally {
      unstop();
    }
  });
});

describe('sqlite in WAL mode', () => {
  let dir: string;
  let stash: string;
  const sideFiles = (file: string) => readdirSync(path.dirname(file)).filter((f) => f.startsWith(`${path.basename(file)}-`)).sort();
  // Read-write, so that closing leaves no -wal/-shm (a read-only connection would leave them).
  const rows = (file: string) => {
    const db = new Database(file, { fileMustExist: true });
    try {
      return (db.prepare('SELECT count(*) AS n FROM notes').get() as { n: number }).n;
    } finally {
      db.close();
    }
  };
  /** A WAL database written by the sqlite3 CLI, which then exits (and checkpoints, as the last one). */
  const makeWalDb = async (file: string, n: number) => {
    await sh(
      `sqlite3 ${shellQuote(file)} "PRAGMA journal_mode=WAL; CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
       WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ${n}) INSERT INTO notes SELECT i, 'note ' || i FROM n;"`,
    );
    assert.deepEqual(sideFiles(file), [], 'sqlite3 removed its -wal and -shm on close');
  };

  before(() => {
    dir = tempDir('dbstash-chaos-wal');
    stash = path.join(dir, 'stash');
  });

  it('backup, backup --dry-run and verify leave no -wal/-shm; restore over the database swaps it, not in place', async () => {
    const file = path.join(dir, 'app.db');
    await makeWalDb(file, 1000);
    const backup = await runCli(['backup', file, '--output-dir', stash, '--temp-dir', dir, '--json']);
    assert.equal(backup.code, 0, backup.stderr);
    assert.deepEqual(sideFiles(file), [], 'after backup');
    const dry = await runCli(['backup', file, '--output-dir', stash, '--dry-run']);
    assert.equal(dry.code, 0, dry.stderr);
    assert.deepEqual(sideFiles(file), [], 'after backup --dry-run');
    const verify = await runCli(['verify', '--latest', '--drill', '--output-dir', stash, '--temp-dir', dir]);
    assert.equal(verify.code, 0, verify.stderr);
    assert.deepEqual(sideFiles(file), [], 'after verify');
    assert.deepEqual(readdirSync(dir).filter((f) => f.startsWith('.dbstash-')), [], 'no scratch file left either');

    await sh(`sqlite3 ${shellQuote(file)} "DELETE FROM notes WHERE id > 10"`);
    const restore = await runCli(['restore', 'latest', '--to', file, '--output-dir', stash, '--yes', '--json']);
    assert.equal(restore.code, 0, restore.stderr);
    assert.doesNotMatch(restore.stderr, /a swap is impossible/);
    const { plan, record } = JSON.parse(restore.stdout);
    assert.equal(plan.mode, 'swap');
    assert.equal(record.safetyBackup, undefined);
    assert.equal(rows(file), 1000);
    assert.equal(rows(path.join(dir, `${record.keptAs}.db`)), 10);
    assert.deepEqual(sideFiles(file), []);
  });

  it('-wal/-shm left by a reader that has exited are no sign of use: a rename takes them along, restore swaps', async () => {
    const file = path.join(dir, 'stale.db');
    await makeWalDb(file, 5);
    const leaveSideFiles = () => sh(`sqlite3 -readonly ${shellQuote(file)} "SELECT count(*) FROM notes"`);
    await leaveSideFiles();
    assert.deepEqual(sideFiles(file), ['stale.db-shm', 'stale.db-wal'], 'a read-only connection leaves them behind');
    const engine = await loadEngine('sqlite');
    const target = parseTarget(file);
    assert.equal(await engine.swapBlocker!(target), undefined);
    // Left behind, a -wal would be applied to whatever file takes the name next.
    const moved = await engine.renameDatabase!(target, 'stale_moved');
    assert.deepEqual(sideFiles(file), []);
    assert.deepEqual(sideFiles(moved.path!), ['stale_moved.db-shm', 'stale_moved.db-wal']);
    await engine.renameDatabase!(moved, 'stale');
    assert.deepEqual(sideFiles(file), ['stale.db-shm', 'stale.db-wal']);

    const restore = await runCli(['restore', 'latest', '--database', 'app', '--to', file, '--output-dir', stash, '--yes', '--json']);
    assert.equal(restore.code, 0, restore.stderr);
    const { plan, record } = JSON.parse(restore.stdout);
    assert.equal(plan.mode, 'swap', plan.swapBlocker);
    assert.equal(record.safetyBackup, undefined);
    // dbstash's own look at the old database closed it the way SQLite cleans up after itself.
    assert.deepEqual(sideFiles(file), []);
    assert.deepEqual(sideFiles(path.join(dir, `${record.keptAs}.db`)), []);
    assert.equal(rows(file), 1000);
    assert.equal(rows(path.join(dir, `${record.keptAs}.db`)), 5);
  });

  it('held open by another process (sqlite3): still seen as in use, from its lock as well', async () => {
    const file = path.join(dir, 'held.db');
    await makeWalDb(file, 3);
    const holder = spawn('sqlite3', [file], { stdio: ['pipe', 'pipe', 'inherit'] });
    const unregister = atExit(() => holder.kill('SIGKILL'));
    try {
      let out = '';
      holder.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
      holder.stdin.write('SELECT count(*) FROM notes;\n');
      await waitFor('the holder to read', () => out.trim() === '3');
      assert.deepEqual(await lockHolders(file), [`pid ${holder.pid} (sqlite3)`]);
      const res = await runCli(['restore', 'latest', '--database', 'app', '--to', file, '--output-dir', stash, '--dry-run', '--json']);
      assert.equal(res.code, 0, res.stderr);
      const { plan } = JSON.parse(res.stdout);
      assert.equal(plan.mode, 'in-place');
      assert.match(plan.swapBlocker, new RegExp(`is in use by pid ${holder.pid} \\(sqlite3\\)`));
      assert.equal(rows(file), 3);
      assert.ok(existsSync(`${file}-shm`), "the holder's -shm is untouched");
    } finally {
      holder.stdin.end();
      await new Promise((r) => holder.once('exit', r));
      unregister();
    }
    assert.deepEqual(await lockHolders(file), []);
  });
});
