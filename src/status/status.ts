// Health of the stash, per database: the newest backup and its age against the expected maximum
// (--max-age, databases.<name>.maxAge, or twice the backup schedule's interval), the latest
// verification, anomalies, retention compliance (what prune would remove), held and stale locks,
// and databases kept aside by restore swaps; per storage: reachability and free space.
// Every finding is ok, warn or problem; any problem makes the whole status unhealthy.

import { archiveHealth, archiverProblems, archiverStats, type ArchiveHealth, type ArchiverStats } from '../wal/health.js';
import os from 'node:os';
import { findLeftovers } from '../core/scratch.js';
import { listBackups, seriesIn, type CatalogListing } from '../catalog/catalog.js';
import { activeLocks } from '../catalog/lock.js';
import { mainArtifact } from '../catalog/manifest.js';
import { latestRecord, type VerifyRecord } from '../catalog/records.js';
import type { Destination } from '../backup/backup.js';
import type { Anomaly } from '../backup/anomaly.js';
import type { ConfigFile, DatabaseConfig } from '../config/schema.js';
import { formatAge, formatBytes, formatDuration, parseDuration } from '../core/format.js';
import { databaseDir } from '../core/id.js';
import { isSafetyBackup, type Series, type SeriesMatch } from '../catalog/series.js';
import { seriesLabels } from '../catalog/find.js';
import { loadEngine } from '../engines/index.js';
import { parseTarget } from '../engines/target.js';
import { pruneStorage } from '../prune/prune.js';
import { keptAside, unfinishedRestores } from '../restore/kept.js';
import { policyResolver } from '../retention/config.js';

export type Level = 'ok' | 'warn' | 'problem';

export interface Finding {
  level: Level;
  /** What was checked: backup, verification, anomaly, retention, lock, kept, storage, space. */
  check: string;
  message: string;
  storage?: string;
}

export interface DatabaseStatus {
  /** The series' name (its folder where two series share a name). */
  database: string;
  /** The series' folder and identity. */
  series: string;
  identity: string;
  /** The config key, when the database is configured. */
  key?: string;
  maxAgeSeconds?: number;
  newest?: { id: string; storage: string; finishedAt: string; ageSeconds: number; size: number; degraded: boolean; anomaly?: string };
  verification?: { id: string; result: string; level: string; at: string; error?: string };
  keptAside: { name: string; keptAt: string }[];
  /** Physical series: the WAL archive in the stash, and the server's archiver. */
  archive?: ArchiveHealth;
  archiver?: ArchiverStats;
  findings: Finding[];
}

export interface StorageStatus {
  name: string;
  url: string;
  reachable: boolean;
  freeBytes?: number;
  findings: Finding[];
}

export interface StatusReport {
  healthy: boolean;
  checkedAt: string;
  databases: DatabaseStatus[];
  storages: StorageStatus[];
  /** What dead dbstash runs of this host left in the temp dir (prune removes it). */
  temp: { dir: string; leftovers: { path: string; kind: string; pid: number; size: number }[]; findings: Finding[] };
}

export interface StatusTarget {
  series: Series;
  /** How status names it (the series' name, or its folder where two series share a name). */
  label?: string;
  key?: string;
  entry?: DatabaseConfig;
  destinations: Destination[];
  maxAgeMs?: number;
}

interface StorageView {
  status: StorageStatus;
  listing?: CatalogListing;
}

async function viewStorage(dest: Destination): Promise<StorageView> {
  const status: StorageStatus = { name: dest.name, url: dest.storage.url, reachable: false, findings: [] };
  try {
    const listing = await listBackups(dest.storage);
    status.reachable = true;
    for (const p of listing.problems) status.findings.push({ level: 'problem', check: 'storage', message: p.message, storage: dest.name });
    status.freeBytes = await dest.storage.freeSpace?.().catch(() => undefined);
    if (dest.storage.properties.immutable) {
      status.findings.push({ level: 'ok', check: 'immutable', message: `new backups are immutable: ${dest.storage.properties.immutable}`, storage: dest.name });
    }
    for (const problem of (await dest.storage.permissionProblems?.().catch(() => [])) ?? []) {
      status.findings.push({ level: 'problem', check: 'permissions', message: problem, storage: dest.name });
    }
    return { status, listing };
  } catch (err) {
    status.findings.push({ level: dest.optional ? 'warn' : 'problem', check: 'storage', message: `${dest.storage.url} is not reachable: ${(err as Error).message}`, storage: dest.name });
    return { status };
  }
}

