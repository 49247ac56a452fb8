// Every preflight failure of a PostgreSQL backup, through the real CLI: the documented exit code,
// one `error:` line plus a `hint:`, no stack trace, and nothing written into the stash.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { freePort } from '../harness/proc.js';
import { runCli } from '../harness/run.js';
import { assertCleanFailure, filesUnder, workDir } from './helpers.js';
import { folderFor, folderOf, writeLock } from '../harness/stash.js';

let server: PgServer;
const { work, freshStash } = workDir('dbstash-preflight');

before(async () => {
  server = await startPostgres();
  await server.createDatabase('shop');
  await server.query('CREATE TABLE items AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 1000) g', 'shop');
});
after(() => server?.stop());

describe('postgres preflight failures', () => {
  it('pg_dump missing (--pg-bin-dir is an empty directory): exit 4, names the package', async () => {
    const empty = path.join(work, 'empty-bin');
    mkdirSync(empty);
    const stash = freshStash();
    const res = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--pg-bin-dir', empty]);
    assertCleanFailure(res, 4, /pg_dump not found in .*empty-bin/);
    assert.match(res.stderr, /hint: .*postgresql-client-15/);
    assert.deepEqual(filesUnder(stash), []);
  });

  it('pg_dump older than the server: exit 4, says which was found and what to install', async () => {
    const old = path.join(work, 'old-bin');
    mkdirSync(old);
    // A stand-in for an old client: it only answers --version.
    writeFileSync(path.join(old, 'pg_dump'), '#!/bin/sh\necho "pg_dump (PostgreSQL) 12.0"\n');
    chmodSync(path.join(old, 'pg_dump'), 0o755);
    const stash = freshStash();
    const res = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--pg-bin-dir', old]);
    assertCleanFailure(res, 4, /pg_dump is too old for a PostgreSQL 15 server: found .*old-bin\/pg_dump \(12\.0\)/);
    assert.match(res.stderr, /hint: install postgresql-client-15/);
    assert.deepEqual(filesUnder(stash), []);
  });

  it('connection refused: exit 3', async () => {
    const port = await freePort();
    const stash = freshStash();
    const res = await runCli(['backup', `postgres://postgres:pw@127.0.0.1:${port}/shop`, '--output-dir', stash]);
    assertCleanFailure(res, 3, new RegExp(`connection refused at 127\\.0\\.0\\.1:${port}`));
    assert.deepEqual(filesUnder(stash), []);
  });

  it('wrong password: exit 3, and the wrong password is not echoed', async () => {
    const stash = freshStash();
    const res = await runCli(['backup', `postgres://postgres:not-the-password@127.0.0.1:${server.port}/shop`, '--output-dir', stash]);
    assertCleanFailure(res, 3, /authentication failed for user "postgres"/);
    assert.ok(!res.stderr.includes('not-the-password'));
    assert.deepEqual(filesUnder(stash), []);
  });

  it('missing database: exit 4; --log-file gets the error as a JSON line; --debug alone shows the stack', async () => {
    const stash = freshStash();
    const log = path.join(work, 'missing-db.log');
    const res = await runCli(['backup', server.url('no_such_db'), '--output-dir', stash, '--log-file', log]);
    assertCleanFailure(res, 4, /database "no_such_db" does not exist/);
    assert.deepEqual(filesUnder(stash), []);
    const events = readFileSync(log, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const error = events.find((e) => e.level === 'error');
    assert.match(error.message, /database "no_such_db" does not exist/);
    assert.equal(error.kind, 'preflight');
    assert.match(error.hint, /createdb/);
    assert.ok(!isNaN(Date.parse(error.time)));
    const debug = await runCli(['backup', server.url('no_such_db'), '--output-dir', stash, '--debug']);
    assert.equal(debug.code, 4);
    assert.match(debug.stderr, /^\s+at /m, 'the stack trace, with --debug');
  });

  it('unwritable destination (a path below a regular file, which fails even for root): exit 4', async () => {
    const file = path.join(work, 'file.txt');
    writeFileSync(file, 'not a directory');
    const res = await runCli(['backup', server.url('shop'), '--output-dir', path.join(file, 'sub')]);
    assertCleanFailure(res, 4, /destination local .*file\.txt\/sub.* is not usable/);
    assert.equal(readFileSync(file, 'utf8'), 'not a directory');
    assert.deepEqual(filesUnder(work).filter((f) => f.startsWith('stash') || f.includes('sub')), []);
  });

  it('not enough space for the estimate (space.ratio in the config): exit 4', async () => {
    const stash = freshStash();
    const config = path.join(work, 'space.yaml');
    writeFileSync(config, 'space:\n  ratio: 100000\n');
    const res = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--config', config]);
    assertCleanFailure(res, 4, /not enough free space in .*: about .* needed \(database .* × ratio 100000 × margin 1\.2\), .* free/);
    assert.deepEqual(filesUnder(stash), []);
  });

  it('lock held by a live process: exit 6, the lock is left as it was and nothing else is written', async () => {
    const stash = freshStash();
    const holder = spawn('sleep', ['60']);
    try {
      const lock = writeLock(folderFor(stash, server.url('shop')), { owner: 'ops', pid: holder.pid!, host: os.hostname(), startedAt: new Date(Date.now() - 60_000).toISOString(), command: 'dbstash backup shop' });
      const body = readFileSync(lock, 'utf8');
      const res = await runCli(['backup', server.url('shop'), '--output-dir', stash]);
      assertCleanFailure(res, 6, new RegExp(`another dbstash is working on database "shop" .*pid ${holder.pid}`));
      assert.match(res.stderr, /hint: .*--force-unlock/);
      assert.deepEqual(filesUnder(stash), [path.relative(stash, lock)]);
      assert.equal(readFileSync(lock, 'utf8'), body);
      // --force-unlock takes over and the backup goes through; its own lock is gone afterwards.
      const forced = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--force-unlock', '--json']);
      assert.equal(forced.code, 0, forced.stderr);
      assert.match(forced.stderr, /warning: removing the lock held by pid \d+/);
      const id = JSON.parse(forced.stdout).id;
      assert.deepEqual(filesUnder(stash), [`${folderOf(id)}/${id}.dump.zst`, `${folderOf(id)}/${id}.manifest.json`, `${folderOf(id)}/series.json`].sort());
    } finally {
      holder.kill();
    }
  });

  it('a stale lock (its process is gone) is passed over with a warning, recorded in the manifest, and cleared', async () => {
    const stash = freshStash();
    const gone = spawn('true');
    await new Promise((r) => gone.on('close', r));
    writeLock(folderFor(stash, server.url('shop')), { owner: 'ops', pid: gone.pid!, host: os.hostname(), startedAt: '2026-01-01T00:00:00Z', command: 'dbstash backup' });
    const res = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--json']);
    assert.equal(res.code, 0, res.stderr);
    assert.match(res.stderr, new RegExp(`warning: ignoring a stale lock: pid ${gone.pid} .* no longer running`));
    const out = JSON.parse(res.stdout);
    assert.ok(out.manifest.warnings.some((w: string) => w.includes('stale lock')));
    assert.ok(!filesUnder(stash).some((f) => f.includes('/locks/')), filesUnder(stash).join(', '));
  });

  it('--dry-run checks and prints the plan, and writes nothing', async () => {
    const stash = freshStash();
    const res = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--dry-run', '--json']);
    assert.equal(res.code, 0, res.stderr);
    const plan = JSON.parse(res.stdout);
    assert.equal(plan.dryRun, true);
    assert.match(plan.serverVersion, /^15\./);
    assert.equal(plan.tool.name, 'pg_dump');
    assert.deepEqual(plan.destinations.map((d: { url: string }) => d.url), [stash]);
    assert.deepEqual(filesUnder(stash), []);
  });

  it('--quiet prints nothing on success', async () => {
    const stash = freshStash();
    const res = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--quiet']);
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout + res.stderr, '');
    assert.equal(filesUnder(stash).length, 3, 'artifact, manifest and series.json');
  });

  it('a dump the server refuses (no read permission): exit 5 with pg_dump\'s reason, nothing published', async () => {
    await server.query(`CREATE ROLE limited LOGIN PASSWORD 'limited-pw'`);
    await server.query('CREATE TABLE secret_stuff (x int)', 'shop');
    await server.query('REVOKE ALL ON secret_stuff FROM PUBLIC', 'shop');
    const stash = freshStash();
    const res = await runCli(['backup', `postgres://limited:limited-pw@127.0.0.1:${server.port}/shop`, '--output-dir', stash]);
    assert.equal(res.code, 5, res.stderr);
    assert.match(res.stderr, /^error: .*permission denied for table (items|secret_stuff)/m, res.stderr);
    assert.doesNotMatch(res.stderr, /^\s+at /m);
    assert.deepEqual(filesUnder(stash), []);
  });

  it('a role the server does not know is named as such, not as a password problem', async () => {
    // Over the socket (trust), the server says exactly that; over TCP (scram) it would not tell.
    const url = `postgres://nosuchrole@${encodeURIComponent(server.socketDir)}:${server.port}/shop`;
    const res = await runCli(['backup', url, '--output-dir', freshStash()]);
    assertCleanFailure(res, 3, /\[postgres\] role "nosuchrole" does not exist at /);
    assert.match(res.stderr, /hint: check the user name in the URL \(or PGUSER\), or create the role/);
    assert.doesNotMatch(res.stderr, /password/);
  });

  it('a config error is exit 2 with the key named', async () => {
    const config = path.join(work, 'bad.yaml');
    writeFileSync(config, 'compression:\n  algorithm: lz4\n');
    const res = await runCli(['backup', server.url('shop'), '--output-dir', freshStash(), '--config', config]);
    assertCleanFailure(res, 2, /bad\.yaml:2: compression\.algorithm: invalid value "lz4"; valid values: zstd, gzip, none/);
  });

  it('--help documents the exit codes used above', async () => {
    const res = await runCli(['backup', '--help']);
    assert.equal(res.code, 0);
    for (const line of [/^\s+2\s+usage or configuration error/m, /^\s+3\s+connection or authentication failure/m, /^\s+4\s+preflight failure/m, /^\s+5\s+backup failed/m, /^\s+6\s+lock held/m, /^\s+130\s+interrupted/m]) {
      assert.match(res.stdout, line);
    }
  });
});
