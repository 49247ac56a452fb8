// Prune: applies the retention policy to every series (one database on one server, by identity)
// and environment in one storage, and removes what it does not keep, plus the leftovers of
// crashed runs.
//
// A rule set to 0 keeps nothing by that rule. A policy that would leave a series without any
// backup is refused for the whole run (nothing is removed) unless allowEmpty is set. Safety
// backups taken by restores are outside retention: each is kept for safetyMinAgeMs (30 days),
// then removed.
//
// Order of deletion for a backup: the manifest FIRST (the backup stops existing at once), then
// its artifacts, then its records. A crash in between leaves an artifact without a manifest — an
// orphan that the next prune removes — never a manifest that points at missing data.
// Never removed: the newest backup of a series whose latest verification passed, a backup that
// a running verify or restore holds a lease on (checked again right before deleting), anything of
// a backup whose manifest is unreadable, and orphans younger than orphanMinAgeMs or in a folder
// whose lock is held (a backup may be publishing there right now).
// Incomplete multipart uploads (S3: a backup killed mid-upload, or whose abort could not reach the
// store) are aborted when older than uploadMinAgeMs (24 h) and not in a folder whose lock is held.
// A running backup holds its folder's lock for the whole upload; a `dbstash copy`, which takes no
// lock, is protected by the age alone, so the age must exceed the longest upload.

import { listBackups, type CatalogEntry } from '../catalog/catalog.js';
import { activeLeases, parseLease } from '../catalog/lease.js';
import { activeLocks, isLockKey } from '../catalog/lock.js';
import { isSafetyBackup, SERIES_FILE, type Series } from '../catalog/series.js';
import { UsageError } from '../core/errors.js';
import { latestRecord, type VerifyRecord } from '../catalog/records.js';
import { artifactKey, backupIdOfFile, databaseDir, manifestKey, MANIFEST_SUFFIX } from '../core/id.js';
import { formatDuration } from '../core/format.js';
import type { IncompleteUpload, ObjectInfo, Storage } from '../storage/storage.js';
import { applyRetention, describePolicy, type RetentionPolicy } from '../retention/policy.js';
import { parseWalName, segnoOf, walObjectsIn } from '../wal/names.js';
import { physicalOf } from '../catalog/manifest.js';

export const DEFAULT_ORPHAN_MIN_AGE_MS = 3600_000;
export const DEFAULT_UPLOAD_MIN_AGE_MS = 24 * 3600_000;
export const DEFAULT_SAFETY_MIN_AGE_MS = 30 * 24 * 3600_000;

export interface PruneOptions {
  dryRun: boolean;
  /** Only this series (by identity). */
  series?: string;
  /** The policy for a series in this storage. */
  policyFor(series: Series): RetentionPolicy;
  /** Let the policy remove every backup of a series (refused otherwise). */
  allowEmpty?: boolean;
  /** Safety backups taken by restores are removed once older than this (default 30 days). */
  safetyMinAgeMs?: number;
  /**
   * Called with the plan before anything is removed (not in a dry run); false cancels the run,
   * which then reports the plan as a dry run would, with `cancelled` set.
   */
  confirm?(report: PruneReport): Promise<boolean>;
  orphanMinAgeMs?: number;
  /** Incomplete multipart uploads younger than this are left alone (default 24 h). */
  uploadMinAgeMs?: number;
  now?: Date;
  warn(message: string): void;
}

export interface BackupDecision {
  id: string;
  /** The series' name and folder. */
  database: string;
  series: string;
  /** "safety" for a restore's safety backup (outside retention). */
  kind?: 'safety';
  environment: string;
  takenAt: string;
  keep: boolean;
  reasons: string[];
  /** Bytes of everything that goes with it (artifacts, manifest, records). */
  bytes: number;
  removed?: boolean;
  error?: string;
  /** Kept because the store will not delete it before this time (S3 Object Lock). */
  lockedUntil?: string;
}

export interface OrphanDecision {
  key: string;
  bytes: number;
  reason: string;
  removed?: boolean;
  error?: string;
}

export interface UploadDecision {
  key: string;
  uploadId: string;
  startedAt: string;
  reason: string;
  aborted?: boolean;
  error?: string;
}

