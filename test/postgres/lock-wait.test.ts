// PostgreSQL backups that meet a table another session holds locked (LOCK TABLE … ACCESS
// EXCLUSIVE, as a long ALTER TABLE or a careless migration does): the backup gives up after its
// lock-wait timeout with one line naming the table and the session that holds it, and a SIGTERM
// while it waits ends it at once — with no query of dbstash's left running on the server.

import { after, afterEach, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { runCli, spawnCli, type CliResult } from '../harness/run.js';
import { assertCleanFailure, filesUnder, onlyBackup, waitFor, workDir } from './helpers.js';

let server: PgServer;
const { work, freshStash } = workDir('dbstash-lock-wait');

before(async () => {
  server = await startPostgres();
  await server.createDatabase('shop');
  await server.query(
    `CREATE TABLE customer AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 5000) g;
     CREATE TABLE "order line" AS SELECT g AS id, g % 5000 AS customer FROM generate_series(1, 20000) g;
     CREATE TABLE events (id int, at date) PARTITION BY RANGE (at);
     CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
     INSERT INTO events SELECT g, date '2026-01-01' + g % 300 FROM generate_series(1, 1000) g;`,
    'shop',
  );
});
after(() => server?.stop());

/** Another session of another application, holding `lock` inside an open transaction. */
interface Holder {
  pid: number;
  release(): Promise<void>;
}

let holders: Holder[] = [];
afterEach(async () => {
  await Promise.all(holders.map((h) => h.release()));
  holders = [];
});

async function holdLock(lock: string): Promise<Holder> {
  const client = new pg.Client({ connectionString: server.url('shop'), application_name: 'nightly-migration' });
  await client.connect();
  await client.query('BEGIN');
  await client.query(lock);
  const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
  let released = false;
  const holder = {
    pid,
    async release() {
      if (released) return;
      released = true;
      await client.query('ROLLBACK').catch(() => {});
      await client.end();
    },
  };
  holders.push(holder);
  return holder;
}

/** dbstash's own sessions on the server (its connections and pg_dump's), with what they wait for. */
async function dbstashSessions(): Promise<{ pid: number; state: string; wait_event_type: string | null; query: string }[]> {
  return (
    await server.query(
      `SELECT pid, state, wait_event_type, query FROM pg_stat_activity WHERE application_name = 'dbstash' AND pid <> pg_backend_pid()`,
    )
  ).rows;
}

function startBackup(stash: string, extra: string[] = []): { send(s: NodeJS.Signals): void; done: Promise<CliResult & { exitedAt: number }> } {
  const child = spawnCli(['backup', server.url('shop'), '--output-dir', stash, ...extra]);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const done = new Promise<CliResult & { exitedAt: number }>((resolve) =>
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr, exitedAt: Date.now() })),
  );
  return { send: (s) => child.kill(s), done };
}

/** Until no session of dbstash's is left on the server; fails when one still is after `ms`. */
async function assertNoDbstashSession(ms: number): Promise<void> {
  let left: Awaited<ReturnType<typeof dbstashSessions>> = [];
  try {
    await waitFor('dbstash sessions to end', async () => (left = await dbstashSessions()).length === 0, ms, 50);
  } catch {
    assert.fail(`dbstash sessions still on the server ${ms} ms after it exited: ${JSON.stringify(left)}`);
  }
}

