// Backup orchestration: preflight → lock → dump → stages → publish → manifest. It knows the
// Engine, Stage and Storage interfaces only. Every failure path aborts the dump, removes what was
// published of this backup, and releases the lock; the manifest is written last, so a backup that
// did not finish never appears in the catalog. A backup starts by removing what dead dbstash runs
// left in the temp dir (core/scratch.ts).

import os from 'node:os';
import { pipeline } from 'node:stream/promises';
import type { Readable } from 'node:stream';
import { BackupError, DbstashError, InterruptedError, PreflightError, StorageError, withOutcome } from '../core/errors.js';
// Not catalog.js: that would load the manifest schema (zod), which a backup does not need.
import { artifactKey, backupIdOfFile, makeBackupId, MANIFEST_SUFFIX, manifestKey, RECORD_RE, TEMP_PREFIX } from '../core/id.js';
import { formatBytes } from '../core/format.js';
import { maskSecrets } from '../core/secrets.js';
import { TOOL_VERSION } from '../core/version.js';
import { removeLeftovers } from '../core/scratch.js';
import { loadEngine } from '../engines/index.js';
import { settledChildGuard } from '../engines/process.js';
import type { DumpSession, Engine, Probe, TableStat, Target } from '../engines/engine.js';
import { isLocalHost } from '../engines/target.js';
import { Meter } from '../pipeline/meter.js';
import { specOf, suffixOf, type Stage } from '../pipeline/stage.js';
import { tee } from '../pipeline/tee.js';
import { acquireLock } from '../catalog/lock.js';
import { checkSeriesFolder, seriesFileKey, seriesOf, writeSeriesFile, type Series } from '../catalog/series.js';
import { MANIFEST_FORMAT, MANIFEST_VERSION, serializeManifest, totalRows, type ArtifactEntry, type Manifest } from '../catalog/manifest.js';
import { anomalyCheck } from './anomaly.js';
import { putOwnBytes, type Storage } from '../storage/storage.js';
import { signatureKey, type ManifestSigner } from '../crypto/sign.js';

export interface Destination {
  name: string;
  storage: Storage;
  /** An optional destination may fail; the backup is then "degraded" instead of failed. */
  optional: boolean;
}

export interface BackupPlan {
  target: Target;
  /** The series the backup belongs to; default: the target's own (no config name). */
  series?: Series;
  /** A physical base backup of the whole cluster (PostgreSQL), instead of a logical dump. */
  /** archiveWaitMs: how long the backup may wait for the archive to take its last segment. */
  physical?: { selfContained: boolean; archiveWaitMs?: number };
  /** "safety": a restore's backup of the database it is about to replace in place. */
  kind?: 'backup' | 'safety';
  env: string;
  destinations: Destination[];
  stages: Stage[];
  globals: boolean;
  checksums: boolean;
  jobs?: number;
  /** ms the dump may wait for a table's lock (0: for ever); default: the engine's (60 s). */
  lockWaitTimeout?: number;
  labels: Record<string, string>;
  tempDir: string;
  /** Expected artifact size as a share of the database size, and the safety margin on top. */
  space: { ratio: number; margin: number };
  forceUnlock: boolean;
  /** The fleet job this backup runs for, and which attempt (locks of its earlier attempts are dead). */
  job?: { id: string; attempt: number };
  /** Flag the backup when raw size or rows dropped by more than this share (default 0.5). */
  anomalyMaxDrop?: number;
  /** Facts for the manifest's `extra` (encryption recipients, …), added by stages' owners. */
  extra?: Record<string, unknown>;
  /** Signs the exact manifest bytes; the signature is published beside the manifest, before it. */
  signer?: ManifestSigner;
}

export interface BackupEvents {
  info(message: string): void;
  warn(message: string): void;
  progress?(rawBytes: number): void;
}

