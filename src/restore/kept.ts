// Names of the databases a restore swap works with, and finding the ones kept aside.
//   <name>_restoring_<YYYYMMDD_HHMMSS>  the new copy while it is restored and checked
//   <name>_before_<YYYYMMDD_HHMMSS>     the database that was replaced, kept until someone drops
//                                       it (restore --drop-old drops it at once)
// The stamp uses only lowercase letters, digits and "_" so the names work unquoted in SQL.

import type { Engine, Target } from '../engines/engine.js';

const MAX_NAME = 63; // PostgreSQL's identifier limit; MySQL allows 64.
const KEPT_RE = /^(.+)_before_(\d{8})_(\d{6})$/;
const RESTORING_RE = /^(.+)_restoring_\d{8}_\d{6}$/;

export function stamp(at: Date): string {
  return at.toISOString().replace(/[-:]/g, '').replace('T', '_').slice(0, 15);
}

function withSuffix(name: string, suffix: string): string {
  return name.slice(0, MAX_NAME - suffix.length) + suffix;
}

export function restoringName(name: string, at: Date): string {
  return withSuffix(name, `_restoring_${stamp(at)}`);
}

export function keptName(name: string, at: Date): string {
  return withSuffix(name, `_before_${stamp(at)}`);
}

export interface KeptDatabase {
  /** The kept database's name. */
  name: string;
  /** The database it was replaced as. */
  of: string;
  keptAt: Date;
}

export function parseKeptName(name: string): KeptDatabase | undefined {
  const m = KEPT_RE.exec(name);
  if (!m) return undefined;
  const [d, t] = [m[2], m[3]];
  const keptAt = new Date(`${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}T${t.slice(0, 2)}:${t.slice(2, 4)}:${t.slice(4, 6)}Z`);
  return Number.isNaN(keptAt.getTime()) ? undefined : { name, of: m[1], keptAt };
}

/** Long names were cut to fit the identifier limit, so a full-length kept name may hold a prefix. */
function isKeptOf(kept: KeptDatabase, database: string): boolean {
  return kept.of === database || (kept.name.length === MAX_NAME && database.startsWith(kept.of));
}

/**
 * Whether `name` is the temporary database of a restore into `database`. A name cut to the
 * identifier limit could belong to another database with the same prefix: never taken as ours.
 */
export function isRestoringOf(name: string, database: string): boolean {
  return RESTORING_RE.exec(name)?.[1] === database;
}

/**
 * Databases kept aside by restore swaps on target's server (for `status` and after a restore),
 * oldest first; only those of target's database unless `all`. Empty when the engine cannot list.
 */
export async function keptAside(engine: Engine, target: Target, opts: { all?: boolean } = {}): Promise<KeptDatabase[]> {
  if (!engine.listDatabases) return [];
  const names = await engine.listDatabases(target);
  return names
    .map(parseKeptName)
    .filter((k): k is KeptDatabase => k !== undefined && (opts.all || isKeptOf(k, target.database)))
    .sort((a, b) => a.keptAt.getTime() - b.keptAt.getTime());
}

/** Temporary databases of restores into target that never finished (a killed restore leaves one). */
export async function unfinishedRestores(engine: Engine, target: Target): Promise<string[]> {
  if (!engine.listDatabases) return [];
  return (await engine.listDatabases(target)).filter((name) => isRestoringOf(name, target.database)).sort();
}
