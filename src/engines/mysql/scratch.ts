// A throwaway local MariaDB server for restore drills: mariadb-install-db into a private temp
// directory, mariadbd on its own socket with networking off (no port to collide with), root
// without a password over that socket. When dbstash runs as root the server runs as the OS user
// "mysql" (mariadbd refuses root). mariadbd is started like every tool, so it dies with dbstash,
// also on kill -9 (as root it is switched to "mysql" by setpriv, not by its own --user, which
// would clear the parent-death signal). stop() kills the server and removes the directory; so
// does a failed start.

import type { ChildProcess } from 'node:child_process';
import { chown, mkdir, rm, stat } from 'node:fs/promises';
import { once } from 'node:events';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { VerifyUnavailableError } from '../../core/errors.js';
import { makeScratchDir } from '../../core/scratch.js';
import type { ScratchServer, Target } from '../engine.js';
import { childGuard, findExecutable, lookupUser, pathDirs, runTool, startTool, type RunAs } from '../process.js';
import { findMyTool, INSTALL_DB_TOOLS, SERVER_TOOLS } from './tools.js';

const STARTUP_TIMEOUT_MS = 60_000;
const SETTINGS = ['--skip-log-bin', '--character-set-server=utf8mb4', '--innodb-buffer-pool-size=64M', '--max-allowed-packet=1G'];
const isRoot = process.getuid?.() === 0;

/** Every directory from `dir` up to / lets other users through (mariadbd runs as "mysql"). */
async function traversable(dir: string): Promise<boolean> {
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    if (((await stat(d)).mode & 0o001) === 0) return false;
    if (d === path.dirname(d)) return true;
  }
}

/** Where the scratch directory goes: the temp dir, unless root runs us and "mysql" cannot reach it. */
async function scratchParent(tempDir: string): Promise<string> {
  if (!isRoot || (await traversable(tempDir))) return tempDir;
  if (await traversable(os.tmpdir())) return os.tmpdir();
  throw new VerifyUnavailableError(`[mysql] cannot start a scratch MariaDB server: the OS user "mysql" cannot reach ${tempDir}`, {
    hint: 'give a --temp-dir that other users may traverse (chmod o+x on it and its parents)',
  });
}

async function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGKILL');
  await exited;
}

export async function startScratchServer(opts: { tempDir: string; signal?: AbortSignal }): Promise<ScratchServer> {
  const unavailable = (what: string, hint?: string) => new VerifyUnavailableError(`[mysql] cannot start a scratch MariaDB server: ${what}`, { hint });
  const sbin = ['/usr/sbin', '/usr/libexec', '/usr/local/sbin'];
  // Never run mariadb-install-db to ask its version: it has no --version and would install.
  let installPath: string | undefined;
  for (const name of INSTALL_DB_TOOLS) installPath ??= await findExecutable(name, [...pathDirs(), ...sbin]);
  if (!installPath) throw unavailable('mariadb-install-db not found', 'install mariadb-server, or give a scratch server in the config (scratchUrl)');
  const server = await findMyTool(SERVER_TOOLS, undefined, sbin).catch(() => {
    throw unavailable('mariadbd not found', 'install mariadb-server, or give a scratch server in the config (scratchUrl)');
  });
  const dir = await makeScratchDir(await scratchParent(opts.tempDir || os.tmpdir()), 'mydrill');
  const dataDir = path.join(dir, 'data');
  const socket = path.join(dir, 'mysqld.sock');
  // The server's own temp files stay in the scratch dir: the system temp dir ($TMPDIR) may be one
  // the "mysql" OS user cannot write, and InnoDB then refuses to start.
  const serverTmp = path.join(dir, 'tmp');
  const settings = [`--tmpdir=${serverTmp}`, ...SETTINGS];
  const userArgs: string[] = [];
  let runAs: RunAs | undefined;
  let child: ChildProcess | undefined;
  const fail = async (err: Error): Promise<never> => {
    await stopProcess(child);
    await rm(dir, { recursive: true, force: true });
    throw err;
  };
  try {
    await mkdir(serverTmp, { mode: 0o700 });
    if (isRoot) {
      const mysqlUser = await lookupUser('mysql');
      if (!mysqlUser) throw unavailable('running as root and there is no "mysql" OS user for mariadbd', 'run as another user or create the mysql user');
      await chown(dir, mysqlUser.uid, mysqlUser.gid);
      await chown(serverTmp, mysqlUser.uid, mysqlUser.gid);
      userArgs.push('--user=mysql');
      if (childGuard().active) runAs = mysqlUser;
    }
    const installed = await runTool(
      installPath,
      ['--no-defaults', `--datadir=${dataDir}`, '--auth-root-authentication-method=normal', '--skip-test-db', ...settings, ...userArgs],
      // A script that runs mariadbd --bootstrap: its group goes when it goes.
      { signal: opts.signal, workers: true },
    );
    if (installed.code !== 0) throw unavailable(`mariadb-install-db failed: ${installed.stderr.trim().split('\n').slice(-2).join(' / ')}`);
    let log = '';
    const serverArgs = ['--no-defaults', `--datadir=${dataDir}`, `--socket=${socket}`, '--skip-networking', `--pid-file=${path.join(dir, 'mariadbd.pid')}`, ...settings];
    const running = startTool(server.path, runAs ? serverArgs : [...serverArgs, ...userArgs], { runAs });
    running.stdout.resume();
    child = running.child;
    child.stderr!.on('data', (d: string) => (log = (log + d).slice(-4096)));
    const deadline = Date.now() + STARTUP_TIMEOUT_MS;
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw unavailable(`mariadbd exited during startup: ${log.trim().split('\n').slice(-3).join(' / ')}`);
      if (opts.signal?.aborted) throw unavailable('interrupted');
      try {
        const conn = await mysql.createConnection({ socketPath: socket, user: 'root' });
        await conn.end();
        break;
      } catch {
        if (Date.now() > deadline) throw unavailable(`mariadbd did not accept connections within ${STARTUP_TIMEOUT_MS / 1000} s`);
        await sleep(100);
      }
    }
  } catch (err) {
    return fail(err as Error);
  }
  const target: Target = {
    engine: 'mysql',
    database: 'mysql',
    displayUrl: `mysql://root@localhost/mysql?socket=${encodeURIComponent(socket)}`,
    host: 'localhost',
    user: 'root',
    params: { socket },
    options: {},
  };
  let stopped = false;
  return {
    target,
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopProcess(child);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
