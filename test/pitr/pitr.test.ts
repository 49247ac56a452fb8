/**
 * Point-in-time recovery against a real PostgreSQL 15 cluster whose archive_command is
 * `dbstash wal push`, run by the server as the postgres OS user, under a pgbench write load.
 * One cluster and one stash serve the whole file; the tests run in order and build on each other
 * (base backup → restore to a time → a new timeline → damage).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pg from 'pg';
import { startPostgres, PG_BIN_DIR, type PgServer } from '../harness/postgres.js';
import { CLI_PATH, expectExit, runCli, spawnCli } from '../harness/run.js';
import { asUser, chownToUser, freePort, isRunning, run } from '../harness/proc.js';
import { tempDir } from '../harness/tmp.js';

let server: PgServer;
let root: string;
let stash: string;
let configFile: string;
const started: string[] = [];

const asPostgres = { user: 'postgres' };

function walFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(p);
    }
  };
  for (const series of readdirSync(stash)) if (existsSync(path.join(stash, series, 'wal'))) walk(path.join(stash, series, 'wal'));
  return out.sort();
}

async function switchAndWait(): Promise<string> {
  // With nothing written since the last switch (pg_backup_stop switches too), a switch is a no-op
  // that completes no segment and wakes no archiver: write a record first.
  await server.query(`SELECT pg_logical_emit_message(false, 'dbstash-test', 'switch')`);
  const r = await server.query(`SELECT pg_walfile_name(pg_switch_wal()) AS seg`);
  const seg = r.rows[0].seg as string;
  for (let i = 0; i < 200; i++) {
    const a = await server.query(`SELECT last_archived_wal, last_failed_wal, failed_count FROM pg_stat_archiver`);
    if ((a.rows[0].last_archived_wal ?? '') >= seg) return seg;
    await sleep(100);
  }
  const a = await server.query(`SELECT * FROM pg_stat_archiver`);
  throw new Error(`${seg} was not archived: ${JSON.stringify(a.rows[0])}`);
}

async function query(port: number, sql: string, host = '127.0.0.1'): Promise<pg.QueryResult> {
  const client = new pg.Client({ host, port, user: 'postgres', password: server.password, database: 'postgres' });
  await client.connect();
  try {
    return await client.query(sql);
  } finally {
    await client.end();
  }
}

async function pgCtl(args: string[]): Promise<void> {
  await run('pg_ctl', asUser('postgres', path.join(PG_BIN_DIR, 'pg_ctl'), args), {});
}

const checksumSql = `SELECT md5(string_agg(aid || ':' || abalance, ',' ORDER BY aid)) AS sum FROM pgbench_accounts`;

before(async () => {
  root = tempDir('dbstash-pitr');
  stash = path.join(root, 'stash');
  configFile = path.join(root, 'dbstash.yaml');
  const archive = `${process.execPath} ${CLI_PATH} wal push %p --database main --config ${configFile} --quiet`;
  server = await startPostgres({ conf: ['archive_mode = on', `archive_command = '${archive}'`, 'max_wal_senders = 4'] });
  writeFileSync(configFile, [`stash: ${stash}`, 'databases:', '  main:', `    url: ${server.url()}`, '    physical: true', ''].join('\n'), { mode: 0o600 });
  await chownToUser('postgres', root);
  await run('pgbench -i', { cmd: path.join(PG_BIN_DIR, 'pgbench'), args: ['-i', '-s', '2', '-q', server.url()] }, {});
  await server.query(`CREATE TABLE markers (name text PRIMARY KEY, at timestamptz NOT NULL DEFAULT clock_timestamp())`);
});

after(async () => {
  for (const dir of started) await pgCtl(['stop', '-m', 'immediate', '-D', dir]).catch(() => {});
  await server?.stop();
});

test('a base backup through the same stages: a tar of the cluster, with the WAL range, timeline and backup_manifest in the manifest', async () => {
  const r = await runCli(['backup', 'main', '--config', configFile, '--json'], asPostgres);
  expectExit(r, 0);
  const m = JSON.parse(r.stdout).manifest;
  assert.equal(m.artifacts[0].format, 'base.tar');
  const p = m.dump.details.physical;
  assert.match(p.startLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
  assert.match(p.startWal, /^00000001[0-9A-F]{16}$/);
  assert.equal(p.timeline, 1);
  assert.match(p.backupManifest.sha256, /^[0-9a-f]{64}$/);
  assert.equal(p.walIncluded, false);
  assert.match(m.series.identity, /^physical:name:postgres:main$|^physical:postgres:\/\/localhost:\d+$/);
  // pg_basebackup returned only once the WAL it needs was archived: its start segment is there.
  assert.ok(walFiles().some((f) => path.basename(f).startsWith(`${p.startWal}-`)), `no ${p.startWal} in ${walFiles().join(', ')}`);
  const series = readdirSync(stash)[0];
  assert.equal(statSync(path.join(stash, series, m.artifacts[0].file)).size, m.artifacts[0].size);
});

let targetTime = '';
let sumAtTarget = '';

test('under a pgbench load, a restore to a time between two markers holds exactly the markers before it and the data of that moment', async () => {
  await server.query(`INSERT INTO markers(name) VALUES ('before')`);
  const bench = spawn(path.join(PG_BIN_DIR, 'pgbench'), ['-n', '-c', '2', '-T', '6', server.url()], { stdio: 'ignore' });
  await sleep(1500);
  // The moment: no transaction that writes pgbench_accounts commits while the lock is held, so
  // the checksum is the table's content at the instant read inside the lock.
  const client = new pg.Client({ connectionString: server.url() });
  await client.connect();
  await client.query('BEGIN');
  await client.query('LOCK TABLE pgbench_accounts IN EXCLUSIVE MODE');
  sumAtTarget = (await client.query(checksumSql)).rows[0].sum;
  targetTime = (await client.query(`SELECT clock_timestamp() AS t`)).rows[0].t.toISOString();
  await client.query('COMMIT');
  await client.end();
  await sleep(1500);
  await server.query(`INSERT INTO markers(name) VALUES ('after')`);
  await new Promise((resolve) => bench.once('exit', resolve));
  assert.notEqual((await server.query(checksumSql)).rows[0].sum, sumAtTarget, 'the load changed the table after the target');
  await switchAndWait();

  const pgdata = path.join(root, 'at-time');
  const dry = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', targetTime, '--pgdata', pgdata, '--dry-run']);
  expectExit(dry, 0, /would restore base backup localhost-\d+\.[0-9a-f]{8}_dev_/);
  assert.equal(existsSync(pgdata), false, 'a dry run creates nothing');

  const port = await freePort();
  const r = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', targetTime, '--pgdata', pgdata, '--no-archive', '--start', '--port', String(port), '--json'], { timeoutMs: 120_000 });
  expectExit(r, 0);
  started.push(pgdata);
  const out = JSON.parse(r.stdout);
  assert.match(out.point.stop, /^before commit of transaction \d+/);
  // restore_command asked this restore's WAL server, which read ahead; the setting kept afterwards works without it.
  assert.ok(out.wal.served >= 2 && out.wal.prefetched >= 1, JSON.stringify(out.wal));
  const kept = readFileSync(path.join(pgdata, 'postgresql.auto.conf'), 'utf8');
  assert.match(kept, /^restore_command = '.* wal get %f %p .*--recovery/m);
  assert.doesNotMatch(kept, /--socket|recovery_target_time/);
  assert.equal(existsSync(path.join(pgdata, 'dbstash-prefetch')), false);
  assert.ok(new Date(out.point.lastTransaction).getTime() <= new Date(targetTime).getTime());
  assert.deepEqual((await query(port, `SELECT name FROM markers ORDER BY at`)).rows.map((x) => x.name), ['before']);
  assert.equal((await query(port, checksumSql)).rows[0].sum, sumAtTarget);
  assert.equal((await query(port, 'SELECT pg_is_in_recovery() AS r')).rows[0].r, false);
  await pgCtl(['stop', '-m', 'fast', '-D', pgdata]);

  // The record beside the base backup says what was done.
  const series = readdirSync(stash).find((d) => d.startsWith('localhost-'))!;
  const records = readdirSync(path.join(stash, series)).filter((f) => f.includes('.restore-'));
  const rec = JSON.parse(readFileSync(path.join(stash, series, records[records.length - 1]), 'utf8'));
  assert.equal(rec.mode, 'point-in-time');
  assert.equal(rec.result, 'succeeded');
});

test('a non-empty directory is refused; a target outside the recoverable window is refused up front with the window', async () => {
  const r = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', targetTime, '--pgdata', path.join(root, 'at-time')]);
  expectExit(r, 2, /is not empty/);
  const early = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', '2020-01-01T00:00:00Z', '--pgdata', path.join(root, 'never')]);
  expectExit(early, 2, /before the end of the oldest base backup: the recoverable window is/);
  const late = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', '2099-01-01T00:00:00Z', '--pgdata', path.join(root, 'never')]);
  expectExit(late, 2, /after the newest archived WAL/);
  assert.equal(existsSync(path.join(root, 'never')), false);
});

test('after a restore that promotes and takes writes, a restore to a point on the new timeline works', async () => {
  // A copy restored to the end of the archive, archiving (the base backup's settings): timeline 2.
  const copy = path.join(root, 'timeline-2');
  const port = await freePort();
  const r = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', 'latest', '--pgdata', copy, '--start', '--port', String(port), '--json'], { timeoutMs: 120_000 });
  expectExit(r, 0);
  started.push(copy);
  assert.equal(JSON.parse(r.stdout).point.timeline, 2);
  await query(port, `INSERT INTO markers(name) VALUES ('on-timeline-2')`);
  await sleep(1100);
  const t2 = (await query(port, `SELECT clock_timestamp() AS t`)).rows[0].t.toISOString();
  await sleep(1100);
  await query(port, `INSERT INTO markers(name) VALUES ('later-on-timeline-2')`);
  const seg = (await query(port, `SELECT pg_walfile_name(pg_switch_wal()) AS s`)).rows[0].s as string;
  for (let i = 0; i < 200 && !walFiles().some((f) => path.basename(f) >= seg && path.basename(f).startsWith('00000002')); i++) await sleep(100);
  await pgCtl(['stop', '-m', 'fast', '-D', copy]);
  assert.ok(walFiles().some((f) => /\/00000002\.history-/.test(f)), 'the new timeline\'s history file is archived');

  const again = path.join(root, 'on-timeline-2');
  const port2 = await freePort();
  const r2 = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', t2, '--pgdata', again, '--no-archive', '--start', '--port', String(port2), '--json'], { timeoutMs: 120_000 });
  expectExit(r2, 0);
  started.push(again);
  const names = (await query(port2, `SELECT name FROM markers ORDER BY at`)).rows.map((x) => x.name);
  assert.deepEqual(names, ['before', 'after', 'on-timeline-2']);
  await pgCtl(['stop', '-m', 'fast', '-D', again]);
});

/** The shell blocks of docs/pitr.md under `heading`, without comments and blank lines. */
function docLines(heading: string): string[] {
  const text = readFileSync(path.join(path.dirname(CLI_PATH), '..', '..', '..', 'docs', 'pitr.md'), 'utf8').split('\n');
  let current = '';
  let inBlock = false;
  const out: string[] = [];
  for (const l of text) {
    const h = /^#+ (.*)$/.exec(l);
    if (h && !inBlock) current = h[1];
    if (/^```/.test(l)) {
      inBlock = !inBlock && /^```sh/.test(l);
      continue;
    }
    if (inBlock && current === heading && l.trim() && !l.trim().startsWith('#')) out.push(l);
  }
  assert.ok(out.length > 0, `docs/pitr.md has commands under "${heading}"`);
  return out;
}

