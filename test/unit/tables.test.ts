// Naming tables (--table, --schema), close names, partitions brought along; JSON Lines and CSV
// rendering of every kind of value; reading a PostgreSQL dump's head (tables, partitions,
// inheritance, foreign keys) and the pg_restore list of a partial restore.

import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { UsageError } from '../../src/core/errors.js';
import { tablesOfHead, writeOnlyList } from '../../src/engines/postgres/tables.js';
import { rowWriter } from '../../src/tables/render.js';
import { closeNames, parseTableSpec, selectTables } from '../../src/tables/select.js';

const t = (schema: string, name: string, children: string[] = []) => ({ schema, name, children: children.map((c) => ({ schema, name: c })) });

describe('naming tables', () => {
  test('schema.table, table, and quoted names holding dots', () => {
    assert.deepEqual(parseTableSpec('public.orders'), { schema: 'public', name: 'orders' });
    assert.deepEqual(parseTableSpec('orders'), { name: 'orders' });
    assert.deepEqual(parseTableSpec('"my.schema"."a.b"'), { schema: 'my.schema', name: 'a.b' });
    for (const bad of ['', 'a.b.c', '"open', 'a.', '.b']) assert.throws(() => parseTableSpec(bad), UsageError, bad);
  });

  test('a bare name finds its one table; two schemas holding it must be told apart', () => {
    const tables = [t('public', 'orders'), t('sales', 'orders'), t('public', 'items')];
    assert.deepEqual(selectTables(tables, ['items'], [], 'x').asked.map((s) => s.schema), ['public']);
    assert.throws(() => selectTables(tables, ['orders'], [], 'x'), /several tables named "orders" \(public\.orders, sales\.orders\)/);
    assert.deepEqual(selectTables(tables, ['sales.orders'], [], 'x').asked, [tables[1]]);
    assert.deepEqual(selectTables(tables, [], ['sales'], 'x').asked, [tables[1]]);
    assert.throws(() => selectTables(tables, [], [], 'x'), /say which tables/);
    assert.throws(() => selectTables(tables, [], ['nope'], 'x'), /no table in schema nope/);
  });

  test('an unknown table is refused with the close names', () => {
    const tables = [t('public', 'orders'), t('public', 'order_items'), t('public', 'customers')];
    assert.throws(
      () => selectTables(tables, ['ordres'], [], 'b1'),
      (e: UsageError) => /b1 holds no table ordres/.test(e.message) && /public\.orders/.test(e.hint ?? '') && !/customers/.test(e.hint ?? ''),
    );
    assert.deepEqual(closeNames('custmers', ['public.customers', 'public.orders']), ['public.customers']);
  });

  test('a partitioned table brings its partitions, and theirs, each once', () => {
    const tables = [t('public', 'ev', ['ev_2024', 'ev_2025']), t('public', 'ev_2024', ['ev_2024_q1']), t('public', 'ev_2025'), t('public', 'ev_2024_q1'), t('public', 'other')];
    const s = selectTables(tables, ['ev', 'ev_2024'], [], 'x');
    assert.deepEqual(s.all.map((x) => x.name), ['ev', 'ev_2024', 'ev_2024_q1', 'ev_2025']);
  });
});

