// prune and incomplete multipart uploads on S3 (s3rver on loopback): a backup killed mid-upload
// leaves a pending upload nothing else removes; prune aborts it once it is older than
// --upload-age (24 h by default), reports it in text and --json, leaves it with --dry-run, and
// never touches a younger upload, one in a folder whose lock a running backup holds, or one
// outside the stash's prefix.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import os from 'node:os';
import { CreateMultipartUploadCommand, PutObjectCommand } from '@aws-sdk/client-s3';
import { runCli, spawnCli } from '../harness/run.js';
import { startS3 } from '../harness/s3.js';
import { tempDir } from '../harness/tmp.js';
import { makeSqliteDb, pendingUploads, rawClient, startCutProxy } from '../s3/helpers.js';

const BUCKET = 'stash';
const s3 = await startS3({ buckets: [BUCKET] });
const client = rawClient(s3);
after(async () => {
  client.destroy();
  await s3.stop();
});
const env = (endpoint = s3.endpoint) => ({
  AWS_ACCESS_KEY_ID: s3.accessKeyId,
  AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
  AWS_REGION: s3.region,
  AWS_ENDPOINT_URL_S3: endpoint,
  AWS_ENDPOINT_URL: undefined,
  AWS_PROFILE: undefined,
});
const stash = `s3://${BUCKET}/dbstash`;
const hour = 3600_000;
const ago = (ms: number) => new Date(Date.now() - ms);

async function startUpload(key: string): Promise<string> {
  return (await client.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: key }))).UploadId!;
}

interface Report {
  incompleteUploads: { key: string; uploadId: string; startedAt: string; reason: string; aborted?: boolean }[];
}

test('prune aborts old incomplete multipart uploads, and only those', async () => {
  const dir = tempDir('ops-s3-uploads');
  const db = makeSqliteDb(dir, 'shop', 12);

  // A backup killed (SIGKILL: no chance to abort) while its parts trickle through a slow link.
  const proxy = await startCutProxy(s3, Infinity, 2 * 2 ** 20);
  try {
    const child = spawnCli(['backup', db, '--storage', stash, '--compression', 'none'], { env: env(proxy.endpoint), cwd: dir });
    const exited = once(child, 'exit');
    const deadline = Date.now() + 30_000;
    while (!proxy.requests().some((r) => /partNumber=1&/.test(r))) {
      assert.ok(Date.now() < deadline, 'no part upload started');
      await new Promise((r) => setTimeout(r, 20));
    }
    child.kill('SIGKILL');
    await exited;
  } finally {
    await proxy.close();
  }
  const [killed] = await pendingUploads(client, BUCKET, 'dbstash/');
  assert.ok(/^dbstash\/shop\.[0-9a-f]{8}\/shop\.[0-9a-f]{8}_/.test(killed ?? ''), `the killed backup left its upload pending: ${killed}`);
  const [killedKey, killedId] = killed.split(' ');

  const youngId = await startUpload('dbstash/shop/shop_dev_2026-01-01T00-00-00Z.sqlite');
  const busyId = await startUpload('dbstash/busy/busy_dev_2026-01-01T00-00-00Z.sqlite');
  const lock = { owner: 'test', pid: process.pid, host: os.hostname(), startedAt: new Date().toISOString(), command: 'dbstash backup' };
  await client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'dbstash/busy/dbstash.lock', Body: JSON.stringify(lock) }));
  const elsewhereId = await startUpload('elsewhere/shop/shop_dev_2026-01-01T00-00-00Z.sqlite');
  await s3.backdateUpload(BUCKET, killedId, ago(50 * hour));
  await s3.backdateUpload(BUCKET, youngId, ago(2 * hour));
  await s3.backdateUpload(BUCKET, busyId, ago(50 * hour));
  await s3.backdateUpload(BUCKET, elsewhereId, ago(50 * hour));
  const everything = (await pendingUploads(client, BUCKET)).length;
  assert.equal(everything, 4);

  const dry = await runCli(['prune', '--storage', stash, '--keep-last', '10', '--dry-run', '--json'], { env: env(), cwd: dir });
  assert.equal(dry.code, 0, dry.stderr);
  const [planned] = JSON.parse(dry.stdout).storages as Report[];
  assert.deepEqual(
    planned.incompleteUploads.map((u) => [u.key, u.uploadId, u.aborted]),
    [[killedKey.slice('dbstash/'.length), killedId, undefined]],
  );
  assert.match(planned.incompleteUploads[0].reason, /^incomplete multipart upload, started 50h\d\dm ago$/);
  assert.equal((await pendingUploads(client, BUCKET)).length, everything, '--dry-run aborts nothing');
  const dryText = await runCli(['prune', '--storage', stash, '--keep-last', '10', '--dry-run'], { env: env(), cwd: dir });
  assert.match(dryText.stdout, new RegExp(`abort\\s+shop[.0-9a-f]*/\\S+\\s+upload ${killedId}\\s+incomplete multipart upload`));
  assert.match(dryText.stdout, /would abort 1 incomplete upload,/);

  const real = await runCli(['prune', '--storage', stash, '--keep-last', '10', '--json'], { env: env(), cwd: dir });
  assert.equal(real.code, 0, real.stderr);
  const [done] = JSON.parse(real.stdout).storages as Report[];
  assert.deepEqual(done.incompleteUploads.map((u) => [u.uploadId, u.aborted]), [[killedId, true]]);
  assert.deepEqual(
    (await pendingUploads(client, BUCKET)).map((u) => u.split(' ')[1]).sort(),
    [youngId, busyId, elsewhereId].sort(),
    'the young upload, the one under a held lock and the one outside the stash remain',
  );

  const shorter = await runCli(['prune', '--storage', stash, '--keep-last', '10', '--upload-age', '1h'], { env: env(), cwd: dir });
  assert.equal(shorter.code, 0, shorter.stderr);
  assert.match(shorter.stdout, /aborted 1 incomplete upload,/);
  assert.deepEqual((await pendingUploads(client, BUCKET)).map((u) => u.split(' ')[1]).sort(), [busyId, elsewhereId].sort());

  const bad = await runCli(['prune', '--storage', stash, '--upload-age', 'soon'], { env: env(), cwd: dir });
  assert.equal(bad.code, 2, bad.stderr);
  assert.match(bad.stderr, /--upload-age takes a duration/);
});
