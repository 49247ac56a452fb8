// A restore's questions to the server (does the target exist, the leftovers, create, properties,
// rename, drop) share one maintenance session instead of a connection each; the lock keeps its
// own. The kept session never keeps the process alive, is closed after a short idle time, is not
// handed out again once the server has ended it, and a question that failed does not give its
// session back. The server's pg_stat_activity tells which backend answered.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { loadEngine } from '../../src/engines/index.js';
import { parseTarget } from '../../src/engines/target.js';
import { withDatabase, type Engine, type Target } from '../../src/engines/engine.js';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { waitFor } from './helpers.js';

let server: PgServer;
let engine: Engine;
let target: Target;
let watcher: pg.Client;

before(async () => {
  server = await startPostgres();
  await server.createDatabase('app');
  engine = await loadEngine('postgres');
  target = parseTarget(server.url('app'));
  watcher = new pg.Client({ connectionString: server.url('postgres') });
  await watcher.connect();
});
after(async () => {
  await watcher?.end();
  await server?.stop();
});

/** The pids of dbstash's sessions on the maintenance database, by state. */
async function maintenanceSessions(): Promise<{ pid: number; state: string }[]> {
  const r = await watcher.query<{ pid: number; state: string }>(
    `SELECT pid, state FROM pg_stat_activity WHERE datname = 'postgres' AND application_name = 'dbstash' AND pid <> pg_backend_pid() ORDER BY pid`,
  );
  return r.rows;
}

/** Ref'd TCP handles: what keeps this process alive. */
const liveSockets = () => process.getActiveResourcesInfo().filter((r) => r === 'TCPSocketWrap').length;

describe('maintenance sessions are reused', { timeout: 60_000 }, () => {
  test("a restore's questions share one session, which does not keep the process alive and closes when idle", async () => {
    await waitFor('no dbstash session left by another test', async () => (await maintenanceSessions()).length === 0);
    const sockets = liveSockets();
    assert.equal(await engine.databaseExists!(target), true);
    const [first, ...others] = await maintenanceSessions();
    assert.ok(first, 'the session that answered is kept');
    assert.deepEqual(others, []);
    assert.equal(first.state, 'idle');
    assert.equal(liveSockets(), sockets, 'the idle session does not hold the process');

    // The questions of a restore by swap, one after the other.
    assert.ok((await engine.listDatabases!(target)).includes('app'));
    const temp = await engine.createDatabase!(target, 'app_restoring', {});
    await engine.compareProperties!(temp, await engine.databaseProperties!(target), {});
    const renamed = await engine.renameDatabase!(temp, 'app_renamed');
    await engine.dropDatabase!(renamed);
    assert.deepEqual(await maintenanceSessions(), [first], 'every question was answered by the same backend');

    // The lock takes the idle session and keeps it; the next question gets a session of its own.
    const lock = await engine.lockRestoreTarget!(target);
    assert.equal(await engine.databaseExists!(withDatabase(target, 'app_renamed')), false);
    const during = await maintenanceSessions();
    assert.equal(during.length, 2);
    assert.ok(during.some((s) => s.pid === first.pid), 'the lock holds the session it took');
    await lock.release();
    await waitFor('the lock session to end', async () => !(await maintenanceSessions()).some((s) => s.pid === first.pid));

    // Left idle, the session is closed by dbstash itself.
    await waitFor('the idle session to be closed', async () => (await maintenanceSessions()).length === 0, 10_000);
  });

  test('a session the server ended while it was idle is not handed out again', async () => {
    await engine.databaseExists!(target);
    const [kept] = await maintenanceSessions();
    assert.ok(kept);
    await watcher.query('SELECT pg_terminate_backend($1)', [kept.pid]);
    await waitFor('the terminated session to go', async () => (await maintenanceSessions()).length === 0);
    assert.equal(await engine.databaseExists!(target), true, 'the next question is answered');
    const [fresh] = await maintenanceSessions();
    assert.ok(fresh && fresh.pid !== kept.pid);
  });

  test('a question that failed does not give its session back', async () => {
    await engine.databaseExists!(target);
    const [kept] = await maintenanceSessions();
    assert.ok(kept);
    await assert.rejects(engine.renameDatabase!(withDatabase(target, 'no_such_database'), 'other'), /no_such_database/);
    await engine.databaseExists!(target);
    const sessions = await maintenanceSessions();
    assert.equal(sessions.length, 1);
    assert.notEqual(sessions[0].pid, kept.pid, 'a new session answers after the failure');
  });
});
