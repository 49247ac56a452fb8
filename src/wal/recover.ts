// Point-in-time recovery: a physical base backup laid out in a new data directory, and PostgreSQL
// replaying the archived WAL up to the point asked for.
//
//   1. choose the newest base backup that ended before the target (time, LSN, named restore point,
//      or the end of the archive) and check, before anything is written, that the target is in
//      the recoverable window and that the archive has no gap between the backup and its end;
//   2. stream the backup into the directory (size, SHA-256 and decoding checked on the way; a
//      mismatch empties the directory again), then pg_verifybackup checks every file against
//      pg_basebackup's own backup_manifest;
//   3. write the recovery settings (restore_command through `dbstash wal get --recovery`, the
//      target, promote at the target) and recovery.signal;
//   4. run the server on a private socket until it has promoted, reading the point reached from
//      its log ("recovery stopping before …", "last completed transaction was at log time …",
//      "redo done at …"); any failure stops the server: nothing started is left behind;
//   5. shut it down cleanly (a directory ready to start), or, with `start`, start it on its port.

import { promises as fsp } from 'node:fs';
import path from 'node:path';
import { randomInt } from 'node:crypto';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { IntegrityError, PreflightError, RestoreError, UsageError } from '../core/errors.js';
import { makeScratchDirSync } from '../core/scratch.js';
import { formatBytes } from '../core/format.js';
import { TOOL_VERSION } from '../core/version.js';
import { listBackups, type CatalogEntry } from '../catalog/catalog.js';
import { writeRecord } from '../catalog/records.js';
import { artifactKey } from '../core/id.js';
import { Meter } from '../pipeline/meter.js';
import { decoders, type StageContext } from '../pipeline/stage.js';
import { lookupUser, runTool, startTool, stderrSummary, type RunAs, type RunningTool } from '../engines/process.js';
import { findPgTool, majorOf } from '../engines/postgres/tools.js';
import type { PhysicalDetails } from '../engines/postgres/physical.js';
import { getWal, listWalObjects, readHistories, type WalSeries } from './archive.js';
import { WalGetServer } from './prefetch.js';
import { recoveryErrorFile } from './recovery-error.js';
import { checkBackupWal, findGaps, reachableTimeline } from './continuity.js';
import { getBytes, type Storage } from '../storage/storage.js';
import { physicalOf, type Manifest } from '../catalog/manifest.js';
import { parseLsn, parseWalName, segnoOf, walPrefix, type WalObject } from './names.js';

export type RecoveryTarget = { kind: 'time'; time: Date } | { kind: 'lsn'; lsn: string } | { kind: 'name'; name: string } | { kind: 'latest' };

export interface RecoverPlan {
  where: WalSeries;
  target: RecoveryTarget;
  pgdata: string;
  force: boolean;
  /** Leave the server running on this port; otherwise shut it down, ready to start. */
  startPort?: number;
  /** Keep the backup's archive settings (the restored server archives its new timeline). */
  archive: boolean;
  context: StageContext;
  /** restore_command, with %f and %p; with `socket`, one that asks this restore's WAL server first. */
  restoreCommand(socket?: string): string;
  tempDir: string;
  binDir?: string;
  /** The timeline to follow (PostgreSQL's recovery_target_timeline); default: a restore point's own, else the newest. */
  timeline?: number;
  /** --tablespace-map: a tablespace's old location → its directory in the restore. */
  tablespaceMap?: Map<string, string>;
}

export interface RecoverEvents {
  info(message: string): void;
  warn(message: string): void;
}

export interface ArchiveFacts {
  objects: WalObject[];
  /** Newest archived WAL object's time: the archive reaches at most about this far. */
  end?: Date;
}

export interface RecoveryChoice {
  base: CatalogEntry;
  physical: PhysicalDetails;
  /** Segments from the backup's start to the end of the archive, and their stored size. */
  segments: number;
  bytes: number;
  window: { from: string; to?: string };
  gap?: string;
  /** The timeline of a recorded restore point. */
  timeline?: number;
}

const physicalOfEntry = (e: CatalogEntry): PhysicalDetails | undefined => physicalOf(e.manifest);

export async function archiveFacts(where: WalSeries, signal?: AbortSignal): Promise<ArchiveFacts> {
  const storage = where.destinations[0].storage;
  const objects = await listWalObjects(storage, where.series.key, signal);
  const end = objects.reduce<Date | undefined>((a, o) => (!a || o.modifiedAt > a ? o.modifiedAt : a), undefined);
  return { objects, end };
}

