/**
 * MySQL/MariaDB restores that must not lose or change anything: a system-versioned table (and its
 * history) survives `dbstash restore` over an existing database, in the restored database and in
 * the kept one; a swap the restoring user cannot finish (a definer it may not set) is refused
 * before anything moves; a swap that fails at any step puts every object back where it was, with
 * the session settings it was created with; two restores into one target never run at once, and
 * a killed one does not block the next.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import mysql from 'mysql2/promise';
import type { Manifest } from '../../src/catalog/manifest.js';
import { ExitCode, RestoreError } from '../../src/core/errors.js';
import { swapMyDatabases } from '../../src/engines/mysql/move.js';
import { parseTarget } from '../../src/engines/target.js';
import { startMariadb, type MariaServer } from '../harness/mariadb.js';
import { backupId, expectExit, runCli, spawnCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';

let server: MariaServer;

async function rows(sql: string, db?: string): Promise<Record<string, unknown>[]> {
  return (await server.query<mysql.RowDataPacket[]>(sql, db)).map((r) => ({ ...r }));
}

/** `dbstash backup --json` of `db` into `stash`: the new backup's id and manifest. */
async function backup(db: string, stash: string, ...args: string[]): Promise<{ id: string; manifest: Manifest; stderr: string }> {
  const r = await runCli(['backup', server.url(db), '--output-dir', stash, '--env', 'prod', '--json', ...args]);
  expectExit(r, ExitCode.ok);
  return { ...(JSON.parse(r.stdout) as { id: string; manifest: Manifest }), stderr: r.stderr };
}

async function databases(like: string): Promise<string[]> {
  return (await rows(`SELECT SCHEMA_NAME AS n FROM information_schema.SCHEMATA WHERE SCHEMA_NAME LIKE ${mysql.escape(like)} ORDER BY 1`)).map((r) => r.n as string);
}

/**
 * Everything a database is, read from the server's catalog: its properties; per table its type,
 * SHOW CREATE and every row it has held (system-versioned: with the times each was current); per
 * view, trigger, routine and event its definition and the session settings it was created with.
 */
async function snapshot(db: string): Promise<Record<string, unknown>> {
  const e = mysql.escape(db);
  const out: Record<string, unknown> = {
    database: await rows(`SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME, SCHEMA_COMMENT FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ${e}`),
    // A view's definition names its own database: that part is the same for every name.
    views: (await rows(`SELECT TABLE_NAME, VIEW_DEFINITION, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DEFINER, SECURITY_TYPE FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ${e} ORDER BY 1`)).map(
      (v) => ({ ...v, VIEW_DEFINITION: String(v.VIEW_DEFINITION).replaceAll(mysql.escapeId(db), '`<this database>`') }),
    ),
    triggers: await rows(
      `SELECT TRIGGER_NAME, EVENT_OBJECT_TABLE, ACTION_ORDER, ACTION_STATEMENT, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE, DEFINER
       FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ${e} ORDER BY 1`,
    ),
    routines: await rows(
      `SELECT ROUTINE_NAME, ROUTINE_TYPE, ROUTINE_DEFINITION, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE, DEFINER, SECURITY_TYPE
       FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ${e} ORDER BY 1, 2`,
    ),
    events: await rows(
      `SELECT EVENT_NAME, EVENT_DEFINITION, CHARACTER_SET_CLIENT, COLLATION_CONNECTION, DATABASE_COLLATION, SQL_MODE, DEFINER, TIME_ZONE, STATUS
       FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ${e} ORDER BY 1`,
    ),
  };
  const tables = await rows(`SELECT TABLE_NAME AS name, TABLE_TYPE AS type FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${e} AND TABLE_TYPE <> 'VIEW' ORDER BY BINARY TABLE_NAME`);
  for (const t of tables as { name: string; type: string }[]) {
    const create = Object.values((await rows(`SHOW CREATE TABLE ${mysql.escapeId(t.name)}`, db))[0])[1];
    const history = t.type === 'SYSTEM VERSIONED';
    const period = history ? ', CAST(ROW_START AS CHAR) AS valid_from, CAST(ROW_END AS CHAR) AS valid_to' : ''; // to the microsecond
    const content = await rows(`SELECT *${period} FROM ${mysql.escapeId(t.name)}${history ? ' FOR SYSTEM_TIME ALL' : ''}`, db);
    out[`${t.type} ${t.name}`] = { create, rows: content.map((r) => JSON.stringify(r)).sort() };
  }
  return out;
}

