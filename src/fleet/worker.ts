// `dbstash worker`: takes jobs from the fleet's queue and runs them through the same job bodies
// as the daemon's schedules (daemon/jobs.ts, which call the same core as the CLI). And the
// scheduler side of `dbstash daemon` in fleet mode: each schedule of the config becomes a pg-boss
// cron schedule, which fires once per tick however many daemons run.

import { once } from 'node:events';
import os from 'node:os';
import type { PgBoss } from 'pg-boss';
import type { Context } from '../cli/common.js';
import { resolveDestinations } from '../config/resolve.js';
import { DbstashError, ExitCode, InterruptedError, StorageError } from '../core/errors.js';
import { maskSecrets } from '../core/secrets.js';
import { jobBody } from '../daemon/jobs.js';
import { DaemonMetrics } from '../daemon/metrics.js';
import type { ScheduledJob } from '../daemon/daemon.js';
import { createNotifier, type Notifier } from '../notify/notifier.js';
import { WarmScratch } from '../verify/warm.js';
import { tagsText } from './tags.js';
import { findJob, FLEET_EVENTS_KEPT, fleetPolicy, kindOfQueue, openQueue, queueFor, queuesForWorker, QUEUE_SCHEMA, type FleetJobData, type FleetJobEvent, type FleetJobOutput } from './queue.js';
import { RecordingOutput } from '../cli/output.js';
import { useToolLauncher } from '../engines/launcher.js';

/** Failure events wait for the last attempt: a job that fails for good notifies once. */
function quietOnFailure(notifier: Notifier): Notifier {
  return {
    channels: notifier.channels,
    notify: async (message) => (message.event === 'failure' || message.event === 'verify-failed' ? [] : notifier.notify(message)),
  };
}

/** The error a failed job records: its message (masked) and dbstash's exit code for it. */
class JobFailure extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    readonly events: FleetJobEvent[] = [],
  ) {
    super(message);
  }
  toJSON() {
    return { message: this.message, exitCode: this.exitCode, events: this.events };
  }
}