async function checkDatabase(t: StatusTarget, views: Map<string, StorageView>, config: ConfigFile, now: Date): Promise<DatabaseStatus> {
  const s: DatabaseStatus = { database: t.label ?? t.series.name, series: t.series.key, identity: t.series.identity, key: t.key, maxAgeSeconds: t.maxAgeMs !== undefined ? t.maxAgeMs / 1000 : undefined, keptAside: [], findings: [] };
  const add = (level: Level, check: string, message: string, storage?: string) => s.findings.push({ level, check, message, storage });
  const limit = t.maxAgeMs !== undefined ? `; at most ${formatDuration(t.maxAgeMs)} expected` : '';
  let largest = 0;
  for (const dest of t.destinations) {
    const view = views.get(dest.storage.url)!;
    if (!view.listing) continue;
    const entries = view.listing.entries.filter((e) => e.series.identity === t.series.identity && !isSafetyBackup(e.manifest));
    const newest = entries[0];
    const missing = dest.optional ? 'warn' : 'problem';
    if (!newest) {
      add(missing, 'backup', `no backup in ${dest.name}`, dest.name);
      continue;
    }
    const main = mainArtifact(newest.manifest);
    largest = Math.max(largest, newest.manifest.artifacts.reduce((sum, a) => sum + a.size, 0));
    const finishedAt = new Date(newest.manifest.finishedAt);
    const ageMs = now.getTime() - finishedAt.getTime();
    const anomaly = newest.manifest.extra.anomaly as Anomaly | undefined;
    if (!s.newest || finishedAt.toISOString() > s.newest.finishedAt) {
      s.newest = { id: newest.id, storage: dest.name, finishedAt: finishedAt.toISOString(), ageSeconds: Math.round(ageMs / 1000), size: main.size, degraded: Boolean(newest.manifest.extra.degraded), anomaly: anomaly?.message };
    }
    const tooOld = t.maxAgeMs !== undefined && ageMs > t.maxAgeMs;
    add(tooOld ? missing : 'ok', 'backup', `newest backup ${newest.id} in ${dest.name}${tooOld ? ' is too old:' : ''} finished ${formatAge(finishedAt, now)}${limit}`, dest.name);
    if (anomaly) add('problem', 'anomaly', `${newest.id}: ${anomaly.message}`, dest.name);
    if (newest.manifest.extra.degraded) add('warn', 'backup', `${newest.id} is degraded: an optional destination failed`, dest.name);

    for (const e of entries) {
      const record = await latestRecord<VerifyRecord>(dest.storage, e.records, 'verify');
      if (!record) continue;
      if (!s.verification || record.at > s.verification.at) s.verification = { id: e.id, result: record.result, level: record.level, at: record.at, error: record.error };
      break;
    }

    const report = await pruneStorage(dest.storage, { dryRun: true, series: t.series.identity, policyFor: policyResolver(config, dest.name), warn: () => {} });
    const removable = report.backups.filter((b) => !b.keep).length;
    const policy = report.series.map((x) => x.policy).join('; ');
    // Leftovers include old incomplete multipart uploads (S3), which prune aborts.
    const leftovers = report.orphans.length + report.incompleteUploads.length;
    if (removable + leftovers > 0) {
      add('warn', 'retention', `${removable} backups beyond the policy (${policy}) and ${leftovers} leftovers in ${dest.name} (${formatBytes(report.bytesFreed)}): run \`dbstash prune\``, dest.name);
    } else {
      add('ok', 'retention', `${dest.name} complies with the policy (${policy})`, dest.name);
    }

    const archive = archiveHealth(view.listing.objects, t.series.key, entries.map((e) => e.manifest));
    if (archive) {
      s.archive = archive;
      if (archive.newest) {
        add('ok', 'archive', `newest archived WAL ${archive.newest.name} in ${dest.name}, ${formatAge(new Date(archive.newest.archivedAt), now)}; recoverable from ${archive.window!.from} to about then`, dest.name);
      } else add(missing, 'archive', `no WAL archived in ${dest.name}: the base backups restore only to their own end (is archive_command set? dbstash wal setup)`, dest.name);
      if (archive.gaps.length) add('problem', 'archive', `the WAL archive in ${dest.name} has gaps (${archive.gaps.join(', ')}): recovery cannot pass them; take a new base backup`, dest.name);
    }

    // The series' folder, and any older folder of backups made before series had their own.
    for (const folder of new Set([t.series.key, ...entries.map((e) => databaseDir(e.id))])) {
      for (const lock of await activeLocks(dest.storage, folder).catch(() => [])) {
        const who = `pid ${lock.info.pid} on ${lock.info.host} since ${lock.info.startedAt} ("${lock.info.command}")`;
        if (lock.stale) add('warn', 'lock', `stale lock in ${dest.name}: ${who} is not running any more; it blocks nothing, and the next backup or prune clears it`, dest.name);
        else add('ok', 'lock', `a backup holds the lock in ${dest.name}: ${who}`, dest.name);
      }
    }
  }
  if (s.verification) {
    const v = s.verification;
    if (v.result === 'passed') add('ok', 'verification', `${v.id}: ${v.level} passed ${formatAge(new Date(v.at), now)}`);
    else add('problem', 'verification', `${v.id}: ${v.level} FAILED ${formatAge(new Date(v.at), now)}: ${v.error ?? 'see the verify record'}`);
  } else if (s.newest) {
    add('warn', 'verification', 'no backup has been verified yet: run `dbstash verify --latest`');
  }
  for (const view of views.values()) {
    const free = view.status.freeBytes;
    if (free !== undefined && largest > 0 && t.destinations.some((d) => d.storage.url === view.status.url) && free < 2 * largest) {
      add('problem', 'space', `only ${formatBytes(free)} free in ${view.status.name}: not enough for two more backups of ${formatBytes(largest)}`, view.status.name);
    }
  }
  if (t.entry?.physical) {
    try {
      const stats = await archiverStats(parseTarget(t.entry.url, { binDir: t.entry.binDir }));
      s.archiver = stats;
      const maxDelay = t.entry.walMaxDelay !== undefined ? parseDuration(t.entry.walMaxDelay) : undefined;
      for (const problem of archiverProblems(stats, now, maxDelay)) add('problem', 'archive', problem);
    } catch (err) {
      add('warn', 'archive', `could not read pg_stat_archiver: ${(err as Error).message}`);
    }
  }
  if (t.entry) {
    try {
      const target = parseTarget(t.entry.url, { binDir: t.entry.binDir });
      const engine = await loadEngine(target.engine);
      for (const k of await keptAside(engine, target)) {
        s.keptAside.push({ name: k.name, keptAt: k.keptAt.toISOString() });
        add('warn', 'kept', `${k.name} was kept aside by a restore ${formatAge(k.keptAt, now)}: drop it once it is no longer needed`);
      }
      for (const name of await unfinishedRestores(engine, target)) {
        add('warn', 'kept', `${name} was left by a restore into ${target.database} that did not finish; the next restore into it drops it, or drop it by hand`);
      }
    } catch (err) {
      add('warn', 'kept', `could not look for databases kept aside by restores: ${(err as Error).message}`);
    }
  }
  return s;
}

