// The fleet's job queue: pg-boss on a PostgreSQL control database (`queue:` in the config or
// --queue). One queue per kind of job (backup, verify, prune) and per set of worker tags a
// database asks for; each a pg-boss "singleton" queue keyed by the database, so never two jobs of
// one kind for one database run at once across the fleet (the stash lock stays beneath it). Jobs
// carry only names (the database's config key, a backup id), never a URL or a secret: every
// worker reads the same config.

import { createRequire } from 'node:module';
import os from 'node:os';
import { PgBoss, type JobWithMetadata } from 'pg-boss';
import type { ConfigFile, DatabaseConfig } from '../config/schema.js';
import { ConfigError, ConnectionError } from '../core/errors.js';
import { parseDuration } from '../core/format.js';
import { maskUrlCredentials } from '../core/secrets.js';
import { tagsKey, tagsOfQueue } from './tags.js';

export const FLEET_KINDS = ['backup', 'verify', 'prune'] as const;
export type FleetKind = (typeof FLEET_KINDS)[number];

/** The queues' schema in the control database. */
export const QUEUE_SCHEMA = 'dbstash_queue';

export interface FleetJobData {
  database: string;
  backupId?: string;
  /** Who asked: "schedule", or the user and host of `dbstash run`. */
  by: string;
}

/** What a worker records as a job's output. */
export interface FleetJobOutput {
  host: string;
  pid: number;
  worker: string;
  exitCode: number;
  durationMs: number;
  /** When the worker began and ended the job (its clock): the queue's own overhead is around them. */
  startedAt: string;
  finishedAt: string;
  /** The job's own lines (the last FLEET_EVENTS_KEPT), as its page on the dashboard shows them. */
  events?: FleetJobEvent[];
}

export interface FleetJobEvent {
  at: string;
  level: 'info' | 'warn' | 'error';
  message: string;
}

/** Lines a job keeps in the control database: enough for a backup's story, bounded for a chatty one. */
export const FLEET_EVENTS_KEPT = 200;

/** How the fleet retries and expires jobs: the config's `fleet:` (docs/fleet.md). */
export function fleetPolicy(config: ConfigFile) {
  const fleet = config.fleet ?? { retries: 2, retryDelay: '30s', heartbeat: '30s' };
  return {
    retryLimit: fleet.retries,
    retryDelay: Math.max(1, Math.round((parseDuration(fleet.retryDelay) ?? 30_000) / 1000)),
    retryBackoff: true,
    /** A worker beats every heartbeat/2; a job without a beat for this long is retried elsewhere. */
    heartbeatSeconds: Math.max(10, Math.round((parseDuration(fleet.heartbeat) ?? 30_000) / 1000)),
    /** A job active longer than this is failed. */
    expireInSeconds: 6 * 3600,
    /** Finished jobs are kept a week: the run history. */
    deleteAfterSeconds: 7 * 86_400,
  };
}

/** The queue a database's jobs of a kind go to: `dbstash-backup`, or `dbstash-backup/region/eu`. */
export function queueFor(kind: FleetKind, entry: Pick<DatabaseConfig, 'workers'> | undefined): string {
  const key = tagsKey(entry?.workers);
  return key ? `dbstash-${kind}/${key}` : `dbstash-${kind}`;
}

/** Every queue the config's databases use. */
export function queuesOf(config: ConfigFile): string[] {
  const out = new Set<string>();
  for (const entry of Object.values(config.databases)) for (const kind of FLEET_KINDS) out.add(queueFor(kind, entry));
  return [...out].sort();
}

/** The queues a worker with these tags takes jobs from: those whose tags it has, all of them. */
export function queuesForWorker(config: ConfigFile, tags: Record<string, string>): string[] {
  return queuesOf(config).filter((name) => Object.entries(tagsOfQueue(name)).every(([k, v]) => tags[k] === v));
}

/** The kind of job a queue holds. */
export function kindOfQueue(name: string): FleetKind {
  return name.slice('dbstash-'.length).split('/')[0] as FleetKind;
}

/**
 * Connects to the control database and makes sure the config's queues exist. An unreachable
 * database is a connection error (exit 3); a queue schema written by a newer dbstash, a
 * configuration error (exit 2).
 */
