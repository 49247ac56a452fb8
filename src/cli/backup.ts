// `dbstash backup [database]`: one consistent, compressed, checksummed backup plus its manifest.

import os from 'node:os';
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../core/errors.js';
import { formatBytes, formatDuration, parseDuration, parseTimeout } from '../core/format.js';
import type { BackupPlan } from '../backup/backup.js';
import type { DatabaseConfig } from '../config/schema.js';
import { DEFAULT_LOCK_WAIT_TIMEOUT_MS } from '../engines/engine.js';
import { runNotifiedBackup } from '../notify/backup.js';
import { createNotifier } from '../notify/notifier.js';
import { resolveDestinations, resolveEnvName, resolveSource } from '../config/resolve.js';
import { parseTarget } from '../engines/target.js';
import { compressionStage, type CompressionAlgorithm } from '../pipeline/compress.js';
import type { Stage } from '../pipeline/stage.js';
import { loadEngine } from '../engines/index.js';
import { collect, commonOptions, parseLabels, runCommand, stashOptions, type CommonOptions, type Context } from './common.js';
import { physicalOf, totalRows } from '../catalog/manifest.js';
import { physicalSeriesOf, seriesOf } from '../catalog/series.js';
import { encryptionDeclinedInConfig, encryptionOptions, encryptionStage, signerFor, type SecretOptions } from './secrets.js';

export interface BackupOptions extends CommonOptions, SecretOptions {
  compression?: string;
  level?: string;
  globals?: boolean;
  checksums?: boolean;
  label?: string[];
  forceUnlock?: boolean;
  tempDir?: string;
  pgBinDir?: string;
  binDir?: string;
  jobs?: string;
  lockTables?: boolean;
  lockWaitTimeout?: string;
  physical?: boolean;
  selfContained?: boolean;
}

function lockWaitTimeoutOf(flag: string | undefined, entry: DatabaseConfig | undefined): number {
  if (flag === undefined) return entry?.lockWaitTimeout !== undefined ? parseTimeout(entry.lockWaitTimeout)! : DEFAULT_LOCK_WAIT_TIMEOUT_MS;
  const ms = parseTimeout(flag);
  if (ms === undefined) {
    throw new UsageError(`--lock-wait-timeout must be a duration such as 30s, 2m or 500ms (0 waits for ever), got "${flag}"`, {
      hint: 'how long the dump may wait for a lock on one table before the backup fails; default 60s',
    });
  }
  return ms;
}

