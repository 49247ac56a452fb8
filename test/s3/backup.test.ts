// Backups to S3 through the CLI, against a real S3 HTTP server (s3rver): a multipart artifact
// that round-trips byte-exact, list from S3, one dump fanned out to a local directory and S3,
// an optional destination that fails (degraded, exit 12), the server going away mid-upload,
// wrong credentials and a missing bucket.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, statSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { once } from 'node:events';
import { runCli, spawnCli } from '../harness/run.js';
import { startS3, type S3Server } from '../harness/s3.js';
import { tempDir } from '../harness/tmp.js';
import { bucketKeys, makeSqliteDb, objectSha256, pendingUploads, rawClient, s3Env, startCutProxy, writeConfig } from './helpers.js';

const BUCKET = 'stash';
let server: S3Server;
let client: S3Client;
let dir: string;
let db: string;

function config(extra = ''): string {
  return writeConfig(
    dir,
    `storages:
  s3main:
    url: s3://${BUCKET}/dbs
    endpoint: ${server.endpoint}
    partSizeMiB: 5
  nobucket:
    url: s3://no-such-bucket/dbs
    endpoint: ${server.endpoint}
${extra}`,
  );
}

function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

before(async () => {
  server = await startS3({ buckets: [BUCKET] });
  client = rawClient(server);
  dir = tempDir('dbstash-s3-backup');
  db = makeSqliteDb(dir, 'shop', 12);
});
after(async () => {
  client?.destroy();
  await server?.stop();
});

