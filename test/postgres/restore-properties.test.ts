// A PostgreSQL restore carries the database's own properties and guards the swap, against a real
// server: encoding, collation, owner, grants, settings (database-wide and per role), comment and
// connection limit come back exactly, over an existing database and into a new one, with
// --role-map / --no-owner applied; a role the server lacks is refused before anything is
// restored; the two renames of the swap are one transaction; two restores into one target
// exclude each other, and the temporary database of a restore killed with SIGKILL is dropped by
// the next one. Properties are read here with the test's own SQL, not with dbstash's code.

import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { loadEngine } from '../../src/engines/index.js';
import { parseTarget } from '../../src/engines/target.js';
import { asPgProperties, setClause, splitSettingList } from '../../src/engines/postgres/properties.js';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { backupId as backup, expectExit, runCli, spawnCli, type CliResult } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { assertCleanFailure, childrenOf, isAlive, readManifestFile, waitFor } from './helpers.js';

let server: PgServer;
let stash: string;
/** The backup of "props", the database with every kind of property. */
let propsId: string;
/** Its properties, as the test's own SQL reads them, before any restore. */
let original: Props;

interface Props {
  encoding: string;
  collate: string;
  ctype: string;
  provider: string;
  icuLocale: string | null;
  owner: string;
  connlimit: number;
  comment: string | null;
  /** Effective grants, "grantee=PRIVILEGE[*]/grantor", sorted (a never-touched ACL as its defaults). */
  acl: string[];
  /** "role: name=value" ("*" for the whole database), sorted. */
  settings: string[];
}

async function props(db: string): Promise<Props> {
  const r = await server.query(
    `SELECT pg_encoding_to_char(d.encoding) AS encoding, d.datcollate AS collate, d.datctype AS ctype, d.datlocprovider AS provider,
            d.daticulocale AS "icuLocale", pg_get_userbyid(d.datdba) AS owner, d.datconnlimit AS connlimit,
            shobj_description(d.oid, 'pg_database') AS comment,
            ARRAY(SELECT format('%s=%s%s/%s', CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END,
                                a.privilege_type, CASE WHEN a.is_grantable THEN '*' ELSE '' END, pg_get_userbyid(a.grantor))
                  FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a ORDER BY 1) AS acl,
            ARRAY(SELECT coalesce(pg_get_userbyid(nullif(s.setrole, 0)), '*') || ': ' || c
                  FROM pg_db_role_setting s, unnest(s.setconfig) c WHERE s.setdatabase = d.oid ORDER BY 1) AS settings
     FROM pg_database d WHERE d.datname = '${db}'`,
  );
  assert.equal(r.rows.length, 1, `database ${db} exists`);
  return r.rows[0] as Props;
}

async function databases(): Promise<string[]> {
  return (await server.query('SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1')).rows.map((r) => r.datname as string);
}

function urlAs(role: string, password: string, db: string): string {
  return server.url(db).replace(`postgres:${encodeURIComponent(server.password)}@`, `${role}:${password}@`);
}

/** Runs `sql` as `role` in `db`. */
async function queryAs(role: string, password: string, db: string, sql: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: urlAs(role, password, db) });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

/** A small database with one table of `rows` rows. */
async function makeSmall(db: string, rows: number): Promise<void> {
  await server.createDatabase(db);
  await server.query(`CREATE TABLE item (id int PRIMARY KEY, label text); INSERT INTO item SELECT g, 'item ' || g FROM generate_series(1, ${rows}) g`, db);
}

async function count(db: string): Promise<number> {
  return (await server.query('SELECT count(*)::int AS n FROM item', db)).rows[0].n as number;
}

interface Running {
  pid: number;
  stderr: () => string;
  done: Promise<CliResult>;
}

