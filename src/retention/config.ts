// Which retention policy applies where: the storage's own policy (storages.<name>.retention),
// else the database's (databases.<key>.retention), else the global one (retention), else the
// default. The most specific layer that sets a keep rule wins whole; the time zone is inherited.

import { safeName } from '../core/id.js';
import { parseTarget } from '../engines/target.js';
import type { ConfigFile, DatabaseConfig } from '../config/schema.js';
import { pickPolicy, type RetentionPolicy } from './policy.js';

/** The stash folder a configured database's backups go to (the database part of their ids). */
export function folderOf(entry: DatabaseConfig): string | undefined {
  try {
    return safeName(entry.name ?? parseTarget(entry.url).database);
  } catch {
    return undefined;
  }
}

/** Configured databases by stash folder. */
export function databasesByFolder(config: ConfigFile): Map<string, { key: string; entry: DatabaseConfig }> {
  const out = new Map<string, { key: string; entry: DatabaseConfig }>();
  for (const [key, entry] of Object.entries(config.databases)) {
    const folder = folderOf(entry);
    if (folder) out.set(folder, { key, entry });
  }
  return out;
}

export function policyResolver(config: ConfigFile, storageName: string, override?: RetentionPolicy): (folder: string) => RetentionPolicy {
  const byFolder = databasesByFolder(config);
  const storagePolicy = config.storages[storageName]?.retention;
  return (folder) => pickPolicy(override, storagePolicy, byFolder.get(folder)?.entry.retention, config.retention);
}
