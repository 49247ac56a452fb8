// What each scheduled job does for one configured database: a backup (with its notifications),
// a prune of every storage the database goes to, or a verification drill of its newest backup.

import type { Context } from '../cli/common.js';
import { locateBackup, locateLatest } from '../verify/locate.js';
import type { WarmScratch } from '../verify/warm.js';
import { verifyBackup } from '../verify/verify.js';
import { planBackup } from '../cli/backup.js';
import { stageContext, verifierFor } from '../cli/secrets.js';
import { resolveDestinations } from '../config/resolve.js';
import type { DatabaseConfig } from '../config/schema.js';
import { formatBytes } from '../core/format.js';
import os from 'node:os';
import { IntegrityError } from '../core/errors.js';
import { mainArtifact } from '../catalog/manifest.js';
import { runNotifiedBackup, verifyFailureMessage } from '../notify/backup.js';
import type { Notifier } from '../notify/notifier.js';
import { pruneDatabase } from '../app/actions.js';
import { seriesOfEntry } from '../retention/config.js';
import type { JobKind } from './cron.js';
import type { DaemonMetrics } from './metrics.js';

export interface JobContext {
  ctx: Context;
  notifier: Notifier;
  metrics: DaemonMetrics;
  /** The drills' scratch servers, kept between drills. */
  warm?: WarmScratch;
}

export type JobBody = (signal: AbortSignal) => Promise<void>;

function backupJob(key: string, jc: JobContext, job?: { id: string; attempt: number }): JobBody {
  return async (signal) => {
    const { ctx } = jc;
    const plan = { ...(await planBackup(key, {}, { ...ctx, signal })), ...(job ? { job } : {}) };
    const result = await runNotifiedBackup(plan, { info: (m) => ctx.out.info(`[${key}] ${m}`), warn: (m) => ctx.out.warn(`[${key}] ${m}`) }, signal, jc.notifier);
    const m = result.manifest;
    const main = mainArtifact(m);
    jc.metrics.backupSucceeded(key, { finishedAt: new Date(m.finishedAt), durationMs: m.durationMs, size: main.size, rawSize: main.rawSize });
    ctx.out.info(`[${key}] backup ${m.id} done: ${formatBytes(main.size)} stored in ${result.stored.join(', ')}${result.degraded ? ' (degraded)' : ''}`);
  };
}

function pruneJob(key: string, entry: DatabaseConfig, jc: JobContext): JobBody {
  return async () => {
    const { ctx } = jc;
    await pruneDatabase(ctx.loaded.config, entry, {
      dryRun: false,
      warn: (m) => ctx.out.warn(`[${key}] ${m}`),
      after: (storage, report) => {
        const removed = report.backups.filter((b) => b.removed).length;
        const aborted = report.incompleteUploads.filter((u) => u.aborted).length;
        ctx.out.info(
          `[${key}] prune of ${storage}: removed ${removed} backups and ${report.orphans.filter((o) => o.removed).length} leftovers` +
            (aborted > 0 ? `, aborted ${aborted} incomplete uploads` : '') +
            `, freed ${formatBytes(report.bytesFreed)}`,
        );
        if (report.failures > 0) throw new Error(`prune of ${storage} could not remove ${report.failures} objects`);
      },
    });
  };
}

/** A restore drill of the newest backup, or of `backupId` (deep when the database takes checksums). */
function verifyJob(key: string, entry: DatabaseConfig, jc: JobContext, backupId?: string): JobBody {
  return async (signal) => {
    const { ctx } = jc;
    const config = ctx.loaded.config;
    const series = seriesOfEntry(entry);
    if (!series) throw new Error(`databases.${key}.url does not parse`);
    const destinations = await resolveDestinations({}, config, entry);
    const located = backupId
      ? await locateBackup(destinations, backupId, { verifier: verifierFor({}, config) })
      : await locateLatest(destinations, { identity: series.identity }, { verifier: verifierFor({}, config) });
    if (!located) throw new Error('no backup to verify yet');
    if (backupId && located.manifest.series?.identity !== undefined && located.manifest.series.identity !== series.identity) {
      throw new Error(`${backupId} is not a backup of ${key}`);
    }
    const { manifest, dest } = located;
    const level = entry.checksums ? 'deep' : 'drill';
    try {
      const result = await verifyBackup(dest.storage, manifest, {
        level,
        stageContext: stageContext({}, config, entry),
        tempDir: config.tempDir ?? os.tmpdir(),
        scratchUrl: entry.scratchUrl,
        warm: jc.warm,
        signal,
        events: { info: (m) => ctx.out.info(`[${key}] ${m}`), warn: (m) => ctx.out.warn(`[${key}] ${m}`) },
      });
      jc.metrics.verified(key, true, new Date(result.record.at));
      ctx.out.info(`[${key}] ${manifest.id}: ${level} passed — ${result.structure}`);
    } catch (err) {
      if (signal.aborted) throw err;
      if (err instanceof IntegrityError) jc.metrics.verified(key, false, new Date());
      await jc.notifier.notify(verifyFailureMessage(manifest, level, err));
      throw err;
    }
  };
}

export function jobBody(kind: JobKind, key: string, entry: DatabaseConfig, jc: JobContext, opts: { backupId?: string; fleetJob?: { id: string; attempt: number } } = {}): JobBody {
  switch (kind) {
    case 'backup':
      return backupJob(key, jc, opts.fleetJob);
    case 'prune':
      return pruneJob(key, entry, jc);
    case 'verify':
      return verifyJob(key, entry, jc, opts.backupId);
  }
}