/** The WAL of one physical series that no kept base backup needs any more. */
export interface WalDecision {
  series: string;
  /** The oldest kept base backup, whose start bounds what stays. */
  keptFrom: string;
  /** Objects before that start (segments, .partial and .backup files; history files always stay). */
  objects: number;
  bytes: number;
  /** The first and last segment of the range removed. */
  first?: string;
  last?: string;
  removed?: number;
  error?: string;
}

export interface SeriesReport {
  database: string;
  series: string;
  identity: string;
  environment: string;
  policy: string;
}

export interface PruneReport {
  storage: string;
  dryRun: boolean;
  series: SeriesReport[];
  backups: BackupDecision[];
  orphans: OrphanDecision[];
  /** Incomplete multipart uploads to abort (their size is not known without listing their parts). */
  incompleteUploads: UploadDecision[];
  /** WAL older than the oldest kept base backup of each physical series. */
  wal: WalDecision[];
  /** Unreadable manifests: their backups are left alone. */
  problems: { key: string; message: string }[];
  bytesFreed: number;
  failures: number;
  /** The confirmation was declined: nothing was removed. */
  cancelled?: boolean;
}

/** Every object of a backup, manifest first: its artifacts, records and whatever else is named after it. */
function keysOf(entry: CatalogEntry, objects: ObjectInfo[]): string[] {
  const manifest = manifestKey(entry.id);
  const folder = manifest.slice(0, manifest.lastIndexOf('/') + 1);
  const rest = objects.map((o) => o.key).filter((k) => k !== manifest && k.startsWith(`${folder}${entry.id}.`));
  return [manifest, ...new Set([...entry.manifest.artifacts.map((a) => artifactKey(entry.id, a.file)), ...rest])];
}

async function newestVerified(storage: Storage, entries: CatalogEntry[]): Promise<string | undefined> {
  for (const entry of entries) {
    const record = await latestRecord<VerifyRecord>(storage, entry.records, 'verify');
    if (record?.result === 'passed') return entry.id;
  }
  return undefined;
}

function ageText(obj: ObjectInfo, now: Date): string {
  return `${formatDuration(now.getTime() - obj.modifiedAt.getTime())} old`;
}