export async function openQueue(
  url: string,
  config: ConfigFile,
  opts: { warn?: (m: string) => void; schedule?: boolean; supervise?: boolean; /** In the queue's registry of instances (the dashboard's fleet page); none without it. */ role?: string } = {},
): Promise<PgBoss> {
  const boss = new PgBoss({
    connectionString: url,
    schema: QUEUE_SCHEMA,
    registerInstance: opts.role !== undefined,
    ...(opts.role ? { instanceName: opts.role, instanceHeartbeatSeconds: 10 } : {}),
    application_name: `dbstash ${os.hostname()}:${process.pid}`,
    schedule: opts.schedule ?? false,
    supervise: opts.supervise ?? true,
    // Jobs of dead workers (no heartbeat) are looked for every 10 s, not every minute: a lost
    // job moves on within a heartbeat and 10 s.
    superviseIntervalSeconds: 10,
    // A new job wakes an idle worker at once (LISTEN/NOTIFY), instead of at its next poll.
    useListenNotify: true,
    monitorIntervalSeconds: 10,
    cronWorkerIntervalSeconds: 5,
    max: 4,
  });
  // Lost connections are retried by the pool; say so once per message, not per poll.
  const seen = new Set<string>();
  boss.on('error', (err: Error) => {
    const m = maskUrlCredentials(err.message);
    if (seen.has(m)) return;
    seen.add(m);
    opts.warn?.(`queue: ${m}`);
  });
  try {
    await boss.start();
  } catch (err) {
    await boss.stop({ graceful: false, close: true }).catch(() => {});
    const message = maskUrlCredentials((err as Error).message);
    if (/version|migrat/i.test(message)) {
      throw new ConfigError(`the queue in ${maskUrlCredentials(url)} was set up by another version of dbstash: ${message}`, {
        hint: 'run the same dbstash version on every worker and scheduler (upgrade this one)',
      });
    }
    throw new ConnectionError(`cannot reach the queue database ${maskUrlCredentials(url)}: ${message}`, {
      hint: 'check queue: (or --queue) in the config: a PostgreSQL URL this host can reach, with the rights to create the dbstash_queue schema',
    });
  }
  // pg-boss leaves a newer schema as it is: a worker of an older dbstash must not run on it.
  const known = (createRequire(import.meta.url)('pg-boss/package.json') as { pgboss: { schema: number } }).pgboss.schema;
  const found = await boss.schemaVersion().catch(() => null);
  if (found !== null && found > known) {
    await boss.stop({ graceful: false, close: true }).catch(() => {});
    throw new ConfigError(`the queue in ${maskUrlCredentials(url)} was set up by a newer dbstash (queue schema ${found}; this one knows up to ${known})`, {
      hint: 'upgrade dbstash on this host: every worker, scheduler and dashboard of a fleet runs the same version',
    });
  }
  for (const name of queuesOf(config)) {
    if (!(await boss.getQueue(name))) await boss.createQueue(name, { policy: 'singleton', notify: true, ...fleetPolicy(config) }).catch(async (err: Error) => {
      // Another worker made it meanwhile.
      if (!(await boss.getQueue(name))) throw err;
    });
  }
  return boss;
}

/** Enqueues one job now (it starts once no other job of its kind for the database is active). */
export async function enqueue(boss: PgBoss, config: ConfigFile, kind: FleetKind, data: FleetJobData): Promise<{ id: string; queue: string }> {
  const queue = queueFor(kind, config.databases[data.database]);
  const id = await boss.send(queue, data, { singletonKey: data.database, ...fleetPolicy(config) });
  if (id) return { id, queue };
  throw new ConfigError(`the queue refused a ${kind} of ${data.database}`, { hint: 'see the queue database\'s log' });
}

/** What a finished (or failed) job's output holds: the worker's record, or the error it failed with. */
export type JobOutcome = Partial<FleetJobOutput> & { message?: string };

/**
 * Follows a job to its end (completed, failed or cancelled), telling each attempt as it starts
 * and each that failed and will be retried; for `run --wait` and the dashboard's jobs in fleet mode.
 */
export async function followJob(
  boss: PgBoss,
  queue: string,
  id: string,
  opts: { signal: AbortSignal; running(attempt: number): void; retrying(attempt: number, reason: string): void },
): Promise<{ job: JobWithMetadata<FleetJobData>; output: JobOutcome }> {
  let seen = '';
  for (;;) {
    opts.signal.throwIfAborted();
    const job = await findJob(boss, queue, id);
    if (!job) throw new ConfigError(`job ${id} is gone from the queue`, { hint: 'finished jobs are kept a week; see the workers\' logs' });
    const output = (job.output ?? {}) as JobOutcome;
    const state = `${job.state}:${job.retryCount}`;
    if (state !== seen) {
      seen = state;
      if (job.state === 'active') opts.running(job.retryCount + 1);
      if (job.state === 'retry') opts.retrying(job.retryCount, output.message ?? 'no reason recorded');
    }
    if (job.state === 'completed' || job.state === 'failed' || job.state === 'cancelled') return { job, output };
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** A job with what the dashboard and `run --wait` show of it. */
export async function findJob(boss: PgBoss, queue: string, id: string): Promise<JobWithMetadata<FleetJobData> | undefined> {
  const [job] = await boss.findJobs<FleetJobData>(queue, { id });
  return job;
}

