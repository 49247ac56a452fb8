// Single tables of a SQLite backup: a table restored beside the live one in the same file as
// <table>__restored_<stamp> (its rows, its own SQL, its indexes renamed with it; its trigger
// reported), nothing live changed, the printed copy-back working; the temporary file gone; export
// with exact values (64-bit integers, reals, blobs) and show.

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { backupId, expectExit, runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';

function makeDb(file: string): void {
  const db = new Database(file);
  db.exec(`
    CREATE TABLE notes (id INTEGER PRIMARY KEY, title TEXT NOT NULL, big INTEGER, ratio REAL, body BLOB, gone TEXT);
    CREATE UNIQUE INDEX notes_title ON notes (title);
    CREATE TABLE log (what TEXT);
    CREATE TRIGGER notes_log AFTER INSERT ON notes BEGIN INSERT INTO log VALUES ('note'); END;
    INSERT INTO notes VALUES (1, 'one', 9223372036854775807, 0.1, X'CAFE', NULL), (2, 'two', -1, 2.5, NULL, ''), (3, 'three', 0, NULL, NULL, 'x');
  `);
  db.close();
}

describe('restore --table, export and show (SQLite)', () => {
  test('notes come back beside the live table in the same file; the copy-back works', async () => {
    const dir = tempDir('dbstash-tables-sqlite');
    const file = path.join(dir, 'app.db');
    makeDb(file);
    const stash = path.join(dir, 'stash');
    const id = await backupId(file, stash);
    const live = new Database(file);
    live.exec(`DELETE FROM notes WHERE id > 1`);
    const logRows = (live.prepare('SELECT count(*) AS n FROM log').get() as { n: number }).n;
    live.close();
    const r = await runCli(['restore', id, '--table', 'notes', '--to', file, '--output-dir', stash, '--yes']);
    expectExit(r, 0);
    const name = /main\.notes → (notes__restored_\d{8}_\d{6}) \(3 rows\)/.exec(r.stdout)?.[1];
    assert.ok(name, r.stdout);
    assert.match(r.stdout, /not restored with it: trigger notes_log/);
    const db = new Database(file);
    try {
      assert.equal((db.prepare('SELECT count(*) AS n FROM notes').get() as { n: number }).n, 1);
      assert.equal((db.prepare(`SELECT count(*) AS n FROM "${name}"`).get() as { n: number }).n, 3);
      assert.equal((db.prepare('SELECT count(*) AS n FROM log').get() as { n: number }).n, logRows);
      const index = db.prepare(`SELECT sql FROM sqlite_schema WHERE type = 'index' AND tbl_name = ?`).get(name) as { sql: string };
      assert.match(index.sql, new RegExp(`^CREATE UNIQUE INDEX "notes_title__restored_\\d{8}_\\d{6}" ON "${name}"`));
      assert.equal((db.prepare(`SELECT big FROM "${name}" WHERE id = 1`).safeIntegers(true).get() as { big: bigint }).big, 9223372036854775807n);
      const copyBack = /copy back: (INSERT INTO "notes" .*;)$/m.exec(r.stdout)?.[1];
      assert.ok(copyBack, r.stdout);
      db.exec(copyBack);
      assert.equal((db.prepare('SELECT count(*) AS n FROM notes').get() as { n: number }).n, 3);
    } finally {
      db.close();
    }
    // Only the live file, its backup stash and nothing else: the temporary file is gone.
    assert.deepEqual(readdirSync(dir).sort(), ['app.db', 'stash']);

    const out = await runCli(['export', id, '--table', 'notes', '--output-dir', stash]);
    expectExit(out, 0);
    const lines = out.stdout.trim().split('\n');
    assert.equal(lines[0], `{"id":1,"title":"one","big":9223372036854775807,"ratio":0.1,"body":"yv4=","gone":null}`);
    assert.equal(JSON.parse(lines[1]).gone, '');
    const csv = await runCli(['export', id, '--table', 'notes', '--format', 'csv', '--where', 'id >= 2', '--limit', '1', '--output-dir', stash]);
    expectExit(csv, 0);
    assert.equal(csv.stdout, 'id,title,big,ratio,body,gone\r\n2,two,-1,2.5,,""\r\n');
    const show = await runCli(['show', id, '--table', 'notes', '--output-dir', stash]);
    expectExit(show, 0);
    assert.match(show.stdout, /^1\s+one\s+9223372036854775807\s+0\.1\s+\\xcafe\s+NULL$/m);
  });

  test('--replace swaps the restored table in, in one transaction; its triggers follow; a table referenced needs --cascade-plan', async () => {
    const dir = tempDir('dbstash-tables-sqlite-replace');
    const file = path.join(dir, 'app.db');
    makeDb(file);
    const setup = new Database(file);
    setup.exec(`CREATE TABLE tags (note INTEGER REFERENCES notes(id), tag TEXT); INSERT INTO tags VALUES (1, 'a'); CREATE VIEW titles AS SELECT title FROM notes;`);
    setup.close();
    const stash = path.join(dir, 'stash');
    const id = await backupId(file, stash);
    const live = new Database(file);
    live.exec(`DELETE FROM notes WHERE id > 1; INSERT INTO notes VALUES (7, 'seven', 0, 0, NULL, NULL)`);
    live.close();
    const refused = await runCli(['restore', id, '--table', 'notes', '--replace', '--to', file, '--output-dir', stash, '--yes']);
    expectExit(refused, 2, /referenced by other tables \(foreign key of tags\)/);
    const r = await runCli(['restore', id, '--table', 'notes', '--replace', '--cascade-plan', '--to', file, '--output-dir', stash, '--yes']);
    expectExit(r, 0);
    const kept = /kept as (notes__before_\d{8}_\d{6})/.exec(r.stdout)?.[1];
    assert.ok(kept, r.stdout);
    const db = new Database(file);
    try {
      assert.deepEqual(db.prepare('SELECT id FROM notes ORDER BY id').pluck().all(), [1, 2, 3]);
      assert.deepEqual(db.prepare(`SELECT id FROM "${kept}" ORDER BY id`).pluck().all(), [1, 7]);
      assert.equal(db.prepare('SELECT count(*) FROM titles').pluck().get(), 3);
      assert.equal(db.prepare(`SELECT tbl_name FROM sqlite_schema WHERE type = 'trigger' AND name = 'notes_log'`).pluck().get(), 'notes');
      const before = db.prepare('SELECT count(*) FROM log').pluck().get() as number;
      db.exec(`INSERT INTO notes VALUES (9, 'nine', 0, 0, NULL, NULL)`);
      assert.equal(db.prepare('SELECT count(*) FROM log').pluck().get(), before + 1);
      assert.deepEqual(db.prepare(`SELECT "table" FROM pragma_foreign_key_list('tags')`).pluck().all(), ['notes']);
    } finally {
      db.close();
    }
  });

  test('a table many times larger than one write to the output comes out whole and in order, CSV and JSON Lines', async () => {
    const dir = tempDir('dbstash-tables-sqlite-big');
    const file = path.join(dir, 'big.db');
    const db = new Database(file);
    db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)');
    const insert = db.prepare('INSERT INTO t VALUES (?, ?)');
    // 20 000 rows of about 60 characters: some 1.2 MB of output, written in pieces of 64 Ki characters.
    db.transaction(() => {
      for (let i = 1; i <= 20_000; i++) insert.run(i, `row ${i} ${'x'.repeat(i % 97)}`);
    })();
    db.close();
    const stash = path.join(dir, 'stash');
    const id = await backupId(file, stash);
    const out = await runCli(['export', id, '--table', 't', '--output-dir', stash]);
    expectExit(out, 0);
    const lines = out.stdout.split('\n');
    assert.equal(lines.pop(), '', 'the output ends with a newline');
    assert.equal(lines.length, 20_000);
    lines.forEach((line, n) => {
      const i = n + 1;
      if (line !== JSON.stringify({ id: i, v: `row ${i} ${'x'.repeat(i % 97)}` })) assert.fail(`line ${i}: ${line}`);
    });
    const target = path.join(dir, 't.csv');
    const csv = await runCli(['export', id, '--table', 't', '--format', 'csv', '--output', target, '--output-dir', stash]);
    expectExit(csv, 0);
    const rows = readFileSync(target, 'utf8').split('\r\n');
    assert.equal(rows[0], 'id,v');
    assert.equal(rows.at(-1), '');
    assert.equal(rows.length, 20_002);
    assert.equal(rows[20_000], `20000,row 20000 ${'x'.repeat(20_000 % 97)}`);
    const records = readdirSync(path.join(stash, readdirSync(stash)[0])).filter((f) => f.includes('.export-'));
    const counted = records.map((f) => JSON.parse(readFileSync(path.join(stash, readdirSync(stash)[0], f), 'utf8')) as { rows: number; result: string });
    assert.deepEqual(counted.map((r) => [r.rows, r.result]), [[20_000, 'succeeded'], [20_000, 'succeeded']]);
  });
});