describe('a table locked by another session', { timeout: 120_000 }, () => {
  it('SIGTERM while the dump and the counts wait for the lock: exit 143 at once, nothing left on the server', async () => {
    const holder = await holdLock('LOCK TABLE customer IN ACCESS EXCLUSIVE MODE');
    const stash = freshStash();
    const backup = startBackup(stash);
    // Both the row count (our snapshot's connection) and pg_dump's LOCK TABLE queue behind the holder.
    await waitFor('dbstash to wait for the lock', async () => (await dbstashSessions()).filter((s) => s.wait_event_type === 'Lock').length >= 2, 20_000, 50);
    const sentAt = Date.now();
    backup.send('SIGTERM');
    const res = await Promise.race([backup.done, new Promise<undefined>((r) => setTimeout(() => r(undefined), 10_000))]);
    if (!res) {
      backup.send('SIGKILL');
      assert.fail('dbstash was still running 10 s after SIGTERM');
    }
    assert.equal(res.code, 143, res.stderr);
    assert.match(res.stderr, /^error: interrupted by SIGTERM/m);
    assert.ok(res.exitedAt - sentAt < 3000, `exited ${res.exitedAt - sentAt} ms after SIGTERM`);
    await assertNoDbstashSession(1000);
    assert.deepEqual(filesUnder(stash), []);
    await holder.release();
  });

  it('--lock-wait-timeout: exit 5 naming the table and the session holding it; nothing published, lock released', async () => {
    const holder = await holdLock('LOCK TABLE "order line" IN ACCESS EXCLUSIVE MODE');
    const stash = freshStash();
    const started = Date.now();
    const res = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--lock-wait-timeout', '1s']);
    const took = Date.now() - started;
    assertCleanFailure(
      res,
      5,
      new RegExp(
        `table public\\."order line" is locked by another session: pid ${holder.pid}, user postgres, application "nightly-migration", ` +
          `from 127\\.0\\.0\\.1, idle in transaction for \\d+s, last query "SELECT pg_backend_pid\\(\\) AS pid"; gave up after waiting 1s for the lock`,
      ),
    );
    assert.match(res.stderr, /^hint: .*--lock-wait-timeout/m);
    assert.ok(took < 15_000, `took ${took} ms`);
    assert.deepEqual(filesUnder(stash), [], 'nothing published, no temporary, no lock file');
    await assertNoDbstashSession(1000);
  });

  it('a lock only pg_dump waits for (a partitioned table\'s parent): the same message, from pg_dump\'s timeout', async () => {
    // The counts read the partitions; pg_dump locks the parent too, which LOCK TABLE ONLY holds.
    const holder = await holdLock('LOCK TABLE ONLY events IN ACCESS EXCLUSIVE MODE');
    const stash = freshStash();
    const res = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--lock-wait-timeout', '1500ms']);
    assertCleanFailure(res, 5, new RegExp(`table public\\.events is locked by another session: pid ${holder.pid}, .*gave up after waiting 1\\.5s for the lock`));
    assert.deepEqual(filesUnder(stash), []);
    await assertNoDbstashSession(1000);
  });

  it('lockWaitTimeout in the database\'s config entry; a backup without a lock in the way records the timeout pg_dump ran with', async () => {
    const holder = await holdLock('LOCK TABLE customer IN ACCESS EXCLUSIVE MODE');
    const config = path.join(work, 'lock-wait.yaml');
    const stash = freshStash();
    writeFileSync(config, `databases:\n  shop:\n    url: ${server.url('shop')}\n    lockWaitTimeout: 800ms\n`);
    const res = await runCli(['backup', 'shop', '--config', config, '--output-dir', stash]);
    assertCleanFailure(res, 5, new RegExp(`table public\\.customer is locked by another session: pid ${holder.pid},.* gave up after waiting 800ms for the lock`));
    await holder.release();

    const ok = await runCli(['backup', 'shop', '--config', config, '--output-dir', stash]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(onlyBackup(stash).manifest.dump.args.includes('--lock-wait-timeout=800'), JSON.stringify(onlyBackup(stash).manifest.dump.args));
    const byDefault = freshStash();
    assert.equal((await runCli(['backup', server.url('shop'), '--output-dir', byDefault])).code, 0);
    assert.ok(onlyBackup(byDefault).manifest.dump.args.includes('--lock-wait-timeout=60000'), 'the default is 60s');
  });

  it('--lock-wait-timeout that is not a duration: a usage error before anything runs', async () => {
    const stash = freshStash();
    const res = await runCli(['backup', server.url('shop'), '--output-dir', stash, '--lock-wait-timeout', 'soon']);
    assertCleanFailure(res, 2, /--lock-wait-timeout must be a duration such as 30s, 2m or 500ms \(0 waits for ever\), got "soon"/);
    assert.deepEqual(filesUnder(stash), []);
  });
});
