// `dbstash copy <id> --from A --to B` and `dbstash copy --missing [database] --from A --to B`:
// copies backups between storages (config names, URLs or directories), checking every artifact's
// size and SHA-256 against its manifest on the way.

import type { Command } from 'commander';
import { findSeries } from '../catalog/find.js';
import { configKeys, configuredSeries } from '../retention/config.js';
import { DbstashError, ExitCode, UsageError } from '../core/errors.js';
import { formatBytes } from '../core/format.js';
import { parseBackupId } from '../core/id.js';
import { copyBackup, missingBackups, type CopyResult } from '../backup/copy.js';
import { resolveDestinations } from '../config/resolve.js';
import type { Storage } from '../storage/storage.js';
import { commonOptions, reportError, runCommand, type CommonOptions, type Context } from './common.js';
import { verifierFor, type SecretOptions } from './secrets.js';

interface CopyCliOptions extends CommonOptions, SecretOptions {
  from?: string;
  to?: string;
  missing?: boolean | string;
}

async function openOne(what: string, flag: string, ctx: Context): Promise<Storage> {
  const [dest] = await resolveDestinations({ storage: [what] }, ctx.loaded.config);
  try {
    await dest.storage.check?.(ctx.signal);
  } catch (err) {
    if (ctx.signal.aborted) throw ctx.signal.reason;
    const e = err as DbstashError;
    throw new UsageError(`${flag} ${what}: ${e.message}`, { hint: e.hint, cause: err });
  }
  return dest.storage;
}

export function registerCopy(program: Command): void {
  const cmd = program
    .command('copy')
    .description('copy backups between storages, checking sizes and SHA-256 against the manifests')
    .argument('[id]', 'the backup to copy')
    .option('--from <storage>', 'source: a configured storage name, a storage URL (s3://, azure://, sftp://, rclone:) or a directory')
    .option('--to <storage>', 'target: a configured storage name, a storage URL (s3://, azure://, sftp://, rclone:) or a directory')
    .option('--missing [database]', 'copy every backup (of one database) that the target lacks')
    .option('--verify-key <file>', 'copy only backups whose manifests this Ed25519 public key signed')
    .option('--allow-unsigned', 'with --verify-key, copy unsigned backups too');
  commonOptions(cmd, { dryRun: 'list what would be copied; copy nothing', codes: [7, 11, 130] });
  cmd.addHelpText(
    'after',
    `
Needs list and read on --from, and list, read and create on --to (never overwrite, never delete:
append-only credentials on the target suffice; docs/security.md).

Examples:
  dbstash copy shop_prod_2026-11-23T08-07-00Z --from ./backups --to s3://offsite/dbstash
  dbstash copy --missing --from local --to offsite          # names from the config's storages
  dbstash copy --missing shop --from s3://old-bucket/db --to s3://new-bucket/db --json`,
  );
  cmd.action((id: string | undefined, opts: CopyCliOptions) =>
    runCommand(opts, async (ctx) => {
      if (!opts.from || !opts.to) throw new UsageError('copy needs --from and --to', { hint: 'e.g. dbstash copy --missing --from ./backups --to s3://bucket/prefix' });
      if ((id === undefined) === (opts.missing === undefined)) throw new UsageError('say what to copy: a backup id, or --missing [database]');
      if (id && !parseBackupId(id)) throw new UsageError(`"${id}" is not a backup id`, { hint: '`dbstash list` shows them' });
      const verifier = verifierFor(opts, ctx.loaded.config);
      const from = await openOne(opts.from, '--from', ctx);
      const to = await openOne(opts.to, '--to', ctx);
      let identity: string | undefined;
      if (typeof opts.missing === 'string') {
        const config = ctx.loaded.config;
        const found = await findSeries([{ name: 'from', storage: from, optional: false }], {
          name: opts.missing,
          configKeys: configKeys(config),
          configured: [...configuredSeries(config).values()].map((c) => c.match),
        });
        if (!found.match) throw new UsageError(`no backups of "${opts.missing}" in ${from.url}`, { hint: 'run `dbstash list --storage …` on the source to see what it holds' });
        identity = found.match.series.identity;
      }
      const ids = id ? [id] : await missingBackups(from, to, identity);
      if (opts.dryRun) {
        ctx.out.result({ dryRun: true, from: from.url, to: to.url, ids }, () =>
          ids.length ? ids.map((i) => `would copy ${i}`).join('\n') : `${to.url} already holds every backup of ${from.url}`,
        );
        return ExitCode.ok;
      }
      const results: (CopyResult | { id: string; result: 'failed'; error: string })[] = [];
      let exitCode: number = ExitCode.ok;
      for (const each of ids) {
        ctx.out.info(`copying ${each} from ${from.url} to ${to.url}`);
        try {
          const r = await copyBackup(from, to, each, { verifier, allowUnsigned: opts.allowUnsigned, signal: ctx.signal });
          results.push(r);
          ctx.out.info(r.result === 'present' ? `${each}: already in ${to.url}` : `${each}: copied ${formatBytes(r.bytes)}, checksums match`);
        } catch (err) {
          if (ids.length === 1 || ctx.signal.aborted || !(err instanceof DbstashError)) throw err;
          results.push({ id: each, result: 'failed', error: err.message });
          reportError(ctx.out, err, { stdout: false });
          if (exitCode === ExitCode.ok) exitCode = err.exitCode;
        }
      }
      const copied = results.filter((r) => r.result === 'copied').length;
      ctx.out.result({ from: from.url, to: to.url, results }, () =>
        ids.length === 0 ? `${to.url} already holds every backup of ${from.url}` : `${copied} of ${ids.length} backups copied to ${to.url}`,
      );
      return exitCode;
    }),
  );
}
