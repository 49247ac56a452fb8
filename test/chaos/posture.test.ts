// A backup is the whole database: as private as the database, and out of reach of whoever breaks
// into the backup host. Against real files and a real S3 emulator:
//   - every file and folder a backup, verify, restore, drill and prune create in a local stash is
//     0600 / 0700 under umask 022 and 000; a group of operators gets 0640 / 0750 when asked, wider
//     only with --allow-world-readable; a stash others can read is reported with the chmod;
//   - a signing key others can read is refused;
//   - append-only credentials (no delete, no overwrite): backups succeed, and a failed or
//     interrupted one leaves nothing visible;
//   - S3 Object Lock headers on every object of a backup (never on locks), prune keeps locked
//     backups and says when they can go, status shows it;
//   - an unencrypted off-site backup is warned about once, unless the config says encryption: none.

import assert from 'node:assert/strict';
import { chmodSync, mkdirSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { expectExit, runCli, spawnCli } from '../harness/run.js';
import { startS3, type S3Server } from '../harness/s3.js';
import { folderOf } from '../harness/stash.js';
import { tempDir } from '../harness/tmp.js';
import { bucketKeys, pendingUploads, rawClient, s3Env } from '../s3/helpers.js';

function sqliteDb(file: string, rows: number, blob = 0): string {
  mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.exec('CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, body TEXT NOT NULL, pad BLOB); DELETE FROM items');
  const insert = db.prepare('INSERT INTO items (body, pad) VALUES (?, randomblob(?))');
  db.transaction(() => {
    for (let i = 0; i < rows; i++) insert.run(`row ${i}`, blob);
  })();
  db.close();
  return file;
}

/** Every file and directory under root with its permission bits, as "relative/path 0600". */
function modes(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(dir)) {
      const full = path.join(dir, name);
      const st = statSync(full);
      out.push(`${path.relative(root, full)}${st.isDirectory() ? '/' : ''} 0${(st.mode & 0o777).toString(8)}`);
      if (st.isDirectory()) walk(full);
    }
  };
  walk(root);
  return out.sort();
}

