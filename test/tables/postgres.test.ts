// Single tables of a PostgreSQL backup against a real server: a table restored beside the live
// one (schema dbstash_restored_<stamp>) with its rows, indexes, identity value and partitions,
// nothing live changed, the copy-back statement the output prints actually working; a damaged
// artifact and an unknown table refused before anything reaches the target; the same from a
// --jobs (directory-format) backup; export as JSON Lines and CSV with exact values through a
// throwaway server; show.

import assert from 'node:assert/strict';
import { cpSync, existsSync, readdirSync, readFileSync, statSync, openSync, readSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { backupId, expectExit, runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { folderOf } from '../harness/stash.js';

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
