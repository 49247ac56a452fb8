// Parallel PostgreSQL dumps (--jobs N): pg_dump's directory format with N workers, all under the
// snapshot that dbstash exports and counts rows in, so the counts still describe exactly what the
// dump holds. The snapshot's transaction stays open until pg_dump has exited (its workers import
// the snapshot when they start). The directory is written to a private temp directory first
// (pg_dump writes toc.dat last), then packed into one ustar stream — artifact format "tar" — that
// goes through the same stages as any dump; the directory is always removed.
//
// Restore side: unpackDirectoryDump() turns the raw "tar" artifact back into the directory, which
// `pg_restore -j N <dir>` reads.

import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { DbstashError } from '../../core/errors.js';
import { makeScratchDir } from '../../core/scratch.js';
import { DEFAULT_LOCK_WAIT_TIMEOUT_MS, type DumpOptions, type DumpSession, type Target } from '../engine.js';
import { gateOnExit, startTool } from '../process.js';
import { classifyPgError, dbnameArg, libpqEnv } from './connection.js';
import { countWhileDumping, exportSnapshot, lockWaitArgs, propertiesInSnapshot, snapshotReleaser } from './snapshot.js';
import { packDirectory, unpackTar } from './tar.js';
import { sourceForDump } from './source.js';

export const DIRECTORY_FORMAT = 'tar';

export async function dumpDirectory(target: Target, opts: DumpOptions & { jobs: number }): Promise<DumpSession> {
  const work = await makeScratchDir(opts.tempDir, 'pgdir');
  const dir = path.join(work, 'dump');
  const { client, facts, tool } = await sourceForDump(target, opts.probe).catch(async (err: unknown) => {
    await rm(work, { recursive: true, force: true });
    throw err instanceof DbstashError ? err : classifyPgError(err, target);
  });
  const version = facts.version;
  const release = snapshotReleaser(client);
  const cleanup = () => rm(work, { recursive: true, force: true }).catch(() => {});
  try {
    const lockWaitTimeout = opts.lockWaitTimeout ?? DEFAULT_LOCK_WAIT_TIMEOUT_MS;
    const snapshot = await exportSnapshot(client, lockWaitTimeout);
    const args = [
      '--format=directory',
      `--jobs=${opts.jobs}`,
      '--compress=0',
      `--snapshot=${snapshot}`,
      ...lockWaitArgs(lockWaitTimeout),
      '--no-password',
      `--file=${dir}`,
      `--dbname=${dbnameArg(target.database)}`,
    ];
    const properties = propertiesInSnapshot(client);
    const running = startTool(tool.path, args, { env: libpqEnv(target), signal: opts.signal, workers: true });
    running.stdout.resume();
    // The snapshot must outlive pg_dump: commit only after it exited and counting is done.
    const { tables, finished: dumped } = countWhileDumping(client, running, { target, checksums: opts.checksums ?? false, lockWaitTimeout, signal: opts.signal, release });
    const packed = (async function* () {
      await dumped;
      yield* packDirectory(dir);
    })();
    const stream = gateOnExit(Readable.from(packed, { objectMode: false }), async () => {
      await dumped;
      await cleanup();
    });
    stream.on('close', () => {
      running.exit.then(() => Promise.all([release(false), cleanup()])).catch(() => {});
    });
    return {
      format: DIRECTORY_FORMAT,
      stream,
      tables,
      properties,
      tool: { ...tool, args: args.map((a) => (a.startsWith('--file=') ? '--file=<temporary directory>' : a)) },
      details: { snapshot, isolation: 'repeatable read', serverVersion: version, jobs: opts.jobs, container: 'ustar of pg_dump --format=directory' },
    };
  } catch (err) {
    await release(false);
    await cleanup();
    if (err instanceof DbstashError) throw err;
    throw classifyPgError(err, target);
  }
}

/**
 * Unpacks a raw "tar" artifact (pg_dump's directory format) into `dir`, which is created and must
 * not exist yet; `pg_restore [--jobs N] <dir>` then reads it. Throws IntegrityError on a damaged or
 * truncated archive.
 */
export async function unpackDirectoryDump(raw: Readable, dir: string): Promise<{ files: number; bytes: number }> {
  await mkdir(dir, { mode: 0o700 });
  return unpackTar(raw, dir);
}