export async function pruneStorage(storage: Storage, opts: PruneOptions): Promise<PruneReport> {
  const now = opts.now ?? new Date();
  const minAge = opts.orphanMinAgeMs ?? DEFAULT_ORPHAN_MIN_AGE_MS;
  const safetyAge = opts.safetyMinAgeMs ?? DEFAULT_SAFETY_MIN_AGE_MS;
  const listing = await listBackups(storage);
  const mine = (e: CatalogEntry) => !opts.series || e.series.identity === opts.series;
  const sizes = new Map(listing.objects.map((o) => [o.key, o.size]));
  const active = activeLeases(listing.objects, now);
  const leased = new Map(active.map((l) => [l.id, l]));
  const activeLeaseKeys = new Set(active.map((l) => l.key));
  const report: PruneReport = {
    storage: storage.url,
    dryRun: opts.dryRun,
    series: [],
    backups: [],
    orphans: [],
    incompleteUploads: [],
    wal: [],
    problems: listing.problems,
    bytesFreed: 0,
    failures: 0,
  };
  for (const p of listing.problems) opts.warn(`${storage.url}: ${p.message} (left alone)`);
  for (const problem of (await storage.permissionProblems?.().catch(() => [])) ?? []) opts.warn(problem);
  const pinnedBy = (id: string) => {
    const lease = leased.get(id);
    return lease ? `in use by a verify/restore (pid ${lease.pid} on ${lease.host})` : undefined;
  };
  const decide = (entry: CatalogEntry, keep: boolean, reasons: string[], kind?: 'safety') => {
    const all = keysOf(entry, listing.objects);
    all.forEach((x) => known.add(x));
    report.backups.push({
      id: entry.id,
      database: entry.series.name,
      series: entry.series.key,
      ...(kind ? { kind } : {}),
      environment: entry.manifest.environment,
      takenAt: entry.manifest.startedAt,
      keep,
      reasons,
      bytes: all.reduce((s, x) => s + (sizes.get(x) ?? 0), 0),
    });
  };

  const known = new Set<string>();
  const groups = new Map<string, CatalogEntry[]>();
  for (const entry of listing.entries) {
    // Every backup's files are known, so nothing of a backup outside the filter counts as a leftover.
    if (!mine(entry)) {
      keysOf(entry, listing.objects).forEach((x) => known.add(x));
      continue;
    }
    if (isSafetyBackup(entry.manifest)) {
      const age = now.getTime() - new Date(entry.manifest.startedAt).getTime();
      const pinned = pinnedBy(entry.id);
      if (pinned) decide(entry, true, [pinned], 'safety');
      else if (age < safetyAge) decide(entry, true, [`safety backup of a restore, kept ${formatDuration(safetyAge)} (${formatDuration(age)} old)`], 'safety');
      else decide(entry, false, [`safety backup of a restore, ${formatDuration(age)} old`], 'safety');
      continue;
    }
    const key = `${entry.series.identity}\u0000${entry.manifest.environment}`;
    groups.set(key, [...(groups.get(key) ?? []), entry]);
  }
  const emptied: string[] = [];
  for (const entries of groups.values()) {
    const { series } = entries[0];
    const environment = entries[0].manifest.environment;
    const policy = opts.policyFor(series);
    report.series.push({ database: series.name, series: series.key, identity: series.identity, environment, policy: describePolicy(policy) });
    const verified = await newestVerified(storage, entries);
    const decisions = applyRetention(
      entries.map((e) => ({
        id: e.id,
        takenAt: new Date(e.manifest.startedAt),
        tags: Object.entries(e.manifest.labels).map(([k, v]) => `${k}=${v}`),
        pinned: pinnedBy(e.id) ?? (e.id === verified ? 'newest backup that passed verification' : undefined),
      })),
      policy,
    );
    if (decisions.length > 0 && decisions.every((d) => !d.keep)) emptied.push(`${series.name} (${environment}, ${decisions.length} backup${decisions.length === 1 ? '' : 's'}, policy ${describePolicy(policy)})`);
    const byId = new Map(entries.map((e) => [e.id, e]));
    for (const d of decisions) decide(byId.get(d.id)!, d.keep, d.reasons);
  }
  // Objects the store keeps immutable (S3 Object Lock) cannot go yet: kept, with the day they can.
  for (const b of report.backups.filter((x) => !x.keep)) {
    const entry = listing.entries.find((e) => e.id === b.id)!;
    const infos = await Promise.all(keysOf(entry, listing.objects).map((k) => storage.stat(k).catch(() => undefined)));
    const until = infos.map((i) => i?.retainUntil).filter((d): d is Date => d !== undefined && d.getTime() > now.getTime());
    if (until.length === 0) continue;
    const last = new Date(Math.max(...until.map((d) => d.getTime())));
    b.keep = true;
    b.lockedUntil = last.toISOString();
    b.reasons = [`locked until ${last.toISOString()} (${infos.find((i) => i?.retentionMode)?.retentionMode ?? 'object lock'}); prune removes it after that`];
  }
  if (emptied.length > 0 && !opts.allowEmpty) {
    const hint = 'a rule of 0 keeps nothing by that rule: keep at least one backup (e.g. --keep-last 1), or pass --allow-empty to empty the series on purpose';
    if (!opts.dryRun) throw new UsageError(`the retention policy would remove every backup of ${emptied.join('; ')}; nothing was removed`, { hint });
    opts.warn(`the retention policy would remove every backup of ${emptied.join('; ')}: a run without --dry-run refuses this (${hint})`);
  }

  // Leftovers: files named after a backup that has no (readable) manifest, and stale leases.
  const unreadable = new Set(listing.problems.map((p) => p.key.split('/').pop()!.slice(0, -MANIFEST_SUFFIX.length)));
  const cataloged = new Set(listing.entries.map((e) => e.id));
  const busyFolders = new Set<string>();
  const staleLocks = new Set<string>();
  for (const folder of new Set(listing.objects.map((o) => o.key.split('/')[0]))) {
    const locks = await activeLocks(storage, folder, listing.objects).catch(() => []);
    if (locks.some((l) => !l.stale)) busyFolders.add(folder);
    for (const l of locks.filter((x) => x.stale && !x.key.endsWith('/dbstash.lock'))) staleLocks.add(l.key);
  }
  const inFilter = filterFolders(listing.entries, opts.series);
  for (const obj of listing.objects) {
    if (known.has(obj.key)) continue;
    const folder = obj.key.split('/')[0];
    if (inFilter && !inFilter.has(folder)) continue;
    const name = obj.key.split('/').pop()!;
    if (name === SERIES_FILE) continue;
    if (isLockKey(obj.key)) {
      // Released locks (and the locks of runs that died) are clutter; active ones stay.
      const released = name.endsWith('.released') || listing.objects.some((o) => o.key === obj.key.replace(/\.lock$/, '.released'));
      if (now.getTime() - obj.modifiedAt.getTime() < minAge) continue;
      if (released) report.orphans.push({ key: obj.key, bytes: obj.size, reason: `released lock, ${ageText(obj, now)}` });
      else if (staleLocks.has(obj.key)) report.orphans.push({ key: obj.key, bytes: obj.size, reason: `lock of a run that is gone, ${ageText(obj, now)}` });
      continue;
    }
    const lease = parseLease(obj);
    if (lease) {
      if (!activeLeaseKeys.has(obj.key)) report.orphans.push({ key: obj.key, bytes: obj.size, reason: `stale lease (pid ${lease.pid} on ${lease.host} is gone)` });
      continue;
    }
    const id = backupIdOfFile(name);
    if (!id || unreadable.has(id) || cataloged.has(id)) continue;
    if (busyFolders.has(obj.key.split('/')[0])) continue;
    if (now.getTime() - obj.modifiedAt.getTime() < minAge) continue;
    report.orphans.push({ key: obj.key, bytes: obj.size, reason: `no manifest for ${id}, ${ageText(obj, now)}` });
  }
  for (const tmp of (await storage.listTemporaries?.('')) ?? []) {
    if (inFilter && !inFilter.has(tmp.key.split('/')[0])) continue;
    if (now.getTime() - tmp.modifiedAt.getTime() < minAge) continue;
    report.orphans.push({ key: tmp.key, bytes: tmp.size, reason: `unfinished upload, ${ageText(tmp, now)}` });
  }

  report.incompleteUploads = (await oldUploads(storage, opts, busyFolders, now)).filter((u) => !inFilter || inFilter.has(u.key.split('/')[0]));

  const walKeys = new Map<string, string[]>();
  for (const [series, entries] of physicalSeries(listing.entries.filter(mine))) {
    const kept = entries.filter((e) => report.backups.find((b) => b.id === e.id)?.keep);
    const decision = walBefore(series, kept, listing.objects);
    if (decision) {
      report.wal.push(decision.report);
      walKeys.set(series, decision.keys);
    }
  }

  const planned = () => [...report.backups.filter((b) => !b.keep), ...report.orphans, ...report.wal].reduce((s, x) => s + x.bytes, 0);
  if (opts.dryRun) {
    report.bytesFreed = planned();
    return report;
  }
  const work = report.backups.some((b) => !b.keep) || report.orphans.length > 0 || report.incompleteUploads.length > 0 || report.wal.length > 0;
  if (work && opts.confirm && !(await opts.confirm(report))) {
    report.cancelled = true;
    report.bytesFreed = planned();
    return report;
  }
  for (const b of report.backups.filter((x) => !x.keep)) {
    const entry = listing.entries.find((e) => e.id === b.id)!;
    try {
      const fresh = activeLeases(await storage.list(`${databaseDir(b.id)}/${b.id}.lease-`));
      if (fresh.length > 0) {
        b.keep = true;
        b.reasons = [`in use by a verify/restore that started meanwhile (pid ${fresh[0].pid} on ${fresh[0].host})`];
        continue;
      }
      const [manifest, ...rest] = keysOf(entry, listing.objects);
      await storage.delete(manifest);
      for (const key of rest) await storage.delete(key);
      b.removed = true;
      report.bytesFreed += b.bytes;
    } catch (err) {
      b.error = (err as Error).message;
      report.failures++;
      opts.warn(`could not remove ${b.id}: ${b.error}`);
    }
  }
  for (const o of report.orphans) {
    try {
      await storage.delete(o.key);
      o.removed = true;
      report.bytesFreed += o.bytes;
    } catch (err) {
      o.error = (err as Error).message;
      report.failures++;
      opts.warn(`could not remove ${o.key}: ${o.error}`);
    }
  }
  // WAL last: once the base backups that needed it are gone (a kept one never needs it).
  for (const w of report.wal) {
    w.removed = 0;
    for (const key of walKeys.get(w.series) ?? []) {
      try {
        await storage.delete(key);
        w.removed++;
        report.bytesFreed += sizes.get(key) ?? 0;
      } catch (err) {
        w.error = (err as Error).message;
        report.failures++;
        opts.warn(`could not remove ${key}: ${w.error}`);
        break;
      }
    }
  }
  for (const u of report.incompleteUploads) {
    try {
      await storage.abortIncompleteUpload!({ key: u.key, uploadId: u.uploadId, startedAt: new Date(u.startedAt) });
      u.aborted = true;
    } catch (err) {
      u.error = (err as Error).message;
      report.failures++;
      opts.warn(`could not abort the multipart upload ${u.uploadId} of ${u.key}: ${u.error}`);
    }
  }
  return report;
}

