// `dbstash restore` against a real PostgreSQL server and real SQLite files: a restore equals the
// source (schema and every table's contents), replacing a database keeps the old one aside until
// --drop-old, nothing reaches the target without confirmation or from a damaged backup, a killed
// pg_restore leaves the original intact, sessions are refused or terminated with --force, --at
// picks the right backup, and where a swap is impossible the in-place restore rolls back.

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { cpSync, existsSync, rmSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync, openSync, readSync, writeSync, closeSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import pg from 'pg';
import { fixturePath } from '../harness/fixtures.js';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { backupId as backup, CLI_PATH, expectExit, runCli, spawnCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import type { Manifest } from '../../src/catalog/manifest.js';
import { keptAside, keptName, parseKeptName, restoringName } from '../../src/restore/kept.js';
import { loadEngine } from '../../src/engines/index.js';
import { parseTarget } from '../../src/engines/target.js';
import { mapRolesInLine } from '../../src/engines/postgres/roles.js';
import { seriesDir, folderOf } from '../harness/stash.js';

let server: PgServer;
let stash: string;
let richId: string;


async function databases(): Promise<string[]> {
  return (await server.query('SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1')).rows.map((r) => r.datname as string);
}

function pgDump(db: string, ...args: string[]): string {
  const r = spawnSync(path.join(server.binDir, 'pg_dump'), [...args, '--no-password', '-d', server.url(db)], { encoding: 'utf8', maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, r.stderr);
  // pg_dump marks its script with a random \restrict key per run.
  return r.stdout.replace(/^\\(un)?restrict \S+$/gm, '');
}

/** Every user table's rows (sorted) and every large object, as one digest per item. */
async function contents(db: string): Promise<Record<string, string>> {
  const tables = await server.query(
    `SELECT format('%I.%I', n.nspname, c.relname) AS t FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'm') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1`,
    db,
  );
  const out: Record<string, string> = {};
  for (const { t } of tables.rows as { t: string }[]) {
    const r = await server.query(`SELECT count(*)::int AS n, md5(coalesce(string_agg(x::text, E'\\n' ORDER BY x::text), '')) AS h FROM ${t} x`, db);
    out[t] = `${r.rows[0].n}:${r.rows[0].h}`;
  }
  const lo = await server.query(`SELECT coalesce(string_agg(oid::text || '=' || md5(lo_get(oid)), ',' ORDER BY oid), '') AS h FROM pg_largeobject_metadata`, db);
  out['large objects'] = lo.rows[0].h as string;
  return out;
}

async function count(db: string, table: string): Promise<number> {
  return (await server.query(`SELECT count(*)::int AS n FROM ${table}`, db)).rows[0].n as number;
}

async function makeSmall(db: string, rows: number): Promise<void> {
  await server.createDatabase(db);
  await server.query(`CREATE TABLE item (id int PRIMARY KEY, label text); INSERT INTO item SELECT g, 'item ' || g FROM generate_series(1, ${rows}) g;`, db);
}

function copyOfStash(): string {
  const dir = tempDir('dbstash-restore-copy');
  cpSync(stash, dir, { recursive: true });
  return dir;
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return '';
  }
}

/** pids of `name` processes whose parent is `parent` (Linux /proc). */
function children(parent: number, name: string): number[] {
  const found: number[] = [];
  for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === parent && readlinkSync(`/proc/${pid}/exe`).endsWith(`/${name}`)) found.push(Number(pid));
    } catch {
      /* gone meanwhile */
    }
  }
  return found;
}

before(async () => {
  server = await startPostgres();
  await server.createDatabase('rich');
  await server.psqlFile(fixturePath('pg-rich.sql'), 'rich');
  stash = tempDir('dbstash-restore');
  richId = await backup(server.url('rich'), stash);
});
after(() => server?.stop());