export interface BackupResult {
  manifest: Manifest;
  /** Destinations that hold the backup. */
  stored: string[];
  /** Optional destinations that failed, with the reason. */
  failed: { name: string; error: string }[];
  degraded: boolean;
}

export function backupCommandLine(): string {
  return maskSecrets(['dbstash', ...process.argv.slice(2)].join(' '));
}

/** The preflight checks after the probe: the prod warning, each destination's access and room. */
async function checkDestinations(
  plan: BackupPlan,
  probe: Probe,
  live: Published[],
  failed: BackupResult['failed'],
  warn: (m: string) => void,
  signal?: AbortSignal,
): Promise<void> {
  probe.warnings.forEach(warn);
  if (plan.env === 'prod' && plan.target.engine !== 'sqlite' && isLocalHost(plan.target.host)) {
    warn(`a prod backup of a database on ${plan.target.host ?? 'localhost'}: is this the production server? (--env dev for a local database)`);
  }
  const estimate = Math.ceil(probe.sizeBytes * plan.space.ratio * plan.space.margin);
  const series = plan.series ?? seriesOf(plan.target);
  for (const pub of live) {
    const dest = pub.dest;
    for (const problem of (await dest.storage.permissionProblems?.(series.key).catch(() => [])) ?? []) warn(problem);
    try {
      try {
        await dest.storage.check?.(signal);
      } catch (err) {
        const e = err as DbstashError;
        throw new PreflightError(`destination ${dest.name} (${dest.storage.url}) is not usable: ${e.message}`, { hint: e.hint, cause: err });
      }
      const free = await dest.storage.freeSpace?.();
      if (free !== undefined && free < estimate) {
        throw new PreflightError(
          `not enough free space in ${dest.storage.url}: about ${formatBytes(estimate)} needed (database ${formatBytes(probe.sizeBytes)} × ratio ${plan.space.ratio} × margin ${plan.space.margin}), ${formatBytes(free)} free`,
          { hint: 'free space there, choose another --output-dir, or lower space.ratio in the config if your dumps compress better' },
        );
      }
    } catch (err) {
      if (!dest.optional || signal?.aborted) throw signal?.aborted ? signal.reason : err;
      dropOptional(pub, err, failed, (m) => warn(m));
    }
  }
}

/** Records an optional destination's failure; it takes no further part in this backup. */
function dropOptional(pub: Published, err: unknown, failed: BackupResult['failed'], warn: (m: string) => void): void {
  pub.failed = true;
  const error = (err as Error).message;
  failed.push({ name: pub.dest.name, error });
  warn(`optional destination ${pub.dest.name} failed, the backup will be degraded: ${error}`);
}

/** Waits until an id is free in the primary destination (two backups within one second). */
async function freshId(plan: BackupPlan, series: Series, primary: Storage): Promise<{ id: string; takenAt: Date }> {
  for (;;) {
    const takenAt = new Date();
    const id = makeBackupId(series.key, plan.env, takenAt);
    if (!(await primary.stat(manifestKey(id))) && (await primary.list(`${artifactKey(id, id)}`)).length === 0) {
      return { id, takenAt };
    }
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
  }
}

interface Published {
  dest: Destination;
  /** Keys this backup has published there so far (removed again if the backup fails). */
  keys: string[];
  /** An optional destination that failed: it is skipped from then on. */
  failed?: boolean;
  /** The series' folder there already has its series.json. */
  seriesFileExists?: boolean;
}

/**
 * Streams one dump through the stages into every destination at once. The source is read once;
 * its pace is the slowest destination's (stream back-pressure). Nothing is published before the
 * dump tool has succeeded, because the dump stream only ends after its exit status is checked.
 * A required destination that fails stops everything at once; an optional one is dropped and the
 * others go on. The error reported is the first cause, not the aborts it triggered.
 */
