// Keeping closed every way found to lose a backup or restore the wrong data, against real
// components: the real CLI, real SQLite files, a throwaway PostgreSQL cluster and MariaDB server,
// and s3rver behind a proxy that loses answers.
//   - a stale lock taken over by many runs at once: every reported success is a backup that verifies;
//   - a run that loses the race for an id never removes the winner's manifest;
//   - S3 answers lost after the write happened: the backup recognises its own lock, artifact and manifest;
//   - a retention rule of 0 never empties a series without --allow-empty, and prune asks on a terminal;
//   - two databases of one name (SQLite files, or PostgreSQL and MariaDB) are two series;
//   - `name:` in the config labels a series and never changes what is dumped;
//   - a restore's safety backup is never latest, never in retention, never an anomaly.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { runBackup } from '../../src/backup/backup.js';
import { manifestKey } from '../../src/core/id.js';
import { parseTarget } from '../../src/engines/target.js';
import { createMemoryStorage } from '../../src/storage/memory.js';
import { getBytes, type Storage } from '../../src/storage/storage.js';
import { startLostAnswerProxy } from '../harness/lost-answer.js';
import { startMariadb, type MariaServer } from '../harness/mariadb.js';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { CLI_PATH, expectExit, runCli, type CliResult } from '../harness/run.js';
import { startS3, type S3Server } from '../harness/s3.js';
import { folderFor, folderOf, writeLock } from '../harness/stash.js';
import { tempDir } from '../harness/tmp.js';
import { bucketKeys, rawClient, s3Env } from '../s3/helpers.js';

/** A SQLite file with `rows` rows in one table `items`. */
function sqliteDb(file: string, rows: number, table = 'items'): string {
  mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.exec(`DROP TABLE IF EXISTS ${table}; CREATE TABLE ${table} (id INTEGER PRIMARY KEY, body TEXT NOT NULL)`);
  const insert = db.prepare(`INSERT INTO ${table} (body) VALUES (?)`);
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(`row ${i} `.padEnd(80, 'x'));
  })();
  db.close();
  return file;
}

function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', '0']);
  return r.pid!;
}

function staleLock(folder: string): void {
  writeLock(folder, { owner: 'ops', pid: deadPid(), host: os.hostname(), startedAt: '2026-01-01T00:00:00Z', command: 'dbstash backup (killed)' });
}

