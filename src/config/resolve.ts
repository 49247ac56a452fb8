// Resolution of what to back up and where, from (in order) the command line, the config file,
// DATABASE_URL, DB_* (prod) / DEV_DB_* (dev), libpq's PG* variables and, when nothing at all is
// configured outside prod, the bundled example SQLite database.

import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConfigError } from '../core/errors.js';
import type { EngineId } from '../engines/engine.js';
import { urlFromParts } from '../engines/target.js';
import { openStorage, storageScheme } from '../storage/index.js';
import type { Destination } from '../backup/backup.js';
import type { ConfigFile, DatabaseConfig } from './schema.js';

export const DEFAULT_STASH = 'backups';
export const EXAMPLE_DATABASE = fileURLToPath(new URL('../../../examples/shop.db', import.meta.url));

/** The environments every backup id may carry without further ado. */
export const KNOWN_ENVIRONMENTS = ['dev', 'test', 'ci', 'staging', 'preview', 'qa', 'demo', 'prod'];

function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...Array<number>(b.length).fill(0)]);
  for (let j = 1; j <= b.length; j++) d[0][j] = j;
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}

/** The name among `names` closest to `typed`, when it is a likely typo of it (at most 2 edits). */
function nearMiss(typed: string, names: string[]): string | undefined {
  const near = names.map((name) => ({ name, d: distance(typed, name) })).sort((x, y) => x.d - y.d)[0];
  return near && near.d <= 2 ? near.name : undefined;
}

/**
 * The environment recorded in backup ids: --env, else the config's env, else auto (ENV_MODE, then
 * NODE_ENV, then dev). It must be one of KNOWN_ENVIRONMENTS or of the config's `environments:`:
 * a typo ("prdo") would otherwise start a series of its own, silently.
 */
export function resolveEnvName(flag: string | undefined, config: ConfigFile, env: NodeJS.ProcessEnv = process.env): string {
  let value = (flag ?? config.env ?? 'auto').trim().toLowerCase();
  const from = flag !== undefined ? '--env' : config.env !== undefined ? 'the config\'s env' : env.ENV_MODE ? 'ENV_MODE' : env.NODE_ENV ? 'NODE_ENV' : 'the default';
  if (value === 'auto') value = (env.ENV_MODE || env.NODE_ENV || 'dev').trim().toLowerCase();
  if (value === 'production') value = 'prod';
  if (value === 'development') value = 'dev';
  if (!/^[a-z0-9-]{1,32}$/.test(value)) {
    throw new ConfigError(`environment "${value}" (${from}) is not a valid name`, { hint: 'use --env dev|prod|auto, or a short lowercase name such as staging' });
  }
  const allowed = [...KNOWN_ENVIRONMENTS, ...(config.environments ?? []).map((e) => e.toLowerCase())];
  if (!allowed.includes(value)) {
    const near = nearMiss(value, allowed);
    const suggestion = near ? `did you mean ${near}? ` : '';
    throw new ConfigError(`environment "${value}" (${from}) is not one dbstash knows: ${suggestion}known: ${allowed.join(', ')}`, {
      hint: 'a name of your own goes into the config: environments: [' + value + ']',
    });
  }
  return value;
}

export interface ResolvedSource {
  url: string;
  /** Where the URL came from, for messages. */
  from: string;
  /** The config file's entry, when the database is configured there. */
  entry?: DatabaseConfig;
  key?: string;
}

function fromParts(prefix: string, env: NodeJS.ProcessEnv): string | undefined {
  const name = env[`${prefix}NAME`];
  const host = env[`${prefix}HOST`];
  if (!name && !host) return undefined;
  if (!name) throw new ConfigError(`${prefix}HOST is set but ${prefix}NAME is not`, { hint: `set ${prefix}NAME to the database name` });
  const engine = (env[`${prefix}ENGINE`] ?? env[`${prefix}TYPE`] ?? 'postgres').toLowerCase();
  const id: EngineId = engine.startsWith('my') || engine.startsWith('maria') ? 'mysql' : 'postgres';
  return urlFromParts(id, { host, port: env[`${prefix}PORT`], name, user: env[`${prefix}USER`], password: env[`${prefix}PASSWORD`] });
}

