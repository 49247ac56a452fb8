// Physical base backups: pg_basebackup in tar format, written to its stdout (`-D -`), so the
// cluster's files stream through dbstash's stages into storage without a copy on local disk. The
// stream is watched on its way (a small tar reader over the headers, never buffering the data):
// backup_label, the first file, gives the start LSN, timeline and checkpoint; backup_manifest,
// which pg_basebackup injects as the last file, gives the WAL range the backup needs, and its own
// SHA-256 goes into dbstash's manifest. The stream only ends once pg_basebackup exited 0 and both
// files were seen whole, so a cut-off backup never looks complete.
//
// By default the WAL is left to the archive (`-X none`; pg_basebackup then waits until the last
// segment the backup needs is archived). `selfContained` includes it in the tar (`-X fetch`), so
// the backup restores without the archive.

import { createHash, randomBytes, type Hash } from 'node:crypto';
import { Transform, Writable, type Readable, type TransformCallback } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { BackupError, DbstashError, IntegrityError, PreflightError } from '../../core/errors.js';
import type { DumpOptions, DumpSession, Probe, Target, ToolInfo } from '../engine.js';
import { streamBaseBackup } from './base-stream.js';
import { entryName, TarSplitter } from './tar.js';
import { describeExit, gateOnExit, startTool } from '../process.js';
import { classifyPgError, libpqEnv, onDatabase } from './connection.js';
import { findPgTool, majorOf } from './tools.js';

export interface ClusterFacts {
  version: string;
  /** Every database's size, summed: the estimate for the free-space check. */
  sizeBytes: number;
  systemIdentifier: string;
  walSegmentSize: number;
  archiveMode: string;
  archiveCommand: string;
  walLevel: string;
  canReplicate: boolean;
  tablespaces: { oid: number; name: string; location: string }[];
}

export async function clusterFacts(target: Target, signal?: AbortSignal): Promise<ClusterFacts> {
  return onDatabase(
    target,
    async (c) => {
      const r = await c.query<Record<string, string | boolean>>(
        `SELECT current_setting('server_version') AS version,
                (SELECT sum(pg_database_size(oid))::bigint FROM pg_database WHERE datallowconn) AS size,
                (SELECT system_identifier::text FROM pg_control_system()) AS sysid,
                (SELECT setting FROM pg_settings WHERE name = 'wal_segment_size') AS segsize,
                current_setting('archive_mode') AS archive_mode,
                current_setting('archive_command') AS archive_command,
                current_setting('wal_level') AS wal_level,
                (SELECT rolsuper OR rolreplication FROM pg_roles WHERE rolname = current_user) AS can_replicate`,
      );
      const t = await c.query<{ oid: string; name: string; location: string }>(
        `SELECT oid::text AS oid, spcname AS name, pg_tablespace_location(oid) AS location FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY 1`,
      );
      const row = r.rows[0];
      return {
        version: String(row.version).split(' ')[0],
        sizeBytes: Number(row.size),
        systemIdentifier: String(row.sysid),
        walSegmentSize: Number(row.segsize),
        archiveMode: String(row.archive_mode),
        archiveCommand: String(row.archive_command),
        walLevel: String(row.wal_level),
        canReplicate: row.can_replicate === true,
        tablespaces: t.rows.map((x) => ({ oid: Number(x.oid), name: x.name, location: x.location })),
      };
    },
    signal,
  );
}

const factsOfProbe = new WeakMap<Probe, ClusterFacts>();

