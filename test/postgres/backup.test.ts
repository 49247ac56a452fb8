// PostgreSQL backups through the real CLI against a throwaway server loaded with pg-rich.sql: the
// artifact restores with plain `zstd -dc | pg_restore` (and `gunzip -c | pg_restore`) into a
// database whose schema and every table's contents equal the source; the manifest's counts equal
// the source; --globals is loadable with psql; secrets appear nowhere; --json, list and init work.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { fixturePath } from '../harness/fixtures.js';
import { runCli, spawnCli, type CliResult } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { childrenOf, cmdlineOf, filesUnder, onlyBackup, PG_BIN, readManifestFile, sh, shellQuote } from './helpers.js';
import type { Manifest } from '../../src/catalog/manifest.js';
import { seriesDir, folderOf } from '../harness/stash.js';

let server: PgServer;
let work: string;

const CONTENT_SQL = `
SELECT n.nspname AS schema, c.relname AS name, c.relkind AS kind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
ORDER BY 1, 2`;

/** Per relation: row count and md5 of all rows in a canonical order; plus large objects and sequences. */
async function contents(db: string): Promise<Record<string, string>> {
  const client = new pg.Client({ connectionString: server.url(db) });
  await client.connect();
  try {
    const out: Record<string, string> = {};
    for (const { schema, name } of (await client.query<{ schema: string; name: string }>(CONTENT_SQL)).rows) {
      const rel = `${pg.escapeIdentifier(schema)}.${pg.escapeIdentifier(name)}`;
      const r = await client.query<{ n: string; md5: string }>(
        `SELECT count(*) AS n, md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS md5 FROM ONLY ${rel} t`,
      );
      out[`${schema}.${name}`] = `${r.rows[0].n} rows, md5 ${r.rows[0].md5}`;
    }
    const lo = await client.query<{ oid: string; md5: string }>(`SELECT oid::text, md5(lo_get(oid)) AS md5 FROM pg_largeobject_metadata ORDER BY oid`);
    out['(large objects)'] = lo.rows.map((r) => `${r.oid}:${r.md5}`).join(',');
    const seq = await client.query<{ s: string }>(`SELECT string_agg(schemaname || '.' || sequencename || '=' || coalesce(last_value::text, 'null'), ',' ORDER BY schemaname, sequencename) AS s FROM pg_sequences`);
    out['(sequences)'] = seq.rows[0].s;
    return out;
  } finally {
    await client.end();
  }
}

async function schemaOf(db: string): Promise<string> {
  const { stdout } = await sh(`${PG_BIN}/pg_dump --schema-only --restrict-key=dbstashtest -d ${shellQuote(db)}`, pgEnv());
  return stdout;
}

function pgEnv(): NodeJS.ProcessEnv {
  return { PGHOST: server.host, PGPORT: String(server.port), PGUSER: 'postgres', PGPASSWORD: server.password };
}

async function sourceCounts(db: string): Promise<Record<string, number>> {
  const tables = await server.query(
    `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')`,
    db,
  );
  const counts: Record<string, number> = {};
  for (const { schema, name } of tables.rows as { schema: string; name: string }[]) {
    const r = await server.query(`SELECT count(*)::bigint AS n FROM ONLY ${pg.escapeIdentifier(schema)}.${pg.escapeIdentifier(name)}`, db);
    counts[`${schema}.${name}`] = Number(r.rows[0].n);
  }
  return counts;
}

function manifestCounts(m: Manifest): Record<string, number> {
  return Object.fromEntries(m.tables.map((t) => [`${t.schema}.${t.name}`, t.rows]));
}

function backup(args: string[], stash: string, extra: { env?: Record<string, string | undefined>; cwd?: string } = {}): Promise<CliResult> {
  return runCli(['backup', ...args, '--output-dir', stash], { timeoutMs: 120_000, ...extra });
}

before(async () => {
  server = await startPostgres();
  work = tempDir('dbstash-pgtest');
  await server.createDatabase('rich');
  await server.psqlFile(fixturePath('pg-rich.sql'), 'rich');
});
after(() => server?.stop());

