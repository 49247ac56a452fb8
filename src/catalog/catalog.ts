// The catalog: what backups a storage holds, learned from their manifests alone. A key without
// a manifest beside it is not a backup (it may be a crashed run's leftover, which prune removes).

import { IntegrityError } from '../core/errors.js';
import { MANIFEST_SUFFIX, manifestKey, parseBackupId, RECORD_RE } from '../core/id.js';
import { eachLimited } from '../core/limit.js';
import { getBytes, readAll, type ObjectInfo, type Storage } from '../storage/storage.js';
import type { Manifest } from './manifest.js';
import { parseManifest } from './manifest-schema.js';
import { isSafetyBackup, seriesOfManifest, type Series, type SeriesMatch } from './series.js';

export interface CatalogEntry {
  id: string;
  manifest: Manifest;
  /** The series it belongs to (recorded, or worked out for backups made before series). */
  series: Series;
  /** Keys of records kept beside the backup (verify-…, restore-…, export-…), oldest first. */
  records: string[];
}

export interface CatalogListing {
  entries: CatalogEntry[];
  /** Manifests that could not be read; listed so that damage is never silent. */
  problems: { key: string; message: string }[];
  /** Every object in the listed prefix (for prune and status). */
  objects: ObjectInfo[];
}

export { RECORD_RE };
/** Manifests read at once while listing. */
export const READ_AHEAD = 32;

/** The backup id a manifest key names. */
export function backupIdOfKey(key: string): string {
  return (key.split('/').pop() ?? '').slice(0, -MANIFEST_SUFFIX.length);
}

/** Reads and checks a manifest found by a listing: it must describe the backup its key names. */
export async function readListedManifest(storage: Storage, key: string, signal?: AbortSignal): Promise<Manifest> {
  const manifest = parseManifest(await readAll(await storage.get(key, { signal })), key);
  const id = backupIdOfKey(key);
  if (manifest.id !== id) throw new IntegrityError(`manifest ${key} describes another backup (${manifest.id})`);
  return manifest;
}

/**
 * Every backup of a storage (or of one folder), newest first. `known` (manifest key → entry, from
 * an earlier listing) spares reading manifests already read: a published manifest never changes
 * (a new backup is a new key), so a refresh reads only the new ones.
 */
export async function listBackups(storage: Storage, database?: string, opts: { signal?: AbortSignal; known?: Map<string, CatalogEntry> } = {}): Promise<CatalogListing> {
  const objects = await storage.list(database ? `${database}/` : '', opts);
  const records = new Map<string, string[]>();
  for (const obj of objects) {
    const m = RECORD_RE.exec(obj.key.split('/').pop() ?? '');
    if (m) records.set(m[1], [...(records.get(m[1]) ?? []), obj.key]);
  }
  const entries: CatalogEntry[] = [];
  const problems: CatalogListing['problems'] = [];
  const manifests = objects.filter((o) => o.key.endsWith(MANIFEST_SUFFIX) && parseBackupId(backupIdOfKey(o.key)));
  await eachLimited(manifests, READ_AHEAD, async (obj) => {
    const id = backupIdOfKey(obj.key);
    const seen = opts.known?.get(obj.key);
    if (seen) {
      entries.push({ ...seen, records: (records.get(id) ?? []).sort() });
      return;
    }
    try {
      const manifest = await readListedManifest(storage, obj.key, opts.signal);
      entries.push({ id, manifest, series: seriesOfManifest(manifest), records: (records.get(id) ?? []).sort() });
    } catch (err) {
      problems.push({ key: obj.key, message: (err as Error).message });
    }
  });
  entries.sort((a, b) => b.manifest.startedAt.localeCompare(a.manifest.startedAt) || b.id.localeCompare(a.id));
  return { entries, problems, objects };
}

/** Reads one backup's manifest; IntegrityError when it is missing, unreadable or not this backup's. */
export async function readManifest(storage: Storage, id: string): Promise<Manifest> {
  const key = manifestKey(id);
  let bytes: Buffer;
  try {
    bytes = await getBytes(storage, key);
  } catch (err) {
    if ((err as { reason?: string }).reason === 'not-found') {
      throw new IntegrityError(`backup ${id} has no manifest in ${storage.url}`, {
        hint: 'run `dbstash list` to see the backups this stash holds; an artifact without a manifest is an unfinished backup',
      });
    }
    throw err;
  }
  const manifest = parseManifest(bytes, key);
  if (manifest.id !== id) throw new IntegrityError(`manifest ${key} describes another backup (${manifest.id})`);
  return manifest;
}

/**
 * The newest backup of one series (by identity), at or before a time, or undefined. Safety
 * backups taken by restores are never "latest".
 */
export function pickLatest(entries: CatalogEntry[], opts: { identity?: string; at?: Date } = {}): CatalogEntry | undefined {
  return entries.find(
    (e) =>
      !isSafetyBackup(e.manifest) &&
      (!opts.identity || e.series.identity === opts.identity) &&
      (!opts.at || new Date(e.manifest.startedAt).getTime() <= opts.at.getTime()),
  );
}

/** The series the entries belong to, one each, described by their newest backup. */
export function seriesIn(entries: CatalogEntry[]): SeriesMatch[] {
  const out = new Map<string, SeriesMatch>();
  for (const e of entries) {
    if (out.has(e.series.identity)) continue;
    out.set(e.series.identity, { series: e.series, engine: e.manifest.engine, database: e.manifest.database.name, url: e.manifest.database.url });
  }
  return [...out.values()];
}