async function writeArtifact(
  session: DumpSession,
  role: ArtifactEntry['role'],
  id: string,
  plan: BackupPlan,
  live: Published[],
  signal: AbortSignal,
  events: BackupEvents,
  failed: BackupResult['failed'],
  sizeHint: number,
): Promise<ArtifactEntry> {
  const file = `${id}.${session.format}${suffixOf(plan.stages)}`;
  const key = artifactKey(id, file);
  const raw = new Meter({ onBytes: role === 'main' ? events.progress : undefined });
  const stored = new Meter({ hash: true });
  const local = new AbortController();
  const stop = (err: unknown) => {
    if (!local.signal.aborted) local.abort(err);
  };
  const onOuterAbort = () => stop(signal.reason);
  if (signal.aborted) onOuterAbort();
  signal.addEventListener('abort', onOuterAbort, { once: true });
  const encoders = plan.stages.map((s) => s.encode());
  const chain = pipeline([session.stream, raw, ...encoders, stored] as unknown as [Readable, ...NodeJS.WritableStream[]], {
    signal: local.signal,
  }).catch((err: unknown) => {
    stop(err);
    throw err;
  });
  const targets = live.filter((p) => !p.failed);
  let active = targets.length;
  const branches = tee(stored, targets.length);
  const puts = targets.map(async (pub, i) => {
    const branch = branches[i];
    try {
      await pub.dest.storage.put(key, branch, { signal: local.signal, exclusive: true, sizeHint, retain: true });
      pub.keys.push(key);
    } catch (err) {
      branch.destroy();
      if (!pub.dest.optional || local.signal.aborted) {
        stop(err);
        throw err;
      }
      dropOptional(pub, err, failed, events.warn);
      await removeFrom(pub, id);
      if (--active === 0) stop(new BackupError('every destination failed; no copy of the backup was kept'));
    }
  });
  const results = await Promise.allSettled([chain, ...puts]);
  signal.removeEventListener('abort', onOuterAbort);
  if (local.signal.aborted) throw local.signal.reason;
  const firstError = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (firstError) throw firstError.reason;
  return {
    role,
    file,
    format: session.format,
    stages: plan.stages.map(specOf),
    rawSize: raw.bytes,
    size: stored.bytes,
    sha256: stored.sha256(),
  };
}

/** "database shop on db.internal:5432" / "SQLite file /srv/app.db": how messages name a database. */
function describeTarget(t: Target): string {
  return t.engine === 'sqlite' ? `SQLite file ${t.path ?? t.displayUrl}` : `database "${t.database}" on ${t.host ?? 'localhost'}${t.port ? `:${t.port}` : ''}`;
}

/**
 * Every destination's folder must stand for this series (its series.json, written with the
 * series' first backup there). A required destination whose folder belongs to another series
 * stops the backup before the dump; an optional one is dropped.
 */
async function checkFolders(live: Published[], series: Series, failed: BackupResult['failed'], warn: (m: string) => void): Promise<void> {
  for (const pub of live.filter((p) => !p.failed)) {
    try {
      pub.seriesFileExists = await checkSeriesFolder(pub.dest.storage, series);
    } catch (err) {
      if (!pub.dest.optional) throw err;
      dropOptional(pub, err, failed, warn);
    }
  }
}

/**
 * Removes what this backup published in one destination (best effort), manifest first: only keys
 * this run wrote itself, never one that an exclusive put found already there.
 */
async function removeFrom(pub: Published, _id: string): Promise<void> {
  const keys = [...pub.keys].sort((a, b) => Number(b.endsWith(MANIFEST_SUFFIX)) - Number(a.endsWith(MANIFEST_SUFFIX)));
  for (const key of keys) await pub.dest.storage.delete(key).catch(() => {});
  pub.keys = [];
}

/**
 * A success is only reported for a backup that exists: the manifest is read back from every
 * destination that is to hold it, right before the run says so.
 */
