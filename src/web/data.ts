// What the dashboard shows, read from the stash through the catalog (the stash stays the truth):
// per configured database its newest backup, health against its expected age, history and
// verification; per backup its manifest and records. One listing per storage is shared by every
// request for a few seconds and dropped as soon as a job of the dashboard ends.

import { listBackups, type CatalogEntry } from '../catalog/catalog.js';
import { manifestKey } from '../core/id.js';
import { mainArtifact, type Manifest } from '../catalog/manifest.js';
import { latestRecord, type VerifyRecord } from '../catalog/records.js';
import { isSafetyBackup } from '../catalog/series.js';
import type { Destination } from '../backup/backup.js';
import { resolveDestinations } from '../config/resolve.js';
import type { ConfigFile, DatabaseConfig } from '../config/schema.js';
import { maskUrlCredentials } from '../core/secrets.js';
import { expectedMaxAgeMs, parseCron } from '../daemon/cron.js';
import type { ObjectInfo } from '../storage/storage.js';
import { archiveHealth } from '../wal/health.js';
import { seriesOfEntry } from '../retention/config.js';

export type Health = 'fresh' | 'stale' | 'failing' | 'never';

export interface BackupSummary {
  id: string;
  database: string;
  engine: string;
  environment: string;
  finishedAt: string;
  durationMs: number;
  size: number;
  rawSize: number;
  rows: number;
  tables: number;
  degraded: boolean;
  storages: string[];
  verifications: number;
  labels: Record<string, string>;
}

export interface DatabaseSummary {
  name: string;
  engine: string;
  /** The URL without its password. */
  url: string;
  labels: Record<string, string>;
  health: Health;
  /** Why the health is what it is, one line. */
  reason: string;
  newest?: BackupSummary;
  backups: number;
  storedBytes: number;
  maxAgeSeconds?: number;
  lastVerify?: { id: string; result: string; level: string; at: string };
  schedule: Record<string, string>;
  /** When the schedule's next backup is due (the daemon's schedule; none without one). */
  nextBackup?: string;
  /** Physical series with a WAL archive: the recoverable window, and gaps. */
  window?: { from: string; to: string; gaps: string[] };
  /** Stored size of the newest backups, oldest first (the trend). */
  trend: { at: string; size: number }[];
}

export interface Catalog {
  databases(): Promise<DatabaseSummary[]>;
  database(name: string): Promise<{ summary: DatabaseSummary; backups: BackupSummary[] } | undefined>;
  backup(id: string): Promise<{ manifest: Manifest; storages: string[]; records: { key: string; storage: string }[] } | undefined>;
  /** The config key of the database a backup belongs to. */
  databaseOf(manifest: Manifest): string | undefined;
  /** Starts reading the stash now, so the first page need not wait for it. */
  warm(): void;
  /** Drops what is cached: a job changed the stash. */
  invalidate(): void;
  /** The last failed job per database, to tell "failing" apart (set by the job list). */
  lastFailure: Map<string, { at: string; error: string }>;
}

const CACHE_MS = 5_000;

function summarize(e: CatalogEntry, storages: string[]): BackupSummary {
  const m = e.manifest;
  const main = mainArtifact(m);
  return {
    id: m.id,
    database: m.database.name,
    engine: m.engine,
    environment: m.environment,
    finishedAt: m.finishedAt,
    durationMs: m.durationMs,
    size: main.size,
    rawSize: main.rawSize,
    rows: m.tables.reduce((s, t) => s + t.rows, 0),
    tables: m.tables.length,
    degraded: Boolean(m.extra.degraded),
    storages,
    verifications: e.records.filter((k) => /\.verify-[^/]+\.json$/.test(k)).length,
    labels: m.labels,
  };
}

interface StorageListing {
  dest: Destination;
  entries: CatalogEntry[];
  /** The entries per series identity, newest first. */
  bySeries: Map<string, CatalogEntry[]>;
  objects: ObjectInfo[];
}

