// Cron installation: a block of lines between "# BEGIN dbstash <config>" and "# END dbstash
// <config>" in a crontab, replaced as a whole, so installing twice changes nothing and several
// configs can live side by side. The crontab is a file (--crontab-file) or the user's crontab
// (read with `crontab -l`, written with `crontab -`).

import { spawnSync } from 'node:child_process';
import { promises as fsp } from 'node:fs';
import { ConfigError, DbstashError } from '../core/errors.js';
import { shellQuote, type ScheduleEntry } from './entries.js';

export interface Crontab {
  describe: string;
  read(): Promise<string>;
  write(text: string): Promise<void>;
}

export function crontabFile(file: string): Crontab {
  return {
    describe: file,
    async read() {
      return fsp.readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return '';
        throw err;
      });
    },
    async write(text) {
      const temp = `${file}.dbstash-${process.pid}`;
      await fsp.writeFile(temp, text, { mode: 0o600 });
      await fsp.rename(temp, file);
    },
  };
}

export function userCrontab(): Crontab {
  return {
    describe: "the user's crontab",
    async read() {
      const r = spawnSync('crontab', ['-l'], { encoding: 'utf8' });
      if (r.error) throw new DbstashError('preflight', `cannot run crontab: ${r.error.message}`, { hint: 'install cron, use --crontab-file FILE, or use --systemd' });
      return r.status === 0 ? r.stdout : ''; // "no crontab for user" exits 1
    },
    async write(text) {
      const r = spawnSync('crontab', ['-'], { input: text, encoding: 'utf8' });
      if (r.error || r.status !== 0) throw new DbstashError('preflight', `crontab - failed: ${r.error?.message ?? r.stderr.trim()}`);
    },
  };
}

const begin = (configFile: string) => `# BEGIN dbstash ${configFile}`;
const end = (configFile: string) => `# END dbstash ${configFile}`;

export function cronBlock(configFile: string, workDir: string, program: string[], entries: ScheduleEntry[]): string {
  const lines = [begin(configFile), '# Managed by `dbstash schedule install --cron`; edit the config and install again.'];
  // CRON_TZ holds for every line after it: entries without a time zone go first.
  let zone: string | undefined;
  for (const e of [...entries].sort((a, b) => Number(!!a.timezone) - Number(!!b.timezone))) {
    const fields = e.pattern.trim().split(/\s+/);
    if (fields.length !== 5) {
      throw new ConfigError(`databases.${e.database}.schedule.${e.kind}: cron needs 5 fields, "${e.pattern}" has ${fields.length}`, {
        hint: 'drop the seconds field, or use --systemd (or the daemon), which support seconds',
      });
    }
    if (e.timezone && e.timezone !== zone) lines.push(`CRON_TZ=${(zone = e.timezone)}`);
    lines.push(`${fields.join(' ')} cd ${shellQuote(workDir)} && ${[...program, ...e.args].map(shellQuote).join(' ')}  # ${e.name}`);
  }
  lines.push(end(configFile));
  return lines.join('\n') + '\n';
}

/** The crontab without this config's block, and the block found (if any). */
export function splitBlock(text: string, configFile: string): { rest: string; block?: string } {
  const lines = text.split('\n');
  const from = lines.indexOf(begin(configFile));
  const to = lines.indexOf(end(configFile), from);
  if (from < 0 || to < 0) return { rest: text };
  const block = lines.slice(from, to + 1).join('\n') + '\n';
  const rest = [...lines.slice(0, from), ...lines.slice(to + 1)].join('\n');
  return { rest, block };
}

export function withBlock(text: string, block: string, configFile: string): string {
  const { rest } = splitBlock(text, configFile);
  const base = rest.replace(/\n*$/, '');
  return (base ? `${base}\n` : '') + block;
}