/**
 * A database with one of each table type and object kind, several created by a utf8mb3 client;
 * `as` creates them as another user (who then is their definer).
 */
async function populate(db: string, flavour: string, as?: { user: string; password: string }): Promise<void> {
  const query = async (sql: string, database: string) => {
    if (!as) return void (await server.query(sql, database));
    const conn = await mysql.createConnection({ host: server.host, port: server.port, ...as, database, multipleStatements: true });
    try {
      await conn.query(sql);
    } finally {
      await conn.end();
    }
  };
  await query(
    `CREATE TABLE items (id INT PRIMARY KEY, label VARCHAR(40));
     INSERT INTO items VALUES (1, '${flavour} one'), (2, '${flavour} two');
     CREATE TABLE ledger (id INT PRIMARY KEY, amount INT) WITH SYSTEM VERSIONING;
     INSERT INTO ledger VALUES (1, 10), (2, 20);
     UPDATE ledger SET amount = 11 WHERE id = 1;
     DELETE FROM ledger WHERE id = 2;
     CREATE SEQUENCE ticket START WITH 500;
     SELECT NEXTVAL(ticket);
     SET NAMES utf8mb3;
     CREATE VIEW labels AS SELECT id, label FROM items;
     CREATE VIEW first_label AS SELECT label FROM labels WHERE id = 1;
     CREATE TRIGGER items_bi BEFORE INSERT ON items FOR EACH ROW SET NEW.label = UPPER(NEW.label);
     CREATE TRIGGER ledger_bu BEFORE UPDATE ON ledger FOR EACH ROW SET NEW.amount = NEW.amount + 0;
     CREATE FUNCTION twice(x INT) RETURNS INT DETERMINISTIC RETURN x * 2;
     SET sql_mode = 'ANSI_QUOTES';
     CREATE PROCEDURE "list items"() SQL SECURITY INVOKER SELECT * FROM items;
     SET sql_mode = 'ORACLE';
     CREATE PACKAGE ${flavour}_pkg AS FUNCTION n RETURN INT; END;
     CREATE PACKAGE BODY ${flavour}_pkg AS FUNCTION n RETURN INT AS BEGIN RETURN 1; END; END;
     SET sql_mode = DEFAULT;
     SET time_zone = '+02:00';
     CREATE EVENT tidy ON SCHEDULE EVERY 1 DAY STARTS '2030-01-01 00:00:00' DISABLE DO DELETE FROM items WHERE id < 0;`,
    db,
  );
}

