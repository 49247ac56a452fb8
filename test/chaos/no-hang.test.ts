// Never hang, never leak a secret, never cry wolf: each way found to do one of these, kept closed.
//   - a storage that accepts connections and never answers: a backup ends, naming the storage,
//     and an optional one is dropped instead of stopping everything;
//   - an output directory the file system refuses (/proc) fails at once;
//   - URL parsing, masking and config loading under random and hostile input: a usage error (2),
//     never a stack trace, never a piece of the password;
//   - a password on dbstash's own command line is warned about and kept out of `ps`;
//   - --config that is a directory or far too big: a usage error, at once;
//   - each exit code docs/restoring.md documents for verify and restore, produced for real.

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { maskSecrets, maskUrlCredentials } from '../../src/core/secrets.js';
import { parseTarget, redactUrl } from '../../src/engines/target.js';
import { expectExit, runCli, spawnCli } from '../harness/run.js';
import { folderOf } from '../harness/stash.js';
import { tempDir } from '../harness/tmp.js';

function sqliteDb(file: string, rows: number): string {
  mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.exec('CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, body TEXT NOT NULL); DELETE FROM items');
  const insert = db.prepare('INSERT INTO items (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(`row ${i}`.padEnd(60, '.'));
  })();
  db.close();
  return file;
}

