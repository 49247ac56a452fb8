// Parsing a config file: YAML, ${VAR} interpolation from the environment, then the zod schema,
// with errors that name the key and the valid values.

import { LineCounter, parseDocument, type Document } from 'yaml';
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

type Issue = { path: PropertyKey[]; message: string; code: string; values?: unknown[]; keys?: string[]; expected?: string; input?: unknown };

/** Unwraps optional/default/nullable layers of a zod schema. */
function bare(schema: unknown): { _zod: { def: Record<string, unknown> } } | undefined {
  let s = schema as { _zod?: { def: Record<string, unknown> } } | undefined;
  for (let i = 0; i < 8 && s?._zod; i++) {
    const def = s._zod.def;
    if ((def.type === 'optional' || def.type === 'default' || def.type === 'nullable' || def.type === 'prefault') && def.innerType) s = def.innerType as typeof s;
    else break;
  }
  return s?._zod ? (s as { _zod: { def: Record<string, unknown> } }) : undefined;
}

/** The keys a config object at `path` may hold (undefined where any key goes). */
export function validKeysAt(path: PropertyKey[]): string[] | undefined {
  let s = bare(configSchema);
  for (const part of path) {
    const def = s?._zod.def;
    if (!def) return undefined;
    if (def.type === 'object') s = bare((def.shape as Record<string, unknown>)[String(part)]);
    else if (def.type === 'record') s = bare(def.valueType);
    else if (def.type === 'array') s = bare(def.element);
    else if (def.type === 'union') s = bare((def.options as unknown[]).find((o) => bare(o)?._zod.def.type === 'object'));
    else return undefined;
  }
  const def = s?._zod.def;
  if (def?.type === 'union') {
    const obj = bare((def.options as unknown[]).find((o) => bare(o)?._zod.def.type === 'object'));
    return obj ? Object.keys(obj._zod.def.shape as object) : undefined;
  }
  return def?.type === 'object' ? Object.keys(def.shape as object) : undefined;
}

const WORDS: Record<string, string> = { number: 'a number', string: 'text', boolean: 'true or false', array: 'a list', object: 'a map of keys', int: 'a whole number' };

function got(input: unknown): string {
  if (input === undefined) return 'nothing';
  if (input === null) return 'null';
  if (Array.isArray(input)) return 'a list';
  if (typeof input === 'object') return 'a map of keys';
  return JSON.stringify(input);
}

function describeIssue(issue: Issue, valueAt: (path: PropertyKey[]) => unknown): string {
  const key = issue.path.map(String).join('.') || '(root)';
  if (issue.code === 'invalid_value' && issue.values) return `${key}: invalid value ${got(valueAt(issue.path))}; valid values: ${issue.values.join(', ')}`;
  if (issue.code === 'unrecognized_keys' && issue.keys) {
    const valid = validKeysAt(issue.path);
    return `${key}: unknown key${issue.keys.length > 1 ? 's' : ''} ${issue.keys.join(', ')}${valid ? ` (valid keys: ${valid.join(', ')})` : ''}`;
  }
  if (issue.code === 'invalid_type' && issue.expected) {
    const value = valueAt(issue.path);
    return value === undefined ? `${key}: missing, expected ${WORDS[issue.expected] ?? issue.expected}` : `${key}: expected ${WORDS[issue.expected] ?? issue.expected}, got ${got(value)}`;
  }
  return `${key}: ${issue.message}`;
}

/** Where in the file a key (or, for an unknown key, that key itself) is, as "file:line". */
function where(doc: Document, counter: LineCounter, file: string, issue: Issue): string {
  const path = issue.code === 'unrecognized_keys' && issue.keys?.length ? [...issue.path, issue.keys[0]] : issue.path;
  for (let n = path.length; n >= 0; n--) {
    const sub = path.slice(0, n);
    const node = (sub.length === 0 ? doc.contents : doc.getIn(sub, true)) as { range?: [number, number, number] } | null;
    let offset = node?.range?.[0];
    if (sub.length > 0) {
      // The key's own position, when the path ends at a key of a map.
      const parent = (sub.length === 1 ? doc.contents : doc.getIn(sub.slice(0, -1), true)) as { items?: { key?: { value?: unknown; range?: [number, number, number] } }[] } | null;
      const pair = parent?.items?.find((p) => String(p.key?.value) === String(sub.at(-1)));
      offset = pair?.key?.range?.[0] ?? offset;
    }
    if (offset !== undefined) return `${file}:${counter.linePos(offset).line}`;
  }
  return file;
}

export function parseConfig(text: string, file: string, env: NodeJS.ProcessEnv = process.env): ConfigFile {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: true });
  const syntax = doc.errors[0];
  if (syntax) {
    const line = syntax.linePos?.[0].line;
    const source = line ? text.split(/\r?\n/)[line - 1]?.trim() : undefined;
    const what = syntax.message.replace(/ at line \d+, column \d+:?[\s\S]*$/, '').replace(/:\s*$/, '');
    throw new ConfigError(`${file}${line ? `:${line}` : ''}: not valid YAML: ${what}${source ? ` (${JSON.stringify(source)})` : ''}`, {
      hint: 'each setting is "key: value" (a colon and a space), nested keys indented by spaces, never tabs',
      cause: syntax,
    });
  }
  let raw: unknown;
  try {
    raw = (doc.toJS({ maxAliasCount: 100 }) as unknown) ?? {};
  } catch (err) {
    // An alias to no anchor, or aliases that multiply into a huge document.
    throw new ConfigError(`${file}: not valid YAML: ${(err as Error).message}`, { hint: 'check the file\'s &anchors and *aliases', cause: err });
  }
  let interpolated: unknown;
  try {
    interpolated = interpolate(raw, env);
  } catch (err) {
    const at = /^config key (\S+) uses/.exec((err as Error).message)?.[1];
    if (!(err instanceof ConfigError) || !at) throw err;
    const path = at.split(/\.|\[(\d+)\]/).filter((p) => p !== undefined && p !== '');
    throw new ConfigError(`${where(doc, counter, file, { path, message: '', code: '' })}: ${err.message}`, { hint: err.hint });
  }
  const parsed = configSchema.safeParse(interpolated);
  if (!parsed.success) {
    const valueAt = (path: PropertyKey[]) => path.reduce<unknown>((v, k) => (v && typeof v === 'object' ? (v as Record<string, unknown>)[String(k)] : undefined), raw);
    const issues = parsed.error.issues.slice(0, 3).map((i) => `${where(doc, counter, file, i as Issue)}: ${describeIssue(i as Issue, valueAt)}`);
    throw new ConfigError(issues.join('; '), { hint: 'see `dbstash init` for a commented example' });
  }
  return parsed.data;
}
