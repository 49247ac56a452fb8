// Prometheus metrics of the daemon (prom-client, a registry of its own): per database the last
// successful backup's time, duration and size, the latest verification's result and age, and
// job runs and failures; for databases with a WAL archive, the server's archiving (the age of the
// newest archived segment: the recovery point now; failures; segments waiting) and the start of
// the recoverable window. Ages are computed at scrape time.

import { Counter, Gauge, Registry } from 'prom-client';
import type { ArchiverStats } from '../wal/health.js';

export interface BackupFacts {
  finishedAt: Date;
  durationMs: number;
  size: number;
  rawSize: number;
}

export class DaemonMetrics {
  readonly registry = new Registry();
  private readonly lastSuccess = new Map<string, number>();
  private readonly lastVerify = new Map<string, number>();
  private readonly successTs: Gauge;
  private readonly duration: Gauge;
  private readonly size: Gauge;
  private readonly rawSize: Gauge;
  private readonly verifyResult: Gauge;
  private readonly runs: Counter;
  private readonly failures: Counter;
  readonly running: Gauge;
  private readonly lastArchived = new Map<string, number>();
  private readonly oldestWaiting = new Map<string, number | undefined>();
  private readonly archivedTs: Gauge;
  private readonly archiveFailed: Gauge;
  private readonly archiveHealthy: Gauge;
  private readonly waiting: Gauge;
  private readonly windowFrom: Gauge;

  constructor() {
    const registers = [this.registry];
    const label = ['database'];
    this.successTs = new Gauge({ name: 'dbstash_backup_last_success_timestamp_seconds', help: 'Unix time the newest successful backup finished', labelNames: label, registers });
    this.duration = new Gauge({ name: 'dbstash_backup_last_duration_seconds', help: 'Duration of the newest successful backup', labelNames: label, registers });
    this.size = new Gauge({ name: 'dbstash_backup_last_size_bytes', help: 'Stored size of the newest successful backup', labelNames: label, registers });
    this.rawSize = new Gauge({ name: 'dbstash_backup_last_raw_size_bytes', help: 'Raw (uncompressed) dump size of the newest successful backup', labelNames: label, registers });
    const lastSuccess = this.lastSuccess;
    new Gauge({
      name: 'dbstash_backup_age_seconds',
      help: 'Age of the newest successful backup',
      labelNames: label,
      registers,
      collect() {
        for (const [db, t] of lastSuccess) this.set({ database: db }, (Date.now() - t) / 1000);
      },
    });
    this.verifyResult = new Gauge({ name: 'dbstash_verification_last_result', help: 'Latest verification of the newest verified backup: 1 passed, 0 failed', labelNames: label, registers });
    const lastVerify = this.lastVerify;
    new Gauge({
      name: 'dbstash_verification_age_seconds',
      help: 'Age of the latest verification',
      labelNames: label,
      registers,
      collect() {
        for (const [db, t] of lastVerify) this.set({ database: db }, (Date.now() - t) / 1000);
      },
    });
    this.runs = new Counter({ name: 'dbstash_job_runs_total', help: 'Jobs run, by database, job and result', labelNames: ['database', 'job', 'result'], registers });
    this.failures = new Counter({ name: 'dbstash_job_failures_total', help: 'Jobs that failed, by database and job', labelNames: ['database', 'job'], registers });
    this.running = new Gauge({ name: 'dbstash_jobs_running', help: 'Jobs running now', registers });

    this.archivedTs = new Gauge({ name: 'dbstash_wal_last_archived_timestamp_seconds', help: 'Unix time the server last archived a WAL file (pg_stat_archiver)', labelNames: label, registers });
    const lastArchived = this.lastArchived;
    new Gauge({
      name: 'dbstash_wal_last_archived_age_seconds',
      help: 'Age of the newest archived WAL file: the recovery point now, while the server writes',
      labelNames: label,
      registers,
      collect() {
        for (const [db, t] of lastArchived) this.set({ database: db }, (Date.now() - t) / 1000);
      },
    });
    this.archiveFailed = new Gauge({ name: 'dbstash_wal_archive_failed_count', help: 'Failed archive_command runs the server counted (pg_stat_archiver.failed_count)', labelNames: label, registers });
    this.archiveHealthy = new Gauge({ name: 'dbstash_wal_archive_healthy', help: 'WAL archiving at the last check: 1 healthy, 0 failing, stalled, behind or with a gap in the stash', labelNames: label, registers });
    this.waiting = new Gauge({ name: 'dbstash_wal_segments_waiting', help: 'Finished WAL files waiting for archive_command (archive_status/*.ready)', labelNames: label, registers });
    const oldestWaiting = this.oldestWaiting;
    new Gauge({
      name: 'dbstash_wal_oldest_waiting_seconds',
      help: 'How long the oldest WAL file waiting for archive_command has waited (0: none waits)',
      labelNames: label,
      registers,
      collect() {
        for (const [db, t] of oldestWaiting) this.set({ database: db }, t === undefined ? 0 : Math.max(0, (Date.now() - t) / 1000));
      },
    });
    this.windowFrom = new Gauge({ name: 'dbstash_wal_recoverable_from_timestamp_seconds', help: 'Earliest point the base backups and WAL archive in the stash recover to', labelNames: label, registers });
  }