describe('nothing hangs', () => {
  let silent: net.Server;
  let endpoint: string;
  before(async () => {
    silent = net.createServer(() => {}); // accepts, never answers
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    endpoint = `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`;
  });
  after(() => silent.close());

  const s3 = { AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y', AWS_REGION: 'us-east-1' };

  test('an optional storage that never answers is dropped, named, and the backup goes on', { timeout: 60_000 }, async () => {
    const dir = tempDir('hang-optional');
    const db = sqliteDb(path.join(dir, 'app.db'), 50);
    writeFileSync(
      path.join(dir, 'dbstash.yaml'),
      `storages:\n  local:\n    url: ${path.join(dir, 'stash')}\n  offsite:\n    url: s3://b/p\n    endpoint: ${endpoint}\n    forcePathStyle: true\n    optional: true\n    connectTimeout: 1s\n    idleTimeout: 2s\n`,
    );
    const began = Date.now();
    const r = await runCli(['backup', db, '--config', path.join(dir, 'dbstash.yaml'), '--json'], { cwd: dir, env: s3, timeoutMs: 50_000 });
    expectExit(r, 12, /optional destination offsite failed, the backup will be degraded: .*no answer at http:\/\/127\.0\.0\.1:\d+ for s3:\/\/b\/p within 3\.0s/);
    assert.ok(Date.now() - began < 20_000, `it took ${Date.now() - began} ms`);
    assert.deepEqual(JSON.parse(r.stdout).stored, ['local']);
  });

  test('a required storage that never answers fails the backup at once with its name and the setting to raise', { timeout: 60_000 }, async () => {
    const dir = tempDir('hang-required');
    const db = sqliteDb(path.join(dir, 'app.db'), 50);
    writeFileSync(path.join(dir, 'dbstash.yaml'), `storages:\n  offsite:\n    url: s3://b/p\n    endpoint: ${endpoint}\n    connectTimeout: 1s\n    idleTimeout: 1s\n`);
    const r = await runCli(['backup', db, '--config', path.join(dir, 'dbstash.yaml')], { cwd: dir, env: s3, timeoutMs: 50_000 });
    expectExit(r, 4, /error: destination offsite \(s3:\/\/b\/p\) is not usable: \[s3\] no answer at http:\/\/127\.0\.0\.1:\d+/);
    assert.match(r.stderr, /hint: .*raise connectTimeout\/idleTimeout/);
  });

  test('Ctrl-C while a storage does not answer takes effect at once', { timeout: 60_000 }, async () => {
    const dir = tempDir('hang-sigint');
    const db = sqliteDb(path.join(dir, 'app.db'), 50);
    writeFileSync(path.join(dir, 'dbstash.yaml'), `storages:\n  offsite:\n    url: s3://b/p\n    endpoint: ${endpoint}\n    connectTimeout: 60s\n    idleTimeout: 60s\n`);
    const child = spawnCli(['backup', db, '--config', path.join(dir, 'dbstash.yaml')], { cwd: dir, env: s3 });
    let stderr = '';
    child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await new Promise((r) => setTimeout(r, 1500));
    const sent = Date.now();
    child.kill('SIGINT');
    const code = await exited;
    assert.equal(code, 130, stderr);
    assert.ok(Date.now() - sent < 3000, `it took ${Date.now() - sent} ms to stop`);
  });

  test('an output directory the file system refuses fails at once (exit 4), and says why', { timeout: 30_000 }, async () => {
    const began = Date.now();
    const r = await runCli(['backup', sqliteDb(path.join(tempDir('hang-proc'), 'app.db'), 5), '--output-dir', `/proc/dbstash-${process.pid}/stash`], { timeoutMs: 20_000 });
    expectExit(r, 4, /cannot create the stash directory \/proc\/dbstash-\d+\/stash: this file system refuses it/);
    assert.ok(Date.now() - began < 10_000);
  });
});

describe('no secret in any output', () => {
  const SPECIALS = ['@', '#', '/', ';', '?', ':', '%', ' ', '&', '=', '+', '"', "'", '\\', '€', '\n'];
  const randomPassword = (rng: () => number) => {
    let p = 'S3cr3t';
    for (let i = 0; i < 4 + Math.floor(rng() * 10); i++) p += rng() < 0.4 ? SPECIALS[Math.floor(rng() * SPECIALS.length)] : randomBytes(1).toString('hex');
    return p + 'Zq';
  };
  let seed = 42;
  const rng = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);

  test('masking hides every password, whatever it holds, typed raw or percent-encoded (2000 random cases)', () => {
    for (let i = 0; i < 2000; i++) {
      const password = randomPassword(rng);
      const scheme = ['postgres', 'postgresql', 'mysql', 'mariadb'][i % 4];
      const host = ['db.internal', '127.0.0.1', '[::1]', 'h'][i % 4];
      const raw = `${scheme}://app:${password.replace(/\s/g, '')}@${host}:5432/shop?sslmode=require`;
      const encoded = `${scheme}://app:${encodeURIComponent(password)}@${host}:5432/shop`;
      for (const url of [raw, encoded]) {
        for (const text of [url, `error: cannot reach ${url} now`, `"${url}"`, redactUrl(url), maskSecrets(`x ${url} y`)]) {
          const masked = maskSecrets(text);
          for (const piece of [password.replace(/\s/g, '').slice(1, -1), encodeURIComponent(password).slice(1, -1)]) {
            if (piece.length >= 4) assert.ok(!masked.includes(piece), `"${piece}" leaked from ${JSON.stringify(text)}: ${masked}`);
          }
        }
        assert.ok(!redactUrl(url).includes('S3cr3t'), `${url} → ${redactUrl(url)}`);
      }
    }
  });

  test('parsing takes a password with unencoded @ # / ; ? whole, and never shows a piece of it', () => {
    for (const password of ['p@ss#w0rd', 'a/b;c?d', 'x@y@z', 'semi;colon', 'q?u@e#s/t']) {
      const t = parseTarget(`postgres://app:${password}@db.internal:5432/shop`);
      assert.deepEqual([t.user, t.password, t.host, t.port, t.database], ['app', password, 'db.internal', 5432, 'shop']);
      assert.equal(t.displayUrl, 'postgres://app:***@db.internal:5432/shop');
    }
    assert.equal(maskUrlCredentials('see postgres://app:p@ss#w0rd@h/db and mysql://r:x@y@z/w'), 'see postgres://app:***@h/db and mysql://r:***@z/w');
  });

  test('hostile database arguments: a usage error (2) or a clean failure, one line, no stack trace, no password', { timeout: 120_000 }, async () => {
    const dir = tempDir('fuzz-args');
    const hostile = [
      'postgres://app:Zs3cretZZ@',
      'postgres://app:Zs3cretZZ@:99999/db',
      'postgres://:Zs3cretZZ@/',
      'mysql://app:Zs3cretZZ@h/',
      'ftp://app:Zs3cretZZ@h/db',
      'postgres://app:Zs3cretZZ@h:notaport/db',
      'postgres://app:Zs3%%cretZZ@h/db%zz',
      'postgres://app:Zs3cretZZ@[::1/db',
      `postgres://app:Zs3cretZZ@${'h'.repeat(300)}/db`,
      '\u0001postgres://app:Zs3cretZZ@h/db',
      'postgres://app:Zs3cretZZ@h/db?sslmode=\u0007',
    ];
    for (const arg of hostile) {
      const r = await runCli(['backup', arg, '--output-dir', path.join(dir, 'stash'), '--log-file', path.join(dir, 'log.jsonl')], { timeoutMs: 30_000 });
      assert.ok([2, 3, 4].includes(r.code ?? -1), `${JSON.stringify(arg)}: exit ${r.code}\n${r.stderr}`);
      assert.doesNotMatch(r.stderr, /^\s+at /m, `stack trace for ${JSON.stringify(arg)}`);
      assert.doesNotMatch(r.stderr + r.stdout, /s3cret|internal error/i, `${JSON.stringify(arg)}:\n${r.stderr}`);
      assert.equal(r.stderr.split('\n').filter((l) => l.startsWith('error: ')).length, 1, r.stderr);
    }
    assert.doesNotMatch(readFileSync(path.join(dir, 'log.jsonl'), 'utf8'), /s3cret/i);
  });

  test('hostile config files: exit 2 with the file named, no stack trace, no secret; a directory and a huge file are refused at once', { timeout: 120_000 }, async () => {
    const dir = tempDir('fuzz-config');
    const cases = [
      'databases: [1, 2',
      'databases:\n  a:\n    url: postgres://u:Zs3cretZZ@h/db\n    port: "5432x"\n',
      'databases:\n  a: &x\n    url: postgres://u:Zs3cretZZ@h/db\n  b: *x\n  c: *nope\n',
      `a: &a [${'x,'.repeat(50)}x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n`,
      'storages:\n  s:\n    url: s3://b/p\n    secretAccessKey: Zs3cretZZ\n    bogus: 1\n',
      '\u0000\u0001\u0002',
      'databases:\n  a:\n    url: ${UNSET_DBSTASH_VARIABLE}\n',
      randomBytes(4096).toString('latin1'),
    ];
    for (const [i, text] of cases.entries()) {
      const file = path.join(dir, `c${i}.yaml`);
      writeFileSync(file, text);
      const r = await runCli(['list', '--config', file], { timeoutMs: 30_000 });
      assert.equal(r.code, 2, `case ${i}: exit ${r.code}\n${r.stderr}`);
      assert.doesNotMatch(r.stderr, /^\s+at /m, `case ${i}: stack trace`);
      assert.doesNotMatch(r.stderr + r.stdout, /s3cret/i, `case ${i}:\n${r.stderr}`);
    }
    expectExit(await runCli(['list', '--config', dir]), 2, /error: config \S+ is a directory/);
    const huge = path.join(dir, 'huge.yaml');
    writeFileSync(huge, `databases:\n${'  # padding\n'.repeat(200_000)}`);
    const began = Date.now();
    expectExit(await runCli(['list', '--config', huge]), 2, /error: config \S+ is \d+ KiB; a dbstash config is at most 256 KiB/);
    assert.ok(Date.now() - began < 5000);
  });

  test('a password on the command line: a warning, and `ps` never shows it while dbstash runs', { timeout: 60_000 }, async () => {
    const silent = net.createServer(() => {});
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    try {
      const url = `postgres://app:Zs3cretZZ@127.0.0.1:${(silent.address() as net.AddressInfo).port}/shop`;
      const child = spawnCli(['backup', url, '--output-dir', tempDir('argv-stash')]);
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      await new Promise((r) => setTimeout(r, 800));
      const cmdline = readFileSync(`/proc/${child.pid}/cmdline`, 'utf8');
      assert.doesNotMatch(cmdline, /Zs3cretZZ/, cmdline);
      assert.match(cmdline, /postgres:\/\/app:\*\*\*@127\.0\.0\.1/);
      child.kill('SIGINT');
      await exited;
      assert.match(stderr, /warning: a password in a URL on the command line is visible to every user of this machine \(ps\); put it in the environment/);
      assert.doesNotMatch(stderr, /Zs3cretZZ/);
    } finally {
      silent.close();
    }
  });
});

