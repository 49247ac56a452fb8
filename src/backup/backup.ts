// Backup orchestration: preflight → lock → dump → stages → publish → manifest. It knows the
// Engine, Stage and Storage interfaces only. Every failure path aborts the dump, removes what was
// published of this backup, and releases the lock; the manifest is written last, so a backup that
// did not finish never appears in the catalog.

import os from 'node:os';
import { pipeline } from 'node:stream/promises';
import { PassThrough, type Readable } from 'node:stream';
import { BackupError, DbstashError, InterruptedError, PreflightError, StorageError } from '../core/errors.js';
import { artifactKey, makeBackupId, manifestKey } from '../core/id.js';
import { formatBytes } from '../core/format.js';
import { TOOL_VERSION } from '../core/version.js';
import { loadEngine } from '../engines/index.js';
import type { DumpSession, Engine, Probe, TableStat, Target } from '../engines/engine.js';
import { isLocalHost } from '../engines/target.js';
import { Meter } from '../pipeline/meter.js';
import { specOf, suffixOf, type Stage } from '../pipeline/stage.js';
import { acquireLock } from '../catalog/lock.js';
import { MANIFEST_FORMAT, MANIFEST_VERSION, serializeManifest, type ArtifactEntry, type Manifest } from '../catalog/manifest.js';
import type { Storage } from '../storage/storage.js';
import { detectAnomaly } from './anomaly.js';

export interface Destination {
  name: string;
  storage: Storage;
  /** An optional destination may fail; the backup is then "degraded" instead of failed. */
  optional: boolean;
}

export interface BackupPlan {
  target: Target;
  env: string;
  destinations: Destination[];
  stages: Stage[];
  globals: boolean;
  checksums: boolean;
  jobs?: number;
  labels: Record<string, string>;
  tempDir: string;
  /** Expected artifact size as a share of the database size, and the safety margin on top. */
  space: { ratio: number; margin: number };
  forceUnlock: boolean;
  /** Flag the backup when raw size or rows dropped by more than this share (default 0.5). */
  anomalyMaxDrop?: number;
  /** Facts for the manifest's `extra` (encryption recipients, …), added by stages' owners. */
  extra?: Record<string, unknown>;
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
  return ['dbstash', ...process.argv.slice(2).filter((a) => !/:\/\/[^/]*:[^@]*@/.test(a))].join(' ');
}