describe('backup to S3', () => {
  it('writes a multipart artifact that round-trips byte-exact, and list reads it from S3', async () => {
    const proxy = await startCutProxy(server);
    const cfg = config(`  counted:
    url: s3://${BUCKET}/dbs
    endpoint: ${proxy.endpoint}
    partSizeMiB: 5
`);
    const res = await runCli(['backup', db, '--storage', 'counted', '--config', cfg, '--json', '--compression', 'none'], { env: s3Env(server), cwd: dir });
    await proxy.close();
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    const main = out.manifest.artifacts[0];
    const key = `dbs/${out.manifest.series.key}/${main.file}`;
    const stored = await objectSha256(client, BUCKET, key);
    assert.equal(stored.size, main.size);
    assert.equal(stored.sha256, main.sha256);
    const parts = proxy.requests().filter((r) => r.startsWith(`PUT /${BUCKET}/${key}?partNumber=`));
    assert.equal(parts.length, 3, `three 5 MiB parts for ${main.size} bytes: ${parts.join(', ')}`);
    const keys = await bucketKeys(client, BUCKET, 'dbs/');
    assert.ok(keys.includes(`dbs/${out.manifest.series.key}/${out.id}.manifest.json`));
    assert.ok(!keys.some((k) => k.includes('/locks/')), 'the lock was released');

    const list = await runCli(['list', '--storage', 's3main', '--config', cfg, '--json'], { env: s3Env(server), cwd: dir });
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(
      JSON.parse(list.stdout).backups.map((b: { id: string }) => b.id),
      [out.id],
    );
  });

  it('fans one dump out to a local directory and S3: both copies are identical', async () => {
    const local = path.join(dir, 'fan-local');
    const res = await runCli(['backup', db, '--output-dir', local, '--storage', 's3main', '--config', config(), '--json'], { env: s3Env(server), cwd: dir });
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    assert.deepEqual(out.stored, ['local', 's3main']);
    const main = out.manifest.artifacts[0];
    const name = out.manifest.series.key;
    assert.equal(sha256File(path.join(local, name, main.file)), main.sha256);
    assert.equal((await objectSha256(client, BUCKET, `dbs/${name}/${main.file}`)).sha256, main.sha256);
  });

  it('an optional destination that fails mid-upload leaves a degraded backup (exit 12) and the required copy intact', async () => {
    const proxy = await startCutProxy(server, 7 * 2 ** 20);
    try {
      const cfg = config(`  flaky:
    url: s3://${BUCKET}/flaky
    endpoint: ${proxy.endpoint}
    partSizeMiB: 5
    optional: true
`);
      const local = path.join(dir, 'degraded-local');
      const res = await runCli(['backup', db, '--output-dir', local, '--storage', 'flaky', '--config', cfg, '--json', '--compression', 'none'], {
        env: s3Env(server),
        cwd: dir,
      });
      assert.equal(res.code, 12, res.stderr);
      assert.ok(proxy.cut(), 'the proxy cut the upload');
      assert.match(res.stderr, /optional destination flaky failed/);
      const out = JSON.parse(res.stdout);
      assert.equal(out.degraded, true);
      assert.deepEqual(out.stored, ['local']);
      assert.equal(out.manifest.extra.degraded[0].name, 'flaky');
      const main = out.manifest.artifacts[0];
      assert.equal(sha256File(path.join(local, out.manifest.series.key, main.file)), main.sha256);
      assert.deepEqual(await bucketKeys(client, BUCKET, 'flaky/'), [], 'nothing visible in the failed destination');

      const list = await runCli(['list', '--output-dir', local, '--config', cfg], { env: s3Env(server), cwd: dir });
      assert.equal(list.code, 0, list.stderr);
      assert.match(list.stdout, new RegExp(`${out.id} \\(degraded\\)`));
    } finally {
      await proxy.close();
    }
  });

  it('an optional destination whose bucket is missing is skipped at preflight: degraded, exit 12', async () => {
    const cfg = config(`  optmissing:
    url: s3://no-such-bucket/x
    endpoint: ${server.endpoint}
    optional: true
`);
    const local = path.join(dir, 'optmissing-local');
    const res = await runCli(['backup', db, '--output-dir', local, '--storage', 'optmissing', '--config', cfg, '--json'], { env: s3Env(server), cwd: dir });
    assert.equal(res.code, 12, res.stderr);
    assert.match(res.stderr, /bucket "no-such-bucket" does not exist/);
    const out = JSON.parse(res.stdout);
    assert.equal(sha256File(path.join(local, out.manifest.series.key, out.manifest.artifacts[0].file)), out.manifest.artifacts[0].sha256);
  });

  it('the server going away mid-upload to a required destination: clean failure, no object, lock released, local stash unaffected', async () => {
    const local = path.join(dir, 'cut-local');
    const first = await runCli(['backup', db, '--output-dir', local, '--json'], { env: s3Env(server), cwd: dir });
    assert.equal(first.code, 0, first.stderr);
    const earlier = JSON.parse(first.stdout);
    const name = earlier.manifest.series.key;
    const before = readdirSync(path.join(local, name)).sort();

    const proxy = await startCutProxy(server, 7 * 2 ** 20);
    try {
      const cfg = config(`  cut:
    url: s3://${BUCKET}/cut
    endpoint: ${proxy.endpoint}
    partSizeMiB: 5
`);
      const res = await runCli(['backup', db, '--output-dir', local, '--storage', 'cut', '--config', cfg, '--compression', 'none'], {
        env: s3Env(server),
        cwd: dir,
        timeoutMs: 90_000,
      });
      assert.ok(proxy.cut(), 'the proxy cut the upload');
      assert.equal(res.code, 11, res.stderr);
      assert.match(res.stderr, /^error: \[s3\] .*cannot reach the S3 endpoint/m);
      assert.match(res.stderr, /^hint: /m);
      assert.doesNotMatch(res.stderr, /\n\s+at /, 'no stack trace without --debug');
    } finally {
      await proxy.close();
    }
    assert.deepEqual(await bucketKeys(client, BUCKET, 'cut/'), [], 'no object became visible');
    assert.deepEqual(readdirSync(path.join(local, name)).sort(), before, 'the local stash holds exactly what it held before');
    assert.ok(!existsSync(path.join(local, name, 'locks')) || readdirSync(path.join(local, name, 'locks')).length === 0, 'the lock was released');
    const list = await runCli(['list', '--output-dir', local, '--json'], { cwd: dir });
    assert.deepEqual(
      JSON.parse(list.stdout).backups.map((b: { id: string }) => b.id),
      [earlier.id],
    );
  });

  it('s3rver itself stopped mid-upload: clean failure (exit 11), lock released, local stash unaffected', async () => {
    const doomed = await startS3({ buckets: [BUCKET] });
    const watch = await startCutProxy(doomed);
    const local = path.join(dir, 'stopped-local');
    try {
      const cfg = config(`  doomed:
    url: s3://${BUCKET}/doomed
    endpoint: ${watch.endpoint}
    partSizeMiB: 5
`);
      const child = spawnCli(['backup', db, '--output-dir', local, '--storage', 'doomed', '--config', cfg, '--compression', 'none'], { env: s3Env(doomed), cwd: dir });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
      const exited = once(child, 'exit');
      const deadline = Date.now() + 30_000;
      while (!watch.requests().some((r) => /partNumber=1&/.test(r))) {
        assert.ok(Date.now() < deadline, `no part upload started: ${stderr}`);
        await new Promise((r) => setTimeout(r, 20));
      }
      await doomed.stop();
      const [code] = await exited;
      assert.equal(code, 11, stderr);
      assert.match(stderr, /^error: \[s3\] /m);
      assert.match(stderr, /^hint: /m);
    } finally {
      await watch.close();
      await doomed.stop();
    }
    const name = readdirSync(local)[0];
    const files = (readdirSync(path.join(local, name), { recursive: true }) as string[]).filter((f) => statSync(path.join(local, name, f)).isFile());
    assert.deepEqual(files, [], 'no artifact, manifest or lock left in the local destination');
  });

  it('the server going away when S3 holds the lock: the lock left behind is recognised as stale by the next run', async () => {
    const proxy = await startCutProxy(server, 7 * 2 ** 20);
    const cfg = config(`  viaproxy:
    url: s3://${BUCKET}/stale
    endpoint: ${proxy.endpoint}
    partSizeMiB: 5
  direct:
    url: s3://${BUCKET}/stale
    endpoint: ${server.endpoint}
`);
    try {
      const res = await runCli(['backup', db, '--storage', 'viaproxy', '--config', cfg, '--compression', 'none'], { env: s3Env(server), cwd: dir, timeoutMs: 90_000 });
      assert.equal(res.code, 11, res.stderr);
      assert.match(res.stderr, /could not release the lock/);
    } finally {
      await proxy.close();
    }
    const left = await bucketKeys(client, BUCKET, 'stale/');
    assert.equal(left.length, 1, `only the lock remains, no artifact: ${left.join(', ')}`);
    assert.match(left[0], /^stale\/shop\.[0-9a-f]{8}\/locks\/\S+\.lock$/);
    const next = await runCli(['backup', db, '--storage', 'direct', '--config', cfg], { env: s3Env(server), cwd: dir });
    assert.equal(next.code, 0, next.stderr);
    assert.match(next.stderr, /ignoring a stale lock/);
    assert.ok(!(await bucketKeys(client, BUCKET, 'stale/')).some((k) => k.includes('/locks/')), 'the stale lock is cleared by the next run');
  });

  it('SIGINT mid-upload: exit 130, the multipart upload is aborted, nothing is left in the bucket', async () => {
    const proxy = await startCutProxy(server, Infinity, 4 * 2 ** 20);
    try {
      const cfg = config(`  slow:
    url: s3://${BUCKET}/slow
    endpoint: ${proxy.endpoint}
    partSizeMiB: 5
`);
      const child = spawnCli(['backup', db, '--storage', 'slow', '--config', cfg, '--compression', 'none'], { env: s3Env(server), cwd: dir });
      let stderr = '';
      child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
      const exited = once(child, 'exit');
      const deadline = Date.now() + 30_000;
      while (!proxy.requests().some((r) => /partNumber=1&/.test(r))) {
        assert.ok(Date.now() < deadline, `no part upload started: ${stderr}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      child.kill('SIGINT');
      const [code] = await exited;
      assert.equal(code, 130, stderr);
      assert.match(stderr, /interrupted by SIGINT/);
      assert.ok(
        proxy.requests().some((r) => /^DELETE \/stash\/slow\/shop\.[0-9a-f]{8}\/\S+\?uploadId=/.test(r)),
        `AbortMultipartUpload was sent: ${proxy.requests().join('\n')}`,
      );
      assert.deepEqual(await bucketKeys(client, BUCKET, 'slow/'), [], 'neither artifact nor lock remains');
      assert.deepEqual(await pendingUploads(client, BUCKET, 'slow/'), [], 'no multipart upload is left pending');
    } finally {
      await proxy.close();
    }
  });

  it('wrong credentials: a clear message naming the variables to fix', async () => {
    // s3rver checks access key ids but not SigV4 signatures, so an unknown key id is the wrong
    // credential it can detect.
    const cfg = config();
    const unknown = s3Env(server, { AWS_ACCESS_KEY_ID: 'NOBODY' });
    const res = await runCli(['backup', db, '--storage', 's3main', '--config', cfg], { env: unknown, cwd: dir });
    assert.equal(res.code, 4, res.stderr);
    assert.match(res.stderr, /^error: destination s3main .*the access key is not known/m);
    assert.match(res.stderr, /^hint: check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY/m);

    const list = await runCli(['list', '--storage', 's3main', '--config', cfg], { env: unknown, cwd: dir });
    assert.equal(list.code, 11, list.stderr);
    assert.match(list.stderr, /^error: \[s3\] .*the access key is not known/m);
    assert.match(list.stderr, /^hint: .*AWS_ACCESS_KEY_ID/m);
    assert.deepEqual((await bucketKeys(client, BUCKET, 'dbs/')).filter((k) => k.includes('/locks/')), []);
  });

  it('sends storage class and server-side encryption, and for a custom endpoint no streamed checksums', async () => {
    const proxy = await startCutProxy(server);
    try {
      const cfg = config(`  wire:
    url: s3://${BUCKET}/wire
    endpoint: ${proxy.endpoint}
    partSizeMiB: 5
    storageClass: STANDARD_IA
    sse: AES256
`);
      const res = await runCli(['backup', db, '--storage', 'wire', '--config', cfg, '--compression', 'none'], { env: s3Env(server), cwd: dir });
      assert.equal(res.code, 0, res.stderr);
      const heads = proxy.heads();
      const create = heads.find((h) => /^POST \S+\.sqlite\?uploads/.test(h));
      const manifest = heads.find((h) => /^PUT \S+\.manifest\.json\?/.test(h));
      const part = heads.find((h) => /^PUT \S+partNumber=1&/.test(h));
      for (const head of [create, manifest]) {
        assert.ok(head, heads.join('\n\n'));
        assert.match(head, /^x-amz-storage-class: STANDARD_IA$/m);
        assert.match(head, /^x-amz-server-side-encryption: AES256$/m);
      }
      assert.match(manifest!, /^x-amz-meta-sha256: [0-9a-f]{64}$/m, 'buffered objects carry their SHA-256');
      assert.ok(part);
      assert.doesNotMatch(part, /aws-chunked|x-amz-checksum-|x-amz-sdk-checksum-algorithm|x-amz-trailer/, 'checksums only when required');
    } finally {
      await proxy.close();
    }
  });

  it('the endpoint from AWS_ENDPOINT_URL_S3 alone: s3:// URLs work without a config file', async () => {
    const env = s3Env(server, { AWS_ENDPOINT_URL_S3: server.endpoint });
    const res = await runCli(['backup', db, '--storage', `s3://${BUCKET}/from-env`, '--json'], { env, cwd: dir });
    assert.equal(res.code, 0, res.stderr);
    const out = JSON.parse(res.stdout);
    assert.ok((await bucketKeys(client, BUCKET, 'from-env/')).includes(`from-env/${out.manifest.series.key}/${out.id}.manifest.json`));
    const list = await runCli(['list', '--storage', `s3://${BUCKET}/from-env`, '--json'], { env, cwd: dir });
    assert.deepEqual(JSON.parse(list.stdout).backups.map((b: { id: string }) => b.id), [out.id]);
  });

  it('a mistyped storage option is a config error naming the option and the valid values', async () => {
    const cfg = config(`  typo:
    url: s3://${BUCKET}/typo
    endpoint: ${server.endpoint}
    sse: AES257
`);
    const res = await runCli(['backup', db, '--storage', 'typo', '--config', cfg], { env: s3Env(server), cwd: dir });
    assert.equal(res.code, 2, res.stderr);
    assert.match(res.stderr, /^error: \[s3\] option "sse": .*AES256.*aws:kms/m);
    assert.match(res.stderr, /^hint: valid options: preset, endpoint, region, forcePathStyle/m);
  });

  it('a missing bucket: a clear message saying to create it, nothing written', async () => {
    const res = await runCli(['backup', db, '--storage', 'nobucket', '--config', config()], { env: s3Env(server), cwd: dir });
    assert.equal(res.code, 4, res.stderr);
    assert.match(res.stderr, /error: .*bucket "no-such-bucket" does not exist/);
    assert.match(res.stderr, /hint: create the bucket/);
  });
});

describe('WAL archive in S3', () => {
  it('wal push stores a segment in S3 (again: a success; other bytes: refused), wal get brings it back byte-exact, a missing one exits 1', async () => {
    const { mkdirSync, writeFileSync } = await import('node:fs');
    const { randomBytes } = await import('node:crypto');
    const cfg = config(`databases:
  pg:
    url: postgres://postgres@127.0.0.1:1/postgres
    physical: true
    storages: [s3main]
`);
    const walDir = path.join(dir, 'pg_wal');
    mkdirSync(walDir, { recursive: true });
    const name = '000000010000000000000005';
    const segment = path.join(walDir, name);
    // Half random, half zeros: large enough for a multipart upload after compression.
    writeFileSync(segment, Buffer.concat([randomBytes(8 * 2 ** 20), Buffer.alloc(8 * 2 ** 20)]));
    const push = () => runCli(['wal', 'push', `pg_wal/${name}`, '--database', 'pg', '--config', cfg], { env: s3Env(server), cwd: dir });
    const first = await push();
    assert.equal(first.code, 0, first.stderr);
    const keys = (await bucketKeys(client, BUCKET, 'dbs/')).filter((k) => k.includes('/wal/'));
    assert.deepEqual(keys.map((k) => k.replace(/^dbs\/[^/]+\//, '')), [`wal/0000000100000000/${name}-${sha256File(segment)}.zst`]);
    assert.deepEqual(await pendingUploads(client, BUCKET, 'dbs/'), [], 'no multipart upload left open');
    const again = await push();
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stderr + again.stdout, /already archived/);

    const original = readFileSync(segment);
    writeFileSync(segment, randomBytes(16 * 2 ** 20));
    const other = await push();
    assert.equal(other.code, 7, other.stderr);
    assert.match(other.stderr, new RegExp(`${name} is already archived in s3://${BUCKET}/dbs with other contents`));
    writeFileSync(segment, original);

    const out = path.join(dir, 'restored');
    mkdirSync(out, { recursive: true });
    const get = await runCli(['wal', 'get', name, path.join(out, 'RECOVERYXLOG'), '--database', 'pg', '--config', cfg], { env: s3Env(server), cwd: dir });
    assert.equal(get.code, 0, get.stderr);
    assert.equal(sha256File(path.join(out, 'RECOVERYXLOG')), sha256File(segment));
    const missing = await runCli(['wal', 'get', '000000010000000000000006', path.join(out, 'RECOVERYXLOG2'), '--database', 'pg', '--config', cfg], { env: s3Env(server), cwd: dir });
    assert.equal(missing.code, 1, missing.stderr);
    assert.ok(!existsSync(path.join(out, 'RECOVERYXLOG2')), 'nothing written for a missing segment');
  });
});
