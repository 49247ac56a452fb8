// Single tables of a PostgreSQL backup against a real server: a table restored beside the live
// one (schema dbstash_restored_<stamp>) with its rows, indexes, identity value and partitions,
// nothing live changed, the copy-back statement the output prints actually working; a damaged
// artifact and an unknown table refused before anything reaches the target; the same from a
// --jobs (directory-format) backup; export as JSON Lines and CSV with exact values through a
// throwaway server, the server's own rendering byte for byte the same as the cells rendered in
// Node for every kind of value; show.

import assert from 'node:assert/strict';
import { cpSync, existsSync, readdirSync, readFileSync, statSync, openSync, readSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { backupId, expectExit, runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { folderOf } from '../harness/stash.js';
import { parseTarget } from '../../src/engines/target.js';
import { CopyTextRows, readRendered, readRows } from '../../src/engines/postgres/tables.js';
import { rowWriter } from '../../src/tables/render.js';
import { UsageError } from '../../src/core/errors.js';

let server: PgServer;
let stash: string;
let id: string;

const SETUP = `
CREATE TABLE customers (id int PRIMARY KEY, name text);
CREATE TABLE orders (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer int REFERENCES customers(id),
  total numeric(14,4), meta jsonb, blob bytea, at timestamptz, day timestamp, tags text[], note text);
CREATE INDEX orders_customer ON orders (customer);
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE INSERT ON orders FOR EACH ROW EXECUTE FUNCTION touch();
CREATE TABLE items (id serial PRIMARY KEY, order_id bigint REFERENCES orders(id), qty int);
CREATE TABLE ev (id int, k int) PARTITION BY RANGE (id);
CREATE TABLE ev_low PARTITION OF ev FOR VALUES FROM (0) TO (100);
CREATE TABLE ev_high PARTITION OF ev FOR VALUES FROM (100) TO (200);
CREATE VIEW order_totals AS SELECT customer, sum(total) AS total FROM orders GROUP BY customer;
INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 10) g;
INSERT INTO orders (customer, total, meta, blob, at, day, tags, note)
  SELECT 1 + g % 10, g * 1.2345, jsonb_build_object('g', g, 'big', 12345678901234567890), '\\xdeadbeef'::bytea,
         '2024-01-01 10:00:00.123456+02', '2024-01-01 10:00:00', ARRAY['a', 'b,c'], CASE WHEN g % 2 = 0 THEN '' END
  FROM generate_series(1, 50) g;
INSERT INTO items (order_id, qty) SELECT 1 + g % 50, g FROM generate_series(1, 30) g;
INSERT INTO ev SELECT g, g FROM generate_series(0, 199) g;
CREATE TABLE secrets (id int PRIMARY KEY, owner text, note text, amount numeric(38,10));
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON secrets USING (owner = current_user);
INSERT INTO secrets VALUES (1, 'postgres', 'ünïcødé ✓ 漢字 "q"', 1234567890123456789012345678.0123456789), (2, 'x', NULL, -0.0000000001);`;

async function scalar<T>(sql: string, db = 'shop'): Promise<T> {
  const r = await server.query(sql, db);
  return Object.values(r.rows[0] as Record<string, unknown>)[0] as T;
}

async function restoredSchemas(db = 'shop'): Promise<string[]> {
  return (await server.query(`SELECT nspname FROM pg_namespace WHERE nspname LIKE 'dbstash_restored_%' ORDER BY 1`, db)).rows.map((r) => r.nspname as string);
}

async function databases(): Promise<string[]> {
  return (await server.query('SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1')).rows.map((r) => r.datname as string);
}

before(async () => {
  server = await startPostgres();
  await server.createDatabase('shop');
  await server.query(SETUP, 'shop');
  stash = tempDir('dbstash-tables-pg');
  id = await backupId(server.url('shop'), stash);
  // The accident: most orders (and their items) deleted after the backup.
  await server.query('DELETE FROM items; DELETE FROM orders WHERE id > 10;', 'shop');
});
after(() => server?.stop());

describe('restore --table (PostgreSQL)', () => {
  test('--dry-run prints the plan with the partitions and changes nothing', async () => {
    const r = await runCli(['restore', id, '--table', 'public.orders', '--table', 'ev', '--to', server.url('shop'), '--output-dir', stash, '--dry-run']);
    expectExit(r, 0);
    assert.match(r.stdout, /table: {3}public\.orders, 50 rows/);
    assert.match(r.stdout, /table: {3}public\.ev_low \(partition of public\.ev\), 100 rows/);
    assert.match(r.stdout, /nothing live is changed/);
    assert.match(r.stdout, /verified whole now \(pg_restore read \d+ TOC entries/);
    assert.deepEqual(await restoredSchemas(), []);
    assert.deepEqual(await databases(), ['postgres', 'shop']);
  });

  test('a table the backup does not hold is refused with the close names (exit 2)', async () => {
    const r = await runCli(['restore', id, '--table', 'ordrs', '--to', server.url('shop'), '--output-dir', stash, '--yes']);
    expectExit(r, 2, /holds no table ordrs/);
    assert.match(r.stderr, /close names it holds: public\.orders/);
    assert.deepEqual(await databases(), ['postgres', 'shop']);
  });

  test('a damaged artifact never reaches the target (exit 7): the temporary database is dropped', async () => {
    const copy = tempDir('dbstash-tables-pg-damaged');
    cpSync(stash, copy, { recursive: true });
    const file = path.join(copy, folderOf(id), `${id}.dump.zst`);
    const fd = openSync(file, 'r+');
    const at = Math.floor(statSync(file).size / 2);
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] ^= 0xff;
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);
    const r = await runCli(['restore', id, '--table', 'orders', '--to', server.url('shop'), '--output-dir', copy, '--yes']);
    expectExit(r, 7);
    assert.deepEqual(await restoredSchemas(), []);
    assert.deepEqual(await databases(), ['postgres', 'shop']);
    assert.equal(await scalar<string>('SELECT count(*) FROM orders'), '10');
    // Damage after the table's data: pg_restore has customers long before it, and stops reading;
    // the stored bytes are still proven whole before anything reaches the target.
    const tail = tempDir('dbstash-tables-pg-tail');
    cpSync(stash, tail, { recursive: true });
    const last = path.join(tail, folderOf(id), `${id}.dump.zst`);
    const fd2 = openSync(last, 'r+');
    const end = statSync(last).size - 1;
    readSync(fd2, b, 0, 1, end);
    b[0] ^= 0xff;
    writeSync(fd2, b, 0, 1, end);
    closeSync(fd2);
    const early = await runCli(['restore', id, '--table', 'customers', '--to', server.url('shop'), '--output-dir', tail, '--yes']);
    expectExit(early, 7, /checksum mismatch/);
    assert.deepEqual(await restoredSchemas(), []);
    assert.deepEqual(await databases(), ['postgres', 'shop']);
    const exported = await runCli(['export', id, '--table', 'customers', '--output-dir', tail]);
    expectExit(exported, 7, /checksum mismatch/);
    assert.equal(exported.stdout, '', 'no row of a damaged backup is written');
  });

  test('orders and a partitioned table come back beside the live ones; the printed copy-back works', async () => {
    const r = await runCli(['restore', id, '--table', 'orders', '--table', 'public.ev', '--to', server.url('shop'), '--output-dir', stash, '--yes']);
    expectExit(r, 0);
    const [schema] = await restoredSchemas();
    assert.match(schema, /^dbstash_restored_\d{8}_\d{6}$/);
    // Live data untouched; the restored copy whole, with its partitions, index and identity value.
    assert.equal(await scalar<string>('SELECT count(*) FROM public.orders'), '10');
    assert.equal(await scalar<string>(`SELECT count(*) FROM ${schema}.orders`), '50');
    assert.equal(await scalar<string>(`SELECT count(*) FROM ${schema}.ev`), '200');
    assert.equal(await scalar<string>(`SELECT count(*) FROM pg_inherits WHERE inhparent = '${schema}.ev'::regclass`), '2');
    assert.equal(await scalar<string>(`SELECT count(*) FROM pg_indexes WHERE schemaname = '${schema}' AND indexname = 'orders_customer'`), '1');
    assert.equal(await scalar<string>(`SELECT pg_get_serial_sequence('${schema}.orders', 'id')`), `${schema}.orders_id_seq`);
    assert.equal(await scalar<string>(`SELECT last_value FROM ${schema}.orders_id_seq`), '50');
    // The trigger and the foreign key to a table that was not restored stay behind, and the output says so.
    assert.equal(await scalar<string>(`SELECT count(*) FROM pg_trigger WHERE tgrelid = '${schema}.orders'::regclass AND NOT tgisinternal`), '0');
    assert.equal(await scalar<string>(`SELECT count(*) FROM pg_constraint WHERE conrelid = '${schema}.orders'::regclass AND contype = 'f'`), '0');
    assert.match(r.stdout, /not restored with it: foreign key orders_customer_fkey → customers \(not restored\); trigger orders_touch/);
    assert.match(r.stdout, /partition public\.ev_high → dbstash_restored_\d+_\d+\.ev_high \(100 rows\)/);
    // Nothing else was created, nothing is left over.
    assert.deepEqual(await databases(), ['postgres', 'shop']);
    const copyBack = /copy back: (INSERT INTO "public"\."orders" .*;)$/m.exec(r.stdout)?.[1];
    assert.ok(copyBack, r.stdout);
    await server.query(copyBack, 'shop');
    assert.equal(await scalar<string>('SELECT count(*) FROM public.orders'), '50');
    assert.equal(await scalar<string>(`SELECT count(*) FROM public.orders o JOIN ${schema}.orders r USING (id) WHERE o.total = r.total AND o.meta = r.meta`), '50');
    const records = readdirSync(path.join(stash, folderOf(id))).filter((f) => f.includes('.restore-'));
    const record = JSON.parse(readFileSync(path.join(stash, folderOf(id), records[records.length - 1]), 'utf8'));
    assert.equal(record.mode, 'tables');
    assert.equal(record.result, 'succeeded');
  });

  test('from a --jobs backup (directory format) too', async () => {
    const jobsStash = tempDir('dbstash-tables-pg-jobs');
    const jobsId = await backupId(server.url('shop'), jobsStash, '--jobs', '2');
    await server.createDatabase('shop_other');
    await server.query('CREATE TABLE unrelated (x int)', 'shop_other');
    const r = await runCli(['restore', jobsId, '--table', 'customers', '--to', server.url('shop_other'), '--output-dir', jobsStash, '--yes', '--json']);
    expectExit(r, 0);
    const out = JSON.parse(r.stdout);
    assert.equal(out.placed[0].rows, 10);
    assert.equal(await scalar<string>(`SELECT count(*) FROM ${out.placed[0].to.schema}.customers`, 'shop_other'), '10');
    assert.equal(await scalar<string>('SELECT count(*) FROM unrelated', 'shop_other'), '0');
  });
});

describe('restore --table --replace (PostgreSQL)', () => {
  test('refused while other tables reference it; with --cascade-plan a broken reference fails the swap and changes nothing; then the swap carries views, triggers, keys and the sequence', async () => {
    await server.createDatabase('shop_r');
    await server.query(SETUP, 'shop_r');
    await server.query(`CREATE VIEW cheap AS SELECT id, total FROM orders WHERE total < 10`, 'shop_r');
    // After the backup: orders lost, new ones added (ids 51-52), an item pointing at new order 52.
    await server.query(`DELETE FROM items; DELETE FROM orders WHERE id > 10; INSERT INTO orders (customer, total) VALUES (1, 1), (2, 2); INSERT INTO items (order_id, qty) VALUES (52, 1)`, 'shop_r');
    const url = server.url('shop_r');
    const refused = await runCli(['restore', id, '--table', 'orders', '--replace', '--to', url, '--output-dir', stash, '--yes']);
    expectExit(refused, 2, /referenced by other tables \(foreign key items_order_id_fkey of public\.items/);
    assert.match(refused.stderr, /--cascade-plan/);
    assert.deepEqual(await restoredSchemas('shop_r'), []);

    const plan = await runCli(['restore', id, '--table', 'orders', '--replace', '--cascade-plan', '--to', url, '--output-dir', stash, '--dry-run']);
    expectExit(plan, 0);
    for (const line of [/follows: +view public\.cheap: re-pointed/, /follows: +trigger orders_touch: re-created/, /follows: +foreign key orders_customer_fkey/, /follows: +sequence public\.orders_id_seq/, /references it: foreign key items_order_id_fkey of public\.items .* re-created against the restored table/]) {
      assert.match(plan.stdout, line);
    }

    // Item 52 points at an order the backup does not hold: the swap fails whole.
    const broken = await runCli(['restore', id, '--table', 'orders', '--replace', '--cascade-plan', '--to', url, '--output-dir', stash, '--yes']);
    expectExit(broken, 9, /replacing public\.orders failed, nothing was changed: .*items_order_id_fkey/);
    assert.equal(await scalar<string>('SELECT count(*) FROM public.orders', 'shop_r'), '12');
    assert.equal(await scalar<string>(`SELECT count(*) FROM pg_class WHERE relname LIKE 'orders__before_%'`, 'shop_r'), '0');
    for (const schema of await restoredSchemas('shop_r')) await server.query(`DROP SCHEMA ${schema} CASCADE`, 'shop_r');

    await server.query('DELETE FROM items', 'shop_r');
    const r = await runCli(['restore', id, '--table', 'orders', '--replace', '--cascade-plan', '--to', url, '--output-dir', stash, '--yes']);
    expectExit(r, 0);
    assert.match(r.stdout, /replaced public\.orders .* row counts match the manifest/);
    const kept = /kept as public\.(orders__before_\d{8}_\d{6})/.exec(r.stdout)?.[1];
    assert.ok(kept, r.stdout);
    assert.equal(await scalar<string>('SELECT count(*) FROM public.orders', 'shop_r'), '50');
    assert.equal(await scalar<string>(`SELECT count(*) FROM public.${kept}`, 'shop_r'), '12');
    // The view reads the restored table; the trigger and both foreign keys are on it; ids go on after the live ones.
    assert.equal(await scalar<string>('SELECT count(*) FROM cheap', 'shop_r'), '8');
    assert.equal(await scalar<string>(`SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.orders'::regclass AND tgname = 'orders_touch'`, 'shop_r'), '1');
    assert.equal(await scalar<string>(`SELECT confrelid::regclass::text FROM pg_constraint WHERE conname = 'items_order_id_fkey'`, 'shop_r'), 'orders');
    assert.equal(await scalar<string>(`SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.orders'::regclass AND conname = 'orders_customer_fkey'`, 'shop_r'), '1');
    assert.equal(await scalar<string>(`INSERT INTO orders (customer, total) VALUES (1, 1) RETURNING id`, 'shop_r'), '53');
    assert.deepEqual(await restoredSchemas('shop_r'), []);
    assert.deepEqual((await databases()).filter((d) => d.startsWith('shop_r')), ['shop_r']);
  });
});

describe('a partitioned table with --replace (PostgreSQL)', () => {
  test('the parent and its partitions are swapped together; the old ones kept, still attached to each other', async () => {
    await server.query(`TRUNCATE ev`, 'shop');
    await server.query(`INSERT INTO ev VALUES (1, -1), (150, -150)`, 'shop');
    const r = await runCli(['restore', id, '--table', 'ev', '--replace', '--to', server.url('shop'), '--output-dir', stash, '--yes']);
    expectExit(r, 0);
    assert.match(r.stdout, /followed: partition public\.ev_low: replaced by the restored one/);
    assert.equal(await scalar<string>('SELECT count(*) FROM public.ev'), '200');
    assert.equal(await scalar<string>('SELECT sum(k) FROM public.ev'), String((199 * 200) / 2));
    assert.equal(await scalar<string>(`SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.ev'::regclass`), '2');
    const kept = /kept as public\.(ev__before_\d{8}_\d{6})/.exec(r.stdout)?.[1];
    assert.ok(kept, r.stdout);
    assert.equal(await scalar<string>(`SELECT count(*) FROM public.${kept}`), '2');
    assert.equal(await scalar<string>(`SELECT count(*) FROM pg_inherits WHERE inhparent = 'public.${kept}'::regclass`), '2');
    await server.query(`INSERT INTO ev VALUES (5, 5)`, 'shop');
    assert.equal(await scalar<string>('SELECT count(*) FROM public.ev_low'), '101');
  });
});

describe('a table with a row-level security policy (PostgreSQL)', () => {
  test('restored beside with its policy, replaced with equal contents, exported exactly', async () => {
    await server.query(`UPDATE secrets SET note = 'overwritten', amount = 0`, 'shop');
    const r = await runCli(['restore', id, '--table', 'secrets', '--to', server.url('shop'), '--output-dir', stash, '--yes', '--json']);
    expectExit(r, 0);
    const schema = JSON.parse(r.stdout).placed[0].to.schema as string;
    assert.equal(await scalar<string>(`SELECT count(*) FROM pg_policy WHERE polrelid = '${schema}.secrets'::regclass AND polname = 'own_rows'`), '1');
    assert.equal(await scalar<boolean>(`SELECT relrowsecurity FROM pg_class WHERE oid = '${schema}.secrets'::regclass`), true);
    const replaced = await runCli(['restore', id, '--table', 'secrets', '--replace', '--to', server.url('shop'), '--output-dir', stash, '--yes']);
    expectExit(replaced, 0);
    const rows = (await server.query(`SELECT id, owner, note, amount::text AS amount FROM public.secrets ORDER BY id`, 'shop')).rows;
    assert.deepEqual(rows, [
      { id: 1, owner: 'postgres', note: 'ünïcødé ✓ 漢字 "q"', amount: '1234567890123456789012345678.0123456789' },
      { id: 2, owner: 'x', note: null, amount: '-0.0000000001' },
    ]);
    const out = await runCli(['export', id, '--table', 'secrets', '--output-dir', stash]);
    expectExit(out, 0);
    const lines = out.stdout.trim().split('\n');
    assert.equal(lines[0], '{"id":1,"owner":"postgres","note":"ünïcødé ✓ 漢字 \\"q\\"","amount":1234567890123456789012345678.0123456789}');
    assert.equal(lines[1], '{"id":2,"owner":"x","note":null,"amount":-0.0000000001}');
    const records = readdirSync(path.join(stash, folderOf(id))).filter((f) => f.includes('.export-'));
    assert.ok(records.length > 0);
    const record = JSON.parse(readFileSync(path.join(stash, folderOf(id), records.sort()[records.length - 1]), 'utf8'));
    assert.deepEqual([record.kind, record.table, record.rows, record.result], ['export', 'public.secrets', 2, 'succeeded']);
  });
});

describe('two partial restores in the same second (PostgreSQL)', () => {
  test('the second lands in dbstash_restored_<stamp>_2 instead of failing on the first one\'s schema', async () => {
    // The schemas of the next seconds exist already, as if another restore had just run.
    const stampAt = (ms: number) => new Date(ms).toISOString().replace(/[-:]/g, '').replace('T', '_').slice(0, 15);
    const taken = Array.from({ length: 20 }, (_, i) => `dbstash_restored_${stampAt(Date.now() + i * 1000)}`);
    for (const t of taken) await server.query(`CREATE SCHEMA ${t}`, 'shop');
    try {
      const r = await runCli(['restore', id, '--table', 'secrets', '--to', server.url('shop'), '--output-dir', stash, '--yes', '--json']);
      expectExit(r, 0);
      const schema = JSON.parse(r.stdout).placed[0].to.schema as string;
      assert.ok(taken.map((t) => `${t}_2`).includes(schema), schema);
      assert.equal(await scalar<string>(`SELECT count(*) FROM ${schema}.secrets`), '2');
      await server.query(`DROP SCHEMA ${schema} CASCADE`, 'shop');
    } finally {
      for (const t of taken) await server.query(`DROP SCHEMA IF EXISTS ${t}`, 'shop');
    }
  });
});

describe('export and show (PostgreSQL)', () => {
  test('JSON Lines keeps every value exact: numeric digits, JSON, bytea as base64, times in ISO 8601', async () => {
    const r = await runCli(['export', id, '--table', 'orders', '--where', 'id <= 2', '--output-dir', stash]);
    expectExit(r, 0);
    const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 2);
    assert.deepEqual(Object.keys(lines[0]), ['id', 'customer', 'total', 'meta', 'blob', 'at', 'day', 'tags', 'note']);
    assert.match(r.stdout, /"total":2\.4690,/); // the digits as stored, not 2.469
    assert.match(r.stdout, /"big": 12345678901234567890/); // beyond a double, untouched
    assert.equal(lines[0].blob, Buffer.from('deadbeef', 'hex').toString('base64'));
    assert.equal(lines[0].at, '2024-01-01T08:00:00.123456Z');
    assert.equal(lines[0].day, '2024-01-01T10:00:00');
    assert.deepEqual(lines[0].tags, ['a', 'b,c']);
    assert.equal(lines[0].note, null);
    assert.equal(lines[1].note, '');
  });

  test('CSV to a file: header, quoting, NULL apart from the empty string; 0600, nothing left on failure', async () => {
    const dir = tempDir('dbstash-tables-pg-out');
    const file = path.join(dir, 'orders.csv');
    const r = await runCli(['export', id, '--table', 'public.orders', '--format', 'csv', '--limit', '3', '--output', file, '--output-dir', stash]);
    expectExit(r, 0);
    const text = readFileSync(file, 'utf8');
    const rows = text.split('\r\n');
    assert.equal(rows[0], 'id,customer,total,meta,blob,at,day,tags,note');
    assert.match(rows[1], /^1,2,1\.2345,"\{""g"": 1, ""big"": 12345678901234567890\}",3q2\+7w==,2024-01-01T08:00:00\.123456Z,2024-01-01T10:00:00,"\[""a"",""b,c""\]",$/);
    assert.match(rows[2], /,""$/);
    assert.equal(rows.length, 5); // header, 3 rows, and the final line break
    assert.equal(statSync(file).mode & 0o777, 0o600);
    const bad = await runCli(['export', id, '--table', 'orders', '--where', 'no_such_column = 1', '--output', path.join(dir, 'bad.csv'), '--output-dir', stash]);
    expectExit(bad, 2, /no_such_column/);
    assert.deepEqual(readdirSync(dir), ['orders.csv']);
  });

  test('a partitioned table exports with its partitions\' rows; show lists tables and prints rows', async () => {
    const r = await runCli(['export', id, '--table', 'ev', '--output-dir', stash]);
    expectExit(r, 0);
    assert.equal(r.stdout.trim().split('\n').length, 200);
    const show = await runCli(['show', id, '--output-dir', stash]);
    expectExit(show, 0);
    assert.match(show.stdout, /public\.orders\s+50/);
    const rows = await runCli(['show', id, '--table', 'customers', '--limit', '2', '--output-dir', stash]);
    expectExit(rows, 0);
    assert.match(rows.stdout, /^id\s+name$/m);
    assert.match(rows.stdout, /^2\s+customer 2$/m);
    assert.doesNotMatch(rows.stdout, /customer 3/);
    assert.equal(existsSync(path.join(stash, 'orders.csv')), false);
  });
});

// Every kind of value the export renders, NULLs, and the edges of each: the server's lines
// (readRendered, export's path) must be the very bytes render.ts makes of readRows' cells.
const KINDS = String.raw`
CREATE TYPE mood AS ENUM ('ok', 'not "ok"');
CREATE TYPE pair AS (a int, b text);
CREATE DOMAIN small AS int CHECK (VALUE < 1000);
CREATE DOMAIN stamp AS timestamptz;
CREATE DOMAIN money2 AS numeric(38,10);
CREATE DOMAIN money3 AS money2;
CREATE TABLE kinds (
  "id" int PRIMARY KEY, "flag" bool, "i2" int2, "i8" int8, "o" oid, "f4" float4, "f8" float8,
  "n" numeric(38,10), "nn" numeric, "j" json, "jb" jsonb, "b" bytea, "ts" timestamptz, "t" timestamp,
  "d" date, "tm" time, "iv" interval, "txt" text, "ch" char(5), "vc" varchar(9), "nm" name, "ip" inet,
  "net" cidr, "u" uuid, "arr" int[], "tarr" text[], "p" pair, "r" int4range, "m" mood, "sm" small,
  "st" stamp, "m3" money3, "x" xml, "bits" varbit, "cash" money, "we""ird ✓ name" text);
INSERT INTO kinds VALUES
  (1, true, -32768, 9223372036854775807, 4294967295, 1.5, 0.1, 1234567890123456789012345678.0123456789, 'NaN',
   '{"a": [1, "x\ny"],  "b":null}', '{"ü": "\u0001 ✓", "q": "\"", "n": 1.50}', '\x00ff10', '2024-02-29 23:59:59.999999+05:30',
   '2024-01-01 10:00:00', '2024-01-01', '10:00:00.5', '1 year 2 mons 3 days 04:05:06.7', '',
   'ab', 'v', 'nm', '10.0.0.1', '10.0.0.0/8', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,NULL,3}', '{"a\"b","c,d",NULL}',
   ROW(1, 'x'), '[1,5)', 'ok', 7, '2024-01-01 00:00:00+00', -0.0000000001, '<a>&amp;</a>', B'1010', 12.34, 'plain'),
  (2, false, 0, -1, 0, 'NaN', 'Infinity', -0.0000000001, 'Infinity', 'null', '[]', '', 'infinity', '-infinity',
   '0044-03-15 BC', '00:00', '-1 day', ' lead', 'x', 'trail ', 'a"b', '::1', '::/0', NULL, '{}', '{}',
   ROW(NULL, NULL), 'empty', 'not "ok"', -5, '0044-03-15 00:00:00+00 BC', 0, NULL, B'', -0.5, E'tab\there'),
  (3, NULL, NULL, NULL, NULL, '-Infinity', -0.0, 0, '-Infinity', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   E'multi\nline, "quoted"\r', NULL, E'\u00a0nbsp', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
   E'ctl \u0001 \\ back \u2028 漢字'),
  (4, true, 1, 1, 1, 3.4028235e38, 1e-300, 99, 1e-20, '"s"', '"s"', '\x', '1970-01-01 00:00:00+00', '1970-01-01 00:00:00',
   'infinity', '24:00', 'P1Y', E'\t', 'abcde', '', '', '192.168.1.5/24', '192.168.1.0/24', NULL, '{{1,2},{3,4}}', '{""}',
   ROW(2, ''), '(,)', NULL, NULL, NULL, NULL, '', NULL, NULL, '  ');`;

describe('export rendered by the server (PostgreSQL)', () => {
  let target: ReturnType<typeof parseTarget>;
  const signal = new AbortController().signal;
  const table = { schema: 'public', name: 'kinds' };

  before(async () => {
    await server.createDatabase('kinds');
    await server.query(KINDS, 'kinds');
    target = parseTarget(server.url('kinds'));
  });

  async function inNode(format: 'jsonl' | 'csv', opts: { where?: string; limit?: number } = {}): Promise<string> {
    const source = await readRows(target, table, { ...opts, signal });
    const writer = rowWriter(format, source.columns);
    let text = writer.head();
    for await (const cells of source.rows) text += writer.row(cells);
    return text;
  }

  async function byServer(format: 'jsonl' | 'csv', opts: { where?: string; limit?: number } = {}): Promise<{ text: string; rows: number }> {
    const source = await readRendered(target, table, { ...opts, format, signal });
    const parts: Buffer[] = [Buffer.from(rowWriter(format, source.columns).head())];
    let rows = 0;
    for await (const piece of source.pieces) {
      parts.push(piece.bytes);
      rows += piece.rows;
    }
    return { text: Buffer.concat(parts).toString('utf8'), rows };
  }

  for (const format of ['jsonl', 'csv'] as const) {
    test(`${format}: the same bytes as the cells rendered in Node, for every kind of value`, async () => {
      const expected = await inNode(format);
      const got = await byServer(format);
      assert.equal(got.text, expected);
      assert.equal(got.rows, 4);
      if (format === 'jsonl') {
        const rows = got.text.trim().split('\n').map((l) => JSON.parse(l));
        assert.deepEqual(rows.map((r) => r.id), [1, 2, 3, 4]);
        assert.equal(rows[0].b, Buffer.from('00ff10', 'hex').toString('base64'));
        assert.equal(rows[0].ts, '2024-02-29T18:29:59.999999Z');
        assert.equal(rows[1].f4, 'NaN');
        assert.equal(rows[1].ch, 'x    ', 'char(n) keeps its padding');
        assert.equal(rows[0].ip, '10.0.0.1', 'inet as its own text, without a netmask');
        assert.deepEqual(rows[1].p, { a: null, b: null }, 'a composite of NULLs is not NULL');
        assert.equal(rows[2]['we"ird ✓ name'], 'ctl \u0001 \\ back \u2028 漢字');
      } else {
        assert.match(got.text, /^id,flag,.*,"we""ird ✓ name"\r\n/);
        assert.match(got.text, /," lead",/);
      }
    });
  }

  test('a condition and a limit select the same rows both ways; a bad condition is the user\'s error', async () => {
    for (const opts of [{ where: 'id > 1' }, { limit: 2 }, { where: 'id > 1', limit: 0 }]) {
      const got = await byServer('jsonl', opts);
      assert.equal(got.text, await inNode('jsonl', opts));
      assert.equal(got.rows, got.text === '' ? 0 : got.text.trim().split('\n').length);
    }
    await assert.rejects(byServer('csv', { where: 'no_such = 1' }), (err: Error) => err instanceof UsageError && /no_such/.test(err.message));
  });

  test('the COPY framing is taken off however the stream is cut', () => {
    const rows = ['{"a":1}\n', '', '{"b":"ü"}\n'];
    const frames = [Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(8)];
    for (const r of rows) {
      const head = Buffer.alloc(6);
      head.writeInt16BE(1, 0);
      head.writeInt32BE(Buffer.byteLength(r), 2);
      frames.push(head, Buffer.from(r));
    }
    frames.push(Buffer.from([0xff, 0xff]));
    const stream = Buffer.concat(frames);
    for (const cut of [1, 2, 3, 5, 7, 64]) {
      const parser = new CopyTextRows();
      const out: Buffer[] = [];
      for (let at = 0; at < stream.length; at += cut) out.push(parser.take(stream.subarray(at, at + cut)));
      assert.equal(Buffer.concat(out).toString(), rows.join(''), `pieces of ${cut}`);
      assert.equal(parser.rows, 3);
      assert.equal(parser.ended, true);
    }
    assert.throws(() => new CopyTextRows().take(Buffer.from('NOTCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0', 'latin1')), /not a binary COPY stream/);
  });
});
