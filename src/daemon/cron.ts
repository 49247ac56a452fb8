// Cron expressions of the config (croner: 5 fields, or 6 with seconds; time zones), checked up
// front with a message naming the key, and the age a database's newest backup may reach before
// it counts as stale.

import { Cron } from 'croner';
import { ConfigError } from '../core/errors.js';
import { parseDuration } from '../core/format.js';
import type { DatabaseConfig } from '../config/schema.js';

export const JOB_KINDS = ['backup', 'verify', 'prune'] as const;
export type JobKind = (typeof JOB_KINDS)[number];

/** A paused Cron for computing run times; throws ConfigError naming the config key. */
export function parseCron(pattern: string, timezone: string | undefined, where: string): Cron {
  try {
    const cron = new Cron(pattern, { timezone, paused: true });
    cron.nextRun(); // croner checks the time zone only when it computes a time
    return cron;
  } catch (err) {
    throw new ConfigError(`${where}: "${pattern}" is not a valid cron expression${timezone ? ` in ${timezone}` : ''}: ${(err as Error).message}`, {
      hint: 'use 5 fields (minute hour day month weekday), e.g. "0 3 * * *", or 6 with seconds first; time zones are IANA names',
    });
  }
}

/** Time between the next two runs of a schedule (an estimate for irregular ones). */
export function scheduleIntervalMs(pattern: string, timezone?: string, where = 'schedule'): number | undefined {
  const cron = parseCron(pattern, timezone, where);
  const [a, b] = cron.nextRuns(2);
  cron.stop();
  return a && b ? b.getTime() - a.getTime() : undefined;
}

/**
 * How old the newest successful backup may be: databases.<key>.maxAge, else twice the backup
 * schedule's interval (one missed run is tolerated, two are not); undefined when neither is set.
 */
export function expectedMaxAgeMs(entry: DatabaseConfig | undefined, key = '?'): number | undefined {
  if (entry?.maxAge) {
    const ms = parseDuration(entry.maxAge);
    if (ms === undefined) throw new ConfigError(`databases.${key}.maxAge: "${entry.maxAge}" is not a duration`, { hint: 'e.g. 26h, 2d, 1w' });
    return ms;
  }
  const pattern = entry?.schedule?.backup;
  if (!pattern) return undefined;
  const interval = scheduleIntervalMs(pattern, entry?.schedule?.timezone, `databases.${key}.schedule.backup`);
  return interval === undefined ? undefined : 2 * interval;
}
