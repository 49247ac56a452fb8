// `dbstash restore <id> | latest [--database NAME] [--at TIME] --to <URL or path>`: verifies the
// backup, prints the plan, asks for confirmation (typing the database name on a TTY; --yes
// otherwise), restores into a new database and swaps it in, keeping the old one aside.

import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline/promises';
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../core/errors.js';
import { formatAge, formatBytes, formatDuration, parseDuration } from '../core/format.js';
import { parseBackupId } from '../core/id.js';
import { resolveDestinations } from '../config/resolve.js';
import { loadEngine } from '../engines/index.js';
import { parseTarget } from '../engines/target.js';
import { runRestore, type RestorePlan } from '../restore/restore.js';
import { runPartialRestore, type PartialPlan } from '../tables/partial.js';
import type { Engine, PlacedTable, Target } from '../engines/engine.js';
import type { LocatedBackup as Located } from '../verify/locate.js';
import type { RecoveryTarget } from '../wal/recover.js';
import { locateBackup, locateLatest } from '../verify/locate.js';
import { findSeries, seriesLabels } from '../catalog/find.js';
import { seriesOfManifest } from '../catalog/series.js';
import { physicalOf } from '../catalog/manifest.js';
import { configEntryInFolder, configEntryOf } from '../retention/config.js';
import { collect, commonOptions, runCommand, stashOptions, type CommonOptions, type Context } from './common.js';
import { configEntry, seriesNamed } from './verify.js';
import { decryptionOptions, stageContext, verifierFor, type SecretOptions } from './secrets.js';

interface RestoreCliOptions extends CommonOptions, SecretOptions {
  to?: string;
  database?: string;
  at?: string;
  jobs?: string;
  noOwner?: boolean;
  owner?: boolean;
  roleMap?: string[];
  tablespaceMap?: string[];
  withGlobals?: boolean;
  dropOld?: boolean;
  force?: boolean;
  tempDir?: string;
  pgBinDir?: string;
  table?: string[];
  schema?: string[];
  replace?: boolean;
  cascadePlan?: boolean;
  pgdata?: string;
  lsn?: string;
  restorePoint?: string;
  start?: boolean;
  port?: string;
  archive?: boolean;
  timeline?: string;
}

/** --at: an ISO 8601 time ("2026-11-23T08:00Z", "2026-11-23 08:00") or an age ("36h", "2d"). */
export function parseAt(text: string, now = new Date()): Date {
  const ago = parseDuration(text);
  if (ago !== undefined) return new Date(now.getTime() - ago);
  const at = new Date(/^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(:\d{2})?$/.test(text) ? `${text.replace(' ', 'T')}Z` : text);
  if (Number.isNaN(at.getTime())) {
    throw new UsageError(`--at "${text}" is not a time`, { hint: 'give an ISO time in UTC (2026-11-23T08:00Z) or an age (36h, 2d)' });
  }
  return at;
}