async function restorePoint(where: WalSeries, name: string, signal?: AbortSignal): Promise<{ lsn: string; timeline?: number } | undefined> {
  const storage = where.destinations[0].storage;
  const marks = (await storage.list(`${walPrefix(where.series.key)}marks/`, { signal })).filter((o) => o.key.endsWith('.json'));
  for (const m of marks.sort((a, b) => (a.key < b.key ? -1 : 1))) {
    const body = JSON.parse((await getBytes(storage, m.key)).toString('utf8')) as { name?: string; lsn?: string; timeline?: number };
    if (body.name === name && body.lsn) return { lsn: body.lsn, timeline: body.timeline };
  }
  return undefined;
}

function describeTarget(t: RecoveryTarget): string {
  if (t.kind === 'time') return t.time.toISOString();
  if (t.kind === 'lsn') return `LSN ${t.lsn}`;
  if (t.kind === 'name') return `restore point "${t.name}"`;
  return 'the end of the archive';
}

/** Picks the base backup for a target and checks that the archive reaches it without a gap. */
export async function chooseBase(where: WalSeries, target: RecoveryTarget, context: StageContext, signal?: AbortSignal): Promise<RecoveryChoice> {
  const storage = where.destinations[0].storage;
  const { entries } = await listBackups(storage, where.series.key, { signal });
  const bases = entries.filter((e) => physicalOfEntry(e) !== undefined);
  if (bases.length === 0) {
    throw new PreflightError(`${where.series.name} has no base backup in ${storage.url}`, { hint: `take one: dbstash backup ${where.series.name} --physical` });
  }
  const archive = await archiveFacts(where, signal);
  const oldest = physicalOfEntry(bases[bases.length - 1])!;
  const window = { from: oldest.stopTime, to: archive.end?.toISOString() };
  const say = `the recoverable window is ${window.from} to ${window.to ?? window.from} (the oldest base backup's end to the newest archived WAL)`;
  let stopLsn: bigint | undefined;
  let timeline: number | undefined;
  if (target.kind === 'lsn') stopLsn = parseLsn(target.lsn);
  if (target.kind === 'name') {
    const point = await restorePoint(where, target.name, signal);
    if (point) {
      stopLsn = parseLsn(point.lsn);
      timeline = point.timeline;
    }
  }
  const base = bases.find((e) => {
    const p = physicalOfEntry(e)!;
    if (target.kind === 'time') return new Date(p.stopTime).getTime() <= target.time.getTime();
    if (stopLsn !== undefined) return parseLsn(p.stopLsn) <= stopLsn;
    return true;
  });
  if (!base) throw new UsageError(`${describeTarget(target)} is before the end of the oldest base backup: ${say}`, { hint: 'choose a later point' });
  if (target.kind === 'time' && window.to && target.time.getTime() > new Date(window.to).getTime()) {
    throw new UsageError(`${describeTarget(target)} is after the newest archived WAL: ${say}`, {
      hint: 'choose an earlier point, or restore to the end of the archive (--at latest); a server still running has WAL not archived yet (SELECT pg_switch_wal() sends it)',
    });
  }
  const physical = physicalOfEntry(base)!;
  const startSeg = segnoOf(physical.startLsn, physical.walSegmentSize);
  checkBackupWal(archive.objects, physical, base.id);
  const [gap] = findGaps(archive.objects, startSeg, physical.walSegmentSize);
  if (gap && (target.kind !== 'lsn' || gap.from <= segnoOf(target.lsn, physical.walSegmentSize))) {
    throw new IntegrityError(`the archive has a gap after base backup ${base.id}: ${gap.name.split(' ')[0]} is missing, so replay cannot reach ${describeTarget(target)}`, {
      hint: 'restore to a point before the gap (--at a time before that segment was written), or find the segment in another stash',
    });
  }
  const after = archive.objects.filter((o) => {
    const n = parseWalName(o.name, physical.walSegmentSize);
    return n?.segno !== undefined && n.segno >= startSeg && n.kind === 'segment';
  });
  // Without a restore point's own timeline: the newest one this backup's history leads to.
  timeline ??= reachableTimeline(physical.timeline, parseLsn(physical.startLsn), await readHistories(storage, archive.objects, context, signal));
  return { base, physical, segments: after.length, bytes: after.reduce((a, o) => a + o.size, 0), window, timeline };
}

