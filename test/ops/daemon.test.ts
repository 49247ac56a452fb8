// The daemon as users run it: a child process with a config whose schedules fire every few
// seconds. A backup appears and is drilled, /healthz and /metrics tell the truth, a database that never gets a
// backup is reported stale, a run missed while the daemon was down runs at start, and SIGTERM
// either lets the running backup finish (grace period) or aborts it without leaving anything.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import net from 'node:net';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { ChildProcessWithoutNullStreams } from 'node:child_process';
import { startWebhookReceiver } from '../harness/receivers.js';
import { startPostgres } from '../harness/postgres.js';
import { runCli, spawnCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';
import { makeSqliteDb, writeConfig } from './helpers.js';
import { seriesDir } from '../harness/stash.js';

const hook = await startWebhookReceiver();
const daemons = new Set<ChildProcessWithoutNullStreams>();
after(async () => {
  for (const child of daemons) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  await hook.stop();
});

interface Daemon {
  child: ChildProcessWithoutNullStreams;
  url: string;
  stderr(): string;
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

async function startDaemon(config: string, env?: NodeJS.ProcessEnv): Promise<Daemon> {
  const child = spawnCli(['daemon', '--config', config], { cwd: path.dirname(config), env });
  daemons.add(child);
  let err = '';
  const waiters = new Set<() => void>();
  child.stderr.setEncoding('utf8').on('data', (t: string) => {
    err += t;
    waiters.forEach((w) => w());
  });
  child.stdout.resume();
  const waitFor = (re: RegExp, timeoutMs = 30_000) =>
    new Promise<RegExpMatchArray>((resolve, reject) => {
      const check = () => {
        const m = err.match(re);
        if (!m) return;
        waiters.delete(check);
        clearTimeout(timer);
        resolve(m);
      };
      const timer = setTimeout(() => {
        waiters.delete(check);
        reject(new Error(`daemon did not log ${re} within ${timeoutMs}ms; stderr:\n${err}`));
      }, timeoutMs);
      waiters.add(check);
      check();
    });
  const exited = once(child, 'exit');
  const [, url] = await waitFor(/listening on (http:\/\/127\.0\.0\.1:\d+)/);
  return {
    child,
    url,
    stderr: () => err,
    waitFor,
    async stop(signal = 'SIGTERM') {
      child.kill(signal);
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`daemon ignored ${signal}:\n${err}`)), 60_000)));
      try {
        const [code] = (await Promise.race([exited, late])) as [number | null];
        return code;
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

function metric(text: string, name: string, labels: string): number {
  const m = new RegExp(`^${name}\\{${labels}\\} (\\S+)$`, 'm').exec(text);
  assert.ok(m, `metric ${name}{${labels}} in:\n${text}`);
  return Number(m[1]);
}

function leftovers(stash: string): string[] {
  if (!existsSync(stash)) return [];
  return readdirSync(stash, { recursive: true, encoding: 'utf8' }).filter((f) => /\.tmp-|dbstash\.lock/.test(f));
}

/** A SQLite database whose backup at zstd level 19 takes seconds. */
function slowDb(file: string): string {
  const db = new Database(file);
  db.exec('CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)');
  const insert = db.prepare('INSERT INTO t (body) VALUES (?)');
  db.transaction(() => {
    for (let i = 0; i < 10_000; i++) insert.run(randomBytes(100).toString('hex'));
  })();
  db.close();
  return file;
}

test('scheduled backups, /healthz, /metrics, stale and failure reporting, and a clean SIGTERM', async () => {
  const dir = tempDir('daemon');
  const stash = path.join(dir, 'stash');
  const start = hook.requests.length;
  const config = writeConfig(dir, {
    stash,
    databases: {
      app: { url: makeSqliteDb(path.join(dir, 'app.db'), 500), schedule: { backup: '*/2 * * * * *', verify: '*/3 * * * * *' } },
      lost: { url: path.join(dir, 'lost.db'), schedule: { backup: '*/3 * * * * *' }, maxAge: '2s' },
    },
    daemon: { listen: '127.0.0.1:0', staleCheck: '500ms' },
    notifications: [{ type: 'webhook', url: `${hook.url}/d`, events: ['success', 'failure', 'stale'], retries: 0 }],
  });
  const d = await startDaemon(config);
  const [, id] = await d.waitFor(/\[app\] backup (app\.[0-9a-f]{8}_dev_\S+) done/);
  const manifest = JSON.parse(readFileSync(path.join(seriesDir(stash, 'app'), `${id}.manifest.json`), 'utf8'));
  await d.waitFor(/\[lost\] backup failed: .*does not exist/);
  await d.waitFor(/\[app\] app\.[0-9a-f]{8}_dev_\S+: drill passed/);
  await d.waitFor(/\[lost\] stale: no successful backup since the daemon started/);

  const metrics = await (await fetch(`${d.url}/metrics`)).text();
  const lastSuccess = metric(metrics, 'dbstash_backup_last_success_timestamp_seconds', 'database="app"');
  assert.ok(lastSuccess >= Date.parse(manifest.finishedAt) / 1000, 'last success is this backup or a newer one');
  assert.ok(lastSuccess < Date.now() / 1000);
  assert.equal(metric(metrics, 'dbstash_backup_last_size_bytes', 'database="app"'), manifest.artifacts[0].size);
  assert.ok(metric(metrics, 'dbstash_job_failures_total', 'database="lost",job="backup"') >= 1);
  assert.equal(metric(metrics, 'dbstash_job_failures_total', 'database="app",job="backup"'), 0);
  assert.ok(metric(metrics, 'dbstash_job_runs_total', 'database="app",job="backup",result="succeeded"') >= 1);
  assert.ok(metric(metrics, 'dbstash_backup_age_seconds', 'database="app"') < 30);
  assert.equal(metric(metrics, 'dbstash_verification_last_result', 'database="app"'), 1);
  assert.ok(metric(metrics, 'dbstash_verification_age_seconds', 'database="app"') < 30);
  const verified = readdirSync(seriesDir(stash, 'app')).filter((f) => /\.verify-.*\.json$/.test(f));
  assert.ok(verified.length >= 1, 'the drill left its record beside the backup');

  const health = await fetch(`${d.url}/healthz`);
  assert.equal(health.status, 503);
  const body = (await health.json()) as { healthy: boolean; problems: string[]; databases: Record<string, { stale: boolean; lastJobs: Record<string, { result: string }> }> };
  assert.equal(body.healthy, false);
  assert.equal(body.databases.app.stale, false);
  assert.equal(body.databases.app.lastJobs.backup.result, 'succeeded');
  assert.equal(body.databases.lost.stale, true);
  assert.ok(body.problems.includes('lost: last backup failed'), JSON.stringify(body.problems));
  // The failure's text names a file path: the log has it, the endpoints never show it.
  assert.match(d.stderr(), new RegExp(`${dir.replace(/[.]/g, '\\.')}/lost\\.db`));
  const exposed = JSON.stringify(body) + (await (await fetch(`${d.url}/metrics`)).text());
  assert.ok(!exposed.includes(dir) && !/:\/\//.test(exposed.replace(/http:\/\/127\.0\.0\.1:\d+/g, '')), 'no path or URL in /healthz or /metrics');
  assert.equal((await fetch(`${d.url}/nothing`)).status, 404);

  const event = async (db: string, kind: string) => {
    for (let n = start + 1; ; n++) {
      const found = (await hook.waitFor(n, 10_000)).slice(start).map((r) => JSON.parse(r.body)).find((e) => e.database === db && e.event === kind);
      if (found) return found;
    }
  };
  assert.equal((await event('app', 'success')).backupId.startsWith('app.'), true);
  assert.match((await event('lost', 'failure')).error, /does not exist/);
  assert.match((await event('lost', 'stale')).detail, /no successful backup since the daemon started .* ago; at most 2\.0s expected/);

  assert.equal(await d.stop(), 0);
  assert.match(d.stderr(), /dbstash daemon stopped/);
  assert.deepEqual(leftovers(stash), []);
  const state = JSON.parse(readFileSync(path.join(dir, '.dbstash-daemon.json'), 'utf8'));
  assert.equal(state.jobs['app:backup'].result, 'succeeded');
  assert.equal(state.jobs['lost:backup'].result, 'failed');
  assert.equal(state.jobs['app:verify'].result, 'succeeded');
});

test('a run missed while the daemon was down runs at start; SIGTERM past the grace period aborts it cleanly', async () => {
  const dir = tempDir('daemon-abort');
  const stash = path.join(dir, 'stash');
  const config = writeConfig(dir, {
    stash,
    databases: { big: { url: slowDb(path.join(dir, 'big.db')), compression: { algorithm: 'zstd', level: 19 }, schedule: { backup: '0 3 * * *' } } },
    daemon: { listen: '127.0.0.1:0', gracePeriod: '0s' },
  });
  const yesterday = new Date(Date.now() - 2 * 86400_000).toISOString();
  writeFileSync(path.join(dir, '.dbstash-daemon.json'), JSON.stringify({ jobs: { 'big:backup': { lastRun: yesterday, result: 'succeeded' } } }));
  const d = await startDaemon(config);
  await d.waitFor(/\[big\] backup started \(catching up on the run due at .*T\d\d:00:00\.000Z\)/);
  const [, id] = await d.waitFor(/backing up \S+ as (big\.[0-9a-f]{8}_dev_\S+)/);
  assert.equal(await d.stop(), 0);
  assert.match(d.stderr(), /aborting backup of big: the grace period is over/);
  assert.match(d.stderr(), /\[big\] backup aborted: interrupted by SIGTERM/);
  assert.match(d.stderr(), /0 jobs finished, 1 aborted/);
  const files = existsSync(seriesDir(stash, 'big')) ? readdirSync(seriesDir(stash, 'big')) : [];
  assert.deepEqual(files.filter((f) => f.startsWith(id)), [], 'no artifact, no manifest');
  assert.deepEqual(leftovers(stash), [], 'no temporary, no lock');
  const state = JSON.parse(readFileSync(path.join(dir, '.dbstash-daemon.json'), 'utf8'));
  assert.equal(state.jobs['big:backup'].result, 'aborted');
});

test('within the grace period a running backup finishes; without catch-up nothing runs at start and /healthz is 200', async () => {
  const dir = tempDir('daemon-grace');
  const stash = path.join(dir, 'stash');
  const yesterday = new Date(Date.now() - 2 * 86400_000).toISOString();
  const db = slowDb(path.join(dir, 'big.db'));
  writeFileSync(path.join(dir, '.dbstash-daemon.json'), JSON.stringify({ jobs: { 'big:backup': { lastRun: yesterday, result: 'succeeded' } } }));

  const quiet = writeConfig(dir, { stash, databases: { big: { url: db, schedule: { backup: '0 3 * * *' } } }, daemon: { listen: '127.0.0.1:0', catchUp: false } }, 'quiet.yaml');
  const q = await startDaemon(quiet);
  await new Promise((r) => setTimeout(r, 1500));
  const health = await fetch(`${q.url}/healthz`);
  assert.equal(health.status, 200);
  assert.equal(((await health.json()) as { healthy: boolean }).healthy, true);
  assert.equal(await q.stop(), 0);
  assert.doesNotMatch(q.stderr(), /backup started/);

  const config = writeConfig(dir, {
    stash,
    databases: { big: { url: db, compression: { algorithm: 'zstd', level: 19 }, schedule: { backup: '0 3 * * *' } } },
    daemon: { listen: '127.0.0.1:0', gracePeriod: '2m' },
  });
  const d = await startDaemon(config);
  const [, id] = await d.waitFor(/backing up \S+ as (big\.[0-9a-f]{8}_dev_\S+)/);
  assert.equal(await d.stop(), 0);
  assert.match(d.stderr(), /waiting up to 120s for backup of big/);
  assert.match(d.stderr(), /1 job finished, 0 aborted/);
  assert.ok(existsSync(path.join(seriesDir(stash, 'big'), `${id}.manifest.json`)), 'the backup was completed and published');
  assert.deepEqual(leftovers(stash), []);
});

test('a config the daemon cannot run is refused at start with exit 2: nothing scheduled, bad cron, bad durations, busy port', async () => {
  const dir = tempDir('daemon-config');
  const db = makeSqliteDb(path.join(dir, 'app.db'), 1);
  const busy = (await import('node:http')).createServer().listen(0, '127.0.0.1');
  await once(busy, 'listening');
  const port = (busy.address() as { port: number }).port;
  const cases: [unknown, RegExp][] = [
    [{ databases: { app: { url: db } } }, /error: the config schedules nothing.*\nhint: add e\.g\. schedule:/],
    [{ databases: { app: { url: db, schedule: { backup: '0 25 * * *' } } } }, /error: databases\.app\.schedule\.backup: "0 25 \* \* \*" is not a valid cron expression/],
    [{ databases: { app: { url: db, schedule: { backup: '0 3 * * *', timezone: 'Mars/Olympus' } } } }, /error: databases\.app\.schedule\.backup: .* in Mars\/Olympus/],
    [{ databases: { app: { url: db, schedule: { backup: '0 3 * * *' } } }, daemon: { gracePeriod: 'soon' } }, /error: daemon\.gracePeriod: "soon" is not a duration/],
    [{ databases: { app: { url: db, schedule: { backup: '0 3 * * *' } } }, daemon: { listen: `127.0.0.1:${port}` } }, /error: daemon\.listen: cannot listen on 127\.0\.0\.1:\d+: .*EADDRINUSE/],
  ];
  try {
    for (const [i, [config, message]] of cases.entries()) {
      const file = writeConfig(dir, config, `c${i}.yaml`);
      const child = spawnCli(['daemon', '--config', file], { cwd: dir });
      let err = '';
      child.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
      child.stdout.resume();
      const [code] = await once(child, 'exit');
      assert.equal(code, 2, err);
      assert.match(err, message);
      assert.doesNotMatch(err, /    at /);
    }
  } finally {
    busy.close();
  }
});

test('a stuck job is aborted past its maximum run time and reported; a run it keeps from starting is a warning and a notification', async () => {
  const dir = tempDir('daemon-stuck');
  // A storage that accepts connections and never answers: the backup hangs in its preflight.
  const silent = net.createServer(() => {});
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  try {
    const start = hook.requests.length;
    const config = writeConfig(dir, {
      storages: {
        hung: { url: 's3://stash/p', endpoint: `http://127.0.0.1:${(silent.address() as net.AddressInfo).port}`, forcePathStyle: true, connectTimeout: '60s', idleTimeout: '60s' },
      },
      databases: { stuck: { url: makeSqliteDb(path.join(dir, 'stuck.db'), 10), storages: ['hung'], schedule: { backup: '* * * * * *' } } },
      daemon: { listen: '127.0.0.1:0', catchUp: false, gracePeriod: '0s', maxRunTime: { backup: '3s' } },
      notifications: [{ type: 'webhook', url: `${hook.url}/stuck`, events: ['failure', 'skipped'], retries: 0 }],
    });
    const child = spawnCli(['daemon', '--config', config], { cwd: dir, env: { AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y', AWS_REGION: 'us-east-1' } });
    daemons.add(child);
    let err = '';
    child.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
    const until = async (re: RegExp, what: string) => {
      const deadline = Date.now() + 20_000;
      while (!re.test(err)) {
        assert.ok(Date.now() < deadline, `${what}:\n${err}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    await until(/warning: backup of stuck is running for \S+: this run is skipped/, 'a skipped run is a warning');
    await until(/warning: backup of stuck has run for 3\.0s, its maximum run time: aborting it/, 'the stuck backup is aborted');
    await until(/\[stuck\] backup failed: backup ran longer than its maximum run time \(3\.0s\) and was aborted/, 'and reported as failed');
    const events = await hook.waitFor(start + 2);
    const bodies = events.slice(start).map((r) => JSON.parse(r.body) as { event: string; database: string; error?: string; detail?: string });
    assert.ok(bodies.some((b) => b.event === 'skipped' && b.database === 'stuck' && /did not start: the previous one is still queued or running/.test(b.detail ?? '')), JSON.stringify(bodies));
    const failed = await (async () => {
      for (let i = 0; i < 100; i++) {
        const hit = hook.requests.slice(start).map((r) => JSON.parse(r.body)).find((b) => b.event === 'failure');
        if (hit) return hit;
        await new Promise((r) => setTimeout(r, 100));
      }
      return undefined;
    })();
    assert.match(failed?.error ?? '', /maximum run time/, 'the failure is notified');
    child.kill('SIGTERM');
    await once(child, 'exit');
  } finally {
    silent.close();
  }
});

test('the endpoints stay on loopback unless exposeEndpoints says otherwise, and then it is said what they show', async () => {
  const dir = tempDir('daemon-listen');
  const databases = { app: { url: makeSqliteDb(path.join(dir, 'app.db'), 10), schedule: { backup: '0 3 * * *' } } };
  const refused = writeConfig(dir, { stash: path.join(dir, 'stash'), databases, daemon: { listen: '0.0.0.0:0' } }, 'refused.yaml');
  const r = await runCli(['daemon', '--config', refused], { cwd: dir, timeoutMs: 20_000 });
  assert.equal(r.code, 2, r.stderr);
  assert.match(r.stderr, /error: daemon.listen: 0\.0\.0\.0:0 is reachable from other machines/);
  assert.match(r.stderr, /hint: .*daemon\.exposeEndpoints: true/);
  const exposed = writeConfig(dir, { stash: path.join(dir, 'stash'), databases, daemon: { listen: '0.0.0.0:0', exposeEndpoints: true } }, 'exposed.yaml');
  const child = spawnCli(['daemon', '--config', exposed], { cwd: dir });
  daemons.add(child);
  let err = '';
  child.stderr.setEncoding('utf8').on('data', (t: string) => (err += t));
  const deadline = Date.now() + 20_000;
  while (!/listening on/.test(err)) {
    assert.ok(Date.now() < deadline, err);
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.match(err, /warning: \/healthz and \/metrics are served on 0\.0\.0\.0:0 \(daemon\.exposeEndpoints\): anyone who reaches it sees database names/);
  child.kill('SIGTERM');
  await once(child, 'exit');
});

test('drills keep their scratch server warm: started at the first drill, reused by the next, stopped with the daemon', async () => {
  const pg = await startPostgres();
  try {
    await pg.createDatabase('small');
    await pg.query(`CREATE TABLE item (id int PRIMARY KEY, label text); INSERT INTO item SELECT g, 'item ' || g FROM generate_series(1, 500) g;`, 'small');
    const dir = tempDir('daemon-warm');
    const scratchTemp = path.join(dir, 'tmp');
    mkdirSync(scratchTemp);
    // The scratch server runs as the "postgres" OS user, who must reach its data directory.
    chmodSync(dir, 0o711);
    const config = writeConfig(dir, {
      stash: path.join(dir, 'stash'),
      tempDir: scratchTemp,
      databases: { small: { url: `postgres://postgres@127.0.0.1:${pg.port}/small`, schedule: { backup: '*/2 * * * * *', verify: '*/2 * * * * *' } } },
      daemon: { listen: '127.0.0.1:0' },
    });
    const d = await startDaemon(config, { PGPASSWORD: pg.password });
    await d.waitFor(/\[small\] drill: restoring \S+ into a scratch instance started now and kept warm for the next drills as dbstash_drill_/, 60_000);
    await d.waitFor(/\[small\] drill: restoring \S+ into the warm scratch instance as dbstash_drill_[\s\S]*\[small\] small\.[0-9a-f]{8}_dev_\S+: drill passed[\s\S]*\[small\] small\.[0-9a-f]{8}_dev_\S+: drill passed/, 60_000);
    const log = d.stderr();
    assert.equal(log.match(/started now and kept warm/g)?.length, 1, 'one scratch server for all the drills');
    // While the daemon runs, its one scratch server's data directory is in the temp dir.
    assert.equal(readdirSync(scratchTemp).filter((f) => f.startsWith('.dbstash-pgdrill')).length, 1, readdirSync(scratchTemp).join(', '));
    assert.equal(await d.stop(), 0, d.stderr());
    assert.deepEqual(readdirSync(scratchTemp).filter((f) => f.startsWith('.dbstash-')), [], 'the scratch server was stopped and removed with the daemon');
    const verified = readdirSync(seriesDir(path.join(dir, 'stash'), 'small')).filter((f) => /\.verify-.*\.json$/.test(f));
    const records = verified.map((f) => JSON.parse(readFileSync(path.join(seriesDir(path.join(dir, 'stash'), 'small'), f), 'utf8')));
    assert.ok(records.length >= 2 && records.every((r) => r.result === 'passed' && r.scratch === 'warm local server'), JSON.stringify(records));
  } finally {
    await pg.stop();
  }
});