function startRestore(id: string, db: string, ...extra: string[]): Running {
  const child = spawnCli(['restore', id, '--to', server.url(db), '--output-dir', stash, '--yes', ...extra]);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<CliResult>((resolve) => child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
  return { pid: child.pid!, stderr: () => stderr, done };
}

/** The temporary database a running restore announced, once it has created it. */
async function restoringInto(run: Running): Promise<string> {
  return waitFor('the restore to create its new database', () => /restoring into the new database \S+\/(\S+_restoring_\d{8}_\d{6})/.exec(run.stderr())?.[1], 30_000);
}

before(async () => {
  server = await startPostgres();
  stash = tempDir('dbstash-restore-properties');
  await server.query(`CREATE ROLE app_owner NOLOGIN; CREATE ROLE other_owner NOLOGIN;
    CREATE ROLE app_reader LOGIN PASSWORD 'reader-pw'; CREATE ROLE outsider LOGIN PASSWORD 'outsider-pw'`);
  // Not the cluster's UTF8 / C.UTF-8: LATIN1 with the C locale.
  await server.query(`CREATE DATABASE props TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' OWNER app_owner CONNECTION LIMIT 7`);
  await server.query(
    `SET ROLE app_owner; CREATE SCHEMA app; CREATE TABLE app.item (id int PRIMARY KEY, label text);
     INSERT INTO app.item SELECT g, 'café ' || g FROM generate_series(1, 50) g;
     GRANT USAGE ON SCHEMA app TO app_reader; GRANT SELECT ON app.item TO app_reader`,
    'props',
  );
  await server.query(`ALTER DATABASE props SET search_path = app, "$user", public;
    ALTER DATABASE props SET default_transaction_read_only = on;
    ALTER ROLE app_reader IN DATABASE props SET work_mem = '3MB';
    REVOKE CONNECT ON DATABASE props FROM PUBLIC;
    GRANT CONNECT ON DATABASE props TO app_reader;
    COMMENT ON DATABASE props IS 'the shop''s "data" \\ kept apart'`);
  original = await props('props');
  propsId = await backup(server.url('props'), stash);
});
after(() => server?.stop());

describe('the database-level properties of a PostgreSQL restore', () => {
  test('the fixture has what the cluster does not give a new database by default', () => {
    assert.deepEqual(
      { ...original, acl: undefined, settings: undefined },
      { encoding: 'LATIN1', collate: 'C', ctype: 'C', provider: 'c', icuLocale: null, owner: 'app_owner', connlimit: 7, comment: `the shop's "data" \\ kept apart`, acl: undefined, settings: undefined },
    );
    assert.deepEqual(original.acl, ['PUBLIC=TEMPORARY/app_owner', 'app_owner=CONNECT/app_owner', 'app_owner=CREATE/app_owner', 'app_owner=TEMPORARY/app_owner', 'app_reader=CONNECT/app_owner']);
    assert.deepEqual(original.settings, ['*: default_transaction_read_only=on', '*: search_path=app, "$user", public', 'app_reader: work_mem=3MB']);
  });

  test('the manifest records them, read in the dump\'s snapshot', () => {
    const recorded = readManifestFile(stash, propsId).database.properties as Record<string, unknown>;
    assert.ok(recorded, 'database.properties is in the manifest');
    assert.deepEqual(
      { encoding: recorded.encoding, collate: recorded.collate, owner: recorded.owner, connectionLimit: recorded.connectionLimit, comment: recorded.comment, roleSettings: recorded.roleSettings },
      { encoding: 'LATIN1', collate: 'C', owner: 'app_owner', connectionLimit: 7, comment: original.comment, roleSettings: { app_reader: ['work_mem=3MB'] } },
    );
    assert.deepEqual(recorded.settings, ['search_path=app, "$user", public', 'default_transaction_read_only=on']);
  });

  test('over the existing database: every property is the original\'s, and what relies on them works', async () => {
    const r = await runCli(['restore', propsId, '--to', server.url('props'), '--output-dir', stash, '--yes']);
    expectExit(r, 0, /the previous database is kept as props_before_\d{8}_\d{6}/);
    assert.deepEqual(await props('props'), original);
    // search_path: the table is found without its schema; the role's own setting applies.
    const asReader = await queryAs('app_reader', 'reader-pw', 'props', `SELECT count(*)::int AS n, current_setting('work_mem') AS work_mem, min(label) AS label FROM item`);
    assert.deepEqual(asReader.rows[0], { n: 50, work_mem: '3MB', label: 'café 1' });
    // REVOKE CONNECT … FROM PUBLIC came back: a role without the grant is turned away.
    await assert.rejects(queryAs('outsider', 'outsider-pw', 'props', 'SELECT 1'), /permission denied for database "props"/);
    await assert.rejects(server.query('CREATE TABLE app.scribble (x int)', 'props'), /read-only transaction/);
  });

  test('into a database that does not exist yet: the same properties', async () => {
    const r = await runCli(['restore', propsId, '--to', server.url('props_copy'), '--output-dir', stash, '--yes']);
    expectExit(r, 0);
    assert.deepEqual(await props('props_copy'), original);
    assert.equal((await queryAs('app_reader', 'reader-pw', 'props_copy', 'SELECT count(*)::int AS n FROM item')).rows[0].n, 50);
  });

  test('an ICU locale is carried too', async (t) => {
    const icu = await server.query(`SELECT count(*)::int AS n FROM pg_collation WHERE collprovider = 'i'`);
    if (icu.rows[0].n === 0) {
      t.skip('this PostgreSQL is built without ICU');
      return;
    }
    await server.query(`CREATE DATABASE icu_src TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'de-DE'`);
    await server.query(`CREATE TABLE word (w text); INSERT INTO word VALUES ('Äpfel'), ('Zebra'), ('apfel')`, 'icu_src');
    const before = await props('icu_src');
    assert.equal(before.provider, 'i');
    const id = await backup(server.url('icu_src'), stash);
    expectExit(await runCli(['restore', id, '--to', server.url('icu_copy'), '--output-dir', stash, '--yes']), 0);
    assert.deepEqual(await props('icu_copy'), before);
    const sorted = await server.query('SELECT string_agg(w, \',\' ORDER BY w) AS s FROM word', 'icu_copy');
    assert.equal(sorted.rows[0].s, 'apfel,Äpfel,Zebra', 'German ICU order, not byte order');
  });

  test('--role-map renames the roles in owner, grants and settings; --no-owner keeps the replaced database\'s owner', async () => {
    const mapped = await runCli(['restore', propsId, '--to', server.url('props_mapped'), '--output-dir', stash, '--yes', '--role-map', 'app_owner=other_owner', '--role-map', 'app_reader=outsider']);
    expectExit(mapped, 0);
    const rename = (s: string) => s.replace(/app_owner/g, 'other_owner').replace(/app_reader/g, 'outsider');
    assert.deepEqual(await props('props_mapped'), { ...original, owner: 'other_owner', acl: original.acl.map(rename).sort(), settings: original.settings.map(rename).sort() });
    assert.equal((await queryAs('outsider', 'outsider-pw', 'props_mapped', 'SELECT count(*)::int AS n FROM item')).rows[0].n, 50);

    const noOwner = await runCli(['restore', propsId, '--to', server.url('props_mapped'), '--output-dir', stash, '--yes', '--no-owner', '--drop-old']);
    expectExit(noOwner, 0);
    const grantsOf = (owner: string) => original.acl.map((a) => a.replace(/app_owner/g, owner)).sort();
    assert.deepEqual(await props('props_mapped'), { ...original, owner: 'other_owner', acl: grantsOf('other_owner') });
  });

  test('a role the backup names that the server lacks: refused before anything is restored, with the way out', async () => {
    await server.query('CREATE ROLE gone_owner NOLOGIN; CREATE ROLE gone_reader NOLOGIN');
    await server.query('CREATE DATABASE lost OWNER gone_owner');
    await server.query(`REVOKE CONNECT ON DATABASE lost FROM PUBLIC; GRANT CONNECT ON DATABASE lost TO gone_reader`);
    await server.query(`CREATE TABLE note (n int); INSERT INTO note VALUES (1)`, 'lost');
    const id = await backup(server.url('lost'), stash);
    await server.query('DROP DATABASE lost');
    await server.query('DROP ROLE gone_owner; DROP ROLE gone_reader');
    const before = await databases();

    const refused = await runCli(['restore', id, '--to', server.url('lost'), '--output-dir', stash, '--yes']);
    assertCleanFailure(refused, 9, /the backup's database names role\(s\) that do not exist on 127\.0\.0\.1:\d+: "gone_owner" \(owner, grants\), "gone_reader" \(grants\); nothing was restored/);
    assert.match(refused.stderr, /hint: .*--with-globals.*--role-map old=new.*--no-owner/);
    assert.deepEqual(await databases(), before, 'no database was created');

    const rescued = await runCli(['restore', id, '--to', server.url('lost'), '--output-dir', stash, '--yes', '--no-owner', '--role-map', 'gone_reader=app_reader']);
    expectExit(rescued, 0);
    const got = await props('lost');
    assert.equal(got.owner, 'postgres', 'with --no-owner and nothing replaced, the restoring user owns it');
    assert.deepEqual(got.acl, ['app_reader=CONNECT/postgres', 'postgres=CONNECT/postgres', 'postgres=CREATE/postgres', 'postgres=TEMPORARY/postgres', 'PUBLIC=TEMPORARY/postgres'].sort());
  });

  test('settings are quoted back as the server stored them; a manifest cannot smuggle SQL in', async () => {
    assert.deepEqual(splitSettingList('app, "$user", "My ""odd"" one",public'), ['app', '$user', 'My "odd" one', 'public']);
    assert.deepEqual(splitSettingList('""'), ['']);
    assert.equal(setClause('search_path=app, "My ""odd"" one"'), `SET "search_path" TO 'app', 'My "odd" one'`);
    assert.equal(setClause(`DateStyle=ISO, DMY`), `SET "DateStyle" TO 'ISO, DMY'`);
    assert.equal(setClause(`app.note=it's a\\b`), `SET "app.note" TO E'it''s a\\\\b'`);
    // The server reads the statements back to the stored values.
    await server.createDatabase('quoting');
    await server.query(`CREATE SCHEMA "My ""odd"" one"`, 'quoting');
    await server.query(`ALTER DATABASE quoting ${setClause('search_path=app, "My ""odd"" one"')}; ALTER DATABASE quoting ${setClause(`app.note=it's a\\b`)}`);
    assert.deepEqual((await props('quoting')).settings, ['*: app.note=it\'s a\\b', '*: search_path=app, "My ""odd"" one"']);
    const recorded = readManifestFile(stash, propsId).database.properties!;
    assert.doesNotThrow(() => asPgProperties(recorded));
    for (const bad of [{ localeProvider: 'libc; DROP DATABASE x' }, { acl: [{ grantee: 'x', grantor: 'y', privileges: ['ALL; DROP DATABASE x'] }] }, { settings: ['no equals sign'] }, { connectionLimit: '7' }]) {
      assert.throws(() => asPgProperties({ ...recorded, ...bad }), /the manifest's database properties are not in the shape this dbstash reads/);
    }
  });

  test('compareProperties names each difference and nothing else', async () => {
    const engine = await loadEngine('postgres');
    const target = parseTarget(server.url('props'));
    const recorded = readManifestFile(stash, propsId).database.properties!;
    const made = await engine.createDatabase!(target, 'cmp_check', { properties: recorded });
    assert.deepEqual(await engine.compareProperties!(made, recorded), []);
    // What --no-owner and --role-map change on purpose is not a difference.
    await server.query('ALTER DATABASE cmp_check OWNER TO other_owner');
    assert.match((await engine.compareProperties!(made, recorded)).join('\n'), /^owner: the backup has "app_owner", the database has "other_owner"$/m);
    assert.deepEqual(await engine.compareProperties!(made, recorded, { noOwner: true }), []);
    assert.deepEqual(await engine.compareProperties!(made, recorded, { roleMap: { app_owner: 'other_owner' } }), []);
    await server.query(`ALTER DATABASE cmp_check SET work_mem = '9MB'; COMMENT ON DATABASE cmp_check IS 'changed';
      GRANT CREATE ON DATABASE cmp_check TO outsider; ALTER DATABASE cmp_check CONNECTION LIMIT 8`);
    const found = await engine.compareProperties!(made, recorded, { noOwner: true });
    assert.equal(found.length, 4, found.join('\n'));
    assert.match(found.join('\n'), /^connection limit: the backup has 7, the database has 8$/m);
    assert.match(found.join('\n'), /^comment: the backup has .*kept apart", the database has "changed"$/m);
    assert.match(found.join('\n'), /^settings: .*the database has \[.*"work_mem=9MB"\]$/m);
    assert.match(found.join('\n'), /^grants the database has and the backup does not: outsider=CREATE\/other_owner$/m);
    await engine.dropDatabase!(made);
  });
});

describe('the swap and concurrent restores (PostgreSQL)', () => {
  test('the two renames are one transaction: when the second fails, nobody ever sees the target renamed', async () => {
    await makeSmall('swapme', 30);
    const id = await backup(server.url('swapme'), stash);
    await server.query('INSERT INTO item VALUES (31, $$after the backup$$)'.replace('$$after the backup$$', "'after the backup'"), 'swapme');
    const observer = new pg.Client({ connectionString: server.url('postgres') });
    await observer.connect();
    let blocker: pg.Client | undefined;
    try {
      const run = startRestore(id, 'swapme');
      const temp = await restoringInto(run);
      // A session on the new database makes its rename (the second one) fail.
      blocker = new pg.Client({ connectionString: server.url(temp) });
      await blocker.connect();
      const seen: string[][] = [];
      let finished = false;
      void run.done.then(() => (finished = true));
      while (!finished) {
        seen.push((await observer.query('SELECT datname FROM pg_database')).rows.map((r) => r.datname as string));
        await new Promise((r) => setTimeout(r, 10));
      }
      const res = await run.done;
      assert.ok(seen.length > 50, `observed ${seen.length} times while the swap waited`);
      const renamed = seen.filter((names) => !names.includes('swapme') || names.some((n) => n.startsWith('swapme_before_')));
      assert.equal(renamed.length, 0, `swapme was seen renamed ${renamed.length} of ${seen.length} times, e.g. ${renamed[0]}`);
      assertCleanFailure(res, 9, new RegExp(`the swap was rolled back, swapme and ${temp} keep their names: database "${temp}" is being accessed by other users`));
      assert.equal(await count('swapme'), 31, 'the original is untouched');
    } finally {
      await blocker?.end();
      await observer.end();
    }
    assert.ok((await databases()).some((d) => /^swapme_restoring_/.test(d)), 'the blocked temporary database could not be dropped');
    // The next restore drops it (it is a leftover of a restore that did not finish) and swaps.
    const next = await runCli(['restore', id, '--to', server.url('swapme'), '--output-dir', stash, '--yes', '--drop-old']);
    expectExit(next, 0, /dropped swapme_restoring_\d{8}_\d{6}, left by an earlier restore into swapme that did not finish/);
    assert.equal(await count('swapme'), 30);
    assert.deepEqual((await databases()).filter((d) => d.startsWith('swapme')), ['swapme']);
  });

  test('two restores into one target: the second is refused while the first runs, and the first completes', async () => {
    await makeSmall('busy', 2000);
    const id = await backup(server.url('busy'), stash);
    await server.query('DELETE FROM item WHERE id > 10', 'busy');
    const first = startRestore(id, 'busy');
    await restoringInto(first);
    process.kill(first.pid, 'SIGSTOP');
    try {
      const second = await runCli(['restore', id, '--to', server.url('busy'), '--output-dir', stash, '--yes']);
      assertCleanFailure(second, 9, /another restore into busy is running \(server session pid \d+ from 127\.0\.0\.1, connected since .* UTC\)/);
      assert.doesNotMatch(second.stderr, /duplicate key|unique constraint/);
    } finally {
      process.kill(first.pid, 'SIGCONT');
    }
    expectExit(await first.done, 0);
    assert.equal(await count('busy'), 2000);
  });

  test('a restore killed with SIGKILL leaves its temporary database; the next restore into the target drops it', async () => {
    await makeSmall('crashy', 2000);
    const id = await backup(server.url('crashy'), stash);
    const killed = startRestore(id, 'crashy');
    const temp = await restoringInto(killed);
    const tools = childrenOf(killed.pid);
    process.kill(killed.pid, 'SIGKILL');
    assert.equal((await killed.done).signal, 'SIGKILL');
    assert.ok((await databases()).includes(temp), `${temp} is left behind`);
    // What it started ends once its input is gone; the server drops its lock with its connection.
    await waitFor('the killed restore\'s tools to exit', () => tools.every((pid) => !isAlive(pid)));
    await waitFor('its sessions to end', async () => {
      const r = await server.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'dbstash' OR datname = '${temp}'`);
      return r.rows[0].n === 0;
    });
    // status names what the killed restore left on the server.
    const config = path.join(tempDir('dbstash-crashy-status'), 'dbstash.yaml');
    writeFileSync(config, `stash: ${stash}\ndatabases:\n  crashy:\n    url: ${server.url('crashy')}\n`);
    const status = await runCli(['status', 'crashy', '--config', config]);
    assert.match(status.stdout, new RegExp(`warn +${temp} was left by a restore into crashy that did not finish; the next restore into it drops it`), status.stdout);
    const next = await runCli(['restore', id, '--to', server.url('crashy'), '--output-dir', stash, '--yes', '--drop-old']);
    expectExit(next, 0, new RegExp(`warning: dropped ${temp}, left by an earlier restore into crashy that did not finish`));
    assert.deepEqual((await databases()).filter((d) => d.startsWith('crashy')), ['crashy']);
    assert.equal(await count('crashy'), 2000);
  });
});
