// PostgreSQL backups that are interrupted or contended, against a database big enough that the
// dump runs for a few seconds: kill -9 of pg_dump and SIGINT/SIGTERM to dbstash leave nothing that
// looks like a backup, release the lock and leave no pg_dump behind; a second concurrent backup
// fails on the lock; row counts come from the dump's snapshot while a writer keeps inserting.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import pg from 'pg';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { runCli, spawnCli, type CliResult } from '../harness/run.js';
import { assertCleanFailure, childrenOf, cmdlineOf, filesUnder, isAlive, onlyBackup, PG_BIN, sh, shellQuote, waitFor, workDir } from './helpers.js';
import { folderOf } from '../harness/stash.js';

let server: PgServer;
const { work, freshStash } = workDir('dbstash-interrupt');

before(async () => {
  server = await startPostgres();
  await server.createDatabase('big');
  // ~120 MB of rows that zstd cannot shrink to nothing: the dump streams for a few seconds.
  await server.query(
    `CREATE TABLE filler AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS a, repeat(md5((g % 1000)::text), 3) AS b
     FROM generate_series(1, 700000) g`,
    'big',
  );
  await server.query('CREATE TABLE ticks (id bigserial PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())', 'big');
});
after(() => server?.stop());

/** The process's peak resident set (VmHWM) so far, in KiB; 0 once it is gone. */
function peakRssKiB(pid: number): number {
  try {
    return Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

interface Running {
  pid: number;
  send(signal: NodeJS.Signals): void;
  done: Promise<CliResult>;
}

function startBackup(stash: string, extra: string[] = []): Running {
  const child = spawnCli(['backup', server.url('big'), '--output-dir', stash, ...extra]);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<CliResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { pid: child.pid!, send: (s) => child.kill(s), done };
}

/** Waits until pg_dump runs under `cli` and its output has reached a temporary file in the stash. */
async function midStream(cli: Running, stash: string): Promise<number> {
  // The dump itself, not the `pg_dump --version` probe that runs before it.
  const pgDump = await waitFor('pg_dump to start', () => childrenOf(cli.pid, 'pg_dump').find((pid) => cmdlineOf(pid).some((a) => a.startsWith('--snapshot='))));
  await waitFor('bytes in a temporary file', () =>
    filesUnder(stash).some((f) => path.basename(f).startsWith('.tmp-') && statSync(path.join(stash, f)).size > 1 << 20),
  );
  return pgDump;
}

/** After dbstash exited: pg_dump is gone, and so is every server session it opened. */
async function assertNothingRunning(pgDump: number): Promise<void> {
  assert.equal(isAlive(pgDump), false, `pg_dump ${pgDump} is still running`);
  await waitFor('dbstash sessions to end', async () => {
    const r = await server.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'dbstash'`);
    return r.rows[0].n === 0;
  }, 10_000, 50);
}

describe('interrupted backups', () => {
  it('kill -9 of pg_dump mid-stream: exit 5, no artifact, no manifest, no temporary, no lock', async () => {
    const stash = freshStash();
    const cli = startBackup(stash);
    const pgDump = await midStream(cli, stash);
    process.kill(pgDump, 'SIGKILL');
    const res = await cli.done;
    assert.equal(res.code, 5, res.stderr);
    assert.match(res.stderr, /^error: .*pg_dump was killed by SIGKILL/m);
    assert.doesNotMatch(res.stderr, /^\s+at /m);
    assert.deepEqual(filesUnder(stash), []);
    await assertNothingRunning(pgDump);
  });

  for (const [signal, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    it(`${signal} to dbstash mid-backup: exit ${code}, nothing left, lock released, pg_dump stopped`, async () => {
      const stash = freshStash();
      const cli = startBackup(stash);
      const pgDump = await midStream(cli, stash);
      cli.send(signal);
      const res = await cli.done;
      assert.equal(res.code, code, res.stderr);
      assert.match(res.stderr, new RegExp(`^error: interrupted by ${signal}`, 'm'));
      assert.doesNotMatch(res.stderr, /^\s+at /m);
      assert.deepEqual(filesUnder(stash), []);
      await assertNothingRunning(pgDump);
    });
  }

  it('SIGINT while preflight waits for a slow server: exit 130, nothing written, no dump started', async () => {
    // A real server behind a slow link: the first connection (the preflight probe) answers late.
    let connections = 0;
    const proxy = net.createServer((client) => {
      const delay = ++connections === 1 ? 1500 : 0;
      const upstream = net.connect(server.port, server.host);
      upstream.on('data', (d) => setTimeout(() => client.writable && client.write(d), delay));
      client.on('data', (d) => upstream.write(d));
      for (const [a, b] of [[client, upstream], [upstream, client]]) {
        a.on('error', () => b.destroy());
        a.on('close', () => b.destroy());
      }
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    try {
      const port = (proxy.address() as net.AddressInfo).port;
      const stash = freshStash();
      const child = spawnCli(['backup', server.url('big').replace(`:${server.port}/`, `:${port}/`), '--output-dir', stash]);
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      child.stdout.resume();
      const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
      await waitFor('the preflight connection', () => connections > 0);
      child.kill('SIGINT');
      const code = await exited;
      assert.equal(code, 130, stderr);
      assert.match(stderr, /^error: interrupted by SIGINT/m);
      assert.doesNotMatch(stderr, /backing up /);
      assert.deepEqual(filesUnder(stash), []);
      assert.equal(connections, 1, 'no dump connection was opened');
    } finally {
      proxy.close();
    }
  });

  it('a full disk mid-stream: the backup fails with the reason, nothing is left, the lock is released', async () => {
    // A real small file system (tmpfs, 8 MiB); the compressed dump is several times larger.
    const disk = path.join(work, 'small-disk');
    mkdirSync(disk);
    await sh(`mount -t tmpfs -o size=8m dbstash-test ${shellQuote(disk)}`);
    try {
      const config = path.join(work, 'optimistic.yaml');
      writeFileSync(config, 'space:\n  ratio: 0.01\n  margin: 1\n');
      const res = await runCli(['backup', server.url('big'), '--output-dir', disk, '--config', config], { timeoutMs: 120_000 });
      assertCleanFailure(res, 11, /no space left on device/);
      assert.deepEqual(filesUnder(disk), []);
    } finally {
      await sh(`umount ${shellQuote(disk)}`);
    }
  });

  it('two concurrent backups of one database into one stash: the second fails on the lock, the first succeeds', async () => {
    const stash = freshStash();
    const first = startBackup(stash, ['--json']);
    let peakKiB = 0;
    const sampler = setInterval(() => (peakKiB = Math.max(peakKiB, peakRssKiB(first.pid))), 20);
    void first.done.finally(() => clearInterval(sampler));
    await waitFor('the first backup to hold the lock', () => filesUnder(stash).some((f) => /\/locks\/[^/]+\.lock$/.test(f)));
    const second = await runCli(['backup', server.url('big'), '--output-dir', stash]);
    assert.equal(second.code, 6, second.stderr);
    assert.match(second.stderr, new RegExp(`^error: another dbstash is working on database "big" .*pid ${first.pid}`, 'm'));
    assert.match(second.stderr, /^hint: .*--force-unlock/m);
    const res = await first.done;
    assert.equal(res.code, 0, res.stderr);
    const id = JSON.parse(res.stdout).id;
    assert.deepEqual(filesUnder(stash), [`${folderOf(id)}/${id}.dump.zst`, `${folderOf(id)}/${id}.manifest.json`, `${folderOf(id)}/series.json`].sort());
    const raw = JSON.parse(res.stdout).manifest.artifacts[0].rawSize;
    assert.ok(peakKiB > 0 && peakKiB < 150 * 1024, `peak RSS ${Math.round(peakKiB / 1024)} MiB while streaming ${Math.round(raw / 2 ** 20)} MiB`);
  });
});

describe('consistency under a concurrent writer', () => {
  it('manifest row counts equal the rows in the artifact while the source keeps growing', async () => {
    const writer = new pg.Client({ connectionString: server.url('big') });
    await writer.connect();
    let writing = true;
    const loop = (async () => {
      while (writing) await writer.query('INSERT INTO ticks (at) SELECT clock_timestamp() FROM generate_series(1, 20)');
    })();
    try {
      await waitFor('the writer to get going', async () => (await server.query('SELECT count(*)::int AS n FROM ticks', 'big')).rows[0].n >= 200);
      const before = Number((await server.query('SELECT count(*) AS n FROM ticks', 'big')).rows[0].n);
      const stash = freshStash();
      const res = await runCli(['backup', server.url('big'), '--output-dir', stash], { timeoutMs: 120_000 });
      assert.equal(res.code, 0, res.stderr);
      const during = Number((await server.query('SELECT count(*) AS n FROM ticks', 'big')).rows[0].n);
      writing = false;
      await loop;

      const { manifest, artifact } = onlyBackup(stash);
      const counted = manifest.tables.find((t) => t.name === 'ticks')!.rows;
      assert.ok(counted >= before, `${counted} >= ${before}`);
      assert.ok(during > counted, `the source grew during the backup (${during} > ${counted})`);
      assert.equal(manifest.tables.find((t) => t.name === 'filler')!.rows, 700000);

      await server.createDatabase('ticks_restored');
      await sh(`zstd -dc ${shellQuote(artifact)} | ${PG_BIN}/pg_restore -d ticks_restored -t ticks`, {
        PGHOST: server.host,
        PGPORT: String(server.port),
        PGUSER: 'postgres',
        PGPASSWORD: server.password,
      });
      const restored = await server.query('SELECT count(*)::int AS n, max(id)::int AS max FROM ticks', 'ticks_restored');
      assert.equal(restored.rows[0].n, counted);
    } finally {
      writing = false;
      await loop.catch(() => {});
      await writer.end();
    }
  });
});