  /** What the server said about its archiving at the last check. */
  archiverChecked(database: string, s: ArchiverStats): void {
    if (s.lastArchivedAt) {
      this.lastArchived.set(database, Date.parse(s.lastArchivedAt));
      this.archivedTs.set({ database }, Date.parse(s.lastArchivedAt) / 1000);
    }
    this.archiveFailed.set({ database }, s.failedCount);
    if (s.waiting !== undefined) {
      this.waiting.set({ database }, s.waiting);
      this.oldestWaiting.set(database, s.oldestWaitingAt ? Date.parse(s.oldestWaitingAt) : undefined);
    }
  }

  /** Archiving and the archive as a whole: failing, stalled, behind or with a gap is unhealthy. */
  archiveChecked(database: string, healthy: boolean): void {
    this.archiveHealthy.set({ database }, healthy ? 1 : 0);
  }

  /** The start of the recoverable window, from the stash (none yet: not set). */
  archiveWindow(database: string, from: string | undefined): void {
    if (from) this.windowFrom.set({ database }, Date.parse(from) / 1000);
    else this.windowFrom.remove({ database });
  }

  /** A successful backup; an older one than already known (the start-up seed, late) changes nothing. */
  backupSucceeded(database: string, facts: BackupFacts): void {
    if ((this.lastSuccess.get(database) ?? -Infinity) > facts.finishedAt.getTime()) return;
    this.lastSuccess.set(database, facts.finishedAt.getTime());
    this.successTs.set({ database }, facts.finishedAt.getTime() / 1000);
    this.duration.set({ database }, facts.durationMs / 1000);
    this.size.set({ database }, facts.size);
    this.rawSize.set({ database }, facts.rawSize);
  }

  verified(database: string, passed: boolean, at: Date): void {
    if ((this.lastVerify.get(database) ?? -Infinity) > at.getTime()) return;
    this.lastVerify.set(database, at.getTime());
    this.verifyResult.set({ database }, passed ? 1 : 0);
  }

  jobEnded(database: string, job: string, result: 'succeeded' | 'failed' | 'aborted' | 'skipped'): void {
    this.runs.inc({ database, job, result });
    if (result === 'failed') this.failures.inc({ database, job });
  }

  /** Makes the failure counter visible at 0 for a job before it ever fails. */
  declareJob(database: string, job: string): void {
    this.failures.inc({ database, job }, 0);
  }

  lastSuccessAt(database: string): number | undefined {
    return this.lastSuccess.get(database);
  }
}