async function prepareDirectory(pgdata: string, force: boolean, runAs: RunAs | undefined): Promise<void> {
  let entries: string[] = [];
  try {
    entries = await fsp.readdir(pgdata);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new UsageError(`cannot use ${pgdata}: ${(err as Error).message}`);
  }
  if (entries.includes('postmaster.pid')) {
    throw new UsageError(`${pgdata} holds a data directory with a postmaster.pid: a server may be running there`, { hint: 'stop that server, or choose another --pgdata' });
  }
  if (entries.length > 0) {
    if (!force) throw new UsageError(`${pgdata} is not empty`, { hint: 'choose an empty or new directory, or pass --force to empty it first' });
    for (const e of entries) await fsp.rm(path.join(pgdata, e), { recursive: true, force: true });
  }
  await fsp.mkdir(pgdata, { recursive: true, mode: 0o700 });
  await fsp.chmod(pgdata, 0o700);
  if (runAs) await fsp.chown(pgdata, runAs.uid, runAs.gid);
}

export async function emptyDirectory(pgdata: string): Promise<void> {
  for (const e of await fsp.readdir(pgdata).catch(() => [] as string[])) await fsp.rm(path.join(pgdata, e), { recursive: true, force: true });
}

/** Where one tablespace of a base backup goes in a restore. */
export interface TablespacePlace {
  oid: number;
  name: string;
  /** Its location in the backed-up cluster. */
  from: string;
  /** Its directory in the restored one. */
  to: string;
}

/**
 * Where each tablespace of `base` goes: to the directory `map` gives for its old location
 * (--tablespace-map OLD=NEW), else back to its old location. Refused, before anything is written:
 * a map entry that names no tablespace of the backup, two tablespaces in one directory, and a
 * directory that exists and is not empty (a restore never writes into files it did not make).
 */
export async function placeTablespaces(base: Manifest, map: Map<string, string>, pgdata: string): Promise<TablespacePlace[]> {
  const spaces = physicalOf(base)?.tablespaces ?? [];
  const locations = spaces.map((t) => t.location);
  for (const old of map.keys()) {
    if (!locations.includes(old)) {
      throw new UsageError(`--tablespace-map ${old}=…: base backup ${base.id} has no tablespace at ${old}`, {
        hint: locations.length ? `its tablespaces: ${spaces.map((t) => `${t.name} at ${t.location}`).join(', ')}` : 'it has no tablespaces outside the data directory',
      });
    }
  }
  const places = spaces.map((t) => ({ oid: t.oid, name: t.name, from: t.location, to: path.resolve(map.get(t.location) ?? t.location) }));
  const inside = (dir: string, parent: string) => dir === parent || dir.startsWith(parent + path.sep);
  for (const p of places) {
    if (places.some((q) => q !== p && (inside(q.to, p.to) || inside(p.to, q.to)))) throw new UsageError(`tablespaces ${places.filter((q) => inside(q.to, p.to) || inside(p.to, q.to)).map((q) => q.name).join(' and ')} would share ${p.to}`, { hint: 'give each its own directory with --tablespace-map OLD=NEW' });
    if (inside(p.to, path.resolve(pgdata)) || inside(path.resolve(pgdata), p.to)) throw new UsageError(`tablespace ${p.name} would go to ${p.to}, inside the data directory or around it`, { hint: 'give it a directory of its own with --tablespace-map OLD=NEW' });
    let entries: string[] = [];
    try {
      entries = await fsp.readdir(p.to);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new UsageError(`cannot use ${p.to} for tablespace ${p.name}: ${(err as Error).message}`);
    }
    if (entries.length > 0) {
      throw new UsageError(`tablespace ${p.name} would go to ${p.to}, which is not empty${p.to === p.from ? ' (its location in the backed-up cluster)' : ''}`, {
        hint: `put it elsewhere: --tablespace-map ${p.from}=NEW_EMPTY_DIRECTORY`,
      });
    }
  }
  return places;
}

/** Empties `pgdata` and the tablespace directories a restore was filling (checked empty before it began). */
export async function discardLayout(pgdata: string, places: TablespacePlace[] = []): Promise<void> {
  await emptyDirectory(pgdata);
  for (const p of places) await emptyDirectory(p.to);
}