async function confirmPublished(stored: Published[], id: string, size: number): Promise<void> {
  for (const pub of stored) {
    const info = await pub.dest.storage.stat(manifestKey(id));
    if (!info || info.size !== size) {
      throw new BackupError(`the manifest of ${id} is not in ${pub.dest.storage.url} after it was written (${info ? `${info.size} bytes, expected ${size}` : 'missing'})`, {
        hint: 'something else removes objects from this stash while backups run; look for another prune or clean-up job',
      });
    }
  }
}

async function removePublished(live: Published[], id: string): Promise<void> {
  await Promise.all(live.map((pub) => removeFrom(pub, id)));
}

/**
 * Removes what dead dbstash runs left in the temp dir (a --jobs directory dump of a run killed
 * with -9, a SQLite snapshot copy, …) and says so. Never fails the backup.
 */
async function removeDeadRunsLeftovers(tempDir: string, warn: (m: string) => void): Promise<void> {
  const guard = await settledChildGuard();
  if (!guard.active && process.platform === 'linux') warn(`the tools dbstash starts may outlive it if it is killed: ${guard.reason}`);
  const { removed, kept } = await removeLeftovers(tempDir).catch((err: Error) => {
    warn(`could not look for leftovers of earlier runs in ${tempDir}: ${err.message}`);
    return { removed: [], kept: [] };
  });
  for (const l of removed) warn(`removed ${l.path} (${formatBytes(l.size)}), left in the temp dir by dbstash pid ${l.pid}, which did not finish`);
  for (const l of kept) warn(`did not remove ${l.path} (${formatBytes(l.size)}), left by dbstash pid ${l.pid}, which did not finish: ${l.reason}`);
}

export async function runBackup(plan: BackupPlan, events: BackupEvents, outerSignal?: AbortSignal): Promise<BackupResult> {
  if (plan.destinations.length === 0) throw new PreflightError('no destination to write the backup to');
  // Dead runs' leftovers are looked for while the database is probed: they are never this run's,
  // and the temp dir is first written to by the dump, after both.
  const tidied = removeDeadRunsLeftovers(plan.tempDir, events.warn);
  let engine: Engine;
  let probe: Probe;
  try {
    engine = await loadEngine(plan.target.engine);
    probe = await probeFor(plan, engine, outerSignal);
  } finally {
    await tidied;
  }
  const live: Published[] = plan.destinations.map((dest) => ({ dest, keys: [] }));
  const failed: BackupResult['failed'] = [];
  const warnings: string[] = [];
  const warn = (m: string) => {
    warnings.push(m);
    events.warn(m);
  };
  try {
    await checkDestinations(plan, probe, live, failed, warn, outerSignal);
    return await lockedBackup(plan, engine, probe, warnings, live, failed, events, outerSignal);
  } finally {
    // Still held when the dump never started (a failed check, the lock held, …); else a no-op.
    await probe.release?.();
  }
}

function probeFor(plan: BackupPlan, engine: Engine, signal?: AbortSignal): Promise<Probe> {
  if (!plan.physical) return engine.probe(plan.target, signal);
  if (!engine.probePhysical) throw new PreflightError(`physical base backups are a PostgreSQL feature; ${plan.target.engine} has logical backups only`, { hint: 'leave out --physical' });
  return engine.probePhysical(plan.target, { selfContained: plan.physical.selfContained, signal });
}

