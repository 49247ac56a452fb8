// Reading the stash from S3: verify and restore an encrypted backup stored there, the first
// storage holding an intact copy when a local copy is damaged, and `dbstash copy` between a
// local stash and S3 with its hash checks.

import { before, after, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, truncateSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { S3Client } from '@aws-sdk/client-s3';
import { runCli } from '../harness/run.js';
import { startS3, type S3Server } from '../harness/s3.js';
import { tempDir } from '../harness/tmp.js';
import { bucketKeys, makeSqliteDb, objectSha256, rawClient, s3Env, writeConfig } from './helpers.js';
import { seriesDir, folderOf } from '../harness/stash.js';

const BUCKET = 'stash';
let server: S3Server;
let client: S3Client;
let dir: string;
let db: string;
let cfg: string;
let keyFile: string;
let recipient: string;
let env: Record<string, string | undefined>;

function rowsIn(file: string, table: string): number {
  const handle = new Database(file, { readonly: true });
  try {
    return (handle.prepare(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
  } finally {
    handle.close();
  }
}

before(async () => {
  server = await startS3({ buckets: [BUCKET] });
  client = rawClient(server);
  env = s3Env(server);
  dir = tempDir('dbstash-s3-restore');
  db = makeSqliteDb(dir, 'shop', 6);
  keyFile = path.join(dir, 'age.key');
  execFileSync('age-keygen', ['-o', keyFile], { stdio: 'pipe' });
  recipient = execFileSync('age-keygen', ['-y', keyFile], { encoding: 'utf8' }).trim();
  cfg = writeConfig(
    dir,
    `storages:
  s3main:
    url: s3://${BUCKET}/dbs
    endpoint: ${server.endpoint}
    partSizeMiB: 5
  copied:
    url: s3://${BUCKET}/copied
    endpoint: ${server.endpoint}
`,
  );
});
after(async () => {
  client?.destroy();
  await server?.stop();
});

describe('verify, restore and copy with S3', () => {
  let id: string;
  let artifactFile: string;
  let folder: string;
  const local = () => path.join(dir, 'local');

  it('an encrypted backup in S3 verifies and restores from S3', async () => {
    const res = await runCli(['backup', db, '--output-dir', local(), '--storage', 's3main', '--config', cfg, '--recipient', recipient, '--json'], { env, cwd: dir });
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    id = out.id;
    artifactFile = out.manifest.artifacts[0].file;
    folder = out.manifest.series.key;

    const verify = await runCli(['verify', id, '--storage', 's3main', '--config', cfg, '--identity', keyFile, '--json'], { env, cwd: dir });
    assert.equal(verify.code, 0, verify.stderr);
    assert.ok((await bucketKeys(client, BUCKET, `dbs/${folderOf(id)}/${id}.verify-`)).length === 1, 'the verification record was written to S3');

    const target = path.join(dir, 'from-s3.db');
    const restore = await runCli(['restore', id, '--storage', 's3main', '--config', cfg, '--identity', keyFile, '--to', target, '--yes'], { env, cwd: dir });
    assert.equal(restore.code, 0, restore.stderr);
    assert.equal(rowsIn(target, 'blobs'), 6);
    assert.equal(rowsIn(target, 'notes'), 100);
  });

  it('takes the first storage holding an intact copy: a truncated local copy is passed over for S3', async () => {
    const localArtifact = path.join(seriesDir(local(), 'shop'), artifactFile);
    truncateSync(localArtifact, 1000);
    const both = await runCli(['verify', id, '--output-dir', local(), '--storage', 's3main', '--config', cfg, '--identity', keyFile], { env, cwd: dir });
    assert.equal(both.code, 0, both.stderr);
    assert.match(both.stderr, /artifact .* is 1000 bytes, manifest says .*trying the next storage/);
    assert.match(both.stderr, /verifying .* in s3:\/\/stash\/dbs/);
    const onlyLocal = await runCli(['verify', id, '--output-dir', local(), '--config', cfg, '--identity', keyFile], { env, cwd: dir });
    assert.equal(onlyLocal.code, 7, onlyLocal.stderr);
  });

  it('copy <id> from S3 to another prefix checks hashes and publishes the manifest last', async () => {
    const res = await runCli(['copy', id, '--from', 's3main', '--to', 'copied', '--config', cfg, '--json'], { env, cwd: dir });
    assert.equal(res.code, 0, res.stderr);
    const original = await objectSha256(client, BUCKET, `dbs/${folder}/${artifactFile}`);
    const copy = await objectSha256(client, BUCKET, `copied/${folder}/${artifactFile}`);
    assert.equal(copy.sha256, original.sha256);
    const verify = await runCli(['verify', id, '--storage', 'copied', '--config', cfg, '--identity', keyFile], { env, cwd: dir });
    assert.equal(verify.code, 0, verify.stderr);
    const again = await runCli(['copy', id, '--from', 's3main', '--to', 'copied', '--config', cfg], { env, cwd: dir });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr, /already in s3:\/\/stash\/copied/);
  });

  it('copy --missing seeds the target with what it lacks; a damaged source copy fails (exit 7) and leaves nothing', async () => {
    const seed = path.join(dir, 'seed');
    const ids: string[] = [];
    for (let i = 0; i < 2; i++) {
      const res = await runCli(['backup', db, '--output-dir', seed, '--json'], { env, cwd: dir });
      assert.equal(res.code, 0, res.stderr);
      ids.push(JSON.parse(res.stdout).id);
    }
    const res = await runCli(['copy', '--missing', '--from', seed, '--to', 'copied', '--config', cfg, '--json'], { env, cwd: dir });
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(JSON.parse(res.stdout).results.map((r: { id: string; result: string }) => [r.id, r.result]), ids.map((i) => [i, 'copied']));
    const none = await runCli(['copy', '--missing', '--from', seed, '--to', 'copied', '--config', cfg], { env, cwd: dir });
    assert.equal(none.code, 0, none.stderr);
    assert.match(none.stdout, /already holds every backup/);

    const third = await runCli(['backup', db, '--output-dir', seed, '--json'], { env, cwd: dir });
    const bad = JSON.parse(third.stdout);
    const artifact = path.join(seriesDir(seed, 'shop'), bad.manifest.artifacts[0].file);
    const bytes = readFileSync(artifact);
    bytes[bytes.length >> 1] ^= 0xff;
    writeFileSync(artifact, bytes);
    const failed = await runCli(['copy', bad.id, '--from', seed, '--to', 'copied', '--config', cfg], { env, cwd: dir });
    assert.equal(failed.code, 7, failed.stderr);
    assert.match(failed.stderr, /^error: .* does not match its manifest/m);
    assert.deepEqual(await bucketKeys(client, BUCKET, `copied/${folderOf(bad.id)}/${bad.id}`), [], 'nothing of the damaged backup reached the target');
    assert.ok(existsSync(artifact));
  });

  it('prune and status work against S3 as against a directory', async () => {
    const before = await runCli(['list', '--storage', 'copied', '--config', cfg, '--json'], { env, cwd: dir });
    const ids = JSON.parse(before.stdout).backups.map((b: { id: string }) => b.id);
    assert.ok(ids.length >= 3, before.stdout);
    const prune = await runCli(['prune', '--storage', 'copied', '--config', cfg, '--keep-last', '1', '--yes'], { env, cwd: dir });
    assert.equal(prune.code, 0, prune.stderr);
    const after = await runCli(['list', '--storage', 'copied', '--config', cfg, '--json'], { env, cwd: dir });
    const kept: string[] = JSON.parse(after.stdout).backups.map((b: { id: string }) => b.id);
    assert.ok(kept.length < ids.length && kept.includes(ids[0]), `the newest is kept and something was removed: ${kept.join(', ')}`);
    const keys = await bucketKeys(client, BUCKET, 'copied/');
    for (const key of keys.filter((k) => !k.endsWith('/series.json'))) assert.ok(kept.some((k) => key.includes(k)), `${key} belongs to a kept backup`);
    const status = await runCli(['status', '--storage', 'copied', '--config', cfg], { env, cwd: dir });
    assert.match(status.stdout, /s3:\/\/stash\/copied.*reachable/);
  });
});