function json(r: CliResult): Record<string, unknown> {
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

describe('a success is always a backup', () => {
  test('many runs over a stale lock: one at a time holds it, and every reported id is a backup that verifies', { timeout: 240_000 }, async () => {
    const dir = tempDir('chaos-stale');
    const db = sqliteDb(path.join(dir, 'app.db'), 300);
    const stash = path.join(dir, 'stash');
    const reported: string[] = [];
    for (let round = 0; round < 4; round++) {
      staleLock(folderFor(stash, db));
      const runs = await Promise.all(Array.from({ length: 5 }, () => runCli(['backup', db, '--output-dir', stash, '--json'], { timeoutMs: 60_000 })));
      const ok = runs.filter((r) => r.code === 0);
      assert.ok(ok.length >= 1, `round ${round}: no run succeeded:\n${runs.map((r) => r.stderr).join('\n')}`);
      for (const r of runs.filter((x) => x.code !== 0)) expectExit(r, 6, /another dbstash is working on SQLite file/);
      reported.push(...ok.map((r) => json(r).id as string));
    }
    assert.equal(new Set(reported).size, reported.length, 'no id was reported twice');
    for (const id of reported) {
      const v = await runCli(['verify', id, '--output-dir', stash]);
      expectExit(v, 0, /integrity passed/);
    }
    const list = json(await runCli(['list', '--output-dir', stash, '--json'])).backups as { id: string }[];
    assert.deepEqual(list.map((b) => b.id).sort(), [...reported].sort(), 'the stash holds exactly the reported backups');
    const leftovers = json(await runCli(['prune', '--output-dir', stash, '--keep-last', '100', '--orphan-age', '0s', '--dry-run', '--json']));
    assert.deepEqual((leftovers.storages as { orphans: unknown[] }[])[0].orphans, [], 'no artifact without its manifest, no marker, no lock');
  });

  test('a run that finds its manifest key taken fails without removing what it did not write', async () => {
    const dir = tempDir('chaos-own');
    const db = sqliteDb(path.join(dir, 'app.db'), 50);
    const memory = createMemoryStorage(`chaos-own-${process.pid}`);
    const theirs = Buffer.from('{"the manifest of": "another run"}\n');
    // Between this run's artifact and its manifest, another run publishes a manifest under the same id.
    const racing: Storage = {
      ...memory,
      async put(key, data, opts) {
        if (key.endsWith('.manifest.json')) await memory.put(key, theirs, { exclusive: true });
        return memory.put(key, data, opts);
      },
    };
    let id = '';
    await assert.rejects(
      runBackup(
        {
          target: parseTarget(db),
          env: 'dev',
          destinations: [{ name: 'mem', storage: racing, optional: false }],
          stages: [],
          globals: false,
          checksums: false,
          labels: {},
          tempDir: dir,
          space: { ratio: 1, margin: 1 },
          forceUnlock: false,
        },
        { info: (m) => (id = /as (\S+)$/.exec(m)?.[1] ?? id), warn: () => {} },
      ),
      /already exists/,
    );
    assert.ok(id, 'the backup started');
    assert.deepEqual(await getBytes(memory, manifestKey(id)), theirs, 'the other run\'s manifest is still there');
    const left = (await memory.list('')).map((o) => o.key);
    assert.deepEqual(left, [manifestKey(id)], 'this run removed its own artifact, series file and lock, and nothing else');
  });
});

describe('S3 answers lost after the write', () => {
  let s3: S3Server;
  before(async () => {
    s3 = await startS3({ buckets: ['stash'] });
  });
  after(async () => {
    await s3.stop();
  });

  for (const [what, when] of [
    ['the lock', (r: { method: string; path: string }) => r.method === 'PUT' && /\/locks\/[^/]+\.lock$/.test(r.path)],
    ['the artifact', (r: { method: string; path: string }) => r.method === 'PUT' && r.path.endsWith('.sqlite.zst')],
    ['the manifest', (r: { method: string; path: string }) => r.method === 'PUT' && r.path.endsWith('.manifest.json')],
  ] as const) {
    test(`${what}: the retry finds the object its first try stored, and the backup succeeds`, { timeout: 120_000 }, async () => {
      const dir = tempDir('chaos-lost');
      const db = sqliteDb(path.join(dir, 'app.db'), 200);
      const proxy = await startLostAnswerProxy(s3.endpoint, [{ when }]);
      const prefix = `lost-${what.replace('the ', '')}`;
      try {
        const config = path.join(dir, 'dbstash.yaml');
        writeFileSync(config, `storages:\n  lossy:\n    url: s3://stash/${prefix}\n    endpoint: ${proxy.endpoint}\n    forcePathStyle: true\n`);
        const r = await runCli(['backup', db, '--storage', 'lossy', '--config', config, '--json'], { env: s3Env(s3), cwd: dir, timeoutMs: 90_000 });
        assert.equal(proxy.lost().length, 1, `one answer was lost: ${proxy.seen().join('\n')}`);
        expectExit(r, 0);
        const id = json(r).id as string;
        const keys = await bucketKeys(rawClient(s3), 'stash', `${prefix}/`);
        assert.ok(keys.includes(`${prefix}/${folderOf(id)}/${id}.manifest.json`), keys.join('\n'));
        assert.ok(!keys.some((k) => k.includes('/locks/')), `the lock was released: ${keys.join(', ')}`);
        writeFileSync(config, `storages:\n  direct:\n    url: s3://stash/${prefix}\n    endpoint: ${s3.endpoint}\n    forcePathStyle: true\n`);
        expectExit(await runCli(['verify', id, '--storage', 'direct', '--config', config], { env: s3Env(s3), cwd: dir }), 0, /integrity passed/);
      } finally {
        await proxy.close();
      }
    });
  }
});

describe('retention never empties a series by accident', () => {
  test('a rule of 0 is refused unless --allow-empty; on a terminal prune shows its plan and asks', { timeout: 120_000 }, async () => {
    const dir = tempDir('chaos-keep0');
    const db = sqliteDb(path.join(dir, 'app.db'), 20);
    const stash = path.join(dir, 'stash');
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await runCli(['backup', db, '--output-dir', stash, '--json']);
      expectExit(r, 0);
      ids.push(json(r).id as string);
      await new Promise((r) => setTimeout(r, 1100));
    }
    const refused = await runCli(['prune', '--output-dir', stash, '--keep-daily', '0']);
    expectExit(refused, 2, /the retention policy would remove every backup of app \(dev, 2 backups, policy 0 daily \(UTC\)\); nothing was removed/);
    assert.match(refused.stderr, /hint: .*--allow-empty/);
    const listed = () => (json(runCliSync(['list', '--output-dir', stash, '--json'])).backups as { id: string }[]).map((b) => b.id).sort();
    assert.deepEqual(listed(), [...ids].sort());
    const dry = await runCli(['prune', '--output-dir', stash, '--keep-daily', '0', '--dry-run']);
    expectExit(dry, 0, /a run without --dry-run refuses this/);

    // On a terminal: the plan, then a question; "n" keeps everything, "y" goes ahead.
    const onTty = (answer: string) =>
      spawnSync('script', ['-qec', [process.execPath, CLI_PATH, 'prune', '--output-dir', stash, '--keep-last', '1'].map((a) => `'${a}'`).join(' '), '/dev/null'], {
        input: `${answer}\n`,
        encoding: 'utf8',
        timeout: 60_000,
      });
    const no = onTty('n');
    assert.match(no.stdout, new RegExp(`remove +${ids[0]}`));
    assert.match(no.stdout, /remove what is listed above from .*\? \[y\/N\]/);
    assert.deepEqual(listed(), [...ids].sort(), 'declined: nothing removed');
    const yes = onTty('y');
    assert.match(yes.stdout, /removed 1 backup/);
    assert.deepEqual(listed(), [ids[1]]);

    const emptied = await runCli(['prune', '--output-dir', stash, '--keep-daily', '0', '--allow-empty']);
    expectExit(emptied, 0, /removed 1 backup/);
    assert.deepEqual(listed(), []);
  });
});

