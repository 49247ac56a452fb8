// Loading configuration: .env.local then .env (dotenv; the real environment always wins), the
// config file (--config FILE, else dbstash.yaml / dbstash.yml in the working directory), with
// ${VAR} interpolation and zod validation (parse.ts, loaded only when there is a file to parse).

import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import dotenv from 'dotenv';
import { ConfigError } from '../core/errors.js';
import type { ConfigFile } from './schema.js';

export const CONFIG_NAMES = ['dbstash.yaml', 'dbstash.yml'];

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
  const { parseConfig } = await import('./parse.js');
  return { file, config: parseConfig(await readFile(file, 'utf8'), file) };
}
