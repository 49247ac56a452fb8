// `dbstash status`: is every database backed up recently enough, verified, within its retention,
// unlocked, with its storages reachable and roomy? Exit 13 when anything is a problem, so it
// serves as a Nagios-style check.

import type { Command } from 'commander';
import { ExitCode, UsageError } from '../core/errors.js';
import { parseDuration } from '../core/format.js';
import { resolveDestinations } from '../config/resolve.js';
import type { Destination } from '../backup/backup.js';
import { expectedMaxAgeMs } from '../daemon/cron.js';
import { configKeys, configuredSeries } from '../retention/config.js';
import { resolveSeries, type SeriesMatch } from '../catalog/series.js';
import { collectStatus, seriesInStashes, type Finding, type StatusReport, type StatusTarget } from '../status/status.js';
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
    lines.push(`${d.database}${d.key && d.key !== d.database ? ` (config: ${d.key})` : ''} — ${d.identity}`);
    for (const f of d.findings) lines.push(`  ${MARK[f.level]}  ${f.message}`);
  }
  for (const s of r.storages) {
    const free = s.freeBytes !== undefined ? `, ${(s.freeBytes / 1024 ** 3).toFixed(1)} GiB free` : '';
    lines.push(`storage ${s.name} (${s.url}): ${s.reachable ? 'reachable' : 'NOT REACHABLE'}${free}`);
    for (const f of s.findings) lines.push(`  ${MARK[f.level]}  ${f.message}`);
  }
  if (r.temp.findings.length > 0) {
    lines.push(`temp dir ${r.temp.dir}`);
    for (const f of r.temp.findings) lines.push(`  ${MARK[f.level]}  ${f.message}`);
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
  const configured = configuredSeries(config);
  const keys = configKeys(config);
  let wanted: string | undefined;
  if (database) {
    // The name may be a config key, a series' name or folder, or a database's real name.
    const stashes = await resolveDestinations(opts, config, config.databases[database]);
    const { found } = await seriesInStashes(stashes).catch(() => ({ found: [] as SeriesMatch[] }));
    const seen = new Set(found.map((f) => f.series.identity));
    const hit = resolveSeries([...found, ...[...configured.values()].map((c) => c.match).filter((m) => !seen.has(m.series.identity))], database, keys);
    if (!hit) throw new UsageError(`no database "${database}" in the config or the stash`, { hint: 'run `dbstash list` to see the names of the databases with backups' });
    wanted = hit.match.series.identity;
    if (hit.by !== 'name' && hit.by !== 'folder' && hit.by !== 'config key') ctx.out.info(`"${database}" is the ${hit.by} of ${hit.match.series.name} (${wanted})`);
  }
  const targets: StatusTarget[] = [];
  for (const c of configured.values()) {
    if (wanted && c.series.identity !== wanted) continue;
    targets.push({ series: c.series, label: c.series.name, key: c.key, entry: c.entry, destinations: await resolveDestinations(opts, config, c.entry), maxAgeMs: maxAgeMs ?? expectedMaxAgeMs(c.entry, c.key) });
  }
  let stashes: Destination[] = [];
  if (targets.length === 0 || (stashGiven && !database)) {
    stashes = await resolveDestinations(opts, config);
    const found = await seriesInStashes(stashes);
    for (const m of found.found) {
      if (wanted && m.series.identity !== wanted) continue;
      if (configured.has(m.series.identity)) continue;
      targets.push({ series: m.series, label: found.labels.get(m.series.identity), destinations: stashes, maxAgeMs });
    }
    if (targets.length === 0 && !found.unreachable) {
      throw new UsageError('no database to check: the config names none and the stash holds no backups', {
        hint: 'give --output-dir/--storage of a stash with backups, or configure databases in dbstash.yaml',
      });
    }
  }
  return { targets, stashes };
}

/**
 * One "stale" notification per database whose backups are missing or too old somewhere required,
 * and one "archive" notification per database whose WAL archiving fails, stalls or has a gap.
 */
async function notifyProblems(report: StatusReport, ctx: Context): Promise<void> {
  const notifier = createNotifier(ctx.loaded.config.notifications, ctx.out);
  for (const d of report.databases) {
    const stale = d.findings.filter((f) => f.check === 'backup' && f.level === 'problem');
    if (stale.length > 0) {
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
    const archive = d.findings.filter((f) => f.check === 'archive' && f.level === 'problem');
    if (archive.length > 0) {
      await notifier.notify(
        makeMessage({
          event: 'archive',
          database: d.key ?? d.database,
          detail: archive.map((f) => f.message).join('; '),
          hint: 'look at the server log and `dbstash wal push` by hand; until archiving works, point-in-time recovery stops at the last archived segment',
        }),
      );
    }
  }
}

export function registerStatus(program: Command): void {
  const cmd = program
    .command('status')
    .description('health of the backups: age, verification, retention, locks, storages (exit 13 when unhealthy)')
    .argument('[database]', 'only this database (its name as `list` shows it, its real name, or its config key)')
    .option('--max-age <duration>', 'newest backup may be at most this old (default: maxAge in the config, else twice the backup schedule)')
    .option('--notify', 'send a "stale" notification for each database without a recent enough backup, an "archive" one for each failing WAL archive (for cron)');
  stashOptions(cmd);
  commonOptions(cmd, { codes: [11, 13] });
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
      if (opts.notify) await notifyProblems(report, ctx);
      ctx.out.result(report, () => render(report));
      return report.healthy ? ExitCode.ok : ExitCode.unhealthy;
    }),
  );
}