export async function runWorker(ctx: Context, opts: { queue: string; tags: Record<string, string>; concurrency: number; graceMs: number }): Promise<number> {
  // Runs for days: its tools start from a small launcher process, not from a fork of this one.
  useToolLauncher();
  const config = ctx.loaded.config;
  const queues = queuesForWorker(config, opts.tags);
  // A worker that cannot reach the stash would fail every job it takes: refuse to start.
  for (const [key, entry] of Object.entries(config.databases)) {
    if (!queues.includes(queueFor('backup', entry))) continue;
    for (const dest of await resolveDestinations({}, config, entry)) {
      if (dest.optional) continue;
      await dest.storage.check?.().catch((err: Error) => {
        throw new StorageError('permanent', `this worker cannot write to ${dest.name} (${dest.storage.url}), where ${key} is backed up: ${err.message}`, {
          hint: 'give the worker access to the stash (mount it, or its credentials), or run it with tags that send it other databases',
        });
      });
    }
  }
  const boss = await openQueue(opts.queue, config, { warn: (m) => ctx.out.warn(m), role: `worker${Object.keys(opts.tags).length ? ` ${tagsText(opts.tags)}` : ''}` });
  const notifier = createNotifier(config.notifications, ctx.out);
  const metrics = new DaemonMetrics();
  const warm = new WarmScratch(config.tempDir ?? os.tmpdir());
  const me = `${os.hostname()}:${process.pid}`;
  const policy = fleetPolicy(config);
  const running = new Set<AbortController>();
  for (const queue of queues) {
    const kind = kindOfQueue(queue);
    // A new job wakes an idle worker at once (NOTIFY); a worker that ends a job looks for the
    // next one within half a second, and at once while a backlog waits (a burst of schedules).
    await boss.work<FleetJobData, FleetJobOutput>(queue, { localConcurrency: opts.concurrency, batchSize: 1, pollingIntervalSeconds: 0.5, notifyPollingIntervalSeconds: 0.5, burstWhenReadyExceeds: 1 }, async ([job]) => {
      const started = Date.now();
      const { database, backupId } = job.data;
      const entry = Object.hasOwn(config.databases, database) ? config.databases[database] : undefined;
      if (!entry) throw new JobFailure(`${database} is not in the config of worker ${me}`, ExitCode.usage);
      const last = job.retryCount >= policy.retryLimit;
      const abort = new AbortController();
      const onJobAbort = () => abort.abort(job.signal.reason);
      job.signal.addEventListener('abort', onJobAbort, { once: true });
      running.add(abort);
      // A worker cut off from the queue cannot tell whether the job is still its own (the queue
      // retries it elsewhere once the heartbeats stop): past one heartbeat without an answer, or
      // once the job is no longer this attempt's, it aborts the run (cleanly, as on SIGTERM).
      let answeredAt = Date.now();
      const watchdog = setInterval(() => {
        void findJob(boss, queue, job.id).then(
          (now) => {
            answeredAt = Date.now();
            if (!now || now.state !== 'active' || now.retryCount !== job.retryCount) abort.abort(new InterruptedError(`the queue: job ${job.id} is no longer this worker's (it is ${now?.state ?? 'gone'}, attempt ${(now?.retryCount ?? 0) + 1})`));
          },
          () => {
            if (Date.now() - answeredAt > policy.heartbeatSeconds * 1000) abort.abort(new InterruptedError('the queue: no answer for a whole heartbeat (the job may be retried elsewhere)'));
          },
        );
      }, (policy.heartbeatSeconds * 1000) / 3);
      // The job's lines go to the worker's log and, with the outcome, to the control database.
      const events: FleetJobEvent[] = [];
      const out = new RecordingOutput(ctx.out, (level, message) => {
        events.push({ at: new Date().toISOString(), level, message });
        if (events.length > FLEET_EVENTS_KEPT) events.splice(0, events.length - FLEET_EVENTS_KEPT);
      });
      out.info(`[${database}] ${kind} ${job.id} (attempt ${job.retryCount + 1} of ${policy.retryLimit + 1}) started on ${me}`, { job: job.id, database, kind });
      try {
        await jobBody(kind, database, entry, { ctx: { ...ctx, out, signal: abort.signal }, notifier: last ? notifier : quietOnFailure(notifier), metrics, warm }, { backupId, fleetJob: { id: job.id, attempt: job.retryCount + 1 } })(abort.signal);
        out.info(`[${database}] ${kind} ${job.id} done on ${me}`, { job: job.id, database, kind });
        const finished = Date.now();
        return { host: os.hostname(), pid: process.pid, worker: me, exitCode: 0, durationMs: finished - started, startedAt: new Date(started).toISOString(), finishedAt: new Date(finished).toISOString(), events };
      } catch (err) {
        const message = maskSecrets((err as Error).message);
        const code = err instanceof DbstashError ? err.exitCode : ExitCode.internal;
        out.warn(`[${database}] ${kind} ${job.id} failed on ${me}: ${message}${last ? '' : ' (it will be retried)'}`, { job: job.id, database, kind });
        throw new JobFailure(message, code, events);
      } finally {
        clearInterval(watchdog);
        running.delete(abort);
        job.signal.removeEventListener('abort', onJobAbort);
      }
    });
  }
  ctx.out.info(`worker ${me} takes jobs from ${queues.join(', ')} (${opts.concurrency} at once per queue)`, { worker: me, queues });
  if (!ctx.signal.aborted) await once(ctx.signal, 'abort');
  // SIGTERM: no new jobs; running ones get the grace period, then are aborted (and retried by
  // another worker: an aborted run leaves nothing that looks like a backup).
  ctx.out.info(`stopping: no new jobs; ${running.size} running get ${Math.round(opts.graceMs / 1000)}s to finish`);
  const grace = setTimeout(() => {
    for (const a of running) a.abort(new InterruptedError('the worker stopping (its grace period ended)'));
  }, opts.graceMs);
  try {
    await boss.stop({ graceful: true, close: true, timeout: opts.graceMs + 15_000 });
  } finally {
    clearTimeout(grace);
    await warm.close().catch(() => {});
  }
  return ExitCode.ok;
}

/**
 * The daemon in fleet mode: the config's schedules become pg-boss cron schedules (keyed by the
 * database), and stale ones of databases no longer scheduled are removed. The daemons keep the
 * cron ticking (schedule: true): any number may run, and each tick yields one job.
 */
export async function registerSchedules(ctx: Context, boss: PgBoss, jobs: ScheduledJob[], opts: { catchUp: boolean }): Promise<void> {
  const config = ctx.loaded.config;
  const wanted = new Set<string>();
  for (const job of jobs) {
    const queue = queueFor(job.kind as 'backup' | 'verify' | 'prune', config.databases[job.database]);
    wanted.add(`${queue}\n${job.database}`);
    const data: FleetJobData = { database: job.database, by: 'schedule' };
    await boss.schedule(queue, job.pattern, data, { tz: job.timezone ?? 'UTC', key: job.database, singletonKey: job.database, missed: opts.catchUp ? 'once' : 'skip', ...fleetPolicy(config) });
  }
  for (const s of await boss.getSchedules()) {
    if (s.name.startsWith('dbstash-') && !wanted.has(`${s.name}\n${s.key}`)) await boss.unschedule(s.name, s.key);
  }
  ctx.out.info(`scheduling ${jobs.length} job${jobs.length === 1 ? '' : 's'} on the queue (schema ${QUEUE_SCHEMA}); workers run them`, { schedules: jobs.map((j) => j.id) });
}
