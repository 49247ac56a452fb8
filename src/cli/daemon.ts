// `dbstash daemon`: runs the configured schedules until SIGTERM/SIGINT.

import type { Command } from 'commander';
import { commonOptions, runCommand, type CommonOptions } from './common.js';

export function registerDaemon(program: Command): void {
  const cmd = program
    .command('daemon')
    .description('run the configured schedules (backup, verify drill, prune), serve /healthz and /metrics')
    .option('--state-file <file>', 'where the daemon remembers its last runs (default: .dbstash-daemon.json beside the config)')
    .option('--dashboard <host:port>', 'also serve the web dashboard there (default: dashboard.listen when the config has a dashboard section)')
    .option('--insecure-http', 'allow the dashboard on an address other machines reach without TLS (TLS ends in a proxy in front)')
    .option('--queue <url>', 'fleet mode: put the schedules on this PostgreSQL queue for `dbstash worker` to run (default: queue: in the config)')
    .option('--agent', 'fleet mode, on a database host: schedule nothing; archive and watch WAL here and report it to the queue\'s database');
  commonOptions(cmd, { dryRun: 'check the config and the schedules, print them, and exit', codes: [130] });
  cmd.addHelpText(
    'after',
    `
Schedules are cron expressions per database in the config (5 fields, or 6 with seconds first):
  databases:
    shop:
      url: \${DATABASE_URL}
      schedule: { backup: "0 3 * * *", verify: "0 5 * * 0", prune: "30 4 * * *", timezone: Europe/Berlin }
  daemon: { listen: "127.0.0.1:9877", concurrency: 2, jitter: 5m, gracePeriod: 5m, catchUp: true }

SIGTERM lets running jobs finish within daemon.gracePeriod, then aborts them cleanly.
See docs/operations.md.

Examples:
  dbstash daemon --config /etc/dbstash/dbstash.yaml --dry-run     # check the config and schedules, then exit
  dbstash daemon --config /etc/dbstash/dbstash.yaml --log-file /var/log/dbstash.jsonl
  curl -s 127.0.0.1:9877/healthz`,
  );
  // The daemon (and prom-client with it) is loaded only by this command, not by every other one.
  cmd.action((opts: CommonOptions & { stateFile?: string; dashboard?: string; insecureHttp?: boolean; queue?: string; agent?: boolean }) =>
    runCommand(opts, async (ctx) => {
      const daemon = await import('../daemon/daemon.js');
      if (!opts.dryRun) return daemon.runDaemon(ctx, { stateFile: opts.stateFile, dashboard: opts.dashboard, insecureHttp: opts.insecureHttp, queue: opts.queue, agent: opts.agent });
      const plan = daemon.checkDaemon(ctx);
      ctx.out.result({ dryRun: true, ...plan }, () =>
        [
          `the config and its ${plan.jobs.length} schedule${plan.jobs.length === 1 ? '' : 's'} are valid; the daemon would listen on ${plan.listen}${plan.exposed ? ' (exposed)' : ''}:`,
          ...plan.jobs.map((j) => `  ${j.id.padEnd(24)} "${j.pattern}"${j.timezone ? ` ${j.timezone}` : ''}  next ${j.next}  at most ${j.maxRunSeconds}s`),
        ].join('\n'),
      );
    }),
  );
}
