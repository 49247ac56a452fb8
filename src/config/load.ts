// Loading configuration: .env.local then .env (dotenv; the real environment always wins), the
// config file (--config FILE, else dbstash.yaml / dbstash.yml in the working directory), with
// ${VAR} interpolation and zod validation.

import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import dotenv from 'dotenv';
import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../core/errors.js';
import { configSchema, type ConfigFile } from './schema.js';

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

/** Replaces ${VAR} and ${VAR:-default} in every string of a parsed YAML document. */
export function interpolate(value: unknown, env: NodeJS.ProcessEnv, at = ''): unknown {
  if (typeof value === 'string') {
    return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g, (_m, name: string, fallback?: string) => {
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      throw new ConfigError(`config key ${at || '(root)'} uses \${${name}}, which is not set`, {
        hint: `export ${name}, add it to .env, or give a default with \${${name}:-value}`,
      });
    });
  }
  if (Array.isArray(value)) return value.map((v, i) => interpolate(v, env, `${at}[${i}]`));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, interpolate(v, env, at ? `${at}.${k}` : k)]));
  }
  return value;
}

function describeIssue(issue: { path: PropertyKey[]; message: string; code: string; values?: unknown[]; keys?: string[] }): string {
  const key = issue.path.map(String).join('.') || '(root)';
  if (issue.code === 'invalid_value' && issue.values) return `${key}: invalid value; valid values: ${issue.values.join(', ')}`;
  if (issue.code === 'unrecognized_keys' && issue.keys) return `${key}: unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}`;
  return `${key}: ${issue.message}`;
}

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): ConfigFile {
  let doc: unknown;
  try {
    doc = parseYaml(text) ?? {};
  } catch (err) {
    throw new ConfigError(`${file} is not valid YAML: ${(err as Error).message.split('\n')[0]}`, { cause: err });
  }
  const parsed = configSchema.safeParse(interpolate(doc, env));
  if (!parsed.success) {
    const issues = parsed.error.issues.slice(0, 3).map((i) => describeIssue(i as never));
    throw new ConfigError(`${file}: ${issues.join('; ')}`, { hint: 'see `dbstash init` for a commented example' });
  }
  return parsed.data;
}

export interface LoadedConfig {
  file?: string;
  config: ConfigFile;
}

export function loadConfig(explicit?: string, cwd = process.cwd()): LoadedConfig {
  let file: string | undefined;
  if (explicit) {
    file = path.resolve(cwd, explicit);
    if (!existsSync(file)) throw new ConfigError(`config file ${file} not found`, { hint: 'check --config, or create one with `dbstash init`' });
  } else {
    file = CONFIG_NAMES.map((n) => path.join(cwd, n)).find((f) => existsSync(f));
  }
  if (!file) return { config: configSchema.parse({}) };
  return { file, config: parseConfig(readFileSync(file, 'utf8'), file) };
}
