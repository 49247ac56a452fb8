// The restore drill of a physical base backup: the backup recovered into a throwaway cluster to the
// end of the archive, the way `restore --at latest` would, and then read.
//
//   - the archive must reach from the backup's start to its newest segment without a gap;
//   - the base backup is laid out in a private temp dir (size and SHA-256 checked as it streams),
//     and pg_verifybackup checks every file against pg_basebackup's backup_manifest;
//   - every archived segment from the backup's start on (each checked against the SHA-256 in its
//     name) and every timeline history file is put in its pg_wal, so the drill does not depend on
//     a restore_command, a shell or the credentials of the stash;
//   - the server replays to the end and promotes, on a private socket with trust authentication
//     (the copy's pg_hba.conf is replaced: it is a throwaway);
//   - every database that allows connections must answer, and every table is counted (a read of
//     every heap page); the server is stopped and the directory removed, whatever happens.
// A damaged artifact, segment or gap is an IntegrityError ("damaged"); a missing server binary or
// a directory the postgres user cannot reach is VerifyUnavailable ("could not verify").

import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { IntegrityError, PreflightError, VerifyUnavailableError } from '../core/errors.js';
import { makeScratchDirSync } from '../core/scratch.js';
import { physicalOf, type Manifest } from '../catalog/manifest.js';
import type { StageContext } from '../pipeline/stage.js';
import type { Storage } from '../storage/storage.js';
import { lookupUser, type RunAs } from '../engines/process.js';
import { findPgTool, majorOf } from '../engines/postgres/tools.js';
import { quoteIdent } from '../engines/postgres/connection.js';
import { fetchWalObject, listWalObjects, readHistories } from './archive.js';
import { archiveReport, checkBackupWal, describeArchive, reachableTimeline, type ArchiveReport } from './continuity.js';
import { parseLsn, parseWalName, segnoOf, type WalObject } from './names.js';
import { layOut, placeTablespaces, pointTablespaceMap, replay, verifyFiles, type PointReached } from './recover.js';

export interface PhysicalDrillResult {
  databases: { name: string; tables: number; rows: number }[];
  point: PointReached;
  verifybackup: boolean;
  archive: ArchiveReport;
}

/** The archive's objects of a base backup's series, and the report from the backup's start on; a gap or a missing needed segment is an IntegrityError. */
export async function checkArchive(storage: Storage, manifest: Manifest, signal?: AbortSignal): Promise<{ objects: WalObject[]; report: ArchiveReport }> {
  const p = physicalOf(manifest)!;
  const objects = await listWalObjects(storage, manifest.series?.key ?? manifest.id.split('_')[0], signal);
  const report = archiveReport(objects, segnoOf(p.startLsn, p.walSegmentSize), p.walSegmentSize);
  try {
    checkBackupWal(objects, p, manifest.id);
  } catch (err) {
    throw Object.assign(err as Error, { archive: report });
  }
  if (report.gaps.length > 0) {
    throw Object.assign(new IntegrityError(`the WAL archive has ${report.gaps.length === 1 ? 'a gap' : `${report.gaps.length} gaps`} after base backup ${manifest.id}: ${report.gaps.join(', ')} missing; no recovery can pass ${report.gaps.length === 1 ? 'it' : 'them'}`, {
      hint: 'find the missing segments in another stash (dbstash copy), or take a new base backup: recovery to points after the gap needs one taken after it',
    }), { archive: report });
  }
  if (report.missingHistory.length > 0) {
    throw Object.assign(new IntegrityError(`the WAL archive lacks the history file of timeline ${report.missingHistory.join(', ')}: a recovery cannot follow ${report.missingHistory.length === 1 ? 'it' : 'them'}`), { archive: report });
  }
  return { objects, report };
}

