// What the dashboard shows: per configured database its newest backup, health against its
// expected age, history, calendar and verification; per backup its manifest and records. The
// pages read the index (index-store.ts), never the stash itself; scans keep the index up to date:
// the first build of a storage (requests wait for it), the database of each job that ends
// (requests wait for it, so a job's result shows at once), and a rescan of every storage at start
// and every `dashboard.rescan` for backups made elsewhere (requests do not wait for those).

import { backupIdOfKey, READ_AHEAD, readListedManifest, RECORD_RE } from '../catalog/catalog.js';
import type { Manifest } from '../catalog/manifest.js';
import { readRecord, type VerifyRecord } from '../catalog/records.js';
import type { Destination } from '../backup/backup.js';
import { resolveDestinations } from '../config/resolve.js';
import type { ConfigFile, DatabaseConfig } from '../config/schema.js';
import { MANIFEST_SUFFIX, parseBackupId } from '../core/id.js';
import { eachLimited } from '../core/limit.js';
import { maskUrlCredentials } from '../core/secrets.js';
import { expectedMaxAgeMs, parseCron } from '../daemon/cron.js';
import type { ObjectInfo } from '../storage/storage.js';
import { archiveHealth } from '../wal/health.js';
import { seriesOfEntry } from '../retention/config.js';
import { CatalogIndex, type IndexedRecord, type IndexedSummary } from './index-store.js';

export type Health = 'fresh' | 'stale' | 'failing' | 'never';