function runCliSync(args: string[]): CliResult {
  const r = spawnSync(process.execPath, [CLI_PATH, ...args], { encoding: 'utf8' });
  return { code: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

describe('two databases are never one series', () => {
  let pgServer: PgServer;
  let maria: MariaServer;
  before(async () => {
    [pgServer, maria] = await Promise.all([startPostgres(), startMariadb()]);
  });
  after(async () => {
    await Promise.all([pgServer?.stop(), maria?.stop()]);
  });

  test('two SQLite files called app.db: own folders, own retention, and a name that matches both asks which', { timeout: 120_000 }, async () => {
    const dir = tempDir('chaos-twins');
    const a = sqliteDb(path.join(dir, 'one', 'app.db'), 10, 'alpha');
    const b = sqliteDb(path.join(dir, 'two', 'app.db'), 20, 'beta');
    const stash = path.join(dir, 'stash');
    const idA = json(await runCli(['backup', a, '--output-dir', stash, '--json'])).id as string;
    await new Promise((r) => setTimeout(r, 1100));
    const idB = json(await runCli(['backup', b, '--output-dir', stash, '--json'])).id as string;
    assert.notEqual(folderOf(idA), folderOf(idB));
    assert.deepEqual(readdirSync(stash).sort(), [folderOf(idA), folderOf(idB)].sort());

    // Retention per series: --keep-last 1 keeps each file's only backup.
    const pruned = await runCli(['prune', '--output-dir', stash, '--keep-last', '1', '--json']);
    expectExit(pruned, 0);
    assert.ok((json(pruned).storages as { backups: { keep: boolean }[] }[])[0].backups.every((x) => x.keep));

    // "app" is both: refused with both listed; the folder as list prints it picks one.
    const ambiguous = await runCli(['restore', 'latest', '--database', 'app', '--to', path.join(dir, 'out.db'), '--output-dir', stash, '--yes']);
    expectExit(ambiguous, 2, /"app" matches 2 series: /);
    assert.ok(ambiguous.stderr.includes(`${folderOf(idA)} (sqlite ${a})`) && ambiguous.stderr.includes(`${folderOf(idB)} (sqlite ${b})`), ambiguous.stderr);
    const listText = await runCli(['list', '--output-dir', stash]);
    assert.match(listText.stdout, new RegExp(`${idA} .* ${folderOf(idA)} `), 'list names each series by its folder when names collide');
    const out = path.join(dir, 'out.db');
    expectExit(await runCli(['restore', 'latest', '--database', folderOf(idA), '--to', out, '--output-dir', stash, '--yes']), 0);
    const restored = new Database(out, { readonly: true });
    assert.equal((restored.prepare('SELECT count(*) AS n FROM alpha').get() as { n: number }).n, 10, 'the restore brought back the file named, not the other one');
    restored.close();
    for (const [id, file] of [
      [idA, a],
      [idB, b],
    ]) {
      const verify = await runCli(['verify', '--latest', file === a ? folderOf(idA) : folderOf(idB), '--output-dir', stash, '--json']);
      expectExit(verify, 0);
      assert.equal((json(verify).results as { id: string }[] | undefined)?.[0]?.id ?? (json(verify) as { id?: string }).id ?? id, id);
    }
  });

  test('my_app and my-app are two folders; PostgreSQL and MariaDB databases of one name are two series', { timeout: 180_000 }, async () => {
    const dir = tempDir('chaos-engines');
    const stash = path.join(dir, 'stash');
    const u = sqliteDb(path.join(dir, 'my_app.db'), 5);
    const d = sqliteDb(path.join(dir, 'my-app.db'), 6);
    const idU = json(await runCli(['backup', u, '--output-dir', stash, '--json'])).id as string;
    const idD = json(await runCli(['backup', d, '--output-dir', stash, '--json'])).id as string;
    assert.notEqual(folderOf(idU), folderOf(idD));

    await pgServer.createDatabase('shop');
    await pgServer.query('CREATE TABLE pg_only (id int); INSERT INTO pg_only SELECT generate_series(1, 1000)', 'shop');
    await maria.query('CREATE DATABASE shop');
    await maria.query('CREATE TABLE shop.my_only (id int); INSERT INTO shop.my_only VALUES (1)');
    const pgRun = await runCli(['backup', pgServer.url('shop'), '--output-dir', stash, '--json']);
    expectExit(pgRun, 0);
    await new Promise((r) => setTimeout(r, 1100));
    const myRun = await runCli(['backup', maria.url('shop'), '--output-dir', stash, '--json']);
    expectExit(myRun, 0);
    const my = json(myRun).manifest as { id: string; extra: Record<string, unknown> };
    assert.notEqual(folderOf(my.id), folderOf(json(pgRun).id as string));
    assert.equal(my.extra.anomaly, undefined, 'the MariaDB backup is not compared with the PostgreSQL one');
    const ambiguous = await runCli(['verify', '--latest', 'shop', '--output-dir', stash]);
    expectExit(ambiguous, 2, /"shop" matches 2 series: .*\((postgres|mysql) .*\((postgres|mysql) /);
    const pgLatest = await runCli(['restore', 'latest', '--database', folderOf(json(pgRun).id as string), '--to', pgServer.url('shop_copy'), '--output-dir', stash, '--dry-run', '--json']);
    expectExit(pgLatest, 0);
    assert.equal((json(pgLatest).plan as { backup: { id: string } }).backup.id, json(pgRun).id, 'latest of the PostgreSQL series is the PostgreSQL backup, although the MariaDB one is newer');
  });

  test('`name:` labels the series and never changes which database is dumped', { timeout: 120_000 }, async () => {
    const dir = tempDir('chaos-name');
    await pgServer.createDatabase('review_a');
    await pgServer.createDatabase('review_b');
    await pgServer.query('CREATE TABLE only_in_a (id int); INSERT INTO only_in_a VALUES (1), (2)', 'review_a');
    await pgServer.query('CREATE TABLE only_in_b (id int)', 'review_b');
    const config = path.join(dir, 'dbstash.yaml');
    writeFileSync(config, `stash: ${path.join(dir, 'stash')}\ndatabases:\n  review:\n    url: ${pgServer.url('review_a')}\n    name: review_b\n`);
    const r = await runCli(['backup', 'review', '--config', config, '--json']);
    expectExit(r, 0);
    const m = json(r).manifest as { database: { name: string }; series: { name: string }; tables: { name: string; rows: number }[] };
    assert.equal(m.database.name, 'review_a');
    assert.equal(m.series.name, 'review_b');
    assert.deepEqual(m.tables.map((t) => [t.name, t.rows]), [['only_in_a', 2]]);
    const listed = await runCli(['list', 'review', '--config', config, '--json']);
    assert.equal((json(listed).backups as unknown[]).length, 1, 'the config key finds the series');
  });
});

describe('a safety backup is its own kind', () => {
  test('never latest, never an anomaly, never in retention, and shown as such by list', { timeout: 120_000 }, async () => {
    const dir = tempDir('chaos-safety');
    const db = sqliteDb(path.join(dir, 'app.db'), 500);
    const stash = path.join(dir, 'stash');
    const good = json(await runCli(['backup', db, '--output-dir', stash, '--env', 'prod', '--json'])).id as string;
    // The data gets damaged; the file is held open by the application, so the restore goes in place.
    const app = new Database(db);
    app.exec('DELETE FROM items WHERE id > 10');
    try {
      const restore = await runCli(['restore', good, '--to', db, '--output-dir', stash, '--yes', '--json']);
      expectExit(restore, 0, /a swap is impossible/);
      const safety = (json(restore).record as { safetyBackup: string }).safetyBackup;
      assert.equal((app.prepare('SELECT count(*) AS n FROM items').get() as { n: number }).n, 500);

      const list = json(await runCli(['list', '--output-dir', stash, '--json'])).backups as { id: string; kind: string; anomaly: unknown }[];
      assert.deepEqual(list.map((b) => [b.id, b.kind]).sort(), [[good, 'backup'], [safety, 'safety']].sort());
      assert.equal(list.find((b) => b.id === safety)!.anomaly, null, 'the damaged copy is not flagged as an anomaly of the series');
      assert.match((await runCli(['list', '--output-dir', stash])).stdout, new RegExp(`${safety} \\(safety backup\\)`));
      const latest = await runCli(['restore', 'latest', '--to', path.join(dir, 'copy.db'), '--output-dir', stash, '--dry-run', '--json']);
      expectExit(latest, 0);
      assert.equal((json(latest).plan as { backup: { id: string } }).backup.id, good, 'latest is the real backup, not the safety copy');
      const status = await runCli(['status', '--output-dir', stash]);
      expectExit(status, 0, /healthy/);
      const prune = await runCli(['prune', '--output-dir', stash, '--keep-last', '1', '--json']);
      expectExit(prune, 0);
      const decisions = (json(prune).storages as { backups: { id: string; keep: boolean; reasons: string[] }[] }[])[0].backups;
      assert.deepEqual(decisions.find((x) => x.id === good)?.keep, true, 'the safety backup does not push the real one out');
      assert.match(decisions.find((x) => x.id === safety)!.reasons[0], /safety backup of a restore, kept 720h00m \(\S+ old\)/);
      assert.ok(existsSync(path.join(stash, folderOf(safety), `${safety}.manifest.json`)));
      assert.equal(JSON.parse(readFileSync(path.join(stash, folderOf(safety), `${safety}.manifest.json`), 'utf8')).kind, 'safety');
    } finally {
      app.close();
    }
  });
});

describe('one restore into a SQLite file at a time', () => {
  test('a restore finds the target locked by a live restore and says so; a lock whose process is gone is taken over', { timeout: 60_000 }, async () => {
    const dir = tempDir('chaos-sqlite-lock');
    const db = sqliteDb(path.join(dir, 'app.db'), 30);
    const stash = path.join(dir, 'stash');
    const id = json(await runCli(['backup', db, '--output-dir', stash, '--json'])).id as string;
    const target = path.join(dir, 'target.db');
    const lock = path.join(dir, '.target.db.dbstash-restore');
    writeFileSync(lock, JSON.stringify({ pid: process.pid, host: os.hostname(), startedAt: new Date().toISOString() }));
    const busy = await runCli(['restore', id, '--to', target, '--output-dir', stash, '--yes']);
    expectExit(busy, 9, new RegExp(`error: another restore into ${target.replace(/[.]/g, '\\.')} is running \\(pid ${process.pid} on `));
    assert.ok(!existsSync(target), 'the target was not touched');
    writeFileSync(lock, JSON.stringify({ pid: deadPid(), host: os.hostname(), startedAt: '2026-01-01T00:00:00Z' }));
    expectExit(await runCli(['restore', id, '--to', target, '--output-dir', stash, '--yes']), 0);
    assert.ok(existsSync(target));
    assert.ok(!existsSync(lock), 'the lock goes with the restore');
  });
});