describe('restore PostgreSQL', () => {
  test('the plan tells the target\'s real row count, also for tables never analyzed', async () => {
    await makeSmall('planned', 10);
    const planStash = tempDir('dbstash-restore-plan');
    const id = await backup(server.url('planned'), planStash);
    await server.createDatabase('unanalyzed');
    // Created, filled and never analyzed: the planner's statistics know nothing of these rows.
    await server.query(`CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 25252);`, 'unanalyzed');
    const r = await runCli(['restore', id, '--to', server.url('unanalyzed'), '--output-dir', planStash, '--dry-run', '--json']);
    expectExit(r, 0);
    assert.equal(JSON.parse(r.stdout).plan.targetRows, 25252);
    const text = await runCli(['restore', id, '--to', server.url('unanalyzed'), '--output-dir', planStash, '--dry-run']);
    assert.match(text.stdout, /target: .* exists, 1 tables, about 25252 rows \(holds data\)/);
  });

  test('into a new database: equal schema and contents, a record beside the backup', async () => {
    const r = await runCli(['restore', richId, '--to', server.url('rich_copy'), '--output-dir', stash, '--yes']);
    expectExit(r, 0, /row counts match the manifest/);
    assert.equal(pgDump('rich_copy', '--schema-only'), pgDump('rich', '--schema-only'));
    assert.deepEqual(await contents('rich_copy'), await contents('rich'));
    assert.ok(!(await databases()).some((d) => d.includes('_restoring_')));
    const recordFile = readdirSync(seriesDir(stash, 'rich')).find((f) => f.startsWith(`${richId}.restore-`));
    const record = JSON.parse(readFileSync(path.join(seriesDir(stash, 'rich'), recordFile!), 'utf8'));
    assert.equal(record.result, 'succeeded');
    assert.equal(record.mode, 'new');
    assert.ok(!record.target.includes(server.password), 'no password in the record');
    const manifest = JSON.parse(readFileSync(path.join(seriesDir(stash, 'rich'), `${richId}.manifest.json`), 'utf8')) as Manifest;
    assert.equal(record.rowCheck.rows, manifest.tables.reduce((n, t) => n + t.rows, 0));
    assert.ok(record.rowCheck.rows > 100000);
  });

  test('over an existing database: the old one is kept until --drop-old; --jobs restores in parallel', async () => {
    await makeSmall('shop', 10);
    await server.query('CREATE ROLE shop_owner NOLOGIN');
    await server.query('ALTER DATABASE shop OWNER TO shop_owner');
    const first = await runCli(['restore', richId, '--to', server.url('shop'), '--output-dir', stash, '--yes', '--jobs', '2']);
    expectExit(first, 0, /the previous database is kept as shop_before_\d{8}_\d{6}/);
    const kept = (await databases()).filter((d) => d.startsWith('shop_before_'));
    assert.equal(kept.length, 1);
    assert.equal(await count(kept[0], 'item'), 10, 'the old data is kept aside');
    assert.equal(await count('shop', 'public.big'), 100000);
    const owner = await server.query(`SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = 'shop'`);
    assert.equal(owner.rows[0].owner, 'postgres', 'the restored database has the owner the backup recorded (rich\'s), not that of the one it replaced');
    const second = await runCli(['restore', richId, '--to', server.url('shop'), '--output-dir', stash, '--yes', '--drop-old', '--json']);
    expectExit(second, 0);
    assert.equal(JSON.parse(second.stdout).record.droppedOld, true);
    assert.deepEqual((await databases()).filter((d) => d.startsWith('shop_before_')), kept, 'the replaced copy was dropped, the earlier one stays');
    assert.deepEqual(await contents('shop'), await contents('rich'));
  });

  test('killing pg_restore mid-way leaves the original intact and usable', async () => {
    await makeSmall('victim', 25);
    const before = await databases();
    const child = spawnCli(['restore', richId, '--to', server.url('victim'), '--output-dir', stash, '--yes']);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    let killed = false;
    for (let i = 0; i < 600 && !killed && child.exitCode === null; i++) {
      const restoring = children(child.pid!, 'pg_restore').filter((pid) => cmdline(pid).includes('--dbname='));
      if (restoring.length > 0 && stderr.includes('restoring into the new database')) {
        await new Promise((r) => setTimeout(r, 300));
        process.kill(restoring[0], 'SIGKILL');
        killed = true;
      } else {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
    const code = child.exitCode ?? (await new Promise<number | null>((r) => child.once('exit', r)));
    assert.ok(killed, `pg_restore was found and killed\n${stderr}`);
    assert.equal(code, 9, stderr);
    assert.match(stderr, /error: restore failed: \[postgres\] pg_restore was killed by SIGKILL; postgres:\/\/\S+\/victim was not touched/);
    assert.deepEqual(await databases(), before, 'no temporary database left, nothing renamed');
    assert.equal(await count('victim', 'item'), 25);
    await server.query('INSERT INTO item VALUES (26, $$still writable$$)'.replace('$$still writable$$', "'still writable'"), 'victim');
  });

  /** Flips one bit of the byte at `at` (default: a third into the file). */
  function flipByte(file: string, at = Math.floor(statSync(file).size / 3)): void {
    const fd = openSync(file, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] ^= 0x40;
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);
  }

  function lastRecord(dir: string, id: string): { result: string; error?: string; mode?: string } {
    const recordFile = readdirSync(path.join(dir, folderOf(id))).filter((f) => f.startsWith(`${id}.restore-`)).sort().at(-1)!;
    return JSON.parse(readFileSync(path.join(dir, folderOf(id), recordFile), 'utf8'));
  }

  test('a backup damaged mid-file is caught while it streams into the new database: dropped before any swap, target untouched, exit 7', async () => {
    const dir = copyOfStash();
    flipByte(path.join(dir, folderOf(richId), `${richId}.dump.zst`));
    const before = await databases();
    const r = await runCli(['restore', richId, '--to', server.url('victim'), '--output-dir', dir, '--yes']);
    expectExit(r, 7, /error: checksum mismatch: \S+\.dump\.zst has sha256 [0-9a-f]{64}, manifest says [0-9a-f]{64}/);
    // One pass: no separate verification read; the damage is found in the stream into the new database.
    assert.doesNotMatch(r.stderr, /verifying .* before touching anything/);
    assert.match(r.stderr, /checked: the artifact is present with the manifest's sizes; size, SHA-256 and decoding are checked while streaming into victim_restoring_\d{8}_\d{6}, before the swap/);
    assert.match(r.stderr, /restoring into the new database/);
    assert.match(r.stderr, /victim was not touched; the new database victim_restoring_\d{8}_\d{6} was dropped/);
    const record = lastRecord(dir, richId);
    assert.equal(record.result, 'failed');
    assert.match(record.error!, /^checksum mismatch/);
    assert.deepEqual(await databases(), before, 'no temporary database left, nothing renamed');
    assert.equal(await count('victim', 'item'), 26);
  });

  test('an uncompressed dump that pg_restore gives up on at its first bytes is reported as the damage it is (exit 7), not as a failed restore', async () => {
    const dir = tempDir('dbstash-restore-plain');
    const id = await backup(server.url('rich'), dir, '--compression', 'none');
    const file = readdirSync(path.join(dir, folderOf(id))).find((f) => f.startsWith(`${id}.dump`))!;
    // The archive header: pg_restore gives up at once, long before the stream's SHA-256 is known.
    flipByte(path.join(dir, folderOf(id), file), 1);
    const before = await databases();
    const r = await runCli(['restore', id, '--to', server.url('victim'), '--output-dir', dir, '--yes']);
    expectExit(r, 7, /error: checksum mismatch: \S+\.dump has sha256/);
    assert.doesNotMatch(r.stderr, /restore failed/);
    assert.match(r.stderr, /the new database victim_restoring_\d{8}_\d{6} was dropped/);
    assert.deepEqual(await databases(), before);
    assert.equal(await count('victim', 'item'), 26);
  });

  test('a truncated or missing artifact is refused before anything is created; a dry run verifies the whole backup', async () => {
    const dir = copyOfStash();
    const file = path.join(dir, folderOf(richId), `${richId}.dump.zst`);
    const before = await databases();
    const dry = await runCli(['restore', richId, '--to', server.url('victim'), '--output-dir', stash, '--dry-run', '--json']);
    expectExit(dry, 0);
    assert.equal(JSON.parse(dry.stdout).plan.check, 'streaming');
    assert.match(JSON.parse(dry.stdout).plan.structure, /^pg_restore read \d+ TOC entries and every data block \(the restore itself checks while streaming/);
    flipByte(file);
    expectExit(await runCli(['restore', richId, '--to', server.url('victim'), '--output-dir', dir, '--dry-run']), 7, /error: checksum mismatch/);
    const size = statSync(file).size;
    writeFileSync(file, readFileSync(file).subarray(0, size - 100));
    const r = await runCli(['restore', richId, '--to', server.url('victim'), '--output-dir', dir, '--yes']);
    expectExit(r, 7, new RegExp(`error: artifact \\S+ is ${size - 100} bytes, manifest says ${size}`));
    assert.doesNotMatch(r.stderr, /restoring into/);
    assert.match(lastRecord(dir, richId).error!, /^refused before touching the target: artifact \S+ is \d+ bytes/);
    rmSync(file);
    expectExit(await runCli(['restore', richId, '--to', server.url('victim'), '--output-dir', dir, '--yes']), 7, /error: artifact \S+ is missing in \//);
    assert.deepEqual(await databases(), before);
    assert.equal(await count('victim', 'item'), 26);
  });

  test('without a TTY and without --yes it refuses and changes nothing; --dry-run only plans', async () => {
    const before = await databases();
    const refused = await runCli(['restore', richId, '--to', server.url('victim'), '--output-dir', stash]);
    expectExit(refused, 2, /error: refusing to restore without confirmation: no TTY/);
    assert.match(refused.stderr, /target: .*victim — exists, 1 tables, about \d+ rows \(holds data\)/);
    const dry = await runCli(['restore', richId, '--to', server.url('victim'), '--output-dir', stash, '--dry-run', '--json']);
    expectExit(dry, 0);
    const plan = JSON.parse(dry.stdout).plan;
    assert.equal(plan.mode, 'swap');
    assert.match(plan.keptAs, /^victim_before_\d{8}_\d{6}$/);
    assert.deepEqual(await databases(), before);
    assert.equal(await count('victim', 'item'), 26);
  });

  test('connected sessions are listed and refused; --force terminates them', async () => {
    const client = new pg.Client({ connectionString: server.url('victim'), application_name: 'busy-app' });
    client.on('error', () => {});
    await client.connect();
    const refused = await runCli(['restore', richId, '--to', server.url('victim'), '--output-dir', stash, '--yes']);
    expectExit(refused, 9, /error: 1 other session\(s\) are connected to .*victim: pid \d+ user postgres from 127\.0\.0\.1 app "busy-app"/);
    assert.match(refused.stderr, /hint: .*--force/);
    assert.equal(await count('victim', 'item'), 26);
    const forced = await runCli(['restore', richId, '--to', server.url('victim'), '--output-dir', stash, '--yes', '--force', '--drop-old']);
    expectExit(forced, 0, /terminated 1 session\(s\) .*busy-app/);
    await assert.rejects(client.query('SELECT 1'));
    await client.end().catch(() => {});
    assert.equal(await count('victim', 'public.big'), 100000);
  });

  test('latest --at picks the newest backup at or before the time', async () => {
    await makeSmall('timed', 1);
    const dir = tempDir('dbstash-restore-at');
    const first = await backup(server.url('timed'), dir);
    await new Promise((r) => setTimeout(r, 1100));
    await server.query('INSERT INTO item VALUES (2, $$two$$)'.replace('$$two$$', "'two'"), 'timed');
    const second = await backup(server.url('timed'), dir);
    const secondAt = (JSON.parse(readFileSync(path.join(dir, folderOf(second), `${second}.manifest.json`), 'utf8')) as Manifest).startedAt;
    const justBefore = new Date(new Date(secondAt).getTime() - 1).toISOString();
    const plan = async (...at: string[]) => {
      const r = await runCli(['restore', 'latest', '--database', 'timed', ...at, '--to', server.url('timed_copy'), '--output-dir', dir, '--dry-run', '--json']);
      expectExit(r, 0);
      return JSON.parse(r.stdout).plan.backup.id as string;
    };
    assert.equal(await plan(), second);
    assert.equal(await plan('--at', justBefore), first);
    assert.equal(await plan('--at', secondAt), second);
    expectExit(await runCli(['restore', 'latest', '--database', 'timed', '--at', '2000-01-01T00:00Z', '--to', server.url('x'), '--output-dir', dir, '--yes']), 2, /no backup of timed at or before/);
    cpSync(seriesDir(stash, 'rich'), path.join(dir, folderOf(richId)), { recursive: true });
    expectExit(
      await runCli(['restore', 'latest', '--to', server.url('timed_copy'), '--output-dir', dir, '--yes']),
      2,
      /error: the stash holds backups of several databases \(rich, timed\); say which one with --database/,
    );
    const restored = await runCli(['restore', 'latest', '--database', 'timed', '--at', justBefore, '--to', server.url('timed_copy'), '--output-dir', dir, '--yes']);
    expectExit(restored, 0);
    assert.equal(await count('timed_copy', 'item'), 1);
  });

  test('without CREATEDB: safety backup, restore in place, --role-map gives the objects to another role', async () => {
    await server.query(`CREATE ROLE alice LOGIN PASSWORD 'alice-pw'; CREATE ROLE bob LOGIN PASSWORD 'bob-pw' NOCREATEDB; CREATE ROLE carol`);
    await server.query('CREATE DATABASE owned OWNER alice');
    const alice = new pg.Client({ connectionString: server.url('owned').replace(`postgres:${encodeURIComponent(server.password)}@`, 'alice:alice-pw@') });
    await alice.connect();
    await alice.query(`CREATE TABLE note (id int PRIMARY KEY, body text); INSERT INTO note SELECT g, 'note ' || g FROM generate_series(1, 40) g`);
    await alice.end();
    const dir = tempDir('dbstash-restore-owned');
    const ownedId = await backup(server.url('owned'), dir);

    await server.query('CREATE DATABASE bobs OWNER bob');
    const bobUrl = server.url('bobs').replace(`postgres:${encodeURIComponent(server.password)}@`, 'bob:bob-pw@');
    const bob = new pg.Client({ connectionString: bobUrl });
    await bob.connect();
    await bob.query(`CREATE TABLE old_stuff (x int); INSERT INTO old_stuff VALUES (1), (2)`);
    await bob.end();
    const r = await runCli(['restore', ownedId, '--to', bobUrl, '--output-dir', dir, '--yes', '--role-map', 'alice=bob', '--json']);
    expectExit(r, 0, /a swap is impossible \(user "bob" has no CREATEDB privilege\)/);
    const record = JSON.parse(r.stdout).record;
    assert.equal(record.mode, 'in-place');
    assert.match(record.safetyBackup, /^bobs\.[0-9a-f]{8}_prod_/);
    assert.ok(existsSync(path.join(dir, folderOf(record.safetyBackup), `${record.safetyBackup}.manifest.json`)), 'the safety backup is in the stash');
    assert.equal(await count('bobs', 'note'), 40);
    const owner = await server.query(`SELECT tableowner FROM pg_tables WHERE tablename = 'note'`, 'bobs');
    assert.equal(owner.rows[0].tableowner, 'bob');
    // A backup that does not hold what its manifest says: restored in place, found wrong, rolled back.
    const manifestFile = path.join(dir, folderOf(ownedId), `${ownedId}.manifest.json`);
    const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as Manifest;
    manifest.tables[0].rows = 41;
    writeFileSync(manifestFile, JSON.stringify(manifest));
    await server.query('INSERT INTO old_stuff VALUES (3)', 'bobs');
    const failed = await runCli(['restore', ownedId, '--to', bobUrl, '--output-dir', dir, '--yes', '--role-map', 'alice=bob']);
    expectExit(failed, 9, /error: restore failed: the restored data does not match the manifest: table public\.note: 40 rows, manifest says 41; rolled back/);
    assert.equal(await count('bobs', 'old_stuff'), 3);
    assert.equal(await count('bobs', 'note'), 40);
    const last = readdirSync(path.join(dir, folderOf(ownedId))).filter((f) => f.startsWith(`${ownedId}.restore-`)).sort().at(-1)!;
    assert.deepEqual(
      (({ result, rollback, mode }) => ({ result, rollback, mode }))(JSON.parse(readFileSync(path.join(dir, folderOf(ownedId), last), 'utf8'))),
      { result: 'rolled-back', rollback: 'succeeded', mode: 'in-place' },
    );
    // In place the target is touched at once: the whole backup is verified first, and a damaged
    // one is refused before the safety backup or anything else.
    flipByte(path.join(dir, folderOf(ownedId), `${ownedId}.dump.zst`));
    const damaged = await runCli(['restore', ownedId, '--to', bobUrl, '--output-dir', dir, '--yes', '--role-map', 'alice=bob']);
    expectExit(damaged, 7, /error: checksum mismatch/);
    assert.match(damaged.stderr, /verifying \S+ before touching anything/);
    assert.doesNotMatch(damaged.stderr, /safety backup/);
    assert.match(lastRecord(dir, ownedId).error!, /^refused before touching the target: checksum mismatch/);
    assert.equal(await count('bobs', 'old_stuff'), 3);
    assert.equal(mapRolesInLine('GRANT SELECT ON TABLE public.alice TO alice;', { alice: 'carol' }), 'GRANT SELECT ON TABLE public.alice TO carol;');
    assert.equal(mapRolesInLine('ALTER TABLE "Alice"."T" OWNER TO "Alice";', { Alice: 'bob' }), 'ALTER TABLE "Alice"."T" OWNER TO bob;');
  });
});

describe('restore PostgreSQL: confirmation, interruption, globals', () => {
  test('on a TTY the database name must be typed; anything else cancels and changes nothing', async () => {
    await makeSmall('typed', 3);
    const dir = tempDir('dbstash-restore-tty');
    const id = await backup(server.url('typed'), dir);
    await server.query('INSERT INTO item VALUES (4, $$four$$)'.replace('$$four$$', "'four'"), 'typed');
    const cli = (answer: string) =>
      spawnSync('script', ['-qec', [process.execPath, CLI_PATH, 'restore', id, '--to', server.url('typed'), '--output-dir', dir].map((a) => `'${a}'`).join(' '), '/dev/null'], {
        input: `${answer}\n`,
        encoding: 'utf8',
        timeout: 60_000,
      });
    const wrong = cli('typo');
    assert.match(wrong.stdout, /type the database name "typed"/);
    assert.match(wrong.stdout, /error: not confirmed; nothing was changed/);
    assert.equal(wrong.status, 2, wrong.stdout);
    assert.equal(await count('typed', 'item'), 4);
    const right = cli('typed');
    assert.equal(right.status, 0, right.stdout);
    assert.equal(await count('typed', 'item'), 3);
    const kept = await keptAside(await loadEngine('postgres'), parseTarget(server.url('typed')));
    assert.equal(kept.length, 1);
    assert.equal(await count(kept[0].name, 'item'), 4);
  });

  test('SIGINT during the restore drops the new database and leaves the original as it was', async () => {
    const before = await databases();
    const child = spawnCli(['restore', richId, '--to', server.url('typed'), '--output-dir', stash, '--yes']);
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    for (let i = 0; i < 500 && !stderr.includes('restoring into the new database'); i++) await new Promise((r) => setTimeout(r, 20));
    await new Promise((r) => setTimeout(r, 300));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((r) => child.once('exit', r));
    assert.equal(code, 130, stderr);
    assert.match(stderr, /error: interrupted by SIGINT/);
    assert.deepEqual(await databases(), before);
    assert.equal(await count('typed', 'item'), 3);
  });

  test('--with-globals recreates the roles the backup captured; existing roles are left alone', async () => {
    await server.query('CREATE ROLE dave NOLOGIN');
    await server.query('CREATE DATABASE daves OWNER dave');
    await server.query(`SET ROLE dave; CREATE TABLE ledger (n int); INSERT INTO ledger VALUES (1), (2), (3)`, 'daves');
    const dir = tempDir('dbstash-restore-globals');
    const id = await backup(server.url('daves'), dir, '--globals');
    await server.query('DROP DATABASE daves');
    await server.query('DROP ROLE dave');
    const r = await runCli(['restore', id, '--to', server.url('daves'), '--output-dir', dir, '--yes', '--with-globals']);
    expectExit(r, 0, /role\(s\) already exist on the target server and were left as they are/);
    const owner = await server.query(`SELECT tableowner FROM pg_tables WHERE tablename = 'ledger'`, 'daves');
    assert.equal(owner.rows[0].tableowner, 'dave');
    assert.equal(await count('daves', 'ledger'), 3);
  });
});

describe('restore SQLite', () => {
  function makeDb(file: string, rows: number): void {
    const db = new Database(file);
    db.exec('CREATE TABLE entry (id INTEGER PRIMARY KEY, body TEXT)');
    const insert = db.prepare('INSERT INTO entry (body) VALUES (?)');
    db.transaction(() => {
      for (let i = 0; i < rows; i++) insert.run(`entry ${i}`);
    })();
    db.close();
  }
  const rowsOf = (file: string) => {
    const db = new Database(file, { readonly: true });
    try {
      return (db.prepare('SELECT count(*) AS n FROM entry').get() as { n: number }).n;
    } finally {
      db.close();
    }
  };

  test('to a new file, over an unused file (kept aside), and in place with rollback when the file is in use', async () => {
    const dir = tempDir('dbstash-restore-sqlite');
    const source = path.join(dir, 'app.db');
    makeDb(source, 500);
    const sqliteStash = path.join(dir, 'stash');
    const id = await backup(source, sqliteStash);

    const fresh = path.join(dir, 'fresh.db');
    expectExit(await runCli(['restore', id, '--to', fresh, '--output-dir', sqliteStash, '--yes']), 0);
    assert.equal(rowsOf(fresh), 500);

    const existing = path.join(dir, 'existing.db');
    makeDb(existing, 3);
    const over = await runCli(['restore', id, '--to', existing, '--output-dir', sqliteStash, '--yes', '--json']);
    expectExit(over, 0);
    const keptAs = JSON.parse(over.stdout).record.keptAs as string;
    assert.match(keptAs, /^existing_before_\d{8}_\d{6}$/);
    assert.equal(rowsOf(existing), 500);
    assert.equal(rowsOf(path.join(dir, `${keptAs}.db`)), 3);

    // Held open by this process: no swap; safety backup, in place, and the open connection sees it.
    const busy = path.join(dir, 'busy.db');
    makeDb(busy, 7);
    const held = new Database(busy);
    try {
      const inPlace = await runCli(['restore', id, '--to', busy, '--output-dir', sqliteStash, '--yes', '--json']);
      expectExit(inPlace, 0, new RegExp(`a swap is impossible \\(${busy.replace(/[.]/g, '\\.')} is in use by pid ${process.pid}`));
      const record = JSON.parse(inPlace.stdout).record;
      assert.equal(record.mode, 'in-place');
      assert.match(record.safetyBackup, /^busy\.[0-9a-f]{8}_prod_/);
      assert.equal((held.prepare('SELECT count(*) AS n FROM entry').get() as { n: number }).n, 500);

      // A backup whose manifest promises other counts: restored in place, found wrong, rolled back.
      held.exec('DELETE FROM entry WHERE id > 9');
      const manifestFile = path.join(seriesDir(sqliteStash, 'app'), `${id}.manifest.json`);
      const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as Manifest;
      manifest.tables[0].rows = 501;
      writeFileSync(manifestFile, JSON.stringify(manifest));
      const failed = await runCli(['restore', id, '--to', busy, '--output-dir', sqliteStash, '--yes']);
      expectExit(failed, 9, /error: restore failed: the restored data does not match the manifest: table main\.entry: 500 rows, manifest says 501; rolled back/);
      assert.equal((held.prepare('SELECT count(*) AS n FROM entry').get() as { n: number }).n, 9, 'the safety backup was restored');
      const records = readdirSync(seriesDir(sqliteStash, 'app')).filter((f) => f.startsWith(`${id}.restore-`)).sort();
      const last = JSON.parse(readFileSync(path.join(seriesDir(sqliteStash, 'app'), records.at(-1)!), 'utf8'));
      assert.equal(last.result, 'rolled-back');
      assert.equal(last.rollback, 'succeeded');
    } finally {
      held.close();
    }
  });
});

describe('kept-aside names', () => {
  test('stamped, unquoted-safe, within the identifier limit, and parsed back', () => {
    const at = new Date('2026-11-23T08:07:09Z');
    assert.equal(keptName('shop', at), 'shop_before_20261123_080709');
    assert.equal(restoringName('shop', at), 'shop_restoring_20261123_080709');
    assert.equal(keptName('x'.repeat(80), at).length, 63);
    assert.deepEqual(parseKeptName('shop_before_20261123_080709'), { name: 'shop_before_20261123_080709', of: 'shop', keptAt: at });
    assert.equal(parseKeptName('shop_restoring_20261123_080709'), undefined);
  });
});
