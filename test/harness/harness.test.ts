/**
 * Tests of the test harness itself: every server starts, answers, enforces its
 * credentials and leaves nothing behind, whether stopped, or its test process is
 * interrupted. A missing server binary fails these tests; nothing here skips.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import mysql from 'mysql2/promise';
import nodemailer from 'nodemailer';
import pg from 'pg';
import { fixturePath } from './fixtures.js';
import { startMariadb, type MariaServer } from './mariadb.js';
import { startPostgres, type PgServer } from './postgres.js';
import { isRunning } from './proc.js';
import { startSmtpReceiver, startWebhookReceiver } from './receivers.js';
import { CLI_PATH } from './run.js';
import { startS3 } from './s3.js';
import { tempDir } from './tmp.js';

/** Whether the process is gone, allowing it a moment to finish exiting. */
async function exits(pid: number, timeoutMs = 3000): Promise<boolean> {
  for (const deadline = Date.now() + timeoutMs; Date.now() < deadline; await sleep(20)) {
    if (!isRunning(pid)) return true;
  }
  return false;
}

describe('postgres', () => {
  let server: PgServer;
  before(async () => {
    server = await startPostgres();
  });
  after(() => server?.stop());

  test('loads pg-rich.sql', async () => {
    await server.createDatabase('rich');
    await server.psqlFile(fixturePath('pg-rich.sql'), 'rich');
    const { rows } = await server.query(`
      SELECT (SELECT count(*) FROM public.big)::int AS big,
             (SELECT count(*) FROM sales.events_2024_q1)::int AS q1,
             (SELECT count(*) FROM sales.events_2024_q2)::int AS q2,
             (SELECT count(*) FROM sales.events_2024_q3)::int AS q3,
             (SELECT count(*) FROM audit.log)::int AS audit,
             (SELECT length(lo_get(content)) FROM public.attachment WHERE name = 'every-byte.bin') AS lo_bytes`, 'rich');
    assert.deepEqual(rows[0], { big: 100000, q1: 1000, q2: 1000, q3: 1000, audit: 550, lo_bytes: 256 });
  });

  test('rejects a wrong password over TCP', async () => {
    const client = new pg.Client({ host: server.host, port: server.port, user: 'postgres', password: 'wrong', database: 'postgres' });
    await assert.rejects(client.connect(), /password authentication failed/);
  });

  test('psqlFile reports the failing statement', async () => {
    const bad = path.join(tempDir('dbstash-harness-test'), 'bad.sql');
    writeFileSync(bad, 'SELECT 1;\nSELECT * FROM no_such_table;\n');
    await assert.rejects(server.psqlFile(bad), /no_such_table/);
  });

  test('stop() ends the postmaster and removes its dir', async () => {
    const other = await startPostgres({ password: "p@ss w'rd/:" });
    const client = new pg.Client({ connectionString: other.url() });
    await client.connect();
    assert.deepEqual((await client.query('SELECT current_user AS u')).rows, [{ u: 'postgres' }]);
    await client.end();
    assert.ok(isRunning(other.pid));
    await other.stop();
    assert.ok(await exits(other.pid));
    assert.equal(existsSync(other.dataDir), false);
    await other.stop();
  });

  test('stop() cleans up after a postmaster that was killed', async () => {
    const other = await startPostgres();
    process.kill(other.pid, 'SIGKILL');
    await other.stop();
    assert.equal(existsSync(other.dataDir), false);
  });
});

describe('mariadb', () => {
  let server: MariaServer;
  before(async () => {
    server = await startMariadb();
  });
  after(() => server?.stop());

  test('creates, fills and reads a table over TCP', async () => {
    await server.createDatabase('app');
    await server.query(`CREATE TABLE t (id INT PRIMARY KEY, name VARCHAR(20)); INSERT INTO t VALUES (1, 'a'), (2, '😀')`, 'app');
    assert.deepEqual(await server.query('SELECT id, name FROM t ORDER BY id', 'app'), [{ id: 1, name: 'a' }, { id: 2, name: '😀' }]);
    const conn = await mysql.createConnection(server.url('app'));
    await conn.end();
  });

  test('rejects a wrong password, over TCP and over the socket', async () => {
    await assert.rejects(mysql.createConnection({ host: server.host, port: server.port, user: 'root', password: 'wrong' }), /Access denied/);
    await assert.rejects(mysql.createConnection({ socketPath: server.socket, user: 'root' }), /Access denied/);
  });

  test('stop() ends mariadbd and removes its dir', async () => {
    const other = await startMariadb();
    assert.ok(isRunning(other.pid));
    await other.stop();
    assert.ok(await exits(other.pid));
    assert.equal(existsSync(other.dataDir), false);
  });

  test('stop() cleans up after a mariadbd that was killed', async () => {
    const other = await startMariadb();
    process.kill(other.pid, 'SIGKILL');
    await other.stop();
    assert.equal(existsSync(other.dataDir), false);
  });
});

