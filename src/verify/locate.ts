// Which copy of a backup verify and restore read: the first destination (in the order the
// command line or the config gives them) holding an intact copy — its manifest reads, its
// signature checks when a verify key is configured, and every artifact is there with the size the
// manifest gives. When no copy is intact, the first readable one is returned so that verify and
// restore report exactly what is broken; a bad signature is never passed over silently.

import { IntegrityError, UsageError } from '../core/errors.js';
import { artifactKey, manifestKey, parseBackupId } from '../core/id.js';
import { readCheckedManifest, type ManifestVerifier } from '../crypto/sign.js';
import { listBackups, pickLatest, readManifest } from '../catalog/catalog.js';
import type { Manifest } from '../catalog/manifest.js';
import type { Destination } from '../backup/backup.js';
import type { Storage } from '../storage/storage.js';

export interface LocatedBackup {
  dest: Destination;
  manifest: Manifest;
}

export interface LocateOptions {
  /** Require manifests signed by this key (unsigned ones only with allowUnsigned). */
  verifier?: ManifestVerifier;
  allowUnsigned?: boolean;
  warn?: (message: string) => void;
  info?: (message: string) => void;
}

async function readCopy(dest: Destination, id: string, opts: LocateOptions): Promise<LocatedBackup> {
  const { manifest, signature } = await readCheckedManifest(dest.storage, id, opts.verifier, opts);
  if (signature === 'unsigned') opts.warn?.(`backup ${id} in ${dest.storage.url} is unsigned (accepted: --allow-unsigned)`);
  if (signature === 'valid') opts.info?.(`manifest of ${id} signed by key ${opts.verifier!.keyId}: signature good`);
  return { dest, manifest };
}

/** Why a stored backup is not whole — an artifact missing, or not of the manifest's size — or undefined. */
export async function artifactDamage(storage: Storage, manifest: Manifest, signal?: AbortSignal): Promise<string | undefined> {
  for (const artifact of manifest.artifacts) {
    const info = await storage.stat(artifactKey(manifest.id, artifact.file), { signal });
    if (!info) return `artifact ${artifact.file} is missing`;
    if (info.size !== artifact.size) return `artifact ${artifact.file} is ${info.size} bytes, manifest says ${artifact.size}`;
  }
  return undefined;
}

export async function locateBackup(destinations: Destination[], id: string, opts: LocateOptions = {}): Promise<LocatedBackup> {
  if (!parseBackupId(id)) {
    throw new UsageError(`"${id}" is not a backup id`, { hint: 'ids look like shop_prod_2026-11-23T08-07-00Z; `dbstash list` shows them' });
  }
  let damaged: LocatedBackup | undefined;
  let refused: unknown;
  for (const dest of destinations) {
    if (!(await dest.storage.stat(manifestKey(id)))) continue;
    let copy: LocatedBackup;
    try {
      copy = await readCopy(dest, id, opts);
    } catch (err) {
      if (!(err instanceof IntegrityError) || destinations.length === 1) throw err;
      opts.warn?.(`${dest.storage.url}: ${err.message}; trying the next storage`);
      refused ??= err;
      continue;
    }
    const problem = await artifactDamage(copy.dest.storage, copy.manifest);
    if (!problem) return copy;
    if (destinations.length > 1) opts.warn?.(`${dest.storage.url}: ${problem}; trying the next storage`);
    damaged ??= copy;
  }
  if (damaged) return damaged;
  if (refused) throw refused;
  // No copy has a manifest: let the first destination say so in readManifest's words.
  return { dest: destinations[0], manifest: await readManifest(destinations[0].storage, id) };
}

/** The newest backup (of one series, at or before a time) over all destinations, from its first intact copy. */
export async function locateLatest(
  destinations: Destination[],
  filter: { identity?: string; at?: Date },
  opts: LocateOptions = {},
): Promise<LocatedBackup | undefined> {
  let best: Manifest | undefined;
  for (const dest of destinations) {
    const entry = pickLatest((await listBackups(dest.storage)).entries, filter);
    if (entry && (!best || entry.manifest.startedAt > best.startedAt)) best = entry.manifest;
  }
  return best ? locateBackup(destinations, best.id, opts) : undefined;
}
