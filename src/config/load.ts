// Loading configuration: .env.local then .env (dotenv; the real environment always wins), the
// config file (--config FILE, else dbstash.yaml / dbstash.yml in the working directory), with
// ${VAR} interpolation and zod validation (parse.ts, loaded only when there is a file to parse).

import { existsSync } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import dotenv from 'dotenv';
import { ConfigError } from '../core/errors.js';
import type { ConfigFile } from './schema.js';

export const CONFIG_NAMES = ['dbstash.yaml', 'dbstash.yml'];

/**
 * Larger files are refused before they are parsed: a config of hundreds of databases is tens of
 * KiB, and a 10 MB file took the YAML parser minutes and hundreds of MB.
 */
export const MAX_CONFIG_BYTES = 256 * 1024;

/** Loads .env.local, then .env: the first file to set a variable wins, the process env beats both. */
export function loadDotenv(cwd = process.cwd()): string[] {
  const loaded: string[] = [];
  for (const name of ['.env.local', '.env']) {
    const file = path.join(cwd, name);
    if (existsSync(file)) {
      dotenv.config({ path: file, quiet: true } as dotenv.DotenvConfigOptions);
      loaded.push(file);
    }
  }
  return loaded;
}

export interface LoadedConfig {
  file?: string;
  config: ConfigFile;
}

/** What `configSchema.parse({})` yields (test/unit/config.test.ts holds the two together). */
export function emptyConfig(): ConfigFile {
  return { databases: {}, storages: {}, notifications: [] };
}

export async function loadConfig(explicit?: string, cwd = process.cwd()): Promise<LoadedConfig> {
  let file: string | undefined;
  if (explicit) {
    file = path.resolve(cwd, explicit);
    if (!existsSync(file)) throw new ConfigError(`config file ${file} not found`, { hint: 'check --config, or create one with `dbstash init`' });
  } else {
    file = CONFIG_NAMES.map((n) => path.join(cwd, n)).find((f) => existsSync(f));
  }
  if (!file) return { config: emptyConfig() };
  const st = await stat(file);
  if (!st.isFile()) {
    throw new ConfigError(`config ${file} is ${st.isDirectory() ? 'a directory' : 'not a regular file'}`, {
      hint: `give the config file itself, e.g. --config ${path.join(file, CONFIG_NAMES[0])}`,
    });
  }
  if (st.size > MAX_CONFIG_BYTES) {
    throw new ConfigError(`config ${file} is ${Math.round(st.size / 1024)} KiB; a dbstash config is at most ${MAX_CONFIG_BYTES / 1024} KiB`, {
      hint: 'check that --config names the right file (a dump or a log is not a config)',
    });
  }
  const { parseConfig } = await import('./parse.js');
  return { file, config: parseConfig(await readFile(file, 'utf8'), file) };
}