/** A backup as the pages show it: its indexed figures, once, with every storage that holds it. */
export interface BackupSummary extends Omit<IndexedSummary, 'storage'> {
  storages: string[];
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
  /** The same per destination (by name), every destination of the database listed. */
  storedByDestination: Record<string, number>;
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


/** One day of a database's calendar: backups that finished, and backup runs that failed. */
export interface CalendarDay {
  day: string;
  ok: number;
  failed: number;
}

export interface Catalog {
  databases(): Promise<DatabaseSummary[]>;
  database(name: string): Promise<{ summary: DatabaseSummary; backups: BackupSummary[]; calendar: CalendarDay[] } | undefined>;
  backup(id: string): Promise<{ manifest: Manifest; storages: string[]; records: { key: string; storage: string }[] } | undefined>;
  /** The config key of the database a backup belongs to. */
  databaseOf(manifest: Manifest): string | undefined;
  /** Builds what is missing from the index, then keeps rescanning the stash every `rescanMs`. */
  start(): void;
  /** A job changed a database's backups: its folders are scanned again before the next page. */
  changed(database: string): void;
  /** Scans every storage now (and waits for it). */
  rescan(): Promise<void>;
  /** The index: the pages' data, and the runs of jobs. */
  readonly index: CatalogIndex;
  close(): void;
}

/** Weeks of history the calendar shows. */
export const CALENDAR_WEEKS = 12;

function summarize(s: IndexedSummary, storages: string[]): BackupSummary {
  const { storage: _storage, ...rest } = s;
  return { ...rest, storages };
}

export function createCatalog(config: ConfigFile, opts: { index?: CatalogIndex; rescanMs?: number; warn?: (message: string) => void } = {}): Catalog {
  const index = opts.index ?? CatalogIndex.open(undefined);
  const warn = opts.warn ?? (() => {});
  // Each database's destinations, resolved once (the storages they open are reused).
  const resolved = new Map<DatabaseConfig, Promise<Destination[]>>();
  const destinationsOf = (entry: DatabaseConfig) => {
    let found = resolved.get(entry);
    if (!found) {
      found = resolveDestinations({}, config, entry);
      resolved.set(entry, found);
      found.catch(() => resolved.delete(entry));
    }
    return found;
  };

  // Every storage of the config once (by URL), with the name of its first destination.
  let storagesRead: Promise<Map<string, Destination>> | undefined;
  const storages = () =>
    (storagesRead ??= (async () => {
      const out = new Map<string, Destination>();
      for (const entry of Object.values(config.databases)) for (const dest of await destinationsOf(entry)) if (!out.has(dest.storage.url)) out.set(dest.storage.url, dest);
      return out;
    })());

  // Scans of one storage run one after another: a whole scan computes what is gone from the
  // index as it was before it listed, which a scan running beside it would change.
  const chains = new Map<string, Promise<void>>();
  const queue = (url: string, scan: () => Promise<void>): Promise<void> => {
    const next = (chains.get(url) ?? Promise.resolve()).then(scan, scan);
    chains.set(url, next.catch(() => {}));
    return next;
  };

  /** Brings the index up to date with one storage, under `prefix` ('' for all of it). */
  const scan = async (dest: Destination, prefix: string): Promise<void> => {
    const url = dest.storage.url;
    const objects = await dest.storage.list(prefix);
    const present = objects.filter((o) => o.key.endsWith(MANIFEST_SUFFIX) && parseBackupId(backupIdOfKey(o.key)));
    const have = index.manifestKeys(url, prefix);
    const presentKeys = new Set(present.map((o) => o.key));
    const added: { key: string; manifest: Manifest }[] = [];
    const problems: { key: string; message: string }[] = [];
    await eachLimited(
      present.filter((o) => !have.has(o.key)),
      READ_AHEAD,
      async (o) => {
        try {
          added.push({ key: o.key, manifest: await readListedManifest(dest.storage, o.key) });
        } catch (err) {
          problems.push({ key: o.key, message: (err as Error).message });
        }
      },
    );
    const records = objects.filter((o) => RECORD_RE.test(o.key.split('/').pop() ?? ''));
    const haveRecords = index.recordKeys(url, prefix);
    const recordKeys = new Set(records.map((o) => o.key));
    const addedRecords: IndexedRecord[] = [];
    await eachLimited(
      records.filter((o) => !haveRecords.has(o.key)),
      READ_AHEAD,
      async (o) => {
        const [, backupId, kind] = RECORD_RE.exec(o.key.split('/').pop()!)!;
        let body: unknown;
        if (kind === 'verify') {
          // What the pages show of a drill; its per-table details stay in the stash.
          const r = await readRecord<VerifyRecord>(dest.storage, o.key).catch(() => undefined);
          if (r) body = { result: r.result, level: r.level, at: r.at, ...(r.error ? { error: r.error } : {}) };
        }
        addedRecords.push({ key: o.key, backupId, kind, body });
      },
    );
    index.apply(url, {
      added,
      removed: [...have].filter((k) => !presentKeys.has(k)),
      addedRecords,
      removedRecords: [...haveRecords].filter((k) => !recordKeys.has(k)),
      whole: prefix === '' ? { at: new Date().toISOString(), problems } : undefined,
    });
    if (problems.length > 0) warn(`the dashboard could not read ${problems.length} manifest(s) in ${url}: ${problems[0].key}: ${problems[0].message}`);
    // The WAL window of physical series kept in this storage.
    for (const entry of Object.values(config.databases)) {
      if (!entry.physical) continue;
      const series = seriesOfEntry(entry);
      if (!series || (prefix !== '' && prefix !== `${series.key}/`)) continue;
      if (!(await destinationsOf(entry)).some((d) => d.storage.url === url)) continue;
      const health = archiveHealth(objects as ObjectInfo[], series.key, index.manifestsOf(url, series.identity));
      index.setWindow(url, series.identity, health?.window ? { ...health.window, gaps: health.gaps } : undefined);
    }
  };

  // Scans the pages wait for: the first build of a storage, and the database of a job that ended.
  const awaited = new Set<Promise<void>>();
  const wait = (p: Promise<void>) => {
    const settled = p.catch((err: Error) => warn(`the dashboard could not scan the stash: ${err.message}`));
    awaited.add(settled);
    void settled.finally(() => awaited.delete(settled));
  };
  // The first question builds what is missing (start() is idempotent).
  const ready = async () => {
    start();
    while (awaited.size > 0) await Promise.all([...awaited]);
  };

  /**
   * Scans every storage once. The pages wait for a storage never scanned (its first build, and
   * until each scan is queued), not for a rescan of one already built.
   */
  const scanAll = (): Promise<void> => {
    const queued = storages().then((all) =>
      [...all].map(([url, dest]) => {
        const p = queue(url, () => scan(dest, ''));
        if (index.scannedAt(url) !== undefined) return p.catch((err: Error) => warn(`the dashboard could not scan ${url}: ${err.message}`));
        wait(p); // says why it failed
        return p.catch(() => {});
      }),
    );
    wait(queued.then(() => {}));
    return queued.then((scans) => Promise.all(scans)).then(() => {});
  };

  let timer: NodeJS.Timeout | undefined;
  let started = false;
  // At start: the storages never scanned are built (pages wait for them), the others scanned
  // again in the background, for backups made while the dashboard was not running.
  const start = () => {
    if (started) return;
    started = true;
    void scanAll();
    if (opts.rescanMs && opts.rescanMs > 0) {
      timer = setInterval(() => void scanAll(), opts.rescanMs);
      timer.unref();
    }
  };

  /** A database's backups across its storages, newest first, each once with the storages that hold it. */
  const backupsOf = async (entry: DatabaseConfig, limit?: number) => {
    const identity = seriesOfEntry(entry)?.identity;
    const dests = await destinationsOf(entry);
    const names = new Map(dests.map((d) => [d.storage.url, d.name]));
    if (!identity) return { dests, identity, list: [] as BackupSummary[] };
    const byId = new Map<string, { s: IndexedSummary; storages: string[] }>();
    // A backup in two storages is two rows: ask for twice the limit so none is cut short.
    for (const s of index.summaries(identity, [...names.keys()], { limit: limit ? limit * names.size : undefined })) {
      const seen = byId.get(s.id);
      if (seen) seen.storages.push(names.get(s.storage)!);
      else byId.set(s.id, { s, storages: [names.get(s.storage)!] });
    }
    const list = [...byId.values()].map(({ s, storages: st }) => summarize(s, st));
    return { dests, identity, list: limit ? list.slice(0, limit) : list };
  };

  const TREND = 30;
  const summaryOf = async (name: string, entry: DatabaseConfig, all: boolean): Promise<{ summary: DatabaseSummary; backups: BackupSummary[] }> => {
    await ready();
    const { dests, identity, list } = await backupsOf(entry, all ? undefined : TREND);
    const urls = dests.map((d) => d.storage.url);
    const totals = identity ? index.totals(identity, urls) : { backups: 0, storedBytes: 0 };
    const perStorage = identity ? index.bytesByStorage(identity, urls) : new Map<string, number>();
    const storedByDestination = Object.fromEntries(dests.map((d) => [d.name, perStorage.get(d.storage.url) ?? 0]));
    const newest = list[0];
    const maxAgeMs = expectedMaxAgeMs(entry, name);
    let lastVerify: DatabaseSummary['lastVerify'];
    const verified = index.lastVerify(list.slice(0, 5).map((b) => b.id));
    if (verified) {
      const r = verified.body as { result: string; level: string; at: string };
      lastVerify = { id: verified.backupId, result: r.result, level: r.level, at: r.at };
    }
    const lastRun = index.lastRun(name, 'backup');
    let health: Health;
    let reason: string;
    if (lastRun?.state === 'failed' && (!newest || (lastRun.finishedAt ?? lastRun.startedAt) > newest.finishedAt)) {
      health = 'failing';
      reason = `the last backup failed: ${lastRun.error ?? 'no reason recorded'}`;
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
    if (entry.physical && identity) {
      for (const url of urls) {
        window = index.window<NonNullable<DatabaseSummary['window']>>(url, identity);
        if (window) break;
      }
    }
    return {
      summary: {
        name,
        engine: newest?.engine ?? (identity?.split(':')[0] ?? 'unknown'),
        url: maskUrlCredentials(entry.url),
        labels: entry.labels ?? {},
        health,
        reason,
        newest,
        backups: totals.backups,
        storedBytes: totals.storedBytes,
        storedByDestination,
        maxAgeSeconds: maxAgeMs !== undefined ? maxAgeMs / 1000 : undefined,
        lastVerify,
        schedule,
        nextBackup,
        window,
        trend: list
          .slice(0, TREND)
          .reverse()
          .map((b) => ({ at: b.finishedAt, size: b.size })),
      },
      backups: list,
    };
  };

  const calendarOf = async (name: string, entry: DatabaseConfig): Promise<CalendarDay[]> => {
    const identity = seriesOfEntry(entry)?.identity;
    const urls = (await destinationsOf(entry)).map((d) => d.storage.url);
    // Whole weeks, Monday first, ending with the current one.
    const today = new Date();
    const end = new Date(Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate()));
    const monday = new Date(end.getTime() - ((end.getUTCDay() + 6) % 7) * 86_400_000);
    const first = new Date(monday.getTime() - (CALENDAR_WEEKS - 1) * 7 * 86_400_000);
    const from = first.toISOString().slice(0, 10);
    const ok = identity ? index.successesByDay(identity, urls, from) : new Map<string, number>();
    const failed = index.failuresByDay(name, 'backup', from);
    const days: CalendarDay[] = [];
    for (let t = first.getTime(); t <= end.getTime(); t += 86_400_000) {
      const day = new Date(t).toISOString().slice(0, 10);
      days.push({ day, ok: ok.get(day) ?? 0, failed: failed.get(day) ?? 0 });
    }
    return days;
  };

  return {
    index,
    start,
    rescan: scanAll,
    changed(database) {
      const entry = Object.hasOwn(config.databases, database) ? config.databases[database] : undefined;
      const series = entry && seriesOfEntry(entry);
      if (!entry || !series) return;
      wait(
        (async () => {
          for (const dest of await destinationsOf(entry)) await queue(dest.storage.url, () => scan(dest, `${series.key}/`));
        })(),
      );
    },
    close() {
      if (timer) clearInterval(timer);
      index.close();
    },
    databaseOf(manifest) {
      const identity = manifest.series?.identity;
      return Object.entries(config.databases).find(([, entry]) => identity !== undefined && seriesOfEntry(entry)?.identity === identity)?.[0];
    },
    async databases() {
      const out: DatabaseSummary[] = [];
      for (const [name, entry] of Object.entries(config.databases)) out.push((await summaryOf(name, entry, false)).summary);
      return out;
    },
    async database(name) {
      const entry = Object.hasOwn(config.databases, name) ? config.databases[name] : undefined;
      if (!entry) return undefined;
      return { ...(await summaryOf(name, entry, true)), calendar: await calendarOf(name, entry) };
    },
    async backup(id) {
      await ready();
      const dests = await storages();
      const copies = index.backup(id);
      if (copies.length === 0) return undefined;
      return {
        manifest: copies[0].manifest,
        storages: copies.map((c) => dests.get(c.storage)?.name ?? c.storage),
        records: copies.flatMap((c) => c.records.map((key) => ({ key, storage: dests.get(c.storage)?.name ?? c.storage }))),
      };
    },
  };
}