async function lockedBackup(
  plan: BackupPlan,
  engine: Engine,
  probe: Probe,
  warnings: string[],
  live: Published[],
  failed: BackupResult['failed'],
  events: BackupEvents,
  outerSignal?: AbortSignal,
): Promise<BackupResult> {
  const usable = live.filter((p) => !p.failed);
  if (usable.length === 0) throw new PreflightError('no destination is usable', { hint: failed.map((f) => `${f.name}: ${f.error}`).join('; ') });
  const primary = (usable.find((p) => !p.dest.optional) ?? usable[0]).dest;
  const series = plan.series ?? seriesOf(plan.target);
  const lock = await acquireLock(primary.storage, series.key, {
    command: backupCommandLine(),
    force: plan.forceUnlock,
    job: plan.job,
    what: `${describeTarget(plan.target)} (series ${series.key})`,
    warn: (m) => {
      warnings.push(m);
      events.warn(m);
    },
  });
  const controller = new AbortController();
  const onOuterAbort = () => controller.abort(outerSignal?.reason);
  outerSignal?.addEventListener('abort', onOuterAbort, { once: true });
  // A signal that arrived during preflight or while waiting for the lock fired no event.
  if (outerSignal?.aborted) onOuterAbort();
  let id = '';
  let failure: DbstashError | undefined;
  try {
    controller.signal.throwIfAborted();
    await checkFolders(live, series, failed, events.warn);
    if (lock.passedOver.length > 0) await removeDeadUploads(primary.storage, series.key, lock.key, events.warn);
    const fresh = await freshId(plan, series, primary.storage);
    id = fresh.id;
    const startedAt = new Date();
    events.info(`backing up ${plan.target.displayUrl} as ${id}`);
    // Warnings of the dump (e.g. roles captured without passwords) belong in the manifest too.
    const warn = (m: string) => {
      warnings.push(m);
      events.warn(m);
    };
    const dumpOpts = { signal: controller.signal, checksums: plan.checksums, jobs: plan.jobs, lockWaitTimeout: plan.lockWaitTimeout, tempDir: plan.tempDir, warn };
    const session = plan.physical
      ? await engine.dumpPhysical!(plan.target, { ...dumpOpts, probe, selfContained: plan.physical.selfContained, archiveWaitMs: plan.physical.archiveWaitMs })
      : await engine.dump(plan.target, { ...dumpOpts, probe });
    // The previous backup to compare with is looked up while the dump runs.
    const anomalies = plan.kind === 'safety' ? undefined : anomalyCheck(primary.storage, id, plan.anomalyMaxDrop, events.warn);
    const artifacts = [await writeArtifact(session, 'main', id, plan, live, controller.signal, events, failed, probe.sizeBytes)];
    const tables: TableStat[] = await session.tables;
    const properties = await session.properties;
    if (plan.globals) {
      if (!engine.dumpGlobals) throw new PreflightError(`--globals is not supported for ${plan.target.engine}`);
      const globals = await engine.dumpGlobals(plan.target, dumpOpts);
      artifacts.push(await writeArtifact(globals, 'globals', id, plan, live, controller.signal, events, failed, 0));
    }
    const finishedAt = new Date();
    const manifest: Manifest = {
      format: MANIFEST_FORMAT,
      version: MANIFEST_VERSION,
      id,
      tool: { name: 'dbstash', version: TOOL_VERSION },
      engine: plan.target.engine,
      database: {
        name: plan.target.database,
        url: plan.target.displayUrl,
        host: plan.target.host,
        port: plan.target.port,
        user: plan.target.user,
        serverVersion: probe.serverVersion,
        sizeBytes: probe.sizeBytes,
        ...(properties ? { properties } : {}),
      },
      environment: plan.env,
      series,
      ...(plan.kind === 'safety' ? { kind: 'safety' as const } : {}),
      dump: { tool: session.tool.name, version: session.tool.version, path: session.tool.path, args: session.tool.args, details: session.details },
      artifacts,
      tables,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      durationMs: finishedAt.getTime() - startedAt.getTime(),
      host: os.hostname(),
      labels: plan.labels,
      warnings,
      extra: { ...(plan.extra ?? {}), ...(failed.length ? { degraded: failed } : {}) },
    };
    const anomaly = await anomalies?.check({ rawSize: artifacts[0].rawSize, rows: totalRows(manifest) });
    if (anomaly) {
      manifest.extra.anomaly = anomaly;
      events.warn(`anomaly: ${anomaly.message}`);
    }
    const body = serializeManifest(manifest);
    const signature = plan.signer?.sign(body);
    const holders = live.filter((p) => !p.failed && p.keys.length === artifacts.length);
    if (holders.length === 0) throw new BackupError('no destination holds the backup');
    const commits = await Promise.allSettled(
      holders.map(async (p) => {
        try {
          if (!p.seriesFileExists && (await writeSeriesFile(p.dest.storage, series, plan.target.engine, controller.signal))) {
            p.keys.push(seriesFileKey(series));
          }
          if (signature) {
            await putOwnBytes(p.dest.storage, signatureKey(id), signature, { signal: controller.signal, retain: true });
            p.keys.push(signatureKey(id));
          }
          await putOwnBytes(p.dest.storage, manifestKey(id), body, { signal: controller.signal, retain: true });
          p.keys.push(manifestKey(id));
        } catch (err) {
          if (!p.dest.optional || controller.signal.aborted) throw err;
          dropOptional(p, err, failed, events.warn);
          await removeFrom(p, id);
        }
      }),
    );
    const commitError = commits.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (commitError) throw commitError.reason;
    const stored = holders.filter((p) => !p.failed);
    if (stored.length === 0) throw new BackupError('no destination holds the backup');
    await confirmPublished(stored, id, body.length);
    return { manifest, stored: stored.map((p) => p.dest.name), failed, degraded: failed.length > 0 };
  } catch (err) {
    controller.abort(err);
    if (id) await removePublished(live, id);
    if (outerSignal?.aborted) {
      const reason = outerSignal.reason;
      // An interrupt, or another reason to stop (a daemon job past its maximum run time).
      failure = reason instanceof DbstashError ? reason : new InterruptedError(String(reason ?? 'abort'));
    } else if (err instanceof DbstashError) failure = err;
    else if ((err as Error).name === 'AbortError') failure = new BackupError('the backup was aborted', { cause: err });
    else failure = new BackupError(`backup failed: ${(err as Error).message}`, { cause: err });
  } finally {
    outerSignal?.removeEventListener('abort', onOuterAbort);
    const released = await lock.release().then(
      () => true,
      (err: unknown) => {
        if (err instanceof StorageError && err.reason === 'not-found') return true;
        events.warn(`could not release the lock: ${(err as Error).message}`);
        return false;
      },
    );
    if (failure) {
      // Every way to fail says what became of this run, however it failed.
      // eslint-disable-next-line no-unsafe-finally
      throw withOutcome(failure, released ? 'nothing was published and the lock was released' : 'nothing was published');
    }
  }
  throw new BackupError('the backup ended without a result'); // not reached: the try returns or fails
}

