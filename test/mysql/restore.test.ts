/**
 * MySQL/MariaDB through verify and restore: the structure check of damaged dumps, a restore that
 * stops at the first error and names the statement, `dbstash restore` over an existing database
 * (tables moved by RENAME TABLE, views, triggers and routines re-created, the old database kept),
 * and `dbstash verify --drill` into a throwaway MariaDB that dbstash starts and removes.
 */
import assert from 'node:assert/strict';
import { chmodSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import mysql from 'mysql2/promise';
import { ExitCode, IntegrityError, RestoreError } from '../../src/core/errors.js';
import { loadEngine } from '../../src/engines/index.js';
import type { Engine, RestoreOptions } from '../../src/engines/engine.js';
import { parseTarget } from '../../src/engines/target.js';
import { startMariadb, type MariaServer } from '../harness/mariadb.js';
import { runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { seriesDir } from '../harness/stash.js';

let server: MariaServer;
let engine: Engine;

const opts = (format = 'sql'): RestoreOptions => ({ signal: new AbortController().signal, format, tempDir: tempDir('dbstash-my-restore-tmp'), warn: () => {} });
const sql = (text: string) => Readable.from([Buffer.from(text)]);
const HEADER = '/*M!999999\\- enable the sandbox mode */ \n-- MariaDB dump 10.19  Distrib 10.11.19-MariaDB\n--\n';

async function rows<T>(query: string, db?: string): Promise<T[]> {
  return (await server.query<mysql.RowDataPacket[]>(query, db)) as T[];
}

describe('mysql verify and restore', { timeout: 180_000 }, () => {
  before(async () => {
    server = await startMariadb();
    engine = await loadEngine('mysql');
    await server.createDatabase('shop');
    await server.query(
      `CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40)) ENGINE=InnoDB;
       CREATE TABLE orders (id INT AUTO_INCREMENT PRIMARY KEY, customer INT, total DECIMAL(10,2), FOREIGN KEY (customer) REFERENCES customers(id));
       INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');
       INSERT INTO orders (customer, total) VALUES (1, 9.99), (2, 100.00), (2, 0.01);
       CREATE VIEW big_orders AS SELECT o.id, c.name FROM orders o JOIN customers c ON c.id = o.customer WHERE o.total > 1;
       CREATE VIEW names AS SELECT name FROM big_orders;
       CREATE TRIGGER orders_bi BEFORE INSERT ON orders FOR EACH ROW SET NEW.total = ROUND(NEW.total, 1);
       CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
       CREATE PROCEDURE count_orders() BEGIN SELECT COUNT(*) FROM orders; END;`,
      'shop',
    );
  });
  after(async () => {
    await server?.stop();
  });

  test('checkStructure: a truncated dump, a dump cut inside a statement, and a non-dump are IntegrityErrors', async () => {
    const good = `${HEADER}CREATE TABLE t (a int);\nINSERT INTO t VALUES\n(1),\n(2);\n-- Dump completed on 2026-11-23  8:00:00\n`;
    assert.equal((await engine.checkStructure!(sql(good), opts())).summary, '2 statements, 1 tables');
    await assert.rejects(engine.checkStructure!(sql(good.slice(0, good.indexOf('-- Dump completed'))), opts()), (e: Error) => e instanceof IntegrityError && /truncated: no "-- Dump completed" trailer/.test(e.message));
    await assert.rejects(
      engine.checkStructure!(sql(`${HEADER}CREATE TABLE t (a int);\nINSERT INTO t VALUES\n(1),\n-- Dump completed\n`), opts()),
      (e: Error) => e instanceof IntegrityError && /ends inside the statement that starts at line 5: INSERT INTO t VALUES/.test(e.message),
    );
    await assert.rejects(engine.checkStructure!(sql('PGDMP binary stuff\n-- Dump completed\n'), opts()), (e: Error) => e instanceof IntegrityError && /not a mariadb-dump\/mysqldump file/.test(e.message));
  });

  test('a restore stops at the first error and names the line and the statement', async () => {
    const target = await engine.createDatabase!(parseTarget(server.url('shop')), 'broken_restore');
    const dump = `${HEADER}CREATE TABLE t (a int);\nINSERT INTO t VALUES (1);\nINSERT INTO t VALUES\n(2),\n(no_such_column);\nINSERT INTO t VALUES (3);\n-- Dump completed\n`;
    // The statement is quoted from the dump read again (the restore itself does not parse it).
    await assert.rejects(engine.restore!(target, sql(dump), { ...opts(), reread: async () => sql(dump) }), (e: Error) => {
      assert.ok(e instanceof RestoreError, String(e));
      assert.match(e.message, /stopped at line 6: ERROR 1054 \(42S22\): Unknown column 'no_such_column'/);
      assert.match(e.message, /statement: INSERT INTO t VALUES$/);
      return true;
    });
    const restored = await rows<{ a: number }>('SELECT a FROM t ORDER BY a', 'broken_restore');
    assert.deepEqual(restored.map((r) => r.a), [1], 'nothing after the failing statement ran');
  });

  test('dbstash restore over an existing database: swap, the old one kept, views/triggers/routines carried over', async () => {
    const stash = tempDir('dbstash-my-swap');
    const b = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--json']);
    assert.equal(b.code, ExitCode.ok, b.stderr);
    const { id } = JSON.parse(b.stdout) as { id: string };
    await server.createDatabase('live');
    await server.query(`CREATE TABLE old_stuff (x INT); INSERT INTO old_stuff VALUES (42);`, 'live');

    const r = await runCli(['restore', id, '--output-dir', stash, '--to', server.url('live'), '--yes']);
    assert.equal(r.code, ExitCode.ok, r.stderr);
    const kept = /kept as (live_before_\w+)/.exec(r.stdout + r.stderr)?.[1];
    assert.ok(kept, `the old database is kept: ${r.stdout}`);

    const objects = await rows<{ t: string; n: string }>(
      `SELECT TABLE_TYPE AS t, TABLE_NAME AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'live' ORDER BY 2`,
    );
    assert.deepEqual(objects.map((o) => `${o.t}:${o.n}`), ['VIEW:big_orders', 'BASE TABLE:customers', 'VIEW:names', 'BASE TABLE:orders']);
    assert.deepEqual((await rows<{ name: string }>('SELECT name FROM names ORDER BY name', 'live')).map((x) => x.name), ['Ada', 'Grace']);
    await server.query(`INSERT INTO orders (customer, total) VALUES (1, 5.55)`, 'live');
    assert.equal((await rows<{ total: string }>('SELECT total FROM orders WHERE id = 4', 'live'))[0].total, '5.60', 'the trigger works in the restored database');
    assert.equal((await rows<{ v: number }>('SELECT twice(21) AS v', 'live'))[0].v, 42, 'the function came along');
    assert.equal((await rows<{ n: number }>(`SELECT COUNT(*) AS n FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'live'`))[0].n, 2);

    assert.deepEqual(await rows(`SELECT x FROM old_stuff`, kept), [{ x: 42 }], 'the old database and its data are intact');
    assert.equal((await rows(`SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'live_restoring%'`)).length, 0, 'no temporary database left');
  });

  test('a dump damaged mid-file: the client stops on it, the stream\'s checksum names it (exit 7), nothing is swapped', async () => {
    const stash = tempDir('dbstash-my-damaged');
    const b = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--json', '--compression', 'none']);
    assert.equal(b.code, ExitCode.ok, b.stderr);
    const { id } = JSON.parse(b.stdout) as { id: string };
    const file = path.join(seriesDir(stash, 'shop'), readdirSync(seriesDir(stash, 'shop')).find((f) => f.startsWith(`${id}.`) && f.endsWith('.sql'))!);
    const dump = readFileSync(file);
    const at = dump.indexOf('INSERT INTO `orders`');
    assert.ok(at > 0, 'the dump inserts into orders');
    dump[at] ^= 0x40; // "INSERT" becomes "\tNSERT": the server rejects the statement
    writeFileSync(file, dump);
    await server.createDatabase('guarded');
    await server.query(`CREATE TABLE keep (x INT); INSERT INTO keep VALUES (7);`, 'guarded');
    const r = await runCli(['restore', id, '--output-dir', stash, '--to', server.url('guarded'), '--yes']);
    assert.equal(r.code, ExitCode.verifyFailed, r.stderr);
    assert.match(r.stderr, /error: checksum mismatch: \S+\.sql has sha256 [0-9a-f]{64}, manifest says [0-9a-f]{64}; \S+\/guarded was not touched; the new database guarded_restoring_\d{8}_\d{6} was dropped/);
    assert.deepEqual(await rows(`SELECT x FROM keep`, 'guarded'), [{ x: 7 }]);
    assert.equal((await rows(`SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE 'guarded\\_%'`)).length, 0, 'no temporary or kept database');
  });

  test('without the privileges to swap: in place after a safety backup, and a failed restore rolls back', async () => {
    await server.createDatabase('plain');
    await server.query(`CREATE TABLE items (id INT PRIMARY KEY, label VARCHAR(20)); INSERT INTO items VALUES (1, 'one'), (2, 'two');`, 'plain');
    await server.createDatabase('inplace');
    await server.query(`CREATE TABLE items (id INT PRIMARY KEY, label VARCHAR(20)); INSERT INTO items VALUES (9, 'nine'); CREATE TABLE extra (x INT);`, 'inplace');
    await server.query(`CREATE USER 'owner'@'%' IDENTIFIED BY 'owner-pw'; GRANT ALL PRIVILEGES ON inplace.* TO 'owner'@'%';`);
    const to = `mysql://owner:owner-pw@127.0.0.1:${server.port}/inplace`;
    const stash = tempDir('dbstash-my-inplace');
    const backup = async (db: string) => {
      const b = await runCli(['backup', server.url(db), '--output-dir', stash, '--json']);
      assert.equal(b.code, ExitCode.ok, b.stderr);
      return (JSON.parse(b.stdout) as { id: string }).id;
    };

    const ok = await runCli(['restore', await backup('plain'), '--output-dir', stash, '--to', to, '--yes']);
    assert.equal(ok.code, ExitCode.ok, ok.stderr);
    assert.match(ok.stderr, /a swap is impossible \(user "owner" lacks CREATE, DROP/);
    assert.match(ok.stdout + ok.stderr, /safety backup/);
    assert.deepEqual(await rows(`SELECT id, label FROM items ORDER BY id`, 'inplace'), [{ id: 1, label: 'one' }, { id: 2, label: 'two' }]);
    assert.deepEqual(await rows(`SELECT TABLE_NAME AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'inplace'`), [{ n: 'items' }], 'in place means the old tables are gone');

    // shop's trigger and views have DEFINER=root, which "owner" may not create: the restore fails half-way.
    const failed = await runCli(['restore', await backup('shop'), '--output-dir', stash, '--to', to, '--yes']);
    assert.equal(failed.code, ExitCode.restoreFailed, failed.stderr);
    assert.match(failed.stderr, /rolled back/);
    assert.deepEqual(await rows(`SELECT id, label FROM items ORDER BY id`, 'inplace'), [{ id: 1, label: 'one' }, { id: 2, label: 'two' }], 'the database is as it was');
    assert.deepEqual(await rows(`SELECT TABLE_NAME AS n FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'inplace'`), [{ n: 'items' }]);
  });

  test('dbstash verify --drill restores into a throwaway MariaDB that dbstash starts and removes', async () => {
    const stash = tempDir('dbstash-my-drill');
    const scratch = tempDir('dbstash-my-drill-tmp');
    const b = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--json']);
    assert.equal(b.code, ExitCode.ok, b.stderr);
    const { id } = JSON.parse(b.stdout) as { id: string };
    // Its own system temp dir, one the OS user "mysql" can traverse: where root puts the scratch server when
    // "mysql" cannot reach --temp-dir (tempDir is 0700), and where no other test file's drill lands.
    const sysTmp = tempDir('dbstash-my-drill-systmp');
    chmodSync(sysTmp, 0o711);
    const v = await runCli(['verify', id, '--output-dir', stash, '--drill', '--temp-dir', scratch], { timeoutMs: 120_000, env: { TMPDIR: sysTmp } });
    assert.equal(v.code, ExitCode.ok, v.stderr);
    assert.match(v.stdout + v.stderr, /throwaway scratch instance/);
    assert.match(v.stdout, /drill passed/);
    assert.match(v.stdout, /2 tables match the manifest/);
    assert.deepEqual(readdirSync(scratch), [], 'the scratch server and its files are gone');
    assert.deepEqual(readdirSync(sysTmp), [], 'also where root puts it when mysql cannot reach --temp-dir');
    const records = readdirSync(seriesDir(stash, 'shop')).filter((f) => f.includes('.verify-'));
    assert.equal(records.length, 1);
    assert.equal(JSON.parse(readFileSync(path.join(seriesDir(stash, 'shop'), records[0]), 'utf8')).result, 'passed');
  });

  test("the questions without a database share one kept session: not the process's hold, dropped when the server ends it, not given back after a failure", async () => {
    const target = parseTarget(server.url('shop'));
    const watcher = await mysql.createConnection({ uri: server.url() });
    // dbstash's sessions without a default database (the watcher excluded). A session the server
    // is still ending, or one that has just answered, may show for a moment: the checks poll.
    const kept = async () =>
      ((await watcher.query(`SELECT ID AS id FROM information_schema.PROCESSLIST WHERE DB IS NULL AND ID <> CONNECTION_ID() AND COMMAND NOT IN ('Killed', 'Daemon') ORDER BY ID`))[0] as { id: number }[]).map((r) => r.id);
    const settle = async (done: (ids: number[]) => boolean) => {
      let ids = await kept();
      for (let i = 0; i < 300 && !done(ids); i++) ids = await new Promise((r) => setTimeout(r, 10)).then(kept);
      return ids;
    };
    const sockets = () => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length;
    try {
      const before = sockets();
      assert.equal(await engine.databaseExists!(target), true);
      const [first, ...others] = await settle((ids) => ids.length === 1);
      assert.ok(first !== undefined);
      assert.deepEqual(others, []);
      assert.equal(sockets(), before, 'the kept session does not hold the process');
      assert.ok((await engine.listDatabases!(target)).includes('shop'));
      const made = await engine.createDatabase!(target, 'shop_kept', {});
      await engine.databaseProperties!(made);
      await engine.dropDatabase!(made);
      assert.deepEqual(await settle((ids) => ids.length === 1 && ids[0] === first), [first], 'one session answered every question');

      await watcher.query(`KILL ${Number(first)}`);
      const listed = async (id: number) => ((await watcher.query(`SELECT 1 FROM information_schema.PROCESSLIST WHERE ID = ?`, [id]))[0] as unknown[]).length > 0;
      for (let i = 0; i < 500 && (await listed(first)); i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(await engine.databaseExists!(target), true, 'the next question is answered');
      const [second, ...more] = await settle((ids) => ids.length === 1);
      assert.deepEqual(more, []);
      assert.ok(second !== undefined && second !== first);

      await assert.rejects(engine.dropDatabase!({ ...target, database: 'no_such_database' }), /no_such_database/);
      await engine.databaseExists!(target);
      const after = await settle((ids) => ids.length === 1);
      assert.equal(after.length, 1);
      assert.notEqual(after[0], second, 'the session of the failed question was closed');
    } finally {
      await watcher.end();
    }
  });
});
