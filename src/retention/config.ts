// Which retention policy applies where: the storage's own policy (storages.<name>.retention),
// else the database's (databases.<key>.retention), else the global one (retention), else the
// default. The most specific layer that sets a keep rule wins whole; the time zone is inherited.
// A configured database is matched to the series of its backups by identity, never by a name.

import { seriesOfConfigured, type Series, type SeriesMatch } from '../catalog/series.js';
import { parseTarget } from '../engines/target.js';
import { safeName } from '../core/id.js';
import type { ConfigFile, DatabaseConfig } from '../config/schema.js';
import { pickPolicy, type RetentionPolicy } from './policy.js';

/** The series a configured database's backups belong to (undefined when its URL does not parse). */
export function seriesOfEntry(entry: DatabaseConfig): Series | undefined {
  try {
    return seriesOfConfigured(parseTarget(entry.url), entry);
  } catch {
    return undefined;
  }
}

export interface ConfiguredSeries {
  key: string;
  entry: DatabaseConfig;
  series: Series;
  /** As the catalog describes a series (for name resolution before any backup exists). */
  match: SeriesMatch;
}

/** Configured databases by series identity. */
export function configuredSeries(config: ConfigFile): Map<string, ConfiguredSeries> {
  const out = new Map<string, ConfiguredSeries>();
  for (const [key, entry] of Object.entries(config.databases)) {
    try {
      const target = parseTarget(entry.url);
      const series = seriesOfConfigured(target, entry);
      out.set(series.identity, { key, entry, series, match: { series, engine: target.engine, database: target.database, url: target.displayUrl } });
    } catch {
      // An entry whose URL does not parse is reported by the command that uses it.
    }
  }
  return out;
}

/** Config keys → the identity of their series (so a config key names a series in every command). */
export function configKeys(config: ConfigFile): Map<string, string> {
  return new Map([...configuredSeries(config).values()].map((c) => [c.key, c.series.identity]));
}

export function policyResolver(config: ConfigFile, storageName: string, override?: RetentionPolicy): (series: Series) => RetentionPolicy {
  const byIdentity = configuredSeries(config);
  const storagePolicy = config.storages[storageName]?.retention;
  return (series) => pickPolicy(override, storagePolicy, byIdentity.get(series.identity)?.entry.retention, config.retention);
}

/** The config entry a person means by `name`: its key, its `name:`, or the database name in its URL. */
export function configEntryNamed(config: ConfigFile, name: string | undefined): DatabaseConfig | undefined {
  if (!name) return undefined;
  if (config.databases[name]) return config.databases[name];
  const hits = [...configuredSeries(config).values()].filter((c) => c.series.name === name || c.match.database === name);
  return hits.length === 1 ? hits[0].entry : undefined;
}

/** The config entry whose backups form the series `identity`. */
export function configEntryOf(config: ConfigFile, identity: string): DatabaseConfig | undefined {
  return configuredSeries(config).get(identity)?.entry;
}

/** The config entry whose backups live in stash folder `folder` (the database part of a backup id). */
export function configEntryInFolder(config: ConfigFile, folder: string | undefined): DatabaseConfig | undefined {
  if (!folder) return undefined;
  const all = [...configuredSeries(config).values()];
  return (all.find((c) => c.series.key === folder) ?? all.find((c) => safeName(c.series.name) === folder))?.entry;
}