/**
 * Streams a base backup into `pgdata` through tar, checking size and SHA-256 on the way; any
 * failure empties `pgdata` and the tablespace directories. Each tablespace's pg_tblspc/<oid> is a
 * link to its directory before tar starts, so its files land there (pointTablespaceMap then
 * names those directories in tablespace_map).
 */
export async function layOut(storage: Storage, base: Manifest, pgdata: string, context: StageContext, runAs: RunAs | undefined, signal?: AbortSignal, places: TablespacePlace[] = []): Promise<void> {
  const artifact = base.artifacts.find((a) => a.role === 'main')!;
  const stored = new Meter({ hash: true });
  const own = async (p: string) => {
    if (runAs) await fsp.chown(p, runAs.uid, runAs.gid);
  };
  if (places.length > 0) {
    await fsp.mkdir(path.join(pgdata, 'pg_tblspc'), { mode: 0o700 });
    await own(path.join(pgdata, 'pg_tblspc'));
    for (const p of places) {
      await fsp.mkdir(p.to, { recursive: true, mode: 0o700 });
      await fsp.chmod(p.to, 0o700);
      await own(p.to);
      await fsp.symlink(p.to, path.join(pgdata, 'pg_tblspc', String(p.oid)));
      if (runAs) await fsp.lchown(path.join(pgdata, 'pg_tblspc', String(p.oid)), runAs.uid, runAs.gid);
    }
  }
  const tar = startTool('tar', ['-x', '-f', '-', '-C', pgdata, '--keep-directory-symlink'], { stdin: 'pipe', runAs, signal });
  tar.stdout.resume();
  try {
    await pipeline([await storage.get(artifactKey(base.id, artifact.file), { signal }), stored, ...decoders(artifact.stages, context), tar.child.stdin] as unknown as [Readable, ...NodeJS.WritableStream[]], { signal });
    const exit = await tar.exit;
    if (stored.bytes !== artifact.size || stored.sha256() !== artifact.sha256) {
      throw new IntegrityError(`base backup ${base.id} is damaged: ${stored.bytes} bytes with sha256 ${stored.sha256().slice(0, 12)}…, its manifest says ${artifact.size} bytes, ${artifact.sha256.slice(0, 12)}…`);
    }
    if (exit.code !== 0) throw new RestoreError(`tar could not lay out the base backup in ${pgdata}: ${stderrSummary(exit.stderr)}`);
  } catch (err) {
    tar.child.kill('SIGKILL');
    await tar.exit;
    await discardLayout(pgdata, places);
    throw err;
  }
}

/**
 * Points tablespace_map, which recovery reads to make the pg_tblspc links, at the directories the
 * tablespaces went to. After pg_verifybackup, which checks the file as the backup holds it.
 */
export async function pointTablespaceMap(pgdata: string, places: TablespacePlace[], runAs: RunAs | undefined): Promise<void> {
  if (places.length === 0) return;
  const mapFile = path.join(pgdata, 'tablespace_map');
  const lines = (await fsp.readFile(mapFile, 'utf8').catch(() => '')).split('\n').filter(Boolean);
  const oidOf = (line: string) => Number(line.slice(0, line.indexOf(' ')));
  const rewritten = lines.map((line) => {
    const p = places.find((x) => x.oid === oidOf(line));
    return p ? `${p.oid} ${p.to}` : line;
  });
  for (const p of places) if (!lines.some((l) => oidOf(l) === p.oid)) rewritten.push(`${p.oid} ${p.to}`);
  await fsp.writeFile(mapFile, rewritten.join('\n') + '\n', { mode: 0o600 });
  if (runAs) await fsp.chown(mapFile, runAs.uid, runAs.gid);
}

/** pg_verifybackup against pg_basebackup's own backup_manifest (without the WAL, which the archive holds). */
export async function verifyFiles(pgdata: string, version: string, runAs: RunAs | undefined, opts: { binDir?: string; signal?: AbortSignal; places?: TablespacePlace[] } = {}): Promise<boolean> {
  const tool = await findPgTool('pg_verifybackup', majorOf(version), opts.binDir).catch(() => undefined);
  if (!tool) return false;
  const r = await runTool(tool.path, ['--no-parse-wal', '--quiet', pgdata], { runAs, signal: opts.signal });
  if (r.code !== 0) {
    await discardLayout(pgdata, opts.places);
    throw new IntegrityError(`pg_verifybackup found the restored files do not match the backup's backup_manifest: ${stderrSummary(r.stderr, 3)}`);
  }
  return true;
}