/** The preflight of a base backup: the server's facts, pg_basebackup, and what the backup needs of the server. */
export async function probePhysical(target: Target, opts: { selfContained?: boolean; signal?: AbortSignal }): Promise<Probe> {
  let facts: ClusterFacts;
  try {
    facts = await clusterFacts(target, opts.signal);
  } catch (err) {
    throw err instanceof DbstashError ? err : classifyPgError(err, target);
  }
  const tool = await findPgTool('pg_basebackup', majorOf(facts.version), target.options.binDir);
  if (!facts.canReplicate) {
    throw new PreflightError(`[postgres] the role "${target.user ?? 'of the connection'}" may not take a base backup: it needs the REPLICATION attribute`, {
      hint: `ALTER ROLE ${target.user ?? 'the_role'} REPLICATION; and a "replication" line for it in pg_hba.conf`,
    });
  }
  if (facts.walLevel === 'minimal') {
    throw new PreflightError('[postgres] wal_level is minimal: the server keeps no WAL that a base backup or an archive could use', { hint: 'dbstash wal setup --database NAME says what to change (wal_level = replica, then a restart)' });
  }
  if (!opts.selfContained && facts.archiveMode === 'off') {
    throw new PreflightError('[postgres] archive_mode is off: a base backup without its WAL restores only with an archive, and this server archives nothing', {
      hint: 'turn archiving on (dbstash wal setup --database NAME --apply, then a restart), or take a --self-contained backup that carries its WAL',
    });
  }
  if (facts.tablespaces.length > 0 && majorOf(facts.version) < 15) {
    // The joined stream of base-stream.ts reads the archive protocol of PostgreSQL 15 and later.
    throw new PreflightError(`[postgres] the cluster has tablespaces (${facts.tablespaces.map((t) => t.name).join(', ')}), and a base backup that carries them needs PostgreSQL 15 or later; the server is ${facts.version}`, {
      hint: 'take logical backups of this cluster (dbstash backup without --physical), or upgrade the server',
    });
  }
  const probe: Probe = { serverVersion: facts.version, sizeBytes: facts.sizeBytes, tool, warnings: [] };
  factsOfProbe.set(probe, facts);
  return probe;
}

export interface PhysicalDetails {
  systemIdentifier: string;
  timeline: number;
  startLsn: string;
  stopLsn: string;
  /** The WAL segments from the one holding the start to the one holding the stop. */
  startWal: string;
  checkpointLsn: string;
  startTime: string;
  stopTime: string;
  walSegmentSize: number;
  /** The WAL the backup needs is inside the tar (--self-contained). */
  walIncluded: boolean;
  /** pg_basebackup's backup_manifest, as found at the end of the tar. */
  backupManifest: { size: number; sha256: string; checksum?: string };
  /** pg_basebackup's label and the server's backup method (from backup_label). */
  label: string;
  /**
   * The cluster's tablespaces outside its data directory: their files are in the tar under
   * pg_tblspc/<oid>/, and a restore puts them at `location` or where --tablespace-map says.
   */
  tablespaces?: { oid: number; name: string; location: string }[];
}

/**
 * Passes a tar stream through unchanged while reading its headers, and keeps the contents of a few
 * small named files (backup_label) and the hash, size and tail of one large one (backup_manifest).
 */
