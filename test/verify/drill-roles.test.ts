// Restore drills of PostgreSQL dumps that refer to roles and extensions the drill's server does not
// have: a row-level-security policy TO app_reader, grants to two roles, a table owned by a third,
// default privileges. The drill gives its server those roles (and removes them afterwards), so a
// good backup passes; what the drill's own environment cannot provide is "could not verify"
// (exit 8, no failed record), and only a dump the server rejects for what it says is "damaged"
// (exit 7). Real servers throughout: the source, and a second one for --scratch-url.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { cpSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { backupId, expectExit, runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { seriesDir } from '../harness/stash.js';
import type { Manifest } from '../../src/catalog/manifest.js';

let source: PgServer;
let scratch: PgServer;
let stash: string;

const ROLES = ['app_owner', 'app_reader', 'reporting', 'Audit Team'];

const SHOP_SQL = `
CREATE TABLE customer (id int PRIMARY KEY, name text NOT NULL, region text NOT NULL);
INSERT INTO customer SELECT g, 'customer ' || g, CASE WHEN g % 2 = 0 THEN 'north' ELSE 'south' END FROM generate_series(1, 500) g;
INSERT INTO customer VALUES (424242, 'zz-marker', 'north');
ALTER TABLE customer ENABLE ROW LEVEL SECURITY;
CREATE POLICY reader_sees_north ON customer FOR SELECT TO app_reader, "Audit Team" USING (region = 'north');
GRANT SELECT ON customer TO app_reader;
GRANT SELECT, INSERT ON customer TO reporting;
CREATE TABLE invoice (id int PRIMARY KEY, customer int REFERENCES customer, total numeric);
INSERT INTO invoice SELECT g, 1 + g % 500, g * 1.5 FROM generate_series(1, 2000) g;
ALTER TABLE invoice OWNER TO app_owner;
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES TO reporting;
`;

/** The verification records of a backup, oldest first. */
function records(dir: string, id: string): { result: string; level: string; error?: string }[] {
  const folder = seriesDir(dir, id.split('.')[0]);
  return readdirSync(folder)
    .filter((f) => f.startsWith(`${id}.verify-`))
    .sort()
    .map((f) => JSON.parse(readFileSync(path.join(folder, f), 'utf8')));
}

async function scratchRoles(): Promise<string[]> {
  return (await scratch.query(`SELECT rolname FROM pg_roles WHERE rolname = ANY('{${ROLES.map((r) => `"${r}"`).join(',')},unused_role}')`)).rows.map((r) => r.rolname);
}

async function scratchDatabases(): Promise<string[]> {
  return (await scratch.query(`SELECT datname FROM pg_database WHERE datname LIKE 'dbstash_drill_%'`)).rows.map((r) => r.datname);
}