/** Base backups by series folder (physical series only). */
function physicalSeries(entries: CatalogEntry[]): Map<string, CatalogEntry[]> {
  const out = new Map<string, CatalogEntry[]>();
  for (const e of entries) {
    if (!physicalOf(e.manifest)) continue;
    out.set(e.series.key, [...(out.get(e.series.key) ?? []), e]);
  }
  return out;
}

/**
 * The WAL objects of a series that lie before the start of its oldest kept base backup, on every
 * timeline: no kept backup can replay them. History files and restore points stay. With no base
 * backup kept, nothing is removed (the archive may be all that is left).
 */
function walBefore(series: string, kept: CatalogEntry[], objects: ObjectInfo[]): { report: WalDecision; keys: string[] } | undefined {
  if (kept.length === 0) return undefined;
  const starts = kept.map((e) => ({ e, p: physicalOf(e.manifest)! }));
  const oldest = starts.reduce((a, b) => (segnoOf(b.p.startLsn, b.p.walSegmentSize) < segnoOf(a.p.startLsn, a.p.walSegmentSize) ? b : a));
  const size = oldest.p.walSegmentSize;
  const from = segnoOf(oldest.p.startLsn, size);
  const old = walObjectsIn(objects, series)
    .filter((w) => {
      const n = parseWalName(w.name, size);
      return n !== undefined && n.kind !== 'history' && n.segno! < from;
    })
    .sort((a, b) => (a.name < b.name ? -1 : 1));
  if (old.length === 0) return undefined;
  const segs = old.filter((w) => parseWalName(w.name, size)?.kind === 'segment').map((w) => w.name);
  return {
    report: { series, keptFrom: oldest.e.id, objects: old.length, bytes: old.reduce((a, w) => a + w.size, 0), first: segs[0], last: segs[segs.length - 1] },
    keys: old.map((w) => w.key),
  };
}

