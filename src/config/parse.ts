// Parsing a config file: YAML, ${VAR} interpolation from the environment, then the zod schema,
// with errors that name the key and the valid values.

import { parse as parseYaml } from 'yaml';
import { ConfigError } from '../core/errors.js';
import { configSchema, type ConfigFile } from './schema.js';

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

