// Single tables from any stored backup: an age-encrypted, signed SQLite backup kept on S3 (s3rver)
// restores one table beside the live one and exports it, with the identity and the public key;
// without the identity it exits 10 and nothing is created.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { startS3 } from '../harness/s3.js';
import { expectExit, runCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';

const s3 = await startS3({ buckets: ['stash'] });
after(() => s3.stop());
const env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL_S3: s3.endpoint, AWS_ENDPOINT_URL: undefined, AWS_PROFILE: undefined };
const bucket = 's3://stash/dbstash';

describe('single tables from an encrypted, signed backup on S3', () => {
  test('restore --table and export with --identity and --verify-key; without the identity, exit 10 and nothing created', async () => {
    const dir = tempDir('dbstash-tables-stored');
    const file = path.join(dir, 'app.db');
    const db = new Database(file);
    db.exec(`CREATE TABLE kv (k TEXT PRIMARY KEY, v BLOB); INSERT INTO kv VALUES ('a', X'01'), ('b', X'02'), ('c', NULL);`);
    db.close();
    const identity = path.join(dir, 'age.key');
    execFileSync('age-keygen', ['-o', identity], { stdio: 'pipe' });
    const recipient = execFileSync('age-keygen', ['-y', identity], { encoding: 'utf8' }).trim();
    const signing = path.join(dir, 'sign.key');
    expectExit(await runCli(['keygen', '--out', signing], { cwd: dir }), 0);
    const b = await runCli(['backup', file, '--storage', bucket, '--recipient', recipient, '--signing-key', signing, '--json'], { env, cwd: dir });
    expectExit(b, 0);
    const id = JSON.parse(b.stdout).id as string;
    const live = new Database(file);
    live.exec(`DELETE FROM kv`);
    live.close();

    const locked = await runCli(['restore', id, '--table', 'kv', '--to', file, '--storage', bucket, '--verify-key', `${signing}.pub`, '--yes'], { env, cwd: dir });
    expectExit(locked, 10);
    assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.db')), ['app.db']);

    const r = await runCli(['restore', id, '--table', 'kv', '--to', file, '--storage', bucket, '--identity', identity, '--verify-key', `${signing}.pub`, '--yes'], { env, cwd: dir });
    expectExit(r, 0);
    const name = /main\.kv → (kv__restored_\d{8}_\d{6}) \(3 rows\)/.exec(r.stdout)?.[1];
    assert.ok(name, r.stdout);
    const check = new Database(file);
    try {
      assert.deepEqual(check.prepare(`SELECT k, hex(v) AS v FROM "${name}" ORDER BY k`).all(), [{ k: 'a', v: '01' }, { k: 'b', v: '02' }, { k: 'c', v: '' }]);
      assert.equal(check.prepare('SELECT count(*) FROM kv').pluck().get(), 0);
    } finally {
      check.close();
    }
    const out = await runCli(['export', id, '--table', 'kv', '--format', 'csv', '--storage', bucket, '--identity', identity, '--verify-key', `${signing}.pub`], { env, cwd: dir });
    expectExit(out, 0);
    assert.equal(out.stdout, 'k,v\r\na,AQ==\r\nb,Ag==\r\nc,\r\n');
  });
});