async function preflight(plan: BackupPlan, engine: Engine, events: BackupEvents): Promise<{ probe: Probe; warnings: string[] }> {
  const warnings: string[] = [];
  const warn = (m: string) => {
    warnings.push(m);
    events.warn(m);
  };
  const probe = await engine.probe(plan.target);
  probe.warnings.forEach(warn);
  if (plan.env === 'prod' && plan.target.engine !== 'sqlite' && isLocalHost(plan.target.host)) {
    warn(`a prod backup of a database on ${plan.target.host ?? 'localhost'}: is this the production server? (--env dev for a local database)`);
  }
  const estimate = Math.ceil(probe.sizeBytes * plan.space.ratio * plan.space.margin);
  for (const dest of plan.destinations) {
    try {
      await dest.storage.check?.();
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
  }
  return { probe, warnings };
}

/** Waits until an id is free in the primary destination (two backups within one second). */
async function freshId(plan: BackupPlan, primary: Storage): Promise<{ id: string; takenAt: Date }> {
  for (;;) {
    const takenAt = new Date();
    const id = makeBackupId(plan.target.database, plan.env, takenAt);
    if (!(await primary.stat(manifestKey(id))) && (await primary.list(`${artifactKey(id, id)}`)).length === 0) {
      return { id, takenAt };
    }
    await new Promise((r) => setTimeout(r, 1000 - (Date.now() % 1000) + 5));
  }
}

interface Published {
  dest: Destination;
  keys: string[];
}

/**
 * Streams one dump through the stages into every destination at once. The source is read once;
 * its pace is the slowest destination's (stream back-pressure). Nothing is published before the
 * dump tool has succeeded, because the dump stream only ends after its exit status is checked.
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
): Promise<ArtifactEntry> {
  const file = `${id}.${session.format}${suffixOf(plan.stages)}`;
  const key = artifactKey(id, file);
  const raw = new Meter({ onBytes: role === 'main' ? events.progress : undefined });
  const stored = new Meter({ hash: true });
  const encoders = plan.stages.map((s) => s.encode());
  const chain = pipeline([session.stream, raw, ...encoders, stored] as unknown as [Readable, ...NodeJS.WritableStream[]], { signal });
  const puts = live.map(async (pub) => {
    const branch = live.length === 1 ? stored : teeBranch(stored);
    try {
      await pub.dest.storage.put(key, branch, { signal, exclusive: true });
      pub.keys.push(key);
    } catch (err) {
      if (!pub.dest.optional || signal.aborted) throw err;
      branch.destroy();
      failed.push({ name: pub.dest.name, error: (err as Error).message });
      events.warn(`optional destination ${pub.dest.name} failed: ${(err as Error).message}`);
    }
  });
  const results = await Promise.allSettled([chain, ...puts]);
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

/** A PassThrough fed by `source` with back-pressure shared among all branches. */
function teeBranch(source: Readable): Readable {
  // Readable.pipe() to several destinations pauses the source while any of them is full.
  const branch = new PassThrough({ highWaterMark: 1 << 20 });
  source.pipe(branch);
  source.on('error', (err) => branch.destroy(err));
  return branch;
}

async function removePublished(live: Published[], id: string): Promise<void> {
  await Promise.all(
    live.map(async (pub) => {
      for (const key of [manifestKey(id), ...pub.keys]) await pub.dest.storage.delete(key).catch(() => {});
    }),
  );
}

export async function runBackup(plan: BackupPlan, events: BackupEvents, outerSignal?: AbortSignal): Promise<BackupResult> {
  if (plan.destinations.length === 0) throw new PreflightError('no destination to write the backup to');
  const engine = await loadEngine(plan.target.engine);
  const { probe, warnings } = await preflight(plan, engine, events);
  const primary = plan.destinations[0];
  const lock = await acquireLock(primary.storage, plan.target.database, {
    command: backupCommandLine(),
    force: plan.forceUnlock,
    warn: (m) => {
      warnings.push(m);
      events.warn(m);
    },
  });
  const controller = new AbortController();
  const onOuterAbort = () => controller.abort(outerSignal?.reason);
  outerSignal?.addEventListener('abort', onOuterAbort, { once: true });
  const live: Published[] = plan.destinations.map((dest) => ({ dest, keys: [] }));
  const failed: BackupResult['failed'] = [];
  let id = '';
  try {
    const fresh = await freshId(plan, primary.storage);
    id = fresh.id;
    const startedAt = new Date();
    events.info(`backing up ${plan.target.displayUrl} as ${id}`);
    const dumpOpts = { signal: controller.signal, checksums: plan.checksums, jobs: plan.jobs, tempDir: plan.tempDir, warn: events.warn };
    const session = await engine.dump(plan.target, dumpOpts);
    const artifacts = [await writeArtifact(session, 'main', id, plan, live, controller.signal, events, failed)];
    const tables: TableStat[] = await session.tables;
    if (plan.globals) {
      if (!engine.dumpGlobals) throw new PreflightError(`--globals is not supported for ${plan.target.engine}`);
      const globals = await engine.dumpGlobals(plan.target, dumpOpts);
      artifacts.push(await writeArtifact(globals, 'globals', id, plan, live.filter((p) => p.keys.length > 0), controller.signal, events, failed));
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
      },
      environment: plan.env,
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
    const anomaly = await detectAnomaly(primary.storage, manifest, plan.anomalyMaxDrop, events.warn);
    if (anomaly) {
      manifest.extra.anomaly = anomaly;
      events.warn(`anomaly: ${anomaly.message}`);
    }
    const body = serializeManifest(manifest);
    const holders = live.filter((p) => p.keys.length === artifacts.length);
    if (holders.length === 0) throw new BackupError('no destination holds the backup');
    await Promise.all(holders.map((p) => p.dest.storage.put(manifestKey(id), body, { exclusive: true, signal: controller.signal })));
    return { manifest, stored: holders.map((p) => p.dest.name), failed, degraded: failed.length > 0 };
  } catch (err) {
    controller.abort(err);
    if (id) await removePublished(live, id);
    if (outerSignal?.aborted) {
      const reason = outerSignal.reason;
      throw reason instanceof InterruptedError ? reason : new InterruptedError(String(reason ?? 'abort'));
    }
    if (err instanceof DbstashError) throw err;
    if ((err as Error).name === 'AbortError') throw new BackupError('the backup was aborted', { cause: err });
    throw new BackupError(`backup failed: ${(err as Error).message}`, { cause: err });
  } finally {
    outerSignal?.removeEventListener('abort', onOuterAbort);
    await lock.release().catch((err: unknown) => {
      if (!(err instanceof StorageError && err.reason === 'not-found')) events.warn(`could not release the lock: ${(err as Error).message}`);
    });
  }
}
