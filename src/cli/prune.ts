// `dbstash prune [database]`: applies the retention policy to every storage and removes what it
// does not keep, plus the leftovers of crashed runs (and, on S3, aborts old incomplete multipart
// uploads). --dry-run prints every decision with its reasons and the bytes that would be freed.

import os from 'node:os';
import type { Command } from 'commander';
import { findLeftovers, removeLeftovers } from '../core/scratch.js';
import { ExitCode, StorageError, UsageError } from '../core/errors.js';
import { formatBytes, parseDuration, renderTable } from '../core/format.js';
import { resolveDestinations } from '../config/resolve.js';
import { configKeys, configuredSeries, policyResolver } from '../retention/config.js';
import { findSeries } from '../catalog/find.js';
import { askYesNo } from './output.js';
import { assertTimezone, type RetentionPolicy } from '../retention/policy.js';
import { pruneStorage, type PruneReport } from '../prune/prune.js';
import { collect, commonOptions, runCommand, stashOptions, type CommonOptions } from './common.js';

export interface PruneCliOptions extends CommonOptions {
  keepLast?: string;
  keepHourly?: string;
  keepDaily?: string;
  keepWeekly?: string;
  keepMonthly?: string;
  keepYearly?: string;
  keepWithin?: string;
  keepTag?: string[];
  timezone?: string;
  orphanAge?: string;
  uploadAge?: string;
  safetyAge?: string;
  allowEmpty?: boolean;
}

function count(flag: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new UsageError(`--${flag} takes a whole number ≥ 0, got "${value}"`, { hint: `e.g. --${flag} 7` });
  return n;
}

/** The keep rules given on the command line, or undefined when no keep flag is set. */
export function policyFromFlags(opts: PruneCliOptions): RetentionPolicy | undefined {
  const policy: RetentionPolicy = {
    keepLast: count('keep-last', opts.keepLast),
    keepHourly: count('keep-hourly', opts.keepHourly),
    keepDaily: count('keep-daily', opts.keepDaily),
    keepWeekly: count('keep-weekly', opts.keepWeekly),
    keepMonthly: count('keep-monthly', opts.keepMonthly),
    keepYearly: count('keep-yearly', opts.keepYearly),
    keepWithin: opts.keepWithin,
    keepTags: opts.keepTag,
  };
  if (opts.keepWithin !== undefined && parseDuration(opts.keepWithin) === undefined) {
    throw new UsageError(`--keep-within takes a duration, got "${opts.keepWithin}"`, { hint: 'use a number with a unit: 36h, 14d, 8w' });
  }
  return Object.values(policy).some((v) => v !== undefined) ? policy : undefined;
}

function renderReport(r: PruneReport): string {
  const lines = [`${r.storage}${r.dryRun ? ' (dry run: nothing removed)' : ''}`];
  const cancelled = r.cancelled ? ' (cancelled: nothing removed)' : '';
  if (cancelled) lines[0] += cancelled;
  for (const s of r.series) lines.push(`  ${s.database} (${s.environment}): keep ${s.policy}`);
  if (r.backups.length > 0) {
    const table = renderTable(
      ['', 'ID', 'SIZE', 'REASONS'],
      r.backups.map((b) => [b.keep ? 'keep' : b.removed || r.dryRun || r.cancelled ? 'remove' : 'FAILED', b.id, formatBytes(b.bytes), b.error ?? b.reasons.join('; ')]),
    );
    lines.push(...table.split('\n').map((l) => `  ${l}`));
  }
  for (const o of r.orphans) lines.push(`  ${o.removed || r.dryRun ? 'remove' : 'FAILED'}  ${o.key}  ${formatBytes(o.bytes)}  ${o.error ?? o.reason}`);
  for (const w of r.wal) {
    const verb = r.dryRun || r.cancelled ? 'remove' : w.error ? 'FAILED' : 'remove';
    lines.push(`  ${verb}  WAL of ${w.series} before ${w.keptFrom} (the oldest kept base backup): ${w.objects} files${w.first ? `, segments ${w.first} to ${w.last}` : ''}, ${formatBytes(w.bytes)}${w.error ? ` — ${w.error}` : ''}`);
  }
  for (const u of r.incompleteUploads) lines.push(`  ${u.aborted || r.dryRun ? 'abort' : 'FAILED'}  ${u.key}  upload ${u.uploadId}  ${u.error ?? u.reason}`);
  const gone = r.backups.filter((b) => !b.keep && (r.dryRun || b.removed)).length;
  const orphans = r.orphans.filter((o) => r.dryRun || o.removed).length;
  const uploads = r.incompleteUploads.filter((u) => r.dryRun || u.aborted).length;
  lines.push(
    `  ${r.dryRun ? 'would remove' : 'removed'} ${gone} backup${gone === 1 ? '' : 's'} and ${orphans} leftover${orphans === 1 ? '' : 's'}` +
      (uploads > 0 ? `, ${r.dryRun ? 'would abort' : 'aborted'} ${uploads} incomplete upload${uploads === 1 ? '' : 's'}` : '') +
      (r.wal.length > 0 ? `, ${r.dryRun ? 'would remove' : 'removed'} ${r.wal.reduce((a, w) => a + (r.dryRun ? w.objects : (w.removed ?? 0)), 0)} WAL files` : '') +
      `, ${r.dryRun ? 'freeing' : 'freed'} ${formatBytes(r.bytesFreed)}`,
  );
  return lines.join('\n');
}