export async function physicalDrill(
  storage: Storage,
  manifest: Manifest,
  opts: { stageContext: StageContext; tempDir: string; signal: AbortSignal; events: { info(m: string): void; warn(m: string): void } },
): Promise<PhysicalDrillResult> {
  const p = physicalOf(manifest)!;
  const { objects, report } = await checkArchive(storage, manifest, opts.signal);
  const version = manifest.database.serverVersion;
  let postgres;
  try {
    postgres = await findPgTool('postgres', majorOf(version));
  } catch (err) {
    throw new VerifyUnavailableError(`no PostgreSQL server to drill a physical backup: ${(err as PreflightError).message.replace(/^\[postgres\] /, '')}`, { hint: `install postgresql-${majorOf(version)}` });
  }
  if (majorOf(postgres.version) !== majorOf(version)) {
    throw new VerifyUnavailableError(`the base backup is of PostgreSQL ${version}; a physical drill needs the same major version's server, found ${postgres.version}`, { hint: `install postgresql-${majorOf(version)}` });
  }
  let runAs: RunAs | undefined;
  if (process.getuid?.() === 0) {
    runAs = await lookupUser('postgres');
    if (!runAs) throw new VerifyUnavailableError('running as root, and there is no "postgres" OS user to run the drill\'s server as');
  }
  const dir = makeScratchDirSync(opts.tempDir, 'pgpitrdrill');
  const pgdata = path.join(dir, 'data');
  try {
    await fsp.mkdir(pgdata, { mode: 0o700 });
    if (runAs) {
      await fsp.chown(dir, runAs.uid, runAs.gid);
      await fsp.chown(pgdata, runAs.uid, runAs.gid);
    }
    opts.events.info(`drill: recovering ${manifest.id} into a throwaway cluster to the end of the archive`);
    // Each tablespace goes to a directory of its own beside the throwaway data directory.
    const places = await placeTablespaces(manifest, new Map((p.tablespaces ?? []).map((t) => [t.location, path.join(dir, `tablespace-${t.oid}`)])), pgdata);
    await layOut(storage, manifest, pgdata, opts.stageContext, runAs, opts.signal, places);
    const verifybackup = await verifyFiles(pgdata, version, runAs, { signal: opts.signal, places });
    await pointTablespaceMap(pgdata, places, runAs);
    const start = segnoOf(p.startLsn, p.walSegmentSize);
    const wanted = objects.filter((o) => {
      const n = parseWalName(o.name, p.walSegmentSize);
      return n?.kind === 'history' || (n?.kind === 'segment' && n.segno! >= start);
    });
    const walDir = path.join(pgdata, 'pg_wal');
    for (const o of wanted) await fetchWalObject(storage, o, path.join(walDir, o.name), opts.stageContext, opts.signal);
    const timeline = reachableTimeline(p.timeline, parseLsn(p.startLsn), await readHistories(storage, objects, opts.stageContext, opts.signal));
    const conf = [`restore_command = '/bin/false'`, `recovery_target_timeline = '${timeline}'`, `archive_mode = 'off'`];
    await fsp.appendFile(path.join(pgdata, 'postgresql.auto.conf'), `\n# dbstash drill\n${conf.join('\n')}\n`);
    await fsp.writeFile(path.join(pgdata, 'pg_hba.conf'), 'local all all trust\n');
    await fsp.writeFile(path.join(pgdata, 'recovery.signal'), '');
    if (runAs) {
      const { runTool } = await import('../engines/process.js');
      await runTool('chown', ['-R', `${runAs.user}:`, pgdata]);
    }
    const server = await replay(pgdata, postgres.path, runAs, { tempDir: dir, keepRunning: true, events: opts.events, signal: opts.signal });
    try {
      const databases = await countEverything(server.socketDir, server.port, manifest.database.user ?? 'postgres', opts.signal);
      return { databases, point: server.point, verifybackup, archive: report };
    } finally {
      await server.stop();
    }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

/** Every database answers, and every table is counted (a read of every page); as the cluster's bootstrap superuser. */
async function countEverything(socketDir: string, port: number, user: string, signal: AbortSignal): Promise<PhysicalDrillResult['databases']> {
  const { default: pg } = await import('../engines/postgres/driver.js');
  const open = async (database: string, as: string) => {
    const c = new pg.Client({ host: socketDir, port, user: as, database });
    c.on('error', () => {});
    await c.connect();
    return c;
  };
  const first = await open('postgres', user).catch(() => open('template1', user));
  let superuser: string;
  let names: string[];
  try {
    superuser = (await first.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE oid = 10')).rows[0].rolname;
    names = (await first.query<{ datname: string }>('SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1')).rows.map((r) => r.datname);
  } finally {
    await first.end().catch(() => {});
  }
  const out: PhysicalDrillResult['databases'] = [];
  for (const name of names) {
    signal.throwIfAborted();
    let c;
    try {
      c = await open(name, superuser);
    } catch (err) {
      throw new IntegrityError(`the recovered cluster's database "${name}" does not answer: ${(err as Error).message}`);
    }
    try {
      const tables = await c.query<{ schema: string; name: string }>(
        `SELECT n.nspname AS schema, c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' ORDER BY 1, 2`,
      );
      let rows = 0;
      for (const t of tables.rows) {
        try {
          rows += Number((await c.query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${quoteIdent(t.schema)}.${quoteIdent(t.name)}`)).rows[0].n);
        } catch (err) {
          throw new IntegrityError(`the recovered cluster cannot read ${name}.${t.schema}.${t.name}: ${(err as Error).message}`);
        }
      }
      out.push({ name, tables: tables.rows.length, rows });
    } finally {
      await c.end().catch(() => {});
    }
  }
  return out;
}

export { describeArchive };