describe('mysql restores that keep everything', { timeout: 300_000 }, () => {
  before(async () => {
    server = await startMariadb();
    await server.query(`CREATE USER 'app'@'%' IDENTIFIED BY 'app-pw'`);
  });
  after(async () => {
    await server?.stop();
  });

  test('dbstash restore over a database with a system-versioned table: it and its history are in the restored database and in the kept one', async () => {
    await server.createDatabase('sv_source');
    await server.query(
      `CREATE TABLE prices (id INT PRIMARY KEY, price DECIMAL(8,2)) WITH SYSTEM VERSIONING;
       INSERT INTO prices VALUES (1, 9.99), (2, 19.99);
       UPDATE prices SET price = 8.99 WHERE id = 1;
       CREATE SEQUENCE invoice_no;
       CREATE TABLE plain (x INT); INSERT INTO plain VALUES (1);`,
      'sv_source',
    );
    await server.createDatabase('sv_live');
    await server.query(
      `CREATE TABLE audit (id INT PRIMARY KEY, who VARCHAR(20)) WITH SYSTEM VERSIONING;
       INSERT INTO audit VALUES (1, 'ada'), (2, 'grace');
       DELETE FROM audit WHERE id = 2;
       CREATE TABLE prices (id INT PRIMARY KEY, price DECIMAL(8,2)) WITH SYSTEM VERSIONING;
       INSERT INTO prices VALUES (7, 1.00);`,
      'sv_live',
    );
    const stash = tempDir('dbstash-my-sv');
    const { id, manifest } = await backup('sv_source', stash);
    const source = await snapshot('sv_source');
    const live = await snapshot('sv_live');
    assert.equal((source['SYSTEM VERSIONED prices'] as { rows: string[] }).rows.length, 3, 'the source table has a history row');
    assert.ok(manifest.dump.args.includes('--dump-history'), 'the history is dumped');
    assert.equal(manifest.dump.details.systemVersionedHistory, 'dumped');
    assert.deepEqual(manifest.tables.map((t) => `${t.name}=${t.rows}`), ['plain=1', 'prices=3'], 'counted with its history; a sequence holds no rows to count');

    const r = await runCli(['restore', id, '--output-dir', stash, '--to', server.url('sv_live'), '--yes']);
    expectExit(r, ExitCode.ok);
    const kept = /kept as (sv_live_before_\w+)/.exec(r.stdout + r.stderr)?.[1];
    assert.ok(kept, `the old database is kept: ${r.stdout}${r.stderr}`);
    assert.deepEqual(await snapshot('sv_live'), source, 'the restored database is the source, history included');
    assert.deepEqual(await snapshot(kept), live, 'the kept database is the old one, its system-versioned tables and their history included');
    assert.deepEqual(await databases('sv_live_restoring%'), [], 'no temporary database left');
  });

  test('tables versioned by transaction id: mariadb-dump cannot dump their history, the backup says so and counts what the dump holds', async () => {
    await server.createDatabase('trx_versioned');
    await server.query(
      `CREATE TABLE moves (id INT PRIMARY KEY, v INT,
         rs BIGINT UNSIGNED GENERATED ALWAYS AS ROW START INVISIBLE, re BIGINT UNSIGNED GENERATED ALWAYS AS ROW END INVISIBLE,
         PERIOD FOR SYSTEM_TIME (rs, re)) WITH SYSTEM VERSIONING;
       INSERT INTO moves (id, v) VALUES (1, 1), (2, 2);
       UPDATE moves SET v = 3 WHERE id = 1;
       CREATE TABLE stamps (id INT PRIMARY KEY) WITH SYSTEM VERSIONING;
       INSERT INTO stamps VALUES (1), (2);
       DELETE FROM stamps WHERE id = 1;`,
      'trx_versioned',
    );
    const stash = tempDir('dbstash-my-trx');
    const { id, manifest, stderr } = await backup('trx_versioned', stash, '--checksums');
    assert.match(stderr, /the history of the system-versioned tables moves, stamps is not dumped: mariadb-dump cannot dump the history of tables versioned by transaction id \(moves\)/);
    assert.ok(!manifest.dump.args.includes('--dump-history'));
    assert.equal(manifest.dump.details.systemVersionedHistory, 'current rows only');
    assert.ok(manifest.warnings.some((w) => /is not dumped/.test(w)), 'the warning is kept in the manifest');
    assert.deepEqual(manifest.tables.map((t) => `${t.name}=${t.rows}`), ['moves=2', 'stamps=1'], 'current rows, as dumped');
    const v = await runCli(['verify', id, '--output-dir', stash, '--deep'], { timeoutMs: 120_000 });
    expectExit(v, ExitCode.ok, /passed/);
  });

  test('a swap the restoring user cannot finish (a definer it may not set) is refused before anything moves', async () => {
    await server.query(
      `CREATE USER 'restorer'@'%' IDENTIFIED BY 'restorer-pw';
       GRANT ALL PRIVILEGES ON *.* TO 'restorer'@'%';
       REVOKE SUPER, SET USER ON *.* FROM 'restorer'@'%';`,
    );
    await server.createDatabase('tables_only');
    await server.query(`CREATE TABLE items (id INT PRIMARY KEY); INSERT INTO items VALUES (1), (2), (3);`, 'tables_only');
    await server.createDatabase('guarded');
    await server.query(
      `CREATE TABLE items (id INT PRIMARY KEY, note VARCHAR(20)); INSERT INTO items VALUES (42, 'kept safe');
       CREATE TABLE history (id INT) WITH SYSTEM VERSIONING; INSERT INTO history VALUES (1); DELETE FROM history;
       CREATE DEFINER = 'app'@'%' VIEW notes AS SELECT note FROM items;
       CREATE TRIGGER items_bi BEFORE INSERT ON items FOR EACH ROW SET NEW.note = TRIM(NEW.note);`,
      'guarded',
    );
    const before = await snapshot('guarded');
    const stash = tempDir('dbstash-my-definer');
    const id = await backupId(server.url('tables_only'), stash);
    const r = await runCli(['restore', id, '--output-dir', stash, '--to', `mysql://restorer:restorer-pw@127.0.0.1:${server.port}/guarded`, '--yes']);
    expectExit(r, ExitCode.restoreFailed, /refused swapping guarded and guarded_restoring_\d{8}_\d{6} \(keeping the old one as guarded_before_\d{8}_\d{6}\) before moving anything/);
    assert.match(r.stderr, /may not re-create objects with another definer \(it lacks SET USER and SUPER\): view guarded\.notes \(DEFINER app@%\), trigger guarded\.items_bi \(DEFINER root@127\.0\.0\.1\)/);
    assert.match(r.stderr, /nothing moved: guarded is as it was/);
    assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    assert.deepEqual(await snapshot('guarded'), before, 'the target is untouched');
    assert.deepEqual(await databases('guarded\\_%'), [], 'no kept or temporary database left');
  });

  test('a swap that fails at any step puts every object back where it was, with its settings', async () => {
    await server.query(`CREATE DATABASE fail_live CHARACTER SET latin1 COMMENT 'live'; CREATE DATABASE fail_copy CHARACTER SET utf8mb4 COLLATE utf8mb4_bin;`);
    await populate('fail_live', 'live');
    await populate('fail_copy', 'copy');
    await server.query(`CREATE DEFINER = 'app'@'%' VIEW only_live AS SELECT 1 AS one`, 'fail_live');
    const live = await snapshot('fail_live');
    const copy = await snapshot('fail_copy');
    const target = parseTarget(server.url('fail_live'));
    const restored = parseTarget(server.url('fail_copy'));
    const swap = (failAt: string, onStep?: (step: string) => Promise<void>) =>
      swapMyDatabases(target, restored, 'fail_kept', {
        async afterStep(step) {
          await onStep?.(step);
          if (step === failAt) throw new Error(`injected failure after "${step}"`);
        },
      });
    const expectPutBack = async (err: unknown, what: string) => {
      assert.ok(err instanceof RestoreError, `${what}: ${String(err)}`);
      assert.match(err.message, /swapping fail_live and fail_copy \(keeping the old one as fail_kept\) failed/, what);
      assert.match(err.message, /everything was put back: fail_live is as it was, the restored copy is still in fail_copy, and fail_kept does not exist/, what);
      assert.deepEqual(await snapshot('fail_live'), live, `${what}: fail_live is as it was`);
      assert.deepEqual(await snapshot('fail_copy'), copy, `${what}: fail_copy is as it was`);
      assert.deepEqual(await databases('fail\\_kept'), [], `${what}: no kept database`);
    };

    // The steps of a whole swap, recorded by one that fails at its very last step.
    const steps: string[] = [];
    await swap('emptied databases dropped', async (s) => void steps.push(s)).then(
      () => assert.fail('the swap should have failed at its last step'),
      (err) => expectPutBack(err, 'after the last step'),
    );
    assert.ok(steps.includes('tables moved') && steps.indexOf('tables moved') < steps.length - 3, `steps: ${steps.join(', ')}`);
    for (const step of steps) await swap(step).then(() => assert.fail(`no failure after "${step}"`), (err) => expectPutBack(err, `failing after "${step}"`));

    // A real server error half-way: once the tables have moved, something takes the name of a
    // view that must be re-created in the kept database. The intruder keeps that database alive,
    // and the message says where everything is.
    const err = await swap('never', async (step) => {
      if (step === 'tables moved') await server.query(`CREATE VIEW labels AS SELECT 'intruder' AS x`, 'fail_kept');
    }).then(() => assert.fail('the swap should have failed'), (e: unknown) => e);
    assert.ok(err instanceof RestoreError, String(err));
    assert.match(err.message, /failed \(re-creating the views, triggers and routines of fail_live in fail_kept\): re-creating in fail_kept failed: .*view labels: Table 'labels' already exists/);
    assert.match(err.message, /putting everything back failed too \(dropping fail_kept: fail_kept is not empty \(holds 1 view\); it was left in place\)/);
    assert.match(
      err.message,
      /now fail_live holds 3 tables, 3 views, 2 triggers, 1 procedure, 1 function, 1 package, 1 package body, 1 event; fail_kept holds 1 view; fail_copy holds 3 tables, 2 views, 2 triggers, 1 procedure, 1 function, 1 package, 1 package body, 1 event$/,
    );
    assert.deepEqual(await snapshot('fail_live'), live, 'fail_live is as it was');
    assert.deepEqual(await snapshot('fail_copy'), copy, 'fail_copy is as it was');
    await server.query(`DROP DATABASE fail_kept`);

    // A table written into the emptied copy during the move: the check before its drop finds it,
    // the copy is not dropped, and everything moves back.
    const intruded = await swap('never', async (step) => {
      if (step === 'objects re-created in fail_live') await server.query(`CREATE TABLE intruder (x INT)`, 'fail_copy');
    }).then(() => assert.fail('the swap should have failed'), (e: unknown) => e);
    assert.ok(intruded instanceof RestoreError, String(intruded));
    assert.match(intruded.message, /failed \(checking the result\): after moving, the databases do not hold what they should: fail_copy still holds 1 table; everything was put back/);
    await server.query(`DROP TABLE intruder`, 'fail_copy');
    assert.deepEqual(await snapshot('fail_live'), live, 'fail_live is as it was after the check');
    assert.deepEqual(await snapshot('fail_copy'), copy, 'fail_copy is as it was after the check');
    assert.deepEqual(await databases('fail\\_kept'), [], 'no kept database after the check');

    // And without a failure, the swap carries everything, setting for setting.
    await swapMyDatabases(target, restored, 'fail_kept');
    assert.deepEqual(await snapshot('fail_live'), copy, 'the restored copy has the live name');
    assert.deepEqual(await snapshot('fail_kept'), live, 'the old database is kept as it was');
    assert.deepEqual(await databases('fail\\_copy'), [], 'the emptied copy is dropped');
  });

  test('in place (no right to swap): a failed restore rolls back to the safety backup, system-versioned history, sequences, packages and events included', async () => {
    await server.query(
      `CREATE DATABASE owned; CREATE USER 'owner'@'%' IDENTIFIED BY 'owner-pw'; GRANT ALL PRIVILEGES ON owned.* TO 'owner'@'%';
       CREATE DATABASE foreign_definer; CREATE TABLE foreign_definer.t (x INT); CREATE VIEW foreign_definer.v AS SELECT x FROM foreign_definer.t;`,
    );
    await populate('owned', 'owned', { user: 'owner', password: 'owner-pw' });
    const before = await snapshot('owned');
    const stash = tempDir('dbstash-my-inplace-sv');
    const { id } = await backup('foreign_definer', stash);
    // The view's DEFINER is root, which "owner" may not set: the restore fails half-way.
    const r = await runCli(['restore', id, '--output-dir', stash, '--to', `mysql://owner:owner-pw@127.0.0.1:${server.port}/owned`, '--yes']);
    expectExit(r, ExitCode.restoreFailed, /a swap is impossible \(user "owner" lacks/);
    assert.match(r.stderr, /rolled back: mysql:\/\/owner:\*\*\*@127\.0\.0\.1:\d+\/owned holds the safety backup owned\.[0-9a-f]{8}_prod_\S+ again/);
    assert.deepEqual(await snapshot('owned'), before, 'the database is as it was, history, sequence state and object settings included');
  });

  test('two restores into one target at once: the second is refused while the first runs; a killed one does not block the next', async () => {
    await server.createDatabase('race_source');
    // Enough rows that a restore takes a moment.
    await server.query(`CREATE TABLE t (id INT PRIMARY KEY, pad VARCHAR(200)); INSERT INTO t SELECT seq, REPEAT('x', 200) FROM seq_1_to_20000;`, 'race_source');
    await server.createDatabase('race');
    await server.query(`CREATE TABLE old (x INT); INSERT INTO old VALUES (1);`, 'race');
    const stash = tempDir('dbstash-my-race');
    const id = await backupId(server.url('race_source'), stash);
    // Its own temp dir: a restore killed with -9 cannot remove its client's option file.
    const args = ['restore', id, '--output-dir', stash, '--to', server.url('race'), '--yes', '--temp-dir', tempDir('dbstash-my-race-tmp')];

    /** Starts a restore and waits until it is restoring into its temporary database. */
    const startRestore = async () => {
      const child = spawnCli(args);
      let output = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (output += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => (output += d));
      const exited = new Promise<number | null>((resolve) => child.once('close', resolve));
      const deadline = Date.now() + 30_000;
      while ((await databases('race\\_restoring\\_%')).length === 0) {
        assert.ok(Date.now() < deadline, `the first restore never started restoring: ${output}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      return { child, exited, output: () => output };
    };

    const first = await startRestore();
    first.child.kill('SIGSTOP'); // holds its lock, mid-restore, for as long as the second one takes
    try {
      const second = await runCli(args);
      expectExit(second, ExitCode.restoreFailed, /error: \[mysql\] another restore into race is running at 127\.0\.0\.1:\d+: connection \d+ \(root@127\.0\.0\.1:\d+, for \d+ s\) holds the lock "dbstash restore race"/);
      assert.doesNotMatch(second.stderr, /ER_|errno|sqlState|\n\s+at /, 'no raw SQL error, no stack trace');
      assert.equal((await databases('race\\_restoring\\_%')).length, 1, "the second restore left the first one's temporary database alone");
    } finally {
      first.child.kill('SIGCONT');
    }
    assert.equal(await first.exited, ExitCode.ok, first.output());
    assert.deepEqual(await rows(`SELECT COUNT(*) AS n FROM t`, 'race'), [{ n: 20000 }]);

    // kill -9 mid-restore: the server releases the lock with the connection; the next restore
    // runs, and drops the temporary database the killed one left.
    const killed = await startRestore();
    const leftover = (await databases('race\\_restoring\\_%'))[0];
    killed.child.kill('SIGKILL');
    await killed.exited;
    const next = await runCli(args);
    expectExit(next, ExitCode.ok, new RegExp(`dropped ${leftover}, left by an earlier restore into race that did not finish`));
    assert.deepEqual(await databases('race\\_restoring\\_%'), []);
  });
});