describe('postgres backup of pg-rich', () => {
  let stash: string;
  let result: CliResult;
  let logFile: string;
  const seenArgv: string[][] = [];
  let lockText = '';

  before(async () => {
    stash = path.join(work, 'stash-zstd');
    logFile = path.join(work, 'backup.log');
    const child = spawnCli(['backup', server.url('rich'), '--output-dir', stash, '--log-file', logFile]);
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const closed = new Promise<CliResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
    // While it runs: the pg_dump child's argv and the lock's content.
    let done = false;
    void closed.then(() => (done = true));
    while (!done) {
      for (const pid of childrenOf(child.pid!, 'pg_dump')) {
        const argv = cmdlineOf(pid);
        if (argv.length > 0) seenArgv.push(argv);
      }
      const locks = path.join(seriesDir(stash, 'rich'), 'locks');
      const lock = existsSync(locks) ? readdirSync(locks).find((f) => f.endsWith('.lock')) : undefined;
      if (!lockText && lock) lockText = readFileSync(path.join(locks, lock), 'utf8');
      await new Promise((r) => setTimeout(r, 5));
    }
    result = await closed;
  });

  it('succeeds and publishes one artifact plus its manifest, nothing else', () => {
    assert.equal(result.code, 0, result.stderr);
    const { manifest } = onlyBackup(stash);
    assert.match(manifest.id, /^rich\.[0-9a-f]{8}_dev_\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z$/);
    assert.deepEqual(filesUnder(stash), [`${folderOf(manifest.id)}/${manifest.id}.dump.zst`, `${folderOf(manifest.id)}/${manifest.id}.manifest.json`, `${folderOf(manifest.id)}/series.json`].sort());
    assert.match(result.stdout, new RegExp(`^${manifest.id}: `));
  });

  it('the manifest records the artifact\'s real size and sha256, the tool, the stages and the snapshot', () => {
    const { manifest, artifact } = onlyBackup(stash);
    const bytes = readFileSync(artifact);
    const main = manifest.artifacts[0];
    assert.equal(main.size, bytes.length);
    assert.equal(main.sha256, createHash('sha256').update(bytes).digest('hex'));
    assert.deepEqual(main.stages, [{ id: 'zstd', params: { level: 3 } }]);
    assert.equal(manifest.engine, 'postgres');
    assert.equal(manifest.dump.tool, 'pg_dump');
    assert.ok(manifest.dump.args.includes('--compress=0') && manifest.dump.args.includes('--format=custom'));
    assert.ok(manifest.dump.args.some((a) => a.startsWith('--snapshot=')));
    assert.match(manifest.database.serverVersion, /^15\./);
    assert.ok(main.rawSize > main.size, 'compressed');
  });

  it('manifest row counts equal the source', async () => {
    const { manifest } = onlyBackup(stash);
    const expected = await sourceCounts('rich');
    assert.equal(expected['public.big'], 100000);
    assert.deepEqual(manifestCounts(manifest), expected);
  });

  it('restores with plain `zstd -dc | pg_restore`: same schema and same contents', async () => {
    const { artifact } = onlyBackup(stash);
    await server.createDatabase('rich_restored');
    const { stderr } = await sh(`zstd -dc ${shellQuote(artifact)} | ${PG_BIN}/pg_restore -d rich_restored`, pgEnv());
    assert.equal(stderr.trim(), '');
    const [a, b] = await Promise.all([schemaOf('rich'), schemaOf('rich_restored')]);
    assert.ok(a.includes('CREATE TABLE sales.events_2024_q1') && a.includes('CREATE MATERIALIZED VIEW'), 'the schema dump is real');
    assert.equal(b.replaceAll('rich_restored', 'rich'), a);
    const [x, y] = await Promise.all([contents('rich'), contents('rich_restored')]);
    assert.ok(Object.keys(x).length >= 12, Object.keys(x).join(', '));
    assert.match(x['(large objects)'], /^\d+:[0-9a-f]{32},\d+:[0-9a-f]{32}$/);
    assert.deepEqual(y, x);
  });

  it('the password appears in neither the manifest, the log file, the output, the lock nor pg_dump\'s argv', () => {
    const secret = server.password;
    const { manifest } = onlyBackup(stash);
    assert.ok(seenArgv.length > 0, 'pg_dump was seen running');
    for (const argv of seenArgv) assert.ok(!argv.join(' ').includes(secret), argv.join(' '));
    assert.ok(seenArgv.some((argv) => argv[0].endsWith('pg_dump') && argv.some((a) => a.startsWith('--snapshot='))), 'the dump itself was seen');
    assert.ok(lockText.includes('"pid"'), 'the lock was seen');
    assert.ok(!lockText.includes(secret), lockText);
    assert.ok(!JSON.stringify(manifest).includes(secret));
    assert.equal(manifest.database.url, `postgres://postgres:***@127.0.0.1:${server.port}/rich`);
    const log = readFileSync(logFile, 'utf8');
    assert.ok(log.trim().split('\n').every((l) => JSON.parse(l).message), 'JSON lines');
    assert.ok(!log.includes(secret));
    assert.ok(!(result.stdout + result.stderr).includes(secret));
  });
});

