// Locating the MySQL/MariaDB client tools. mariadb-dump and mariadb are preferred; mysqldump and
// mysql (MySQL's own, or MariaDB's compatibility names) are used when they are what is installed.

import { PreflightError } from '../../core/errors.js';
import type { ToolInfo } from '../engine.js';
import { findExecutable, pathDirs, runTool } from '../process.js';

export const DUMP_TOOLS = ['mariadb-dump', 'mysqldump'];
export const CLIENT_TOOLS = ['mariadb', 'mysql'];
export const INSTALL_DB_TOOLS = ['mariadb-install-db', 'mysql_install_db'];
export const SERVER_TOOLS = ['mariadbd', 'mysqld'];

/** "mariadb-dump  Ver 10.19 Distrib 10.11.19-MariaDB, …" → "10.11.19-MariaDB"; "mysqldump  Ver 8.0.36 …" → "8.0.36". */
export function parseToolVersion(text: string): string | undefined {
  return /Distrib\s+([\w.+-]+?),/.exec(text)?.[1] ?? /\bVer\s+([\d.]+[\w.-]*)/.exec(text)?.[1];
}

/** Major and minor of a server or tool version, and whether it is MariaDB. */
export function versionParts(version: string): { major: number; minor: number; mariadb: boolean } {
  const m = /^(\d+)\.(\d+)/.exec(version);
  return { major: Number(m?.[1] ?? 0), minor: Number(m?.[2] ?? 0), mariadb: /mariadb/i.test(version) };
}

/**
 * Lookups this process made in the last minute: the preflight and the dump ask for the same tool
 * within one run; a long-running daemon looks again later (the tool may have been upgraded).
 */
const found = new Map<string, Promise<ToolInfo>>();
const REMEMBER_MS = 60_000;

export function findMyTool(candidates: string[], binDir?: string, extraDirs: string[] = []): Promise<ToolInfo> {
  const key = JSON.stringify([candidates, binDir ?? null, extraDirs]);
  let lookup = found.get(key);
  if (!lookup) {
    lookup = lookUp(candidates, binDir, extraDirs);
    found.set(key, lookup);
    setTimeout(() => found.delete(key), REMEMBER_MS).unref();
    // A tool that was not found may be installed before the next attempt (the daemon runs on).
    lookup.catch(() => found.delete(key));
  }
  return lookup;
}

async function lookUp(candidates: string[], binDir?: string, extraDirs: string[] = []): Promise<ToolInfo> {
  const dirs = binDir ? [binDir] : [...pathDirs(), ...extraDirs];
  for (const name of candidates) {
    const found = await findExecutable(name, dirs);
    if (!found) continue;
    const out = await runTool(found, ['--version']);
    const version = parseToolVersion(out.stdout + out.stderr);
    if (out.code === 0 && version) return { name, version, path: found };
  }
  throw new PreflightError(`[mysql] ${candidates.join(' or ')} not found${binDir ? ` in ${binDir}` : ''}`, {
    hint: `install the client tools (apt-get install mariadb-client) or point --bin-dir at the directory that holds them`,
  });
}
