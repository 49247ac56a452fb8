/**
 * Throwaway MariaDB servers for tests.
 *
 * Each server gets its own temp dir (data, socket, pid file, log) and a free port
 * on 127.0.0.1, runs with durability off for speed, and is stopped with SIGKILL:
 * nothing in it is worth a clean shutdown. mariadb-install-db creates a root
 * account without a password; once the server is up we give root@localhost and
 * root@127.0.0.1 the server's password over the socket, so every later
 * connection, TCP or socket, must authenticate.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync } from 'node:fs';
import { once } from 'node:events';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { chownToUser, freePort, isRoot, logTail, run } from './proc.js';
import { atExit, removeTempDir, tempDir } from './tmp.js';

export const MARIADBD = '/usr/sbin/mariadbd';
export const MARIADB_INSTALL_DB = '/usr/bin/mariadb-install-db';

export interface MariaServer {
  host: '127.0.0.1';
  port: number;
  socket: string;
  user: 'root';
  password: string;
  dataDir: string;
  /** mariadbd's process id, e.g. for tests that kill the server mid-operation. */
  pid: number;
  /** mysql://root:<password>@127.0.0.1:<port>/<db, default none> */
  url(db?: string): string;
  /** Runs SQL over TCP as root (multiple statements allowed) and returns mysql2's result rows. */
  query<T extends mysql.QueryResult = mysql.RowDataPacket[]>(sql: string, db?: string): Promise<T>;
  createDatabase(name: string): Promise<void>;
  /** Kills the server and removes its temp dir. Idempotent. */
  stop(): Promise<void>;
}

const SERVER_SETTINGS = [
  '--skip-name-resolve',
  '--skip-log-bin',
  '--character-set-server=utf8mb4',
  '--innodb-buffer-pool-size=64M',
  '--innodb-log-file-size=16M',
  '--innodb-flush-log-at-trx-commit=0',
  '--innodb-doublewrite=0',
];
const STARTUP_TIMEOUT_MS = 20_000;
const PORT_ATTEMPTS = 3;

export async function startMariadb(): Promise<MariaServer> {
  for (const file of [MARIADBD, MARIADB_INSTALL_DB]) {
    if (!existsSync(file)) throw new Error(`[harness/mariadb] ${file} not found: install mariadb-server`);
  }
  const password = randomBytes(12).toString('hex');
  const root = tempDir('dbstash-maria');
  const dataDir = path.join(root, 'data');
  const socket = path.join(root, 'mysqld.sock');
  const logFile = path.join(root, 'mariadbd.log');
  const pidFile = path.join(root, 'mariadbd.pid');
  // Its own tmpdir: mariadbd would otherwise use $TMPDIR, which the mysql user may not be able to write.
  const tmpDir = path.join(root, 'tmp');
  mkdirSync(tmpDir);
  closeSync(openSync(logFile, 'a'));
  await chownToUser('mysql', root);
  const commonArgs = ['--no-defaults', `--datadir=${dataDir}`, `--tmpdir=${tmpDir}`, ...SERVER_SETTINGS, ...(isRoot ? ['--user=mysql'] : [])];

  let mariadbd: ChildProcess | undefined;
  const unregister = atExit(() => mariadbd?.kill('SIGKILL'));
  const spawnMariadbd = (port: number): ChildProcess => {
    const logFd = openSync(logFile, 'a');
    mariadbd = spawn(MARIADBD, [
      ...commonArgs, `--socket=${socket}`, `--port=${port}`, '--bind-address=127.0.0.1', `--pid-file=${pidFile}`, `--log-error=${logFile}`,
    ], { stdio: ['ignore', logFd, logFd] });
    closeSync(logFd);
    return mariadbd;
  };

  let port: number;
  try {
    await run('[harness/mariadb] mariadb-install-db', {
      cmd: MARIADB_INSTALL_DB,
      args: [...commonArgs, '--auth-root-authentication-method=normal', '--skip-test-db'],
    });
    port = await startOnFreePort(spawnMariadbd, socket, logFile, password);
    // A forgotten stop() must not keep the test process alive; the exit hook kills mariadbd.
    mariadbd?.unref();
  } catch (err) {
    unregister();
    await killAndWait(mariadbd);
    await removeTempDir(root);
    throw err;
  }

  let stopped = false;
  const server: MariaServer = {
    host: '127.0.0.1',
    port,
    socket,
    user: 'root',
    password,
    dataDir,
    pid: Number(readFileSync(pidFile, 'utf8')),
    url: (db = '') => `mysql://root:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(db)}`,
    async query<T extends mysql.QueryResult>(sql: string, db?: string) {
      const conn = await mysql.createConnection({
        host: '127.0.0.1', port, user: 'root', password, database: db, multipleStatements: true,
      });
      try {
        const [result] = await conn.query<T>(sql);
        return result;
      } finally {
        await conn.end();
      }
    },
    async createDatabase(name) {
      await server.query(`CREATE DATABASE ${mysql.escapeId(name)}`);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      unregister();
      await killAndWait(mariadbd);
      await removeTempDir(root);
    },
  };
  return server;
}

/**
 * Starts mariadbd on a port that was free a moment ago and secures root; picks
 * another port when something grabbed it in between. Failures carry the log tail.
 */
async function startOnFreePort(spawnAt: (port: number) => ChildProcess, socket: string, logFile: string, password: string): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const mariadbd = spawnAt(port);
    try {
      await setRootPassword(await connectWhenReady(mariadbd, socket), password);
      return port;
    } catch (err) {
      await killAndWait(mariadbd);
      const log = logTail(logFile);
      if (attempt < PORT_ATTEMPTS && /Address already in use/.test(log)) continue;
      throw new Error(`${(err as Error).message}\n--- last lines of ${logFile} ---\n${log}`);
    }
  }
}

async function killAndWait(mariadbd: ChildProcess | undefined): Promise<void> {
  if (!mariadbd?.pid || mariadbd.exitCode !== null || mariadbd.signalCode !== null) return;
  const exited = once(mariadbd, 'exit');
  mariadbd.ref(); // a started server is unref'd; here we do want to wait for it
  mariadbd.kill('SIGKILL');
  await exited;
}

/** A root connection over the socket, once mariadbd accepts one; rejects if mariadbd exits or never gets there. */
async function connectWhenReady(mariadbd: ChildProcess, socket: string): Promise<mysql.Connection> {
  let ended: string | undefined;
  mariadbd.once('exit', (code, signal) => (ended = signal ? `was killed by ${signal}` : `exited with code ${code}`));
  mariadbd.once('error', (err) => (ended = `could not be started (${err.message})`));
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  for (;;) {
    if (ended) throw new Error(`[harness/mariadb] mariadbd ${ended} during startup`);
    try {
      return await mysql.createConnection({ socketPath: socket, user: 'root' });
    } catch (err) {
      if (Date.now() > deadline) {
        throw new Error(`[harness/mariadb] mariadbd not accepting connections on ${socket} after ${STARTUP_TIMEOUT_MS} ms: ${(err as Error).message}`);
      }
      await sleep(50);
    }
  }
}

async function setRootPassword(conn: mysql.Connection, password: string): Promise<void> {
  try {
    await conn.query(`CREATE USER IF NOT EXISTS 'root'@'127.0.0.1'`);
    await conn.query(`GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION`);
    await conn.query(`ALTER USER 'root'@'localhost' IDENTIFIED BY ?, 'root'@'127.0.0.1' IDENTIFIED BY ?`, [password, password]);
  } finally {
    await conn.end();
  }
}
