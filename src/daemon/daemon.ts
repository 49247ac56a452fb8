// `dbstash daemon`: runs the schedules of the config (backup, verify drill, prune per database)
// with croner, through the job runner (one job per database, a global limit, optional jitter),
// catches up once at start on runs missed while it was down, watches for stale databases,
// serves /healthz and /metrics, and on SIGTERM lets running jobs finish within the grace period
// before aborting them cleanly (an aborted backup leaves nothing and releases its lock).

import path from 'node:path';
import { Cron } from 'croner';
import type { Context } from '../cli/common.js';
import { ConfigError, InterruptedError, JobTimeoutError } from '../core/errors.js';
import { formatDuration, parseDuration } from '../core/format.js';
import { daemonSchema, type DaemonConfig } from '../config/schema.js';
import { resolveDestinations } from '../config/resolve.js';
import { listBackups } from '../catalog/catalog.js';
import { isSafetyBackup } from '../catalog/series.js';
import { mainArtifact } from '../catalog/manifest.js';
import { latestRecord, type VerifyRecord } from '../catalog/records.js';
import os from 'node:os';
import { createNotifier } from '../notify/notifier.js';
import { makeMessage } from '../notify/message.js';
import { seriesOfEntry } from '../retention/config.js';
import { expectedMaxAgeMs, JOB_KINDS, parseCron, scheduleIntervalMs, type JobKind } from './cron.js';
import { isLoopback, parseListen, startHttp, type Health } from './http.js';
import { jobBody, type JobContext } from './jobs.js';
import { WarmScratch } from '../verify/warm.js';
import { WalPushServer } from '../wal/async.js';
import { DaemonMetrics } from './metrics.js';
import { WalWatch, type WalReporter } from './wal-watch.js';
import { JobRunner } from './runner.js';
import { useToolLauncher } from '../engines/launcher.js';
import { readState, writeState, type DaemonState } from './state.js';

export interface ScheduledJob {
  id: string;
  database: string;
  kind: JobKind;
  pattern: string;
  timezone?: string;
}

function duration(value: string | undefined, key: string): number | undefined {
  if (value === undefined) return undefined;
  const ms = parseDuration(value);
  if (ms === undefined) throw new ConfigError(`daemon.${key}: "${value}" is not a duration`, { hint: 'e.g. 30s, 5m, 1h' });
  return ms;
}

export function scheduledJobs(ctx: Context): ScheduledJob[] {
  const jobs: ScheduledJob[] = [];
  for (const [key, entry] of Object.entries(ctx.loaded.config.databases)) {
    for (const kind of JOB_KINDS) {
      const pattern = entry.schedule?.[kind];
      if (!pattern) continue;
      const timezone = entry.schedule?.timezone;
      parseCron(pattern, timezone, `databases.${key}.schedule.${kind}`).stop();
      jobs.push({ id: `${key}:${kind}`, database: key, kind, pattern, timezone });
    }
  }
  return jobs;
}

/**
 * A job's maximum run time: daemon.maxRunTime.<kind>, else twice its schedule's interval (a job
 * still running when two more should have started is stuck), at least an hour.
 */
export function maxRunMs(job: ScheduledJob, settings: DaemonConfig): number {
  const configured = settings.maxRunTime?.[job.kind as 'backup' | 'verify' | 'prune'];
  if (configured !== undefined) {
    const ms = parseDuration(configured);
    if (ms === undefined || ms <= 0) throw new ConfigError(`daemon.maxRunTime.${job.kind}: "${configured}" is not a duration`, { hint: 'e.g. 6h, 90m' });
    return ms;
  }
  const interval = scheduleIntervalMs(job.pattern, job.timezone, `databases.${job.database}.schedule.${job.kind}`) ?? 0;
  return Math.max(2 * interval, 3600_000);
}

/** An agent's report of its databases' WAL archiving to the control database. */
async function agentReporter(boss: import('pg-boss').PgBoss): Promise<WalReporter> {
  const { ensureFleetTables, reportWal } = await import('../fleet/status.js');
  await ensureFleetTables(boss);
  return (key, state) => reportWal(boss, { database: key, ...state });
}

export function defaultStateFile(ctx: Context): string {
  return path.join(ctx.loaded.file ? path.dirname(ctx.loaded.file) : process.cwd(), '.dbstash-daemon.json');
}