export async function planBackup(database: string | undefined, opts: BackupOptions, ctx: Context): Promise<BackupPlan> {
  const { config } = ctx.loaded;
  const source = resolveSource(database, config, ctx.envName);
  const entry = source.entry;
  if (source.from !== 'argument') ctx.out.info(`database from ${source.from}`);
  const target = parseTarget(source.url, { binDir: opts.pgBinDir ?? opts.binDir ?? entry?.binDir, lockTables: opts.lockTables ?? entry?.lockTables });
  const physical = opts.physical ?? opts.selfContained ?? entry?.physical ?? false;
  if (physical && target.engine !== 'postgres') {
    throw new UsageError(`--physical is for PostgreSQL clusters; ${target.engine} has logical backups only`, { hint: 'leave out --physical' });
  }
  if (physical && (opts.jobs !== undefined || opts.globals || opts.checksums)) {
    throw new UsageError('--jobs, --globals and --checksums are for logical backups; a physical base backup holds the whole cluster, roles included', { hint: 'leave them out with --physical' });
  }
  // `name:` labels the series; the connection always goes to the database the URL names.
  const series = physical ? physicalSeriesOf(target, entry?.name) : seriesOf(target, entry?.name);

  const compression = {
    algorithm: (opts.compression ?? entry?.compression?.algorithm ?? config.compression?.algorithm ?? 'zstd') as CompressionAlgorithm,
    level: opts.level !== undefined ? Number(opts.level) : (entry?.compression?.level ?? config.compression?.level),
  };
  if (!['zstd', 'gzip', 'none'].includes(compression.algorithm)) {
    throw new UsageError(`--compression must be zstd, gzip or none, got "${compression.algorithm}"`);
  }
  const stages: Stage[] = [];
  const compress = compressionStage(compression.algorithm, compression.level);
  if (compress) stages.push(compress);
  const encrypt = encryptionStage(opts, config, entry);
  if (encrypt) stages.push(encrypt);
  const destinations = await resolveDestinations({ outputDir: opts.outputDir, storage: opts.storage, allowWorldReadable: opts.allowWorldReadable }, config, entry);
  const offsite = destinations.filter((d) => !d.storage.properties.local);
  if (!encrypt && offsite.length > 0 && !encryptionDeclinedInConfig(config, entry)) {
    // Whoever can read the bucket, or the provider, can read the database: say so once per run.
    ctx.out.warn(
      `backups to ${offsite.map((d) => d.storage.url).join(', ')} are not encrypted: anyone who can read that storage can read the database; ` +
        'encrypt to an age recipient (dbstash keygen --age; encryption.recipients in the config), or say encryption: none in the config to keep them as they are',
    );
  }
  const extra: Record<string, unknown> = {};
  const signer = signerFor(opts, config);
  if (signer) extra.signing = { algorithm: 'ed25519', keyId: signer.keyId };
  const jobs = opts.jobs !== undefined ? Number(opts.jobs) : entry?.jobs;
  if (jobs !== undefined && (!Number.isInteger(jobs) || jobs < 1)) throw new UsageError(`--jobs must be a positive whole number, got "${opts.jobs}"`);

  return {
    target,
    series,
    env: entry?.env !== undefined && opts.env === undefined ? resolveEnvName(entry.env, config) : ctx.envName,
    destinations,
    stages,
    globals: !physical && (opts.globals ?? entry?.globals ?? false),
    checksums: !physical && (opts.checksums ?? entry?.checksums ?? false),
    jobs: physical ? undefined : jobs,
    ...(physical ? { physical: { selfContained: !!opts.selfContained, archiveWaitMs: entry?.walMaxDelay !== undefined ? parseDuration(entry.walMaxDelay) : undefined } } : {}),
    lockWaitTimeout: lockWaitTimeoutOf(opts.lockWaitTimeout, entry),
    labels: { ...(entry?.labels ?? {}), ...parseLabels(opts.label) },
    tempDir: opts.tempDir ?? config.tempDir ?? os.tmpdir(),
    space: {
      ratio: config.space?.ratio ?? (compression.algorithm === 'none' ? 1 : 0.5),
      margin: config.space?.margin ?? 1.2,
    },
    forceUnlock: !!opts.forceUnlock,
    anomalyMaxDrop: entry?.anomaly?.maxDrop ?? config.anomaly?.maxDrop,
    extra,
    signer,
  };
}

