// `dbstash verify` against real backups of a real PostgreSQL server and a SQLite file: a good
// backup passes every level (the drill both in a self-started scratch server and with
// --scratch-url), and each kind of damage is found with its own message and exit code 7; what
// cannot be verified exits 8. Damage is generated from a good backup in a copy of the stash.

import assert from 'node:assert/strict';
import { chmodSync, cpSync, existsSync, readdirSync, readFileSync, statSync, truncateSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { backupId as backup, expectExit, runCli, spawnCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { activeLeases, leaseKey } from '../../src/catalog/lease.js';
import { createMemoryStorage } from '../../src/storage/memory.js';
import { openArtifact } from '../../src/verify/read.js';
import { gzipStage } from '../../src/pipeline/compress.js';
import { readAll } from '../../src/storage/storage.js';
import type { Manifest } from '../../src/catalog/manifest.js';
import { seriesDir, folderOf } from '../harness/stash.js';

let server: PgServer;
let stash: string;
let id: string;
let noChecksumsId: string;

const SHOP_SQL = `
CREATE TABLE public.customer (id int PRIMARY KEY, name text NOT NULL);
CREATE TABLE public.rental (id int PRIMARY KEY, customer_id int REFERENCES customer, note text);
CREATE SCHEMA inventory;
CREATE TABLE inventory.film (id int PRIMARY KEY, title text, tags jsonb);
INSERT INTO customer SELECT g, 'customer ' || g FROM generate_series(1, 200) g;
INSERT INTO rental SELECT g, 1 + g % 200, md5(g::text) FROM generate_series(1, 16044) g;
INSERT INTO inventory.film SELECT g, 'film ' || g, jsonb_build_object('n', g) FROM generate_series(1, 1000) g;
`;


/** A copy of the stash holding only the given backup, to damage freely. */
function copyOf(backupId: string): { dir: string; file: (suffix: string) => string } {
  const dir = tempDir('dbstash-verify-damaged');
  cpSync(stash, dir, { recursive: true, filter: (src) => !/\.(verify|restore)-/.test(src) });
  const db = backupId.split('_')[0];
  return { dir, file: (suffix) => path.join(dir, folderOf(backupId), `${backupId}${suffix}`) };
}

function readManifest(file: string): Manifest {
  return JSON.parse(readFileSync(file, 'utf8')) as Manifest;
}

function records(dir: string, backupId: string): { result: string; level: string; error?: string; tables?: unknown[] }[] {
  const db = backupId.split('_')[0];
  return readdirSync(path.join(dir, db))
    .filter((f) => f.startsWith(`${backupId}.verify-`))
    .sort()
    .map((f) => JSON.parse(readFileSync(path.join(dir, db, f), 'utf8')));
}

async function databases(): Promise<string[]> {
  return (await server.query('SELECT datname FROM pg_database ORDER BY 1')).rows.map((r) => r.datname as string);
}

before(async () => {
  server = await startPostgres();
  await server.createDatabase('shop');
  await server.query(SHOP_SQL, 'shop');
  stash = tempDir('dbstash-verify');
  id = await backup(server.url('shop'), stash, '--checksums', '--globals');
  noChecksumsId = await backup(server.url('shop'), stash);
});
after(() => server?.stop());

describe('verify a good PostgreSQL backup', () => {
  test('level 1 passes, leaves a record that list shows, and removes its lease', async () => {
    const r = await runCli(['verify', id, '--output-dir', stash]);
    expectExit(r, 0, /integrity passed .*pg_restore read \d+ TOC entries/);
    const recs = records(stash, id);
    assert.equal(recs.at(-1)?.result, 'passed');
    assert.equal(recs.at(-1)?.level, 'integrity');
    assert.ok(!readdirSync(seriesDir(stash, 'shop')).some((f) => f.includes('.lease-')), 'lease removed');
    expectExit(await runCli(['verify', id, '--output-dir', stash, '--dry-run']), 0, /integrity passed/);
    assert.equal(records(stash, id).length, recs.length, '--dry-run leaves no record');
    const list = await runCli(['list', '--output-dir', stash, '--json']);
    const row = (JSON.parse(list.stdout).backups as { id: string; verification: { result: string } | null }[]).find((b) => b.id === id);
    assert.equal(row?.verification?.result, 'passed');
  });

  test('--drill restores into a self-started scratch server and compares every table', async () => {
    const before = await databases();
    const r = await runCli(['verify', id, '--drill', '--output-dir', stash, '--json']);
    expectExit(r, 0);
    const result = JSON.parse(r.stdout).results[0];
    assert.equal(result.result, 'passed');
    const tables = result.tables as { schema: string; name: string; expected: number; actual: number; ok: boolean }[];
    assert.deepEqual(
      tables.map((t) => [`${t.schema}.${t.name}`, t.actual, t.ok]),
      [['inventory.film', 1000, true], ['public.customer', 200, true], ['public.rental', 16044, true]],
    );
    assert.deepEqual(await databases(), before, 'the source server was not used');
    assert.equal(records(stash, id).at(-1)?.level, 'drill');
  });

  test('--deep with --scratch-url compares content checksums and drops its scratch database', async () => {
    const r = await runCli(['verify', '--latest', 'shop', '--deep', '--scratch-url', server.url('postgres'), '--output-dir', stash]);
    // --latest is the backup without checksums: could not verify, exit 8, no record.
    expectExit(r, 8, /taken without --checksums/);
    const deep = await runCli(['verify', id, '--deep', '--scratch-url', server.url('postgres'), '--output-dir', stash]);
    expectExit(deep, 0, /deep passed .*3 tables match the manifest \(row counts and content checksums\)/);
    assert.ok(!(await databases()).some((d) => d.startsWith('dbstash_drill_')), 'scratch database dropped');
    assert.equal(records(stash, noChecksumsId).length, 0);
  });

  test('the drill uses scratchUrl from the database\'s config entry', async () => {
    const dir = tempDir('dbstash-verify-config');
    const config = path.join(dir, 'dbstash.yaml');
    writeFileSync(config, `databases:\n  shop:\n    url: ${server.url('shop')}\n    scratchUrl: ${server.url('postgres')}\n`);
    const r = await runCli(['verify', id, '--drill', '--config', config, '--output-dir', stash]);
    expectExit(r, 0, new RegExp(`drill: restoring ${id} into postgres://postgres:\\*\\*\\*@127\\.0\\.0\\.1:${server.port}/postgres as dbstash_drill_`));
    assert.ok(!(await databases()).some((d) => d.startsWith('dbstash_drill_')), 'scratch database dropped');
  });

  test('a lease exists while verify runs, and activeLeases ignores stale ones', async () => {
    const child = spawnCli(['verify', id, '--drill', '--output-dir', stash]);
    const dbDir = seriesDir(stash, 'shop');
    let seen: string | undefined;
    for (let i = 0; i < 200 && !seen; i++) {
      seen = readdirSync(dbDir).find((f) => f.startsWith(`${id}.lease-`));
      if (!seen) await new Promise((r) => setTimeout(r, 25));
    }
    await new Promise((r) => child.once('close', r));
    assert.equal(child.exitCode, 0);
    assert.ok(seen?.endsWith(`-${child.pid}.json`), `lease of pid ${child.pid} seen: ${seen}`);
    assert.ok(!existsSync(path.join(dbDir, seen!)), 'lease removed at the end');
    const now = new Date();
    const objects = [
      { key: leaseKey(id), size: 1, modifiedAt: now },
      { key: leaseKey(id, undefined, child.pid!), size: 1, modifiedAt: now },
      { key: leaseKey(id, 'other-host', 1), size: 1, modifiedAt: now },
      { key: leaseKey(id, 'old-host', 1), size: 1, modifiedAt: new Date(now.getTime() - 3 * 86400e3) },
    ];
    assert.deepEqual(
      activeLeases(objects, now).map((l) => [l.id, l.host, l.pid]),
      [
        [id, objects[0].key.match(/lease-(.+)-\d+\.json$/)![1], process.pid],
        [id, 'other-host', 1],
      ],
    );
  });
});

describe('interrupted drill', () => {
  test('SIGINT stops and removes the self-started scratch server', async () => {
    const scratchRoot = tempDir('dbstash-verify-scratch');
    chmodSync(scratchRoot, 0o711); // the server runs as the postgres OS user when the tests run as root
    const child = spawnCli(['verify', id, '--drill', '--temp-dir', scratchRoot, '--output-dir', stash]);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    for (let i = 0; i < 500 && !stderr.includes('drill: restoring'); i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(readdirSync(scratchRoot).filter((f) => f.startsWith('.dbstash-pgdrill_')).length, 1, 'the scratch server lives in --temp-dir');
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    assert.equal(code, 130, stderr);
    assert.deepEqual(readdirSync(scratchRoot), [], 'scratch directory removed');
    const ps = spawnSync('ps', ['-eo', 'args'], { encoding: 'utf8' }).stdout;
    assert.ok(!ps.includes(scratchRoot), `no scratch server process left:\n${ps.split('\n').filter((l) => l.includes(scratchRoot)).join('\n')}\n${stderr}`);
  });
});

describe('verify finds damage', () => {
  test('truncated artifact: size mismatch, exit 7, a failed record', async () => {
    const copy = copyOf(id);
    const file = copy.file('.dump.zst');
    const size = statSync(file).size;
    truncateSync(file, size - 1000);
    const r = await runCli(['verify', id, '--output-dir', copy.dir]);
    expectExit(r, 7, new RegExp(`error: artifact ${id}\\.dump\\.zst is ${size - 1000} bytes, manifest says ${size}`));
    assert.match(r.stderr, /hint: /);
    const rec = records(copy.dir, id);
    assert.equal(rec.length, 1);
    assert.equal(rec[0].result, 'failed');
    assert.match(rec[0].error!, /manifest says/);
  });

  test('one flipped byte: checksum mismatch, exit 7', async () => {
    const copy = copyOf(id);
    const file = copy.file('.dump.zst');
    const fd = openSync(file, 'r+');
    const at = Math.floor(statSync(file).size / 2);
    const byte = Buffer.alloc(1);
    const { readSync } = await import('node:fs');
    readSync(fd, byte, 0, 1, at);
    byte[0] ^= 0x01;
    writeSync(fd, byte, 0, 1, at);
    closeSync(fd);
    const r = await runCli(['verify', id, '--output-dir', copy.dir]);
    expectExit(r, 7, /error: checksum mismatch: .* manifest says [0-9a-f]{64}/);
  });

  test('missing manifest: exit 7 and no record', async () => {
    const copy = copyOf(id);
    const { rmSync } = await import('node:fs');
    rmSync(copy.file('.manifest.json'));
    const r = await runCli(['verify', id, '--output-dir', copy.dir]);
    expectExit(r, 7, new RegExp(`error: backup ${id} has no manifest`));
    assert.equal(records(copy.dir, id).length, 0);
  });

  test('the manifest of another backup: exit 7', async () => {
    const copy = copyOf(id);
    cpSync(copy.file('.manifest.json').replace(id, noChecksumsId), copy.file('.manifest.json'));
    const r = await runCli(['verify', id, '--output-dir', copy.dir]);
    expectExit(r, 7, new RegExp(`describes another backup \\(${noChecksumsId}\\)`));
  });

  test('a backup that was cut short when written: the zstd frame is truncated', async () => {
    const copy = copyOf(id);
    const file = copy.file('.dump.zst');
    truncateSync(file, statSync(file).size - 5000);
    const bytes = readFileSync(file);
    const manifest = readManifest(copy.file('.manifest.json'));
    manifest.artifacts[0].size = bytes.length;
    manifest.artifacts[0].sha256 = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(copy.file('.manifest.json'), JSON.stringify(manifest));
    const r = await runCli(['verify', id, '--output-dir', copy.dir]);
    expectExit(r, 7, /error: zstd frame truncated: the compressed data ends inside a frame after \d+ bytes/);
  });

  test('an artifact that restores but lost rows: level 1 passes, the drill names the table', async () => {
    const copy = copyOf(id);
    const manifest = readManifest(copy.file('.manifest.json'));
    manifest.tables.find((t) => t.name === 'rental')!.rows = 16048;
    writeFileSync(copy.file('.manifest.json'), JSON.stringify(manifest));
    expectExit(await runCli(['verify', id, '--output-dir', copy.dir]), 0);
    const r = await runCli(['verify', id, '--drill', '--scratch-url', server.url(), '--output-dir', copy.dir]);
    expectExit(r, 7, /error: table public\.rental: 16044 rows, manifest says 16048/);
    const rec = records(copy.dir, id).at(-1)!;
    assert.equal(rec.result, 'failed');
    assert.deepEqual(
      (rec.tables as { name: string; ok: boolean }[]).map((t) => [t.name, t.ok]),
      [['film', true], ['customer', true], ['rental', false]],
    );
  });

  test('--deep reports a content checksum mismatch by table', async () => {
    const copy = copyOf(id);
    const manifest = readManifest(copy.file('.manifest.json'));
    manifest.tables.find((t) => t.name === 'customer')!.checksum = '12345';
    writeFileSync(copy.file('.manifest.json'), JSON.stringify(manifest));
    expectExit(await runCli(['verify', id, '--drill', '--scratch-url', server.url(), '--output-dir', copy.dir]), 0);
    const r = await runCli(['verify', id, '--deep', '--scratch-url', server.url(), '--output-dir', copy.dir]);
    expectExit(r, 7, /error: table public\.customer: content checksum \d+, manifest says 12345/);
  });

  test('--all reports each backup and exits 7 when one is damaged', async () => {
    const copy = copyOf(id);
    truncateSync(copy.file('.dump.zst'), 100);
    const r = await runCli(['verify', '--all', '--output-dir', copy.dir, '--json']);
    expectExit(r, 7);
    const results = JSON.parse(r.stdout).results as { id: string; result: string }[];
    assert.deepEqual(results.map((x) => [x.id, x.result]).sort(), [[id, 'failed'], [noChecksumsId, 'passed']].sort());
  });
});

describe('could not verify', () => {
  test('a scratch server that does not answer: exit 8, no record', async () => {
    const copy = copyOf(id);
    const r = await runCli(['verify', id, '--drill', '--scratch-url', 'postgres://postgres@127.0.0.1:1/postgres', '--output-dir', copy.dir]);
    expectExit(r, 8, /cannot create the scratch database .*connection refused/);
    assert.equal(records(copy.dir, id).length, 0);
  });

  test('a backup from a newer server than the installed one: exit 8, the scratch server is gone', async () => {
    const copy = copyOf(id);
    const manifest = readManifest(copy.file('.manifest.json'));
    manifest.database.serverVersion = '99.1';
    writeFileSync(copy.file('.manifest.json'), JSON.stringify(manifest));
    const scratchRoot = tempDir('dbstash-verify-newer');
    chmodSync(scratchRoot, 0o711);
    const r = await runCli(['verify', id, '--drill', '--temp-dir', scratchRoot, '--output-dir', copy.dir]);
    expectExit(r, 8, /the installed postgres server \(15\.\d+\) is older than the backup's server \(99\.1\)/);
    assert.deepEqual(readdirSync(scratchRoot), []);
    assert.equal(records(copy.dir, id).filter((rec) => rec.level === 'drill').length, 0);
  });

  test('a --temp-dir the postgres OS user cannot enter: exit 8, nothing left in it', async () => {
    const scratchRoot = tempDir('dbstash-verify-private');
    chmodSync(scratchRoot, 0o700);
    const r = await runCli(['verify', id, '--drill', '--temp-dir', scratchRoot, '--output-dir', stash]);
    if (process.getuid?.() === 0) {
      expectExit(r, 8, /cannot start a scratch PostgreSQL .*"postgres" OS user cannot enter/);
    } else {
      expectExit(r, 0);
    }
    assert.deepEqual(readdirSync(scratchRoot), []);
  });
});

describe('verify a SQLite backup', () => {
  test('levels 1 and deep pass; a damaged page fails PRAGMA integrity_check', async () => {
    const dir = tempDir('dbstash-verify-sqlite');
    const file = path.join(dir, 'notes.db');
    const db = new Database(file);
    db.exec(`CREATE TABLE note (id INTEGER PRIMARY KEY, body TEXT); CREATE INDEX note_body ON note(body);`);
    const insert = db.prepare('INSERT INTO note (body) VALUES (?)');
    db.transaction(() => {
      for (let i = 0; i < 3000; i++) insert.run(`note ${i} ${'x'.repeat(i % 50)}`);
    })();
    db.close();
    const sqliteStash = path.join(dir, 'stash');
    const sqliteId = await backup(file, sqliteStash, '--checksums', '--compression', 'none');
    expectExit(await runCli(['verify', sqliteId, '--output-dir', sqliteStash]), 0, /integrity_check ok, 1 tables/);
    expectExit(await runCli(['verify', sqliteId, '--deep', '--output-dir', sqliteStash]), 0, /deep passed/);

    // Damage an index page inside the stored file and doctor the manifest to match: only the
    // engine's own structure check can notice.
    const artifact = path.join(seriesDir(sqliteStash, 'notes'), `${sqliteId}.sqlite`);
    const bytes = readFileSync(artifact);
    const pageSize = bytes.readUInt16BE(16);
    bytes.fill(0x55, bytes.length - pageSize + 8, bytes.length - pageSize + 200);
    writeFileSync(artifact, bytes);
    const manifestFile = path.join(seriesDir(sqliteStash, 'notes'), `${sqliteId}.manifest.json`);
    const manifest = readManifest(manifestFile);
    manifest.artifacts[0].sha256 = createHash('sha256').update(bytes).digest('hex');
    writeFileSync(manifestFile, JSON.stringify(manifest));
    const r = await runCli(['verify', sqliteId, '--output-dir', sqliteStash]);
    expectExit(r, 7, /\[sqlite\] (PRAGMA integrity_check failed|the artifact is not a readable SQLite database)/);
  });
});

describe('openArtifact', () => {
  test('streams the raw dump and fails a short gzip stream with an IntegrityError', async () => {
    const storage = createMemoryStorage(`verify-read-${process.pid}`);
    const raw = Buffer.from('x'.repeat(100_000));
    const { gzipSync } = await import('node:zlib');
    const stored = gzipSync(raw);
    const manifest = {
      id: 'notes_dev_2026-01-01T00-00-00Z',
      artifacts: [],
    } as unknown as Manifest;
    const artifact = {
      role: 'main' as const,
      file: 'notes_dev_2026-01-01T00-00-00Z.sql.gz',
      format: 'sql',
      stages: [{ id: 'gzip', params: gzipStage({}).params }],
      rawSize: raw.length,
      size: stored.length,
      sha256: createHash('sha256').update(stored).digest('hex'),
    };
    await storage.put(`notes/${artifact.file}`, stored);
    assert.deepEqual(await readAll(await openArtifact(storage, manifest, artifact, {})), raw);
    await storage.put(`notes/${artifact.file}`, stored.subarray(0, stored.length - 10));
    await assert.rejects(readAll(await openArtifact(storage, manifest, artifact, {})), (err: Error) => {
      assert.equal(err.name, 'IntegrityError');
      assert.match(err.message, new RegExp(`is ${stored.length - 10} bytes, manifest says ${stored.length}`));
      return true;
    });
    await storage.put(`notes/${artifact.file}`, stored);
    await assert.rejects(readAll(await openArtifact(storage, manifest, { ...artifact, rawSize: 5 }, {})), /decodes to 100000 bytes, manifest says 5/);
  });
});