export function registerPrune(program: Command): void {
  const cmd = program
    .command('prune')
    .description('remove backups the retention policy does not keep, and leftovers of crashed runs')
    .argument('[database]', 'only this database (its name as `list` shows it, its real name, or its config key)')
    .option('--keep-last <n>', 'keep the n newest backups')
    .option('--keep-hourly <n>', 'keep the newest backup of each of the last n hours that have backups')
    .option('--keep-daily <n>', 'same for days')
    .option('--keep-weekly <n>', 'same for ISO weeks')
    .option('--keep-monthly <n>', 'same for months')
    .option('--keep-yearly <n>', 'same for years')
    .option('--keep-within <duration>', 'keep every backup within this duration of the newest (36h, 14d, 8w)')
    .option('--keep-tag <tag>', 'keep backups labelled tag or tag=value (repeatable)', collect)
    .option('--timezone <zone>', 'time zone of the periods (IANA name; default: the config, else UTC)')
    .option('--orphan-age <duration>', 'remove files without a manifest only when older than this', '1h')
    .option('--upload-age <duration>', 'abort incomplete uploads (S3 multipart uploads, Azure uncommitted blocks) only when started longer ago than this', '24h')
    .option('--safety-age <duration>', 'remove safety backups taken by restores once older than this', '30d')
    .option('--allow-empty', 'let the policy remove every backup of a series (refused otherwise)');
  stashOptions(cmd);
  commonOptions(cmd, { yes: true, dryRun: 'print every decision with its reasons; remove nothing', codes: [11, 130] });
  cmd.addHelpText(
    'after',
    `
Keep flags replace the configured policy (storages.<name>.retention, else databases.<name>.retention,
else retention, else 7 daily, 4 weekly, 12 monthly). A backup is kept when any rule keeps it. The
newest backup that passed verification and backups in use by a verify/restore are always kept.
A rule of 0 keeps nothing by that rule; a policy that would remove every backup of a database is
refused unless --allow-empty is given. On a terminal, prune shows its plan and asks before it
removes anything (--yes answers for you; without a terminal it goes ahead). Safety backups taken
by restores are outside the policy and go after --safety-age. Prune is the one command that deletes:
its credentials need list, read and delete (docs/security.md); backups need none of that.
Incomplete uploads (S3 multipart uploads, Azure uncommitted blocks) older than --upload-age are aborted, except in a database folder
whose lock is held by a running backup; a running \`dbstash copy\` takes no lock, so keep
--upload-age above the longest upload.

Examples:
  dbstash prune --dry-run
  dbstash prune shop --keep-daily 7 --keep-weekly 8 --timezone Europe/Berlin
  dbstash prune --storage offsite --json`,
  );
  cmd.action((database: string | undefined, opts: PruneCliOptions) =>
    runCommand(opts, async (ctx) => {
      const { config } = ctx.loaded;
      const override = policyFromFlags(opts);
      if (opts.timezone) assertTimezone(opts.timezone);
      const orphanMinAgeMs = parseDuration(opts.orphanAge ?? '1h');
      if (orphanMinAgeMs === undefined) throw new UsageError(`--orphan-age takes a duration, got "${opts.orphanAge}"`, { hint: 'e.g. --orphan-age 1h' });
      const uploadMinAgeMs = parseDuration(opts.uploadAge ?? '24h');
      if (uploadMinAgeMs === undefined) throw new UsageError(`--upload-age takes a duration, got "${opts.uploadAge}"`, { hint: 'e.g. --upload-age 24h' });
      const safetyMinAgeMs = parseDuration(opts.safetyAge ?? '30d');
      if (safetyMinAgeMs === undefined) throw new UsageError(`--safety-age takes a duration, got "${opts.safetyAge}"`, { hint: 'e.g. --safety-age 30d' });
      const configured = configuredSeries(config);
      const entry = database ? config.databases[database] : undefined;
      const destinations = await resolveDestinations(opts, config, entry);
      let series: string | undefined;
      if (database) {
        const found = await findSeries(destinations, { name: database, configKeys: configKeys(config), configured: [...configured.values()].map((c) => c.match) });
        if (!found.match) {
          ctx.out.warn(`no backups of "${database}" found`);
          ctx.out.result({ dryRun: !!opts.dryRun, storages: [], bytesFreed: 0 }, () => `nothing to prune: no backups of "${database}"`);
          return ExitCode.ok;
        }
        series = found.match.series.identity;
        if (found.by !== 'name' && found.by !== 'folder') ctx.out.info(`"${database}" is the ${found.by} of ${found.match.series.name} (${series})`);
      }
      const confirm = opts.yes || !process.stdin.isTTY || opts.json
        ? undefined
        : async (r: PruneReport) => {
            process.stderr.write(renderReport({ ...r, dryRun: true }).replace(' (dry run: nothing removed)', ' (plan)') + '\n');
            return askYesNo(`remove what is listed above from ${r.storage}?`, ctx.signal);
          };
      const reports: PruneReport[] = [];
      for (const dest of destinations) {
        const resolve = policyResolver(config, dest.name, override);
        const policyFor: typeof resolve = (x) => (opts.timezone ? { ...resolve(x), timezone: opts.timezone } : resolve(x));
        reports.push(
          await pruneStorage(dest.storage, {
            dryRun: !!opts.dryRun,
            series,
            policyFor,
            orphanMinAgeMs,
            uploadMinAgeMs,
            safetyMinAgeMs,
            allowEmpty: !!opts.allowEmpty,
            confirm,
            warn: (m) => ctx.out.warn(m),
          }),
        );
      }
      // What dead runs of this host left in the temp dir goes too (a live run's is never touched).
      const tempDir = config.tempDir ?? os.tmpdir();
      const temp = opts.dryRun
        ? { removed: [], kept: [], wouldRemove: await findLeftovers(tempDir).catch(() => []) }
        : { ...(await removeLeftovers(tempDir)), wouldRemove: [] };
      for (const l of temp.kept) ctx.out.warn(`left ${l.path} in place: ${l.reason}`);
      const failures = reports.reduce((s, r) => s + r.failures, 0);
      const tempLines = [...temp.wouldRemove.map((l) => `  remove  ${l.path}  ${formatBytes(l.size)}  left by dbstash pid ${l.pid}, which is gone`), ...temp.removed.map((l) => `  removed  ${l.path}  ${formatBytes(l.size)}  left by dbstash pid ${l.pid}, which is gone`)];
      ctx.out.result(
        {
          dryRun: !!opts.dryRun,
          storages: reports,
          bytesFreed: reports.reduce((s, r) => s + r.bytesFreed, 0),
          tempLeftovers: { dir: tempDir, removed: temp.removed.map((l) => l.path), wouldRemove: temp.wouldRemove.map((l) => l.path), kept: temp.kept.map((l) => ({ path: l.path, reason: l.reason })) },
        },
        () => [...reports.map(renderReport), ...(tempLines.length ? [`temp dir ${tempDir}`, ...tempLines] : [])].join('\n'),
      );
      if (failures > 0) {
        throw new StorageError('permanent', `prune could not remove ${failures} object${failures === 1 ? '' : 's'}`, {
          hint: 'see the warnings above; run prune again once the storage is writable (removal is idempotent)',
        });
      }
      return ExitCode.ok;
    }),
  );
}
