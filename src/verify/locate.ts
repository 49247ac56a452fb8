// Which copy of a backup verify and restore read: the first destination (in the order the
// command line or the config gives them) that holds the backup's manifest. Kept in one place so
// that "first intact copy" rules for several storages extend this function only.

import { UsageError } from '../core/errors.js';
import { manifestKey, parseBackupId } from '../core/id.js';
import { listBackups, pickLatest, readManifest } from '../catalog/catalog.js';
import type { Manifest } from '../catalog/manifest.js';
import type { Destination } from '../backup/backup.js';

export interface LocatedBackup {
  dest: Destination;
  manifest: Manifest;
}

export async function locateBackup(destinations: Destination[], id: string): Promise<LocatedBackup> {
  if (!parseBackupId(id)) {
    throw new UsageError(`"${id}" is not a backup id`, { hint: 'ids look like shop_prod_2026-11-23T08-07-00Z; `dbstash list` shows them' });
  }
  for (const dest of destinations) {
    if (await dest.storage.stat(manifestKey(id))) return { dest, manifest: await readManifest(dest.storage, id) };
  }
  // No copy has a manifest: let the first destination say so in readManifest's words.
  return { dest: destinations[0], manifest: await readManifest(destinations[0].storage, id) };
}

/** The newest backup (of a database, at or before a time) over all destinations. */
export async function locateLatest(destinations: Destination[], opts: { database?: string; at?: Date }): Promise<LocatedBackup | undefined> {
  let best: LocatedBackup | undefined;
  for (const dest of destinations) {
    const entry = pickLatest((await listBackups(dest.storage, opts.database)).entries, opts);
    if (entry && (!best || entry.manifest.startedAt > best.manifest.startedAt)) best = { dest, manifest: entry.manifest };
  }
  return best;
}
