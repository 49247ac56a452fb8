// A throwaway PostgreSQL server for restore drills, started with the installed binaries: initdb
// into a private temp dir, listening only on a Unix socket in that dir (no TCP port to collide
// with, nothing reachable from outside), trust authentication for the socket. When dbstash runs
// as root, initdb and the server run as the `postgres` OS user, because PostgreSQL refuses root.
// The postmaster is dbstash's own child, started like every tool (not daemonised by pg_ctl), so it
// dies with dbstash even on kill -9; its own children follow it. stop() stops it immediately and
// removes the directory; a process exit does the same.

import { spawnSync } from 'node:child_process';
import { chmodSync, readFileSync, rmSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { makeScratchDirSync } from '../../core/scratch.js';
import { PreflightError, VerifyUnavailableError } from '../../core/errors.js';
import type { ScratchServer, Target } from '../engine.js';
import { childGuard, guardedCommand, lookupUser, runTool, startTool, stderrSummary, type RunAs, type RunningTool } from '../process.js';
import { findPgTool } from './tools.js';

const SERVER_USER = 'postgres';
const STARTUP_TIMEOUT_MS = 60_000;

/** Whether postmaster.pid says the server accepts connections (its status line, PostgreSQL 10+). */
function ready(data: string): boolean {
  try {
    return readFileSync(path.join(data, 'postmaster.pid'), 'utf8').split('\n')[7]?.trim() === 'ready';
  } catch {
    return false;
  }
}

async function waitUntilReady(data: string, server: RunningTool, signal?: AbortSignal): Promise<void> {
  let exited = false;
  void server.exit.then(() => (exited = true));
  const deadline = Date.now() + STARTUP_TIMEOUT_MS;
  while (!ready(data)) {
    if (exited) throw new Error(`the server did not start: ${stderrSummary((await server.exit).stderr, 3)}`);
    signal?.throwIfAborted();
    if (Date.now() > deadline) throw new Error(`the server did not accept connections within ${STARTUP_TIMEOUT_MS / 1000} s`);
    await sleep(50);
  }
}

export async function startScratchPostgres(opts: { tempDir: string; signal?: AbortSignal }): Promise<ScratchServer> {
  let initdb;
  try {
    initdb = await findPgTool('initdb', 0);
  } catch (err) {
    throw new VerifyUnavailableError(`cannot start a scratch PostgreSQL for the drill: ${(err as PreflightError).message.replace(/^\[postgres\] /, '')}`, {
      hint: 'install the PostgreSQL server package (apt-get install postgresql), or give a scratch server with --scratch-url',
    });
  }
  const binDir = path.dirname(initdb.path);
  const pgCtl = path.join(binDir, 'pg_ctl');
  let runAs: RunAs | undefined;
  if (process.getuid?.() === 0) {
    runAs = await lookupUser(SERVER_USER);
    if (!runAs) {
      throw new VerifyUnavailableError(`cannot start a scratch PostgreSQL for the drill: running as root, and there is no "${SERVER_USER}" OS user to run it as`, {
        hint: 'run dbstash as another user, create the postgres user, or give a scratch server with --scratch-url',
      });
    }
  }
  const dir = makeScratchDirSync(opts.tempDir, 'pgdrill');
  const data = path.join(dir, 'data');
  const port = randomInt(20000, 60000);
  // initdb runs postgres processes of its own: its group goes when it goes.
  const run = (bin: string, args: string[]) => runTool(bin, args, { signal: opts.signal, runAs, workers: true });
  let server: RunningTool | undefined;

  const stopArgs = ['stop', '-m', 'immediate', '-w', '-D', data];
  // On the way out (a second Ctrl-C among others) nothing waits for a server that may not answer:
  // the postmaster is killed, and its own processes follow it.
  const stopNow = () => {
    if (server && server.child.exitCode === null && server.child.signalCode === null) {
      if (childGuard().active) server.child.kill('SIGKILL');
      else spawnSync(...guardedCommand(pgCtl, [...stopArgs, '-t', '5'], { runAs }), { stdio: 'ignore' });
    }
    try {
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
    } catch {
      /* the next backup removes it (the name says whose it was) */
    }
  };
  process.on('exit', stopNow);
  const stop = async () => {
    process.off('exit', stopNow);
    if (server) {
      // Not tied to the abort signal: stopping is exactly what an interrupted run must still do.
      await runTool(pgCtl, stopArgs, { runAs }).catch(() => undefined);
      if (server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGKILL');
      await server.exit;
    }
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    const socket = path.join(dir, `.s.PGSQL.${port}`);
    if (Buffer.byteLength(socket) > 107) {
      throw new Error(`its socket path ${socket} is longer than the 107 bytes a Unix socket path may have (choose a shorter --temp-dir)`);
    }
    if (runAs) {
      const chown = await runTool('chown', ['-R', `${SERVER_USER}:`, dir]);
      if (chown.code !== 0) throw new Error(`running as root, and the "${SERVER_USER}" OS user cannot own ${dir}: ${stderrSummary(chown.stderr)}`);
      const reach = await run('test', ['-x', dir]);
      if (reach.code !== 0) throw new Error(`the "${SERVER_USER}" OS user cannot enter ${opts.tempDir} (make it traversable, chmod o+x, or choose another --temp-dir)`);
    } else {
      chmodSync(dir, 0o700);
    }
    const base = ['-D', data, '-U', 'postgres', '--auth=trust', '--encoding=UTF8', '--no-sync', '--no-instructions'];
    let init = await run(initdb.path, [...base, '--locale=C.UTF-8']);
    if (init.code !== 0 && /locale/i.test(init.stderr)) {
      rmSync(data, { recursive: true, force: true });
      init = await run(initdb.path, [...base, '--locale=C']);
    }
    if (init.code !== 0) throw new Error(`initdb failed: ${stderrSummary(init.stderr)}`);
    const settings = ['listen_addresses=', 'fsync=off', 'full_page_writes=off', 'synchronous_commit=off'].flatMap((s) => ['-c', s]);
    server = startTool(path.join(binDir, 'postgres'), ['-D', data, '-p', String(port), '-k', dir, ...settings], { runAs });
    server.stdout.resume();
    await waitUntilReady(data, server, opts.signal);
  } catch (err) {
    await stop();
    if (opts.signal?.aborted) throw opts.signal.reason;
    throw new VerifyUnavailableError(`cannot start a scratch PostgreSQL (${initdb.version}) for the drill: ${(err as Error).message}`, {
      hint: 'give a scratch server with --scratch-url, or run the drill where the PostgreSQL server binaries work',
    });
  }
  const target: Target = {
    engine: 'postgres',
    database: 'postgres',
    displayUrl: `postgres://postgres@localhost/postgres?host=${dir}`,
    host: dir,
    port,
    user: 'postgres',
    params: {},
    options: { binDir },
  };
  return { target, serverVersion: initdb.version, stop };
}