/** `restore --pgdata DIR --at TIME|latest | --lsn LSN | --restore-point NAME`: point-in-time recovery. */
async function restoreToPoint(what: string | undefined, opts: RestoreCliOptions, ctx: Context): Promise<number> {
  if (!opts.pgdata) throw new UsageError('point-in-time recovery needs --pgdata DIR: the new data directory to recover into');
  if (what !== undefined && what !== 'latest') throw new UsageError('point-in-time recovery picks its base backup itself: leave out the backup id (or say latest)', { hint: 'dbstash restore --database NAME --at TIME --pgdata DIR' });
  for (const [flag, set] of [['--to', opts.to], ['--table', opts.table?.length], ['--schema', opts.schema?.length], ['--replace', opts.replace], ['--jobs', opts.jobs], ['--drop-old', opts.dropOld], ['--with-globals', opts.withGlobals], ['--role-map', opts.roleMap]] as const) {
    if (set) throw new UsageError(`${flag} goes with a logical restore, not with --pgdata`);
  }
  const given = [opts.at, opts.lsn, opts.restorePoint].filter((x) => x !== undefined);
  if (given.length !== 1) throw new UsageError('say where to recover to: one of --at TIME (or --at latest), --lsn LSN, --restore-point NAME');
  const { isLsn } = await import('../wal/names.js');
  let target: RecoveryTarget;
  if (opts.lsn !== undefined) {
    if (!isLsn(opts.lsn)) throw new UsageError(`--lsn "${opts.lsn}" is not an LSN`, { hint: 'an LSN looks like 16/B374D848 (pg_current_wal_lsn())' });
    target = { kind: 'lsn', lsn: opts.lsn.toUpperCase() };
  } else if (opts.restorePoint !== undefined) target = { kind: 'name', name: opts.restorePoint };
  else target = opts.at === 'latest' ? { kind: 'latest' } : { kind: 'time', time: parseAt(opts.at!) };
  const port = opts.port !== undefined ? Number(opts.port) : 5432;
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new UsageError(`--port must be a port number, got "${opts.port}"`);
  if (opts.port !== undefined && !opts.start) throw new UsageError('--port goes with --start');
  const timeline = opts.timeline === undefined || opts.timeline === 'latest' ? undefined : Number(opts.timeline);
  if (timeline !== undefined && (!Number.isInteger(timeline) || timeline < 1)) throw new UsageError(`--timeline must be a timeline number (1, 2, …) or latest, got "${opts.timeline}"`);
  const { resolveWalSeries, dbstashCommand, locatorArgs, shellWord } = await import('./wal.js');
  const { chooseBase, placeTablespaces, recoverToPoint } = await import('../wal/recover.js');
  const where = await resolveWalSeries(opts, ctx);
  const pgdata = path.resolve(opts.pgdata);
  const tablespaceMap = parseTablespaceMap(opts.tablespaceMap);
  if (opts.dryRun) {
    const choice = await chooseBase(where, target, stageContext(opts, ctx.loaded.config, where.entry), ctx.signal);
    const p = choice.physical;
    const places = await placeTablespaces(choice.base.manifest, tablespaceMap, pgdata);
    ctx.out.result({ dryRun: true, base: choice.base.id, physical: p, segments: choice.segments, bytes: choice.bytes, window: choice.window, pgdata, tablespaces: places }, () =>
      [
        `would restore base backup ${choice.base.id} (ended ${p.stopTime}, WAL ${p.startLsn} to ${p.stopLsn}, timeline ${p.timeline}) into ${pgdata}`,
        ...places.map((t) => `  tablespace ${t.name} (${t.from}) into ${t.to}`),
        `  then replay up to ${choice.segments} archived WAL segments (${formatBytes(choice.bytes)} stored) to ${opts.at ?? opts.lsn ?? opts.restorePoint}`,
        `  recoverable window: ${choice.window.from} to ${choice.window.to ?? choice.window.from}; along timeline ${timeline ?? choice.timeline}`,
        `  afterwards: ${opts.start ? `left running on port ${port}` : 'shut down cleanly, ready to start'}${opts.archive === false ? ', archiving off' : ''}`,
      ].join('\n'),
    );
    return ExitCode.ok;
  }
  const decrypt = [...(opts.identity ?? []).flatMap((f) => ['--identity', path.resolve(f)]), ...(opts.passphraseFile ? ['--passphrase-file', path.resolve(opts.passphraseFile)] : [])];
  const restoreCommand = (socket?: string) =>
    [...dbstashCommand(), 'wal', 'get', '%f', '%p', ...locatorArgs(opts, ctx, opts.database ?? where.series.name), ...decrypt, ...(socket ? ['--socket', socket] : []), '--recovery', '--quiet'].map(shellWord).join(' ');
  const result = await recoverToPoint(
    {
      where,
      target,
      pgdata,
      force: !!opts.force,
      startPort: opts.start ? port : undefined,
      archive: opts.archive !== false,
      context: stageContext(opts, ctx.loaded.config, where.entry),
      restoreCommand,
      tempDir: opts.tempDir ?? ctx.loaded.config.tempDir ?? os.tmpdir(),
      binDir: opts.pgBinDir,
      timeline,
      tablespaceMap,
    },
    { info: (m) => ctx.out.info(m), warn: (m) => ctx.out.warn(m) },
    ctx.signal,
  );
  ctx.out.result({ ok: true, ...result }, () =>
    [
      `recovered ${result.pgdata} from ${result.base} to ${result.target} in ${formatDuration(result.durationMs)}`,
      `  replay ${result.point.stop ? `stopped ${result.point.stop}` : 'reached the end of the archive'}${result.point.redoDoneAt ? `; redo done at ${result.point.redoDoneAt}` : ''}`,
      ...(result.point.lastTransaction ? [`  last transaction replayed: ${result.point.lastTransaction}`] : []),
      ...(result.point.timeline ? [`  promoted on new timeline ${result.point.timeline}`] : []),
      result.started ? `  running on port ${result.started.port}` : `  shut down cleanly; start it with: pg_ctl -D ${result.pgdata} start`,
    ].join('\n'),
  );
  return ExitCode.ok;
}

