// A dashboard over real databases for the web tests: `dbstash dashboard` started as a process
// with a config holding a SQLite database (with a hostile label and table name), a PostgreSQL
// database on a throwaway server, one with a wrong password, three users (one per role) and two
// API tokens.

import { once } from 'node:events';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { hashPassword, newToken } from '../../src/web/auth.js';
import { startPostgres, type PgServer } from '../harness/postgres.js';
import { spawnCli } from '../harness/run.js';
import { tempDir } from '../harness/tmp.js';

export const HOSTILE = '<img src=x onerror=alert(1)>';
export const PASSWORDS = { admin: 'admin password 1', operator: 'operator password 2', viewer: 'viewer password 3' };

export interface DashboardFixture {
  url: string;
  root: string;
  stash: string;
  config: string;
  pg: PgServer;
  tokens: { viewer: string; operator: string; admin: string };
  log(): string;
  /** Stops the dashboard (then runs `between`) and starts it again on the same config (a new URL). */
  restart(between?: () => void | Promise<void>): Promise<void>;
  stop(): Promise<void>;
}

export async function startDashboardFixture(): Promise<DashboardFixture> {
  const root = tempDir('dbstash-web');
  const stash = path.join(root, 'stash');
  const shop = path.join(root, 'shop.db');
  const db = new Database(shop);
  db.exec(`CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL); CREATE TABLE "<script>alert(2)</script>" (id INTEGER PRIMARY KEY)`);
  const insert = db.prepare('INSERT INTO orders (total) VALUES (?)');
  for (let i = 0; i < 500; i++) insert.run(i * 1.5);
  db.close();
  const pg = await startPostgres();
  await pg.createDatabase('app');
  await pg.query('CREATE TABLE items AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 1000) g', 'app');
  const viewer = newToken();
  const operator = newToken();
  const admin = newToken();
  const config = path.join(root, 'dbstash.yaml');
  const users = await Promise.all(
    (Object.keys(PASSWORDS) as (keyof typeof PASSWORDS)[]).map(async (role) => `    - { name: ${role}, role: ${role}, password: "${await hashPassword(PASSWORDS[role])}" }`),
  );
  writeFileSync(
    config,
    [
      `stash: ${stash}`,
      'encryption: none',
      'daemon: { listen: "127.0.0.1:0" }',
      'notifications:',
      '  - { type: webhook, url: "http://127.0.0.1:9/hooks/T0KEN-IN-THE-PATH", events: [anomaly], headers: { Authorization: "Bearer header-secret" } }',
      'dashboard:',
      '  users:',
      ...users,
      '  tokens:',
      `    - { name: viewer-token, role: viewer, hash: "${viewer.hash}" }`,
      `    - { name: operator-token, role: operator, hash: "${operator.hash}" }`,
      `    - { name: admin-token, role: admin, hash: "${admin.hash}" }`,
      'databases:',
      '  shop:',
      `    url: sqlite://${shop}`,
      '    retention: { keepLast: 1 }',
      '    labels:',
      `      note: "${HOSTILE}"`,
      '  pg:',
      `    url: ${pg.url('app')}`,
      '    schedule: { backup: "0 3 * * *", timezone: UTC }',
      '  broken:',
      `    url: postgres://postgres:wrong-password@127.0.0.1:${pg.port}/app`,
      '',
    ].join('\n'),
    { mode: 0o600 },
  );
  let child: ReturnType<typeof spawnCli>;
  let log = '';
  const launch = async (): Promise<string> => {
    child = spawnCli(['dashboard', '--config', config, '--listen', '127.0.0.1:0']);
    let mine = '';
    const take = (d: Buffer) => {
      mine += d;
      log += d;
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    for (let i = 0; i < 200 && !/listening on http/.test(mine) && child.exitCode === null; i++) await new Promise((r) => setTimeout(r, 50));
    const found = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(mine)?.[1];
    if (!found) {
      child.kill('SIGKILL');
      await pg.stop();
      throw new Error(`the dashboard did not start:\n${mine}`);
    }
    return found;
  };
  const halt = async () => {
    if (child.exitCode === null) {
      child.kill('SIGTERM');
      await once(child, 'exit');
    }
  };
  const fixture: DashboardFixture = {
    url: await launch(),
    root,
    stash,
    config,
    pg,
    tokens: { viewer: viewer.token, operator: operator.token, admin: admin.token },
    log: () => log,
    async restart(between) {
      await halt();
      await between?.();
      fixture.url = await launch();
    },
    async stop() {
      await halt();
      await pg.stop();
    },
  };
  return fixture;
}
/** Logs in with the form; returns the session cookie and the page's CSRF token. */
export async function login(url: string, user: string, password: string): Promise<{ cookie: string; csrf: string }> {
  const res = await fetch(`${url}/login`, { method: 'POST', body: new URLSearchParams({ user, password }), redirect: 'manual' });
  if (res.status !== 303) throw new Error(`login as ${user}: ${res.status} ${await res.text()}`);
  const cookie = (res.headers.get('set-cookie') ?? '').split(';')[0];
  const page = await (await fetch(`${url}/`, { headers: { cookie } })).text();
  const csrf = /<meta name="csrf-token" content="([^"]+)">/.exec(page)?.[1] ?? '';
  return { cookie, csrf };
}

export async function waitForJob(url: string, id: string, headers: Record<string, string>, timeoutMs = 60_000): Promise<{ state: string; error?: string; result?: unknown; events: { message: string }[] }> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const job = (await (await fetch(`${url}/api/v1/jobs/${id}`, { headers })).json()) as { state: string; error?: string; events: { message: string }[] };
    if (job.state !== 'running') return job;
    if (Date.now() > until) throw new Error(`job ${id} still running after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