export function resolveSource(
  arg: string | undefined,
  config: ConfigFile,
  envName: string,
  env: NodeJS.ProcessEnv = process.env,
): ResolvedSource {
  const configured = Object.entries(config.databases);
  if (arg) {
    const entry = config.databases[arg];
    if (entry) return { url: entry.url, from: `config databases.${arg}`, entry, key: arg };
    // A bare name that is no configured database, and no file here: say what the config has.
    if (configured.length > 0 && /^[A-Za-z0-9_-]+$/.test(arg) && !existsSync(arg)) {
      const keys = configured.map(([k]) => k);
      const near = nearMiss(arg, keys);
      throw new ConfigError(
        `"${arg}" is not a database in the config (${near ? `did you mean ${near}? ` : ''}it has: ${keys.join(', ')}), nor a database URL or SQLite file`,
        { hint: `name a configured database (dbstash backup ${keys[0]}), or give the database's URL` },
      );
    }
    return { url: arg, from: 'argument' };
  }
  if (configured.length === 1) {
    const [key, entry] = configured[0];
    return { url: entry.url, from: `config databases.${key}`, entry, key };
  }
  if (configured.length > 1) {
    throw new ConfigError(`the config names several databases (${configured.map(([k]) => k).join(', ')}); say which one`, {
      hint: `e.g. dbstash backup ${configured[0][0]}`,
    });
  }
  if (env.DATABASE_URL) return { url: env.DATABASE_URL, from: 'DATABASE_URL' };
  const prefix = envName === 'dev' ? 'DEV_DB_' : 'DB_';
  const parts = fromParts(prefix, env);
  if (parts) return { url: parts, from: `${prefix}*` };
  if (env.PGDATABASE || env.PGHOST) {
    return {
      url: urlFromParts('postgres', {
        host: env.PGHOST,
        port: env.PGPORT,
        name: env.PGDATABASE ?? env.PGUSER ?? 'postgres',
        user: env.PGUSER,
        password: env.PGPASSWORD,
      }),
      from: 'PG* variables',
    };
  }
  if (envName === 'prod') {
    throw new ConfigError('no database configured', {
      hint: 'give a URL (dbstash backup postgres://…), set DATABASE_URL or DB_HOST/DB_NAME, or write a config with `dbstash init`',
    });
  }
  // The example is for `npm start` in dbstash's own checkout; anywhere else a forgotten
  // DATABASE_URL must not turn into a green backup of the wrong database.
  const checkout = path.dirname(path.dirname(EXAMPLE_DATABASE));
  const cwd = path.resolve(process.cwd());
  if (cwd !== checkout && !cwd.startsWith(checkout + path.sep)) {
    throw new ConfigError('no database to back up: none was named, and nothing is configured', {
      hint: 'name one (dbstash backup postgres://app@db:5432/shop, or a SQLite file), set DATABASE_URL, or write a config with `dbstash init`',
    });
  }
  return { url: EXAMPLE_DATABASE, from: 'the bundled example database (nothing else is configured)' };
}

/** Where backups go: --output-dir and --storage (names from the config or URLs), else the config's. */
export async function resolveDestinations(
  opts: { outputDir?: string; storage?: string[]; allowWorldReadable?: boolean },
  config: ConfigFile,
  entry?: DatabaseConfig,
): Promise<Destination[]> {
  const wanted: { name: string; url: string; optional: boolean; options: Record<string, unknown> }[] = [];
  const named = (name: string) => {
    const s = config.storages[name];
    if (!s) return undefined;
    // Retention belongs to prune, not to the driver.
    const { url, optional, retention: _retention, ...options } = s;
    return { name, url, optional, options };
  };
  if (opts.outputDir) wanted.push({ name: 'local', url: opts.outputDir, optional: false, options: {} });
  for (const s of opts.storage ?? []) wanted.push(named(s) ?? { name: s, url: s, optional: false, options: {} });
  if (wanted.length === 0 && entry?.storages?.length) {
    for (const name of entry.storages) {
      const s = named(name);
      if (!s) {
        throw new ConfigError(`databases: storage "${name}" is not defined under storages`, {
          hint: `defined storages: ${Object.keys(config.storages).join(', ') || '(none)'}`,
        });
      }
      wanted.push(s);
    }
  }
  if (wanted.length === 0) {
    const all = Object.keys(config.storages);
    if (all.length > 0) all.forEach((n) => wanted.push(named(n)!));
    else wanted.push({ name: 'local', url: config.stash ?? DEFAULT_STASH, optional: false, options: {} });
  }
  for (const w of wanted) if (opts.allowWorldReadable && storageScheme(w.url) === 'file') w.options = { ...w.options, allowWorldReadable: true };
  return Promise.all(wanted.map(async (w) => ({ name: w.name, optional: w.optional, storage: await openStorage(w.url, w.options) })));
}
