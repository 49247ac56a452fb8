// Prometheus metrics of the daemon (prom-client, a registry of its own): per database the last
// successful backup's time, duration and size, the latest verification's result and age, and
// job runs and failures. Ages are computed at scrape time.

import { Counter, Gauge, Registry } from 'prom-client';

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
