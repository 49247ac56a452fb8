/**
 * The fleet: pg-boss on a real PostgreSQL control database, real `dbstash worker` processes and
 * real databases (SQLite files and a PostgreSQL database). Every job published exactly once, tag
 * routing, `run --wait`, two schedulers at once, and the refusals.
 */
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import Database from 'better-sqlite3';
import pgClient from 'pg';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { runCli, spawnCli } from '../harness/run.js';
import { startWebhookReceiver, type WebhookReceiver } from '../harness/receivers.js';
import { tempDir } from '../harness/tmp.js';

let pg: PgServer;
let hook: WebhookReceiver;
let root: string;
let stash: string;
let config: string;
const SQLITE = 20;
const EU = new Set(['db3', 'db7']);

interface Worker {
  child: ReturnType<typeof spawnCli>;
  log(): string;
}
const workers: Worker[] = [];

function startWorker(args: string[] = []): Worker {
  const child = spawnCli(['worker', '--config', config, '--grace', '5s', ...args]);
  let log = '';
  child.stdout.on('data', (d: Buffer) => (log += d));
  child.stderr.on('data', (d: Buffer) => (log += d));
  const w = { child, log: () => log };
  workers.push(w);
  return w;
}

async function ready(w: Worker): Promise<void> {
  for (let i = 0; i < 200 && !/takes jobs from/.test(w.log()) && w.child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
  assert.match(w.log(), /takes jobs from/, w.log());
}

/** Manifests per series folder of the stash. */
function manifests(): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (!existsSync(stash)) return out;
  for (const dir of readdirSync(stash)) {
    if (dir.startsWith('.')) continue;
    const files = existsSync(path.join(stash, dir)) ? readdirSync(path.join(stash, dir)).filter((f) => f.endsWith('.manifest.json')) : [];
    out.set(dir, files);
  }
  return out;
}

/** The series folder of the PostgreSQL database `app`. */
function appFolder(): string {
  return [...manifests().keys()].find((d) => d.startsWith('app.'))!;
}

/** A session holding an exclusive lock on app.items: a backup of app waits for it. */
async function lockItems(): Promise<{ end(): Promise<void> }> {
  const client = new pgClient.Client({ connectionString: pg.url('app') });
  client.on('error', () => {});
  await client.connect();
  await client.query('BEGIN');
  await client.query('LOCK TABLE items IN ACCESS EXCLUSIVE MODE');
  return { end: () => client.query('COMMIT').then(() => client.end()) };
}

before(async () => {
  root = tempDir('dbstash-fleet');
  stash = path.join(root, 'stash');
  pg = await startPostgres();
  await pg.createDatabase('control');
  await pg.createDatabase('app');
  await pg.query('CREATE TABLE items AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 5000) g', 'app');
  hook = await startWebhookReceiver();
  const lines = [
    `stash: ${stash}`,
    'encryption: none',
    `queue: ${pg.url('control')}`,
    'fleet: { retries: 2, retryDelay: 1s, heartbeat: 10s }',
    'notifications:',
    `  - { type: webhook, url: "${hook.url}/hook", events: [failure] }`,
    'databases:',
    '  missing:',
    `    url: sqlite://${path.join(root, 'not-there.sqlite')}`,
  ];
  for (let i = 0; i < SQLITE; i++) {
    const file = path.join(root, `db${i}.sqlite`);
    const db = new Database(file);
    db.exec(`CREATE TABLE t (i INTEGER); INSERT INTO t VALUES (${i})`);
    db.close();
    lines.push(`  db${i}:`, `    url: sqlite://${file}`);
    if (EU.has(`db${i}`)) lines.push('    workers: { region: eu }');
  }
  lines.push('  app:', `    url: ${pg.url('app')}`);
  config = path.join(root, 'dbstash.yaml');
  writeFileSync(config, lines.join('\n') + '\n', { mode: 0o600 });
});

after(async () => {
  for (const w of workers) if (w.child.exitCode === null) w.child.kill('SIGKILL');
  await pg?.stop();
  await hook?.stop();
});