export function registerBackup(program: Command): void {
  const cmd = program
    .command('backup')
    .description('back up one database: a consistent, compressed, checksummed artifact plus its manifest')
    .argument('[database]', 'database URL, SQLite file path, or a database named in the config')
    .option('--compression <algorithm>', 'zstd (default), gzip or none')
    .option('--level <n>', 'compression level (zstd 1-19, default 3; gzip 1-9, default 6)')
    .option('--physical', 'PostgreSQL: a physical base backup of the whole cluster (pg_basebackup), the start of point-in-time recovery')
    .option('--self-contained', 'with --physical: include the WAL the base backup needs, so it restores without the archive')
    .option('--globals', 'also capture roles and tablespaces (PostgreSQL) or users and grants (MySQL)')
    .option('--checksums', 'also record a content checksum per table (reads every row; enables verify --deep)')
    .option('--jobs <n>', 'parallel dump workers (PostgreSQL directory format)')
    .option('--label <key=value>', 'label stored in the manifest (repeatable)', collect)
    .option('--force-unlock', 'remove a lock left by another run before starting')
    .option('--temp-dir <dir>', 'directory for scratch files (default: the system temp dir)')
    .option('--lock-wait-timeout <duration>', 'PostgreSQL: how long the dump may wait for a lock on one table before failing (default 60s; 0 waits for ever)')
    .option('--lock-tables', 'MySQL: lock the tables while dumping instead of --single-transaction (for MyISAM/Aria/MEMORY tables)')
    .option('--bin-dir <dir>', 'directory holding the dump tools (mariadb-dump, pg_dump); default: looked up')
    .option('--pg-bin-dir <dir>', 'directory holding pg_dump/pg_dumpall (default: newest in /usr/lib/postgresql, then PATH)');
  encryptionOptions(cmd);
  stashOptions(cmd);
  commonOptions(cmd, { dryRun: true, codes: [3, 4, 5, 6, 11, 12, 130] });
  cmd.addHelpText(
    'after',
    `
Examples:
  dbstash backup                                   # the configured database (or the bundled example)
  dbstash backup postgres://app@db.internal:5432/shop --env prod
  dbstash backup ./data/app.db --output-dir /var/backups/dbstash
  dbstash backup main --physical                   # a base backup for point-in-time recovery
  DATABASE_URL=postgres://… dbstash backup --globals --json`,
  );
  cmd.action((database: string | undefined, opts: BackupOptions) =>
    runCommand(opts, async (ctx) => {
      const plan = await planBackup(database, opts, ctx);
      if (opts.dryRun) {
        const engine = await loadEngine(plan.target.engine);
        const probe = plan.physical
          ? await engine.probePhysical!(plan.target, { selfContained: plan.physical.selfContained, signal: ctx.signal })
          : await engine.probe(plan.target, ctx.signal);
        await probe.release?.();
        probe.warnings.forEach((w) => ctx.out.warn(w));
        const summary = {
          dryRun: true,
          database: plan.target.displayUrl,
          series: plan.series,
          engine: plan.target.engine,
          serverVersion: probe.serverVersion,
          sizeBytes: probe.sizeBytes,
          tool: probe.tool,
          environment: plan.env,
          destinations: plan.destinations.map((d) => ({ name: d.name, url: d.storage.url, optional: d.optional, immutable: d.storage.properties.immutable })),
          // What the credentials must allow: a backup only ever creates new objects.
          permissions: 'create new objects, read and list; never overwrite, never delete (append-only credentials suffice)',
          stages: plan.stages.map((s) => ({ id: s.id, params: s.params })),
        };
        ctx.out.result(summary, () =>
          [
            `would back up ${summary.database} (${summary.engine} ${summary.serverVersion}, ${formatBytes(summary.sizeBytes)}) with ${probe.tool.name} ${probe.tool.version}`,
            `  series: ${summary.series?.name} (folder ${summary.series?.key}, ${summary.series?.identity})`,
            `  environment: ${summary.environment}`,
            `  stages: ${summary.stages.map((s) => s.id).join(' → ') || '(none)'}`,
            ...summary.destinations.map((d) => `  destination: ${d.url}${d.optional ? ' (optional)' : ''}${d.immutable ? ` (${d.immutable})` : ''}`),
            `  needs: ${summary.permissions}`,
          ].join('\n'),
        );
        return ExitCode.ok;
      }
      const result = await runNotifiedBackup(
        plan,
        { info: (m) => ctx.out.info(m), warn: (m) => ctx.out.warn(m), progress: (b) => ctx.out.progress(b) },
        ctx.signal,
        createNotifier(ctx.loaded.config.notifications, ctx.out),
      );
      const m = result.manifest;
      const main = m.artifacts.find((a) => a.role === 'main')!;
      const physical = physicalOf(m);
      ctx.out.result({ ok: true, id: m.id, degraded: result.degraded, stored: result.stored, failed: result.failed, manifest: m }, () =>
        [
          `${m.id}: ${formatBytes(main.rawSize)} dumped → ${formatBytes(main.size)} stored in ${formatDuration(m.durationMs)}`,
          physical
            ? `  base backup of the cluster: WAL ${physical.startLsn} to ${physical.stopLsn} on timeline ${physical.timeline}${physical.walIncluded ? ' (WAL included)' : ''}; sha256 ${main.sha256}`
            : `  ${m.tables.length} tables, ${totalRows(m)} rows; sha256 ${main.sha256}`,
          ...m.artifacts.filter((a) => a.role !== 'main').map((a) => `  ${a.role}: ${a.file} (${formatBytes(a.size)})`),
          `  stored in: ${result.stored.join(', ')}${result.degraded ? ` — DEGRADED: ${result.failed.map((f) => f.name).join(', ')} failed` : ''}`,
        ].join('\n'),
      );
      return result.degraded ? ExitCode.degraded : ExitCode.ok;
    }),
  );
}