async function sh(line: string, opts: { codes?: number[] } = {}): Promise<string> {
  const r = await new Promise<{ code: number | null; out: string }>((resolve) => {
    const child = spawn('/bin/bash', ['-c', line], { env: { ...process.env, PATH: `${path.join(root, 'bin')}:${process.env.PATH}` } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d));
    child.stderr.on('data', (d: Buffer) => (out += d));
    child.once('close', (code) => resolve({ code, out }));
  });
  assert.ok((opts.codes ?? [0]).includes(r.code ?? -1), `${line}\nexited ${r.code}:\n${r.out}`);
  return r.out;
}

test('docs/pitr.md, run as written: setup, the 3 a.m. restore, a named restore point, and the by-hand recipe', async () => {
  // `dbstash` on PATH is this build; the docs' paths and times become this test's.
  const { mkdirSync } = await import('node:fs');
  mkdirSync(path.join(root, 'bin'), { recursive: true });
  writeFileSync(path.join(root, 'bin', 'dbstash'), `#!/bin/sh\nexec ${process.execPath} ${CLI_PATH} "$@"\n`, { mode: 0o755 });
  const port = await freePort();
  const mine = (l: string) =>
    l
      .replaceAll('/etc/dbstash/dbstash.yaml', configFile)
      .replaceAll('/srv/', `${root}/srv-`)
      .replaceAll('2026-12-04T10:30:59Z', targetTime)
      .replaceAll('--port 5433', `--port ${port}`);

  const setup = docLines('Turn it on').map(mine);
  assert.equal(setup.length, 3);
  assert.match(await sh(setup[0], { codes: [13] }), /fix +archive_command/);
  assert.match(await sh(setup[1]), /applied: .*reloaded: the settings are in effect/s);
  assert.match(await sh(setup[0]), /the server is ready/);
  await switchAndWait(); // the new archive_command archives
  assert.match(await sh(setup[2]), /base backup of the cluster/);

  const night = docLines('At 3 a.m.: "restore to just before 10:31"').map(mine);
  assert.equal(night.length, 2);
  assert.match(await sh(night[0]), /would restore base backup/);
  assert.match(await sh(night[1]), /recovered .* running on port/s);
  started.push(`${root}/srv-restored`);
  assert.deepEqual((await query(port, `SELECT name FROM markers ORDER BY at`)).rows.map((x) => x.name), ['before']);
  await pgCtl(['stop', '-m', 'fast', '-D', `${root}/srv-restored`]);

  await server.query(`INSERT INTO markers(name) VALUES ('before-migration')`);
  const points = docLines('Named restore points').map(mine);
  assert.equal(points.length, 2);
  assert.match(await sh(points[0]), /restore point "before-migration" at/);
  await server.query(`INSERT INTO markers(name) VALUES ('the-migration')`);
  await switchAndWait();
  assert.match(await sh(points[1]), /recovered /);
  const pdir = `${root}/srv-before-migration`;
  await pgCtl(['start', '-w', '-D', pdir, '-l', path.join(root, 'before-migration.log'), '-o', `-p ${port}`]);
  started.push(pdir);
  const names = (await query(port, `SELECT name FROM markers ORDER BY at`)).rows.map((x) => x.name);
  assert.ok(names.includes('before-migration') && !names.includes('the-migration'), names.join(', '));
  await pgCtl(['stop', '-m', 'fast', '-D', pdir]);

  // By hand: the first base backup, recovered to the target time with tar, zstd and a restore_command of ls and zstd.
  const series = readdirSync(stash).find((d) => d.startsWith('localhost-'))!;
  const id = readdirSync(path.join(stash, series)).filter((f) => f.endsWith('.base.tar.zst')).sort()[0].replace('.base.tar.zst', '');
  const hand = docLines('By hand, with standard tools').map((l) =>
    mine(l)
      .replace(/^S=.*/, `S=${path.join(stash, series)}`)
      .replace(/^ID=.*/, `ID=${id}`)
      .replace("'2026-12-04 10:30:59+00'", `'${targetTime.replace('T', ' ').replace('Z', '+00')}'`)
      .replace('-p 5434', `-p ${port}`),
  );
  started.push(`${root}/srv-by-hand`);
  await sh(hand.join('\n'));
  for (let i = 0; i < 100 && (await query(port, 'SELECT pg_is_in_recovery() AS r')).rows[0].r; i++) await sleep(100);
  assert.deepEqual((await query(port, `SELECT name FROM markers ORDER BY at`)).rows.map((x) => x.name), ['before']);
  assert.equal((await query(port, checksumSql)).rows[0].sum, sumAtTarget);
  assert.match(readFileSync(`${root}/srv-by-hand/recovery.log`, 'utf8'), /restored log file "00000001[0-9A-F]{16}" from archive/);
  await pgCtl(['stop', '-m', 'fast', '-D', `${root}/srv-by-hand`]);
});