describe('postgres backup variants', () => {
  before(async () => {
    await server.createDatabase('tiny');
    await server.query('CREATE TABLE t AS SELECT 1 AS x', 'tiny');
  });

  it('gzip: the artifact decodes with gunzip and restores', async () => {
    const stash = path.join(work, 'stash-gzip');
    const res = await backup([server.url('rich'), '--compression', 'gzip'], stash);
    assert.equal(res.code, 0, res.stderr);
    const { manifest, artifact } = onlyBackup(stash);
    assert.ok(artifact.endsWith('.dump.gz'));
    assert.deepEqual(manifest.artifacts[0].stages, [{ id: 'gzip', params: { level: 6 } }]);
    await server.createDatabase('rich_gz');
    await sh(`gunzip -c ${shellQuote(artifact)} | ${PG_BIN}/pg_restore -d rich_gz`, pgEnv());
    assert.deepEqual(await sourceCounts('rich_gz'), manifestCounts(manifest));
  });

  it('--globals writes a second artifact that psql loads (roles come back with their passwords)', async () => {
    await server.query(`CREATE ROLE dbstash_reader LOGIN PASSWORD 'reader-pw'`);
    await server.query(`GRANT pg_read_all_data TO dbstash_reader`);
    const stash = path.join(work, 'stash-globals');
    const res = await backup([server.url('rich'), '--globals', '--json'], stash);
    assert.equal(res.code, 0, res.stderr);
    const { manifest, dir } = onlyBackup(stash);
    const globals = manifest.artifacts.find((a) => a.role === 'globals');
    assert.ok(globals, 'a globals artifact');
    assert.equal(globals.file, `${manifest.id}.globals.sql.zst`);
    const file = path.join(dir, globals.file);
    assert.equal(createHash('sha256').update(readFileSync(file)).digest('hex'), globals.sha256);
    await server.query('DROP ROLE dbstash_reader');
    const { stderr } = await sh(`zstd -dc ${shellQuote(file)} | ${PG_BIN}/psql -X -q -d postgres`, pgEnv());
    // The only complaint: the bootstrap role it tries to create already exists.
    assert.deepEqual(stderr.split('\n').filter((l) => /ERROR/.test(l)).map((l) => l.replace(/^.*ERROR:\s*/, '')), ['role "postgres" already exists']);
    const member = await server.query(`SELECT pg_has_role('dbstash_reader', 'pg_read_all_data', 'member') AS ok`);
    assert.equal(member.rows[0].ok, true);
    const client = new pg.Client({ host: server.host, port: server.port, user: 'dbstash_reader', password: 'reader-pw', database: 'rich' });
    await client.connect();
    assert.equal((await client.query('SELECT count(*)::int AS n FROM sales.customer')).rows[0].n, 50);
    await client.end();
  });

  it('--globals as a non-superuser: roles without passwords, and the manifest says so', async () => {
    await server.query(`CREATE ROLE plain LOGIN PASSWORD 'plain-pw'`);
    await server.query('GRANT SELECT ON t TO plain', 'tiny');
    const stash = path.join(work, 'stash-globals-plain');
    const res = await backup([`postgres://plain:plain-pw@127.0.0.1:${server.port}/tiny`, '--globals', '--json'], stash);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stderr, /^warning: .*not a superuser: roles are captured without their passwords/m);
    const { manifest } = onlyBackup(stash);
    assert.ok(manifest.artifacts.some((a) => a.role === 'globals'));
    assert.ok(manifest.dump.args.length > 0);
    assert.ok(
      manifest.warnings.some((w) => w.includes('without their passwords')),
      `the manifest records it, so a restore knows: ${JSON.stringify(manifest.warnings)}`,
    );
  });

  it('--json prints the result; `list --json` shows the backup', async () => {
    const stash = path.join(work, 'stash-json');
    const res = await backup([server.url('rich'), '--json', '--label', 'purpose=test'], stash);
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    assert.equal(out.ok, true);
    assert.equal(out.degraded, false);
    assert.deepEqual(out.manifest, readManifestFile(stash, out.id));
    assert.deepEqual(out.manifest.labels, { purpose: 'test' });
    const list = await runCli(['list', '--output-dir', stash, '--json']);
    assert.equal(list.code, 0, list.stderr);
    const listed = JSON.parse(list.stdout);
    assert.deepEqual(listed.problems, []);
    assert.equal(listed.backups.length, 1);
    const entry = listed.backups[0];
    assert.equal(entry.id, out.id);
    assert.equal(entry.database, 'rich');
    assert.equal(entry.engine, 'postgres');
    assert.equal(entry.environment, 'dev');
    assert.equal(entry.rows, out.manifest.tables.reduce((s: number, t: { rows: number }) => s + t.rows, 0));
    assert.equal(entry.storedSize, out.manifest.artifacts[0].size);
    assert.equal(entry.verification, null);
    const text = await runCli(['list', '--output-dir', stash]);
    assert.match(text.stdout, new RegExp(`^${out.id}\\s+rich\\s+dev\\s`, 'm'));
  });

  it('two sequential backups get distinct ids, and list shows them newest first', async () => {
    const stash = path.join(work, 'stash-seq');
    const a = await backup([server.url('tiny'), '--json'], stash);
    const b = await backup([server.url('tiny'), '--json'], stash);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    const [idA, idB] = [JSON.parse(a.stdout).id, JSON.parse(b.stdout).id];
    assert.notEqual(idA, idB);
    const listed = JSON.parse((await runCli(['list', '--output-dir', stash, '--json'])).stdout);
    assert.deepEqual(listed.backups.map((x: { id: string }) => x.id), [idB, idA]);
  });

  it('a password full of URL syntax works, and neither its raw nor its encoded form leaks', async () => {
    const password = "p@ss:w/rd%20?#&='\\ü";
    await server.query(`CREATE ROLE odd_pw LOGIN SUPERUSER PASSWORD '${password.replace(/'/g, "''")}'`);
    const encoded = encodeURIComponent(password);
    const stash = path.join(work, 'stash-oddpw');
    const log = path.join(work, 'oddpw.log');
    const res = await backup([`postgres://odd_pw:${encoded}@127.0.0.1:${server.port}/tiny`, '--log-file', log], stash);
    assert.equal(res.code, 0, res.stderr);
    const { manifest } = onlyBackup(stash);
    const everything = [res.stdout, res.stderr, readFileSync(log, 'utf8'), JSON.stringify(manifest)].join('\n');
    for (const form of [password, encoded, 'p@ss', 'w/rd']) assert.ok(!everything.includes(form), form);
    assert.equal(manifest.database.user, 'odd_pw');
  });

  it('a prod backup of a database on localhost warns, and the warning is kept in the manifest', async () => {
    const stash = path.join(work, 'stash-prod');
    const res = await backup([server.url('tiny'), '--env', 'prod', '--json'], stash);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stderr, /^warning: a prod backup of a database on 127\.0\.0\.1: is this the production server\?/m);
    const out = JSON.parse(res.stdout);
    assert.match(out.id, /^tiny\.[0-9a-f]{8}_prod_/);
    assert.equal(out.manifest.environment, 'prod');
    assert.ok(out.manifest.warnings.some((w: string) => w.includes('is this the production server')));
  });

  it('databases whose names libpq would read as a connection string back up and restore', async () => {
    for (const name of ['a=b', "it's \\ odd", 'postgres://x']) {
      await server.createDatabase(name);
      await server.query('CREATE TABLE t AS SELECT 42 AS answer', name);
      const stash = path.join(work, `stash-odd-${createHash('md5').update(name).digest('hex')}`);
      const res = await backup([server.url(name), '--globals', '--json'], stash);
      assert.equal(res.code, 0, `${name}: ${res.stderr}`);
      const { manifest, artifact } = onlyBackup(stash);
      assert.equal(manifest.database.name, name);
      assert.deepEqual(manifest.tables.map((t) => `${t.name}=${t.rows}`), ['t=1']);
      const target = `restored_${manifest.id.slice(0, 5).replace(/\W/g, '_')}_${name.length}`;
      await server.createDatabase(target);
      await sh(`zstd -dc ${shellQuote(artifact)} | ${PG_BIN}/pg_restore -d ${target}`, pgEnv());
      assert.equal((await server.query('SELECT answer FROM t', target)).rows[0].answer, 42);
    }
  });

  it('`init` writes a config that `backup --config` accepts with ${DATABASE_URL}', async () => {
    const cwd = path.join(work, 'init');
    await sh(`mkdir -p ${shellQuote(cwd)}`);
    const init = await runCli(['init'], { cwd });
    assert.equal(init.code, 0, init.stderr);
    const file = path.join(cwd, 'dbstash.yaml');
    assert.match(readFileSync(file, 'utf8'), /url: \$\{DATABASE_URL\}/);
    assert.equal(statSync(file).mode & 0o777, 0o600, 'the config may hold secrets: readable by its owner only');
    const again = await runCli(['init'], { cwd });
    assert.equal(again.code, 2, 'refuses to overwrite without --yes');
    const res = await runCli(['backup', '--config', file, '--json'], { cwd, env: { DATABASE_URL: server.url('tiny') }, timeoutMs: 60_000 });
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    assert.match(out.id, /^tiny\.[0-9a-f]{8}_dev_/);
    assert.ok(existsSync(path.join(cwd, 'backups', folderOf(out.id), `${out.id}.manifest.json`)), filesUnder(cwd).join(', '));
  });
});
