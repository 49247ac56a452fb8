// Restore and prune of a configured database, for every front end that is not the CLI's own
// flag handling (the dashboard's admin actions, the daemon's prune schedule), through the same
// core as `dbstash restore` and `dbstash prune`:
//   - restore: the plan of a dry run first (the backup verified in full, the target, the mode:
//     a new database, or a new one swapped in with the live one kept aside); then the restore
//     itself only when the user typed the target database's name, which the run's own plan must
//     match, as on the command line;
//   - prune: what the policy would remove from each storage, then the prune itself on confirmation.

import os from 'node:os';
import type { Destination } from '../backup/backup.js';
import { stageContext } from '../cli/secrets.js';
import { resolveDestinations } from '../config/resolve.js';
import type { ConfigFile, DatabaseConfig } from '../config/schema.js';
import { UsageError } from '../core/errors.js';
import { loadEngine } from '../engines/index.js';
import { parseTarget } from '../engines/target.js';
import { pruneStorage, type PruneReport } from '../prune/prune.js';
import { runRestore, type RestoreOutcome, type RestorePlan } from '../restore/restore.js';
import { policyResolver, seriesOfEntry } from '../retention/config.js';
import { locateBackup } from '../verify/locate.js';

export interface ActionEvents {
  info(message: string): void;
  warn(message: string): void;
}

/** The target of a restore: a database named in the config, or a URL (SQLite: a path). */
function targetOf(config: ConfigFile, to: string) {
  if (!to.trim()) throw new UsageError('say where to restore: a database from the config, or a database URL');
  const entry = Object.hasOwn(config.databases, to) ? config.databases[to] : undefined;
  return parseTarget(entry ? entry.url : to, { binDir: entry?.binDir });
}

/**
 * Plans (dryRun) or runs the restore of backup `id` of config database `database` into `to`.
 * A real run goes on only when `typed` is the name of the database its plan will write.
 */
export async function restoreBackup(
  config: ConfigFile,
  database: string,
  id: string,
  to: string,
  opts: { dryRun: boolean; typed?: string; signal: AbortSignal; events: ActionEvents },
): Promise<RestoreOutcome> {
  const entry = config.databases[database];
  const target = targetOf(config, to);
  const located = await locateBackup(await resolveDestinations({}, config, entry), id, { warn: opts.events.warn });
  const engine = await loadEngine(located.manifest.engine);
  return runRestore(
    {
      dest: located.dest,
      manifest: located.manifest,
      engine,
      target,
      dryRun: opts.dryRun,
      stageContext: stageContext({}, config, entry),
      tempDir: config.tempDir ?? os.tmpdir(),
      signal: opts.signal,
      events: opts.events,
    },
    async (plan: RestorePlan) => {
      if (opts.dryRun) return false;
      if (opts.typed !== plan.database) throw new UsageError(`the typed name "${opts.typed ?? ''}" is not the target database "${plan.database}": nothing was restored`);
      return true;
    },
  );
}

/**
 * What the policy removes (dryRun) or removed from every storage of `entry`, one storage after
 * the other; `after` sees each report as it comes (and may stop the rest by throwing).
 */
export async function pruneDatabase(
  config: ConfigFile,
  entry: DatabaseConfig,
  opts: { dryRun: boolean; warn: (m: string) => void; after?: (storage: string, report: PruneReport) => void },
): Promise<{ storage: string; report: PruneReport }[]> {
  const series = seriesOfEntry(entry);
  if (!series) throw new UsageError('the database URL in the config does not parse');
  const out: { storage: string; report: PruneReport }[] = [];
  const destinations: Destination[] = await resolveDestinations({}, config, entry);
  for (const dest of destinations) {
    const report = await pruneStorage(dest.storage, { dryRun: opts.dryRun, series: series.identity, policyFor: policyResolver(config, dest.name), warn: opts.warn });
    out.push({ storage: dest.name, report });
    opts.after?.(dest.name, report);
  }
  return out;
}