test('verify: the integrity check reports the archive per timeline; the drill recovers into a throwaway cluster and reads every table', async () => {
  const r = await runCli(['verify', '--latest', 'main', '--config', configFile]);
  expectExit(r, 0, /integrity passed .* backup_manifest lists \d+ files, its checksum holds; WAL archive: timeline 1: \d+ segments .*timeline 2: .*; no gap/);
  const d = await runCli(['verify', '--latest', 'main', '--config', configFile, '--drill', '--json'], { timeoutMs: 120_000 });
  expectExit(d, 0);
  const rec = JSON.parse(d.stdout).results[0];
  assert.equal(rec.result, 'passed');
  const postgres = rec.databases.find((x: { name: string }) => x.name === 'postgres');
  assert.ok(postgres.tables >= 5, JSON.stringify(rec.databases));
  assert.ok(postgres.rows >= 200_000, 'pgbench_accounts was counted');
  assert.match(rec.point.redoDoneAt, /^[0-9A-F]+\/[0-9A-F]+$/);
});

test('wal push: the same file again succeeds, other bytes under an archived name fail loudly', async () => {
  const seg = walFiles().find((f) => /\/00000001[0-9A-F]{16}-[0-9a-f]{64}\.zst$/.test(f))!;
  const name = path.basename(seg).split('-')[0];
  const got = path.join(root, name);
  expectExit(await runCli(['wal', 'get', name, got, '--database', 'main', '--config', configFile], asPostgres), 0);
  const again = await runCli(['wal', 'push', got, '--database', 'main', '--config', configFile], asPostgres);
  expectExit(again, 0, /already archived/);
  const bytes = readFileSync(got);
  bytes[100] ^= 0xff;
  writeFileSync(got, bytes);
  const other = await runCli(['wal', 'push', got, '--database', 'main', '--config', configFile], asPostgres);
  expectExit(other, 7, /already archived in .* with other contents/);
  const missing = await runCli(['wal', 'get', '0000000100000000000000FE', path.join(root, 'x'), '--database', 'main', '--config', configFile], asPostgres);
  expectExit(missing, 1, /not in the archive/);
});