/**
 * The incomplete multipart uploads old enough to abort, outside folders whose lock is held. A store
 * that cannot list them (an S3-compatible store without ListMultipartUploads) is a warning.
 */
async function oldUploads(storage: Storage, opts: PruneOptions, busyFolders: Set<string>, now: Date): Promise<UploadDecision[]> {
  if (!storage.listIncompleteUploads || !storage.abortIncompleteUpload) return [];
  const minAge = opts.uploadMinAgeMs ?? DEFAULT_UPLOAD_MIN_AGE_MS;
  let uploads: IncompleteUpload[];
  try {
    uploads = await storage.listIncompleteUploads('');
  } catch (err) {
    opts.warn(`${storage.url}: incomplete multipart uploads left alone: ${(err as Error).message}`);
    return [];
  }
  return uploads
    .filter((u) => !busyFolders.has(u.key.split('/')[0]) && now.getTime() - u.startedAt.getTime() >= minAge)
    .map((u) => ({
      key: u.key,
      uploadId: u.uploadId,
      startedAt: u.startedAt.toISOString(),
      reason: `incomplete multipart upload, started ${formatDuration(now.getTime() - u.startedAt.getTime())} ago`,
    }));
}

/** The folders that hold backups of one series (legacy folders included); undefined without a filter. */
function filterFolders(entries: CatalogEntry[], identity: string | undefined): Set<string> | undefined {
  if (!identity) return undefined;
  const folders = new Set(entries.filter((e) => e.series.identity === identity).map((e) => databaseDir(e.id)));
  return folders;
}
