/**
 * Throwaway PostgreSQL 15 servers for tests.
 *
 * Each server gets its own temp dir (data, socket, log) and a free port on
 * 127.0.0.1, runs with durability off for speed, and is stopped with
 * `pg_ctl stop -m immediate`. When we are root, initdb/pg_ctl/postgres run as the
 * `postgres` OS user because initdb refuses to run as root. Local (socket)
 * connections are trusted; TCP connections need the password (scram-sha-256).
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { asUser, chownToUser, freePort, isRunning, logTail, run, type Command } from './proc.js';
import { atExit, removeTempDir, tempDir } from './tmp.js';

export const PG_BIN_DIR = '/usr/lib/postgresql/15/bin';

export interface PgServer {
  host: '127.0.0.1';
  port: number;
  user: 'postgres';
  password: string;
  socketDir: string;
  dataDir: string;
  binDir: string;
  /** The postmaster's process id, e.g. for tests that kill the server mid-operation. */
  pid: number;
  /** postgres://postgres:<password>@127.0.0.1:<port>/<db, default 'postgres'> */
  url(db?: string): string;
  query(sql: string, db?: string): Promise<pg.QueryResult>;
  createDatabase(name: string): Promise<void>;
  /** Runs an SQL file with `psql -v ON_ERROR_STOP=1`; rejects with psql's output on error. */
  psqlFile(file: string, db?: string): Promise<void>;
  /** Stops the server immediately (unless it is already gone) and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
}

const SERVER_SETTINGS = [
  'listen_addresses=127.0.0.1',
  'fsync=off',
  'full_page_writes=off',
  'synchronous_commit=off',
  'max_connections=50',
];
const PORT_ATTEMPTS = 3;

export async function startPostgres(opts: { password?: string; conf?: string[] } = {}): Promise<PgServer> {
  for (const tool of ['initdb', 'pg_ctl', 'psql']) {
    const file = path.join(PG_BIN_DIR, tool);
    if (!existsSync(file)) throw new Error(`[harness/postgres] ${file} not found: install postgresql-15`);
  }
  const password = opts.password ?? randomBytes(12).toString('hex');
  const root = tempDir('dbstash-pg');
  const dataDir = path.join(root, 'data');
  const socketDir = path.join(root, 'run');
  const logFile = path.join(root, 'postgres.log');
  const pwFile = path.join(root, 'pwfile');
  mkdirSync(socketDir);
  writeFileSync(pwFile, `${password}\n`, { mode: 0o600 });
  await chownToUser('postgres', root);

  const env = envWithoutPgVars();
  const runOpts = { env, cwd: root };
  const pgTool = (tool: string, args: string[]): Command =>
    asUser('postgres', path.join(PG_BIN_DIR, tool), args);
  const runPgTool = (tool: string, args: string[]) =>
    run(`[harness/postgres] ${tool}`, pgTool(tool, args), runOpts);
  const stopArgs = ['stop', '-m', 'immediate', '-w', '-D', dataDir];
  const stopNow = () => {
    const { cmd, args } = pgTool('pg_ctl', stopArgs);
    spawnSync(cmd, args, { ...runOpts, stdio: 'ignore' });
  };
  const unregister = atExit(stopNow);

  let port: number;
  try {
    await initdb(dataDir, pwFile, (args) => runPgTool('initdb', args));
    // Settings a base backup carries along (postgresql.conf is part of it), unlike -c options.
    if (opts.conf?.length) appendFileSync(path.join(dataDir, 'postgresql.conf'), `\n${opts.conf.join('\n')}\n`);
    port = await startOnFreePort(socketDir, logFile, (args) => runPgTool('pg_ctl', [...args, '-D', dataDir]));
  } catch (err) {
    unregister();
    stopNow();
    await removeTempDir(root);
    throw err;
  }

  let stopped = false;
  const server: PgServer = {
    host: '127.0.0.1',
    port,
    user: 'postgres',
    password,
    socketDir,
    dataDir,
    binDir: PG_BIN_DIR,
    pid: Number(readFileSync(path.join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]),
    url: (db = 'postgres') =>
      `postgres://postgres:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(db)}`,
    async query(sql, db = 'postgres') {
      const client = new pg.Client({ host: '127.0.0.1', port, user: 'postgres', password, database: db });
      await client.connect();
      try {
        return await client.query(sql);
      } finally {
        await client.end();
      }
    },
    async createDatabase(name) {
      await server.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
    },
    async psqlFile(file, db = 'postgres') {
      const psql = { cmd: path.join(PG_BIN_DIR, 'psql'), args: ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', server.url(db), '-f', file] };
      await run(`[harness/postgres] psql -f ${file}`, psql, { env });
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      unregister();
      // A test may have killed the postmaster on purpose; then there is nothing to stop.
      try {
        if (isRunning(server.pid)) await runPgTool('pg_ctl', stopArgs);
      } catch (err) {
        if (isRunning(server.pid)) throw err;
      } finally {
        await removeTempDir(root);
      }
    },
  };
  return server;
}

/** initdb with UTF8 encoding, in the C.UTF-8 locale where the system has it, else in C. */
async function initdb(dataDir: string, pwFile: string, initdbWith: (args: string[]) => Promise<unknown>): Promise<void> {
  const args = [
    '-D', dataDir, '-U', 'postgres', `--pwfile=${pwFile}`,
    '--auth-local=trust', '--auth-host=scram-sha-256', '--encoding=UTF8',
    '--no-sync', '--no-instructions',
  ];
  try {
    await initdbWith([...args, '--locale=C.UTF-8']);
  } catch (err) {
    if (!/invalid locale name/.test((err as Error).message)) throw err;
    await rm(dataDir, { recursive: true, force: true });
    await initdbWith([...args, '--locale=C']);
  }
}

/**
 * `pg_ctl start` on a port that was free a moment ago; picks another port when
 * something grabbed it in between. Failures carry the tail of the server log.
 */
async function startOnFreePort(socketDir: string, logFile: string, pgCtl: (args: string[]) => Promise<unknown>): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const options = [`-p ${port}`, `-k '${socketDir}'`, ...SERVER_SETTINGS.map((s) => `-c ${s}`)].join(' ');
    try {
      await pgCtl(['start', '-w', '-t', '20', '-l', logFile, '-o', options]);
      return port;
    } catch (err) {
      const log = logTail(logFile);
      if (attempt < PORT_ATTEMPTS && /could not bind|already in use/i.test(log)) continue;
      throw new Error(`${(err as Error).message}\n--- last lines of ${logFile} ---\n${log}`);
    }
  }
}

/** Our environment minus PG* variables, so a stray PGHOST or PGDATA cannot redirect the tools. */
function envWithoutPgVars(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([name]) => !name.startsWith('PG')));
}