test('kill -9 during wal push leaves no visible partial segment, and the retry succeeds', async () => {
  const file = path.join(root, '000000010000000000000F00');
  writeFileSync(file, Buffer.alloc(16 * 1024 * 1024, 7));
  await chownToUser('postgres', file);
  for (const delay of [150, 300, 450]) {
    const child = spawnCli(['wal', 'push', file, '--database', 'main', '--config', configFile], asPostgres);
    const closed = new Promise((resolve) => child.once('close', resolve));
    await sleep(delay);
    child.kill('SIGKILL');
    spawn('pkill', ['-9', '-f', `wal push ${file}`]);
    await closed;
    const visible = walFiles().filter((f) => path.basename(f).startsWith('000000010000000000000F00'));
    assert.ok(visible.length <= 1);
    for (const v of visible) {
      const back = path.join(root, 'back');
      expectExit(await runCli(['wal', 'get', '000000010000000000000F00', back, '--database', 'main', '--config', configFile], asPostgres), 0);
      assert.ok(readFileSync(back).equals(readFileSync(file)), `${v} decodes to the pushed bytes`);
    }
  }
  expectExit(await runCli(['wal', 'push', file, '--database', 'main', '--config', configFile], asPostgres), 0);
  for (const f of walFiles().filter((x) => path.basename(x).startsWith('000000010000000000000F00'))) await import('node:fs/promises').then((fs) => fs.rm(f));
});

