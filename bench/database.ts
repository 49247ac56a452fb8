// Builds a benchmark database: pgbench's tables at a given scale (narrow rows, numbers, short
// padding: the classic OLTP shape) plus `bench_documents`, a table holding what applications
// keep beside such rows — prose-like text, JSONB documents and already-compressed binary
// attachments (random bytes stand in for images, PDFs and gzip'd blobs: no compressor can shrink
// them). The documents table grows with the scale too, about 1,000 rows (~3 MB) per unit.

import path from 'node:path';
import type { PgServer } from '../test/harness/postgres.js';
import { run } from '../test/harness/proc.js';

export interface BenchDatabase {
  name: string;
  scale: number;
  /** pg_database_size() after the build. */
  sizeBytes: number;
  tables: { name: string; rows: number; sizeBytes: number }[];
  buildSeconds: number;
}

const WORDS = `order customer invoice shipment payment refund account balance product catalog price
discount warehouse delivery address street city country postal code phone email message status
pending paid shipped returned cancelled review rating comment support ticket priority urgent
normal low high the a of and to in for with on at by from new old quick report monthly weekly
daily summary total amount tax currency euro dollar quantity item line note internal external
team manager supplier contract renewal subscription plan trial premium basic feature request bug
release version deploy server database backup restore migration schema index query latency`
  .split(/\s+/)
  .filter(Boolean);

const DOCUMENTS_SQL = (scale: number) => `
CREATE FUNCTION bench_words(n int) RETURNS text LANGUAGE sql VOLATILE AS $$
  SELECT string_agg(w[1 + floor(random() * array_length(w, 1))::int], ' ')
  FROM (SELECT ARRAY[${WORDS.map((w) => `'${w}'`).join(',')}] AS w) v, generate_series(1, n)
$$;
CREATE FUNCTION bench_random_bytes(n int) RETURNS bytea LANGUAGE sql VOLATILE AS $$
  SELECT string_agg(decode(md5(random()::text), 'hex'), ''::bytea) FROM generate_series(1, (n + 15) / 16)
$$;
CREATE TABLE bench_documents (
  id bigint PRIMARY KEY,
  customer_id int NOT NULL,
  title text NOT NULL,
  body text NOT NULL,
  attrs jsonb NOT NULL,
  attachment bytea,
  created_at timestamptz NOT NULL
);
INSERT INTO bench_documents
SELECT g,
       (random() * 100000 * ${scale})::int,
       initcap(bench_words(6)),
       bench_words(100 + (random() * 160)::int),
       jsonb_build_object(
         'status', (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + g % 4],
         'tags', to_jsonb(string_to_array(bench_words(3), ' ')),
         'total', round((random() * 1000)::numeric, 2),
         'items', (SELECT jsonb_agg(jsonb_build_object('sku', 'SKU-' || (random() * 99999)::int,
                                                       'qty', 1 + (random() * 5)::int,
                                                       'price', round((random() * 200)::numeric, 2)))
                   FROM generate_series(1, 1 + g % 6))),
       CASE WHEN g % 3 = 0 THEN NULL ELSE bench_random_bytes(512 + (g % 7) * 512) END,
       now() - make_interval(secs => g)
FROM generate_series(1, ${1000 * scale}) g;
DROP FUNCTION bench_words(int);
DROP FUNCTION bench_random_bytes(int);`;

/** libpq environment for the server's tools (the password stays out of argv). */
export function pgEnv(server: PgServer, database: string): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('PG')));
  return { ...env, PGHOST: server.host, PGPORT: String(server.port), PGUSER: server.user, PGPASSWORD: server.password, PGDATABASE: database };
}

export async function buildDatabase(server: PgServer, scale: number, log: (m: string) => void, name = `bench_s${scale}`): Promise<BenchDatabase> {
  const started = Date.now();
  await server.createDatabase(name);
  log(`building ${name}: pgbench -i -s ${scale}`);
  // Server-side data generation (G): the rows never cross the socket, which saves time here.
  await run('pgbench -i', { cmd: path.join(server.binDir, 'pgbench'), args: ['-i', '-q', '-s', String(scale), '-I', 'dtGvp'] }, { env: pgEnv(server, name) });
  log(`building ${name}: bench_documents (${1000 * scale} rows of text, JSONB and binary)`);
  await server.query(DOCUMENTS_SQL(scale), name);
  await server.query('VACUUM ANALYZE bench_documents', name);
  // About 1% of the database, for restores of one table (--table): every 70th account.
  await server.query(`CREATE TABLE bench_one_pct AS SELECT * FROM pgbench_accounts WHERE aid % 70 = 0; ALTER TABLE bench_one_pct ADD PRIMARY KEY (aid)`, name);
  await server.query('VACUUM ANALYZE bench_one_pct', name);
  // Flush the build's dirty pages now rather than during the measured runs.
  await server.query('CHECKPOINT', name);
  const size = await server.query(`SELECT pg_database_size(current_database())::bigint AS size`, name);
  const tables = await server.query(
    `SELECT c.relname AS name, c.reltuples::bigint AS rows, pg_total_relation_size(c.oid)::bigint AS size
     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY size DESC`,
    name,
  );
  return {
    name,
    scale,
    sizeBytes: Number(size.rows[0].size),
    tables: tables.rows.map((r) => ({ name: r.name as string, rows: Number(r.rows), sizeBytes: Number(r.size) })),
    buildSeconds: (Date.now() - started) / 1000,
  };
}
