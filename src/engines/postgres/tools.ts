// Locating PostgreSQL client tools. pg_dump must be at least as new as the server; Debian keeps
// one set per major under /usr/lib/postgresql/<major>/bin, so we look there (newest first) before
// PATH, unless the user named a directory.

import { readdir } from 'node:fs/promises';
import { PreflightError } from '../../core/errors.js';
import type { ToolInfo } from '../engine.js';
import { findExecutable, pathDirs, runTool } from '../process.js';

const DEBIAN_ROOT = '/usr/lib/postgresql';

async function debianBinDirs(): Promise<string[]> {
  const majors = await readdir(DEBIAN_ROOT).catch(() => [] as string[]);
  return majors
    .filter((m) => /^\d+$/.test(m))
    .sort((a, b) => Number(b) - Number(a))
    .map((m) => `${DEBIAN_ROOT}/${m}/bin`);
}

export function majorOf(version: string): number {
  return Number(/^(\d+)/.exec(version)?.[1] ?? 0);
}

const versions = new Map<string, Promise<string | undefined>>();

/** The tool's version from `--version`, asked once per process and path. */
function versionOf(path: string): Promise<string | undefined> {
  let version = versions.get(path);
  if (!version) {
    version = runTool(path, ['--version']).then((out) => /\(PostgreSQL\)\s+([\d.]+)/.exec(out.stdout)?.[1]);
    versions.set(path, version);
  }
  return version;
}

/**
 * Finds `name` (pg_dump, pg_restore, pg_dumpall, psql, initdb, …) whose major is at least
 * `minMajor`. Throws a PreflightError that names the package to install.
 */
export async function findPgTool(name: string, minMajor: number, binDir?: string): Promise<ToolInfo> {
  const dirs = binDir ? [binDir] : [...(await debianBinDirs()), ...pathDirs()];
  const seen: string[] = [];
  for (const dir of dirs) {
    const path = await findExecutable(name, [dir]);
    if (!path) continue;
    const version = await versionOf(path);
    if (!version) continue;
    if (majorOf(version) >= minMajor) return { name, version, path };
    seen.push(`${path} (${version})`);
  }
  const pkg = `postgresql-client-${minMajor || 15}`;
  if (seen.length === 0) {
    throw new PreflightError(`[postgres] ${name} not found${binDir ? ` in ${binDir}` : ''}`, {
      hint: `install it (apt-get install ${pkg}) or point --pg-bin-dir at the directory that holds it`,
    });
  }
  throw new PreflightError(`[postgres] ${name} is too old for a PostgreSQL ${minMajor} server: found ${seen.join(', ')}`, {
    hint: `install ${pkg} (apt-get install ${pkg}) or point --pg-bin-dir at a newer ${name}`,
  });
}