describe('the fleet', () => {
  it('3 workers, 20 SQLite databases and a PostgreSQL one: every job runs once, the eu databases only on the eu worker; run --wait exits with the job\'s code', async () => {
    const plain = [startWorker(), startWorker()];
    const eu = startWorker(['--tags', 'region=eu']);
    await Promise.all([...plain, eu].map(ready));
    // Every job queued at once, from several processes.
    const names = [...Array.from({ length: SQLITE }, (_, i) => `db${i}`)];
    for (let i = 0; i < names.length; i += 5) {
      const queued = await Promise.all(names.slice(i, i + 5).map((n) => runCli(['run', 'backup', n, '--config', config, '--json'])));
      for (const q of queued) assert.equal(q.code, 0, q.stderr);
    }
    const waited = await runCli(['run', 'backup', 'app', '--config', config, '--wait', '--json'], { timeoutMs: 120_000 });
    assert.equal(waited.code, 0, waited.stderr);
    const result = JSON.parse(waited.stdout) as { state: string; exitCode: number; worker: string };
    assert.equal(result.state, 'completed');
    assert.equal(result.exitCode, 0);
    assert.match(result.worker, /:\d+$/);
    // All 21 published, each exactly once.
    for (let i = 0; i < 300; i++) {
      const total = [...manifests().values()].reduce((n, f) => n + f.length, 0);
      if (total >= SQLITE + 1) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await new Promise((r) => setTimeout(r, 1000)); // a duplicate would show by now
    const found = manifests();
    assert.equal(found.size, SQLITE + 1, [...found.keys()].join(' '));
    for (const [dir, files] of found) assert.equal(files.length, 1, `${dir}: ${files.join(' ')}`);
    // Routing: each eu database ran on the eu worker, and no other database needed it.
    for (const db of EU) {
      assert.match(eu.log(), new RegExp(`\\[${db}\\] backup \\S+ done on`), eu.log());
      for (const w of plain) assert.doesNotMatch(w.log(), new RegExp(`\\[${db}\\] backup`));
    }
    // The eu worker also takes the untagged databases' jobs (it has every tag they ask for: none).
    const ran = [...plain, eu].map((w) => (w.log().match(/\] backup \S+ done on/g) ?? []).length);
    assert.equal(ran.reduce((a, b) => a + b, 0), SQLITE + 1);
    assert.ok(ran.filter((n) => n > 0).length >= 2, `the jobs spread over the workers: ${ran.join(', ')}`);

    // A job that fails (a verify of a backup that does not exist) fails for good with the exit
    // code of the error, after its retries; run --wait reports it.
    const failed = await runCli(['run', 'verify', 'db0', '--backup', 'db0.00000000_dev_2020-01-01T00-00-00Z', '--config', config, '--wait', '--json'], { timeoutMs: 240_000 });
    const body = JSON.parse(failed.stdout) as { state: string; exitCode: number; attempts: number; message: string };
    assert.equal(body.state, 'failed', failed.stdout);
    assert.equal(failed.code, body.exitCode);
    assert.notEqual(body.exitCode, 0);
    assert.equal(body.attempts, 3, 'the first attempt and two retries');

    // A backup that fails on every attempt fails for good after the retries, and notifies once.
    const gone = await runCli(['run', 'backup', 'missing', '--config', config, '--wait', '--json'], { timeoutMs: 240_000 });
    const goneBody = JSON.parse(gone.stdout) as { state: string; attempts: number; exitCode: number };
    assert.equal(goneBody.state, 'failed', gone.stdout);
    assert.equal(goneBody.attempts, 3);
    assert.equal(gone.code, goneBody.exitCode);
    await new Promise((r) => setTimeout(r, 1000));
    // The only failure notification of the whole run (the verify above failed before its drill).
    const failures = hook.requests;
    assert.equal(failures.length, 1, `one failure notification, for the last attempt: ${failures.map((f) => f.body).join('\n')}`);
    assert.match(failures[0].body, /not-there\.sqlite/);

    // SIGTERM: the workers stop taking jobs and exit 0.
    for (const w of [...plain, eu]) {
      w.child.kill('SIGTERM');
      const [code] = (await once(w.child, 'exit')) as [number];
      assert.equal(code, 0, w.log());
    }
  });

  it('kill -9 of a worker in the middle of a PostgreSQL backup: the job is retried by another worker; one complete backup, nothing left of the killed run', async () => {
    const before = manifests().get(appFolder())?.length ?? 0;
    const a = startWorker();
    const b = startWorker();
    await Promise.all([a, b].map(ready));
    // pg_dump waits for this lock (lockWaitTimeout is 60s): the backup is held in its middle.
    const locker = await lockItems();
    const waiting = runCli(['run', 'backup', 'app', '--config', config, '--wait', '--json'], { timeoutMs: 180_000 });
    let first: Worker | undefined;
    for (let i = 0; i < 200 && !first; i++) {
      first = [a, b].find((w) => /\[app\] backing up/.test(w.log()));
      if (!first) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(first, `a worker started the backup:\n${a.log()}\n${b.log()}`);
    await new Promise((r) => setTimeout(r, 1000));
    first.child.kill('SIGKILL');
    await once(first.child, 'exit');
    await locker.end();
    const other = first === a ? b : a;
    const done = await waiting;
    assert.equal(done.code, 0, done.stderr + done.stdout);
    const result = JSON.parse(done.stdout) as { state: string; attempts: number; worker: string };
    assert.equal(result.state, 'completed');
    assert.equal(result.attempts, 2, 'the second attempt completed it');
    assert.equal(result.worker, /worker (\S+) takes jobs/.exec(other.log())![1], 'the other worker');
    const files = readdirSync(path.join(stash, appFolder()));
    assert.equal(files.filter((f) => f.endsWith('.manifest.json')).length, before + 1, files.join(' '));
    assert.deepEqual(files.filter((f) => f.startsWith('.tmp-')), [], 'no temporary object of the killed run is left in the stash');
    const check = await runCli(['verify', '--latest', 'app', '--config', config, '--json']);
    assert.equal(check.code, 0, check.stderr);
    other.child.kill('SIGTERM');
    await once(other.child, 'exit');
  });

  it('SIGTERM with a job running: the worker waits --grace, then aborts the run cleanly and exits; the job is retried by another', async () => {
    const before = manifests().get(appFolder())?.length ?? 0;
    const w = startWorker(['--grace', '2s']);
    await ready(w);
    const locker = await lockItems();
    const waiting = runCli(['run', 'backup', 'app', '--config', config, '--wait', '--json'], { timeoutMs: 180_000 });
    for (let i = 0; i < 200 && !/\[app\] backing up/.test(w.log()); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(w.log(), /\[app\] backing up/);
    const t0 = Date.now();
    w.child.kill('SIGTERM');
    const [code] = (await once(w.child, 'exit')) as [number];
    const took = Date.now() - t0;
    assert.equal(code, 0, w.log());
    assert.match(w.log(), /stopping: no new jobs; 1 running get 2s to finish/);
    assert.match(w.log(), /\[app\] backup \S+ failed on \S+: .*\(it will be retried\)/);
    assert.ok(took >= 1900 && took < 20_000, `stopped after the grace period: ${took} ms`);
    await locker.end();
    assert.deepEqual(readdirSync(path.join(stash, appFolder())).filter((f) => f.startsWith('.tmp-')), [], 'the aborted run left nothing');
    const next = startWorker();
    const done = await waiting;
    assert.equal(done.code, 0, done.stderr + done.stdout + next.log());
    assert.equal((JSON.parse(done.stdout) as { attempts: number }).attempts, 2);
    assert.equal(manifests().get(appFolder())?.length, before + 1);
    next.child.kill('SIGTERM');
    await once(next.child, 'exit');
  });

  it('a worker cut off from the queue mid-job: a short cut does not stop the run; past a heartbeat without the queue it aborts cleanly, reconnects and runs the retry', async () => {
    const before = manifests().get(appFolder())?.length ?? 0;
    const w = startWorker();
    await ready(w);
    const name = /worker (\S+) takes jobs/.exec(w.log())![1];
    const locker = await lockItems();
    const queued = await runCli(['run', 'backup', 'app', '--config', config, '--json']);
    assert.equal(queued.code, 0, queued.stderr);
    const jobId = (JSON.parse(queued.stdout) as { job: string }).job;
    for (let i = 0; i < 200 && !/\[app\] backing up/.test(w.log()); i++) await new Promise((r) => setTimeout(r, 100));
    assert.match(w.log(), /\[app\] backing up/);
    // The server ends every connection to the control database (as a restart or a failover does).
    const cut = `SELECT count(pg_terminate_backend(pid))::int AS n FROM pg_stat_activity WHERE datname = 'control' AND pid <> pg_backend_pid()`;
    assert.ok((await pg.query(cut)).rows[0].n >= 1, 'the worker had connections to cut');
    await new Promise((r) => setTimeout(r, 4000)); // past a watchdog round (heartbeat / 3)
    assert.doesNotMatch(w.log(), /\[app\] backup \S+ failed/, 'a short cut: the run goes on');
    // Then the control database refuses connections for longer than a heartbeat (10 s).
    await pg.query('ALTER DATABASE control ALLOW_CONNECTIONS false');
    let reopened = false;
    try {
      await pg.query(cut);
      for (let i = 0; i < 300 && !/\[app\] backup \S+ failed on/.test(w.log()); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(w.log(), /\[app\] backup \S+ failed on \S+: interrupted by the queue: no answer for a whole heartbeat \(the job may be retried elsewhere\); nothing was published/);
      assert.equal(w.child.exitCode, null, 'the worker lives on');
      const files = readdirSync(path.join(stash, appFolder()));
      assert.equal(files.filter((f) => f.endsWith('.manifest.json')).length, before, 'the aborted run published nothing');
      assert.deepEqual(files.filter((f) => f.startsWith('.tmp-')), [], 'and left nothing');
      await pg.query('ALTER DATABASE control ALLOW_CONNECTIONS true');
      reopened = true;
    } finally {
      if (!reopened) await pg.query('ALTER DATABASE control ALLOW_CONNECTIONS true');
      await locker.end();
    }
    // The queue gives the job again (its heartbeat stopped); the same worker, reconnected, runs it.
    let row: { state: string; retry_count: number; output: { worker?: string } | null } | undefined;
    for (let i = 0; i < 900; i++) {
      row = (await pg.query(`SELECT state, retry_count, output FROM dbstash_queue.job WHERE id = '${jobId}'`, 'control')).rows[0];
      if (row?.state === 'completed' || row?.state === 'failed') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(row?.state, 'completed', `${JSON.stringify(row)}\n${w.log()}`);
    assert.ok(row!.retry_count >= 1, 'a later attempt completed it');
    assert.equal(row!.output?.worker, name, 'the same worker, reconnected');
    const files = readdirSync(path.join(stash, appFolder()));
    assert.equal(files.filter((f) => f.endsWith('.manifest.json')).length, before + 1, files.join(' '));
    assert.deepEqual(files.filter((f) => f.startsWith('.tmp-')), []);
    w.child.kill('SIGTERM');
    await once(w.child, 'exit');
  });

  it('refuses clearly: no queue, an unreachable queue, bad tags, a database not in the config', async () => {
    const bare = path.join(root, 'bare.yaml');
    writeFileSync(bare, `stash: ${stash}\ndatabases:\n  x: { url: "sqlite://${path.join(root, 'db0.sqlite')}" }\n`);
    const none = await runCli(['run', 'backup', 'x', '--config', bare]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /no queue: the fleet needs its PostgreSQL control database/);
    const unreachable = await runCli(['run', 'backup', 'x', '--config', bare, '--queue', 'postgres://u:s3cret@127.0.0.1:9/q'], { timeoutMs: 60_000 });
    assert.equal(unreachable.code, 3, unreachable.stderr);
    assert.match(unreachable.stderr, /cannot reach the queue database/);
    assert.doesNotMatch(unreachable.stderr + unreachable.stdout, /s3cret/);
    assert.doesNotMatch(unreachable.stderr, /\n\s+at /, 'no stack trace');
    // A worker that cannot write to the stash of a database it would serve refuses to start.
    const blind = path.join(root, 'blind.yaml');
    writeFileSync(blind, `stash: /proc/dbstash-stash\nqueue: ${pg.url('control')}\ndatabases:\n  x: { url: "sqlite://${path.join(root, 'db0.sqlite')}" }\n`, { mode: 0o600 });
    const noStash = await runCli(['worker', '--config', blind], { timeoutMs: 60_000 });
    assert.equal(noStash.code, 11, noStash.stderr);
    assert.match(noStash.stderr, /this worker cannot write to local \(.*\), where x is backed up/);
    const tags = await runCli(['worker', '--config', config, '--tags', 'region']);
    assert.equal(tags.code, 2);
    assert.match(tags.stderr, /--tags: "region" is not key=value/);
    const unknown = await runCli(['run', 'backup', 'nope', '--config', config]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /nope is not a database in the config/);
    // A queue set up by a newer dbstash (its schema version above what this one knows).
    await pg.createDatabase('newer');
    const first = await runCli(['run', 'backup', 'x', '--config', bare, '--queue', pg.url('newer')]);
    assert.equal(first.code, 0, first.stderr);
    await pg.query('UPDATE dbstash_queue.version SET version = version + 10', 'newer');
    const newer = await runCli(['run', 'backup', 'x', '--config', bare, '--queue', pg.url('newer')]);
    assert.equal(newer.code, 2, newer.stderr);
    assert.match(newer.stderr, /was set up by a newer dbstash \(queue schema \d+; this one knows up to \d+\)/);
    assert.doesNotMatch(newer.stderr, new RegExp(pg.password));
  });

  it('two schedulers at once: each cron tick yields one job', async () => {
    const scheduled = path.join(root, 'scheduled.yaml');
    const file = path.join(root, 'ticked.sqlite');
    const db = new Database(file);
    db.exec('CREATE TABLE t (i INTEGER)');
    db.close();
    writeFileSync(scheduled, [`stash: ${stash}`, 'encryption: none', `queue: ${pg.url('control')}`, 'daemon: { listen: "127.0.0.1:0" }', 'databases:', '  ticked:', `    url: sqlite://${file}`, '    schedule: { backup: "* * * * *" }', ''].join('\n'), { mode: 0o600 });
    const daemons = [spawnCli(['daemon', '--config', scheduled]), spawnCli(['daemon', '--config', scheduled])];
    const logs = ['', ''];
    daemons.forEach((d, i) => {
      d.stdout.on('data', (b: Buffer) => (logs[i] += b));
      d.stderr.on('data', (b: Buffer) => (logs[i] += b));
    });
    const worker = spawnCli(['worker', '--config', scheduled, '--concurrency', '2']);
    let wlog = '';
    worker.stdout.on('data', (b: Buffer) => (wlog += b));
    worker.stderr.on('data', (b: Buffer) => (wlog += b));
    try {
      for (let i = 0; i < 100 && !logs.every((l) => /scheduling 1 job on the queue/.test(l)); i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(logs.every((l) => /scheduling 1 job on the queue/.test(l)), logs.join('\n---\n'));
      // Wait for the first tick's backup (a minute at most, plus the cron check).
      const ticked = () => [...manifests().entries()].filter(([dir]) => dir.startsWith('ticked.')).flatMap(([, f]) => f);
      for (let i = 0; i < 900 && ticked().length === 0; i++) await new Promise((r) => setTimeout(r, 100));
      assert.ok(ticked().length > 0, `a scheduled backup ran:\n${wlog}\n${logs.join('\n---\n')}`);
      await new Promise((r) => setTimeout(r, 8000)); // a second job of that tick would have run by now
      // One backup per minute the schedule fired in.
      const minutes = ticked().map((f) => /_(\d{4}-\d\d-\d\dT\d\d-\d\d)-\d\dZ/.exec(f)![1]);
      assert.equal(new Set(minutes).size, minutes.length, `one backup per tick: ${ticked().join(' ')}`);
      assert.equal((wlog.match(/\[ticked\] backup \S+ \(attempt \d+ of \d+\) started on/g) ?? []).length, minutes.length, wlog);
    } finally {
      for (const c of [...daemons, worker]) c.kill('SIGTERM');
      await Promise.all([...daemons, worker].map((c) => (c.exitCode === null ? once(c, 'exit') : undefined)));
    }
  });

  it('examples/fleet: the Kubernetes config loads and its schedules check; the commands of the manifests and the systemd unit are ones the CLI takes', async () => {
    const { parseAllDocuments } = await import('yaml');
    const { buildProgram } = await import('../../src/cli/program.js');
    const dir = path.join(import.meta.dirname, '..', '..', '..', 'examples', 'fleet');
    const docs = parseAllDocuments(readFileSync(path.join(dir, 'kubernetes.yaml'), 'utf8')).map((d) => d.toJS() as { kind: string; data?: Record<string, string>; spec?: { template: { spec: { containers: { args: string[] }[] } } } });
    const map = docs.find((d) => d.kind === 'ConfigMap')!;
    const file = path.join(root, 'k8s.yaml');
    writeFileSync(file, map.data!['dbstash.yaml'], { mode: 0o600 });
    const env = { DBSTASH_QUEUE_URL: pg.url('control'), SHOP_URL: pg.url('app'), AWS_ACCESS_KEY_ID: 'x', AWS_SECRET_ACCESS_KEY: 'y' };
    const checked = await runCli(['daemon', '--config', file, '--dry-run'], { env });
    assert.equal(checked.code, 0, checked.stderr);
    assert.match(checked.stdout, /3 schedules are valid/);
    const unit = readFileSync(path.join(dir, 'dbstash-worker.service'), 'utf8');
    const execStart = /^ExecStart=\S+ (.*)$/m.exec(unit)![1].split(/\s+/);
    const commands = [...docs.filter((d) => d.kind === 'Deployment').map((d) => d.spec!.template.spec.containers[0].args), execStart];
    assert.equal(commands.length, 3);
    for (const argv of commands) {
      const program = await buildProgram(argv[0]);
      const cmd = program.commands.find((c) => c.name() === argv[0])!;
      assert.ok(cmd, argv.join(' '));
      for (const flag of argv.filter((a) => a.startsWith('--'))) assert.ok(cmd.options.some((o) => o.long === flag), `${argv[0]} takes ${flag}`);
    }
  });

  it('the dashboard shows the fleet: live workers with their tags, queues, runs; a job no live worker takes is said to wait, until an eu worker comes', async () => {
    const { newToken } = await import('../../src/web/auth.js');
    const token = newToken();
    const operator = newToken();
    const dash = path.join(root, 'dash.yaml');
    writeFileSync(dash, readFileSync(config, 'utf8') + `dashboard:\n  tokens:\n    - { name: t, role: viewer, hash: "${token.hash}" }\n    - { name: o, role: operator, hash: "${operator.hash}" }\n`, { mode: 0o600 });
    const plain = startWorker();
    await ready(plain);
    const server = spawnCli(['dashboard', '--config', dash, '--listen', '127.0.0.1:0']);
    let slog = '';
    server.stdout.on('data', (d: Buffer) => (slog += d));
    server.stderr.on('data', (d: Buffer) => (slog += d));
    try {
      for (let i = 0; i < 200 && !/listening on http/.test(slog); i++) await new Promise((r) => setTimeout(r, 50));
      const url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(slog)?.[1];
      assert.ok(url, slog);
      const auth = { Authorization: `Bearer ${token.token}` };
      const queued = await runCli(['run', 'backup', 'db3', '--config', config, '--json']);
      assert.equal(queued.code, 0, queued.stderr);
      const jobId = (JSON.parse(queued.stdout) as { job: string }).job;
      type View = { workers: { role: string; pid: number; tags: string; live: boolean }[]; queues: { kind: string; tags: string; queued: number; stuck?: string }[]; runs: { id: string; state: string; worker?: string; database: string }[] };
      let view = (await (await fetch(`${url}/api/v1/fleet`, { headers: auth })).json()) as View;
      assert.ok(view.workers.some((w) => w.role === 'worker' && w.pid === plain.child.pid && w.live && w.tags === ''), JSON.stringify(view.workers));
      const eu = view.queues.find((q) => q.kind === 'backup' && q.tags === 'region=eu')!;
      assert.equal(eu.queued, 1);
      assert.match(eu.stuck ?? '', /1 job wait: no live worker with region=eu takes them/);
      assert.equal(view.runs.find((r) => r.id === jobId)?.state, 'created');
      const overview = await (await fetch(`${url}/`, { headers: auth })).text();
      assert.match(overview, /backup: 1 job wait: no live worker with region=eu takes them/);
      assert.match(overview, /<a href="\/fleet">Fleet<\/a>: 1 live worker/);
      const euWorker = startWorker(['--tags', 'region=eu']);
      await ready(euWorker);
      for (let i = 0; i < 200; i++) {
        view = (await (await fetch(`${url}/api/v1/fleet`, { headers: auth })).json()) as View;
        if (view.runs.find((r) => r.id === jobId)?.state === 'completed') break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const run = view.runs.find((r) => r.id === jobId)!;
      assert.equal(run.state, 'completed');
      assert.equal(run.worker, /worker (\S+) takes jobs/.exec(euWorker.log())![1]);
      assert.equal(view.queues.find((q) => q.kind === 'backup' && q.tags === 'region=eu')!.stuck, undefined);
      assert.ok(view.workers.some((w) => w.pid === euWorker.child.pid && w.tags === 'region=eu' && w.live));
      const page = await (await fetch(`${url}/fleet`, { headers: auth })).text();
      assert.match(page, /<td>region=eu<\/td>/);
      // The Activity page shows the fleet's runs (from the control database), not only this dashboard's jobs.
      const activity = await (await fetch(`${url}/activity`, { headers: auth })).text();
      assert.match(activity, /<h2>Fleet runs<\/h2>/);
      const row = new RegExp(`<tr><td>[^<]*</td><td><a href="/fleet/runs/${jobId}">backup</a></td><td>db3</td><td>[^<]*</td><td><span class="badge fresh">completed</span></td><td>1</td><td>${run.worker!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}</td>`);
      assert.match(activity, row, 'the eu worker\'s run of db3, completed');
      // Each run keeps its events in the control database: its page and the API show them.
      assert.equal('events' in run, false, 'the list of runs leaves the events out');
      const detail = (await (await fetch(`${url}/api/v1/fleet/runs/${jobId}`, { headers: auth })).json()) as { state: string; events: { level: string; message: string }[] };
      assert.equal(detail.state, 'completed');
      const lines = detail.events.map((e) => e.message).join('\n');
      assert.match(lines, new RegExp(`^\\[db3\\] backup ${jobId} \\(attempt 1 of 3\\) started on `, 'm'));
      assert.match(lines, /^\[db3\] backup db3\.\S+ done: \d+ B stored in local$/m);
      assert.match(lines, new RegExp(`^\\[db3\\] backup ${jobId} done on `, 'm'));
      const runPage = await (await fetch(`${url}/fleet/runs/${jobId}`, { headers: auth })).text();
      assert.match(runPage, /<ol id="job-events">[\s\S]*\[db3\] backing up /);
      assert.equal((await fetch(`${url}/api/v1/fleet/runs/00000000-0000-0000-0000-000000000000`, { headers: auth })).status, 404);
      assert.equal((await fetch(`${url}/fleet/runs/not-an-id`, { headers: auth })).status, 404);
      // "Back up now" from the dashboard goes on the queue too: a worker runs it.
      const op = { Authorization: `Bearer ${operator.token}` };
      const started = await fetch(`${url}/api/v1/databases/db5/backup`, { method: 'POST', headers: op });
      assert.equal(started.status, 202);
      const webJob = ((await started.json()) as { job: { id: string } }).job.id;
      let record: { state: string; events: { message: string }[]; error?: string } = { state: 'running', events: [] };
      for (let i = 0; i < 300 && record.state === 'running'; i++) {
        await new Promise((r) => setTimeout(r, 100));
        record = (await (await fetch(`${url}/api/v1/jobs/${webJob}`, { headers: op })).json()) as typeof record;
      }
      assert.equal(record.state, 'succeeded', record.error);
      const said = record.events.map((e) => e.message).join('\n');
      assert.match(said, /queued on the fleet as job \S+; waiting for a worker/);
      const names = [plain, euWorker].map((w) => /worker (\S+) takes jobs/.exec(w.log())![1]);
      assert.ok(names.includes(/backup done by worker (\S+)/.exec(said)?.[1] ?? ''), `${said}\n(workers ${names.join(', ')})`);
      for (const w of [plain, euWorker]) {
        w.child.kill('SIGTERM');
        await once(w.child, 'exit');
      }
    } finally {
      server.kill('SIGTERM');
      if (server.exitCode === null) await once(server, 'exit');
    }
  });

  it('daemon --agent on a database host reports its WAL archiving to the control database: healthy with the recovery point, then failing with the reason', async () => {
    const archiving = await startPostgres({ conf: ['archive_mode = on', "archive_command = '/bin/true'"] });
    const agentConfig = path.join(root, 'agent.yaml');
    writeFileSync(
      agentConfig,
      [`stash: ${path.join(root, 'agent-stash')}`, 'encryption: none', `queue: ${pg.url('control')}`, 'daemon: { listen: "127.0.0.1:0", walCheck: 1s, stateFile: ' + path.join(root, 'agent-state.json') + ' }', 'databases:', '  arch:', `    url: ${archiving.url()}`, '    physical: true', '    walMaxDelay: 2s', ''].join('\n'),
      { mode: 0o600 },
    );
    const agent = spawnCli(['daemon', '--agent', '--config', agentConfig]);
    let alog = '';
    agent.stdout.on('data', (d: Buffer) => (alog += d));
    agent.stderr.on('data', (d: Buffer) => (alog += d));
    const report = async () => {
      const exists = (await pg.query(`SELECT to_regclass('dbstash_fleet.wal_status') AS t`, 'control')).rows[0].t;
      if (!exists) return undefined;
      return (await pg.query(`SELECT host, healthy, problems, last_archived_at FROM dbstash_fleet.wal_status WHERE database = 'arch'`, 'control')).rows[0] as { host: string; healthy: boolean; problems: string[]; last_archived_at: Date | null } | undefined;
    };
    try {
      await archiving.query('CREATE TABLE w AS SELECT generate_series(1, 1000) AS i');
      await archiving.query('SELECT pg_switch_wal()');
      let r: Awaited<ReturnType<typeof report>>;
      for (let i = 0; i < 150; i++) {
        r = await report();
        if (r?.last_archived_at) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.ok(r?.last_archived_at, `the agent reported a recovery point:\n${alog}`);
      assert.equal(r!.healthy, true, JSON.stringify(r));
      assert.match(alog, /dbstash daemon \(fleet agent\): no schedules on the queue/);
      // archive_command now fails: the agent reports it, with the reason.
      await archiving.query("ALTER SYSTEM SET archive_command = '/bin/false'");
      await archiving.query('SELECT pg_reload_conf()');
      await archiving.query('INSERT INTO w SELECT generate_series(1, 1000)');
      await archiving.query('SELECT pg_switch_wal()');
      for (let i = 0; i < 150; i++) {
        r = await report();
        if (r && !r.healthy) break;
        await new Promise((res) => setTimeout(res, 100));
      }
      assert.equal(r!.healthy, false, `${JSON.stringify(r)}\n${alog}`);
      assert.match(r!.problems.join(' '), /archive_command/);
    } finally {
      agent.kill('SIGTERM');
      if (agent.exitCode === null) await once(agent, 'exit');
      await archiving.stop();
    }
  });
});
