// Wires the dashboard to the core: the catalog it reads, and the jobs it starts through the same
// job bodies as the daemon's schedules (backup with its notifications, drill of the newest
// backup), each job's lines recorded for its page and event stream.

import os from 'node:os';
import path from 'node:path';
import type { Context } from '../cli/common.js';
import { RecordingOutput } from '../cli/output.js';
import { dashboardSchema, type ConfigFile, type DashboardConfig } from '../config/schema.js';
import { maskSecrets } from '../core/secrets.js';
import { jobBody } from '../daemon/jobs.js';
import { DaemonMetrics } from '../daemon/metrics.js';
import { createNotifier } from '../notify/notifier.js';
import { WarmScratch } from '../verify/warm.js';
import { pruneDatabase, restoreBackup } from '../app/actions.js';
import { parseDuration } from '../core/format.js';
import { createCatalog } from './data.js';
import { CatalogIndex } from './index-store.js';
import { WebJobs } from './jobs.js';
import type { DashboardHost } from './server.js';

/** Enqueues one job on the fleet and follows it to its end (its events go to the dashboard's job). */
async function onTheFleet(
  boss: import('pg-boss').PgBoss,
  config: ConfigFile,
  database: string,
  kind: 'backup' | 'verify' | 'prune',
  backupId: string | undefined,
  events: { info(m: string): void; warn(m: string): void },
  signal: AbortSignal,
): Promise<unknown> {
  const { enqueue, followJob } = await import('../fleet/queue.js');
  const job = await enqueue(boss, config, kind, { database, by: 'dashboard', ...(backupId ? { backupId } : {}) });
  events.info(`queued on the fleet as job ${job.id}; waiting for a worker`);
  const { job: ended, output } = await followJob(boss, job.queue, job.id, {
    signal,
    running: (attempt) => events.info(`running (attempt ${attempt})`),
    retrying: (attempt, reason) => events.warn(`attempt ${attempt} failed: ${reason}; it will be retried`),
  });
  if (ended.state !== 'completed') throw new Error(`${kind} ${ended.state} on the fleet: ${output.message ?? 'no reason recorded'}`);
  events.info(`${kind} done by worker ${output.worker ?? '?'}`);
  return { fleetJob: job.id, worker: output.worker };
}

/** Beside the config file, as the daemon's state file: `.dbstash-dashboard.sqlite`. */
export function defaultIndexFile(ctx: Context): string {
  return path.join(ctx.loaded.file ? path.dirname(ctx.loaded.file) : process.cwd(), '.dbstash-dashboard.sqlite');
}

export interface WebHost extends DashboardHost {
  /** A scheduled run of the daemon, shown beside the dashboard's own jobs. */
  scheduled(database: string, kind: 'backup' | 'verify' | 'prune'): { end(error?: string): void };
  close(): Promise<void>;
}

