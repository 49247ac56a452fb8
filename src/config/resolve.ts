// Resolution of what to back up and where, from (in order) the command line, the config file,
// DATABASE_URL, DB_* (prod) / DEV_DB_* (dev), libpq's PG* variables and, when nothing at all is
// configured outside prod, the bundled example SQLite database.

import { fileURLToPath } from 'node:url';
import { ConfigError } from '../core/errors.js';
import type { EngineId } from '../engines/engine.js';
import { urlFromParts } from '../engines/target.js';
import { openStorage, storageScheme } from '../storage/index.js';
import type { Destination } from '../backup/backup.js';
import type { ConfigFile, DatabaseConfig } from './schema.js';

export const DEFAULT_STASH = 'backups';
export const EXAMPLE_DATABASE = fileURLToPath(new URL('../../../examples/shop.db', import.meta.url));

export function resolveEnvName(flag: string | undefined, config: ConfigFile, env: NodeJS.ProcessEnv = process.env): string {
  let value = (flag ?? config.env ?? 'auto').trim().toLowerCase();
  if (value === 'auto') value = (env.ENV_MODE || env.NODE_ENV || 'dev').trim().toLowerCase();
  if (value === 'production') value = 'prod';
  if (value === 'development') value = 'dev';
  if (!/^[a-z0-9-]{1,32}$/.test(value)) {
    throw new ConfigError(`environment "${value}" is not a valid name`, { hint: 'use --env dev|prod|auto, or a short lowercase name such as staging' });
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
