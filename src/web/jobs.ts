// Jobs started from the dashboard or its API (back up now, drill now): each runs the same job body
// as the daemon's schedules (daemon/jobs.ts, which calls the same core as the CLI), one at a time
// per database, with its events kept for the Activity page, the job API and its event stream, and
// an audit entry (who, what, when, result) for every action.

import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { maskSecrets } from '../core/secrets.js';

/** 'restore-plan': a restore's dry run (the backup verified in full, the target looked at), whose result is the plan. */
export type JobKind = 'backup' | 'verify' | 'restore' | 'restore-plan' | 'prune';
export type JobState = 'running' | 'succeeded' | 'failed';

export interface JobEvent {
  at: string;
  level: 'info' | 'warn' | 'error';
  message: string;
}

export interface JobRecord {
  id: string;
  database: string;
  kind: JobKind;
  /** The backup a drill or restore is of (else the newest). */
  backupId?: string;
  /** A restore's target as given. */
  to?: string;
  /** What the job reports at its end (a restore's record, a prune's totals). */
  result?: unknown;
  state: JobState;
  by: string;
  startedAt: string;
  finishedAt?: string;
  error?: string;
  events: JobEvent[];
}

export interface AuditEntry {
  at: string;
  user: string;
  action: string;
  target: string;
  result: string;
}

/** Runs one job for a database: events go to `event`; resolves when it succeeded, rejects when it failed. */
export interface JobParams {
  backupId?: string;
  to?: string;
  /** The name the user typed to confirm a restore. */
  typed?: string;
}

/** Runs one job; resolves with what it reports, rejects when it failed. */
export type JobRunner = (database: string, kind: JobKind, event: (level: JobEvent['level'], message: string) => void, signal: AbortSignal, params: JobParams) => Promise<unknown>;

const KEEP = 200;
const RUNS_KEPT_DAYS = 100;
const AUDIT_KEPT_DAYS = 400;

/** Where runs and audit entries are kept across restarts (the dashboard's index). */
export interface RunStore {
  saveRun(job: JobRecord): void;
  recentRuns<T extends JobRecord>(limit: number): T[];
  run<T extends JobRecord>(id: string): T | undefined;
  closeInterrupted(at: string): number;
  addAudit(entry: AuditEntry): void;
  recentAudit<T>(limit: number): T[];
  trim(runsBefore: string, auditBefore: string): void;
}

export class WebJobs extends EventEmitter {
  private readonly jobs = new Map<string, JobRecord>();
  private readonly busy = new Map<string, string>();
  private readonly kept: AuditEntry[] = [];

  constructor(
    private readonly run: JobRunner,
    private readonly signal: AbortSignal,
    private readonly log: (entry: AuditEntry) => void,
    /** Keeps runs and the audit log across restarts; without it they live as long as the process. */
    private readonly store?: RunStore,
  ) {
    super();
    this.setMaxListeners(0);
    // Runs a stopped dashboard left "running" ended without a result.
    store?.closeInterrupted(new Date().toISOString());
    // Runs are kept for the calendar's weeks and more; the audit log for a year and more.
    store?.trim(new Date(Date.now() - RUNS_KEPT_DAYS * 86_400_000).toISOString(), new Date(Date.now() - AUDIT_KEPT_DAYS * 86_400_000).toISOString());
  }

  /** The audit log, newest first. */
  get audit(): AuditEntry[] {
    return this.store ? this.store.recentAudit<AuditEntry>(KEEP) : this.kept;
  }

  record(entry: Omit<AuditEntry, 'at'>): void {
    const full = { at: new Date().toISOString(), ...entry, target: maskSecrets(entry.target) };
    if (this.store) this.store.addAudit(full);
    else {
      this.kept.unshift(full);
      this.kept.length = Math.min(this.kept.length, KEEP);
    }
    this.log(full);
  }

  private save(job: JobRecord): void {
    try {
      this.store?.saveRun(job);
    } catch (err) {
      this.log({ at: new Date().toISOString(), user: job.by, action: job.kind, target: job.database, result: `could not be recorded in the index: ${(err as Error).message}` });
    }
  }

  /** A new running job, listed and marked busy for its database, and the sink of its events. */
  private open(database: string, kind: JobKind, by: string, params: JobParams): { job: JobRecord; event: (level: JobEvent['level'], message: string) => void } {
    const { backupId } = params;
    // A restore's target may be a URL with a password: the record (API, index, Activity) keeps it masked.
    const to = params.to === undefined ? undefined : maskSecrets(params.to);
    const job: JobRecord = { id: `job_${randomBytes(8).toString('hex')}`, database, kind, ...(backupId ? { backupId } : {}), ...(to ? { to } : {}), state: 'running', by, startedAt: new Date().toISOString(), events: [] };
    this.jobs.set(job.id, job);
    this.save(job);
    if (!this.busy.has(database)) this.busy.set(database, job.id);
    for (const old of [...this.jobs.keys()].slice(0, Math.max(0, this.jobs.size - KEEP))) this.jobs.delete(old);
    const event = (level: JobEvent['level'], message: string) => {
      const e = { at: new Date().toISOString(), level, message };
      job.events.push(e);
      if (job.events.length > 500) job.events.splice(0, job.events.length - 500);
      this.emit(`job:${job.id}`, { type: 'event', event: e });
    };
    event('info', `${kind} of ${backupId ?? database} started by ${by}`);
    return { job, event };
  }

  /** Starts a job, or returns the one already running for the database (never two at once). */
  start(database: string, kind: JobKind, by: string, params: JobParams = {}): { job: JobRecord; started: boolean } {
    const running = this.busy.get(database);
    if (running) return { job: this.jobs.get(running)!, started: false };
    const { job, event } = this.open(database, kind, by, params);
    void this.run(database, kind, event, this.signal, params).then(
      (result) => {
        if (result !== undefined) job.result = result;
        this.finish(job, 'succeeded');
      },
      (err: Error) => this.finish(job, 'failed', err.message),
    );
    return { job, started: true };
  }

  /**
   * A job run elsewhere (the daemon's schedules): shown on the Activity page and in the API like
   * the dashboard's own, and a "back up now" meanwhile gets 409 with it.
   */
  track(database: string, kind: JobKind, by: string): { event: (level: JobEvent['level'], message: string) => void; end: (error?: string) => void } {
    const { job, event } = this.open(database, kind, by, {});
    return { event, end: (error) => this.finish(job, error ? 'failed' : 'succeeded', error) };
  }

  private finish(job: JobRecord, state: JobState, error?: string): void {
    job.state = state;
    job.finishedAt = new Date().toISOString();
    if (error) job.error = error;
    this.save(job);
    if (this.busy.get(job.database) === job.id) this.busy.delete(job.database);
    this.record({ user: job.by, action: job.kind, target: job.database, result: error ? `failed: ${error}` : 'succeeded' });
    this.emit(`job:${job.id}`, { type: 'end', job });
    this.emit('ended', job);
  }

  get(id: string): JobRecord | undefined {
    return this.jobs.get(id) ?? this.store?.run<JobRecord>(id);
  }

  /** Running jobs and the recent ones (with a store, also those of earlier runs), newest first. */
  list(): JobRecord[] {
    const here = [...this.jobs.values()].reverse();
    if (!this.store) return here;
    const seen = new Set(here.map((j) => j.id));
    const all = [...here, ...this.store.recentRuns<JobRecord>(KEEP).filter((j) => !seen.has(j.id))];
    return all.sort((a, b) => b.startedAt.localeCompare(a.startedAt)).slice(0, KEEP);
  }
}