/** --tablespace-map OLD=NEW (repeatable): absolute directories, each old location once. */
function parseTablespaceMap(pairs: string[] | undefined): Map<string, string> {
  const map = new Map<string, string>();
  for (const pair of pairs ?? []) {
    const i = pair.indexOf('=');
    const from = pair.slice(0, i);
    const to = pair.slice(i + 1);
    if (i <= 0 || !to || !path.isAbsolute(from) || !path.isAbsolute(to)) throw new UsageError(`--tablespace-map takes OLD=NEW, two absolute directories, got "${pair}"`, { hint: 'e.g. --tablespace-map /srv/pg/fast=/restore/fast' });
    const old = path.resolve(from);
    if (map.has(old)) throw new UsageError(`--tablespace-map names ${old} twice`);
    map.set(old, path.resolve(to));
  }
  return map;
}

export function parseRoleMap(pairs: string[] | undefined): Record<string, string> | undefined {
  if (!pairs?.length) return undefined;
  const map: Record<string, string> = {};
  for (const pair of pairs) {
    const i = pair.indexOf('=');
    if (i <= 0 || i === pair.length - 1) throw new UsageError(`--role-map takes old=new, got "${pair}"`);
    map[pair.slice(0, i)] = pair.slice(i + 1);
  }
  return map;
}

function renderPlan(plan: RestorePlan, dryRun: boolean): string {
  const b = plan.backup;
  const target = plan.targetExists
    ? `exists, ${plan.targetTables} tables, ${plan.targetRows === undefined ? 'rows unknown (large tables without statistics)' : plan.targetRows ? `about ${plan.targetRows} rows (holds data)` : 'no rows'}`
    : 'does not exist: it will be created';
  const steps: Record<RestorePlan['mode'], string> = {
    new: `restore into ${plan.temporary}, check row counts, rename it to the target`,
    swap: `restore into ${plan.temporary}, check row counts, rename the current database to ${plan.keptAs}, rename ${plan.temporary} to ${plan.database}${plan.dropOld ? `, then drop ${plan.keptAs} (--drop-old)` : ''}`,
    'in-place': `a swap is impossible (${plan.swapBlocker}): take a safety backup of the target, restore in place, roll back to the safety backup on failure`,
  };
  return [
    `${dryRun ? 'dry run: would restore' : 'restore'} ${b.id}`,
    `  backup:  taken ${b.takenAt.slice(0, 19).replace('T', ' ')} UTC (${formatAge(new Date(b.takenAt))}), ${formatBytes(b.size)} stored, ${formatBytes(b.rawSize)} raw, ${b.tables} tables, ${b.rows} rows`,
    `  from:    ${b.storage}`,
    `  checked: ${plan.structure}`,
    `  target:  ${plan.target} — ${target}`,
    ...(plan.sessions.length ? [`  sessions on the target: ${plan.sessions.join('; ')}`] : []),
    ...(plan.globals ? ['  globals: roles from the backup are applied to the target server first'] : []),
    `  steps:   ${steps[plan.mode]}`,
  ].join('\n');
}