/** A copy of the stash in which the backup's artifact (stored without compression) is rewritten by `edit`, and the manifest made to match. */
function doctored(id: string, edit: (dump: Buffer) => Buffer): string {
  const dir = tempDir('dbstash-drill-doctored');
  cpSync(stash, dir, { recursive: true, filter: (src) => !/\.verify-/.test(src) });
  const folder = seriesDir(dir, id.split('.')[0]);
  const manifestFile = path.join(folder, `${id}.manifest.json`);
  const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as Manifest;
  const main = manifest.artifacts[0];
  assert.deepEqual(main.stages, [], 'the doctored backup is stored without stages');
  const bytes = edit(readFileSync(path.join(folder, main.file)));
  writeFileSync(path.join(folder, main.file), bytes);
  Object.assign(main, { size: bytes.length, rawSize: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') });
  writeFileSync(manifestFile, JSON.stringify(manifest));
  return dir;
}

function replaceAll(bytes: Buffer, from: string, to: string): Buffer {
  assert.equal(from.length, to.length, 'same length keeps the archive readable');
  const text = bytes.toString('latin1');
  assert.ok(text.includes(from), `the dump holds ${from}`);
  return Buffer.from(text.split(from).join(to), 'latin1');
}

let plain: string;
let withGlobals: string;
let parallel: string;
let uncompressed: string;
let crypto: string;
let audit: string;

before(async () => {
  [source, scratch] = await Promise.all([startPostgres(), startPostgres()]);
  await source.query(`CREATE ROLE app_owner; CREATE ROLE app_reader; CREATE ROLE reporting; CREATE ROLE "Audit Team"; CREATE ROLE unused_role`);
  for (const db of ['shop', 'crypto', 'audit']) await source.createDatabase(db);
  await source.query(SHOP_SQL, 'shop');
  await source.query(`CREATE EXTENSION pgcrypto; CREATE TABLE secret AS SELECT g AS id, digest(g::text, 'sha256') AS hash FROM generate_series(1, 50) g`, 'crypto');
  await source.query(
    `CREATE TABLE log (id int, note text); INSERT INTO log VALUES (1, 'first');
     CREATE FUNCTION note_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN RAISE NOTICE 'ddl'; END $$;
     CREATE EVENT TRIGGER note_ddl ON ddl_command_end EXECUTE FUNCTION note_ddl();`,
    'audit',
  );
  // Users of the second server for --scratch-url: one that may create roles, one that may not.
  await scratch.query(`CREATE ROLE drill_creator LOGIN PASSWORD 'creator-pw' CREATEDB CREATEROLE; CREATE ROLE drill_plain LOGIN PASSWORD 'plain-pw' CREATEDB`);
  stash = tempDir('dbstash-drill-roles');
  plain = await backupId(source.url('shop'), stash);
  withGlobals = await backupId(source.url('shop'), stash, '--globals');
  parallel = await backupId(source.url('shop'), stash, '--jobs', '2');
  uncompressed = await backupId(source.url('shop'), stash, '--compression', 'none');
  crypto = await backupId(source.url('crypto'), stash, '--compression', 'none');
  audit = await backupId(source.url('audit'), stash);
});
after(() => Promise.all([source?.stop(), scratch?.stop()]));

const scratchAs = (user: string, password: string) => `postgres://${user}:${password}@127.0.0.1:${scratch.port}/postgres`;

describe('a drill of a dump that refers to roles', () => {
  test('passes on the throwaway server: the roles are created there, ownership and grants restored', async () => {
    const r = await runCli(['verify', plain, '--drill', '--output-dir', stash]);
    expectExit(r, 0, /drill passed/);
    assert.match(r.stderr, /drill: created the roles the dump refers to \(NOLOGIN, removed afterwards\): Audit Team, app_owner, app_reader, reporting$/m);
    assert.doesNotMatch(r.stderr, /ownership and grants are not restored/);
    assert.equal(records(stash, plain).at(-1)?.result, 'passed');
  });

  test('a --jobs backup (directory format) passes too', async () => {
    const r = await runCli(['verify', parallel, '--drill', '--output-dir', stash]);
    expectExit(r, 0, /drill passed/);
    assert.equal(records(stash, parallel).at(-1)?.result, 'passed');
  });

  test('--scratch-url, a superuser: the roles of the globals artifact too, all removed afterwards', async () => {
    const r = await runCli(['verify', withGlobals, '--drill', '--scratch-url', scratch.url(), '--output-dir', stash]);
    expectExit(r, 0, /drill passed/);
    assert.match(r.stderr, /created the roles the dump refers to .*: Audit Team, app_owner, app_reader, reporting, unused_role$/m);
    assert.deepEqual(await scratchRoles(), [], 'the roles the drill created are gone');
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('--scratch-url, a user with CREATEROLE but no superuser: only the policy\'s roles are needed, ownership and grants skipped', async () => {
    const r = await runCli(['verify', plain, '--drill', '--scratch-url', scratchAs('drill_creator', 'creator-pw'), '--output-dir', stash]);
    expectExit(r, 0, /drill passed/);
    assert.match(r.stderr, /created the roles the dump refers to .*: Audit Team, app_reader$/m);
    assert.match(r.stderr, /not a superuser there, so ownership and grants are not restored/);
    assert.deepEqual(await scratchRoles(), []);
  });
});

describe('the drill\'s environment, not the backup', () => {
  test('a role the drill\'s server lacks and its user cannot create: exit 8 with the reason, no failed record', async () => {
    const before = records(stash, plain).length;
    const r = await runCli(['verify', plain, '--drill', '--scratch-url', scratchAs('drill_plain', 'plain-pw'), '--output-dir', stash]);
    expectExit(r, 8, /error: the dump refers to role "Audit Team", which the drill's server \(127\.0\.0\.1:\d+\) lacks, and user "drill_plain" cannot create it: permission denied to create role; this says nothing about the backup/);
    assert.match(r.stderr, /^hint: .*CREATEROLE/m);
    assert.doesNotMatch(r.stderr + r.stdout, /plain-pw/, 'no password in the output');
    assert.equal(records(stash, plain).length, before, 'no record: nothing was judged');
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('an extension the drill\'s server does not have: exit 8 before anything is restored', async () => {
    // The dump installs pgcrypto; renamed in the archive to one that no server has.
    const dir = doctored(crypto, (dump) => replaceAll(dump, 'pgcrypto', 'pgcryptx'));
    expectExit(await runCli(['verify', crypto, '--output-dir', dir]), 0, /integrity passed/);
    const r = await runCli(['verify', crypto, '--drill', '--output-dir', dir]);
    expectExit(r, 8, /error: the drill's server \(the throwaway scratch server\) does not have the extension pgcryptx that the dump installs, so it cannot restore it; this says nothing about the backup/);
    assert.ok(!records(dir, crypto).some((rec) => rec.result === 'failed'), 'no failed record');
  });

  test('a statement the drill\'s server refuses to its user (an event trigger, superuser only): exit 8, roles removed', async () => {
    const r = await runCli(['verify', audit, '--drill', '--scratch-url', scratchAs('drill_creator', 'creator-pw'), '--output-dir', stash]);
    expectExit(r, 8, /error: the drill's server could not restore the dump, which says nothing about the backup: \[postgres\] pg_restore exited with code 1: permission denied to create event trigger "note_ddl"/);
    assert.ok(!records(stash, audit).some((rec) => rec.result === 'failed'), 'no failed record');
    assert.deepEqual(await scratchDatabases(), []);
    // The same backup restores where the drill's user may do everything.
    expectExit(await runCli(['verify', audit, '--drill', '--output-dir', stash]), 0, /drill passed/);
  });
});

describe('the backup itself', () => {
  test('a dump whose data the server rejects for what it says: exit 7, "does not restore", a failed record', async () => {
    // The stored bytes match the (doctored) manifest, so level 1 passes; the row's id is no integer.
    const dir = doctored(uncompressed, (dump) => replaceAll(dump, '424242\tzz-marker', '42x242\tzz-marker'));
    expectExit(await runCli(['verify', uncompressed, '--output-dir', dir]), 0, /integrity passed/);
    const r = await runCli(['verify', uncompressed, '--drill', '--output-dir', dir]);
    expectExit(r, 7, /error: the dump does not restore: \[postgres\] pg_restore exited with code 1: invalid input syntax for type integer: "42x242"/);
    const last = records(dir, uncompressed).at(-1)!;
    assert.equal(last.result, 'failed');
    assert.match(last.error!, /invalid input syntax for type integer: "42x242" \(COPY customer, line \d+, column id: "42x242"\)/);
  });
});