test('a corrupted segment fails the restore with a clear error and leaves no server running; a deleted one is a gap refused up front', async () => {
  const series = readdirSync(stash).find((d) => d.startsWith('localhost-'))!;
  const oldest = readdirSync(path.join(stash, series)).filter((f) => f.endsWith('.manifest.json')).sort()[0];
  const base = JSON.parse(readFileSync(path.join(stash, series, oldest), 'utf8'));
  const startWal: string = base.dump.details.physical.startWal;
  // The segment after the base backup's start: replay needs it for any target after the backup.
  const segs = walFiles().filter((f) => /\/00000001[0-9A-F]{16}-[0-9a-f]{64}\.zst$/.test(f) && path.basename(f).slice(0, 24) > startWal);
  const victim = segs[0];
  const original = readFileSync(victim);
  const damaged = Buffer.from(original);
  damaged[Math.floor(damaged.length / 2)] ^= 0x55;
  writeFileSync(victim, damaged);
  const pgdata = path.join(root, 'damaged');
  const r = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', targetTime, '--pgdata', pgdata, '--no-archive'], { timeoutMs: 120_000 });
  expectExit(r, 7, new RegExp(`recovery stopped: a WAL file could not be restored: ${path.basename(victim).slice(0, 24)}`));
  const pid = existsSync(path.join(pgdata, 'postmaster.pid')) ? Number(readFileSync(path.join(pgdata, 'postmaster.pid'), 'utf8').split('\n')[0]) : 0;
  assert.ok(pid === 0 || !isRunning(pid), 'no server is left running');
  writeFileSync(victim, original);

  const { rm } = await import('node:fs/promises');
  await rm(victim);
  const gap = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', targetTime, '--pgdata', path.join(root, 'gap'), '--dry-run']);
  expectExit(gap, 7, new RegExp(`gap after base backup .*: ${path.basename(victim).slice(0, 24)} is missing`));
  const verify = await runCli(['verify', base.id, '--config', configFile]);
  expectExit(verify, 7, new RegExp(`WAL archive has a gap after base backup .*: ${path.basename(victim).slice(0, 24)} missing`));
  writeFileSync(victim, original);
  await chownToUser('postgres', victim);
});

