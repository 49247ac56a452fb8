// Single tables of a MariaDB backup against a real server: a table restored beside the live one
// as <table>__restored_<stamp> (its rows, indexes and primary key; its trigger and its foreign key
// to a table left out reported), only that table's rows read from the dump, nothing live changed,
// the printed copy-back working; an unknown table refused; export with exact values (DECIMAL and
// BIGINT digits, binary as base64, TIMESTAMP in UTC, DATETIME without a zone) through a throwaway
// MariaDB; and the INSERT-line filter across chunk boundaries.

import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import type mysql from 'mysql2/promise';
import { InsertFilter } from '../../src/engines/mysql/tables.js';
import { startMariadb, type MariaServer } from '../harness/mariadb.js';
import { backupId, expectExit, runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';

let server: MariaServer;
let stash: string;
let id: string;

async function rows<T>(sql: string, db = 'shop'): Promise<T[]> {
  return (await server.query<mysql.RowDataPacket[]>(sql, db)) as T[];
}

before(async () => {
  server = await startMariadb();
  await server.createDatabase('shop');
  await server.query(
    `CREATE TABLE customers (id INT PRIMARY KEY, name VARCHAR(40));
     CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer INT, total DECIMAL(20,4), big BIGINT UNSIGNED,
       data VARBINARY(8), at TIMESTAMP(6) NULL, day DATETIME NULL, note TEXT NULL, KEY by_customer (customer),
       FOREIGN KEY (customer) REFERENCES customers(id));
     CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40));
     CREATE TRIGGER orders_ai AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (what) VALUES ('order');
     INSERT INTO customers VALUES (1, 'Ada'), (2, 'Grace');
     SET time_zone = '+00:00';
     INSERT INTO orders (customer, total, big, data, at, day, note) VALUES
       (1, 12345678901234.5678, 18446744073709551615, X'DEADBEEF', '2024-01-01 08:00:00.123456', '2024-01-01 10:00:00', NULL),
       (2, 0.0001, 1, X'00', '2024-06-30 23:59:59', '2024-06-30 23:59:59', ''),
       (2, 3.5, 2, NULL, NULL, NULL, 'a "quoted", line\nbreak');`,
    'shop',
  );
  stash = tempDir('dbstash-tables-my');
  id = await backupId(server.url('shop'), stash);
  await server.query('DELETE FROM orders WHERE id > 1', 'shop');
});
after(() => server?.stop());

describe('restore --table (MariaDB)', () => {
  test('a table the backup does not hold is refused with the close names (exit 2)', async () => {
    const r = await runCli(['restore', id, '--table', 'order', '--to', server.url('shop'), '--output-dir', stash, '--yes']);
    expectExit(r, 2, /holds no table order/);
    assert.match(r.stderr, /close names it holds: orders/);
  });

  test('orders come back beside the live table; the live one and the other tables are untouched', async () => {
    const before = (await rows<{ n: number }>('SELECT count(*) AS n FROM audit'))[0].n;
    const r = await runCli(['restore', id, '--table', 'orders', '--to', server.url('shop'), '--output-dir', stash, '--yes']);
    expectExit(r, 0);
    const name = /main\.orders → (orders__restored_\d{8}_\d{6}) \(3 rows\)/.exec(r.stdout)?.[1];
    assert.ok(name, r.stdout);
    assert.deepEqual(await rows('SELECT id FROM orders'), [{ id: 1 }]);
    assert.equal((await rows<{ n: number }>(`SELECT count(*) AS n FROM \`${name}\``))[0].n, 3);
    assert.equal((await rows<{ n: number }>('SELECT count(*) AS n FROM audit'))[0].n, before);
    const keys = await rows<{ Key_name: string }>(`SHOW INDEX FROM \`${name}\``);
    assert.deepEqual([...new Set(keys.map((k) => k.Key_name))].sort(), ['PRIMARY', 'by_customer']);
    assert.match(r.stdout, /not restored with it: trigger orders_ai; foreign key orders_ibfk_1 → customers \(not restored\)/);
    // Nothing else left on the server: the temporary database is gone.
    const dbs = (await rows<{ Database: string }>('SHOW DATABASES', undefined as unknown as string)).map((d) => d.Database);
    assert.deepEqual(dbs.filter((d) => d.startsWith('shop')), ['shop']);
    const copyBack = /copy back: (INSERT INTO `orders` .*;)$/m.exec(r.stdout)?.[1];
    assert.ok(copyBack, r.stdout);
    await server.query(copyBack, 'shop');
    assert.equal((await rows<{ n: number }>('SELECT count(*) AS n FROM orders'))[0].n, 3);
    assert.equal((await rows<{ n: number }>(`SELECT count(*) AS n FROM orders o JOIN \`${name}\` r USING (id) WHERE o.total = r.total AND o.big = r.big`))[0].n, 3);
  });
});

describe('restore --table --replace (MariaDB)', () => {
  test('checked before the swap, then one RENAME TABLE; triggers and foreign keys move to the restored table', async () => {
    await server.query(`CREATE DATABASE shop_r; CREATE TABLE shop_r.customers LIKE shop.customers; INSERT INTO shop_r.customers SELECT * FROM shop.customers;`);
    await server.query(
      `CREATE TABLE orders (id BIGINT AUTO_INCREMENT PRIMARY KEY, customer INT, total DECIMAL(20,4), big BIGINT UNSIGNED,
         data VARBINARY(8), at TIMESTAMP(6) NULL, day DATETIME NULL, note TEXT NULL, KEY by_customer (customer),
         FOREIGN KEY (customer) REFERENCES customers(id));
       CREATE TABLE audit (id INT AUTO_INCREMENT PRIMARY KEY, what VARCHAR(40));
       CREATE TABLE order_lines (id INT PRIMARY KEY, order_id BIGINT, CONSTRAINT lines_order FOREIGN KEY (order_id) REFERENCES orders(id));
       CREATE TRIGGER orders_ai AFTER INSERT ON orders FOR EACH ROW INSERT INTO audit (what) VALUES ('order');
       INSERT INTO orders (id, customer, total) VALUES (1, 1, 1), (9, 2, 2);
       INSERT INTO order_lines VALUES (1, 9);`,
      'shop_r',
    );
    const url = server.url('shop_r');
    const refused = await runCli(['restore', id, '--table', 'orders', '--replace', '--to', url, '--output-dir', stash, '--yes']);
    expectExit(refused, 2, /referenced by other tables \(foreign key lines_order of order_lines\)/);
    // Order line 1 points at order 9, which the backup does not hold: refused before anything is swapped.
    const broken = await runCli(['restore', id, '--table', 'orders', '--replace', '--cascade-plan', '--to', url, '--output-dir', stash, '--yes']);
    expectExit(broken, 9, /row\(s\) of order_lines reference rows the restored orders does not hold/);
    assert.deepEqual(await rows('SELECT id FROM orders ORDER BY id', 'shop_r'), [{ id: 1 }, { id: 9 }]);
    for (const t of await rows<{ name: string }>(`SELECT TABLE_NAME AS name FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop_r' AND TABLE_NAME LIKE 'orders\\_\\_%'`)) {
      await server.query(`DROP TABLE \`${t.name}\``, 'shop_r');
    }
    await server.query('UPDATE order_lines SET order_id = 1', 'shop_r');
    const r = await runCli(['restore', id, '--table', 'orders', '--replace', '--cascade-plan', '--to', url, '--output-dir', stash, '--yes']);
    expectExit(r, 0);
    const kept = /kept as (orders__before_\d{8}_\d{6})/.exec(r.stdout)?.[1];
    assert.ok(kept, r.stdout);
    assert.deepEqual(await rows('SELECT id FROM orders ORDER BY id', 'shop_r'), [{ id: 1 }, { id: 2 }, { id: 3 }]);
    assert.deepEqual(await rows(`SELECT id FROM \`${kept}\` ORDER BY id`, 'shop_r'), [{ id: 1 }, { id: 9 }]);
    assert.deepEqual(await rows(`SELECT EVENT_OBJECT_TABLE AS t FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop_r'`), [{ t: 'orders' }]);
    const fks = await rows<{ t: string; p: string }>(`SELECT TABLE_NAME AS t, REFERENCED_TABLE_NAME AS p FROM information_schema.REFERENTIAL_CONSTRAINTS WHERE CONSTRAINT_SCHEMA = 'shop_r' ORDER BY 1`);
    assert.deepEqual(fks.map((f) => `${f.t}→${f.p}`).sort(), ['order_lines→orders', 'orders→customers']);
    const audited = (await rows<{ n: number }>('SELECT count(*) AS n FROM audit', 'shop_r'))[0].n;
    await server.query(`INSERT INTO orders (customer, total) VALUES (1, 1)`, 'shop_r');
    assert.deepEqual(await rows('SELECT max(id) AS m FROM orders', 'shop_r'), [{ m: 10 }]); // after the live table's ids
    assert.deepEqual(await rows('SELECT count(*) AS n FROM audit', 'shop_r'), [{ n: audited + 1 }]); // the trigger fires on the restored table
  });
});

describe('export (MariaDB)', () => {
  test('JSON Lines with exact values through a throwaway MariaDB', async () => {
    const r = await runCli(['export', id, '--table', 'orders', '--output-dir', stash], { timeoutMs: 120_000 });
    expectExit(r, 0);
    const text = r.stdout.trim().split('\n');
    assert.equal(text.length, 3);
    assert.match(text[0], /"total":12345678901234\.5678,"big":18446744073709551615,/);
    const first = JSON.parse(text[0]);
    assert.equal(first.data, Buffer.from('deadbeef', 'hex').toString('base64'));
    assert.equal(first.at, '2024-01-01T08:00:00.123456Z');
    assert.equal(first.day, '2024-01-01T10:00:00');
    assert.equal(first.note, null);
    assert.equal(JSON.parse(text[1]).note, '');
    assert.equal(JSON.parse(text[2]).note, 'a "quoted", line\nbreak');
    const csv = await runCli(['export', id, '--table', 'orders', '--format', 'csv', '--where', 'id = 3', '--output-dir', stash], { timeoutMs: 120_000 });
    expectExit(csv, 0);
    assert.equal(csv.stdout, 'id,customer,total,big,data,at,day,note\r\n3,2,3.5000,2,,,,"a ""quoted"", line\nbreak"\r\n');
  });
});

describe('the INSERT-line filter', () => {
  test('drops the other tables\' INSERT lines, whatever the chunk boundaries, and passes the rest untouched', async () => {
    const dump = [
      'CREATE TABLE `a` (x int);\n',
      'INSERT INTO `a` VALUES (1),(2);\n',
      'INSERT INTO `b``q` VALUES (3);\n',
      `INSERT INTO \`b\` VALUES\n('${'y'.repeat(5000)}'),\n('x;'),\n(';');\n`,
      'INSERT INTO `a` VALUES\n(4),\n(5);\n',
      '-- Dump completed',
    ].join('');
    for (const size of [1, 7, 64, 4096, dump.length]) {
      const filter = new InsertFilter(new Set(['a']));
      const chunks: Buffer[] = [];
      for (let i = 0; i < dump.length; i += size) chunks.push(Buffer.from(dump.slice(i, i + size)));
      const out: Buffer[] = [];
      for await (const c of Readable.from(chunks).pipe(filter)) out.push(c as Buffer);
      assert.equal(Buffer.concat(out).toString(), 'CREATE TABLE `a` (x int);\nINSERT INTO `a` VALUES (1),(2);\nINSERT INTO `a` VALUES\n(4),\n(5);\n-- Dump completed', `chunk size ${size}`);
      assert.equal(filter.dropped, 2);
    }
  });
});