describe('rendering rows', () => {
  const columns = ['n', 'j', 'b', 't', 's', 'f', 'z'].map((name) => ({ name }));
  const cells = [{ number: '12345678901234567890.000100' }, { json: '{"a": [1, 2]}' }, Buffer.from([0, 255]), { time: '2024-01-01T08:00:00.5Z' }, 'a "b",\nc', false, null] as const;

  test('JSON Lines: exact numbers, JSON as JSON, base64, ISO times; NaN stays a string', () => {
    const w = rowWriter('jsonl', columns);
    const line = w.row([...cells]);
    assert.equal(line, '{"n":12345678901234567890.000100,"j":{"a": [1, 2]},"b":"AP8=","t":"2024-01-01T08:00:00.5Z","s":"a \\"b\\",\\nc","f":false,"z":null}\n');
    assert.deepEqual(JSON.parse(line).j, { a: [1, 2] });
    assert.equal(w.row([{ number: 'NaN' }, null, null, null, null, null, null]).slice(0, 11), '{"n":"NaN",');
  });

  test('CSV: header, quotes where needed, NULL empty and the empty string ""', () => {
    const w = rowWriter('csv', columns);
    assert.equal(w.head(), 'n,j,b,t,s,f,z\r\n');
    assert.equal(w.row([...cells]), '12345678901234567890.000100,"{""a"": [1, 2]}",AP8=,2024-01-01T08:00:00.5Z,"a ""b"",\nc",false,\r\n');
    assert.equal(w.row(['', ' x', null, null, null, null, null]), '""," x",,,,,\r\n');
  });
});

describe('a PostgreSQL dump\'s head', () => {
  const list = [
    '214; 1259 16384 TABLE public orders postgres',
    '215; 1259 16389 TABLE public ev postgres',
    '216; 1259 16392 TABLE public ev_a postgres',
    '217; 1259 16392 TABLE public customers postgres',
    '218; 1259 16392 TABLE public kid postgres',
    '3216; 0 0 TABLE ATTACH public ev_a postgres',
    '3360; 0 16384 TABLE DATA public orders postgres',
    '3361; 0 16392 TABLE DATA public ev_a postgres',
    '3362; 0 16392 TABLE DATA public customers postgres',
    '3363; 0 16392 TABLE DATA public kid postgres',
    '3370; 2606 16456 FK CONSTRAINT public orders orders_customer_fkey postgres',
    '3371; 2606 16457 FK CONSTRAINT public kid kid_order_fkey postgres',
    '3380; 0 0 BLOBS - BLOBS ',
  ].join('\n');
  const ddl = [
    'CREATE TABLE public.orders (',
    '    id integer',
    ');',
    'CREATE TABLE public.ev (',
    '    id integer',
    ')',
    'PARTITION BY RANGE (id);',
    'CREATE TABLE public.kid (',
    '    x integer',
    ')',
    'INHERITS (public.orders);',
    'ALTER TABLE ONLY public.ev ATTACH PARTITION public.ev_a FOR VALUES FROM (0) TO (100);',
    'ALTER TABLE ONLY public.orders',
    '    ADD CONSTRAINT orders_customer_fkey FOREIGN KEY (customer) REFERENCES public.customers(id);',
    'ALTER TABLE ONLY public.kid',
    '    ADD CONSTRAINT kid_order_fkey FOREIGN KEY (o) REFERENCES public.orders(id);',
  ].join('\n');

  test('tables with their partitions, inheritance children and foreign keys; no TABLE DATA or ATTACH taken for a table', () => {
    const tables = tablesOfHead({ list, ddl });
    assert.deepEqual(tables.map((x) => x.name), ['orders', 'ev', 'ev_a', 'customers', 'kid']);
    const by = new Map(tables.map((x) => [x.name, x]));
    assert.equal(by.get('ev')?.partitioned, true);
    assert.deepEqual(by.get('ev')?.children, [{ schema: 'public', name: 'ev_a' }]);
    assert.deepEqual(by.get('orders')?.children, [{ schema: 'public', name: 'kid' }]);
    assert.deepEqual(by.get('orders')?.references, [{ constraint: 'orders_customer_fkey', table: { schema: 'public', name: 'customers' } }]);
  });

  test('the list of a partial restore: other tables\' data, foreign keys out of the set, large objects commented out', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'dbstash-unit-list-'));
    try {
      const file = await writeOnlyList({ list, ddl }, [{ schema: 'public', name: 'orders' }, { schema: 'public', name: 'kid' }], dir);
      const out = readFileSync(file, 'utf8').split('\n');
      const off = out.filter((l) => l.startsWith(';')).map((l) => l.slice(1).split(';')[0]);
      assert.deepEqual(off, ['3361', '3362', '3370', '3380']);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
