// Jobs started from the dashboard or its API (back up now, drill now): each runs the same job body
// as the daemon's schedules (daemon/jobs.ts, which calls the same core as the CLI), one at a time
// per database, with its events kept for the Activity page, the job API and its event stream, and
// an audit entry (who, what, when, result) for every action.

import { randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';

export type JobKind = 'backup' | 'verify' | 'restore' | 'prune';
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

export class WebJobs extends EventEmitter {
  private readonly jobs = new Map<string, JobRecord>();
  private readonly busy = new Map<string, string>();
  readonly audit: AuditEntry[] = [];

  constructor(
    private readonly run: JobRunner,
    private readonly signal: AbortSignal,
    private readonly log: (entry: AuditEntry) => void,
  ) {
    super();
    this.setMaxListeners(0);
  }

  record(entry: Omit<AuditEntry, 'at'>): void {
    const full = { at: new Date().toISOString(), ...entry };
    this.audit.unshift(full);
    this.audit.length = Math.min(this.audit.length, KEEP);
    this.log(full);
  }

  /** A new running job, listed and marked busy for its database, and the sink of its events. */
  private open(database: string, kind: JobKind, by: string, params: JobParams): { job: JobRecord; event: (level: JobEvent['level'], message: string) => void } {
    const { backupId, to } = params;
    const job: JobRecord = { id: `job_${randomBytes(8).toString('hex')}`, database, kind, ...(backupId ? { backupId } : {}), ...(to ? { to } : {}), state: 'running', by, startedAt: new Date().toISOString(), events: [] };
    this.jobs.set(job.id, job);
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
    if (this.busy.get(job.database) === job.id) this.busy.delete(job.database);
    this.record({ user: job.by, action: job.kind, target: job.database, result: error ? `failed: ${error}` : 'succeeded' });
    this.emit(`job:${job.id}`, { type: 'end', job });
    this.emit('ended', job);
  }

  get(id: string): JobRecord | undefined {
    return this.jobs.get(id);
  }

  list(): JobRecord[] {
    return [...this.jobs.values()].reverse();
  }
}
