// `dbstash verify <id> | --latest [database] | --all [database]`: proves backups readable
// (level 1), restorable (--drill) and identical in content (--deep).

import os from 'node:os';
import type { Command } from 'commander';
import { DbstashError, ExitCode, IntegrityError, UsageError } from '../core/errors.js';
import { formatDuration } from '../core/format.js';
import { parseBackupId } from '../core/id.js';
import { listBackups } from '../catalog/catalog.js';
import { findSeries, seriesLabels } from '../catalog/find.js';
import { seriesOfManifest, type SeriesMatch } from '../catalog/series.js';
import type { Destination } from '../backup/backup.js';
import { configEntryInFolder, configEntryNamed, configEntryOf, configKeys, configuredSeries } from '../retention/config.js';
import { resolveDestinations } from '../config/resolve.js';
import type { ConfigFile, DatabaseConfig } from '../config/schema.js';
import { locateBackup, locateLatest, type LocatedBackup } from '../verify/locate.js';
import { verifyBackup, type VerifyLevel, type VerifyResult } from '../verify/verify.js';
import { WarmScratch } from '../verify/warm.js';
import { createNotifier } from '../notify/notifier.js';
import { verifyFailureMessage } from '../notify/backup.js';
import { commonOptions, reportError, runCommand, stashOptions, type CommonOptions, type Context } from './common.js';
import { decryptionOptions, stageContext, verifierFor, type SecretOptions } from './secrets.js';
import { readCheckedManifest } from '../crypto/sign.js';

interface VerifyCliOptions extends CommonOptions, SecretOptions {
  latest?: boolean | string;
  all?: boolean | string;
  drill?: boolean;
  deep?: boolean;
  scratchUrl?: string;
  tempDir?: string;
}

/** The config entry of a database, by its key, its name or its real name. */
export function configEntry(config: ConfigFile, database: string | undefined): DatabaseConfig | undefined {
  return configEntryNamed(config, database);
}

/** Resolves "[database]" of --latest/--all/restore latest to one series over the destinations (or every series when not given). */
export async function seriesNamed(destinations: Destination[], name: string | undefined, config: ConfigFile, info?: (m: string) => void): Promise<SeriesMatch | undefined> {
  if (!name) return undefined;
  const configured = [...configuredSeries(config).values()].map((c) => c.match);
  const found = await findSeries(destinations, { name, configKeys: configKeys(config), configured });
  if (!found.match) {
    throw new UsageError(`no backups of "${name}" in ${destinations.map((d) => d.storage.url).join(', ')}`, {
      hint: `run \`dbstash list\` to see the databases with backups${found.known.length ? ` (${[...seriesLabels(found.known).values()].join(', ')})` : ''}`,
    });
  }
  if (found.by !== 'name' && found.by !== 'folder') info?.(`"${name}" is the ${found.by} of ${found.match.series.name} (${found.match.series.identity})`);
  return found.match;
}

function describe(result: VerifyResult): string {
  const r = result.record;
  const tables = r.tables ? `; ${r.tables.length} tables match the manifest${r.level === 'deep' ? ' (row counts and content checksums)' : ' (row counts)'}` : '';
  return `${r.id}: ${r.level} passed in ${formatDuration(r.durationMs)} — ${result.structure}${tables}`;
}

async function toVerify(id: string | undefined, opts: VerifyCliOptions, ctx: Context): Promise<{ located: LocatedBackup[]; database?: string }> {
  const modes = [id !== undefined, opts.latest !== undefined, opts.all !== undefined].filter(Boolean).length;
  if (modes !== 1) throw new UsageError('say what to verify: a backup id, --latest [database] or --all [database]');
  const pick = typeof opts.latest === 'string' ? opts.latest : typeof opts.all === 'string' ? opts.all : undefined;
  const config = ctx.loaded.config;
  const destinations = await resolveDestinations(opts, config, id ? configEntryInFolder(config, parseBackupId(id)?.database) : configEntry(config, pick));
  const locate = { verifier: verifierFor(opts, config), allowUnsigned: opts.allowUnsigned, warn: (m: string) => ctx.out.warn(m), info: (m: string) => ctx.out.info(m) };
  if (id) return { located: [await locateBackup(destinations, id, locate)] };
  const series = await seriesNamed(destinations, pick, config, (m) => ctx.out.info(m));
  if (opts.latest !== undefined) {
    const latest = await locateLatest(destinations, { identity: series?.series.identity }, locate);
    if (!latest) throw new UsageError(`no backups${pick ? ` of ${pick}` : ''} in ${destinations.map((d) => d.storage.url).join(', ')}`);
    return { located: [latest], database: pick };
  }
  const seen = new Set<string>();
  const located: LocatedBackup[] = [];
  for (const dest of destinations) {
    const listing = await listBackups(dest.storage);
    listing.problems.forEach((p) => ctx.out.warn(`${dest.storage.url}: ${p.message}`));
    for (const entry of listing.entries) {
      if (seen.has(entry.id) || (series && entry.series.identity !== series.series.identity)) continue;
      seen.add(entry.id);
      located.push({ dest, manifest: entry.manifest });
    }
  }
  return { located, database: pick };
}

