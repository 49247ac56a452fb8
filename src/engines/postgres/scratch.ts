// A throwaway PostgreSQL server for restore drills, started with the installed binaries: initdb
// into a private temp dir, listening only on a Unix socket in that dir (no TCP port to collide
// with, nothing reachable from outside), trust authentication for the socket. When dbstash runs
// as root, initdb and the server run as the `postgres` OS user, because PostgreSQL refuses root.
// stop() stops it immediately and removes the directory; a process exit does the same.

import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import path from 'node:path';
import { PreflightError, VerifyUnavailableError } from '../../core/errors.js';
import type { ScratchServer, Target } from '../engine.js';
import { runTool, stderrSummary } from '../process.js';
import { findPgTool } from './tools.js';

const SERVER_USER = 'postgres';

function asServerUser(bin: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['runuser', ['-u', SERVER_USER, '--', bin, ...args]] : [bin, args];
}

function logTail(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-3).join(' / ');
  } catch {
    return '';
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
  const dir = mkdtempSync(path.join(opts.tempDir, 'dbstash-scratch-'));
  const data = path.join(dir, 'data');
  const log = path.join(dir, 'server.log');
  const port = randomInt(20000, 60000);
  const run = (bin: string, args: string[]) => runTool(...asServerUser(bin, args), { signal: opts.signal });

  const stopNow = () => {
    spawnSync(...asServerUser(pgCtl, ['stop', '-m', 'immediate', '-w', '-D', data]), { stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  };
  process.on('exit', stopNow);
  const stop = async () => {
    process.off('exit', stopNow);
    // Not tied to the abort signal: stopping is exactly what an interrupted run must still do.
    await runTool(...asServerUser(pgCtl, ['stop', '-m', 'immediate', '-w', '-D', data])).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    if (process.getuid?.() === 0) {
      const chown = await runTool('chown', ['-R', `${SERVER_USER}:`, dir]);
      if (chown.code !== 0) throw new Error(`running as root, and the "${SERVER_USER}" OS user cannot own ${dir}: ${stderrSummary(chown.stderr)}`);
      const reach = await runTool(...asServerUser('test', ['-x', dir]));
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
    const settings = `-p ${port} -k ${dir} -c listen_addresses='' -c fsync=off -c full_page_writes=off -c synchronous_commit=off`;
    const start = await run(pgCtl, ['start', '-w', '-t', '60', '-D', data, '-l', log, '-o', settings]);
    if (start.code !== 0) throw new Error(`the server did not start: ${logTail(log) || stderrSummary(start.stderr)}`);
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
