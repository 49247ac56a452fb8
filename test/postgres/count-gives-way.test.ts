// An early row count during a restore gives way to the restore: when a session waits for the lock
// the count holds (pg_restore's ADD CONSTRAINT … PRIMARY KEY on the table just loaded), the count
// is cancelled and fails (its tables are then counted after the restore), instead of holding the
// restore up until it ends. Without giveWay, the same count runs to its end and the session waits.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { loadEngine } from '../../src/engines/index.js';
import { parseTarget } from '../../src/engines/target.js';
import type { Engine, Target } from '../../src/engines/engine.js';
import { startPostgres, type PgServer } from '../harness/postgres.js';

let server: PgServer;
let engine: Engine;
let target: Target;
const signal = new AbortController().signal;

before(async () => {
  server = await startPostgres();
  await server.createDatabase('big');
  // Rows that no one has read yet (no hint bits) and no parallel workers: a count of several
  // hundred milliseconds, long enough to be caught holding its lock.
  await server.query(`CREATE TABLE t WITH (parallel_workers = 0, autovacuum_enabled = false) AS SELECT g AS id, g % 7 AS k FROM generate_series(1, 6000000) g`, 'big');
  engine = await loadEngine('postgres');
  target = parseTarget(server.url('big'));
});
after(() => server?.stop());

/** Starts a count of t, waits until the server runs it, then asks for t's exclusive lock. */
async function countThenLock(giveWay: boolean): Promise<{ count: PromiseSettledResult<unknown>; lockWaitedMs: number; countMs: number }> {
  const started = Date.now();
  const count = engine.countRows!(target, [{ schema: 'public', name: 't' }], signal, { giveWay }).then(
    (v) => ({ status: 'fulfilled' as const, value: v, at: Date.now() }),
    (e: unknown) => ({ status: 'rejected' as const, reason: e, at: Date.now() }),
  );
  const locker = new pg.Client({ connectionString: server.url('big') });
  await locker.connect();
  try {
    for (;;) {
      const r = await locker.query(`SELECT 1 FROM pg_stat_activity WHERE state = 'active' AND query LIKE 'SELECT count(*)%'`);
      if (r.rowCount) break;
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    await locker.query('BEGIN');
    await locker.query(`SET LOCAL lock_timeout = '60s'`);
    const asked = Date.now();
    await locker.query('LOCK TABLE t IN ACCESS EXCLUSIVE MODE');
    const lockWaitedMs = Date.now() - asked;
    await locker.query('COMMIT');
    const settled = await count;
    return { count: settled as PromiseSettledResult<unknown>, lockWaitedMs, countMs: settled.at - started };
  } finally {
    await locker.end();
  }
}

describe('an early count gives way to the restore', { timeout: 120_000 }, () => {
  test('without giveWay the count runs to its end and the lock waits for it', async () => {
    const r = await countThenLock(false);
    assert.equal(r.count.status, 'fulfilled');
    assert.deepEqual((r.count as PromiseFulfilledResult<{ rows: number }[]>).value.map((s) => s.rows), [6000000]);
  });

  test('with giveWay the count is cancelled once the lock waits for it, and fails', async () => {
    const r = await countThenLock(true);
    assert.equal(r.count.status, 'rejected', `the count ended first (${r.countMs} ms)`);
    assert.match(String((r.count as PromiseRejectedResult).reason), /cancel/i);
    // The poll runs every 50 ms once the count has run for 100 ms.
    assert.ok(r.lockWaitedMs < 1000, `the lock waited ${r.lockWaitedMs} ms`);
  });
});
