// `dbstash wal push|get|mark|setup`: the continuous WAL archive of a PostgreSQL cluster, the other
// half of point-in-time recovery (base backups are `dbstash backup --physical`).
//   push   what archive_command runs: archive_command = 'dbstash wal push %p --database NAME'
//   get    what restore_command runs: restore_command = 'dbstash wal get %f %p --database NAME'
//   mark   a named restore point, to restore to with `restore --restore-point NAME`
//   setup  checks the server's settings and prints (or, with --apply, makes) the changes

import path from 'node:path';
import { stopRecovery } from '../wal/recovery-error.js';
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../core/errors.js';
import { formatBytes } from '../core/format.js';
import { resolveDestinations, resolveSource } from '../config/resolve.js';
import { parseTarget } from '../engines/target.js';
import { physicalSeriesOf } from '../catalog/series.js';
import type { WalSeries } from '../wal/archive.js';
import { compressionStage, type CompressionAlgorithm } from '../pipeline/compress.js';
import type { Stage } from '../pipeline/stage.js';
import type { DatabaseConfig } from '../config/schema.js';
import { commonOptions, reportError, runCommand, stashOptions, type CommonOptions, type Context } from './common.js';
import { decryptionOptions, encryptionOptions, encryptionStage, stageContext, type SecretOptions } from './secrets.js';

export interface WalOptions extends CommonOptions, SecretOptions {
  database?: string;
  compression?: string;
  level?: string;
  recovery?: boolean;
  apply?: boolean;
}

/** The cluster a wal command is about: its config entry or URL, its physical series and its stash. */
export async function resolveWalSeries(opts: WalOptions, ctx: Context): Promise<WalSeries & { entry?: DatabaseConfig }> {
  const { config } = ctx.loaded;
  const source = resolveSource(opts.database, config, ctx.envName);
  const target = parseTarget(source.url, { binDir: source.entry?.binDir });
  if (target.engine !== 'postgres') {
    throw new UsageError(`the WAL archive is for PostgreSQL clusters; ${source.url.split(':')[0]} has logical backups only`);
  }
  const destinations = await resolveDestinations({ outputDir: opts.outputDir, storage: opts.storage, allowWorldReadable: opts.allowWorldReadable }, config, source.entry);
  return { target, entry: source.entry, series: physicalSeriesOf(target, source.entry?.name), destinations };
}

export function walStages(opts: WalOptions, ctx: Context, entry: DatabaseConfig | undefined): Stage[] {
  const { config } = ctx.loaded;
  const algorithm = (opts.compression ?? entry?.compression?.algorithm ?? config.compression?.algorithm ?? 'zstd') as CompressionAlgorithm;
  if (!['zstd', 'gzip', 'none'].includes(algorithm)) throw new UsageError(`--compression must be zstd, gzip or none, got "${algorithm}"`);
  const level = opts.level !== undefined ? Number(opts.level) : (entry?.compression?.level ?? config.compression?.level);
  const stages: Stage[] = [];
  const compress = compressionStage(algorithm, level);
  if (compress) stages.push(compress);
  const encrypt = encryptionStage(opts, config, entry);
  if (encrypt) stages.push(encrypt);
  return stages;
}

/** The dbstash command line PostgreSQL should run, with absolute paths (it runs in the data directory). */
export function dbstashCommand(): string[] {
  return [process.execPath, path.resolve(process.argv[1])];
}