async function confirmOnTty(name: string, ctx: Context, what: 'database' | 'table' = 'database'): Promise<boolean> {
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`type the ${what} name "${name}" to ${what === 'table' ? 'replace it' : 'restore over it'} (anything else cancels): `, { signal: ctx.signal });
    return answer.trim() === name;
  } finally {
    rl.close();
  }
}

/**
 * The caller's answer to a restore plan: with --dry-run it is printed as the result and the run
 * stops; otherwise it is shown and confirmed with --yes, or by typing the name on a terminal.
 */
async function confirmPlan(
  plan: unknown,
  render: (dryRun: boolean) => string,
  confirm: { name: string; what: 'database' | 'table' },
  opts: RestoreCliOptions,
  ctx: Context,
  tty: boolean,
): Promise<boolean> {
  if (opts.dryRun) {
    ctx.out.result({ dryRun: true, plan }, () => render(true));
    return false;
  }
  if (!ctx.out.json && !ctx.out.quiet) process.stderr.write(render(false) + '\n');
  if (opts.yes) return true;
  if (!tty) {
    throw new UsageError('refusing to restore without confirmation: no TTY to ask on', { hint: 'check the plan with --dry-run, then run again with --yes' });
  }
  if (!(await confirmOnTty(confirm.name, ctx, confirm.what))) {
    throw new UsageError('not confirmed; nothing was changed');
  }
  return true;
}

async function resolveTargetUrl(to: string | undefined, ctx: Context): Promise<{ url: string; binDir?: string }> {
  if (!to) throw new UsageError('say where to restore: --to <database URL or SQLite path>', { hint: 'e.g. --to postgres://app@db:5432/shop, or a database name from the config' });
  const entry = ctx.loaded.config.databases[to];
  return entry ? { url: entry.url, binDir: entry.binDir } : { url: to };
}


/** The backup a command names: an id, or "latest" (with --database and --at). */
/** restore, export and show read logical dumps: a physical base backup is restored with --pgdata. */
export async function locateRequested(what: string, opts: CommonOptions & SecretOptions & { database?: string; at?: string }, ctx: Context) {
  const located = await locateAny(what, opts, ctx);
  if (physicalOf(located.manifest)) {
    throw new UsageError(`${located.manifest.id} is a physical base backup of a whole cluster: it restores into a new data directory, not into a database or a table`, {
      hint: `dbstash restore --database ${located.manifest.series?.name ?? 'NAME'} --at TIME|latest --pgdata DIR (docs/pitr.md)`,
    });
  }
  return located;
}

async function locateAny(what: string, opts: CommonOptions & SecretOptions & { database?: string; at?: string }, ctx: Context) {
  const config = ctx.loaded.config;
  const latest = what === 'latest';
  if (!latest && (opts.database || opts.at)) throw new UsageError('--database and --at go with "latest", not with a backup id');
  const database = latest ? opts.database : undefined;
  const destinations = await resolveDestinations(opts, config, latest ? configEntry(config, database) : configEntryInFolder(config, parseBackupId(what)?.database));
  const locate = { verifier: verifierFor(opts, config), allowUnsigned: opts.allowUnsigned, warn: (m: string) => ctx.out.warn(m), info: (m: string) => ctx.out.info(m) };
  if (!latest) return locateBackup(destinations, what, locate);
  const series = await seriesNamed(destinations, database, config, (m) => ctx.out.info(m));
  if (!series) {
    const { known } = await findSeries(destinations, {});
    if (known.length > 1) {
      const names = [...seriesLabels(known).values()].sort();
      throw new UsageError(`the stash holds backups of several databases (${names.join(', ')}); say which one with --database`, {
        hint: `e.g. dbstash restore latest --database ${names[0]} --to …`,
      });
    }
  }
  const located = await locateLatest(destinations, { identity: series?.series.identity, at: opts.at ? parseAt(opts.at) : undefined }, locate);
  if (!located) {
    throw new UsageError(`no backup${database ? ` of ${database}` : ''}${opts.at ? ` at or before ${opts.at}` : ''} in ${destinations.map((d) => d.storage.url).join(', ')}`, {
      hint: 'run `dbstash list` to see the backups this stash holds',
    });
  }
  return located;
}