describe('the exit codes documented for verify and restore', () => {
  test('each documented code is what the command returns', { timeout: 120_000 }, async () => {
    const doc = readFileSync(new URL('../../../docs/restoring.md', import.meta.url), 'utf8');
    const restoreLine = /Exit codes: 0 restored; 2 refused \(no confirmation\) or bad usage; 7 the backup failed\s+verification; 9 the restore failed[^;]*; 130 interrupted\./.exec(doc);
    assert.ok(restoreLine, 'docs/restoring.md lists the restore exit codes');
    assert.match(doc, /Exit codes: 0 passed; \*\*7\*\* verification failed[\s\S]*?\*\*8\*\* could not verify/);

    const dir = tempDir('exit-codes');
    const db = sqliteDb(path.join(dir, 'app.db'), 300);
    const stash = path.join(dir, 'stash');
    const backup = await runCli(['backup', db, '--output-dir', stash, '--json']);
    expectExit(backup, 0);
    const id = JSON.parse(backup.stdout).id as string;
    const manifestFile = path.join(stash, folderOf(id), `${id}.manifest.json`);

    // restore 0, 2
    expectExit(await runCli(['restore', id, '--to', path.join(dir, 'ok.db'), '--output-dir', stash, '--yes']), 0);
    expectExit(await runCli(['restore', id, '--to', path.join(dir, 'unconfirmed.db'), '--output-dir', stash]), 2, /refusing to restore without confirmation/);
    // restore 9: the data restores, but not what the manifest says
    const manifest = JSON.parse(readFileSync(manifestFile, 'utf8'));
    const original = JSON.stringify(manifest, null, 2) + '\n';
    manifest.tables[0].rows += 1;
    writeFileSync(manifestFile, JSON.stringify(manifest, null, 2) + '\n');
    expectExit(await runCli(['restore', id, '--to', path.join(dir, 'mismatch.db'), '--output-dir', stash, '--yes']), 9, /error: restore failed: the restored data does not match the manifest: .*was not touched/);
    writeFileSync(manifestFile, original);
    // verify 8: --deep on a backup without checksums says nothing about the backup
    expectExit(await runCli(['verify', id, '--output-dir', stash, '--deep']), 8);
    // verify 7 and restore 7: a damaged artifact
    const artifact = path.join(stash, folderOf(id), manifest.artifacts[0].file);
    const bytes = readFileSync(artifact);
    bytes[Math.floor(bytes.length / 2)] ^= 0x55;
    writeFileSync(artifact, bytes);
    expectExit(await runCli(['verify', id, '--output-dir', stash]), 7);
    expectExit(await runCli(['restore', id, '--to', path.join(dir, 'damaged.db'), '--output-dir', stash, '--yes']), 7, /checksum mismatch|decod/);
  });
});
