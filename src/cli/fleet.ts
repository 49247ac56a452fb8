// `dbstash worker` takes jobs from the fleet's queue on this host; `dbstash run` puts one job on
// it now and, with --wait, follows it to its end and exits with its exit code (docs/fleet.md).

import os from 'node:os';
import type { Command } from 'commander';
import { ConfigError, ExitCode, UsageError } from '../core/errors.js';
import { parseDuration } from '../core/format.js';
import { parseTags } from '../fleet/tags.js';
import { commonOptions, runCommand, type CommonOptions } from './common.js';

const KINDS = ['backup', 'verify', 'prune'] as const;

function needQueue(option: string | undefined, config: { queue?: string }): string {
  const url = option ?? config.queue;
  if (!url) throw new ConfigError('no queue: the fleet needs its PostgreSQL control database', { hint: 'set queue: postgres://… in the config, or pass --queue URL' });
  return url;
}


export function registerWorker(program: Command): void {
  const cmd = program
    .command('worker')
    .description('take backup, verify and prune jobs from the fleet\'s queue and run them here')
    .option('--queue <url>', 'the fleet\'s PostgreSQL control database (default: queue: in the config)')
    .option('--tags <k=v,…>', 'this worker\'s tags: it also runs the databases whose workers: ask for them')
    .option('--concurrency <n>', 'jobs at once per kind', '1')
    .option('--grace <duration>', 'on SIGTERM, how long running jobs may take to finish before they are aborted (and retried elsewhere)', '5m');
  commonOptions(cmd, { codes: [3, 11] });
  cmd.addHelpText(
    'after',
    `
The queue is queue: in the config (a PostgreSQL URL); every worker reads the same config.
A database with workers: { region: eu } runs only on workers with --tags region=eu.
SIGTERM: no new jobs; running ones get --grace, then are aborted and retried elsewhere.
See docs/fleet.md.

Examples:
  dbstash worker --config /etc/dbstash/dbstash.yaml --concurrency 2
  dbstash worker --config /etc/dbstash/dbstash.yaml --tags region=eu`,
  );
  cmd.action((opts: CommonOptions & { queue?: string; tags?: string; concurrency: string; grace: string }) =>
    runCommand(opts, async (ctx) => {
      const concurrency = Number(opts.concurrency);
      if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new UsageError(`--concurrency must be a whole number from 1 to 64, got "${opts.concurrency}"`);
      const graceMs = parseDuration(opts.grace);
      if (graceMs === undefined) throw new UsageError(`--grace must be a duration such as 5m, got "${opts.grace}"`);
      const { runWorker } = await import('../fleet/worker.js');
      return runWorker(ctx, { queue: needQueue(opts.queue, ctx.loaded.config), tags: parseTags(opts.tags), concurrency, graceMs });
    }),
  );
}

export function registerRun(program: Command): void {
  const cmd = program
    .command('run')
    .description('put one backup, verify or prune job of a configured database on the fleet\'s queue now')
    .argument('<kind>', 'backup, verify or prune')
    .argument('<database>', 'the database\'s key in the config')
    .option('--queue <url>', 'the fleet\'s PostgreSQL control database (default: queue: in the config)')
    .option('--backup <id>', 'verify: this backup instead of the newest')
    .option('--wait', 'follow the job to its end and exit with its exit code');
  commonOptions(cmd, { codes: [3, 5, 7] });
  cmd.addHelpText(
    'after',
    `
Without --wait, prints the job's id; with it, follows the job (its attempts and retries) and exits
with the job's exit code. See docs/fleet.md.

Examples:
  dbstash run backup shop --config /etc/dbstash/dbstash.yaml --wait
  dbstash run verify shop --config /etc/dbstash/dbstash.yaml --json`,
  );
  cmd.action((kind: string, database: string, opts: CommonOptions & { queue?: string; backup?: string; wait?: boolean }) =>
    runCommand(opts, async (ctx) => {
      if (!(KINDS as readonly string[]).includes(kind)) throw new UsageError(`run: the kind must be backup, verify or prune, got "${kind}"`);
      const config = ctx.loaded.config;
      if (!Object.hasOwn(config.databases, database)) {
        throw new UsageError(`${database} is not a database in the config`, { hint: `the config has: ${Object.keys(config.databases).join(', ') || 'none'}` });
      }
      const { openQueue, enqueue, followJob } = await import('../fleet/queue.js');
      const boss = await openQueue(needQueue(opts.queue, config), config, { warn: (m) => ctx.out.warn(m), supervise: false });
      try {
        const by = `${os.userInfo().username}@${os.hostname()}`;
        const job = await enqueue(boss, config, kind as (typeof KINDS)[number], { database, by, ...(opts.backup ? { backupId: opts.backup } : {}) });
        if (!opts.wait) {
          ctx.out.result({ job: job.id, queue: job.queue, database, kind }, () => `queued ${kind} of ${database}: job ${job.id}`);
          return ExitCode.ok;
        }
        ctx.out.info(`queued ${kind} of ${database}: job ${job.id}; waiting for a worker`);
        const { job: found, output } = await followJob(boss, job.queue, job.id, {
          signal: ctx.signal,
          running: (attempt) => ctx.out.info(`job ${job.id} running (attempt ${attempt})`),
          retrying: (attempt, reason) => ctx.out.warn(`job ${job.id}: attempt ${attempt} failed: ${reason}; it will be retried`),
        });
        const code = found.state === 'completed' ? ExitCode.ok : (output.exitCode ?? ExitCode.internal);
        ctx.out.result({ job: job.id, database, kind, state: found.state, attempts: found.retryCount + 1, exitCode: code, ...output }, () =>
          found.state === 'completed' ? `${kind} of ${database} done by ${output.worker ?? 'a worker'}` : `${kind} of ${database} ${found.state}: ${output.message ?? 'no reason recorded'}`,
        );
        return code;
      } finally {
        await boss.stop({ graceful: false, close: true }).catch(() => {});
      }
    }),
  );
}