export function createCatalog(config: ConfigFile): Catalog {
  // The listings of every storage: served while fresh; once older than CACHE_MS, still served
  // while a new listing is read in the background (a big stash takes seconds to list); after a
  // job (invalidate), the next request waits for the new listing, so it shows the job's result.
  let current: { at: number; data: Promise<Map<string, StorageListing>> } | undefined;
  let refreshing: Promise<Map<string, StorageListing>> | undefined;
  const lastFailure = new Map<string, { at: string; error: string }>();

  const destinationsOf = async (entry: DatabaseConfig) => resolveDestinations({}, config, entry);

  // Manifests already read, per storage (by key): a refresh lists the keys and reads only new ones.
  const known = new Map<string, Map<string, CatalogEntry>>();
  const readAll = async (): Promise<Map<string, StorageListing>> => {
    const out = new Map<string, StorageListing>();
    for (const entry of Object.values(config.databases)) {
      for (const dest of await destinationsOf(entry)) {
        if (out.has(dest.storage.url)) continue;
        const listing = await listBackups(dest.storage, undefined, { known: known.get(dest.storage.url) }).catch(() => ({ entries: [] as CatalogEntry[], objects: [] as ObjectInfo[] }));
        known.set(dest.storage.url, new Map(listing.entries.map((e) => [manifestKey(e.id), e])));
        const entries = listing.entries.filter((x) => !isSafetyBackup(x.manifest));
        const bySeries = new Map<string, CatalogEntry[]>();
        for (const e of entries) {
          const list = bySeries.get(e.series.identity);
          if (list) list.push(e);
          else bySeries.set(e.series.identity, [e]);
        }
        out.set(dest.storage.url, { dest, entries, bySeries, objects: listing.objects });
      }
    }
    return out;
  };

  // A listing begun before a job ended may miss its backup: invalidate() starts a new generation,
  // and only a listing of the current generation becomes current.
  let generation = 0;
  const refresh = () => {
    if (!refreshing) {
      const started = Date.now();
      const gen = generation;
      const reading = readAll();
      refreshing = reading;
      reading.then(
        (data) => {
          if (gen === generation) current = { at: started, data: Promise.resolve(data) };
        },
        () => {},
      );
      void reading.finally(() => {
        if (refreshing === reading) refreshing = undefined;
      }).catch(() => {});
    }
    return refreshing;
  };

  const listings = (): Promise<Map<string, StorageListing>> => {
    if (!current) return refresh();
    if (Date.now() - current.at >= CACHE_MS) void refresh();
    return current.data;
  };

  /** A database's backups across its storages, newest first, each once with the storages that hold it. */
  const backupsOf = async (entry: DatabaseConfig) => {
    const identity = seriesOfEntry(entry)?.identity;
    const all = await listings();
    const byId = new Map<string, { entry: CatalogEntry; storages: string[]; dest: Destination }>();
    for (const dest of await destinationsOf(entry)) {
      for (const e of (identity && all.get(dest.storage.url)?.bySeries.get(identity)) || []) {
        const seen = byId.get(e.id);
        if (seen) seen.storages.push(dest.name);
        else byId.set(e.id, { entry: e, storages: [dest.name], dest });
      }
    }
    return [...byId.values()].sort((a, b) => b.entry.manifest.finishedAt.localeCompare(a.entry.manifest.finishedAt));
  };

  const summaryOf = async (name: string, entry: DatabaseConfig): Promise<{ summary: DatabaseSummary; backups: BackupSummary[] }> => {
    const found = await backupsOf(entry);
    const backups = found.map((f) => summarize(f.entry, f.storages));
    const newest = backups[0];
    const maxAgeMs = expectedMaxAgeMs(entry, name);
    let lastVerify: DatabaseSummary['lastVerify'];
    for (const f of found.slice(0, 5)) {
      const record = await latestRecord<VerifyRecord>(f.dest.storage, f.entry.records, 'verify').catch(() => undefined);
      if (record) {
        lastVerify = { id: f.entry.id, result: record.result, level: record.level, at: record.at };
        break;
      }
    }
    const failure = lastFailure.get(name);
    let health: Health;
    let reason: string;
    if (failure && (!newest || failure.at > newest.finishedAt)) {
      health = 'failing';
      reason = `the last backup failed: ${failure.error}`;
    } else if (!newest) {
      health = 'never';
      reason = 'no backup yet';
    } else if (maxAgeMs !== undefined && Date.now() - Date.parse(newest.finishedAt) > maxAgeMs) {
      health = 'stale';
      reason = `the newest backup is older than ${Math.round(maxAgeMs / 3600_000)}h`;
    } else {
      health = 'fresh';
      reason = maxAgeMs !== undefined ? `within ${Math.round(maxAgeMs / 3600_000)}h` : 'backed up (no schedule or maxAge to judge by)';
    }
    const schedule = Object.fromEntries(Object.entries(entry.schedule ?? {}).filter(([k, v]) => k !== 'timezone' && typeof v === 'string')) as Record<string, string>;
    let nextBackup: string | undefined;
    if (entry.schedule?.backup) {
      try {
        const cron = parseCron(entry.schedule.backup, entry.schedule.timezone, `databases.${name}.schedule.backup`);
        nextBackup = cron.nextRun()?.toISOString();
        cron.stop();
      } catch {
        // the daemon reports a bad schedule; the dashboard shows none
      }
    }
    let window: DatabaseSummary['window'];
    if (entry.physical && found.length > 0) {
      const series = seriesOfEntry(entry);
      const all = await listings();
      const first = all.get(found[0].dest.storage.url);
      const health = series && first ? archiveHealth(first.objects, series.key, found.filter((f) => f.dest === found[0].dest).map((f) => f.entry.manifest)) : undefined;
      if (health?.window) window = { ...health.window, gaps: health.gaps };
    }
    return {
      summary: {
        name,
        engine: newest?.engine ?? (seriesOfEntry(entry)?.identity.split(':')[0] ?? 'unknown'),
        url: maskUrlCredentials(entry.url),
        labels: entry.labels ?? {},
        health,
        reason,
        newest,
        backups: backups.length,
        storedBytes: backups.reduce((s, b) => s + b.size * b.storages.length, 0),
        maxAgeSeconds: maxAgeMs !== undefined ? maxAgeMs / 1000 : undefined,
        lastVerify,
        schedule,
        nextBackup,
        window,
        trend: backups
          .slice(0, 30)
          .reverse()
          .map((b) => ({ at: b.finishedAt, size: b.size })),
      },
      backups,
    };
  };

  return {
    lastFailure,
    warm: () => void listings().catch(() => {}),
    invalidate: () => {
      generation++;
      current = undefined;
      refreshing = undefined;
    },
    databaseOf(manifest) {
      const identity = manifest.series?.identity;
      return Object.entries(config.databases).find(([, entry]) => identity !== undefined && seriesOfEntry(entry)?.identity === identity)?.[0];
    },
    async databases() {
      const out: DatabaseSummary[] = [];
      for (const [name, entry] of Object.entries(config.databases)) out.push((await summaryOf(name, entry)).summary);
      return out;
    },
    async database(name) {
      const entry = Object.hasOwn(config.databases, name) ? config.databases[name] : undefined;
      return entry ? summaryOf(name, entry) : undefined;
    },
    async backup(id) {
      const all = await listings();
      let manifest: Manifest | undefined;
      const storages: string[] = [];
      const records: { key: string; storage: string }[] = [];
      for (const { dest, entries } of all.values()) {
        const e = entries.find((x) => x.id === id);
        if (!e) continue;
        manifest ??= e.manifest;
        storages.push(dest.name);
        records.push(...e.records.map((key) => ({ key, storage: dest.name })));
      }
      return manifest ? { manifest, storages, records } : undefined;
    },
  };
}
