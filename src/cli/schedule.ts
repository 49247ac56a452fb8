// `dbstash schedule install|status|uninstall --cron|--systemd`: the config's schedules as crontab
// entries or systemd timers, for machines that run no daemon. Installing is idempotent; status
// says whether what is installed matches the config (exit 13 when not).

import { promises as fsp } from 'node:fs';
import path from 'node:path';
import type { Command } from 'commander';
import { ExitCode, UsageError } from '../core/errors.js';
import { daemonSchema } from '../config/schema.js';
import { cronBlock, crontabFile, splitBlock, userCrontab, withBlock } from '../schedule/crontab.js';
import { defaultProgram, scheduleEntries } from '../schedule/entries.js';
import { defaultUnitDir, installedUnits, units } from '../schedule/systemd.js';
import { commonOptions, runCommand, type CommonOptions, type Context } from './common.js';
import { makeDirs } from '../core/fs.js';

interface ScheduleOptions extends CommonOptions {
  cron?: boolean;
  systemd?: boolean;
  crontabFile?: string;
  unitDir?: string;
  program?: string;
}

type Action = 'install' | 'status' | 'uninstall';

async function cron(action: Action, opts: ScheduleOptions, ctx: Context): Promise<number> {
  const { configFile, workDir, entries } = scheduleEntries(ctx.loaded);
  const tab = opts.crontabFile ? crontabFile(path.resolve(opts.crontabFile)) : userCrontab();
  const wanted = cronBlock(configFile, workDir, opts.program ? [opts.program] : defaultProgram(), entries);
  const text = await tab.read();
  const { block } = splitBlock(text, configFile);
  const state = !block ? 'not installed' : block === wanted ? 'up to date' : 'out of date';
  const summary = { method: 'cron', crontab: tab.describe, config: configFile, entries: entries.map((e) => e.name) };
  if (action === 'status') {
    ctx.out.result({ ...summary, state }, () => `${entries.length} schedules of ${configFile} in ${tab.describe}: ${state}`);
    return state === 'up to date' ? ExitCode.ok : ExitCode.unhealthy;
  }
  const next = action === 'install' ? withBlock(text, wanted, configFile) : splitBlock(text, configFile).rest;
  const changed = next !== text;
  if (changed && !opts.dryRun) await tab.write(next);
  const verb = action === 'install' ? (changed ? 'installed' : 'already installed, unchanged') : changed ? 'removed' : 'nothing to remove';
  ctx.out.result({ ...summary, action, changed, dryRun: !!opts.dryRun, ...(opts.dryRun ? { crontabText: next } : {}) }, () =>
    opts.dryRun ? next : `${verb}: ${entries.length} schedules of ${configFile} in ${tab.describe}`,
  );
  return ExitCode.ok;
}

async function systemd(action: Action, opts: ScheduleOptions, ctx: Context): Promise<number> {
  const { configFile, workDir, entries } = scheduleEntries(ctx.loaded);
  const dir = path.resolve(opts.unitDir ?? defaultUnitDir());
  const jitter = daemonSchema.parse(ctx.loaded.config.daemon ?? {}).jitter;
  const wanted = units(configFile, workDir, opts.program ? [opts.program] : defaultProgram(), entries, jitter);
  const installed = await installedUnits(dir, configFile);
  const timers = [...wanted.keys()].filter((n) => n.endsWith('.timer'));
  const user = dir.includes('/.config/systemd/user') ? ' --user' : '';
  const summary = { method: 'systemd', unitDir: dir, config: configFile, units: [...wanted.keys()] };
  if (action === 'status') {
    const stale = [...installed.keys()].filter((n) => !wanted.has(n));
    const missing = [...wanted.keys()].filter((n) => installed.get(n) !== wanted.get(n));
    const state = installed.size === 0 ? 'not installed' : missing.length || stale.length ? 'out of date' : 'up to date';
    ctx.out.result({ ...summary, state, missing, stale }, () => `${timers.length} timers of ${configFile} in ${dir}: ${state}`);
    return state === 'up to date' ? ExitCode.ok : ExitCode.unhealthy;
  }
  const writes = action === 'install' ? [...wanted].filter(([name, text]) => installed.get(name) !== text) : [];
  const removals = [...installed.keys()].filter((n) => action === 'uninstall' || !wanted.has(n));
  if (!opts.dryRun) {
    await makeDirs(dir);
    for (const [name, text] of writes) {
      const temp = path.join(dir, `.${name}.dbstash-${process.pid}`);
      await fsp.writeFile(temp, text, { mode: 0o644 });
      await fsp.rename(temp, path.join(dir, name));
    }
    for (const name of removals) await fsp.rm(path.join(dir, name), { force: true });
  }
  const changed = writes.length + removals.length > 0;
  const next =
    action === 'install'
      ? `systemctl${user} daemon-reload && systemctl${user} enable --now ${timers.join(' ')}`
      : `systemctl${user} disable --now ${timers.join(' ')}; systemctl${user} daemon-reload`;
  ctx.out.result({ ...summary, action, changed, dryRun: !!opts.dryRun, written: writes.map(([n]) => n), removed: removals, next }, () =>
    [
      `${opts.dryRun ? 'would write' : 'wrote'} ${writes.length} and ${opts.dryRun ? 'would remove' : 'removed'} ${removals.length} unit files in ${dir}${changed ? '' : ' (already up to date)'}`,
      ...(changed || action === 'install' ? [`then run: ${next}`] : []),
    ].join('\n'),
  );
  return ExitCode.ok;
}

export function registerSchedule(program: Command): void {
  const cmd = program
    .command('schedule')
    .description('install, check or remove the config\'s schedules as crontab entries or systemd timers')
    .argument('<action>', 'install, status or uninstall')
    .option('--cron', 'crontab entries (the user\'s crontab, or --crontab-file)')
    .option('--systemd', 'systemd service and timer units')
    .option('--crontab-file <file>', 'manage this file instead of the user\'s crontab')
    .option('--unit-dir <dir>', 'where unit files go (default: /etc/systemd/system as root, else ~/.config/systemd/user)')
    .option('--program <path>', 'the dbstash executable to run (default: this one)');
  commonOptions(cmd, { dryRun: 'print what would be installed; change nothing', codes: [] });
  cmd.addHelpText(
    'after',
    `
Cron cannot run 6-field (seconds) expressions; CRON_TZ is written for time zones (cronie honours
it, some crons ignore it: prefer --systemd there). Installing again replaces the entries.

Examples:
  dbstash schedule install --systemd --config /etc/dbstash/dbstash.yaml
  dbstash schedule status --cron
  dbstash schedule uninstall --cron --crontab-file ./crontab.txt`,
  );
  cmd.action((action: string, opts: ScheduleOptions) =>
    runCommand(opts, async (ctx) => {
      if (!['install', 'status', 'uninstall'].includes(action)) {
        throw new UsageError(`unknown action "${action}"`, { hint: 'use install, status or uninstall' });
      }
      if (Boolean(opts.cron) === Boolean(opts.systemd)) throw new UsageError('say --cron or --systemd', { hint: 'e.g. dbstash schedule install --systemd' });
      return opts.cron ? cron(action as Action, opts, ctx) : systemd(action as Action, opts, ctx);
    }),
  );
}
