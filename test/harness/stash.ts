// Where a series' files are in a local stash, for tests that look at the files themselves.
// A series' folder is "<name>.<8 hex digits>" (src/catalog/series.ts); backups made before series
// live in "<name>". Tests name the series as people do and let these find the folder.

import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseBackupId } from '../../src/core/id.js';
import { seriesOf } from '../../src/catalog/series.js';
import { parseTarget } from '../../src/engines/target.js';

const SERIES_DIR = /^(.+)\.[0-9a-f]{8}$/;

/** The folder of the one series called `name` in `stash` (the path it would have when none exists yet). */
export function seriesDir(stash: string, name: string): string {
  const found = existsSync(stash) ? readdirSync(stash).filter((d) => d === name || SERIES_DIR.exec(d)?.[1] === name) : [];
  if (found.length > 1) throw new Error(`[harness/stash] several series called ${name} in ${stash}: ${found.join(', ')}`);
  return path.join(stash, found[0] ?? name);
}

/** The folder (key prefix) of a backup id: the database part of the id. */
export function folderOf(id: string): string {
  const parsed = parseBackupId(id);
  if (!parsed) throw new Error(`[harness/stash] not a backup id: ${id}`);
  return parsed.database;
}

/** Leaves out the files a stash keeps per series (series.json) from a listing of keys or names. */
export function withoutSeriesFiles(keys: string[]): string[] {
  return keys.filter((k) => !k.endsWith('series.json'));
}

/** The folder in `stash` where backups of the database at `url` (a URL or SQLite path) go. */
export function folderFor(stash: string, url: string, label?: string): string {
  return path.join(stash, seriesOf(parseTarget(url), label).key);
}

/** Places a lock in a local stash folder as a run of dbstash would hold it (for lock scenarios). */
export function writeLock(folder: string, info: { owner: string; pid: number; host: string; startedAt: string; command: string }): string {
  const dir = path.join(folder, 'locks');
  mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${info.startedAt.replace(/[-:.]/g, '')}-${randomBytes(8).toString('hex')}.lock`);
  writeFileSync(file, JSON.stringify(info));
  return file;
}
