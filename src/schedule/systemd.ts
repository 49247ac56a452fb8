// systemd installation: per schedule a oneshot service running the dbstash command and a timer
// whose OnCalendar= is the cron expression translated (with its time zone; Persistent=true runs
// a run missed while the machine was off). Every file carries a marker naming the config, so
// uninstall removes only what this config installed.

import { promises as fsp } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ConfigError } from '../core/errors.js';
import { shellQuote, type ScheduleEntry } from './entries.js';

const DAYS = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
const DAY_NAMES: Record<string, number> = { sun: 0, mon: 1, tue: 2, wed: 3, thu: 4, fri: 5, sat: 6 };
const MONTH_NAMES: Record<string, number> = { jan: 1, feb: 2, mar: 3, apr: 4, may: 5, jun: 6, jul: 7, aug: 8, sep: 9, oct: 10, nov: 11, dec: 12 };

export function defaultUnitDir(): string {
  return process.getuid?.() === 0 ? '/etc/systemd/system' : path.join(os.homedir(), '.config/systemd/user');
}

export function marker(configFile: string): string {
  return `# Managed by dbstash schedule for ${configFile}`;
}

/** One cron field → systemd calendar syntax ("*", "1,5", "1..5", "0/15"). */
function field(value: string, what: string, start: number, names: Record<string, number> = {}): string {
  const num = (v: string) => {
    const n = names[v.toLowerCase()] ?? Number(v);
    if (!Number.isInteger(n)) throw new Error(`"${v}" in the ${what} field`);
    return n;
  };
  return value
    .split(',')
    .map((part) => {
      const [range, step] = part.split('/');
      if (range === '*') return step ? `${start}/${num(step)}` : '*';
      if (step) {
        if (range.includes('-')) throw new Error(`a range with a step ("${part}") in the ${what} field`);
        return `${num(range)}/${num(step)}`;
      }
      const [a, b] = range.split('-');
      return b !== undefined ? `${num(a)}..${num(b)}` : String(num(a));
    })
    .join(',');
}

function weekdays(value: string): string {
  return value
    .split(',')
    .map((part) => {
      if (part.includes('/')) throw new Error(`a step ("${part}") in the weekday field`);
      const day = (v: string) => {
        const n = DAY_NAMES[v.toLowerCase()] ?? Number(v);
        if (!Number.isInteger(n) || n < 0 || n > 7) throw new Error(`"${v}" in the weekday field`);
        return DAYS[n % 7];
      };
      const [a, b] = part.split('-');
      return b !== undefined ? `${day(a)}..${day(b)}` : day(a);
    })
    .join(',');
}

/** Translates a 5- or 6-field cron expression (and time zone) into a systemd OnCalendar= value. */
export function onCalendar(pattern: string, timezone: string | undefined, where: string): string {
  const fields = pattern.trim().split(/\s+/);
  if (fields.length !== 5 && fields.length !== 6) throw new ConfigError(`${where}: "${pattern}" needs 5 or 6 fields for systemd`);
  const [sec, min, hour, dom, mon, dow] = fields.length === 6 ? fields : ['0', ...fields];
  try {
    if (dom !== '*' && dow !== '*' && dow !== '?') {
      throw new Error('both day of month and weekday: cron runs on either, systemd only on both');
    }
    const date = `*-${field(mon, 'month', 1, MONTH_NAMES)}-${field(dom.replace('?', '*'), 'day', 1)}`;
    const time = `${field(hour, 'hour', 0)}:${field(min, 'minute', 0)}:${field(sec, 'second', 0)}`;
    const days = dow === '*' || dow === '?' ? '' : `${weekdays(dow)} `;
    return `${days}${date} ${time}${timezone ? ` ${timezone}` : ''}`;
  } catch (err) {
    throw new ConfigError(`${where}: "${pattern}" cannot be expressed as a systemd timer: ${(err as Error).message}`, {
      hint: 'simplify the expression, or run the schedules with `dbstash daemon`',
    });
  }
}

export function units(configFile: string, workDir: string, program: string[], entries: ScheduleEntry[], jitter?: string): Map<string, string> {
  const files = new Map<string, string>();
  for (const e of entries) {
    const calendar = onCalendar(e.pattern, e.timezone, `databases.${e.database}.schedule.${e.kind}`);
    files.set(
      `${e.name}.service`,
      [
        marker(configFile),
        '[Unit]',
        `Description=dbstash ${e.kind} of ${e.database}`,
        'Wants=network-online.target',
        'After=network-online.target',
        '',
        '[Service]',
        'Type=oneshot',
        `WorkingDirectory=${workDir}`,
        `ExecStart=${[...program, ...e.args].map(shellQuote).join(' ')}`,
        '',
      ].join('\n'),
    );
    files.set(
      `${e.name}.timer`,
      [
        marker(configFile),
        '[Unit]',
        `Description=dbstash ${e.kind} of ${e.database} (${e.pattern}${e.timezone ? ` ${e.timezone}` : ''})`,
        '',
        '[Timer]',
        `OnCalendar=${calendar}`,
        'Persistent=true',
        ...(jitter ? [`RandomizedDelaySec=${jitter}`] : []),
        '',
        '[Install]',
        'WantedBy=timers.target',
        '',
      ].join('\n'),
    );
  }
  return files;
}

/** Unit files in dir that this config installed earlier. */
export async function installedUnits(dir: string, configFile: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  const names = await fsp.readdir(dir).catch(() => [] as string[]);
  for (const name of names.filter((n) => /^dbstash-.*\.(service|timer)$/.test(n))) {
    const text = await fsp.readFile(path.join(dir, name), 'utf8').catch(() => '');
    if (text.startsWith(marker(configFile) + '\n')) found.set(name, text);
  }
  return found;
}