/** Newest backup and verification per database from the stash, so metrics survive restarts. */
async function seedMetrics(ctx: Context, metrics: DaemonMetrics, signal: AbortSignal): Promise<void> {
  for (const [key, entry] of Object.entries(ctx.loaded.config.databases)) {
    try {
      const [primary] = await resolveDestinations({}, ctx.loaded.config, entry);
      const identity = seriesOfEntry(entry)?.identity;
      const entries = (await listBackups(primary.storage, undefined, { signal })).entries.filter((e) => e.series.identity === identity && !isSafetyBackup(e.manifest));
      const newest = entries[0];
      if (newest) {
        const main = mainArtifact(newest.manifest);
        metrics.backupSucceeded(key, { finishedAt: new Date(newest.manifest.finishedAt), durationMs: newest.manifest.durationMs, size: main.size, rawSize: main.rawSize });
      }
      for (const e of entries) {
        const record = await latestRecord<VerifyRecord>(primary.storage, e.records, 'verify');
        if (record) {
          metrics.verified(key, record.result === 'passed', new Date(record.at));
          break;
        }
      }
    } catch (err) {
      if (signal.aborted) return;
      ctx.out.warn(`[${key}] could not read the stash at start: ${(err as Error).message}`);
    }
  }
}

/**
 * daemon --dry-run: everything the daemon would check at start — the config, every schedule and
 * time zone, the maximum run times, the listen address — and the plan, without starting anything.
 */
export function checkDaemon(ctx: Context): { listen: string; exposed: boolean; jobs: (ScheduledJob & { next: string; maxRunSeconds: number })[] } {
  const settings: DaemonConfig = daemonSchema.parse(ctx.loaded.config.daemon ?? {});
  for (const key of ['gracePeriod', 'staleCheck', 'walCheck', 'jitter'] as const) if (settings[key] !== undefined) duration(settings[key], key);
  const { host } = parseListen(settings.listen);
  if (!isLoopback(host) && !settings.exposeEndpoints) {
    throw new ConfigError(`daemon.listen: ${settings.listen} is reachable from other machines`, {
      hint: '/healthz and /metrics show database names, backup ages, sizes and job results; set daemon.exposeEndpoints: true to serve them there, or listen on 127.0.0.1',
    });
  }
  const jobs = scheduledJobs(ctx);
  if (jobs.length === 0 && !settings.walSocket && !ctx.loaded.config.dashboard && !Object.values(ctx.loaded.config.databases).some((e) => e.physical)) {
    throw new ConfigError('the config schedules nothing: no databases.<name>.schedule.backup, verify or prune', {
      hint: 'add e.g. schedule: { backup: "0 3 * * *", prune: "30 4 * * *" } under a database',
    });
  }
  return {
    listen: settings.listen,
    exposed: !isLoopback(host),
    jobs: jobs.map((job) => {
      const cron = parseCron(job.pattern, job.timezone, `databases.${job.database}.schedule.${job.kind}`);
      const next = cron.nextRun()!.toISOString();
      cron.stop();
      return { ...job, next, maxRunSeconds: Math.round(maxRunMs(job, settings) / 1000) };
    }),
  };
}

/** The WAL push server of the daemon: each database's stash and stages resolved once, as `wal push` would. */
async function startWalServer(ctx: Context, socketPath: string, parallel: number): Promise<WalPushServer> {
  const { resolveWalSeries, walStages } = await import('../cli/wal.js');
  const { pushWal } = await import('../wal/archive.js');
  const resolved = new Map<string, Promise<{ where: Awaited<ReturnType<typeof resolveWalSeries>>; stages: ReturnType<typeof walStages> }>>();
  const target = (database: string) => {
    let r = resolved.get(database);
    if (!r) {
      r = resolveWalSeries({ database }, ctx).then((where) => ({ where, stages: walStages({ database }, ctx, where.entry) }));
      r.catch(() => resolved.delete(database));
      resolved.set(database, r);
    }
    return r;
  };
  const walServer = new WalPushServer({
    parallel,
    log: (m) => ctx.out.warn(m),
    push: async (database, file) => {
      const { where, stages } = await target(database);
      return pushWal(file, { destinations: where.destinations, series: where.series, stages, signal: ctx.signal, warn: (m) => ctx.out.warn(m) });
    },
  });
  await walServer.listen(socketPath);
  return walServer;
}

