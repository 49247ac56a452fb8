// The health of a cluster's WAL archive, for status: how old the newest archived WAL is (the
// recovery point objective now), the recoverable window, gaps, and, from the server itself
// (pg_stat_archiver), whether archive_command is failing and how far it is behind. A push that
// keeps failing makes PostgreSQL keep the WAL in pg_wal until the disk fills: status says so long
// before that.

import type { ObjectInfo } from '../storage/storage.js';
import { physicalOf, type Manifest } from '../catalog/manifest.js';
import type { Target } from '../engines/engine.js';
import type { PhysicalDetails } from '../engines/postgres/physical.js';
import { onDatabase } from '../engines/postgres/connection.js';
import { formatAge, formatDuration } from '../core/format.js';
import { archiveReport } from './continuity.js';
import { parseWalName, segnoOf, walObjectsIn } from './names.js';

export interface ArchiveHealth {
  newest?: { name: string; archivedAt: string };
  window?: { from: string; to: string };
  gaps: string[];
}

/** What the stash says about a series' archive, from the oldest of its base backups on. */
export function archiveHealth(objects: ObjectInfo[], seriesKey: string, bases: Manifest[]): ArchiveHealth | undefined {
  const physical = bases.map(physicalOf).filter((p): p is PhysicalDetails => p !== undefined);
  if (physical.length === 0) return undefined;
  const oldest = physical.reduce((a, b) => (segnoOf(b.startLsn, b.walSegmentSize) < segnoOf(a.startLsn, a.walSegmentSize) ? b : a));
  const wal = walObjectsIn(objects, seriesKey);
  const report = archiveReport(wal, segnoOf(oldest.startLsn, oldest.walSegmentSize), oldest.walSegmentSize);
  const firstStop = physical.map((p) => p.stopTime).sort()[0];
  return {
    newest: report.newest,
    window: report.newest ? { from: firstStop, to: report.newest.archivedAt } : undefined,
    gaps: report.gaps,
  };
}

export interface ArchiverStats {
  archivedCount: number;
  lastArchivedWal?: string;
  lastArchivedAt?: string;
  failedCount: number;
  lastFailedWal?: string;
  lastFailedAt?: string;
  /** The segment the server writes now. */
  current?: string;
  /** Completed segments not archived yet (current − last archived − 1), when both are known. */
  behind?: number;
  /**
   * Segments waiting for archive_command (archive_status/*.ready) and when the oldest of them was
   * finished; only with the rights to read the directory (superuser or pg_monitor).
   */
  waiting?: number;
  oldestWaitingAt?: string;
}

/** pg_stat_archiver of the running server. */
export async function archiverStats(target: Target, signal?: AbortSignal): Promise<ArchiverStats> {
  return onDatabase(
    target,
    async (c) => {
      const r = await c.query<Record<string, string | number | Date | null>>(
        `SELECT archived_count, last_archived_wal, last_archived_time, failed_count, last_failed_wal, last_failed_time,
                CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_walfile_name(pg_current_wal_lsn()) END AS current
           FROM pg_stat_archiver`,
      );
      const row = r.rows[0];
      const iso = (v: unknown) => (v instanceof Date ? v.toISOString() : undefined);
      const stats: ArchiverStats = {
        archivedCount: Number(row.archived_count),
        lastArchivedWal: (row.last_archived_wal as string | null) ?? undefined,
        lastArchivedAt: iso(row.last_archived_time),
        failedCount: Number(row.failed_count),
        lastFailedWal: (row.last_failed_wal as string | null) ?? undefined,
        lastFailedAt: iso(row.last_failed_time),
        current: (row.current as string | null) ?? undefined,
      };
      const last = stats.lastArchivedWal ? parseWalName(stats.lastArchivedWal) : undefined;
      const now = stats.current ? parseWalName(stats.current) : undefined;
      if (last?.segno !== undefined && now?.segno !== undefined) stats.behind = Math.max(0, now.segno - last.segno - 1);
      try {
        const w = await c.query<{ waiting: string; oldest: Date | null }>(
          `SELECT count(*) AS waiting, min(modification) AS oldest FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'`,
        );
        stats.waiting = Number(w.rows[0].waiting);
        stats.oldestWaitingAt = iso(w.rows[0].oldest);
      } catch {
        // Without pg_monitor the count of segments behind stands in.
      }
      return stats;
    },
    signal,
  );
}

/** Failing now: the newest failure is after the newest success. */
export function archivingFails(s: ArchiverStats): boolean {
  return s.lastFailedAt !== undefined && (s.lastArchivedAt === undefined || s.lastFailedAt > s.lastArchivedAt);
}

/** How long a finished segment may wait for the archive before it counts as stalled, by default. */
export const DEFAULT_WAL_MAX_DELAY_MS = 5 * 60_000;
/** Without pg_ls_archive_statusdir: this many finished segments not archived is a problem. */
const MAX_BEHIND = 8;

/**
 * What is wrong with the server's archiving now, one sentence each: archive_command failing, a
 * finished segment waiting longer than maxDelayMs (a stalled or hung archive_command, or one
 * slower than the server writes), or, where the wait cannot be read, too many segments behind.
 * Status and the daemon both say exactly these.
 */
export function archiverProblems(s: ArchiverStats, now: Date, maxDelayMs = DEFAULT_WAL_MAX_DELAY_MS): string[] {
  const problems: string[] = [];
  if (archivingFails(s)) {
    problems.push(
      `archive_command is failing: ${s.lastFailedWal} failed ${formatAge(new Date(s.lastFailedAt!), now)} (${s.failedCount} failures so far); PostgreSQL keeps every WAL file from then on in pg_wal until it succeeds — look at the server log`,
    );
  }
  if (s.oldestWaitingAt !== undefined) {
    const waitedMs = now.getTime() - new Date(s.oldestWaitingAt).getTime();
    if (waitedMs > maxDelayMs) {
      problems.push(
        `the WAL archive is stalled: ${s.waiting} finished segment${s.waiting === 1 ? '' : 's'} waiting, the oldest for ${formatDuration(waitedMs)} (at most ${formatDuration(maxDelayMs)} expected); archived up to ${s.lastArchivedWal ?? 'nothing yet'}`,
      );
    }
  } else if (s.behind !== undefined && s.behind > MAX_BEHIND) {
    problems.push(`archiving is ${s.behind} segments behind the server (writing ${s.current}, archived up to ${s.lastArchivedWal}): pg_wal grows meanwhile`);
  }
  return problems;
}