test('prune keeps every WAL segment a kept base backup needs and removes only what lies before the oldest kept one', async () => {
  const series = readdirSync(stash).find((d) => d.startsWith('localhost-'))!;
  const manifests = readdirSync(path.join(stash, series)).filter((f) => f.endsWith('.manifest.json')).sort();
  assert.ok(manifests.length >= 2, 'two base backups at least');
  const newest = JSON.parse(readFileSync(path.join(stash, series, manifests[manifests.length - 1]), 'utf8'));
  const start: string = newest.dump.details.physical.startWal;
  const before = walFiles();
  const dry = await runCli(['prune', '--config', configFile, '--keep-last', '1', '--dry-run']);
  expectExit(dry, 0, new RegExp(`remove +WAL of ${series} before ${newest.id} \\(the oldest kept base backup\\): \\d+ files, segments 00000001[0-9A-F]{16} to`));
  assert.deepEqual(walFiles(), before, 'a dry run removes nothing');
  expectExit(await runCli(['prune', '--config', configFile, '--keep-last', '1', '--yes']), 0, /removed \d+ backups? .*removed \d+ WAL files/);
  const after = walFiles().map((f) => path.basename(f));
  const segs = after.filter((n) => /^[0-9A-F]{24}-/.test(n)).map((n) => n.slice(0, 24));
  assert.ok(segs.every((n) => n.slice(8) >= start.slice(8)), `nothing before ${start} is left: ${segs.join(', ')}`);
  assert.ok(segs.some((n) => n === start), 'the newest backup\'s start segment stays');
  const histories = before.map((f) => path.basename(f)).filter((n) => /^[0-9A-F]{8}\.history-/.test(n));
  assert.deepEqual(after.filter((n) => /^[0-9A-F]{8}\.history-/.test(n)), histories, 'history files stay');
  expectExit(await runCli(['verify', '--latest', 'main', '--config', configFile, '--drill'], { timeoutMs: 120_000 }), 0, /drill passed/);
});

