// The daemon's memory across restarts: when each job last ran and how it ended, so that a run
// missed while the daemon was down can run once at start. Written atomically (temp + rename).

import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { makeDirs } from '../core/fs.js';

export interface JobState {
  /** When the last run started (ISO). */
  lastRun: string;
  result: 'succeeded' | 'failed' | 'aborted';
  error?: string;
}

export interface DaemonState {
  /** When the daemon (last) started: the reference for jobs that never ran. */
  upSince?: string;
  jobs: Record<string, JobState>;
}

export async function readState(file: string): Promise<DaemonState> {
  try {
    const parsed = JSON.parse(await fsp.readFile(file, 'utf8')) as DaemonState;
    return { upSince: parsed.upSince, jobs: parsed.jobs ?? {} };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { jobs: {} };
    throw new Error(`daemon state file ${file} is unreadable: ${(err as Error).message}`);
  }
}

export async function writeState(file: string, state: DaemonState): Promise<void> {
  await makeDirs(path.dirname(file));
  const temp = `${file}.${process.pid}.tmp`;
  await fsp.writeFile(temp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
  await fsp.rename(temp, file);
}