export function registerVerify(program: Command): void {
  const cmd = program
    .command('verify')
    .description('check that backups are intact (default), restorable (--drill) and complete (--deep)')
    .argument('[id]', 'backup id (see `dbstash list`)')
    .option('--latest [database]', 'verify the newest backup (of one database)')
    .option('--all [database]', 'verify every backup (of one database)')
    .option('--drill', 'level 2: restore into a scratch database and compare every table\'s row count with the manifest')
    .option('--deep', 'level 2 plus content checksums per table (backups taken with --checksums)')
    .option('--scratch-url <url>', 'server for the drill\'s scratch database (default: a throwaway local server dbstash starts)')
    .option('--temp-dir <dir>', 'directory for scratch files and the throwaway server (default: the system temp dir)');
  decryptionOptions(cmd);
  stashOptions(cmd);
  commonOptions(cmd, { dryRun: 'verify without recording the result or notifying', codes: [3, 7, 8, 10, 11, 130] });
  cmd.addHelpText(
    'after',
    `
Levels:
  integrity (default)  manifest, size, SHA-256, every stage decodes, the dump's structure reads
  --drill              + restore into a scratch database (always dropped), row counts per table
  --deep               + content checksum per table (needs backups taken with --checksums)

Examples:
  dbstash verify shop_prod_2026-11-23T08-07-00Z
  dbstash verify --latest shop --drill
  dbstash verify --all --output-dir /var/backups/dbstash --json
  dbstash verify --latest --deep --scratch-url postgres://scratch@db-test:5432/postgres`,
  );
  cmd.action((id: string | undefined, opts: VerifyCliOptions) =>
    runCommand(opts, async (ctx) => {
      const level: VerifyLevel = opts.deep ? 'deep' : opts.drill ? 'drill' : 'integrity';
      const { located, database } = await toVerify(id, opts, ctx);
      const config = ctx.loaded.config;
      const results: { id: string; result: string; level: VerifyLevel; error?: string; kind?: string; record?: string; tables?: unknown; [key: string]: unknown }[] = [];
      let exitCode: number = ExitCode.ok;
      const verifier = verifierFor(opts, config);
      // Several drills in one run share one scratch server per engine.
      const warm = level !== 'integrity' && located.length > 1 ? new WarmScratch(opts.tempDir ?? config.tempDir ?? os.tmpdir()) : undefined;
      try {
        for (const { dest, manifest } of located) {
          const entry = configEntryOf(config, seriesOfManifest(manifest).identity) ?? configEntry(config, database);
          ctx.out.info(`verifying ${manifest.id} (${level}) in ${dest.storage.url}`);
          try {
            if (verifier) await readCheckedManifest(dest.storage, manifest.id, verifier, opts);
            const result = await verifyBackup(dest.storage, manifest, {
              level,
              stageContext: stageContext(opts, config, entry),
              tempDir: opts.tempDir ?? config.tempDir ?? os.tmpdir(),
              scratchUrl: opts.scratchUrl ?? entry?.scratchUrl,
              dryRun: opts.dryRun,
              warm,
              signal: ctx.signal,
              events: { info: (m) => ctx.out.info(m), warn: (m) => ctx.out.warn(m) },
            });
            results.push({ id: manifest.id, result: 'passed', level, record: result.recordKey, tables: result.record.tables, ...(result.record.archive ? { archive: result.record.archive, databases: result.record.databases, point: result.record.point } : {}) });
            if (located.length > 1) ctx.out.info(describe(result));
            else ctx.out.result({ results }, () => describe(result));
          } catch (err) {
            if (!opts.dryRun && !ctx.signal.aborted) await createNotifier(config.notifications, ctx.out).notify(verifyFailureMessage(manifest, level, err));
            if (located.length === 1 || ctx.signal.aborted || !(err instanceof DbstashError)) throw err;
            const failed = err instanceof IntegrityError;
            results.push({ id: manifest.id, result: failed ? 'failed' : 'not verified', level, error: err.message, kind: err.kind });
            reportError(ctx.out, err, { stdout: false });
            if (failed) exitCode = ExitCode.verifyFailed;
            else if (exitCode === ExitCode.ok) exitCode = err.exitCode;
          }
        }
      } finally {
        await warm?.close().catch((err: Error) => ctx.out.warn(`could not stop the drills' scratch server: ${err.message}`));
      }
      if (located.length !== 1) {
        const passed = results.filter((r) => r.result === 'passed').length;
        ctx.out.result({ results }, () => `${passed} of ${results.length} backups passed ${level} verification`);
      }
      return exitCode;
    }),
  );
}
