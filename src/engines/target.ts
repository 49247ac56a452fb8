// Turns what the user gave (a URL or a file path) into a Target. The password is split off so
// that nothing printed or stored ever carries it.

import path from 'node:path';
import { ConfigError } from '../core/errors.js';
import { maskUrlCredentials, registerSecret, userinfoEnd } from '../core/secrets.js';
import type { EngineId, EngineOptions, Target } from './engine.js';

const SCHEMES: Record<string, EngineId> = {
  'postgres:': 'postgres',
  'postgresql:': 'postgres',
  'mysql:': 'mysql',
  'mariadb:': 'mysql',
  'sqlite:': 'sqlite',
  'sqlite3:': 'sqlite',
};

const DEFAULT_PORT: Partial<Record<EngineId, number>> = { postgres: 5432, mysql: 3306 };

/**
 * Splits user and password off a URL as typed, encoded or not, and returns the URL with them
 * percent-encoded, so the URL parser sees one host and one path whatever the password holds.
 */
function encodeUserinfo(url: string): { url: string; user?: string; password?: string } {
  const scheme = url.indexOf('://');
  if (scheme < 0) return { url };
  const start = scheme + 3;
  const at = userinfoEnd(url, start);
  if (at < 0) return { url };
  const userinfo = url.slice(start, at);
  const colon = userinfo.indexOf(':');
  const decode = (text: string) => {
    try {
      return decodeURIComponent(text);
    } catch {
      return text; // a "%" that is not an escape: take the text as typed
    }
  };
  const user = decode(colon < 0 ? userinfo : userinfo.slice(0, colon));
  const password = colon < 0 ? undefined : decode(userinfo.slice(colon + 1));
  const auth = encodeURIComponent(user) + (password !== undefined ? `:${encodeURIComponent(password)}` : '');
  return { url: `${url.slice(0, start)}${auth}${url.slice(at)}`, user, password };
}

/** Removes the password from a URL, for display; whatever the password holds, no piece of it stays. */
export function redactUrl(url: string): string {
  const masked = maskUrlCredentials(url);
  try {
    const u = new URL(encodeUserinfo(url).url);
    if (u.password) u.password = '***';
    for (const key of [...u.searchParams.keys()]) {
      if (/pass|secret|token|key/i.test(key)) u.searchParams.set(key, '***');
    }
    return u.toString().replace(':%2A%2A%2A@', ':***@');
  } catch {
    return masked;
  }
}

function looksLikeSqlitePath(input: string): boolean {
  return !/^[a-z][a-z0-9+.-]*:\/\//i.test(input) && (/\.(db|sqlite3?|db3)$/i.test(input) || input.startsWith('/') || input.startsWith('.'));
}

export function parseTarget(input: string, options: EngineOptions = {}): Target {
  const trimmed = input.trim();
  if (trimmed === '') throw new ConfigError('the database URL is empty', { hint: 'give a URL such as postgres://user@host:5432/db, or a SQLite file path' });

  if (looksLikeSqlitePath(trimmed) || /^sqlite3?:/i.test(trimmed)) {
    let file = trimmed.replace(/^sqlite3?:(\/\/)?/i, '');
    if (file === '') throw new ConfigError(`"${input}" names no SQLite file`, { hint: 'use sqlite:path/to/app.db or just the path' });
    file = path.resolve(file);
    const base = path.basename(file).replace(/\.(db|sqlite3?|db3)$/i, '');
    return { engine: 'sqlite', database: base, displayUrl: file, path: file, params: {}, options };
  }

  const typed = encodeUserinfo(trimmed);
  registerSecret(typed.password);
  let url: URL;
  try {
    url = new URL(typed.url);
  } catch {
    throw new ConfigError(`"${redactUrl(trimmed)}" is not a database URL`, {
      hint: 'use postgres://user:pass@host:5432/db, mysql://user:pass@host:3306/db, or a SQLite file path; a password with characters such as @ # / ? : % is best percent-encoded (@ → %40, # → %23, / → %2F, ? → %3F, : → %3A, % → %25)',
    });
  }
  const engine = SCHEMES[url.protocol];
  if (!engine) {
    throw new ConfigError(`unsupported database URL scheme "${url.protocol}"`, {
      hint: `valid schemes: ${Object.keys(SCHEMES).map((s) => s.replace(':', '')).join(', ')}`,
    });
  }
  const decoded = (part: string, what: string) => {
    try {
      return decodeURIComponent(part);
    } catch {
      throw new ConfigError(`the ${what} in ${redactUrl(trimmed)} is not valid percent-encoding`, { hint: 'a "%" must be followed by two hex digits; write a literal % as %25' });
    }
  };
  const database = decoded(url.pathname.replace(/^\//, ''), 'database name');
  if (!database) {
    throw new ConfigError(`the URL ${redactUrl(trimmed)} names no database`, { hint: 'append the database name: …:5432/mydb' });
  }
  const params: Record<string, string> = {};
  for (const [k, v] of url.searchParams) params[k] = v;
  const host = decoded(url.hostname, 'host name') || params.host || 'localhost';
  const port = url.port ? Number(url.port) : params.port ? Number(params.port) : DEFAULT_PORT[engine];
  return {
    engine,
    database,
    displayUrl: redactUrl(trimmed),
    host,
    port,
    user: typed.user ? typed.user : undefined,
    password: typed.password ? typed.password : undefined,
    params,
    options,
  };
}

/** Builds a URL from its parts (for DB_HOST, DB_PORT, … style configuration). */
export function urlFromParts(engine: EngineId, parts: { host?: string; port?: string | number; name: string; user?: string; password?: string }): string {
  const scheme = engine === 'mysql' ? 'mysql' : 'postgres';
  const auth = parts.user ? `${encodeURIComponent(parts.user)}${parts.password ? ':' + encodeURIComponent(parts.password) : ''}@` : '';
  const port = parts.port ? `:${parts.port}` : '';
  return `${scheme}://${auth}${parts.host ?? 'localhost'}${port}/${encodeURIComponent(parts.name)}`;
}

export function isLocalHost(host: string | undefined): boolean {
  return !host || host === 'localhost' || host.startsWith('127.') || host === '::1' || host.startsWith('/');
}
