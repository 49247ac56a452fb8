// Parallel dumps and restores of PostgreSQL (--jobs N) against single-job ones on the same
// database, backups and restores alternated round by round so that both see the same machine
// load. The backup side is also a scenario of the alternated rounds (dbstash_jobs in
// scenarios.ts); this adds the restore side, which only exists once a backup does.
//
//   measureParallel({ server, database, jobs, rounds, workDir, cliPath }) →
//     { backup: { singleMs, parallelMs, ratio }, restore: { singleMs, parallelMs, ratio }, rounds }
//
// Wall times are medians. Restores go through `dbstash restore --to <new database> --yes`, so they
// include the integrity check the restore does first; each restore target is dropped afterwards.

import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { PgServer } from '../test/harness/postgres.js';
import { measure, median, type Measurement } from './measure.js';
import { pgEnv } from './database.js';

export interface ParallelOptions {
  server: PgServer;
  database: string;
  jobs: number;
  rounds: number;
  workDir: string;
  cliPath: string;
  log?: (message: string) => void;
}

export interface ParallelSide {
  singleMs: number;
  parallelMs: number;
  /** parallelMs / singleMs: below 1 means --jobs is faster. */
  ratio: number;
}

export interface ParallelResult {
  jobs: number;
  rounds: number;
  backup: ParallelSide;
  restore: ParallelSide;
}

function checked(m: Measurement, what: string): Measurement {
  if (!m.stdout.trim().startsWith('{')) throw new Error(`${what} printed no JSON result: ${m.stdout.slice(0, 300)}`);
  return m;
}

export async function measureParallel(opts: ParallelOptions): Promise<ParallelResult> {
  const { server, database, jobs, workDir, cliPath } = opts;
  const log = opts.log ?? (() => {});
  const env = { ...pgEnv(server, database), DATABASE_URL: server.url(database) };
  const cli = (args: string[]) => ({ cmd: process.execPath, args: [cliPath, ...args], env, cwd: workDir, captureStdout: true });
  const times = { backup: { single: [] as number[], parallel: [] as number[] }, restore: { single: [] as number[], parallel: [] as number[] } };

  for (let round = 1; round <= opts.rounds; round++) {
    for (const mode of round % 2 ? (['single', 'parallel'] as const) : (['parallel', 'single'] as const)) {
      const stash = path.join(workDir, `parallel-${mode}-${round}`);
      const jobArgs = mode === 'parallel' ? ['--jobs', String(jobs)] : [];
      const backup = checked(await measure(cli(['backup', '--output-dir', stash, '--env', 'dev', '--json', ...jobArgs])), 'dbstash backup');
      const id = (JSON.parse(backup.stdout) as { id: string }).id;
      times.backup[mode].push(backup.wallMs);
      const target = `${database}_restored_${mode}_${round}`;
      const restore = checked(await measure(cli(['restore', id, '--output-dir', stash, '--to', server.url(target), '--yes', '--json', ...jobArgs])), 'dbstash restore');
      times.restore[mode].push(restore.wallMs);
      log(`round ${round} ${mode}: backup ${(backup.wallMs / 1000).toFixed(2)} s, restore ${(restore.wallMs / 1000).toFixed(2)} s`);
      await server.query(`DROP DATABASE "${target}"`);
      await fsp.rm(stash, { recursive: true, force: true });
    }
  }
  const side = (t: { single: number[]; parallel: number[] }): ParallelSide => {
    const singleMs = median(t.single);
    const parallelMs = median(t.parallel);
    return { singleMs, parallelMs, ratio: parallelMs / singleMs };
  };
  return { jobs, rounds: opts.rounds, backup: side(times.backup), restore: side(times.restore) };
}