/** Quotes a word for the shell that runs archive_command / restore_command. */
export function shellWord(word: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** The flags that name the same cluster and stash from inside the data directory. */
export function locatorArgs(opts: WalOptions, ctx: Context, database: string): string[] {
  const args = ['--database', database];
  if (ctx.loaded.file) args.push('--config', path.resolve(ctx.loaded.file));
  if (opts.outputDir) args.push('--output-dir', path.resolve(opts.outputDir));
  for (const s of opts.storage ?? []) args.push('--storage', s);
  return args;
}

function databaseOption(cmd: Command): Command {
  return cmd.option('--database <name>', 'the cluster: a database named in the config, or its URL (the physical series of that server)');
}

export function registerWal(program: Command): void {
  const wal = program.command('wal').description('the continuous WAL archive of a PostgreSQL cluster (point-in-time recovery)');
  wal.addHelpText(
    'after',
    `
Examples:
  dbstash wal setup --database main                # what the server needs; --apply makes the changes
  dbstash wal push pg_wal/000000010000000000000003 --database main
  dbstash wal get 000000010000000000000003 /tmp/seg --database main
  dbstash wal mark before-migration --database main

Base backups: dbstash backup main --physical. Restore to a point: dbstash restore --database main
--at TIME --pgdata DIR (docs/pitr.md).`,
  );

  const push = wal
    .command('push')
    .description("archive one WAL file into every destination: what PostgreSQL's archive_command runs")
    .argument('<path>', 'the file to archive (%p in archive_command)');
  databaseOption(push)
    .option('--compression <algorithm>', 'zstd (default), gzip or none')
    .option('--level <n>', 'compression level')
    .option('--socket <path>', "hand the file to the dbstash daemon listening there (daemon.walSocket): asynchronous archiving; without a daemon, pushes itself");
  encryptionOptions(push);
  stashOptions(push);
  commonOptions(push, { codes: [7, 11, 130] });
  push.addHelpText(
    'after',
    `
The same file pushed again (archive_command is retried) succeeds; another file under the same name fails
with exit 7 (two clusters archiving into one series). Exit 0 only once every required destination holds it.

Example (postgresql.conf, or dbstash wal setup --apply):
  archive_command = 'dbstash wal push %p --database main --config /etc/dbstash/dbstash.yaml'
With the daemon (daemon: { walSocket: /run/dbstash/wal.sock } in the config):
  archive_command = 'dbstash wal push %p --database main --config /etc/dbstash/dbstash.yaml --socket /run/dbstash/wal.sock'`,
  );
  push.action((file: string, opts: WalOptions) =>
    runCommand(opts, async (ctx) => {
      const { pushWal } = await import('../wal/archive.js');
      const where = await resolveWalSeries(opts, ctx);
      const started = Date.now();
      const result = await pushWal(file, { destinations: where.destinations, series: where.series, stages: walStages(opts, ctx, where.entry), signal: ctx.signal, warn: (m) => ctx.out.warn(m) });
      const already = result.stored.every((s) => s.already);
      ctx.out.result({ ok: true, ...result, ms: Date.now() - started }, () =>
        `${result.name}: ${already ? 'already archived' : `archived (${formatBytes(result.size)})`} in ${result.stored.map((s) => s.name).join(', ')}`,
      );
      return result.failed.length ? ExitCode.degraded : ExitCode.ok;
    }),
  );

  const get = wal
    .command('get')
    .description("fetch one WAL file from the archive, checked and decoded: what PostgreSQL's restore_command runs")
    .argument('<name>', 'the WAL file name (%f in restore_command)')
    .argument('<path>', 'where to write it (%p in restore_command)');
  databaseOption(get)
    .option('--socket <path>', 'ask the dbstash restore that serves this socket (it reads ahead); without one, fetch here')
    .option('--recovery', 'run by PostgreSQL in recovery: any failure other than "not archived" stops the recovery (exit 126) instead of ending it early');
  decryptionOptions(get);
  stashOptions(get);
  commonOptions(get, { codes: [7, 10, 11, 130] });
  get.addHelpText(
    'after',
    `
Exit 1 when the file is not in the archive: PostgreSQL takes that as the end of the archive.

Example (written by dbstash restore --at; by hand in postgresql.conf):
  restore_command = 'dbstash wal get %f %p --database main --config /etc/dbstash/dbstash.yaml --recovery'`,
  );
  get.action((name: string, file: string, opts: WalOptions) =>
    runCommand(opts, async (ctx) => {
      const { getWal } = await import('../wal/archive.js');
      try {
        const where = await resolveWalSeries(opts, ctx);
        const outcome = await getWal(name, file, { destinations: where.destinations, series: where.series, context: stageContext(opts, ctx.loaded.config, where.entry), signal: ctx.signal });
        if (!outcome.found) {
          ctx.out.result({ ok: false, found: false, name }, () => `${name}: not in the archive`);
          return 1;
        }
        outcome.warnings.forEach((w) => ctx.out.warn(w));
        ctx.out.result({ ok: true, found: true, name, from: outcome.from }, () => `${name}: restored from ${outcome.from}`);
        return ExitCode.ok;
      } catch (err) {
        if (!opts.recovery || ctx.signal.aborted) throw err;
        // Exit 126 stops PostgreSQL's recovery instead of ending it here (wal/recovery-error.ts).
        reportError(ctx.out, err);
        return stopRecovery(name, (err as Error).message);
      }
    }),
  );

  const mark = wal
    .command('mark')
    .description('create a named restore point in the WAL (restore to it with restore --restore-point NAME)')
    .argument('<name>', 'the restore point\'s name');
  databaseOption(mark);
  stashOptions(mark);
  commonOptions(mark, { codes: [3, 11, 130] });
  mark.action((name: string, opts: WalOptions) =>
    runCommand(opts, async (ctx) => {
      const { markRestorePoint } = await import('../wal/setup.js');
      const where = await resolveWalSeries(opts, ctx);
      const point = await markRestorePoint(where, name, ctx.signal);
      ctx.out.result({ ok: true, ...point }, () => `restore point "${name}" at ${point.lsn} (${point.time}), timeline ${point.timeline}; its WAL segment was switched out to the archive`);
      return ExitCode.ok;
    }),
  );

  const setup = wal
    .command('setup')
    .description("check the server's settings for WAL archiving and print what to change (--apply makes the changes)")
    .option('--apply', 'run the ALTER SYSTEM statements and reload; says whether a restart is still needed');
  databaseOption(setup);
  stashOptions(setup);
  commonOptions(setup, { codes: [3, 13, 130] });
  setup.action((opts: WalOptions) =>
    runCommand(opts, async (ctx) => {
      const { checkSetup, applySetup } = await import('../wal/setup.js');
      const where = await resolveWalSeries(opts, ctx);
      const command = [...dbstashCommand(), 'wal', 'push', '%p', ...locatorArgs(opts, ctx, opts.database ?? where.series.name)].map(shellWord).join(' ');
      const report = await checkSetup(where.target, command, ctx.signal);
      const applied = opts.apply && report.changes.length > 0 ? await applySetup(where.target, report, ctx.signal) : undefined;
      ctx.out.result({ ok: report.changes.length === 0 || !!applied, ...report, applied }, () =>
        [
          ...report.checks.map((c) => `${c.ok ? 'ok  ' : 'fix '} ${c.setting} = ${c.value}${c.ok ? '' : `  (wanted: ${c.wanted})`}`),
          ...(report.changes.length === 0
            ? ['the server is ready: take a base backup with dbstash backup --physical']
            : applied
              ? [`applied: ${report.changes.join('; ')}`, applied.restart ? 'restart PostgreSQL now (wal_level / archive_mode change only at a restart)' : 'reloaded: the settings are in effect']
              : ['to change, as a superuser (or run again with --apply):', ...report.changes.map((c) => `  ${c};`), report.restart ? '  -- then restart PostgreSQL' : '  SELECT pg_reload_conf();']),
        ].join('\n'),
      );
      return report.changes.length === 0 || applied ? ExitCode.ok : ExitCode.unhealthy;
    }),
  );
}
