// The dashboard's index of the catalog: one embedded SQLite file (better-sqlite3) that holds, per
// storage, every backup's manifest with the figures the pages show, the records kept beside the
// backups, the WAL window of physical series, and the runs of jobs (successes and failures, so a
// failed run that left no backup still shows). The pages read it and never list the stash on a
// request; scans of the stash (at start, after each job for its database, and every so often for
// backups made elsewhere) bring it up to date. It is a cache: the stash stays the truth, and a
// missing, unreadable or older-format index is rebuilt from the manifests.

import { mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import { mainArtifact, type Manifest } from '../catalog/manifest.js';
import { isSafetyBackup, seriesOfManifest } from '../catalog/series.js';

/** Bumped when the tables change: an index of another version is dropped and rebuilt. */
const SCHEMA_VERSION = 1;

export interface IndexedSummary {
  id: string;
  storage: string;
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
  labels: Record<string, string>;
  verifications: number;
}

export interface IndexedRecord {
  key: string;
  backupId: string;
  kind: string;
  /** The record itself (verification records only: the pages show their result). */
  body?: unknown;
}

/** A job's run: the columns the index is asked by; the whole record is kept as it was given. */
export interface RunRow {
  id: string;
  database: string;
  kind: string;
  state: string;
  startedAt: string;
  finishedAt?: string;
  error?: string;
}

const TABLES = `
CREATE TABLE meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
CREATE TABLE backups (
  storage TEXT NOT NULL, key TEXT NOT NULL, id TEXT NOT NULL, identity TEXT NOT NULL,
  safety INTEGER NOT NULL, database TEXT NOT NULL, engine TEXT NOT NULL, environment TEXT NOT NULL,
  started_at TEXT NOT NULL, finished_at TEXT NOT NULL, duration_ms INTEGER NOT NULL,
  size INTEGER NOT NULL, raw_size INTEGER NOT NULL, rows INTEGER NOT NULL, tables INTEGER NOT NULL,
  degraded INTEGER NOT NULL, labels TEXT NOT NULL, manifest TEXT NOT NULL,
  PRIMARY KEY (storage, key));
CREATE INDEX backups_series ON backups (identity, safety, finished_at);
CREATE INDEX backups_id ON backups (id);
CREATE INDEX backups_totals ON backups (identity, safety, storage, id, size);
CREATE TABLE records (storage TEXT NOT NULL, key TEXT NOT NULL, backup_id TEXT NOT NULL, kind TEXT NOT NULL, body TEXT, PRIMARY KEY (storage, key));
CREATE INDEX records_backup ON records (backup_id, kind);
CREATE TABLE windows (storage TEXT NOT NULL, identity TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (storage, identity));
CREATE TABLE scans (storage TEXT PRIMARY KEY, at TEXT NOT NULL, problems TEXT NOT NULL);
CREATE TABLE runs (
  id TEXT PRIMARY KEY, database TEXT NOT NULL, kind TEXT NOT NULL, state TEXT NOT NULL,
  started_at TEXT NOT NULL, finished_at TEXT, error TEXT, body TEXT NOT NULL);
CREATE INDEX runs_database ON runs (database, kind, started_at);
CREATE INDEX runs_started ON runs (started_at);
CREATE TABLE audit (n INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, body TEXT NOT NULL);
`;

const SUMMARY_COLUMNS = `b.id, b.storage, b.database, b.engine, b.environment, b.finished_at AS finishedAt, b.duration_ms AS durationMs,
  b.size, b.raw_size AS rawSize, b.rows, b.tables, b.degraded, b.labels,
  (SELECT COUNT(*) FROM records r WHERE r.storage = b.storage AND r.backup_id = b.id AND r.kind = 'verify') AS verifications`;

type SummaryRow = Omit<IndexedSummary, 'degraded' | 'labels'> & { degraded: number; labels: string };

const toSummary = (r: SummaryRow): IndexedSummary => ({ ...r, degraded: r.degraded === 1, labels: JSON.parse(r.labels) as Record<string, string> });

/** `?, ?, ?` for a list of n. */
const marks = (n: number) => Array.from({ length: n }, () => '?').join(', ');

export class CatalogIndex {
  private constructor(
    readonly db: Database.Database,
    /** Where it lives, or undefined when it is kept in memory. */
    readonly file: string | undefined,
  ) {}

  /**
   * Opens (or creates) the index at `file`. One that cannot be opened or is of another version is
   * dropped and rebuilt; one that cannot be written at all is kept in memory instead (`warn` says
   * so), and the dashboard still works, rebuilding it at each start.
   */
  static open(file: string | undefined, warn: (message: string) => void = () => {}): CatalogIndex {
    if (file) {
      for (let attempt = 0; attempt < 2; attempt++) {
        let db: Database.Database | undefined;
        try {
          mkdirSync(path.dirname(file), { recursive: true });
          db = new Database(file, { fileMustExist: false });
          db.pragma('journal_mode = WAL');
          db.pragma('busy_timeout = 5000');
          db.pragma('synchronous = NORMAL');
          const index = new CatalogIndex(db, file);
          if (index.prepare()) return index;
          db.close();
          db = undefined;
          throw new Error('of another version');
        } catch (err) {
          db?.close();
          if (attempt === 0) {
            // Unreadable or of another version: it is only a cache, so start it again.
            for (const f of [file, `${file}-wal`, `${file}-shm`]) rmSync(f, { force: true });
            continue;
          }
          warn(`the dashboard's index cannot be kept in ${file} (${(err as Error).message}); it is kept in memory and rebuilt at each start`);
        }
      }
    }
    const db = new Database(':memory:');
    const index = new CatalogIndex(db, undefined);
    index.prepare();
    return index;
  }

  /** Creates the tables of a new index; false when the file holds an index of another version. */
  private prepare(): boolean {
    const hasMeta = this.db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'meta'`).get();
    if (!hasMeta) {
      const tables = this.db.prepare(`SELECT COUNT(*) AS n FROM sqlite_master WHERE type = 'table'`).get() as { n: number };
      if (tables.n > 0) return false;
      this.db.exec(TABLES);
      this.db.prepare(`INSERT INTO meta (k, v) VALUES ('version', ?)`).run(String(SCHEMA_VERSION));
      return true;
    }
    const row = this.db.prepare(`SELECT v FROM meta WHERE k = 'version'`).get() as { v: string } | undefined;
    return row?.v === String(SCHEMA_VERSION);
  }

  close(): void {
    this.db.close();
  }

  /** When the storage was last scanned whole, or undefined when never (the index must be built). */
  scannedAt(storage: string): string | undefined {
    return (this.db.prepare(`SELECT at FROM scans WHERE storage = ?`).get(storage) as { at: string } | undefined)?.at;
  }

  /** Manifest keys indexed for a storage under a prefix ('' for all). */
  manifestKeys(storage: string, prefix: string): Set<string> {
    const rows = this.db.prepare(`SELECT key FROM backups WHERE storage = ? AND substr(key, 1, ?) = ?`).pluck().all(storage, prefix.length, prefix) as string[];
    return new Set(rows);
  }

  recordKeys(storage: string, prefix: string): Set<string> {
    const rows = this.db.prepare(`SELECT key FROM records WHERE storage = ? AND substr(key, 1, ?) = ?`).pluck().all(storage, prefix.length, prefix) as string[];
    return new Set(rows);
  }

  /** One scan's changes, in one transaction: the pages never see half of them. */
  apply(
    storage: string,
    change: {
      added: { key: string; manifest: Manifest }[];
      removed: string[];
      addedRecords: IndexedRecord[];
      removedRecords: string[];
      /** A whole-storage scan: remembered with its problems (unreadable manifests). */
      whole?: { at: string; problems: { key: string; message: string }[] };
    },
  ): void {
    const insert = this.db.prepare(
      `INSERT OR REPLACE INTO backups (storage, key, id, identity, safety, database, engine, environment, started_at, finished_at, duration_ms, size, raw_size, rows, tables, degraded, labels, manifest)
       VALUES (@storage, @key, @id, @identity, @safety, @database, @engine, @environment, @startedAt, @finishedAt, @durationMs, @size, @rawSize, @rows, @tables, @degraded, @labels, @manifest)`,
    );
    const remove = this.db.prepare(`DELETE FROM backups WHERE storage = ? AND key = ?`);
    const insertRecord = this.db.prepare(`INSERT OR REPLACE INTO records (storage, key, backup_id, kind, body) VALUES (?, ?, ?, ?, ?)`);
    const removeRecord = this.db.prepare(`DELETE FROM records WHERE storage = ? AND key = ?`);
    this.db.transaction(() => {
      for (const { key, manifest: m } of change.added) {
        const main = mainArtifact(m);
        insert.run({
          storage,
          key,
          id: m.id,
          identity: seriesOfManifest(m).identity,
          safety: isSafetyBackup(m) ? 1 : 0,
          database: m.database.name,
          engine: m.engine,
          environment: m.environment,
          startedAt: m.startedAt,
          finishedAt: m.finishedAt,
          durationMs: m.durationMs,
          size: main.size,
          rawSize: main.rawSize,
          rows: m.tables.reduce((s, t) => s + t.rows, 0),
          tables: m.tables.length,
          degraded: m.extra.degraded ? 1 : 0,
          labels: JSON.stringify(m.labels ?? {}),
          manifest: JSON.stringify(m),
        });
      }
      for (const key of change.removed) remove.run(storage, key);
      for (const r of change.addedRecords) insertRecord.run(storage, r.key, r.backupId, r.kind, r.body === undefined ? null : JSON.stringify(r.body));
      for (const key of change.removedRecords) removeRecord.run(storage, key);
      if (change.whole) this.db.prepare(`INSERT OR REPLACE INTO scans (storage, at, problems) VALUES (?, ?, ?)`).run(storage, change.whole.at, JSON.stringify(change.whole.problems));
    })();
  }

  /** A database's backups in the given storages (not the safety copies of restores), newest first. */
  summaries(identity: string, storages: string[], opts: { limit?: number } = {}): IndexedSummary[] {
    if (storages.length === 0) return [];
    const limit = opts.limit ? `LIMIT ${Math.floor(opts.limit)}` : '';
    const rows = this.db
      .prepare(`SELECT ${SUMMARY_COLUMNS} FROM backups b WHERE b.identity = ? AND b.safety = 0 AND b.storage IN (${marks(storages.length)}) ORDER BY b.finished_at DESC, b.id DESC ${limit}`)
      .all(identity, ...storages) as SummaryRow[];
    return rows.map(toSummary);
  }

  /** Count of distinct backups and the bytes they take in all the storages (each copy counted). */
  totals(identity: string, storages: string[]): { backups: number; storedBytes: number } {
    if (storages.length === 0) return { backups: 0, storedBytes: 0 };
    const row = this.db
      .prepare(`SELECT COUNT(DISTINCT id) AS backups, COALESCE(SUM(size), 0) AS storedBytes FROM backups WHERE identity = ? AND safety = 0 AND storage IN (${marks(storages.length)})`)
      .get(identity, ...storages) as { backups: number; storedBytes: number };
    return row;
  }

  /** Bytes each storage holds of a database's backups. */
  bytesByStorage(identity: string, storages: string[]): Map<string, number> {
    if (storages.length === 0) return new Map();
    const rows = this.db
      .prepare(`SELECT storage, COALESCE(SUM(size), 0) AS bytes FROM backups WHERE identity = ? AND safety = 0 AND storage IN (${marks(storages.length)}) GROUP BY storage`)
      .all(identity, ...storages) as { storage: string; bytes: number }[];
    return new Map(rows.map((r) => [r.storage, r.bytes]));
  }

  /** The newest verification record among a database's newest `within` backups. */
  lastVerify(ids: string[]): { backupId: string; body: unknown } | undefined {
    for (const id of ids) {
      const row = this.db.prepare(`SELECT body FROM records WHERE backup_id = ? AND kind = 'verify' AND body IS NOT NULL ORDER BY key DESC LIMIT 1`).get(id) as { body: string } | undefined;
      if (row) return { backupId: id, body: JSON.parse(row.body) };
    }
    return undefined;
  }

  /** Every copy of one backup: the storage, its manifest and its records. */
  backup(id: string): { storage: string; manifest: Manifest; records: string[] }[] {
    const rows = this.db.prepare(`SELECT storage, manifest FROM backups WHERE id = ? ORDER BY storage`).all(id) as { storage: string; manifest: string }[];
    const records = this.db.prepare(`SELECT key FROM records WHERE storage = ? AND backup_id = ? ORDER BY key`).pluck();
    return rows.map((r) => ({ storage: r.storage, manifest: JSON.parse(r.manifest) as Manifest, records: records.all(r.storage, id) as string[] }));
  }

  /** The manifests of one series in one storage (for the WAL window). */
  manifestsOf(storage: string, identity: string): Manifest[] {
    return (this.db.prepare(`SELECT manifest FROM backups WHERE storage = ? AND identity = ? AND safety = 0`).pluck().all(storage, identity) as string[]).map((m) => JSON.parse(m) as Manifest);
  }

  setWindow(storage: string, identity: string, window: unknown): void {
    if (window === undefined) this.db.prepare(`DELETE FROM windows WHERE storage = ? AND identity = ?`).run(storage, identity);
    else this.db.prepare(`INSERT OR REPLACE INTO windows (storage, identity, body) VALUES (?, ?, ?)`).run(storage, identity, JSON.stringify(window));
  }

  window<T>(storage: string, identity: string): T | undefined {
    const body = this.db.prepare(`SELECT body FROM windows WHERE storage = ? AND identity = ?`).pluck().get(storage, identity) as string | undefined;
    return body === undefined ? undefined : (JSON.parse(body) as T);
  }

  /** Per day (UTC, YYYY-MM-DD) since `from`: backups finished, from the stash. */
  successesByDay(identity: string, storages: string[], from: string): Map<string, number> {
    if (storages.length === 0) return new Map();
    const rows = this.db
      .prepare(`SELECT substr(finished_at, 1, 10) AS day, COUNT(DISTINCT id) AS n FROM backups WHERE identity = ? AND safety = 0 AND finished_at >= ? AND storage IN (${marks(storages.length)}) GROUP BY day`)
      .all(identity, from, ...storages) as { day: string; n: number }[];
    return new Map(rows.map((r) => [r.day, r.n]));
  }

  /** Per day since `from`: runs of a kind that failed. */
  failuresByDay(database: string, kind: string, from: string): Map<string, number> {
    const rows = this.db
      .prepare(`SELECT substr(started_at, 1, 10) AS day, COUNT(*) AS n FROM runs WHERE database = ? AND kind = ? AND state = 'failed' AND started_at >= ? GROUP BY day`)
      .all(database, kind, from) as { day: string; n: number }[];
    return new Map(rows.map((r) => [r.day, r.n]));
  }

  // Runs of jobs: written when one starts and when it ends.
  saveRun<T extends RunRow>(run: T): void {
    this.db
      .prepare(`INSERT OR REPLACE INTO runs (id, database, kind, state, started_at, finished_at, error, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(run.id, run.database, run.kind, run.state, run.startedAt, run.finishedAt ?? null, run.error ?? null, JSON.stringify(run));
  }

  /** Runs left "running" by a dashboard that stopped: they ended without a result. */
  closeInterrupted(at: string): number {
    const rows = this.db.prepare(`SELECT body FROM runs WHERE state = 'running'`).pluck().all() as string[];
    for (const body of rows) this.saveRun({ ...(JSON.parse(body) as RunRow), state: 'failed', finishedAt: at, error: 'the dashboard stopped before the job ended' });
    return rows.length;
  }

  recentRuns<T extends RunRow>(limit: number): T[] {
    return (this.db.prepare(`SELECT body FROM runs ORDER BY started_at DESC LIMIT ?`).pluck().all(limit) as string[]).map((b) => JSON.parse(b) as T);
  }

  run<T extends RunRow>(id: string): T | undefined {
    const body = this.db.prepare(`SELECT body FROM runs WHERE id = ?`).pluck().get(id) as string | undefined;
    return body === undefined ? undefined : (JSON.parse(body) as T);
  }

  /** The newest finished run of a kind for a database. */
  lastRun(database: string, kind: string): RunRow | undefined {
    const body = this.db.prepare(`SELECT body FROM runs WHERE database = ? AND kind = ? AND state != 'running' ORDER BY finished_at DESC LIMIT 1`).pluck().get(database, kind) as string | undefined;
    return body === undefined ? undefined : (JSON.parse(body) as RunRow);
  }

  /** Forgets runs (with their events) that started before `runsBefore`, and older audit entries. */
  trim(runsBefore: string, auditBefore: string): void {
    this.db.prepare(`DELETE FROM runs WHERE started_at < ?`).run(runsBefore);
    this.db.prepare(`DELETE FROM audit WHERE at < ?`).run(auditBefore);
  }

  addAudit<T extends { at: string }>(entry: T): void {
    this.db.prepare(`INSERT INTO audit (at, body) VALUES (?, ?)`).run(entry.at, JSON.stringify(entry));
  }

  recentAudit<T>(limit: number): T[] {
    return (this.db.prepare(`SELECT body FROM audit ORDER BY n DESC LIMIT ?`).pluck().all(limit) as string[]).map((b) => JSON.parse(b) as T);
  }
}