export class TarWatch extends Transform {
  private current?: { name: string; keep: boolean; chunks: Buffer[]; hash?: Hash; size: number };
  readonly files = new Map<string, { text: string; size: number; sha256?: string }>();
  private readonly entries_ = new TarSplitter({
    header: (header, size) => {
      const name = entryName(header).replace(/^\.\//, '');
      const hashed = this.hashed.includes(name);
      const keep = this.keep.includes(name) || hashed;
      this.current = { name, keep, chunks: [], size, hash: hashed ? createHash('sha256') : undefined };
    },
    content: (part) => {
      if (!this.current) return;
      this.current.hash?.update(part);
      if (this.current.keep) this.current.chunks.push(Buffer.from(part));
    },
    entryEnd: () => this.finishEntry(),
  });

  constructor(private readonly keep: string[], private readonly hashed: string[]) {
    super({ highWaterMark: 1 << 20 });
  }

  /** The end-of-archive block was seen. */
  get ended(): boolean {
    return this.entries_.ended;
  }

  get entries(): number {
    return this.entries_.entries;
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    try {
      this.entries_.write(chunk);
    } catch (err) {
      return done(err as Error);
    }
    done(null, chunk);
  }

  private finishEntry(): void {
    const c = this.current;
    this.current = undefined;
    if (!c?.keep) return;
    this.files.set(c.name, { text: Buffer.concat(c.chunks).toString('utf8'), size: c.size, sha256: c.hash?.digest('hex') });
  }
}

function labelField(label: string, field: string): string | undefined {
  return new RegExp(`^${field}: (.*)$`, 'm').exec(label)?.[1]?.trim();
}

/** The facts of a finished base backup, from the files the tar reader kept. */
export function physicalDetails(watch: TarWatch, facts: ClusterFacts, walIncluded: boolean, stopTime: Date, tablespaces: { oid: number; location: string }[] = []): PhysicalDetails {
  const label = watch.files.get('backup_label');
  const manifest = watch.files.get('backup_manifest');
  if (!label || !manifest) {
    throw new BackupError(`[postgres] pg_basebackup's output lacks ${!label ? 'backup_label' : 'backup_manifest'}: the base backup is incomplete`);
  }
  let parsed: { 'WAL-Ranges'?: { Timeline: number; 'Start-LSN': string; 'End-LSN': string }[]; 'Manifest-Checksum'?: string };
  try {
    parsed = JSON.parse(manifest.text) as typeof parsed;
  } catch (err) {
    throw new BackupError(`[postgres] pg_basebackup's backup_manifest does not read: ${(err as Error).message}`);
  }
  const ranges = parsed['WAL-Ranges'] ?? [];
  const start = /^(\S+) \(file (\S+)\)$/.exec(labelField(label.text, 'START WAL LOCATION') ?? '');
  const timeline = Number(labelField(label.text, 'START TIMELINE'));
  const last = ranges[ranges.length - 1];
  if (!start || !last || !Number.isInteger(timeline)) throw new BackupError('[postgres] the base backup\'s backup_label or WAL range does not read');
  const startTime = labelField(label.text, 'START TIME');
  return {
    systemIdentifier: facts.systemIdentifier,
    timeline,
    startLsn: start[1],
    stopLsn: last['End-LSN'],
    startWal: start[2],
    checkpointLsn: labelField(label.text, 'CHECKPOINT LOCATION') ?? '',
    startTime: startTime ? new Date(startTime.replace(' UTC', 'Z').replace(' ', 'T')).toISOString() : '',
    stopTime: stopTime.toISOString(),
    walSegmentSize: facts.walSegmentSize,
    walIncluded,
    backupManifest: { size: manifest.size, sha256: manifest.sha256!, checksum: parsed['Manifest-Checksum'] },
    label: labelField(label.text, 'LABEL') ?? '',
    ...(tablespaces.length > 0
      ? { tablespaces: tablespaces.map((t) => ({ oid: t.oid, name: facts.tablespaces.find((f) => f.oid === t.oid)?.name ?? String(t.oid), location: t.location })) }
      : {}),
  };
}

/** How long a base backup may wait for the archive to take its last WAL segment, by default. */
export const DEFAULT_ARCHIVE_WAIT_MS = 5 * 60_000;
/** The server's notice, 5 s into the wait (do_pg_backup_stop). */
const WAITING_FOR_ARCHIVE = /waiting for required WAL segments to be archived/;

/**
 * Streams a base backup (tar) of the cluster `target` connects to. Without the WAL included, the
 * server ends the backup only once archive_command has archived its last segment: once the server
 * says it waits, pg_stat_archiver is watched, and the backup fails with the reason as soon as
 * archive_command fails, or after archiveWaitMs of waiting, instead of hanging for ever.
 */
export async function dumpPhysical(target: Target, opts: DumpOptions & { selfContained?: boolean; archiveWaitMs?: number }): Promise<DumpSession> {
  const facts = (opts.probe && factsOfProbe.get(opts.probe)) ?? (await clusterFacts(target, opts.signal));
  const tool = opts.probe?.tool ?? (await findPgTool('pg_basebackup', majorOf(facts.version), target.options.binDir));
  const walIncluded = !!opts.selfContained;
  const args = ['-D', '-', '-F', 'tar', '-X', walIncluded ? 'fetch' : 'none', '--checkpoint=fast', '--label=dbstash', '--no-password', '--verbose'];
  const stop = new AbortController();
  const startedAt = Date.now();
  let archiveProblem: BackupError | undefined;
  let watching: NodeJS.Timeout | undefined;
  // The server does not notice its client gone while it waits for the archive (only when it next
  // sends), so a backup that fails there cancels the server's side first, and only then fails:
  // the process must not exit before the cancel has landed. pg_basebackup's connection is found by
  // its name; the protocol path cancels its own (base-stream.ts).
  const appName = `dbstash-basebackup-${randomBytes(6).toString('hex')}`;
  let cancelServer = (): Promise<unknown> =>
    onDatabase(target, (c) => c.query(`SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = $1`, [appName]), AbortSignal.timeout(5000));
  const fail = (message: string) => {
    archiveProblem = new BackupError(`[postgres] ${message}`, {
      hint: 'fix archive_command (`dbstash status`, the server log), or take the backup with --self-contained, which carries its own WAL',
    });
    clearInterval(watching);
    const problem = archiveProblem;
    void cancelServer()
      .catch(() => {})
      .finally(() => {
        watch.destroy(problem);
        stop.abort(problem);
      });
  };
  const watchArchive = () => {
    if (watching || walIncluded) return;
    const since = Date.now() - 5000;
    const maxWait = opts.archiveWaitMs ?? DEFAULT_ARCHIVE_WAIT_MS;
    let busy = false;
    watching = setInterval(() => {
      if (busy || archiveProblem) return;
      busy = true;
      void (async () => {
        try {
          const { archiverStats, archivingFails } = await import('../../wal/health.js');
          const s = await archiverStats(target, opts.signal);
          if (archivingFails(s) && Date.parse(s.lastFailedAt!) >= startedAt) {
            return fail(`the base backup waits for the archive to take its last WAL segment, and archive_command fails (${s.lastFailedWal}, ${s.failedCount} failures so far)`);
          }
        } catch {
          // The server's statistics unreadable: the time bound still holds.
        } finally {
          busy = false;
        }
        if (Date.now() - since > maxWait) fail(`the base backup waited ${Math.round((Date.now() - since) / 1000)}s for the archive to take its last WAL segment (at most ${Math.round(maxWait / 1000)}s: walMaxDelay)`);
      })();
    }, 1000);
  };
  const signal = AbortSignal.any([opts.signal, stop.signal]);
  const watch = new TarWatch(['backup_label'], ['backup_manifest']);
  const details: Record<string, unknown> = {};
  let stream: Readable;
  let toolUsed: ToolInfo & { args: string[] };
  if (facts.tablespaces.length > 0) {
    // pg_basebackup writes one tablespace to stdout at most: dbstash speaks BASE_BACKUP itself
    // and joins the tablespaces into the one tar (base-stream.ts).
    const base = await streamBaseBackup(target, { walIncluded, signal, onNotice: (m) => WAITING_FOR_ARCHIVE.test(m) && watchArchive() });
    cancelServer = base.cancel;
    // A failing archive wait cancels the backup on the server: its error is the cancel's echo.
    base.stream.on('error', (err) => watch.destroy(archiveProblem ?? err));
    base.stream.pipe(watch);
    toolUsed = { name: 'BASE_BACKUP', version: facts.version, path: 'replication protocol', args: [base.command] };
    stream = gateOnExit(watch, async () => {
      let ended: Awaited<typeof base.done>;
      try {
        ended = await base.done;
      } catch (err) {
        throw archiveProblem ?? err;
      } finally {
        clearInterval(watching);
      }
      if (archiveProblem) throw archiveProblem;
      details.physical = physicalDetails(watch, facts, walIncluded, new Date(), ended.tablespaces);
    });
  } else {
    const running = startTool(tool.path, args, {
      env: { ...libpqEnv(target), PGAPPNAME: appName },
      signal,
      bulkOutput: true,
      stderrLine: (line) => {
        if (WAITING_FOR_ARCHIVE.test(line)) watchArchive();
        return /^pg_basebackup: (initiating|checkpoint completed|write-ahead log|base backup completed|syncing|waiting)/.test(line) || /^NOTICE: {2}all required WAL segments/.test(line);
      },
    });
    running.stdout.on('error', (err) => watch.destroy(err));
    running.stdout.pipe(watch);
    toolUsed = { ...tool, args };
    stream = gateOnExit(watch, async () => {
      const exit = await running.exit;
      if (archiveProblem) throw archiveProblem;
      if (exit.code !== 0) throw new BackupError(`[postgres] ${describeExit('pg_basebackup', exit)}`);
      details.physical = physicalDetails(watch, facts, walIncluded, new Date());
    });
    // Interrupted (Ctrl-C, a time limit) while the server waits for the archive: its side is
    // cancelled as well, as the protocol path's connection is (base-stream.ts).
    const onAbort = () => void cancelServer().catch(() => {});
    opts.signal.addEventListener('abort', onAbort, { once: true });
    // Whether or not the stream is read to its end, the watch ends with pg_basebackup.
    void running.exit.then(() => {
      clearInterval(watching);
      opts.signal.removeEventListener('abort', onAbort);
    });
  }
  return {
    format: 'base.tar',
    stream,
    tables: Promise.resolve([]),
    tool: toolUsed,
    details,
  };
}

export const BASE_FORMAT = 'base.tar';

/**
 * Reads a base backup's tar to its end (the integrity check of verify): every header must read and
 * the archive must end with its trailer; backup_label and backup_manifest must be there, and
 * backup_manifest's own checksum (the SHA-256 of its text before the checksum line) must hold.
 */
export async function checkBaseStructure(raw: NodeJS.ReadableStream & { destroy(err?: Error): void }, signal?: AbortSignal): Promise<{ summary: string }> {
  const watch = new TarWatch(['backup_label', 'backup_manifest'], []);
  try {
    await pipeline(raw as unknown as NodeJS.ReadableStream, watch, new Writable({ highWaterMark: 1 << 20, write: (_c, _e, done) => done() }), { signal });
  } catch (err) {
    if (err instanceof IntegrityError || signal?.aborted) throw err;
    throw new IntegrityError(`[postgres] the base backup's tar does not read: ${(err as Error).message}`);
  }
  if (!watch.ended) throw new IntegrityError(`[postgres] the base backup's tar is cut off after ${watch.entries} files (no end-of-archive marker)`);
  const label = watch.files.get('backup_label');
  const manifest = watch.files.get('backup_manifest');
  if (!label || !manifest) throw new IntegrityError(`[postgres] the base backup lacks ${!label ? 'backup_label' : 'backup_manifest'}`);
  const at = manifest.text.lastIndexOf('"Manifest-Checksum": "');
  const claimed = /"Manifest-Checksum": "([0-9a-f]{64})"/.exec(manifest.text.slice(at))?.[1];
  const actual = createHash('sha256').update(manifest.text.slice(0, at)).digest('hex');
  if (at < 0 || claimed !== actual) throw new IntegrityError('[postgres] the base backup\'s backup_manifest fails its own checksum');
  let files = 0;
  try {
    files = (JSON.parse(manifest.text) as { Files?: unknown[] }).Files?.length ?? 0;
  } catch {
    throw new IntegrityError('[postgres] the base backup\'s backup_manifest does not read as JSON');
  }
  return { summary: `base backup: ${watch.entries} tar entries, backup_manifest lists ${files} files, its checksum holds` };
}