/**
 * The unfinished uploads a dead holder of the series lock left behind: only a run that holds the
 * lock uploads a backup's files into the series folder, so once this run holds it over a dead
 * run's lock, a temporary object there (".tmp-<file>.<random>") of a backup that has no manifest,
 * written before this run's lock, is the dead run's. Records of verifications and restores (also
 * written under temporary names, without the lock) are left alone.
 */
async function removeDeadUploads(storage: Storage, folder: string, lockKey: string, warn: (m: string) => void): Promise<void> {
  if (!storage.listTemporaries) return;
  const since = (await storage.stat(lockKey).catch(() => undefined))?.modifiedAt ?? new Date();
  const temps = await storage.listTemporaries(`${folder}/`);
  let removed = 0;
  for (const o of temps) {
    const name = o.key.slice(folder.length + 1);
    if (name.includes('/') || o.modifiedAt.getTime() > since.getTime()) continue;
    const file = name.slice(TEMP_PREFIX.length).replace(/\.[0-9a-f]+$/, '');
    if (RECORD_RE.test(file)) continue;
    const backupId = backupIdOfFile(file);
    if (!backupId || (await storage.stat(manifestKey(backupId)).catch(() => undefined))) continue;
    await storage.delete(o.key).then(
      () => removed++,
      () => {},
    );
  }
  if (removed > 0) warn(`removed ${removed} unfinished upload${removed === 1 ? '' : 's'} of the run that died holding the lock`);
}
