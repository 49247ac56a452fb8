// `dbstash status`: is every database backed up recently enough, verified, within its retention,
// unlocked, with its storages reachable and roomy? Exit 13 when anything is a problem, so it
// serves as a Nagios-style check.

import type { Command } from 'commander';
import { ExitCode, UsageError } from '../core/errors.js';
import { parseDuration } from '../core/format.js';
import { resolveDestinations } from '../config/resolve.js';
import type { Destination } from '../backup/backup.js';
import { expectedMaxAgeMs } from '../daemon/cron.js';
import { databasesByFolder, folderOf } from '../retention/config.js';
import { collectStatus, foldersIn, type Finding, type StatusReport, type StatusTarget } from '../status/status.js';
import { createNotifier } from '../notify/notifier.js';
import { makeMessage } from '../notify/message.js';
import { commonOptions, runCommand, stashOptions, type CommonOptions, type Context } from './common.js';

interface StatusOptions extends CommonOptions {
  maxAge?: string;
  notify?: boolean;
}

const MARK: Record<Finding['level'], string> = { ok: 'ok     ', warn: 'warn   ', problem: 'PROBLEM' };

function render(r: StatusReport): string {
  const lines: string[] = [];
  for (const d of r.databases) {
    lines.push(`${d.database}${d.key && d.key !== d.database ? ` (config: ${d.key})` : ''}`);
    for (const f of d.findings) lines.push(`  ${MARK[f.level]}  ${f.message}`);
  }
  for (const s of r.storages) {
    const free = s.freeBytes !== undefined ? `, ${(s.freeBytes / 1024 ** 3).toFixed(1)} GiB free` : '';
    lines.push(`storage ${s.name} (${s.url}): ${s.reachable ? 'reachable' : 'NOT REACHABLE'}${free}`);
    for (const f of s.findings) lines.push(`  ${MARK[f.level]}  ${f.message}`);
  }
  const problems = [...r.databases.flatMap((d) => d.findings), ...r.storages.flatMap((s) => s.findings)].filter((f) => f.level === 'problem').length;
  lines.push(r.healthy ? 'healthy' : `UNHEALTHY: ${problems} problem${problems === 1 ? '' : 's'}`);
  return lines.join('\n');
}

async function targetsFor(database: string | undefined, opts: StatusOptions, ctx: Context): Promise<{ targets: StatusTarget[]; stashes: Destination[] }> {
  const { config } = ctx.loaded;
  let maxAgeMs: number | undefined;
  if (opts.maxAge !== undefined) {
    maxAgeMs = parseDuration(opts.maxAge);
    if (maxAgeMs === undefined) throw new UsageError(`--max-age takes a duration, got "${opts.maxAge}"`, { hint: 'e.g. --max-age 26h' });
  }
  const stashGiven = Boolean(opts.outputDir || opts.storage?.length);
  const configured = Object.entries(config.databases).filter(([key, entry]) => !database || key === database || folderOf(entry) === database);
  const targets: StatusTarget[] = [];
  for (const [key, entry] of configured) {
    const folder = folderOf(entry);
    if (!folder) continue;
    targets.push({ folder, key, entry, destinations: await resolveDestinations(opts, config, entry), maxAgeMs: maxAgeMs ?? expectedMaxAgeMs(entry, key) });
  }
  let stashes: Destination[] = [];
  if (targets.length === 0 || (stashGiven && !database)) {
    stashes = await resolveDestinations(opts, config);
    const known = databasesByFolder(config);
    const found = database ? { folders: [database], unreachable: false } : await foldersIn(stashes);
    for (const folder of found.folders) {
      if (targets.some((t) => t.folder === folder) || known.has(folder)) continue;
      targets.push({ folder, destinations: stashes, maxAgeMs });
    }
    if (targets.length === 0 && !found.unreachable) {
      throw new UsageError('no database to check: the config names none and the stash holds no backups', {
        hint: 'give --output-dir/--storage of a stash with backups, or configure databases in dbstash.yaml',
      });
    }
  }
  return { targets, stashes };
}

/** One "stale" notification per database whose backups are missing or too old somewhere required. */
async function notifyStale(report: StatusReport, ctx: Context): Promise<void> {
  const notifier = createNotifier(ctx.loaded.config.notifications, ctx.out);
  for (const d of report.databases) {
    const stale = d.findings.filter((f) => f.check === 'backup' && f.level === 'problem');
    if (stale.length === 0) continue;
    await notifier.notify(
      makeMessage({
        event: 'stale',
        database: d.key ?? d.database,
        backupId: d.newest?.id,
        detail: stale.map((f) => f.message).join('; '),
        hint: 'check the scheduler (cron, systemd timers or the daemon) and the last backup run',
      }),
    );
  }
}

export function registerStatus(program: Command): void {
  const cmd = program
    .command('status')
    .description('health of the backups: age, verification, retention, locks, storages (exit 13 when unhealthy)')
    .argument('[database]', 'only this database (config name or the database name in backup ids)')
    .option('--max-age <duration>', 'newest backup may be at most this old (default: maxAge in the config, else twice the backup schedule)')
    .option('--notify', 'send a "stale" notification for each database without a recent enough backup (for cron)');
  stashOptions(cmd);
  commonOptions(cmd);
  cmd.addHelpText(
    'after',
    `
Examples:
  dbstash status
  dbstash status shop --output-dir /var/backups/dbstash --max-age 26h
  dbstash status --json | jq '.databases[] | select(.findings[].level == "problem")'`,
  );
  cmd.action((database: string | undefined, opts: StatusOptions) =>
    runCommand(opts, async (ctx) => {
      const { targets, stashes } = await targetsFor(database, opts, ctx);
      const report = await collectStatus(targets, ctx.loaded.config, stashes);
      if (opts.notify) await notifyStale(report, ctx);
      ctx.out.result(report, () => render(report));
      return report.healthy ? ExitCode.ok : ExitCode.unhealthy;
    }),
  );
}