export function registerRestore(program: Command): void {
  const cmd = program
    .command('restore')
    .description('restore a backup into a database, safely: into a new database, checked as it streams, then swapped')
    .argument('[backup]', 'backup id, or "latest" (point-in-time: leave it out)')
    .option('--to <target>', 'target database URL, SQLite file path, or a database named in the config (created when missing)')
    .option('--database <name>', 'with "latest": the database whose newest backup to restore')
    .option('--at <time>', 'with "latest": the newest backup at or before this time (ISO UTC, or an age like 36h)')
    .option('--jobs <n>', 'parallel restore workers (pg_restore --jobs)')
    .option('--no-owner', 'do not restore object ownership (objects belong to the restoring user)')
    .option('--role-map <old=new>', 'give objects owned by / granted to role "old" to role "new" instead (repeatable)', collect)
    .option('--with-globals', 'also apply the roles captured with backup --globals to the target server')
    .option('--drop-old', 'drop the replaced database instead of keeping it as <name>_before_<stamp>')
    .option('--force', 'terminate other sessions connected to the target (they are logged)')
    .option('--table <schema.table>', 'restore only this table, beside the live ones (repeatable; partitions come along)', collect)
    .option('--schema <name>', 'restore only the tables of this schema, beside the live ones (repeatable)', collect)
    .option('--replace', 'with --table: swap the restored table in for the live one, kept as <table>__before_<stamp>')
    .option('--cascade-plan', 'with --replace: also re-point the foreign keys of other tables that reference it')
    .option('--pgdata <dir>', 'point-in-time recovery (PostgreSQL): lay out the base backup in this new data directory and replay the WAL archive to --at, --lsn or --restore-point')
    .option('--lsn <lsn>', 'with --pgdata: recover up to this WAL position (e.g. 0/3000060)')
    .option('--tablespace-map <old=new>', 'with --pgdata: put the tablespace located at OLD in directory NEW (repeatable; default: its old location, which must be empty)', collect)
    .option('--restore-point <name>', 'with --pgdata: recover up to this named restore point (dbstash wal mark)')
    .option('--timeline <n>', 'with --pgdata: the timeline to recover along (default: a restore point\'s own, else the newest)')
    .option('--start', 'with --pgdata: leave the recovered server running (on --port)')
    .option('--port <n>', 'with --start: the port for the recovered server (default 5432)')
    .option('--no-archive', 'with --pgdata: the recovered server does not archive WAL (a copy to inspect beside the live cluster)')
    .option('--temp-dir <dir>', 'directory for scratch files (default: the system temp dir)')
    .option('--pg-bin-dir <dir>', 'directory holding pg_restore/psql (default: newest in /usr/lib/postgresql, then PATH)');
  decryptionOptions(cmd);
  stashOptions(cmd);
  commonOptions(cmd, { yes: true, dryRun: true, codes: [3, 4, 7, 8, 9, 10, 11, 130] });
  cmd.addHelpText(
    'after',
    `
Safety: the plan is printed; on a TTY you confirm by typing the database name, without a TTY
--yes is required; --dry-run verifies the whole backup and stops after the plan. The data is
restored into <name>_restoring_<stamp> while the backup's size, SHA-256 and decoding are checked
as it streams; its row counts are checked against the manifest, and only then the current
database is renamed to <name>_before_<stamp> and the new one takes its name. Where no swap is
possible (restore in place), the whole backup is verified before the target is touched.

Single tables: with --table (or --schema) only those tables come back, BESIDE the live ones:
restored into a new database first (checked as it streams, row counts checked), then moved into
the target as schema dbstash_restored_<stamp> (PostgreSQL) or <table>__restored_<stamp> (MySQL,
SQLite). Nothing live is changed; the output shows how to compare and copy rows back.
--replace then swaps the restored table in for the live one in one transaction (the live one kept
as <table>__before_<stamp>), after a plan of what follows it (views, triggers, foreign keys,
sequences, partitions) and what does not; you confirm by typing the table's name. A table other
tables reference needs --cascade-plan (see the steps with --dry-run first).

Examples:
  dbstash restore latest --database shop --to postgres://app@localhost:5432/shop --dry-run
  dbstash restore latest --database shop --table public.orders --to shop --yes
  dbstash restore shop_prod_2026-11-23T08-07-00Z --to postgres://app@localhost:5432/shop_copy --yes
  dbstash restore latest --database shop --at 2026-11-22T18:00Z --to shop --yes --drop-old
  dbstash restore latest --to ./data/app.db --yes
  dbstash restore --database main --at "2026-11-23T10:30:59Z" --pgdata /var/lib/postgresql/15/restored --dry-run

Point in time (PostgreSQL, with base backups and a WAL archive; see docs/pitr.md): --pgdata DIR
with --at TIME|latest, --lsn or --restore-point picks the newest base backup that ended before the
point, checks the archive reaches it without a gap, lays the backup out in DIR (checked as it
streams, then by pg_verifybackup), and runs PostgreSQL in recovery to the point. It then shuts the
server down cleanly (a directory ready to start), or with --start leaves it running on --port.
Tablespaces go back to their old locations, which must be empty or absent, or where
--tablespace-map OLD=NEW puts them.`,
  );
  cmd.action((what: string | undefined, opts: RestoreCliOptions) =>
    runCommand(opts, async (ctx) => {
      if (opts.pgdata !== undefined || opts.lsn !== undefined || opts.restorePoint !== undefined || opts.start || opts.tablespaceMap?.length) return restoreToPoint(what, opts, ctx);
      if (what === undefined) throw new UsageError('name the backup to restore: its id, or "latest"', { hint: 'dbstash list shows the ids; for point-in-time recovery give --pgdata DIR and --at TIME' });
      const config = ctx.loaded.config;
      const jobs = opts.jobs !== undefined ? Number(opts.jobs) : undefined;
      if (jobs !== undefined && (!Number.isInteger(jobs) || jobs < 1)) throw new UsageError(`--jobs must be a positive whole number, got "${opts.jobs}"`);
      const { url, binDir } = await resolveTargetUrl(opts.to, ctx);
      const target = parseTarget(url, { binDir: opts.pgBinDir ?? binDir });
      const database = what === 'latest' ? opts.database : undefined;
      const located = await locateRequested(what, opts, ctx);
      const engine = await loadEngine(located.manifest.engine);
      const tty = !!process.stdin.isTTY && !!process.stderr.isTTY;
      if ((opts.replace || opts.cascadePlan) && !opts.table?.length) throw new UsageError('--replace and --cascade-plan go with --table');
      if (opts.cascadePlan && !opts.replace) throw new UsageError('--cascade-plan goes with --replace');
      if (opts.table?.length || opts.schema?.length) {
        for (const [flag, set] of [['--drop-old', opts.dropOld], ['--with-globals', opts.withGlobals], ['--force', opts.force], ['--jobs', jobs], ['--role-map', opts.roleMap]] as const) {
          if (set) throw new UsageError(`${flag} goes with a whole restore, not with --table/--schema`);
        }
        return restoreTables(located, engine, target, opts, ctx, tty, database);
      }
      const outcome = await runRestore(
        {
          dest: located.dest,
          manifest: located.manifest,
          engine,
          target,
          jobs,
          noOwner: opts.owner === false,
          roleMap: parseRoleMap(opts.roleMap),
          withGlobals: opts.withGlobals,
          dropOld: opts.dropOld,
          force: opts.force,
          dryRun: opts.dryRun,
          stageContext: stageContext(opts, config, configEntryOf(config, seriesOfManifest(located.manifest).identity) ?? configEntry(config, database)),
          tempDir: opts.tempDir ?? config.tempDir ?? os.tmpdir(),
          signal: ctx.signal,
          events: { info: (m) => ctx.out.info(m), warn: (m) => ctx.out.warn(m), progress: (b) => ctx.out.progress(b) },
        },
        (plan) => confirmPlan(plan, (dry) => renderPlan(plan, dry), { name: target.database, what: 'database' }, opts, ctx, tty),
      );
      if (!outcome.performed) return ExitCode.ok;
      const r = outcome.record!;
      ctx.out.result({ ok: true, plan: outcome.plan, record: r, recordKey: outcome.recordKey }, () =>
        [
          `restored ${r.id} into ${r.target} in ${formatDuration(r.durationMs)}${r.rowCheck ? ` — row counts match the manifest (${(r.rowCheck as { tables: number }).tables} tables, ${(r.rowCheck as { rows: number }).rows} rows)` : ''}`,
          ...(r.keptAs && !r.droppedOld ? [`  the previous database is kept as ${r.keptAs}; drop it when you no longer need it (or use --drop-old next time)`] : []),
          ...(r.safetyBackup ? [`  safety backup taken before restoring in place: ${r.safetyBackup}`] : []),
        ].join('\n'),
      );
      return ExitCode.ok;
    }),
  );
}