test('status shows the newest archived WAL and the window, and a failing archive_command as unhealthy', async () => {
  // The dashboard's catalog gives the same window.
  const { loadConfig } = await import('../../src/config/load.js');
  const { createCatalog } = await import('../../src/web/data.js');
  const main = (await createCatalog((await loadConfig(configFile)).config).databases()).find((x) => x.name === 'main')!;
  assert.ok(main.window, 'the dashboard shows the recoverable window');
  assert.ok(main.window.from < main.window.to && main.window.gaps.length === 0, JSON.stringify(main.window));
  const ok = await runCli(['status', '--config', configFile]);
  expectExit(ok, 0, /ok +newest archived WAL 00000001[0-9A-F]{16} in local, .*; recoverable from /);
  const series = readdirSync(stash).find((d) => d.startsWith('localhost-'))!;
  const current = (await server.query(`SELECT pg_walfile_name(pg_current_wal_lsn()) AS s`)).rows[0].s as string;
  const folder = path.join(stash, series, 'wal', current.slice(0, 16));
  const { chmod } = await import('node:fs/promises');
  await chmod(folder, 0o500);
  try {
    // A switch with nothing written since the last one archives nothing: write first.
    const before = Number((await server.query(`SELECT failed_count FROM pg_stat_archiver`)).rows[0].failed_count);
    await server.query(`SELECT pg_logical_emit_message(false, 'dbstash-test', 'status')`);
    await server.query(`SELECT pg_switch_wal()`);
    let failed = before;
    for (let i = 0; i < 150 && failed === before; i++) {
      await sleep(100);
      failed = Number((await server.query(`SELECT failed_count FROM pg_stat_archiver`)).rows[0].failed_count);
    }
    assert.ok(failed > before, 'the archiver tried the segment and failed');
    const bad = await runCli(['status', '--config', configFile]);
    expectExit(bad, 13, /PROBLEM +archive_command is failing: 00000001[0-9A-F]{16} failed/);
    // A base backup without its WAL waits for the archive to take its last segment: with
    // archive_command failing, it fails with the reason instead of waiting for ever.
    const manifests = () => readdirSync(path.join(stash, series)).filter((f) => f.endsWith('.manifest.json')).length;
    const published = manifests();
    const started = Date.now();
    const waited = await runCli(['backup', 'main', '--config', configFile], { timeoutMs: 60_000 });
    expectExit(waited, 5, /the base backup waits for the archive to take its last WAL segment, and archive_command fails \(00000001[0-9A-F]{16}/);
    assert.ok(Date.now() - started < 30_000, 'it fails within seconds of the server\'s notice');
    assert.equal(manifests(), published, 'nothing published');
    assert.deepEqual(readdirSync(path.join(stash, series)).filter((f) => f.includes('.tmp-')), [], 'no temporaries left');
    assert.equal(await basebackupsRunning(), 0, 'no base backup left running on the server');
    // Interrupted while the server waits for the archive (before its notice at 5 s): exit 130,
    // and the server's side is cancelled too.
    const child = spawnCli(['backup', 'main', '--config', configFile]);
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
    const phase = async () => (await server.query(`SELECT phase FROM pg_stat_progress_basebackup`)).rows[0]?.phase as string | undefined;
    for (let i = 0; i < 100 && (await phase()) !== 'waiting for wal archiving to finish'; i++) await sleep(50);
    assert.equal(await phase(), 'waiting for wal archiving to finish', err);
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
    assert.equal(code, 130, err);
    assert.equal(await basebackupsRunning(), 0, 'no base backup left running on the server after the interrupt');
    assert.equal(manifests(), published, 'nothing published');
  } finally {
    await chmod(folder, 0o700);
  }
  await switchAndWait();
});

/**
 * Base backups the server is still running, after a moment for a cancel to land. The server does
 * not notice its client gone while it waits for the archive: dbstash has to cancel its side.
 */
async function basebackupsRunning(tries = 20): Promise<number> {
  let running = (await server.query(`SELECT count(*)::int AS n FROM pg_stat_progress_basebackup`)).rows[0].n;
  for (let i = 0; i < tries && running > 0; i++) {
    running = (await server.query(`SELECT count(*)::int AS n FROM pg_stat_progress_basebackup`)).rows[0].n;
    if (running > 0) await sleep(100);
  }
  return running;
}

/** Every file under `dir` with its size, relative to it. */
function listing(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(`${path.relative(dir, p)} ${statSync(p).size}`);
    }
  };
  walk(dir);
  return out.sort();
}