describe('private by default', () => {
  for (const umask of [0o022, 0o000]) {
    test(`under umask ${umask.toString(8).padStart(3, '0')}, backup, verify, drill, restore and prune create only 0600 files and 0700 folders`, { timeout: 120_000 }, async () => {
      const dir = tempDir('posture-modes');
      const db = sqliteDb(path.join(dir, 'app.db'), 200);
      const stash = path.join(dir, 'stash');
      const opts = { umask };
      const ids: string[] = [];
      for (let i = 0; i < 2; i++) {
        const r = await runCli(['backup', db, '--output-dir', stash, '--json', '--log-file', path.join(dir, 'log.jsonl')], opts);
        expectExit(r, 0);
        ids.push(JSON.parse(r.stdout).id);
        await new Promise((r) => setTimeout(r, 1100));
      }
      expectExit(await runCli(['verify', ids[1], '--output-dir', stash, '--drill'], opts), 0);
      expectExit(await runCli(['restore', ids[1], '--to', path.join(dir, 'restored.db'), '--output-dir', stash, '--yes'], opts), 0);
      expectExit(await runCli(['prune', '--output-dir', stash, '--keep-last', '1', '--yes'], opts), 0);
      const seen = modes(stash);
      assert.ok(seen.some((m) => m.includes('.verify-')) && seen.some((m) => m.includes('.restore-')), seen.join('\n'));
      for (const m of seen) assert.match(m, m.includes('/ ') ? / 0700$/ : / 0600$/, `${m}\n${seen.join('\n')}`);
      assert.match(modes(dir).find((m) => m.startsWith('stash/ '))!, / 0700$/);
      assert.equal(statSync(path.join(dir, 'log.jsonl')).mode & 0o777, 0o600, 'the log file too');
    });
  }

  test('a group of operators: fileMode 0640 and dirMode 0750 when asked; wider only with --allow-world-readable', async () => {
    const dir = tempDir('posture-group');
    const db = sqliteDb(path.join(dir, 'app.db'), 20);
    const stash = path.join(dir, 'stash');
    const config = (modesYaml: string) => {
      writeFileSync(path.join(dir, 'dbstash.yaml'), `storages:\n  local:\n    url: ${stash}\n${modesYaml}`);
      return path.join(dir, 'dbstash.yaml');
    };
    expectExit(await runCli(['backup', db, '--config', config('    fileMode: "0640"\n    dirMode: "0750"\n')], { umask: 0o077 }), 0);
    for (const m of modes(stash)) assert.match(m, m.includes('/ ') ? / 0750$/ : / 0640$/, m);
    const wide = config('    fileMode: "0644"\n    dirMode: "0755"\n');
    expectExit(await runCli(['backup', db, '--config', wide]), 2, /\[local\] fileMode 0644 \/ dirMode 0755 would let others read the stash \(at most 0640 \/ 0750\)/);
    expectExit(await runCli(['backup', db, '--config', wide, '--allow-world-readable']), 0);
    expectExit(await runCli(['backup', db, '--config', config('    fileMode: "0755"\n'), '--allow-world-readable']), 2, /makes backups executable/);
  });

  test('an existing stash others can read is reported, with the chmod that fixes it', async () => {
    const dir = tempDir('posture-open');
    const db = sqliteDb(path.join(dir, 'app.db'), 20);
    const stash = path.join(dir, 'stash');
    const first = await runCli(['backup', db, '--output-dir', stash, '--json']);
    expectExit(first, 0);
    const id = JSON.parse(first.stdout).id as string;
    // As versions before this one left it: 0755 folders, 0644 files.
    chmodSync(stash, 0o755);
    chmodSync(path.join(stash, folderOf(id)), 0o755);
    for (const f of readdirSync(path.join(stash, folderOf(id)))) chmodSync(path.join(stash, folderOf(id), f), 0o644);
    const backup = await runCli(['backup', db, '--output-dir', stash]);
    expectExit(backup, 0, new RegExp(`warning: \\d+ items of the stash ${stash} can be read by other users .*: every backup holds a whole database; to fix: chmod -R go-rwx ${stash}`));
    const status = await runCli(['status', '--output-dir', stash]);
    expectExit(status, 13, new RegExp(`PROBLEM  \\d+ items of the stash ${stash} can be read by other users`));
    const prune = await runCli(['prune', '--output-dir', stash, '--dry-run']);
    expectExit(prune, 0, /can be read by other users/);
    chmodSync(stash, 0o700);
    chmodSync(path.join(stash, folderOf(id)), 0o700);
    for (const f of readdirSync(path.join(stash, folderOf(id)))) chmodSync(path.join(stash, folderOf(id), f), 0o600);
    expectExit(await runCli(['status', '--output-dir', stash]), 0);
  });

  test('a signing key others can read is refused, as ssh refuses such keys', async () => {
    const dir = tempDir('posture-key');
    const key = path.join(dir, 'sign.key');
    expectExit(await runCli(['keygen', '--out', key]), 0);
    assert.equal(statSync(key).mode & 0o777, 0o600);
    chmodSync(key, 0o644);
    const r = await runCli(['backup', sqliteDb(path.join(dir, 'app.db'), 5), '--output-dir', path.join(dir, 'stash'), '--signing-key', key]);
    expectExit(r, 2, new RegExp(`signing key: ${key} can be read or written by other users \\(mode 0644\\); a secret must be private: chmod 600`));
  });
});