function renderPartialPlan(plan: PartialPlan, dryRun: boolean): string {
  return [
    `${dryRun ? 'dry run: would restore' : 'restore'} ${plan.tables.length} table(s) of ${plan.backup.id} beside the live ones`,
    `  backup:  taken ${plan.backup.takenAt.slice(0, 19).replace('T', ' ')} UTC (${formatAge(new Date(plan.backup.takenAt))}), from ${plan.backup.storage}`,
    ...plan.tables.map((t) => `  table:   ${t.table}${t.partitionOf ? ` (partition of ${t.partitionOf})` : ''}${t.rows !== undefined ? `, ${t.rows} rows` : ''}`),
    `  target:  ${plan.target} (nothing live is changed)`,
    `  steps:   restore into ${plan.temporary}, check (${plan.check}), move into ${plan.into}, drop ${plan.temporary}`,
    ...(plan.replace
      ? [
          `  replace: then, in one transaction, ${plan.replace.table} is renamed ${plan.replace.keptAs} and the restored table takes its place`,
          ...plan.replace.follow.map((f) => `    follows:      ${f}`),
          ...plan.replace.stay.map((f) => `    stays behind: ${f}`),
          ...plan.replace.referencedBy.map((f) => `    references it: ${f} — ${plan.replace!.cascade ? 're-created against the restored table, checked (--cascade-plan)' : 'refused without --cascade-plan'}`),
        ]
      : []),
  ].join('\n');
}