export async function runDaemon(ctx: Context, opts: { stateFile?: string; dashboard?: string; insecureHttp?: boolean; queue?: string; agent?: boolean } = {}): Promise<number> {
  // Runs for days: its tools start from a small launcher process, not from a fork of this one.
  useToolLauncher();
  const { config } = ctx.loaded;
  // Fleet mode (docs/fleet.md): the schedules go to the queue and workers run them; this daemon
  // keeps the cron ticking, and serves /healthz, /metrics, the WAL socket and the dashboard as
  // always. An agent (--agent) schedules nothing: it archives and watches the WAL of its host's
  // databases and reports their archive state to the control database.
  const queueUrl = opts.queue ?? config.queue;
  if (opts.agent && !queueUrl) throw new ConfigError('--agent reports to the fleet\'s control database: the config has no queue', { hint: 'set queue: postgres://… in the config, or pass --queue URL' });
  const fleet = queueUrl
    ? await (async () => {
        const { openQueue } = await import('../fleet/queue.js');
        return openQueue(queueUrl, config, { warn: (m) => ctx.out.warn(m), schedule: !opts.agent, role: opts.agent ? 'agent' : 'scheduler' });
      })()
    : undefined;
  const settings: DaemonConfig = daemonSchema.parse(config.daemon ?? {});
  const graceMs = duration(settings.gracePeriod, 'gracePeriod')!;
  const jitterMs = duration(settings.jitter, 'jitter') ?? 0;
  const staleEveryMs = duration(settings.staleCheck, 'staleCheck')!;
  const walEveryMs = duration(settings.walCheck, 'walCheck')!;
  const scheduled = scheduledJobs(ctx);
  if (fleet && !opts.agent) {
    const { registerSchedules } = await import('../fleet/worker.js');
    await registerSchedules(ctx, fleet, scheduled, { catchUp: settings.catchUp });
  }
  // In fleet mode no job runs here: the workers run them.
  const jobs = fleet ? [] : scheduled;
  if (!fleet && jobs.length === 0 && !settings.walSocket && !opts.dashboard && !config.dashboard && !Object.values(ctx.loaded.config.databases).some((e) => e.physical)) {
    throw new ConfigError('the config schedules nothing: no databases.<name>.schedule.backup, verify or prune', {
      hint: 'add e.g. schedule: { backup: "0 3 * * *", prune: "30 4 * * *" } under a database',
    });
  }
  // Backups by the fleet's workers do not pass through this daemon: it cannot judge their age
  // (the dashboard and `dbstash status` do, from the stash), so it never calls them stale.
  const maxAges = new Map(fleet ? [] : Object.entries(config.databases).map(([key, entry]) => [key, expectedMaxAgeMs(entry, key)]));
  const stateFile = path.resolve(opts.stateFile ?? settings.stateFile ?? defaultStateFile(ctx));
  const state: DaemonState = await readState(stateFile);
  const startedAt = new Date();
  const previousUp = state.upSince ? new Date(state.upSince) : undefined;
  state.upSince = startedAt.toISOString();

  const metrics = new DaemonMetrics();
  const notifier = createNotifier(config.notifications, ctx.out);
  // Drills keep their scratch servers warm between runs (stopped when the daemon stops).
  const warm = new WarmScratch(config.tempDir ?? os.tmpdir());
  const jc: JobContext = { ctx, notifier, metrics, warm };
  const runner = new JobRunner(settings.concurrency, ctx.out);
  // In the background: a storage that is slow or hung must not keep the schedules from starting.
  const seeding = new AbortController();
  void seedMetrics(ctx, metrics, seeding.signal);
  const walWatch = new WalWatch(ctx, metrics, notifier, fleet && opts.agent ? await agentReporter(fleet) : undefined);

  let saving = Promise.resolve();
  const save = () => (saving = saving.then(() => writeState(stateFile, state)).catch((err: Error) => ctx.out.warn(`could not write ${stateFile}: ${err.message}`)));
  await save();

  // Set when the dashboard runs: scheduled runs then show on its Activity page.
  let webHost: import('../web/host.js').WebHost | undefined;
  const bodies = new Map(jobs.map((job) => [job.id, jobBody(job.kind, job.database, config.databases[job.database], jc)]));
  const maxRuns = new Map(jobs.map((job) => [job.id, maxRunMs(job, settings)]));
  const submit = (job: ScheduledJob, why: string) => {
    const body = bodies.get(job.id)!;
    const submitted = runner.submit({
      database: job.database,
      kind: job.kind,
      maxRunMs: maxRuns.get(job.id),
      run: async (signal) => {
        const began = new Date();
        ctx.out.info(`[${job.database}] ${job.kind} started (${why})`);
        metrics.running.inc();
        const shown = webHost?.scheduled(job.database, job.kind);
        let result: 'succeeded' | 'failed' | 'aborted' = 'succeeded';
        let error: string | undefined;
        try {
          await body(signal);
        } catch (err) {
          result = signal.reason instanceof JobTimeoutError || !(err instanceof InterruptedError || signal.aborted) ? 'failed' : 'aborted';
          error = (err as Error).message;
          ctx.out.warn(`[${job.database}] ${job.kind} ${result}: ${error}`);
        } finally {
          metrics.running.dec();
          shown?.end(result === 'succeeded' ? undefined : (error ?? result));
          metrics.jobEnded(job.database, job.kind, result);
          walWatch.jobEnded(job.database, seeding.signal);
          state.jobs[job.id] = { lastRun: began.toISOString(), result, ...(error ? { error } : {}) };
          await save();
          ctx.out.info(`[${job.database}] ${job.kind} ${result} after ${formatDuration(Date.now() - began.getTime())}`);
        }
      },
    });
    if (submitted === 'busy') {
      metrics.jobEnded(job.database, job.kind, 'skipped');
      void notifier.notify(
        makeMessage({
          event: 'skipped',
          database: job.database,
          detail: `the ${job.kind} due now did not start: the previous one is still queued or running`,
          hint: `a job that never ends is aborted after daemon.maxRunTime.${job.kind} (${formatDuration(maxRuns.get(job.id)!)}); check what holds it up`,
        }),
      );
    }
  };

  const staleNotified = new Set<string>();
  const staleness = () => {
    const out: Record<string, { lastSuccess?: string; ageSeconds?: number; maxAgeSeconds?: number; stale: boolean; lastJobs: Record<string, unknown> }> = {};
    for (const [key, maxAge] of maxAges) {
      const last = metrics.lastSuccessAt(key);
      const age = Date.now() - (last ?? startedAt.getTime());
      out[key] = {
        lastSuccess: last ? new Date(last).toISOString() : undefined,
        ageSeconds: last ? Math.round((Date.now() - last) / 1000) : undefined,
        maxAgeSeconds: maxAge !== undefined ? maxAge / 1000 : undefined,
        stale: maxAge !== undefined && age > maxAge,
        // Results and times only: an error text can hold a host, a path or a URL.
        lastJobs: Object.fromEntries(
          JOB_KINDS.filter((k) => state.jobs[`${key}:${k}`]).map((k) => {
            const { lastRun, result } = state.jobs[`${key}:${k}`];
            return [k, { lastRun, result }];
          }),
        ),
      };
    }
    return out;
  };
  const checkStale = async () => {
    for (const [key, s] of Object.entries(staleness())) {
      if (!s.stale) {
        staleNotified.delete(key);
        continue;
      }
      if (staleNotified.has(key)) continue;
      staleNotified.add(key);
      const detail = s.lastSuccess
        ? `the newest successful backup is ${formatDuration(s.ageSeconds! * 1000)} old; at most ${formatDuration(s.maxAgeSeconds! * 1000)} expected`
        : `no successful backup since the daemon started ${formatDuration(Date.now() - startedAt.getTime())} ago; at most ${formatDuration(s.maxAgeSeconds! * 1000)} expected`;
      ctx.out.warn(`[${key}] stale: ${detail}`);
      await notifier.notify(makeMessage({ event: 'stale', database: key, detail, hint: 'check the daemon log and the last backup job; run `dbstash status` for details' }));
    }
  };
  const health = async (): Promise<Health> => {
    const databases = staleness();
    const problems: string[] = [];
    for (const [key, s] of Object.entries(databases)) {
      if (s.stale) problems.push(`${key}: no successful backup within ${formatDuration((s.maxAgeSeconds ?? 0) * 1000)}`);
      for (const [kind, last] of Object.entries(s.lastJobs)) {
        if ((last as { result: string }).result === 'failed') problems.push(`${key}: last ${kind} failed`);
      }
    }
    problems.push(...walWatch.problems());
    return { healthy: problems.length === 0, problems, startedAt: startedAt.toISOString(), running: runner.runningCount, databases };
  };
  const server = await startHttp(settings.listen, health, metrics.registry, { expose: settings.exposeEndpoints, warn: (m) => ctx.out.warn(m) });
  const walServer = settings.walSocket ? await startWalServer(ctx, path.resolve(settings.walSocket), settings.walParallel) : undefined;
  // The dashboard, when the config or --dashboard asks for it: the same pages and API as
  // `dbstash dashboard`, with the daemon's metrics and drill scratch server.
  let web: { url: string; close(): Promise<void> } | undefined;
  if (opts.dashboard || config.dashboard) {
    const { createWebHost } = await import('../web/host.js');
    const { startDashboard } = await import('../web/server.js');
    const host = createWebHost(ctx, { metrics, warm });
    web = await startDashboard(host, { listen: opts.dashboard ?? host.settings.listen, insecureHttp: !!opts.insecureHttp });
    webHost = host;
  }
  const jitterTimers = new Set<NodeJS.Timeout>();
  const crons: Cron[] = [];
  for (const job of jobs) {
    metrics.declareJob(job.database, job.kind);
    crons.push(
      new Cron(job.pattern, { timezone: job.timezone, protect: false }, () => {
        if (jitterMs <= 0) return submit(job, 'scheduled');
        const timer = setTimeout(() => {
          jitterTimers.delete(timer);
          submit(job, 'scheduled');
        }, Math.floor(Math.random() * jitterMs));
        jitterTimers.add(timer);
      }),
    );
  }
  if (settings.catchUp) {
    for (const [i, job] of jobs.entries()) {
      const reference = state.jobs[job.id]?.lastRun ?? previousUp?.toISOString();
      const missed = crons[i].previousRuns(1, startedAt)[0];
      if (reference && missed && missed.getTime() > Date.parse(reference)) submit(job, `catching up on the run due at ${missed.toISOString()}`);
    }
  }

  const staleTimer = setInterval(() => void checkStale(), staleEveryMs);
  walWatch.start(walEveryMs, seeding.signal);

  ctx.out.info(
    `dbstash daemon${fleet ? (opts.agent ? ' (fleet agent)' : ' (fleet scheduler)') : ''}: ${fleet ? `${opts.agent ? 'no' : scheduled.length} schedule${scheduled.length === 1 && !opts.agent ? '' : 's'} on the queue` : jobs.length === 0 ? 'no scheduled jobs' : `${jobs.length} scheduled job${jobs.length === 1 ? '' : 's'} (${jobs.map((j) => `${j.id} "${j.pattern}"`).join(', ')})`}; listening on ${server.url} (/healthz, /metrics)` +
      (settings.walSocket ? `; archiving WAL for dbstash wal push --socket ${path.resolve(settings.walSocket)}` : '') +
      (web ? `; dashboard on ${web.url}` : '') +
      (walWatch.size ? `; watching WAL archiving of ${walWatch.size} database${walWatch.size === 1 ? '' : 's'} every ${settings.walCheck}` : ''),
  );

  await new Promise<void>((resolve) => {
    if (ctx.signal.aborted) return resolve();
    ctx.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  seeding.abort(new InterruptedError('SIGTERM'));
  crons.forEach((c) => c.stop());
  jitterTimers.forEach((t) => clearTimeout(t));
  clearInterval(staleTimer);
  await walWatch.stop();
  const reason = ctx.signal.reason instanceof InterruptedError ? ctx.signal.reason : new InterruptedError('SIGTERM');
  const { finished, aborted } = await runner.shutdown(graceMs, reason);
  await save();
  await server.close();
  await web?.close();
  await walServer?.close();
  await fleet?.stop({ graceful: true, close: true, timeout: 10_000 }).catch(() => {});
  await warm.close().catch((err: Error) => ctx.out.warn(`could not stop the drills' scratch server: ${err.message}`));
  ctx.out.info(`dbstash daemon stopped (${finished} job${finished === 1 ? '' : 's'} finished, ${aborted} aborted)`);
  return 0;
}