describe('out of reach of the backup host', () => {
  let s3: S3Server;
  before(async () => {
    s3 = await startS3({ buckets: ['vault'] });
  });
  after(async () => {
    await s3.stop();
  });
  const config = (dir: string, extra = '', encryption = 'encryption: none\n') => {
    const file = path.join(dir, 'dbstash.yaml');
    writeFileSync(file, `${encryption}storages:\n  vault:\n    url: s3://vault/${path.basename(dir)}\n    endpoint: ${s3.endpoint}\n    forcePathStyle: true\n${extra}`);
    return file;
  };

  test('append-only credentials (no delete, no overwrite): backups succeed; an interrupted one leaves nothing visible', { timeout: 120_000 }, async () => {
    const dir = tempDir('posture-append');
    const denied = s3.failRequests({ when: (r) => r.method === 'DELETE' && r.query.uploadId === undefined, status: 403, code: 'AccessDenied' });
    try {
      const db = sqliteDb(path.join(dir, 'app.db'), 50);
      const cfg = config(dir);
      const dry = await runCli(['backup', db, '--config', cfg, '--dry-run'], { env: s3Env(s3), cwd: dir });
      expectExit(dry, 0, /needs: create new objects, read and list; never overwrite, never delete \(append-only credentials suffice\)/);
      for (let i = 0; i < 2; i++) {
        const r = await runCli(['backup', db, '--config', cfg, '--json'], { env: s3Env(s3), cwd: dir });
        expectExit(r, 0);
        expectExit(await runCli(['verify', JSON.parse(r.stdout).id, '--config', cfg], { env: s3Env(s3), cwd: dir }), 0);
      }
      // Interrupted mid-upload: nothing of it becomes visible, whatever could not be deleted.
      const big = sqliteDb(path.join(dir, 'big.db'), 400, 64 * 1024);
      const child = spawnCli(['backup', big, '--config', cfg, '--compression', 'none'], { env: s3Env(s3), cwd: dir });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
      const deadline = Date.now() + 30_000;
      while ((await pendingUploads(rawClient(s3), 'vault', `${path.basename(dir)}/`)).length === 0) {
        assert.ok(Date.now() < deadline, `no upload started: ${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      child.kill('SIGINT');
      assert.equal(await exited, 130, stderr);
      const keys = await bucketKeys(rawClient(s3), 'vault', `${path.basename(dir)}/`);
      // Its lock and release marker stay (no delete allowed): clutter for prune, never a backup.
      const ofBig = keys.filter((k) => /\/big\.[0-9a-f]{8}\//.test(k) && !k.includes('/locks/'));
      assert.deepEqual(ofBig, [], 'nothing of the interrupted backup is visible');
      const listed = JSON.parse((await runCli(['list', '--config', cfg, '--json'], { env: s3Env(s3), cwd: dir })).stdout);
      assert.equal(listed.backups.length, 2);
      assert.ok(denied() > 0, 'deletes were tried and denied');
    } finally {
      // failRequests rules stay for the server's life: later tests use prefixes of their own and no deletes
    }
  });

  test('S3 Object Lock: every object of a backup is locked, locks and records never; prune keeps what is locked and says until when; status shows it', { timeout: 120_000 }, async () => {
    const dir = tempDir('posture-lock');
    const db = sqliteDb(path.join(dir, 'app.db'), 50);
    const cfg = config(dir, '    objectLock: { mode: governance, days: 30 }\n');
    const before = s3.objectLocks().length;
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const r = await runCli(['backup', db, '--config', cfg, '--json'], { env: s3Env(s3), cwd: dir });
      expectExit(r, 0);
      ids.push(JSON.parse(r.stdout).id);
      await new Promise((r) => setTimeout(r, 1100));
    }
    const locked = s3.objectLocks().slice(before).map((l) => l.key.split('/').pop()!);
    for (const id of ids) {
      assert.ok(locked.includes(`${id}.manifest.json`) && locked.some((k) => k.startsWith(`${id}.sqlite`)), `${id}: ${locked.join(', ')}`);
    }
    assert.ok(!locked.some((k) => k.endsWith('.lock') || k.endsWith('.released') || k === 'series.json'), locked.join(', '));
    assert.ok(s3.objectLocks().slice(before).every((l) => l.mode === 'GOVERNANCE' && Date.parse(l.until) > Date.now() + 29 * 86400_000));
    const prune = await runCli(['prune', '--config', cfg, '--keep-last', '1', '--json'], { env: s3Env(s3), cwd: dir });
    expectExit(prune, 0);
    const older = JSON.parse(prune.stdout).storages[0].backups.find((b: { id: string }) => b.id === ids[0]);
    assert.equal(older.keep, true);
    assert.match(older.reasons[0], /^locked until \d{4}-\d{2}-\d{2}T\S+ \(governance\); prune removes it after that$/);
    const status = await runCli(['status', '--config', cfg], { env: s3Env(s3), cwd: dir });
    assert.match(status.stdout, /ok +new backups are immutable: S3 Object Lock, governance, 30 days/);
  });

  test('an unencrypted off-site backup is warned about once; encryption: none in the config says it is on purpose', { timeout: 60_000 }, async () => {
    const dir = tempDir('posture-plain');
    const db = sqliteDb(path.join(dir, 'app.db'), 10);
    const warned = await runCli(['backup', db, '--config', config(dir, '', '')], { env: s3Env(s3), cwd: dir });
    expectExit(warned, 0);
    assert.equal(warned.stderr.match(/are not encrypted: anyone who can read that storage can read the database/g)?.length, 1, warned.stderr);
    const quiet = await runCli(['backup', db, '--config', config(dir)], { env: s3Env(s3), cwd: dir });
    expectExit(quiet, 0);
    assert.doesNotMatch(quiet.stderr, /not encrypted/);
  });
});