/** How to look at and copy back one restored table, in the engine's SQL. */
export function copyBackHelp(engine: string, p: PlacedTable): string[] {
  const q = (n: string) => (engine === 'mysql' ? `\`${n.replace(/`/g, '``')}\`` : `"${n.replace(/"/g, '""')}"`);
  const live = engine === 'postgres' ? `${q(p.from.schema)}.${q(p.from.name)}` : q(p.from.name);
  const restored = engine === 'postgres' ? `${q(p.to.schema)}.${q(p.to.name)}` : q(p.to.name);
  const lines = [`    compare:   SELECT (SELECT count(*) FROM ${live}) AS live, (SELECT count(*) FROM ${restored}) AS restored;`];
  if (p.key?.length) {
    const match = p.key.map((k) => `l.${q(k)} = r.${q(k)}`).join(' AND ');
    // PostgreSQL: identity columns GENERATED ALWAYS take the restored values only when told to.
    const overriding = engine === 'postgres' ? ' OVERRIDING SYSTEM VALUE' : '';
    lines.push(`    copy back: INSERT INTO ${live}${overriding} SELECT r.* FROM ${restored} r WHERE NOT EXISTS (SELECT 1 FROM ${live} l WHERE ${match});`);
  } else {
    lines.push(`    copy back: INSERT INTO ${live} SELECT * FROM ${restored} WHERE …;  (no primary key: choose the rows to copy)`);
  }
  lines.push(`    drop it:   DROP TABLE ${restored};`);
  return lines;
}

