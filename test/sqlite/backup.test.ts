// SQLite backups through the real CLI: a consistent copy while another process writes in WAL
// mode, preflight failures, the README's zero-configuration default, and distinct ids for
// backups taken within one second.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Database from 'better-sqlite3';
import { CLI_PATH, runCli, spawnCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { assertCleanFailure, filesUnder, onlyBackup, sh, shellQuote, waitFor } from '../postgres/helpers.js';
import { runBackup, type BackupPlan } from '../../src/backup/backup.js';
import { parseTarget } from '../../src/engines/target.js';
import { createLocalStorage } from '../../src/storage/local.js';
import { zstdStage } from '../../src/pipeline/compress.js';
import type { Manifest } from '../../src/catalog/manifest.js';
import { seriesDir, folderOf } from '../harness/stash.js';

const EXAMPLE = fileURLToPath(new URL('../../../examples/shop.db', import.meta.url));
let work: string;
before(() => {
  work = tempDir('dbstash-sqlite');
});

/** Decompresses a backup's artifact and opens the copy; checks integrity first. */
async function restored(artifact: string, into: string): Promise<Database.Database> {
  await sh(`zstd -q -d -f ${shellQuote(artifact)} -o ${shellQuote(into)}`);
  const db = new Database(into, { readonly: true });
  assert.deepEqual(db.prepare('PRAGMA integrity_check').all(), [{ integrity_check: 'ok' }]);
  return db;
}

function countsOf(db: Database.Database): Record<string, number> {
  const tables = db.prepare(`SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`).all() as { name: string }[];
  return Object.fromEntries(tables.map(({ name }) => [name, (db.prepare(`SELECT count(*) AS n FROM "${name}"`).get() as { n: number }).n]));
}

const manifestCounts = (m: Manifest) => Object.fromEntries(m.tables.map((t) => [t.name, t.rows]));

/** An environment in which nothing names a database, so the CLI falls back to its defaults. */
const noDatabaseEnv: Record<string, undefined> = Object.fromEntries(
  Object.keys(process.env)
    .filter((k) => /^(DATABASE_URL|DB_|DEV_DB_|PG|ENV_MODE$|NODE_ENV$)/.test(k))
    .map((k) => [k, undefined]),
);

describe('sqlite backup under a WAL writer', () => {
  let dbFile: string;
  let writer: ChildProcess;

  before(async () => {
    dbFile = path.join(work, 'app.db');
    const db = new Database(dbFile);
    db.pragma('journal_mode = WAL');
    db.exec(`CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL);
             CREATE TABLE events (id INTEGER PRIMARY KEY, at TEXT NOT NULL, payload BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000)
             INSERT INTO notes SELECT i, printf('note %d %s', i, hex(randomblob(40))) FROM n;`);
    db.close();
    // Another process holds the database open in WAL mode and inserts until it is stopped.
    const betterSqlite = createRequire(import.meta.url).resolve('better-sqlite3');
    const script = `
      const Database = require(process.argv[1]);
      const db = new Database(process.argv[2]);
      db.pragma('journal_mode = WAL');
      db.pragma('busy_timeout = 5000');
      const insert = db.prepare("INSERT INTO events (at, payload) VALUES (datetime('now'), randomblob(200))");
      const batch = db.transaction(() => { for (let i = 0; i < 20; i++) insert.run(); });
      let n = 0;
      setInterval(() => { batch(); n += 20; if (n % 1000 === 0) process.stdout.write(n + '\\n'); }, 1);`;
    writer = spawn(process.execPath, ['-e', script, betterSqlite, dbFile], { stdio: ['ignore', 'pipe', 'inherit'] });
    let written = 0;
    writer.stdout!.setEncoding('utf8').on('data', (d: string) => (written = Number(d.trim().split('\n').pop())));
    await waitFor('the writer to insert', () => written >= 1000);
  });
  after(() => writer?.kill());

  it('the copy finishes and is consistent: integrity_check passes and its counts equal the manifest, while the source grows', async () => {
    const stash = path.join(work, 'stash-wal');
    // ~35 MB: enough pages that a copy which restarts on every commit would never finish.
    const scratch = path.join(work, 'scratch-wal');
    mkdirSync(scratch);
    const res = await runCli(['backup', dbFile, '--output-dir', stash, '--temp-dir', scratch, '--json'], { timeoutMs: 30_000 });
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(filesUnder(scratch), [], 'the scratch copy is removed');
    const { manifest, artifact } = onlyBackup(stash);
    assert.equal(manifest.engine, 'sqlite');
    assert.equal(manifest.dump.tool, 'sqlite-backup-api');
    assert.equal(manifest.database.name, 'app');
    const copy = await restored(artifact, path.join(work, 'wal-copy.db'));
    const counts = countsOf(copy);
    copy.close();
    assert.deepEqual(manifestCounts(manifest), counts);
    assert.equal(counts.notes, 300000);
    assert.ok(counts.events >= 1000, `events in the copy: ${counts.events}`);
    await waitFor('the source to grow past the copy', () => {
      const src = new Database(dbFile, { readonly: true });
      try {
        return (src.prepare('SELECT count(*) AS n FROM events').get() as { n: number }).n > counts.events;
      } finally {
        src.close();
      }
    });
    assert.deepEqual(filesUnder(stash), [`${folderOf(manifest.id)}/${manifest.id}.manifest.json`, `${folderOf(manifest.id)}/${manifest.id}.sqlite.zst`, `${folderOf(manifest.id)}/series.json`]);
  });

  it('SIGINT mid-backup: exit 130, nothing in the stash, the scratch copy removed', async () => {
    const stash = path.join(work, 'stash-sigint');
    const scratch = path.join(work, 'scratch-sigint');
    mkdirSync(scratch);
    const child = spawnCli(['backup', dbFile, '--output-dir', stash, '--temp-dir', scratch]);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdout.resume();
    const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    await waitFor('the backup to start', () => stderr.includes('backing up '));
    child.kill('SIGINT');
    const code = await exited;
    assert.equal(code, 130, stderr);
    assert.match(stderr, /^error: interrupted by SIGINT/m);
    assert.deepEqual(filesUnder(stash), []);
    assert.deepEqual(filesUnder(scratch), []);
  });
});

describe('sqlite preflight', () => {
  it('a missing file: exit 4, nothing written', async () => {
    const stash = path.join(work, 'stash-missing');
    const res = await runCli(['backup', path.join(work, 'nope.db'), '--output-dir', stash]);
    assertCleanFailure(res, 4, /database file .*nope\.db does not exist/);
    assert.deepEqual(filesUnder(stash), []);
  });

  it('a file that is not a SQLite database: exit 4, nothing written', async () => {
    const file = path.join(work, 'garbage.db');
    writeFileSync(file, 'this is not a database, just text that is long enough to have a header'.repeat(20));
    const stash = path.join(work, 'stash-garbage');
    const res = await runCli(['backup', file, '--output-dir', stash]);
    assertCleanFailure(res, 4, /garbage\.db is not a readable SQLite database/);
    assert.deepEqual(filesUnder(stash), []);
  });
});

describe('the README default', () => {
  it('`dbstash backup` with no arguments and no config, in dbstash\'s checkout, backs up the bundled example', async () => {
    const checkout = path.dirname(path.dirname(EXAMPLE));
    const stash = path.join(work, 'example-stash');
    const res = await runCli(['backup', '--output-dir', stash], { cwd: checkout, env: noDatabaseEnv });
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stderr, /database from the bundled example database/);
    const { manifest, artifact } = onlyBackup(stash);
    assert.match(manifest.id, /^shop\.[0-9a-f]{8}_dev_/);
    assert.ok(artifact.startsWith(path.join(stash, folderOf(manifest.id)) + path.sep));
    assert.deepEqual(manifestCounts(manifest), { customers: 200, order_items: 2000, orders: 1000, products: 50 });
    const copy = await restored(artifact, path.join(work, 'shop-copy.db'));
    assert.deepEqual(countsOf(copy), manifestCounts(manifest));
    copy.close();
  });

  it('anywhere else, no database named is an error that says how to name one, and nothing is written', async () => {
    const cwd = path.join(work, 'fresh');
    mkdirSync(cwd);
    const res = await runCli(['backup'], { cwd, env: noDatabaseEnv });
    assertCleanFailure(res, 2, /no database to back up: none was named, and nothing is configured/);
    assert.match(res.stderr, /hint: name one \(dbstash backup postgres:\/\/.*DATABASE_URL.*dbstash init/);
    assert.deepEqual(filesUnder(cwd), []);
  });

  it('in prod the same command refuses instead of backing up the example', async () => {
    const cwd = path.join(work, 'fresh-prod');
    mkdirSync(cwd);
    const res = await runCli(['backup', '--env', 'prod'], { cwd, env: noDatabaseEnv });
    assertCleanFailure(res, 2, /no database configured/);
    assert.deepEqual(filesUnder(cwd), []);
  });
});

describe('output', () => {
  it('on a TTY a live progress line is drawn (and cleared); on a pipe there is none', async () => {
    const stash = path.join(work, 'stash-tty');
    const command = [process.execPath, CLI_PATH, 'backup', EXAMPLE, '--output-dir', stash].map(shellQuote).join(' ');
    const { stdout } = await sh(`script -qec ${shellQuote(command)} /dev/null`);
    assert.match(stdout, /\r\x1b\[2K {2}[\d.]+ KiB read, [\d.]+ (B|KiB|MiB)\/s, \d+ms/);
    const piped = await runCli(['backup', EXAMPLE, '--output-dir', stash]);
    assert.equal(piped.code, 0, piped.stderr);
    assert.doesNotMatch(piped.stderr, /\r|\x1b/);
    assert.match(piped.stderr, /^backing up .*shop\.db as shop\.[0-9a-f]{8}_dev_/m);
  });

  it('list: an empty stash says so; a damaged manifest is reported, not hidden', async () => {
    const stash = path.join(work, 'stash-list');
    const empty = await runCli(['list', '--output-dir', stash]);
    assert.equal(empty.code, 0, empty.stderr);
    assert.equal(empty.stdout.trim(), 'no backups found');
    const a = await runCli(['backup', EXAMPLE, '--output-dir', stash, '--json']);
    const b = await runCli(['backup', EXAMPLE, '--output-dir', stash, '--json']);
    const [idA, idB] = [JSON.parse(a.stdout).id, JSON.parse(b.stdout).id];
    writeFileSync(path.join(seriesDir(stash, 'shop'), `${idA}.manifest.json`), '{"format": "dbstash.manifest", "version": 1, "id": "trunc');
    const res = await runCli(['list', '--output-dir', stash, '--json']);
    assert.equal(res.code, 0, res.stderr);
    const listed = JSON.parse(res.stdout);
    assert.deepEqual(listed.backups.map((x: { id: string }) => x.id), [idB]);
    assert.equal(listed.problems.length, 1);
    assert.equal(listed.problems[0].key, `${folderOf(idA)}/${idA}.manifest.json`);
    assert.match(listed.problems[0].message, /not valid JSON/);
    assert.match(res.stderr, new RegExp(`^warning: .*${idA}\\.manifest\\.json is not valid JSON`, 'm'));
  });
});

describe('backup ids', () => {
  it('backups taken back to back (within one second) get distinct ids', async () => {
    const file = path.join(work, 'ids.db');
    const db = new Database(file);
    db.exec('CREATE TABLE t (x); INSERT INTO t VALUES (1);');
    db.close();
    const storage = createLocalStorage({ root: path.join(work, 'stash-ids') });
    const plan: BackupPlan = {
      target: parseTarget(file),
      env: 'dev',
      destinations: [{ name: 'local', storage, optional: false }],
      stages: [zstdStage({})],
      globals: false,
      checksums: false,
      labels: {},
      tempDir: work,
      space: { ratio: 1, margin: 1 },
      forceUnlock: false,
    };
    const quiet = { info: () => {}, warn: () => {} };
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) ids.push((await runBackup(plan, quiet)).manifest.id);
    assert.equal(new Set(ids).size, 3, ids.join(', '));
    assert.deepEqual([...ids].sort(), ids, 'later backups sort later');
    assert.equal(filesUnder(path.join(work, 'stash-ids')).filter((f) => f.endsWith('.manifest.json')).length, 3);
  });
});