test('a cluster with a tablespace: one tar carries it; a restore puts it where --tablespace-map says and leaves its old location alone; a non-empty location is refused; the drill recovers it', async () => {
  const original = path.join(root, 'ts-fast');
  mkdirSync(original, { mode: 0o700 });
  await chownToUser('postgres', original);
  await server.query(`CREATE TABLESPACE fast LOCATION '${original}'`);
  // No autovacuum: the live cluster's own writes in the old location would change its listing.
  await server.query(`CREATE TABLE hot (id int PRIMARY KEY, v text) WITH (autovacuum_enabled = off) TABLESPACE fast`);
  await server.query(`INSERT INTO hot SELECT g, md5(g::text) FROM generate_series(1, 5000) g`);
  await server.query(`VACUUM hot`);
  const hotSql = `SELECT count(*)::int AS n, md5(string_agg(id || ':' || v, ',' ORDER BY id)) AS sum FROM hot`;
  const hot = (await server.query(hotSql)).rows[0];
  const oid = Number((await server.query(`SELECT oid FROM pg_tablespace WHERE spcname = 'fast'`)).rows[0].oid);

  const r = await runCli(['backup', 'main', '--config', configFile, '--json'], asPostgres);
  expectExit(r, 0);
  const m = JSON.parse(r.stdout).manifest;
  assert.deepEqual(m.dump.details.physical.tablespaces, [{ oid, name: 'fast', location: original }]);
  assert.equal(m.dump.tool, 'BASE_BACKUP');
  // One tar: the tablespace's files under pg_tblspc/<oid>/, the data directory, backup_manifest last.
  const series = readdirSync(stash).find((d) => d.startsWith('localhost-'))!;
  const names = execFileSync('sh', ['-c', `zstd -dc '${path.join(stash, series, m.artifacts[0].file)}' | tar -t`], { encoding: 'utf8', maxBuffer: 64 << 20 }).trim().split('\n');
  assert.ok(names.some((n) => n.startsWith(`pg_tblspc/${oid}/PG_15_`)), names.slice(0, 5).join(', '));
  assert.ok(names.includes('backup_label') && names.includes('tablespace_map'), 'the data directory is in it');
  assert.equal(names.at(-1), 'backup_manifest');
  await server.query(`INSERT INTO markers(name) VALUES ('tablespace')`);
  await switchAndWait();
  await server.query('CHECKPOINT');
  const before = listing(original);

  // Back to its old location, which the live cluster fills: refused before anything is written.
  const pgdata = path.join(root, 'with-tablespace');
  const refused = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', 'latest', '--pgdata', pgdata]);
  expectExit(refused, 2, new RegExp(`tablespace fast would go to ${original}, which is not empty \\(its location in the backed-up cluster\\)`));
  assert.match(refused.stderr, new RegExp(`--tablespace-map ${original}=NEW_EMPTY_DIRECTORY`));
  assert.equal(existsSync(pgdata), false, 'nothing was written');
  const unknown = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', 'latest', '--pgdata', pgdata, '--tablespace-map', `/no/such=${root}/x`, '--dry-run']);
  expectExit(unknown, 2, new RegExp(`has no tablespace at /no/such`));

  const moved = path.join(root, 'ts-restored');
  const dry = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', 'latest', '--pgdata', pgdata, '--tablespace-map', `${original}=${moved}`, '--dry-run']);
  expectExit(dry, 0, new RegExp(`tablespace fast \\(${original}\\) into ${moved}`));
  assert.equal(existsSync(moved), false, 'a dry run creates nothing');
  const port = await freePort();
  const ok = await runCli(['restore', '--database', 'main', '--config', configFile, '--at', 'latest', '--pgdata', pgdata, '--tablespace-map', `${original}=${moved}`, '--no-archive', '--start', '--port', String(port)], { timeoutMs: 120_000 });
  expectExit(ok, 0);
  started.push(pgdata);
  assert.deepEqual((await query(port, hotSql)).rows[0], hot);
  assert.ok((await query(port, `SELECT name FROM markers`)).rows.some((x) => x.name === 'tablespace'));
  assert.equal((await query(port, `SELECT pg_tablespace_location(oid) AS l FROM pg_tablespace WHERE spcname = 'fast'`)).rows[0].l, moved);
  assert.equal(readlinkSync(path.join(pgdata, 'pg_tblspc', String(oid))), moved);
  assert.ok(listing(moved).some((f) => f.startsWith('PG_15_')), 'the files are in the new directory');
  assert.deepEqual(listing(original), before, 'the old location was not touched');

  const d = await runCli(['verify', '--latest', 'main', '--config', configFile, '--drill', '--json'], { timeoutMs: 120_000 });
  expectExit(d, 0);
  const rec = JSON.parse(d.stdout).results[0];
  assert.equal(rec.result, 'passed', JSON.stringify(rec));
});

test('with tablespaces too, a base backup waiting on a failing archive_command fails with the reason and publishes nothing', async () => {
  assert.ok((await server.query(`SELECT count(*)::int AS n FROM pg_tablespace WHERE spcname = 'fast'`)).rows[0].n === 1, 'the cluster has its tablespace (test above)');
  const series = readdirSync(stash).find((d) => d.startsWith('localhost-'))!;
  const current = (await server.query(`SELECT pg_walfile_name(pg_current_wal_lsn()) AS s`)).rows[0].s as string;
  const folder = path.join(stash, series, 'wal', current.slice(0, 16));
  mkdirSync(folder, { recursive: true });
  const { chmod } = await import('node:fs/promises');
  await chmod(folder, 0o500);
  try {
    const manifests = () => readdirSync(path.join(stash, series)).filter((f) => f.endsWith('.manifest.json')).length;
    const published = manifests();
    const started = Date.now();
    const waited = await runCli(['backup', 'main', '--config', configFile], { timeoutMs: 60_000 });
    expectExit(waited, 5, /the base backup waits for the archive to take its last WAL segment, and archive_command fails/);
    assert.ok(Date.now() - started < 30_000, 'it fails within seconds of the server\'s notice');
    assert.equal(manifests(), published, 'nothing published');
    assert.deepEqual(readdirSync(path.join(stash, series)).filter((f) => f.includes('.tmp-')), [], 'no temporaries left');
assert.equal(await basebackupsRunning(), 0, 'no base backup left running on the server');
  } finally {
    await chmod(folder, 0o700);
  }
  await switchAndWait();
});