async function restoreTables(located: Located, engine: Engine, target: Target, opts: RestoreCliOptions, ctx: Context, tty: boolean, database: string | undefined): Promise<number> {
  const config = ctx.loaded.config;
  const outcome = await runPartialRestore(
    {
      dest: located.dest,
      manifest: located.manifest,
      engine,
      target,
      tables: opts.table ?? [],
      schemas: opts.schema ?? [],
      noOwner: opts.owner === false,
      replace: opts.replace,
      cascade: opts.cascadePlan,
      stageContext: stageContext(opts, config, configEntryOf(config, seriesOfManifest(located.manifest).identity) ?? configEntry(config, database)),
      tempDir: opts.tempDir ?? config.tempDir ?? os.tmpdir(),
      signal: ctx.signal,
      events: { info: (m) => ctx.out.info(m), warn: (m) => ctx.out.warn(m), progress: (b) => ctx.out.progress(b) },
      dryRun: opts.dryRun,
    },
    (plan) =>
      confirmPlan(plan, (dry) => renderPartialPlan(plan, dry), plan.replace ? { name: plan.replace.table, what: 'table' } : { name: target.database, what: 'database' }, opts, ctx, tty),
  );
  if (!outcome.performed) return ExitCode.ok;
  const placed = outcome.placed ?? [];
  if (outcome.plan.replace) {
    const r = outcome.plan.replace;
    ctx.out.result({ ok: true, plan: outcome.plan, placed, kept: outcome.kept, record: outcome.record, recordKey: outcome.recordKey }, () =>
      [
        `replaced ${r.table} in ${target.displayUrl} by its rows from ${outcome.plan.backup.id} — row counts match the manifest`,
        `  the live table is kept as ${r.keptAs}; drop it when you no longer need it: DROP TABLE ${r.keptAs};`,
        ...r.follow.map((f) => `  followed: ${f}`),
      ].join('\n'),
    );
    return ExitCode.ok;
  }
  ctx.out.result({ ok: true, plan: outcome.plan, placed, record: outcome.record, recordKey: outcome.recordKey }, () =>
    [
      `restored ${placed.length} table(s) of ${outcome.plan.backup.id} beside the live ones in ${target.displayUrl} — row counts match the manifest`,
      ...placed.flatMap((p) => {
        const partitionOf = outcome.plan.tables.find((t) => t.table === `${p.from.schema}.${p.from.name}`)?.partitionOf;
        return [
          `  ${partitionOf ? '  partition ' : ''}${p.from.schema}.${p.from.name} → ${engine.id === 'postgres' ? `${p.to.schema}.${p.to.name}` : p.to.name}${p.rows !== undefined ? ` (${p.rows} rows)` : ''}`,
          ...(p.left.length ? [`    not restored with it: ${p.left.join('; ')}`] : []),
          ...(partitionOf ? [] : copyBackHelp(engine.id, p)),
        ];
      }),
    ].join('\n'),
  );
  return ExitCode.ok;
}