test('an interrupted test process leaves no server or dir behind', async () => {
  const harness = (file: string) => JSON.stringify(new URL(file, import.meta.url).href);
  const script = `
    const { startPostgres } = await import(${harness('./postgres.js')});
    const { startMariadb } = await import(${harness('./mariadb.js')});
    const [pg, maria] = await Promise.all([startPostgres(), startMariadb()]);
    console.log(JSON.stringify({ pids: [pg.pid, maria.pid], dirs: [pg.dataDir, maria.dataDir] }));
    setInterval(() => {}, 1000);`;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const [line] = await Promise.race([
    once(createInterface({ input: child.stdout }), 'line'),
    once(child, 'exit').then(([code]) => assert.fail(`the harness child exited (code ${code}) before reporting its servers`)),
  ]);
  const { pids, dirs } = JSON.parse(line) as { pids: number[]; dirs: string[] };
  assert.ok(pids.every(isRunning));
  child.kill('SIGTERM');
  const [code] = await once(child, 'exit');
  assert.equal(code, 128 + 15);
  assert.ok((await Promise.all(pids.map((pid) => exits(pid)))).every(Boolean));
  assert.deepEqual(dirs.filter((dir) => existsSync(dir)), []);
});

test('s3: put and get objects, streamed ones included, then stop', async () => {
  const s3 = await startS3({ buckets: ['backups'] });
  const client = new S3Client({
    endpoint: s3.endpoint,
    region: s3.region,
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
  try {
    await client.send(new PutObjectCommand({ Bucket: 'backups', Key: 'a/plain.txt', Body: 'hello' }));
    // A streamed body goes up aws-chunked with a trailing checksum under the SDK's defaults.
    const streamed = Buffer.from('x'.repeat(100_000) + 'end');
    await client.send(new PutObjectCommand({ Bucket: 'backups', Key: 'a/streamed.bin', Body: Readable.from([streamed.subarray(0, 4096), streamed.subarray(4096)]), ContentLength: streamed.length }));

    const plain = await client.send(new GetObjectCommand({ Bucket: 'backups', Key: 'a/plain.txt' }));
    assert.equal(await plain.Body?.transformToString(), 'hello');
    const got = await client.send(new GetObjectCommand({ Bucket: 'backups', Key: 'a/streamed.bin' }));
    assert.equal(got.ContentEncoding, undefined);
    assert.ok(Buffer.from(await got.Body!.transformToByteArray()).equals(streamed));
  } finally {
    client.destroy();
    await s3.stop();
  }
  assert.equal(existsSync(s3.directory), false);
  await assert.rejects(fetch(`${s3.endpoint}/backups`), /fetch failed/);
});

test('webhook receiver records requests and fails on demand', async () => {
  const hook = await startWebhookReceiver();
  try {
    hook.failNext(1, 503);
    const first = await fetch(`${hook.url}/notify?run=1`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"ok":false}' });
    const second = await fetch(`${hook.url}/notify?run=2`, { method: 'POST', body: 'second' });
    assert.deepEqual([first.status, second.status], [503, 200]);
    const requests = await hook.waitFor(2, 1000);
    assert.deepEqual(requests.map((r) => [r.method, r.path, r.body]), [['POST', '/notify?run=1', '{"ok":false}'], ['POST', '/notify?run=2', 'second']]);
    assert.equal(requests[0].headers['content-type'], 'application/json');
    await assert.rejects(hook.waitFor(3, 50), /expected 3 webhook requests within 50 ms, got 2/);
  } finally {
    await hook.stop();
  }
});

test('smtp receiver records mail sent with nodemailer', async () => {
  const smtp = await startSmtpReceiver();
  const transport = nodemailer.createTransport({ host: smtp.host, port: smtp.port, secure: false, ignoreTLS: true });
  try {
    await transport.sendMail({ from: 'dbstash@example.com', to: ['ops@example.com', 'dba@example.com'], subject: 'Backup finished', text: 'All good.' });
    const [mail] = await smtp.waitFor(1, 2000);
    assert.equal(mail.from, 'dbstash@example.com');
    assert.deepEqual(mail.to, ['ops@example.com', 'dba@example.com']);
    assert.match(mail.raw, /^Subject: Backup finished$/m);
    assert.match(mail.raw, /All good\./);
  } finally {
    transport.close();
    await smtp.stop();
  }
});

test('runCli targets the compiled CLI entry point', () => {
  assert.ok(CLI_PATH.endsWith('/dist/src/cli/main.js'), CLI_PATH);
});
