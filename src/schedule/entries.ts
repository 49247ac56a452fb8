// What `dbstash schedule install` installs: one entry per configured schedule (database × backup,
// verify, prune), each a dbstash command line run from the config's directory (so .env there is
// found), with the config file given explicitly.

import path from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import { ConfigError } from '../core/errors.js';
import { JOB_KINDS, parseCron, type JobKind } from '../daemon/cron.js';

export interface ScheduleEntry {
  /** dbstash-<database>-<kind>: a unit name and a label. */
  name: string;
  database: string;
  kind: JobKind;
  pattern: string;
  timezone?: string;
  /** The dbstash arguments (after the program). */
  args: string[];
}

/** The command that runs this dbstash: node and its entry script, unless given. */
export function defaultProgram(): string[] {
  return [process.execPath, path.resolve(process.argv[1])];
}

export function scheduleEntries(loaded: LoadedConfig): { configFile: string; workDir: string; entries: ScheduleEntry[] } {
  if (!loaded.file) {
    throw new ConfigError('schedule needs a config file with schedules', { hint: 'pass --config FILE (or run where dbstash.yaml is); `dbstash init` writes one' });
  }
  const configFile = path.resolve(loaded.file);
  const entries: ScheduleEntry[] = [];
  for (const [key, entry] of Object.entries(loaded.config.databases)) {
    for (const kind of JOB_KINDS) {
      const pattern = entry.schedule?.[kind];
      if (!pattern) continue;
      parseCron(pattern, entry.schedule?.timezone, `databases.${key}.schedule.${kind}`).stop();
      const common = ['--config', configFile, '--quiet'];
      const args =
        kind === 'backup'
          ? ['backup', key, ...common]
          : kind === 'prune'
            ? ['prune', key, ...common]
            : ['verify', '--latest', key, entry.checksums ? '--deep' : '--drill', ...common];
      entries.push({ name: `dbstash-${key.replace(/[^A-Za-z0-9_.-]/g, '-')}-${kind}`, database: key, kind, pattern, timezone: entry.schedule?.timezone, args });
    }
  }
  if (entries.length === 0) {
    throw new ConfigError(`${configFile} schedules nothing`, { hint: 'add e.g. schedule: { backup: "0 3 * * *" } under a database' });
  }
  return { configFile, workDir: path.dirname(configFile), entries };
}

/** Quotes a word for /bin/sh (cron lines and systemd ExecStart both accept this quoting). */
export function shellQuote(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}