const quoteConf = (v: string) => `'${v.replace(/'/g, "''")}'`;
const MARK = '# dbstash restore:';

const shellQuote = (v: string) => `'${v.replace(/'/g, `'\\''`)}'`;

function recoverySettings(plan: RecoverPlan & { timeline?: number; socket?: string; spool?: string }): string[] {
  // While this restore's WAL server runs, a prefetched file is taken from its spool by mv alone.
  const command = plan.socket && plan.spool ? `mv -f ${shellQuote(plan.spool).replace(/%/g, '%%')}/%f %p 2>/dev/null || exec ${plan.restoreCommand(plan.socket)}` : plan.restoreCommand(plan.socket);
  const lines = [`${MARK} recovery to ${describeTarget(plan.target)}`, `restore_command = ${quoteConf(command)}`];
  const t = plan.target;
  if (t.kind === 'time') lines.push(`recovery_target_time = ${quoteConf(t.time.toISOString().replace('T', ' ').replace('Z', '+00'))}`);
  if (t.kind === 'lsn') lines.push(`recovery_target_lsn = ${quoteConf(t.lsn)}`);
  if (t.kind === 'name') lines.push(`recovery_target_name = ${quoteConf(t.name)}`);
  if (t.kind !== 'latest') lines.push(`recovery_target_action = 'promote'`);
  lines.push(`recovery_target_timeline = ${quoteConf(plan.timeline !== undefined ? String(plan.timeline) : 'latest')}`);
  if (!plan.archive) lines.push(`archive_mode = 'off'`);
  return lines.map((l) => (l.startsWith('#') ? l : `${l} ${MARK.slice(0, -1)}`));
}

async function writeRecoveryConfig(plan: RecoverPlan & { timeline?: number; socket?: string; spool?: string }, runAs: RunAs | undefined): Promise<void> {
  const auto = path.join(plan.pgdata, 'postgresql.auto.conf');
  await fsp.appendFile(auto, `\n${recoverySettings(plan).join('\n')}\n`);
  const signalFile = path.join(plan.pgdata, 'recovery.signal');
  await fsp.writeFile(signalFile, '', { mode: 0o600 });
  await fsp.rm(recoveryErrorFile(plan.pgdata), { force: true });
  if (runAs) for (const f of [auto, signalFile]) await fsp.chown(f, runAs.uid, runAs.gid);
}

/**
 * Removes the recovery target settings dbstash added. restore_command stays (it serves a standby
 * or a later recovery), without the socket of this restore's WAL server, which is gone.
 */
async function cleanRecoveryConfig(plan: RecoverPlan): Promise<void> {
  const auto = path.join(plan.pgdata, 'postgresql.auto.conf');
  const text = await fsp.readFile(auto, 'utf8');
  const ours = (l: string) => l.endsWith(MARK.slice(0, -1));
  const kept = text.split('\n').map((l) => (ours(l) && /^restore_command/.test(l) ? `restore_command = ${quoteConf(plan.restoreCommand())} ${MARK.slice(0, -1)}` : l));
  await fsp.writeFile(auto, kept.filter((l) => !(ours(l) && /^recovery_target/.test(l))).join('\n'));
}

export interface PointReached {
  /** What the server's log says about where replay stopped. */
  stop?: string;
  lastTransaction?: string;
  redoDoneAt?: string;
  timeline?: number;
}

function readLog(line: string, point: PointReached): void {
  let m = /recovery stopping (before|after) (.*)$/.exec(line);
  if (m) point.stop = `${m[1]} ${m[2]}`;
  m = /last completed transaction was at log time (.*)$/.exec(line);
  if (m) point.lastTransaction = new Date(m[1].replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')).toISOString();
  m = /redo done at ([0-9A-F]+\/[0-9A-F]+)/.exec(line);
  if (m) point.redoDoneAt = m[1];
  m = /selected new timeline ID: (\d+)/.exec(line);
  if (m) point.timeline = Number(m[1]);
}

export interface RecoveredServer {
  point: PointReached;
  /** The socket directory and port of a server left running (keepRunning). */
  socketDir: string;
  port: number;
  /** A fast shutdown; then the socket directory is removed. */
  stop(): Promise<void>;
}

/**
 * Runs the server in recovery until it promotes (ready for read-write connections), on a private
 * socket. Any failure stops it. Without keepRunning, it is shut down cleanly at once.
 */
export async function replay(
  pgdata: string,
  postgres: string,
  runAs: RunAs | undefined,
  opts: { tempDir: string; keepRunning?: boolean; events: RecoverEvents; signal?: AbortSignal },
): Promise<RecoveredServer> {
  const sockets = makeScratchDirSync(opts.tempDir, 'pgrecover');
  if (runAs) await fsp.chown(sockets, runAs.uid, runAs.gid);
  const port = randomInt(20000, 60000);
  const point: PointReached = {};
  let promoted = false;
  let readyResolve: () => void = () => {};
  const ready = new Promise<void>((r) => (readyResolve = r));
  const log: string[] = [];
  const server: RunningTool = startTool(
    postgres,
    ['-D', pgdata, '-p', String(port), '-k', sockets, '-c', 'listen_addresses=', '-c', 'logging_collector=off', '-c', 'log_destination=stderr', '-c', 'hot_standby=on'],
    {
      runAs,
      signal: opts.signal,
      stderrLine: (line) => {
        readLog(line, point);
        if (/restored log file|redo in progress|ready to accept read-only/.test(line)) opts.events.info(line.replace(/^.*?(LOG|DETAIL): +/, ''));
        if (/database system is ready to accept connections/.test(line)) {
          promoted = true;
          readyResolve();
        }
        log.push(line);
        if (log.length > 200) log.shift();
        return false;
      },
    },
  );
  server.stdout.resume();
  const stop = async () => {
    if (server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill('SIGINT');
      await server.exit;
    }
    await fsp.rm(sockets, { recursive: true, force: true });
  };
  try {
    await Promise.race([ready, server.exit]);
    if (!promoted) {
      const reason = await fsp.readFile(recoveryErrorFile(pgdata), 'utf8').catch(() => '');
      const fatal = log.filter((l) => /FATAL|PANIC/.test(l)).map((l) => l.replace(/^.*?(FATAL|PANIC): +/, '')).slice(-2).join(' / ');
      if (reason) throw new IntegrityError(`recovery stopped: a WAL file could not be restored: ${reason.trim()}`, { hint: 'the server was stopped; the data directory is left as it was for inspection (--force empties it for the next try)' });
      throw new RestoreError(`recovery failed: ${fatal || stderrSummary((await server.exit).stderr, 3) || 'the server stopped'}`, {
        hint: /before configured recovery target/.test(fatal) ? 'the archive ends before that point: choose an earlier one' : 'the server was stopped; its log lines are above with --debug',
      });
    }
    if (!opts.keepRunning) await stop();
    return { point, socketDir: sockets, port, stop };
  } catch (err) {
    if (server.child.exitCode === null && server.child.signalCode === null) {
      server.child.kill('SIGQUIT');
      await server.exit;
    }
    await fsp.rm(sockets, { recursive: true, force: true });
    throw err;
  }
}

/** This restore's WAL server: restore_command's thin client asks it, and it reads ahead. */
async function serveWal(plan: RecoverPlan, segmentSize: number, runAs: RunAs | undefined, signal?: AbortSignal) {
  const dir = makeScratchDirSync(plan.tempDir, 'pgwalget');
  const own = async (file: string) => {
    if (runAs) await fsp.chown(file, runAs.uid, runAs.gid);
  };
  await own(dir);
  const socket = path.join(dir, 'get.sock');
  const spool = path.join(plan.pgdata, 'dbstash-prefetch');
  const server = new WalGetServer({
    get: (name, file) => getWal(name, file, { destinations: plan.where.destinations, series: plan.where.series, context: plan.context, signal }),
    spool,
    ahead: 4,
    segmentSize,
    own,
  });
  await server.listen(socket);
  return {
    server,
    socket,
    spool,
    close: async () => {
      await server.close();
      await fsp.rm(dir, { recursive: true, force: true });
    },
  };
}

export interface RecoverResult {
  base: string;
  target: string;
  pgdata: string;
  point: PointReached;
  started?: { port: number };
  /** WAL files this restore's server gave the recovery, and how many it had fetched ahead. */
  wal: { served: number; prefetched: number };
  window: RecoveryChoice['window'];
  durationMs: number;
}

export async function recoverToPoint(plan: RecoverPlan, events: RecoverEvents, signal?: AbortSignal): Promise<RecoverResult> {
  const started = Date.now();
  const choice = await chooseBase(plan.where, plan.target, plan.context, signal);
  const version = choice.base.manifest.database.serverVersion;
  const postgres = await findPgTool('postgres', majorOf(version), plan.binDir);
  if (majorOf(postgres.version) !== majorOf(version)) {
    throw new PreflightError(`the base backup is of PostgreSQL ${version}; a physical restore needs the same major version's server, found ${postgres.version} at ${postgres.path}`, {
      hint: `install postgresql-${majorOf(version)}, or point --pg-bin-dir at its bin directory`,
    });
  }
  const runAs = process.getuid?.() === 0 ? await lookupUser('postgres') : undefined;
  if (process.getuid?.() === 0 && !runAs) throw new PreflightError('running as root, and there is no "postgres" OS user to run the restored server as', { hint: 'run dbstash as the user that runs PostgreSQL' });
  events.info(`restoring base backup ${choice.base.id} (${formatBytes(choice.base.manifest.artifacts[0].size)}) into ${plan.pgdata}, then replaying WAL to ${describeTarget(plan.target)}`);
  const storage = plan.where.destinations[0].storage;
  const record = async (result: 'succeeded' | 'failed', extra: Record<string, unknown>) =>
    writeRecord(storage, { kind: 'restore', mode: 'point-in-time', id: choice.base.id, target: plan.pgdata, recoveryTarget: describeTarget(plan.target), result, at: new Date().toISOString(), durationMs: Date.now() - started, toolVersion: TOOL_VERSION, ...extra }).catch((err: Error) =>
      events.warn(`could not write the restore record: ${err.message}`),
    );
  const places = await placeTablespaces(choice.base.manifest, plan.tablespaceMap ?? new Map(), plan.pgdata);
  for (const p of places) events.info(`tablespace ${p.name} (${p.from}) goes to ${p.to}`);
  try {
    await prepareDirectory(plan.pgdata, plan.force, runAs);
    await layOut(plan.where.destinations[0].storage, choice.base.manifest, plan.pgdata, plan.context, runAs, signal, places);
    await verifyFiles(plan.pgdata, version, runAs, { binDir: plan.binDir, signal, places });
    await pointTablespaceMap(plan.pgdata, places, runAs);
    const walServer = await serveWal(plan, choice.physical.walSegmentSize, runAs, signal);
    let point: PointReached;
    try {
      await writeRecoveryConfig({ ...plan, timeline: plan.timeline ?? choice.timeline, socket: walServer.socket, spool: walServer.spool }, runAs);
      ({ point } = await replay(plan.pgdata, postgres.path, runAs, { tempDir: plan.tempDir, events, signal }));
    } finally {
      await walServer.close();
    }
    events.info(`WAL: ${walServer.server.served} files served to the recovery, ${walServer.server.prefetched} of them fetched ahead`);
    await cleanRecoveryConfig(plan);
    let startedOn: RecoverResult['started'];
    if (plan.startPort !== undefined) {
      const pgCtl = path.join(path.dirname(postgres.path), 'pg_ctl');
      const logFile = path.join(plan.pgdata, 'log', 'dbstash-start.log');
      await fsp.mkdir(path.dirname(logFile), { recursive: true });
      if (runAs) await fsp.chown(path.dirname(logFile), runAs.uid, runAs.gid);
      const r = await runTool(pgCtl, ['start', '-w', '-D', plan.pgdata, '-l', logFile, '-o', `-p ${plan.startPort}`], { runAs, signal });
      if (r.code !== 0) throw new RestoreError(`the recovered server did not start on port ${plan.startPort}: ${stderrSummary(r.stderr || r.stdout)}`, { hint: `see ${logFile}; the data directory is recovered and can be started by hand` });
      startedOn = { port: plan.startPort };
    }
    await record('succeeded', { point });
    const wal = { served: walServer.server.served, prefetched: walServer.server.prefetched };
    return { base: choice.base.id, target: describeTarget(plan.target), pgdata: plan.pgdata, point, started: startedOn, wal, window: choice.window, durationMs: Date.now() - started };
  } catch (err) {
    await record('failed', { error: (err as Error).message });
    throw err;
  }
}