export function createWebHost(ctx: Context, opts: { metrics?: DaemonMetrics; warm?: WarmScratch } = {}): WebHost {
  const config = ctx.loaded.config;
  const settings: DashboardConfig = dashboardSchema.parse(config.dashboard ?? {});
  const index = CatalogIndex.open(settings.index ?? defaultIndexFile(ctx), (m) => ctx.out.warn(m));
  const catalog = createCatalog(config, { index, rescanMs: parseDuration(settings.rescan), warn: (m) => ctx.out.warn(m) });
  const notifier = createNotifier(config.notifications, ctx.out);
  const metrics = opts.metrics ?? new DaemonMetrics();
  const warm = opts.warm ?? new WarmScratch(config.tempDir ?? os.tmpdir());
  const ownWarm = !opts.warm;
  // Fleet mode: the control database is opened at the first look (a dashboard without one still serves the stash).
  let fleetQueue: Promise<import('pg-boss').PgBoss> | undefined;
  const openFleet = async () => {
    const { openQueue } = await import('../fleet/queue.js');
    if (!fleetQueue) {
      const opening = openQueue(config.queue!, config, { warn: (m) => ctx.out.warn(m), supervise: false, role: 'dashboard' });
      fleetQueue = opening;
      opening.catch((err: Error) => {
        ctx.out.warn(`the fleet's queue: ${maskSecrets(err.message)}`);
        if (fleetQueue === opening) fleetQueue = undefined;
      });
    }
    return fleetQueue;
  };
  const fleet = config.queue
    ? async () => {
        const { fleetView } = await import('../fleet/view.js');
        return fleetView(await openFleet(), config);
      }
    : undefined;
  const fleetRun = config.queue
    ? async (id: string) => {
        const { fleetRun: one } = await import('../fleet/view.js');
        return one(await openFleet(), config, id);
      }
    : undefined;
  const jobs = new WebJobs(
    async (database, kind, event, signal, params) => {
      const out = new RecordingOutput(ctx.out, event);
      const events = { info: (m: string) => out.info(`[${database}] ${m}`), warn: (m: string) => out.warn(`[${database}] ${m}`) };
      try {
        if (kind === 'restore-plan') {
          const warnings: string[] = [];
          const outcome = await restoreBackup(config, database, params.backupId!, params.to!, { dryRun: true, signal, events: { info: events.info, warn: (m) => (warnings.push(m), events.warn(m)) } });
          out.info(`[${database}] plan: ${outcome.plan.mode} into ${outcome.plan.database}; type "${outcome.plan.database}" to restore`);
          return { plan: outcome.plan, warnings, confirmWith: outcome.plan.database };
        }
        if (kind === 'restore') {
          const outcome = await restoreBackup(config, database, params.backupId!, params.to!, { dryRun: false, typed: params.typed, signal, events });
          const r = outcome.record!;
          out.info(`[${database}] restored ${r.id} into ${r.target}${r.keptAs && !r.droppedOld ? `; the previous database is kept as ${r.keptAs}` : ''}`);
          return { target: r.target, keptAs: r.keptAs, durationMs: r.durationMs };
        }
        // In fleet mode a backup, drill or prune goes on the queue like a scheduled one: a worker
        // runs it, one at a time per database across the fleet; this job follows it.
        if (config.queue) return await onTheFleet(await openFleet(), config, database, kind, params.backupId, events, signal);
        if (kind === 'prune') {
          const reports = await pruneDatabase(config, config.databases[database], { dryRun: false, warn: events.warn });
          const removed = reports.reduce((n, r) => n + r.report.backups.filter((b) => b.removed).length, 0);
          const freed = reports.reduce((n, r) => n + r.report.bytesFreed, 0);
          out.info(`[${database}] prune removed ${removed} backups, freed ${freed} bytes`);
          if (reports.some((r) => r.report.failures > 0)) throw new Error('prune could not remove every object; see the log');
          return { removed, bytesFreed: freed };
        }
        await jobBody(kind, database, config.databases[database], { ctx: { ...ctx, out, signal }, notifier, metrics, warm }, { backupId: params.backupId })(signal);
        return undefined;
      } catch (err) {
        const message = maskSecrets((err as Error).message);
        event('error', message);
        throw new Error(message);
      } finally {
        catalog.changed(database);
      }
    },
    ctx.signal,
    (a) => ctx.out.info(`audit: ${a.user} ${a.action} ${a.target}: ${a.result}`, { audit: a }),
    catalog.index,
  );
  return {
    config,
    settings,
    catalog,
    jobs,
    ...(fleet ? { fleet } : {}),
    ...(fleetRun ? { fleetRun } : {}),
    scheduled(database, kind) {
      const tracked = jobs.track(database, kind, 'schedule');
      return {
        end(error) {
          if (error) tracked.event('error', maskSecrets(error));
          catalog.changed(database);
          tracked.end(error === undefined ? undefined : maskSecrets(error));
        },
      };
    },
    close: async () => {
      if (ownWarm) await warm.close().catch(() => {});
      catalog.close();
      if (fleetQueue) await (await fleetQueue.catch(() => undefined))?.stop({ graceful: false, close: true }).catch(() => {});
    },
  };
}