/** `stashes`: storages to report on even when no database of theirs is checked (e.g. unreachable ones). */
export async function collectStatus(targets: StatusTarget[], config: ConfigFile, stashes: Destination[] = [], now = new Date()): Promise<StatusReport> {
  const views = new Map<string, StorageView>();
  for (const dest of [...targets.flatMap((t) => t.destinations), ...stashes]) {
    if (!views.has(dest.storage.url)) views.set(dest.storage.url, await viewStorage(dest));
  }
  const databases: DatabaseStatus[] = [];
  for (const t of targets) databases.push(await checkDatabase(t, views, config, now));
  const storages = [...views.values()].map((v) => v.status);
  const tempDir = config.tempDir ?? os.tmpdir();
  const leftovers = await findLeftovers(tempDir).catch(() => []);
  const temp: StatusReport['temp'] = { dir: tempDir, leftovers: leftovers.map(({ path, kind, pid, size }) => ({ path, kind, pid, size })), findings: [] };
  if (leftovers.length > 0) {
    const bytes = leftovers.reduce((s, l) => s + l.size, 0);
    temp.findings.push({
      level: 'warn',
      check: 'leftovers',
      message: `${leftovers.length} leftover${leftovers.length === 1 ? '' : 's'} of dbstash runs that died (${formatBytes(bytes)}, e.g. ${leftovers[0].path}): the next backup or \`dbstash prune\` removes them`,
    });
  }
  const healthy = [...databases.flatMap((d) => d.findings), ...storages.flatMap((s) => s.findings)].every((f) => f.level !== 'problem');
  return { healthy, checkedAt: now.toISOString(), databases, storages, temp };
}

/** The series found in the given storages (for a stash without a config); unreachable ones are skipped. */
export async function seriesInStashes(destinations: Destination[]): Promise<{ found: SeriesMatch[]; labels: Map<string, string>; unreachable: boolean }> {
  const found = new Map<string, SeriesMatch>();
  let unreachable = false;
  for (const dest of destinations) {
    try {
      for (const m of seriesIn((await listBackups(dest.storage)).entries)) if (!found.has(m.series.identity)) found.set(m.series.identity, m);
    } catch {
      unreachable = true; // collectStatus reports it
    }
  }
  const list = [...found.values()].sort((a, b) => a.series.name.localeCompare(b.series.name) || a.series.key.localeCompare(b.series.key));
  return { found: list, labels: seriesLabels(list), unreachable };
}
