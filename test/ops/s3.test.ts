// prune and status against an S3-compatible store (s3rver on loopback), exactly as against a
// local directory: a stash copied into the bucket is pruned by the same policy, and status reads
// it — and reports it unreachable once the store is gone.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { startS3 } from '../harness/s3.js';
import { runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { cloneBackup, makeSqliteDb } from './helpers.js';

const s3 = await startS3({ buckets: ['stash'] });
after(() => s3.stop());
const env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL_S3: s3.endpoint, AWS_ENDPOINT_URL: undefined, AWS_PROFILE: undefined };
const bucket = 's3://stash/dbstash';

test('prune and status work on an S3 stash as on a local one', async () => {
  const dir = tempDir('ops-s3');
  const local = path.join(dir, 'local');
  const first = await runCli(['backup', makeSqliteDb(path.join(dir, 'shop.db'), 100), '--output-dir', local, '--env', 'prod', '--json']);
  assert.equal(first.code, 0, first.stderr);
  const source = JSON.parse(first.stdout).id as string;
  const ids = [1, 2, 3, 4].map((d) => cloneBackup(local, source, new Date(Date.UTC(2026, 0, d, 12))));
  const copy = await runCli(['copy', '--missing', '--from', local, '--to', bucket], { env });
  assert.equal(copy.code, 0, copy.stderr);

  const dry = await runCli(['prune', '--storage', bucket, '--keep-last', '2', '--dry-run', '--json'], { env });
  assert.equal(dry.code, 0, dry.stderr);
  const [report] = JSON.parse(dry.stdout).storages;
  assert.deepEqual(
    report.backups.map((b: { id: string; keep: boolean }) => [b.id, b.keep]),
    [[source, true], [ids[3], true], [ids[2], false], [ids[1], false], [ids[0], false]],
  );
  assert.ok(report.bytesFreed > 0);

  const real = await runCli(['prune', '--storage', bucket, '--keep-last', '2'], { env });
  assert.equal(real.code, 0, real.stderr);
  assert.match(real.stdout, /removed 3 backups and 0 leftovers/);
  const list = await runCli(['list', '--storage', bucket, '--json'], { env });
  assert.deepEqual(JSON.parse(list.stdout).backups.map((b: { id: string }) => b.id), [source, ids[3]]);
  const objects = readdirSync(s3.directory, { recursive: true, encoding: 'utf8' }).filter((f) => f.includes('dbstash/shop/') && !f.endsWith('._S3rver_metadata.json') && !f.endsWith('._S3rver_object.md5'));
  assert.ok(objects.every((f) => f.includes(source) || f.includes(ids[3])), `only the kept backups' objects remain: ${objects}`);

  const ok = await runCli(['status', '--storage', bucket, '--json', '--max-age', '1h'], { env });
  assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  const status = JSON.parse(ok.stdout);
  assert.equal(status.storages[0].reachable, true);
  assert.equal(status.databases[0].newest.id, source);

  await s3.stop();
  const down = await runCli(['status', '--storage', bucket, '--json'], { env, timeoutMs: 120_000 });
  assert.equal(down.code, 13, down.stderr);
  assert.equal(JSON.parse(down.stdout).storages[0].reachable, false);
});
